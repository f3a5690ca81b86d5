//! How the ledger lays its records out in the key-value core.
//!
//! Keys (big-endian numbers, so that keys sort by them):
//!
//! | key | value |
//! |---|---|
//! | `a` id:16 | the account, 128 bytes |
//! | `t` id:16 | the transfer, compact (`encode_stored_transfer`: a mask, then its nonzero 8-byte words but the id's; 128 bytes in older data); or, for an id spent by a transient failure, its result code: 1 byte |
//! | `s` pending_id:16 | how a pending transfer was settled: 1 byte (`Settled`) |
//! | `x` expires_at:8 id:16 | (empty) a pending transfer with a timeout |
//! | 0x20 + family(account) account:16 timestamp:8 | for `HISTORY` accounts: the transfer id (8 bytes when below 2^64, else 16), then the four balances after it (64); ledgers written before the transfer index (`history.rs`) hold such a record, without balances, for every account too (left unread) |
//! | `h` account:16 timestamp:8 | as above, in ledgers written before history keys were spread over families (read, never written) |
//! | `m` `ts` | the last timestamp given out: 8 |
//! | `m` `id` | the highest transfer id stored under `t`: 16 (absent before any batch, and in ledgers written before it was kept) |
//!
//! Accounts and transfers are 128-byte little-endian records in
//! TigerBeetle's field order. A logical log record (the body of one
//! `create_accounts` / `create_transfers` / expiry call) is
//! `u8 op | u64 first timestamp | u32 count | count × event`, each event
//! its 128-byte record in compact form (`compact_record`: a mask of the
//! nonzero 8-byte words, then those; the op has bit `COMPACT` set), or the
//! whole 128 bytes in records written before the compact form.

use super::types::{Account, AccountFlags, Transfer, TransferFlags};

/// The size of an encoded account or transfer.
pub const RECORD_BYTES: usize = 128;

pub(crate) const ACCOUNT: u8 = b'a';
pub(crate) const TRANSFER: u8 = b't';
pub(crate) const SETTLED: u8 = b's';
pub(crate) const EXPIRY: u8 = b'x';
/// The first byte of history keys written before they were spread over
/// families (`history_key`); still read.
pub(crate) const HISTORY_OLD: u8 = b'h';
/// History keys start with `HISTORY_FIRST` plus their account's family,
/// one of `HISTORY_FAMILIES` (below every other first byte the ledger
/// uses).
const HISTORY_FIRST: u8 = 0x20;
const HISTORY_FAMILIES: u8 = 64;
pub(crate) const META_TS: &[u8] = b"mts";
pub(crate) const META_MAX_ID: &[u8] = b"mid";
/// The namespace of the keys a layer above keeps beside the ledger
/// (`Ledger::submit_transfers_with`): stored keys whose first byte has
/// this bit set; every ledger key starts below it.
pub(crate) const EXTRA: u8 = 0x80;

/// How a pending transfer was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Settled {
    Posted = 1,
    Voided = 2,
    Expired = 3,
}

impl Settled {
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Settled::Posted),
            2 => Some(Settled::Voided),
            3 => Some(Settled::Expired),
            _ => None,
        }
    }
}

pub(crate) fn id_key(tag: u8, id: u128) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The id of an `id_key` (`None` for a key of another length).
pub(crate) fn parse_id_key(k: &[u8]) -> Option<u128> {
    let id: [u8; 16] = k.get(1..)?.try_into().ok()?;
    Some(u128::from_be_bytes(id))
}

pub(crate) fn history_key(account: u128, timestamp: u64) -> [u8; 25] {
    history_key_with(HISTORY_FIRST + account_family(account), account, timestamp)
}

/// An account's family, one of `HISTORY_FAMILIES` (64), spread by a hash
/// of its id: what history keys start with, and the transfer index's
/// shard (`history.rs`).
pub(crate) fn account_family(account: u128) -> u8 {
    let folded = (account as u64) ^ ((account >> 64) as u64);
    let family = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u8;
    debug_assert!(family < HISTORY_FAMILIES);
    family
}

/// `history_key` as written before history keys were spread over
/// families.
pub(crate) fn history_key_old(account: u128, timestamp: u64) -> [u8; 25] {
    history_key_with(HISTORY_OLD, account, timestamp)
}

fn history_key_with(first: u8, account: u128, timestamp: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = first;
    k[1..17].copy_from_slice(&account.to_be_bytes());
    k[17..].copy_from_slice(&timestamp.to_be_bytes());
    k
}

