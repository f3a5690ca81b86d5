//! `Key`: how the index holds a key. Keys up to `INLINE_BYTES` long (every
//! key the ledger writes, and most keys in practice) live inline in the
//! index's nodes: no allocation per key, and no pointer to follow at each
//! comparison of a tree search, which is where an index spends its time.
//! Inline keys compare as big-endian words, zero-padded, ties broken by
//! length: the same order as comparing the byte strings.

use std::cmp::Ordering;
use std::hash::Hasher;

/// The longest key held inline.
pub(crate) const INLINE_BYTES: usize = 30;

/// A fast hasher for byte-string keys (FxHash-style word loop, murmur3
/// finalizer). Not DoS-resistant:
/// a batch is bounded in size, so a crafted set of colliding keys costs at
/// most a slow batch.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

/// Mixes every input bit into every output bit (murmur3's finalizer):
/// the word loop only carries bits upward, and both hash maps (low bits)
/// and shard choice (high bits) need all of them.
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
}

#[derive(Clone)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Heap(Box<[u8]>),
}

impl Key {
    pub(crate) fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

/// The inline bytes as four big-endian words (the last one zero-padded).
fn words(b: &[u8; INLINE_BYTES]) -> [u64; 4] {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        let end = (at + 8).min(INLINE_BYTES);
        w[..end - at].copy_from_slice(&b[at..end]);
        u64::from_be_bytes(w)
    };
    [word(0), word(8), word(16), word(24)]
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Inline { len: la, bytes: a }, Key::Inline { len: lb, bytes: b }) => {
                words(a).cmp(&words(b)).then(la.cmp(lb))
            }
            _ => self.as_bytes().cmp(other.as_bytes()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Key::Inline { len: la, bytes: a }, Key::Inline { len: lb, bytes: b }) => {
                la == lb && words(a) == words(b)
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn key_order_is_byte_order(a in proptest::collection::vec(any::<u8>(), 0..40),
                                   b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (ka, kb) = (Key::new(&a), Key::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka.as_bytes(), &a[..]);
        }
    }

    #[test]
    fn zero_padding_does_not_confuse_lengths() {
        assert!(Key::new(b"a") < Key::new(b"a\0"));
        assert!(Key::new(b"") < Key::new(b"\0"));
        assert_eq!(Key::new(&[0; 30]).cmp(&Key::new(&[0; 30])), Ordering::Equal);
        assert!(Key::new(&[0; 30]) < Key::new(&[0; 31]));
        assert_eq!(std::mem::size_of::<Key>(), 32);
    }
}
