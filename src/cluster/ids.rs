//! Ids the cluster derives and reserves, and where accounts live.
//!
//! Ids whose top byte is `0xFF` belong to the cluster: each shard's
//! settlement account of a ledger, and the post and void transfers that
//! settle a cross-shard transfer's legs. `Cluster` refuses user accounts and
//! transfers in that range (`Error::InvalidArgument`), so a derived id never
//! meets a user's id. `u128::MAX` is left to the ledger, which refuses it
//! item by item with its own codes. A derived settle id is a 120-bit hash of the transfer
//! id; two transfers sharing one would need a hash collision in 2^120.

/// A shard's number, `0..shards`.
pub type ShardId = u32;

/// The top byte of every id the cluster reserves.
const RESERVED_TOP: u128 = 0xFF << 120;
const LOW_120: u128 = (1 << 120) - 1;

/// Whether `id` lies in the range the cluster reserves for itself.
/// `u128::MAX` does not: no derived id is it (a settle id is it with odds
/// of 2^-120), and the ledger refuses it as an id or an account with its
/// own result codes (`IdMustNotBeIntMax`, ...), item by item.
pub fn is_reserved(id: u128) -> bool {
    id >> 120 == 0xFF && id != u128::MAX
}

/// The settlement account of `ledger` on `shard`: the far side of every
/// cross-shard leg there. Across all shards, a ledger's settlement
/// accounts net to zero once every cross-shard transfer is final.
pub fn settlement_account(ledger: u32, shard: ShardId) -> u128 {
    RESERVED_TOP | (u128::from(ledger) << 32) | u128::from(shard)
}

/// The shard a settlement account belongs to (`None`: not one).
pub fn settlement_shard(id: u128) -> Option<ShardId> {
    is_reserved(id).then_some((id & u128::from(u32::MAX)) as ShardId)
}

/// The id of the transfer that posts (`commit`) or voids the leg `id`.
pub fn settle_id(id: u128, commit: bool) -> u128 {
    let tag = if commit { 0x706f_7374 } else { 0x766f_6964 };
    RESERVED_TOP | (hash128(id, tag) & LOW_120)
}

/// A 128-bit mix of `id` and `tag` (two rounds of splitmix64 per half).
fn hash128(id: u128, tag: u64) -> u128 {
    let lo = splitmix(splitmix(id as u64 ^ tag) ^ (id >> 64) as u64);
    let hi = splitmix(splitmix((id >> 64) as u64 ^ tag.rotate_left(32)) ^ lo);
    (u128::from(hi) << 64) | u128::from(lo)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where accounts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// By a hash of the account id (the default).
    #[default]
    Hash,
    /// `id % shards`: explicit placement by choosing ids.
    Modulo,
}

impl Placement {
    /// The name a cluster directory records (`Cluster::open`).
    pub fn name(self) -> &'static str {
        match self {
            Placement::Hash => "hash",
            Placement::Modulo => "modulo",
        }
    }

    /// The placement of `name` (`None`: no such placement).
    pub fn from_name(name: &str) -> Option<Placement> {
        match name {
            "hash" => Some(Placement::Hash),
            "modulo" => Some(Placement::Modulo),
            _ => None,
        }
    }

    /// The shard of account `id` among `shards`.
    pub fn shard(self, id: u128, shards: u32) -> ShardId {
        let n = u128::from(shards.max(1));
        let h = match self {
            Placement::Hash => hash128(id, 0x0073_6861_7264),
            Placement::Modulo => id,
        };
        (h % n) as ShardId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_reserved_distinct_and_never_zero() {
        for id in [1u128, 2, u128::MAX >> 8, 12345678901234567890] {
            let (p, v) = (settle_id(id, true), settle_id(id, false));
            assert!(is_reserved(p) && is_reserved(v));
            assert_ne!(p, v);
            assert_ne!(p, u128::MAX);
            assert_ne!(settle_id(id + 1, true), p);
        }
        assert!(is_reserved(settlement_account(7, 3)));
        assert_eq!(settlement_shard(settlement_account(7, 3)), Some(3));
        assert_eq!(settlement_shard(3), None);
        assert_ne!(settlement_account(7, 3), settlement_account(7, 2));
        assert_ne!(settlement_account(7, 3), settlement_account(8, 3));
        assert!(!is_reserved(1));
        assert!(!is_reserved(u128::MAX >> 8));
    }

    #[test]
    fn placement_spreads_and_is_stable() {
        let mut counts = [0u32; 4];
        for id in 1..=4000u128 {
            let s = Placement::Hash.shard(id, 4);
            assert_eq!(s, Placement::Hash.shard(id, 4));
            counts[s as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(Placement::Modulo.shard(6, 4), 2);
    }
}
