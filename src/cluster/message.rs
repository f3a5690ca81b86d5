//! The messages of the two-phase commit between a transfer's coordinator
//! (its debit account's shard) and the other participant (its credit
//! account's shard), with one encode/decode pair (the outbox stores them).
//!
//! `Prepare` (coordinator -> credit shard) until a `Vote` comes back;
//! `Vote` yes (credit shard -> coordinator) until a `Decision` comes back
//! (this is how an in-doubt leg asks for the outcome, also after a
//! restart); `Decision` (coordinator -> credit shard) until `Done` comes
//! back. A refusal (`Vote` with a reason) and `Done` are only replies: the
//! message they answer is re-sent until they arrive.

use super::ids::ShardId;
use crate::ledger::{
    CreateTransferResult, RECORD_BYTES, Transfer, decode_transfer, put_compact_transfer,
    take_compact_transfer,
};

/// One protocol message about one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Reserve your leg of `transfer`, then vote.
    Prepare {
        /// The user's transfer.
        transfer: Transfer,
    },
    /// The credit shard's vote: `None` = prepared (yes), `Some(reason)` =
    /// refused.
    Vote {
        /// The transfer id.
        id: u128,
        /// Why the leg was refused, if it was.
        refused: Option<CreateTransferResult>,
    },
    /// The coordinator's decision: post (`commit`) or void your leg.
    Decision {
        /// The transfer id.
        id: u128,
        /// Post (true) or void (false).
        commit: bool,
    },
    /// The credit shard applied the decision.
    Done {
        /// The transfer id.
        id: u128,
        /// Whether it posted (true) or voided (false).
        commit: bool,
    },
}

/// Messages from one shard, delivered together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender.
    pub from: ShardId,
    /// What it says.
    pub messages: Vec<Message>,
}

const PREPARE: u8 = 1;
const VOTE: u8 = 2;
const DECISION: u8 = 3;
const DONE: u8 = 4;
const YES: u8 = 0xFF;
/// `PREPARE` with the transfer in compact form (`PREPARE`, with its
/// 128-byte record, is what was sent before).
const PREPARE_COMPACT: u8 = 5;

impl Message {
    /// The transfer this message is about.
    pub fn id(&self) -> u128 {
        match *self {
            Message::Prepare { transfer } => transfer.id,
            Message::Vote { id, .. } | Message::Decision { id, .. } | Message::Done { id, .. } => {
                id
            }
        }
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + RECORD_BYTES);
        match *self {
            Message::Prepare { transfer } => {
                out.push(PREPARE_COMPACT);
                put_compact_transfer(&transfer, &mut out);
            }
            Message::Vote { id, refused } => {
                out.push(VOTE);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(refused.map_or(YES, |r| r as u8));
            }
            Message::Decision { id, commit } | Message::Done { id, commit } => {
                out.push(if matches!(self, Message::Decision { .. }) {
                    DECISION
                } else {
                    DONE
                });
                out.extend_from_slice(&id.to_le_bytes());
                out.push(u8::from(commit));
            }
        }
        out
    }

    /// Decodes a message; `None` if the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Message> {
        let (&kind, rest) = b.split_first()?;
        if kind == PREPARE {
            return (rest.len() == RECORD_BYTES)
                .then(|| decode_transfer(rest))?
                .map(|transfer| Message::Prepare { transfer });
        }
        if kind == PREPARE_COMPACT {
            let (transfer, after) = take_compact_transfer(rest)?;
            return after.is_empty().then_some(Message::Prepare { transfer });
        }
        if rest.len() != 17 {
            return None;
        }
        let id = u128::from_le_bytes(rest[..16].try_into().ok()?);
        let last = rest[16];
        Some(match kind {
            VOTE => Message::Vote {
                id,
                refused: if last == YES {
                    None
                } else {
                    Some(*CreateTransferResult::ALL.get(usize::from(last))?)
                },
            },
            DECISION | DONE if last <= 1 => {
                let commit = last == 1;
                if kind == DECISION {
                    Message::Decision { id, commit }
                } else {
                    Message::Done { id, commit }
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_bytes_do_not_decode() {
        let t = Transfer {
            id: 77,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 10,
            ledger: 3,
            code: 4,
            ..Transfer::default()
        };
        let all = [
            Message::Prepare { transfer: t },
            Message::Vote {
                id: 77,
                refused: None,
            },
            Message::Vote {
                id: 77,
                refused: Some(CreateTransferResult::ExceedsDebits),
            },
            Message::Decision {
                id: 77,
                commit: true,
            },
            Message::Decision {
                id: 77,
                commit: false,
            },
            Message::Done {
                id: 77,
                commit: true,
            },
        ];
        for m in all {
            let b = m.encode();
            assert_eq!(Message::decode(&b), Some(m));
            assert_eq!(m.id(), 77);
            assert_eq!(Message::decode(&b[..b.len() - 1]), None);
            let mut long = b.clone();
            long.push(1);
            assert_eq!(Message::decode(&long), None);
        }
        let mut bad = Message::Decision {
            id: 1,
            commit: true,
        }
        .encode();
        bad[17] = 2;
        assert_eq!(Message::decode(&bad), None);
        assert_eq!(Message::decode(&[9; 18]), None);
        // The form sent before compact transfers: the 128-byte record.
        let mut old = vec![PREPARE];
        let mut rec = [0u8; RECORD_BYTES];
        crate::ledger::encode_transfer(&t, &mut rec);
        old.extend_from_slice(&rec);
        assert_eq!(
            Message::decode(&old),
            Some(Message::Prepare { transfer: t })
        );
        assert_eq!(Message::decode(&[]), None);
    }
}