/// The key of a pending transfer's expiry: by the time it expires, then
/// (for those expiring at the same time) by its creation timestamp, as
/// TigerBeetle releases them; then its id, to find it.
pub(crate) fn expiry_key(expires_at: u64, timestamp: u64, id: u128) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = EXPIRY;
    k[1..9].copy_from_slice(&expires_at.to_be_bytes());
    k[9..17].copy_from_slice(&timestamp.to_be_bytes());
    k[17..].copy_from_slice(&id.to_be_bytes());
    k
}

/// An expiry key as written before session 16, when pending transfers
/// expiring at the same time were released by id: `[x | at | id]`, 25
/// bytes. Checkpoints taken then still hold them.
pub(crate) fn legacy_expiry_key(expires_at: u64, id: u128) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = EXPIRY;
    k[1..9].copy_from_slice(&expires_at.to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The (expires_at, timestamp, id) of an expiry key of either form; the
/// timestamp is `None` in the form written before session 16
/// (`legacy_expiry_key`). Both forms sort by expiry time first.
pub(crate) fn parse_expiry_key(k: &[u8]) -> Option<(u64, Option<u64>, u128)> {
    if k.first() != Some(&EXPIRY) {
        return None;
    }
    let at = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    match k.len() {
        33 => {
            let ts = u64::from_be_bytes(k[9..17].try_into().ok()?);
            let id = u128::from_be_bytes(k[17..33].try_into().ok()?);
            Some((at, Some(ts), id))
        }
        25 => Some((at, None, u128::from_be_bytes(k[9..25].try_into().ok()?))),
        _ => None,
    }
}

/// The timestamp of a history key (either form).
pub(crate) fn parse_history_ts(k: &[u8]) -> Option<u64> {
    let first = *k.first()?;
    let history =
        first == HISTORY_OLD || (HISTORY_FIRST..HISTORY_FIRST + HISTORY_FAMILIES).contains(&first);
    if k.len() != 25 || !history {
        return None;
    }
    Some(u64::from_be_bytes(k[17..25].try_into().ok()?))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
}

/// Encodes an account into its 128-byte record.
pub fn encode_account(a: &Account, out: &mut [u8; RECORD_BYTES]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&a.id.to_le_bytes());
    put(&a.debits_pending.to_le_bytes());
    put(&a.debits_posted.to_le_bytes());
    put(&a.credits_pending.to_le_bytes());
    put(&a.credits_posted.to_le_bytes());
    put(&a.user_data_128.to_le_bytes());
    put(&a.user_data_64.to_le_bytes());
    put(&a.user_data_32.to_le_bytes());
    put(&a.reserved.to_le_bytes());
    put(&a.ledger.to_le_bytes());
    put(&a.code.to_le_bytes());
    put(&a.flags.bits().to_le_bytes());
    put(&a.timestamp.to_le_bytes());
}

/// Decodes a 128-byte account record (`None` if it is not 128 bytes).
/// Unknown flag bits are kept, so that validation can see them.
pub fn decode_account(b: &[u8]) -> Option<Account> {
    if b.len() != RECORD_BYTES {
        return None;
    }
    let mut r = Reader { buf: b, at: 0 };
    Some(Account {
        id: r.u128(),
        debits_pending: r.u128(),
        debits_posted: r.u128(),
        credits_pending: r.u128(),
        credits_posted: r.u128(),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        reserved: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: AccountFlags::from_bits_retain(r.u16()),
        timestamp: r.u64(),
    })
}

/// Encodes a transfer into its 128-byte record.
pub fn encode_transfer(t: &Transfer, out: &mut [u8; RECORD_BYTES]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&t.id.to_le_bytes());
    put(&t.debit_account_id.to_le_bytes());
    put(&t.credit_account_id.to_le_bytes());
    put(&t.amount.to_le_bytes());
    put(&t.pending_id.to_le_bytes());
    put(&t.user_data_128.to_le_bytes());
    put(&t.user_data_64.to_le_bytes());
    put(&t.user_data_32.to_le_bytes());
    put(&t.timeout.to_le_bytes());
    put(&t.ledger.to_le_bytes());
    put(&t.code.to_le_bytes());
    put(&t.flags.bits().to_le_bytes());
    put(&t.timestamp.to_le_bytes());
}

