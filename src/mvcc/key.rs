//! `Key`: a key as the index's ordered sets (for scans), the collector's
//! queue and a batch's write map hold it (the maps themselves find a key
//! in its version's blob). Keys up to `INLINE_BYTES` long (every key the
//! ledger writes, and most keys in practice) live inline: no allocation
//! per key, and no pointer to follow at each comparison of a tree search.
//! Inline keys compare as big-endian words, zero-padded, ties broken by
//! length: the same order as comparing the byte strings.

use std::cmp::Ordering;
use std::hash::Hasher;

/// The longest key held inline.
pub(crate) const INLINE_BYTES: usize = 30;

/// A fast hasher for byte-string keys: a folded multiply per 8-byte word
/// (the 128-bit product's halves xored, as foldhash and wyhash do), then
/// murmur3's finalizer. Not DoS-resistant: a batch is bounded in size, so
/// a crafted set of colliding keys costs at most a slow batch.
///
/// Why not FxHash's `(h.rotl(5) ^ word) * K`: a product carries only
/// upward, so the high bytes of a word (where a big-endian id keeps its
/// low, varying bytes) fall off the top, and the keys `t | id` for ids
/// 1..200,000 got 8,192 distinct hashes: every lookup compared some 25
/// keys. The folded product brings the high half back down.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 128-bit product of `a` and `b`, its halves xored.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Mixes every input bit into every output bit (murmur3's finalizer):
/// hash maps use the low bits and the top 7, shard choice bits 40..46.
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The index's hash of a key's bytes: `KeyHasher`'s for a `Key` in the
/// low 56 bits, and the key's first byte (0 for the empty key) in the
/// top 8. The index computes it once per key: bits 40..46 pick the shard,
/// the top byte the shard's part (`shard::part_of_hash`), the low 32 bits
/// the entry in the part's map. With the part in the hash, the passes
/// that only ask for a map's lines (`Shard::prefetch`, `Shard::peek`)
/// need not read the key: a write's key lives in its blob, which was a
/// cache miss of its own before the first pass could even start.
pub(crate) fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = KeyHasher::default();
    h.write(bytes);
    let first = bytes.first().copied().unwrap_or(0);
    (h.finish() & !(0xFF << 56)) | (u64::from(first) << 56)
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ SEED ^ (bytes.len() as u64).wrapping_mul(K);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = fold_mul(h ^ u64::from_le_bytes(word), K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            h = fold_mul(h ^ u64::from_le_bytes(word), K);
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

    fn hash(bytes: &[u8]) -> u64 {
        hash_of(bytes)
    }

    /// `hash_of` is the hash maps see for a `Key` in its low 56 bits,
    /// with the key's first byte on top.
    #[test]
    fn hash_of_is_the_hash_maps_see_with_the_first_byte_on_top() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<KeyHasher>::default();
        let low = (1u64 << 56) - 1;
        for k in [&b""[..], b"a", b"t0123456789abcdef", &[7u8; 40], &[0xFF; 3]] {
            assert_eq!(hash_of(k) & low, build.hash_one(Key::new(k)) & low);
            assert_eq!(hash_of(k) >> 56, u64::from(k.first().copied().unwrap_or(0)));
        }
    }

    /// The ledger's keys (`tag | id` big-endian) must not share hashes:
    /// FxHash's word loop gave 200,000 of them 8,192 distinct hashes, and
    /// lookups compared ~25 keys each.
    #[test]
    fn big_endian_ids_get_distinct_hashes_and_spread_tags() {
        let n = 200_000u128;
        let mut all = std::collections::HashSet::new();
        // Within a shard (bits 40..46), the top 7 bits of the map's 32
        // (which pick most of the home bucket) must stay spread too.
        let mut tags = vec![[0u32; 128]; 64];
        // hashbrown's maps keyed by `Key` (a batch's writes) compare the
        // top 7 bits of `KeyHasher`'s hash first: those must spread too.
        let build = std::hash::BuildHasherDefault::<KeyHasher>::default();
        let mut top = [0u32; 128];
        for id in 1..=n {
            let mut k = [0u8; 17];
            k[0] = b't';
            k[1..].copy_from_slice(&id.to_be_bytes());
            let h = hash(&k);
            all.insert(h);
            tags[((h >> 40) & 63) as usize][((h >> 25) & 127) as usize] += 1;
            top[(std::hash::BuildHasher::hash_one(&build, Key::new(&k)) >> 57) as usize] += 1;
        }
        assert_eq!(all.len(), n as usize);
        for shard in tags.iter().chain([&top]) {
            let total: u32 = shard.iter().sum();
            let collide: f64 = shard
                .iter()
                .map(|&c| (f64::from(c) / f64::from(total)).powi(2))
                .sum();
            assert!(collide < 1.5 / 128.0, "tag collision {collide}");
        }
        // Lengths count: a key and the same key with a zero byte added.
        assert_ne!(hash(b"t"), hash(b"t\0"));
        assert_ne!(hash(b""), hash(b"\0"));
    }
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
