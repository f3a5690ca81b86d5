//! Splits a call's accounts and transfers by shard, and refuses what the
//! cluster cannot do, before anything is written.
//!
//! Rules: a call holds at most `MAX_BATCH_EVENTS` items, as a ledger call
//! does; ids in the reserved range (`ids::is_reserved`: top byte 0xFF,
//! but not `u128::MAX`, which the ledger refuses item by item) are refused
//! for accounts, transfers and account references; a transfer between shards
//! must be a plain one (no flags: pending, post, void, balancing and
//! linked transfers stay within one shard); a linked chain must lie on one
//! shard; a post or void routes by its accounts, or, when it names none,
//! to the shard `Cluster` found its pending transfer on (a pin); closing
//! transfers are refused altogether, since an account closed while a
//! cross-shard leg waits for its decision could not take the decision (a
//! posted leg must always be postable). Each is an
//! `Error::InvalidArgument` for the whole call, naming the item. A
//! transfer that any ledger refuses before it reads anything (a nonzero
//! timestamp, an undefined flag bit: `refused_first`) is none of these:
//! it goes to its debit account's shard for that item's code, as on one
//! ledger.

use super::ids::{Placement, ShardId, is_reserved};
use crate::error::{Error, Result};
use crate::ledger::{Account, AccountFlags, MAX_BATCH_EVENTS, Transfer, TransferFlags};

fn check_len(len: usize) -> Result<()> {
    if len > MAX_BATCH_EVENTS {
        return Err(Error::invalid(format!(
            "a batch of {len} events is over the limit of {MAX_BATCH_EVENTS}"
        )));
    }
    Ok(())
}

/// A call's transfers by shard.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Per shard: (input index, transfer) of the transfers within it.
    pub(crate) local: Vec<Vec<(usize, Transfer)>>,
    /// Per coordinator shard: (input index, transfer, credit shard).
    pub(crate) cross: Vec<Vec<(usize, Transfer, ShardId)>>,
}

impl Routes {
    /// Shard `shard`'s part of the call, in input order: (input index,
    /// transfer, `None` within the shard or `Some(credit shard)` for a
    /// transfer it coordinates), as `Node::initiate` takes it.
    pub(crate) fn part(&self, shard: usize) -> Vec<(usize, Transfer, Option<ShardId>)> {
        let local = self.local[shard].iter().map(|&(i, t)| (i, t, None));
        let cross = self.cross[shard].iter().map(|&(i, t, c)| (i, t, Some(c)));
        let mut part: Vec<_> = local.chain(cross).collect();
        part.sort_unstable_by_key(|&(i, ..)| i);
        part
    }
}

/// Where a linked chain's items go: every item of a chain on one shard.
fn check_chains<T>(
    items: &[T],
    linked: impl Fn(&T) -> bool,
    shard: impl Fn(&T) -> Option<ShardId>,
    what: &str,
) -> Result<()> {
    let mut chain_shard: Option<Option<ShardId>> = None;
    for (i, item) in items.iter().enumerate() {
        let s = shard(item);
        if let Some(cs) = chain_shard
            && (cs != s || s.is_none())
        {
            return Err(Error::invalid(format!(
                "{what} {i} continues a linked chain on another shard; a chain must lie on one shard"
            )));
        }
        chain_shard = if linked(item) {
            if s.is_none() {
                return Err(Error::invalid(format!(
                    "{what} {i} is linked and crosses shards; a linked chain must lie on one shard"
                )));
            }
            Some(s)
        } else {
            None
        };
    }
    Ok(())
}

/// Splits accounts by shard: (input index, account) per shard.
pub(crate) fn accounts(
    accounts: &[Account],
    placement: Placement,
    shards: u32,
) -> Result<Vec<Vec<(usize, Account)>>> {
    check_len(accounts.len())?;
    for (i, a) in accounts.iter().enumerate() {
        if is_reserved(a.id) {
            return Err(Error::invalid(format!(
                "account {i}: id {:#x} is in the range the cluster reserves (top byte 0xFF)",
                a.id
            )));
        }
    }
    check_chains(
        accounts,
        |a| a.flags.contains(AccountFlags::LINKED),
        |a| Some(placement.shard(a.id, shards)),
        "account",
    )?;
    let mut out = vec![Vec::new(); shards as usize];
    for (i, a) in accounts.iter().enumerate() {
        out[placement.shard(a.id, shards) as usize].push((i, *a));
    }
    Ok(out)
}

/// Whether a ledger refuses `t` before it reads anything, on any shard
/// (`TimestampMustBeZero`, `ReservedFlag`: its first two checks). Such a
/// transfer goes to its debit account's shard as it is, for that code,
/// whatever else it names: it moves nothing and spends no id.
pub(crate) fn refused_first(t: &Transfer) -> bool {
    t.timestamp != 0 || TransferFlags::from_bits(t.flags.bits()).is_none()
}

/// Whether a ledger refuses `t` for its credit account id alone (0 or
/// `u128::MAX`), a post or void aside (those may name no accounts). It
/// stays on its debit account's shard, whose ledger refuses it, in
/// TigerBeetle's order, with no leg prepared: as on one ledger the
/// refusal spends no id, where a refusal on a credit shard would leave
/// the id with the debit shard's leg.
fn refused_for_credit_id(t: &Transfer) -> bool {
    let settles = t
        .flags
        .intersects(TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER);
    !settles && (t.credit_account_id == 0 || t.credit_account_id == u128::MAX)
}