/// Decodes a 128-byte transfer record (`None` if it is not 128 bytes).
pub fn decode_transfer(b: &[u8]) -> Option<Transfer> {
    if b.len() != RECORD_BYTES {
        return None;
    }
    let mut r = Reader { buf: b, at: 0 };
    Some(Transfer {
        id: r.u128(),
        debit_account_id: r.u128(),
        credit_account_id: r.u128(),
        amount: r.u128(),
        pending_id: r.u128(),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        timeout: r.u32(),
        ledger: r.u32(),
        code: r.u16(),
        flags: TransferFlags::from_bits_retain(r.u16()),
        timestamp: r.u64(),
    })
}

/// The longest stored transfer or account value (`encode_stored_transfer`):
/// the mask and every word of the record but the id's.
pub(crate) const STORED_MAX: usize = 2 + RECORD_BYTES - 8 * ID_WORDS;

/// The words of the id, first in a record: a stored transfer or account
/// leaves them to its key (transfers written before kept them, and their
/// mask says so).
const ID_WORDS: usize = 2;

/// Writes the compact form of `rec` into `out`: a 16-bit mask of its
/// nonzero 8-byte words from word `from` on, then those words. Returns the
/// length written (`out` must hold it: at most `2 + RECORD_BYTES`).
fn compact_into(rec: &[u8; RECORD_BYTES], from: usize, out: &mut [u8]) -> usize {
    let mut mask = 0u16;
    let mut at = 2;
    for (i, word) in rec.chunks_exact(8).enumerate().skip(from) {
        if word != [0u8; 8] {
            mask |= 1 << i;
            out[at..at + 8].copy_from_slice(word);
            at += 8;
        }
    }
    out[..2].copy_from_slice(&mask.to_le_bytes());
    at
}

/// Encodes a record as the ledger keeps it under its id: its compact form
/// (`compact_into`) without the id's words, which the key holds. Most
/// fields of most records are zero (pending amounts or ids, user data,
/// timeout, the high halves of ids and amounts), so a typical transfer
/// takes 42 bytes instead of 128, and an account about 34: that is memory
/// for each stored record, most of a ledger, and the cache lines a
/// transfer reads and writes. Returns the length written.
fn encode_stored(rec: &[u8; RECORD_BYTES], out: &mut [u8; STORED_MAX]) -> usize {
    compact_into(rec, ID_WORDS, out)
}

/// The 128-byte record of a value stored under id `id`: the compact form
/// of `encode_stored` (or, in transfers written before the id's words were
/// left out, with them), or a full 128-byte record (as data written before
/// the compact form holds). `None` for anything else (a failed transfer
/// id's one-byte result code, or damage).
fn decode_stored(id: u128, b: &[u8]) -> Option<[u8; RECORD_BYTES]> {
    if let Ok(full) = b.try_into() {
        return Some(full);
    }
    let mask = u16::from_le_bytes(*b.first_chunk::<2>()?);
    if mask == 0 || compact_len(b) != Some(b.len()) {
        return None;
    }
    let mut rec = expand_record(b);
    if mask & 0b11 == 0 {
        rec[..16].copy_from_slice(&id.to_le_bytes());
    }
    Some(rec)
}

/// Encodes a transfer as the ledger keeps it under its id
/// (`encode_stored`). Returns the length written.
pub(crate) fn encode_stored_transfer(t: &Transfer, out: &mut [u8; STORED_MAX]) -> usize {
    let mut rec = [0u8; RECORD_BYTES];
    encode_transfer(t, &mut rec);
    encode_stored(&rec, out)
}

/// Encodes an account as the ledger keeps it under its id
/// (`encode_stored`). Returns the length written.
pub(crate) fn encode_stored_account(a: &Account, out: &mut [u8; STORED_MAX]) -> usize {
    let mut rec = [0u8; RECORD_BYTES];
    encode_account(a, &mut rec);
    encode_stored(&rec, out)
}

/// Decodes the value stored under transfer id `id` (`decode_stored`).
pub(crate) fn decode_stored_transfer(id: u128, b: &[u8]) -> Option<Transfer> {
    decode_transfer(&decode_stored(id, b)?)
}

/// Decodes the value stored under account id `id` (`decode_stored`).
/// Unknown flag bits are kept, as `decode_account` keeps them.
pub(crate) fn decode_stored_account(id: u128, b: &[u8]) -> Option<Account> {
    decode_account(&decode_stored(id, b)?)
}

/// The ops of a logical record.
pub(crate) const OP_CREATE_ACCOUNTS: u8 = 1;
pub(crate) const OP_CREATE_TRANSFERS: u8 = 2;
pub(crate) const OP_EXPIRE: u8 = 3;
/// Transfers, then the raw writes of a layer above (`Extra`), listed after
/// the events as `u8 kind | u16 key len | key | (put: u32 len | value)`.
pub(crate) const OP_TRANSFERS_EXTRA: u8 = 4;
pub(crate) const EXTRA_PUT: u8 = 1;
pub(crate) const EXTRA_DELETE: u8 = 2;
/// A bit of the op byte: the events are compact (`compact_record`), not
/// 128 bytes each. Records written before it existed have it clear.
const COMPACT: u8 = 0x10;
/// A bit of the op byte: the record's transfers ran under the rules of
/// session 12 on, where a void's nonzero amount is its own
/// (`machine::settled_amount`). Replay runs a record without it under the
/// rule it ran under when it was logged, where a void of `u128::MAX`
/// voided the whole pending amount, so that it gives what it gave then.
pub(crate) const RULES_2: u8 = 0x20;
/// A bit of the op byte: the record ran under the rules of session 16 on,
/// where pending transfers that expire at the same time are released in
/// the order they were created (by timestamp). Replay runs a record
/// without it in the order of the code that logged it: by id. (Records
/// logged by the one build that ordered by timestamp without this bit
/// replay by id too; the two differ only when more than 8,190 transfers
/// are due at once and the cut falls inside a tie.)
pub(crate) const RULES_3: u8 = 0x40;
const RULE_BITS: u8 = RULES_2 | RULES_3;

/// The rules a logical record ran under, as its op byte tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// A void of `u128::MAX` voids the whole pending amount (no `RULES_2`).
    pub void_max_whole: bool,
    /// Pending transfers that expire at once are released by id, not by
    /// timestamp (no `RULES_3`).
    pub expiry_by_id: bool,
}

impl Rules {
    /// The rules every record is logged under now.
    pub const CURRENT: Rules = Rules {
        void_max_whole: false,
        expiry_by_id: false,
    };

    /// The rules of a logical record.
    pub fn of_body(body: &[u8]) -> Rules {
        let op = body.first().copied().unwrap_or(0);
        Rules {
            void_max_whole: op & RULES_2 == 0,
            expiry_by_id: op & RULES_3 == 0,
        }
    }
}
const BODY_HEADER: usize = 13;

/// Appends a 128-byte record in its compact form: a 16-bit mask of its
/// nonzero 8-byte words, then those words. A typical transfer (small ids
/// and amount, no user data, no timeout) is 42 bytes: the log writes,
/// copies and syncs a third of what the full records took.
fn compact_record(rec: &[u8; RECORD_BYTES], out: &mut Vec<u8>) {
    let mut compact = [0u8; 2 + RECORD_BYTES];
    let len = compact_into(rec, 0, &mut compact);
    out.extend_from_slice(&compact[..len]);
}

/// The length of the compact record at the start of `b`, if it is whole.
fn compact_len(b: &[u8]) -> Option<usize> {
    let mask = u16::from_le_bytes(*b.first_chunk::<2>()?);
    let len = 2 + 8 * mask.count_ones() as usize;
    (b.len() >= len).then_some(len)
}

/// The 128-byte record of a whole compact record (`compact_len` bytes).
fn expand_record(b: &[u8]) -> [u8; RECORD_BYTES] {
    let mut rec = [0u8; RECORD_BYTES];
    let Some((mask, mut words)) = b.split_first_chunk::<2>() else {
        return rec;
    };
    let mask = u16::from_le_bytes(*mask);
    for (i, out) in rec.chunks_exact_mut(8).enumerate() {
        if mask & (1 << i) != 0
            && let Some((word, rest)) = words.split_first_chunk::<8>()
        {
            out.copy_from_slice(word);
            words = rest;
        }
    }
    rec
}

/// Appends a transfer's record in compact form (`compact_record`).
pub(crate) fn put_compact_transfer(t: &Transfer, out: &mut Vec<u8>) {
    let mut rec = [0u8; RECORD_BYTES];
    encode_transfer(t, &mut rec);
    compact_record(&rec, out);
}

/// The transfer of the compact record at the start of `b`
/// (`put_compact_transfer`), and the bytes after it.
pub(crate) fn take_compact_transfer(b: &[u8]) -> Option<(Transfer, &[u8])> {
    let (rec, rest) = b.split_at(compact_len(b)?);
    Some((decode_transfer(&expand_record(rec))?, rest))
}