/// Splits transfers into same-shard ones and cross-shard ones.
pub(crate) fn transfers(
    transfers: &[Transfer],
    placement: Placement,
    shards: u32,
) -> Result<Routes> {
    transfers_pinned(transfers, placement, shards, &[])
}

/// `transfers`, where `pins[i]` (when there and `Some`) is the shard of
/// transfer `i` whatever its accounts: a post or void that names no
/// accounts goes to the shard of its pending transfer (`Cluster` finds
/// it).
pub(crate) fn transfers_pinned(
    transfers: &[Transfer],
    placement: Placement,
    shards: u32,
    pins: &[Option<ShardId>],
) -> Result<Routes> {
    check_len(transfers.len())?;
    let pin = |i: usize| pins.get(i).copied().flatten();
    let shard_at = |i: usize, t: &Transfer| match pin(i) {
        Some(s) => (s, s),
        None if refused_first(t) || refused_for_credit_id(t) => {
            let d = placement.shard(t.debit_account_id, shards);
            (d, d)
        }
        None => (
            placement.shard(t.debit_account_id, shards),
            placement.shard(t.credit_account_id, shards),
        ),
    };
    let indexed: Vec<(usize, &Transfer)> = transfers.iter().enumerate().collect();
    for (i, t) in transfers.iter().enumerate() {
        for (what, id) in [
            ("id", t.id),
            ("debit account", t.debit_account_id),
            ("credit account", t.credit_account_id),
            ("pending id", t.pending_id),
        ] {
            if is_reserved(id) {
                return Err(Error::invalid(format!(
                    "transfer {i}: {what} {id:#x} is in the range the cluster reserves (top byte 0xFF)"
                )));
            }
        }
        if refused_first(t) {
            continue;
        }
        let settles = t.flags.intersects(
            TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
        );
        if t.flags
            .intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT)
        {
            return Err(Error::invalid(format!(
                "transfer {i} closes an account; a cluster does not close accounts (a cross-shard leg waiting for its decision must stay postable)"
            )));
        }
        let (d, c) = shard_at(i, t);
        if d != c && !t.flags.is_empty() {
            return Err(Error::invalid(format!(
                "transfer {i} crosses shards ({d} -> {c}) with flags {:?}; only plain transfers may cross shards",
                t.flags
            )));
        }
        if settles && pin(i).is_none() && (t.debit_account_id == 0 || t.credit_account_id == 0) {
            return Err(Error::invalid(format!(
                "transfer {i} posts or voids a pending transfer: give its debit and credit accounts so that the cluster can find its shard"
            )));
        }
    }
    check_chains(
        &indexed,
        |(_, t)| t.flags.contains(TransferFlags::LINKED),
        |&(i, t)| {
            let (d, c) = shard_at(i, t);
            (d == c).then_some(d)
        },
        "transfer",
    )?;
    let mut routes = Routes {
        local: vec![Vec::new(); shards as usize],
        cross: vec![Vec::new(); shards as usize],
    };
    for (i, t) in transfers.iter().enumerate() {
        let (d, c) = shard_at(i, t);
        if d == c {
            routes.local[d as usize].push((i, *t));
        } else {
            routes.cross[d as usize].push((i, *t, c));
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u128, dr: u128, cr: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id,
            debit_account_id: dr,
            credit_account_id: cr,
            amount: 1,
            ledger: 1,
            code: 1,
            flags,
            ..Transfer::default()
        }
    }

    #[test]
    fn splits_by_shard_and_refuses_what_cannot_cross() {
        let m = Placement::Modulo;
        let none = TransferFlags::empty();
        let r = transfers(&[t(1, 4, 8, none), t(2, 1, 2, none)], m, 4).unwrap();
        assert_eq!(r.local[0].len(), 1);
        assert_eq!(r.cross[1][0].2, 2);
        // Reserved ids, flags across shards, chains across shards.
        assert!(transfers(&[t(0xFF << 120, 1, 2, none)], m, 4).is_err());
        assert!(transfers(&[t(1, 1, 0xFF << 120, none)], m, 4).is_err());
        assert!(transfers(&[t(1, 1, 2, TransferFlags::PENDING)], m, 4).is_err());
        assert!(transfers(&[t(1, 4, 8, TransferFlags::LINKED), t(2, 1, 5, none)], m, 4).is_err());
        assert!(
            transfers(
                &[t(1, 4, 8, TransferFlags::LINKED), t(2, 12, 16, none)],
                m,
                4
            )
            .is_ok()
        );
        assert!(transfers(&[t(1, 1, 2, TransferFlags::LINKED), t(2, 1, 5, none)], m, 4).is_err());
        let closing = TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT;
        assert!(transfers(&[t(1, 4, 8, closing)], m, 4).is_err());
        let many = vec![t(1, 4, 8, none); MAX_BATCH_EVENTS + 1];
        assert!(transfers(&many, m, 4).is_err());
    }
}