/// Encodes the body of a logical record, its events compact.
pub(crate) fn encode_body<T>(
    op: u8,
    first_ts: u64,
    events: &[T],
    encode: impl Fn(&T, &mut [u8; RECORD_BYTES]),
) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_HEADER + events.len() * RECORD_BYTES / 2);
    body.push(op | COMPACT | RULE_BITS);
    body.extend_from_slice(&first_ts.to_le_bytes());
    body.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let mut rec = [0u8; RECORD_BYTES];
    for e in events {
        encode(e, &mut rec);
        compact_record(&rec, &mut body);
    }
    body
}

/// The events of a logical record body, as 128-byte records.
#[derive(Debug, Clone)]
pub(crate) enum Events<'a> {
    /// Records written before compact events: 128 bytes each.
    Full(std::slice::ChunksExact<'a, u8>),
    /// Compact records (`compact_record`), checked whole by `decode_body`.
    Compact(&'a [u8]),
}

impl Iterator for Events<'_> {
    type Item = [u8; RECORD_BYTES];

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Events::Full(chunks) => chunks.next()?.try_into().ok(),
            Events::Compact(rest) => {
                let len = compact_len(rest)?;
                let (rec, tail) = rest.split_at(len);
                *rest = tail;
                Some(expand_record(rec))
            }
        }
    }
}

/// Splits a logical record body into (op, first ts, events, trailer). Only
/// `OP_TRANSFERS_EXTRA` may carry a trailer. Events are compact or, in
/// records written before compact events, 128 bytes each.
pub(crate) fn decode_body(body: &[u8]) -> Option<(u8, u64, Events<'_>, &[u8])> {
    let op = *body.first()?;
    let first_ts = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let count = u32::from_le_bytes(body.get(9..13)?.try_into().ok()?) as usize;
    let rest = body.get(BODY_HEADER..)?;
    let (op, len) = if op & COMPACT != 0 {
        let mut len = 0;
        for _ in 0..count {
            len += compact_len(rest.get(len..)?)?;
        }
        (op & !(COMPACT | RULE_BITS), len)
    } else {
        (op & !RULE_BITS, count.checked_mul(RECORD_BYTES)?)
    };
    let (events, trailer) = (rest.get(..len)?, rest.get(len..)?);
    if !trailer.is_empty() && op != OP_TRANSFERS_EXTRA {
        return None;
    }
    let events = if body[0] & COMPACT != 0 {
        Events::Compact(events)
    } else {
        Events::Full(events.chunks_exact(RECORD_BYTES))
    };
    Some((op, first_ts, events, trailer))
}

/// One write of a trailer: (key, value; `None` deletes).
pub(crate) type ExtraWrite<'a> = (&'a [u8], Option<&'a [u8]>);

/// Appends one write to a trailer.
pub(crate) fn encode_extra(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.push(if value.is_some() {
        EXTRA_PUT
    } else {
        EXTRA_DELETE
    });
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
}

/// Splits a trailer into its writes; `None` if it is malformed or a key
/// lies outside the `EXTRA` namespace.
pub(crate) fn decode_extra(mut trailer: &[u8]) -> Option<Vec<ExtraWrite<'_>>> {
    let mut out = Vec::new();
    while let Some((&kind, rest)) = trailer.split_first() {
        let klen = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let key = rest.get(2..2 + klen)?;
        if key.first().is_none_or(|&b| b < EXTRA) {
            return None;
        }
        let rest = &rest[2 + klen..];
        match kind {
            EXTRA_PUT => {
                let vlen = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let value = rest.get(4..4usize.checked_add(vlen)?)?;
                out.push((key, Some(value)));
                trailer = &rest[4 + vlen..];
            }
            EXTRA_DELETE => {
                out.push((key, None));
                trailer = rest;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Appends a history value to `out`: the transfer id, then the balances
/// for `HISTORY` accounts.
pub(crate) fn encode_history_into(
    out: &mut Vec<u8>,
    transfer_id: u128,
    balances: Option<&Account>,
) {
    // An id that fits in 64 bits (most do) takes 8 bytes, not 16: two
    // history entries per transfer, kept for good.
    match u64::try_from(transfer_id) {
        Ok(short) => out.extend_from_slice(&short.to_le_bytes()),
        Err(_) => out.extend_from_slice(&transfer_id.to_le_bytes()),
    }
    if let Some(a) = balances {
        out.extend_from_slice(&a.debits_pending.to_le_bytes());
        out.extend_from_slice(&a.debits_posted.to_le_bytes());
        out.extend_from_slice(&a.credits_pending.to_le_bytes());
        out.extend_from_slice(&a.credits_posted.to_le_bytes());
    }
}

/// The transfer id and (if stored) the balances of a history value: an id
/// of 8 or 16 bytes, then nothing or four balances.
pub(crate) fn decode_history(v: &[u8]) -> Option<(u128, Option<[u128; 4]>)> {
    let mut r = Reader { buf: v, at: 0 };
    let id = match v.len() {
        8 | 72 => u128::from(r.u64()),
        16 | 80 => r.u128(),
        _ => return None,
    };
    let balances = (v.len() > 16).then(|| [r.u128(), r.u128(), r.u128(), r.u128()]);
    Some((id, balances))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let a = Account {
            id: u128::MAX - 3,
            debits_pending: 1,
            debits_posted: 2,
            credits_pending: 3,
            credits_posted: u128::MAX,
            user_data_128: 5,
            user_data_64: 6,
            user_data_32: 7,
            reserved: 8,
            ledger: 9,
            code: 10,
            flags: AccountFlags::HISTORY | AccountFlags::LINKED,
            timestamp: 11,
        };
        let mut buf = [0u8; RECORD_BYTES];
        encode_account(&a, &mut buf);
        assert_eq!(decode_account(&buf), Some(a));
        let t = Transfer {
            id: 1,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: u128::MAX,
            pending_id: 5,
            user_data_128: 6,
            user_data_64: 7,
            user_data_32: 8,
            timeout: 9,
            ledger: 10,
            code: 11,
            flags: TransferFlags::PENDING | TransferFlags::from_bits_retain(1 << 15),
            timestamp: 12,
        };
        encode_transfer(&t, &mut buf);
        assert_eq!(decode_transfer(&buf), Some(t));
        assert_eq!(decode_transfer(&buf[..127]), None);
    }

    #[test]
    fn history_values_round_trip_with_short_and_long_ids() {
        let a = Account {
            debits_pending: 1,
            debits_posted: 2,
            credits_pending: u128::MAX,
            credits_posted: 4,
            ..Account::default()
        };
        let balances = Some([1, 2, u128::MAX, 4]);
        for (id, with, len) in [
            (7u128, None, 8),
            (u128::from(u64::MAX), None, 8),
            (1u128 << 64, None, 16),
            (7, Some(&a), 72),
            (u128::MAX, Some(&a), 80),
        ] {
            let mut v = Vec::new();
            encode_history_into(&mut v, id, with);
            assert_eq!(v.len(), len);
            let expected = (id, with.and(balances));
            assert_eq!(decode_history(&v), Some(expected));
            v.push(0);
            assert_eq!(decode_history(&v), None, "{} bytes", v.len());
        }
        // The 16-byte form of a short id (written before ids were cut to
        // 8 bytes) still reads.
        assert_eq!(decode_history(&7u128.to_le_bytes()), Some((7, None)));
    }

    #[test]
    fn stored_accounts_round_trip_compact_and_full() {
        let new = Account {
            id: 9,
            ledger: 1,
            code: 2,
            flags: AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            timestamp: 1 << 40,
            ..Account::default()
        };
        let busy = Account {
            debits_posted: 500,
            credits_posted: 700,
            ..new
        };
        let wide = Account {
            id: u128::MAX - 3,
            debits_pending: u128::MAX,
            debits_posted: 1 << 100,
            credits_pending: 1,
            credits_posted: u128::MAX - 1,
            user_data_128: 1 << 64,
            user_data_64: 5,
            user_data_32: 6,
            reserved: 7,
            flags: AccountFlags::from_bits_retain(0x8000),
            ..new
        };
        let mut out = [0u8; STORED_MAX];
        // ledger/code/flags and timestamp; then the two posted balances.
        assert_eq!(encode_stored_account(&new, &mut out), 2 + 2 * 8);
        assert_eq!(encode_stored_account(&busy, &mut out), 2 + 4 * 8);
        for a in [new, busy, wide] {
            let len = encode_stored_account(&a, &mut out);
            assert_eq!(decode_stored_account(a.id, &out[..len]), Some(a));
            let mut rec = [0u8; RECORD_BYTES];
            encode_account(&a, &mut rec);
            assert_eq!(
                decode_stored_account(a.id, &rec),
                Some(a),
                "the full record"
            );
            assert_eq!(decode_stored_account(a.id, &out[..len - 1]), None);
        }
        assert_eq!(decode_stored_account(9, &[0, 0]), None, "no word at all");
        assert_eq!(
            parse_id_key(&id_key(ACCOUNT, u128::MAX - 3)),
            Some(u128::MAX - 3)
        );
    }

    #[test]
    fn stored_transfers_round_trip_compact_and_full_and_reject_the_rest() {
        let full = Transfer {
            id: u128::MAX,
            debit_account_id: u128::MAX - 1,
            credit_account_id: (1 << 64) | 1,
            amount: u128::MAX,
            pending_id: (5 << 70) | 1,
            user_data_128: u128::MAX,
            user_data_64: 7,
            user_data_32: 8,
            timeout: 9,
            ledger: 10,
            code: 11,
            flags: TransferFlags::PENDING,
            timestamp: 12,
        };
        let typical = Transfer {
            id: 7,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: 100,
            ledger: 1,
            code: 1,
            timestamp: 1 << 40,
            ..Transfer::default()
        };
        // The compact form as written before the id's words were left out:
        // every nonzero word, the id's too.
        let with_id = |t: &Transfer| {
            let mut rec = [0u8; RECORD_BYTES];
            encode_transfer(t, &mut rec);
            let mut out = vec![];
            compact_record(&rec, &mut out);
            out
        };
        let mut out = [0u8; STORED_MAX];
        for t in [full, typical] {
            let len = encode_stored_transfer(&t, &mut out);
            assert_eq!(decode_stored_transfer(t.id, &out[..len]), Some(t));
            // The id is the key's: another id gives another transfer.
            let other = decode_stored_transfer(t.id ^ 1, &out[..len]);
            assert_eq!(other.map(|o| o.id), Some(t.id ^ 1));
            let old = with_id(&t);
            assert!(old.len() > len, "the id's words");
            assert_eq!(decode_stored_transfer(t.id, &old), Some(t), "with the id");
            let mut rec = [0u8; RECORD_BYTES];
            encode_transfer(&t, &mut rec);
            assert_eq!(
                decode_stored_transfer(t.id, &rec),
                Some(t),
                "the full record"
            );
            // Cut short or padded: not a transfer.
            assert_eq!(decode_stored_transfer(t.id, &out[..len - 1]), None);
            let mut longer = out[..len].to_vec();
            longer.extend_from_slice(&[0; 8]);
            assert_eq!(decode_stored_transfer(t.id, &longer), None);
        }
        // Every word nonzero: the longest form, 14 words (never 128 bytes).
        assert_eq!(encode_stored_transfer(&full, &mut out), 2 + 14 * 8);
        let high_only = Transfer {
            credit_account_id: 1 << 64,
            ..typical
        };
        let len = encode_stored_transfer(&high_only, &mut out);
        assert_eq!(len, 2 + 5 * 8, "only the high word of the credit id");
        assert_eq!(decode_stored_transfer(7, &out[..len]), Some(high_only));
        // debit, credit, amount (low words), ledger/code/flags, timestamp.
        assert_eq!(encode_stored_transfer(&typical, &mut out), 2 + 5 * 8);
        assert_eq!(decode_stored_transfer(7, &[3]), None, "a failed id's code");
        assert_eq!(decode_stored_transfer(7, &[0, 0]), None);
        assert_eq!(decode_stored_transfer(7, &[]), None);
    }

    #[test]
    fn extra_writes_round_trip_and_bad_trailers_do_not_decode() {
        let mut t = Vec::new();
        encode_extra(&mut t, b"\xe5abc", Some(b"value"));
        encode_extra(&mut t, b"\xf8", None);
        let writes = decode_extra(&t).expect("trailer");
        assert_eq!(
            writes,
            vec![(&b"\xe5abc"[..], Some(&b"value"[..])), (&b"\xf8"[..], None)]
        );
        for cut in 1..t.len() {
            if let Some(w) = decode_extra(&t[..cut]) {
                // Only a cut between whole writes decodes, to fewer writes.
                assert!(w.len() < 2, "cut at {cut}");
            }
        }
        // Outside the namespace: a ledger key must not be writable.
        let mut foreign = Vec::new();
        encode_extra(&mut foreign, b"a0000", Some(b"x"));
        assert!(decode_extra(&foreign).is_none());
        assert!(decode_extra(&[9, 1, 0, 0xE5]).is_none());
        assert!(
            decode_extra(&[EXTRA_DELETE, 0, 0]).is_none(),
            "an empty key"
        );
        let mut huge = vec![EXTRA_PUT, 2, 0, 0xE5, b'k'];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_extra(&huge).is_none());
    }

    /// A body as written before compact events: 128-byte records.
    fn full_body(op: u8, first_ts: u64, ts: &[Transfer]) -> Vec<u8> {
        let mut body = vec![op];
        body.extend_from_slice(&first_ts.to_le_bytes());
        body.extend_from_slice(&(ts.len() as u32).to_le_bytes());
        for t in ts {
            let mut rec = [0u8; RECORD_BYTES];
            encode_transfer(t, &mut rec);
            body.extend_from_slice(&rec);
        }
        body
    }

    #[test]
    fn bodies_round_trip_and_reject_bad_lengths() {
        let typical = Transfer {
            id: 7,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: 100,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let full = Transfer {
            id: u128::MAX,
            debit_account_id: 1 << 70,
            amount: u128::MAX - 1,
            user_data_64: 9,
            timeout: 3,
            ..typical
        };
        let ts = [Transfer::default(), typical, full];
        let compact = encode_body(OP_CREATE_TRANSFERS, 77, &ts, encode_transfer);
        // Compact: the default transfer is a mask alone, the typical one
        // five words (id, debit, credit, amount, ledger/code/flags).
        assert_eq!(compact.len(), BODY_HEADER + 2 + (2 + 5 * 8) + (2 + 9 * 8));
        let old = full_body(OP_CREATE_TRANSFERS, 77, &ts);
        for body in [compact, old] {
            let (op, first, events, trailer) = decode_body(&body).expect("body");
            assert_eq!((op, first), (OP_CREATE_TRANSFERS, 77));
            let got: Vec<Transfer> = events.filter_map(|r| decode_transfer(&r)).collect();
            assert_eq!(got, ts);
            assert!(trailer.is_empty());
            assert!(decode_body(&body[..body.len() - 1]).is_none());
            // Only the op with extra writes may carry bytes after its events.
            let mut longer = body.clone();
            longer.push(EXTRA_DELETE);
            assert!(decode_body(&longer).is_none());
            longer[0] = OP_TRANSFERS_EXTRA | (body[0] & COMPACT);
            let (op, _, events, trailer) = decode_body(&longer).expect("extra");
            assert_eq!(
                (op, events.count(), trailer),
                (OP_TRANSFERS_EXTRA, 3, &[EXTRA_DELETE][..])
            );
            let mut lying = body.clone();
            lying[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(decode_body(&lying).is_none());
        }
    }

    #[test]
    fn keys_sort_by_their_numbers() {
        assert!(history_key(1, 2) < history_key(1, 3));
        // Across accounts, history keys sort by family first: only an
        // account's own entries need an order (by time).
        assert!(history_key_old(1, u64::MAX) < history_key_old(2, 0));
        assert!(expiry_key(5, u64::MAX, u128::MAX) < expiry_key(6, 0, 0));
        // At one expiry time, by creation timestamp, whatever the ids.
        assert!(expiry_key(5, 1, u128::MAX) < expiry_key(5, 2, 0));
        assert_eq!(
            parse_expiry_key(&expiry_key(5, 7, 9)),
            Some((5, Some(7), 9))
        );
        assert_eq!(
            parse_expiry_key(&legacy_expiry_key(5, 9)),
            Some((5, None, 9))
        );
        // Both forms sort by expiry time first.
        assert!(legacy_expiry_key(5, u128::MAX).as_slice() < expiry_key(6, 0, 0).as_slice());
        assert!(expiry_key(5, u64::MAX, u128::MAX).as_slice() < legacy_expiry_key(6, 0).as_slice());
        assert_eq!(parse_expiry_key(&expiry_key(5, 7, 9)[..32]), None);
        assert_eq!(parse_history_ts(&history_key(5, 9)), Some(9));
        assert_eq!(parse_history_ts(&history_key_old(5, 9)), Some(9));
        assert_eq!(parse_history_ts(&expiry_key(5, 7, 9)), None);
        // An account's entries share a family; accounts spread over all 64.
        let family = |a: u128| history_key(a, 0)[0];
        assert_eq!(family(77), history_key(77, u64::MAX)[0]);
        let families: std::collections::BTreeSet<u8> = (1..=10_000u128).map(family).collect();
        assert_eq!(families.len(), 64);
        assert!(families.iter().all(|&f| (0x20..0x60).contains(&f)));
        assert!(history_key_old(1, 2) < history_key_old(1, 3));
    }
}
