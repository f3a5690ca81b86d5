//! A cross-shard transfer as an event-sourced aggregate: the events its
//! coordinator (the debit account's shard) appends, one encode/decode pair
//! for them, and the fold that rebuilds the state from them.
//!
//! States: `Initiated -> Preparing -> Prepared -> Committing -> Committed`,
//! or from any state before a decision `-> Aborting -> Aborted`. The fold
//! refuses every other transition, so a protocol bug that appends an event
//! out of order shows up as an error instead of a wrong state.
//!
//! Layout of an event: `u8 kind | payload`; `TransferInitiated` carries
//! the user's transfer (128 bytes, `ledger::encode_transfer`) and both
//! shards; the leg events carry the shard (u32) and `LegRefused` the
//! result code (u8).

use super::ids::ShardId;
use crate::ledger::{
    CreateTransferResult, RECORD_BYTES, Transfer, decode_transfer, put_compact_transfer,
    take_compact_transfer,
};

/// Where a cross-shard transfer is. A coordinator commits several events
/// at once where nothing waits between them, so `Initiated` (always
/// followed by the debit leg's `LegPrepared` in the same commit) and
/// `Prepared` (followed by `CommitDecided`) are passed through but never
/// read back from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferState {
    /// Recorded by the coordinator; no leg prepared yet.
    Initiated,
    /// The debit leg holds its reservation; the credit shard's vote is
    /// awaited.
    Preparing,
    /// Both legs hold their reservations.
    Prepared,
    /// Commit decided; posting the legs.
    Committing,
    /// Both legs posted: final.
    Committed,
    /// Abort decided; voiding the legs that were prepared.
    Aborting,
    /// Every prepared leg voided: final.
    Aborted,
}

impl TransferState {
    /// Whether nothing more will happen to the transfer.
    pub fn is_final(self) -> bool {
        matches!(self, TransferState::Committed | TransferState::Aborted)
    }
}

/// One step of a cross-shard transfer, as the coordinator logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The transfer as the user gave it (its id, timestamp 0) and its
    /// two shards.
    TransferInitiated {
        /// The user's transfer.
        transfer: Transfer,
        /// The debit account's shard (the coordinator).
        debit_shard: ShardId,
        /// The credit account's shard.
        credit_shard: ShardId,
    },
    /// A shard reserved its leg, durably.
    LegPrepared(ShardId),
    /// A shard refused its leg, for this reason.
    LegRefused(ShardId, CreateTransferResult),
    /// Every leg is prepared: commit.
    CommitDecided,
    /// A leg was refused: abort.
    AbortDecided,
    /// A shard posted its leg.
    LegPosted(ShardId),
    /// A shard voided its leg.
    LegVoided(ShardId),
}

const INITIATED: u8 = 1;
const PREPARED: u8 = 2;
const REFUSED: u8 = 3;
const COMMIT: u8 = 4;
const ABORT: u8 = 5;
const POSTED: u8 = 6;
const VOIDED: u8 = 7;
/// `INITIATED` with the transfer in compact form (`INITIATED`, with its
/// 128-byte record, is what was written before).
const INITIATED_COMPACT: u8 = 8;

impl Event {
    /// The event's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + RECORD_BYTES + 8);
        match *self {
            Event::TransferInitiated {
                transfer,
                debit_shard,
                credit_shard,
            } => {
                out.push(INITIATED_COMPACT);
                put_compact_transfer(&transfer, &mut out);
                out.extend_from_slice(&debit_shard.to_le_bytes());
                out.extend_from_slice(&credit_shard.to_le_bytes());
            }
            Event::LegPrepared(s) => leg(&mut out, PREPARED, s),
            Event::LegRefused(s, code) => {
                leg(&mut out, REFUSED, s);
                out.push(code as u8);
            }
            Event::CommitDecided => out.push(COMMIT),
            Event::AbortDecided => out.push(ABORT),
            Event::LegPosted(s) => leg(&mut out, POSTED, s),
            Event::LegVoided(s) => leg(&mut out, VOIDED, s),
        }
        out
    }

    /// Decodes an event; `None` if the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Event> {
        let (&kind, rest) = b.split_first()?;
        let shard = |r: &[u8]| -> Option<ShardId> {
            Some(u32::from_le_bytes(r.get(..4)?.try_into().ok()?))
        };
        let exact = |n: usize| (rest.len() == n).then_some(());
        Some(match kind {
            INITIATED => {
                exact(RECORD_BYTES + 8)?;
                Event::TransferInitiated {
                    transfer: decode_transfer(&rest[..RECORD_BYTES])?,
                    debit_shard: shard(&rest[RECORD_BYTES..])?,
                    credit_shard: shard(&rest[RECORD_BYTES + 4..])?,
                }
            }
            INITIATED_COMPACT => {
                let (transfer, shards) = take_compact_transfer(rest)?;
                (shards.len() == 8).then_some(())?;
                Event::TransferInitiated {
                    transfer,
                    debit_shard: shard(shards)?,
                    credit_shard: shard(&shards[4..])?,
                }
            }
            PREPARED => {
                exact(4)?;
                Event::LegPrepared(shard(rest)?)
            }
            REFUSED => {
                exact(5)?;
                let code = *CreateTransferResult::ALL.get(usize::from(rest[4]))?;
                Event::LegRefused(shard(rest)?, code)
            }
            COMMIT => {
                exact(0)?;
                Event::CommitDecided
            }
            ABORT => {
                exact(0)?;
                Event::AbortDecided
            }
            POSTED => {
                exact(4)?;
                Event::LegPosted(shard(rest)?)
            }
            VOIDED => {
                exact(4)?;
                Event::LegVoided(shard(rest)?)
            }
            _ => return None,
        })
    }
}

fn leg(out: &mut Vec<u8>, kind: u8, shard: ShardId) {
    out.push(kind);
    out.extend_from_slice(&shard.to_le_bytes());
}

/// A cross-shard transfer's state, rebuilt from its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    /// The user's transfer.
    pub transfer: Transfer,
    /// The coordinator.
    pub debit_shard: ShardId,
    /// The other participant.
    pub credit_shard: ShardId,
    /// Where it is.
    pub state: TransferState,
    /// Which legs hold a reservation (debit, credit).
    pub prepared: [bool; 2],
    /// Which legs are posted or voided (debit, credit).
    pub settled: [bool; 2],
    /// Why it aborted, if a leg was refused.
    pub refusal: Option<CreateTransferResult>,
    /// How many events made it.
    pub events: u16,
}

impl Aggregate {
    /// Folds `events` (in order) into the state they lead to; `Err` names
    /// the first event that is not a legal next step.
    pub fn fold<'e>(events: impl IntoIterator<Item = &'e Event>) -> Result<Aggregate, String> {
        let mut it = events.into_iter();
        let Some(&Event::TransferInitiated {
            transfer,
            debit_shard,
            credit_shard,
        }) = it.next()
        else {
            return Err("the first event is not TransferInitiated".into());
        };
        let mut agg = Aggregate {
            transfer,
            debit_shard,
            credit_shard,
            state: TransferState::Initiated,
            prepared: [false; 2],
            settled: [false; 2],
            refusal: None,
            events: 1,
        };
        for e in it {
            agg.apply(e)?;
        }
        Ok(agg)
    }

    fn side(&self, shard: ShardId) -> Result<usize, String> {
        if shard == self.debit_shard {
            Ok(0)
        } else if shard == self.credit_shard {
            Ok(1)
        } else {
            Err(format!("shard {shard} is not a participant"))
        }
    }

    /// Applies the next event.
    pub fn apply(&mut self, e: &Event) -> Result<(), String> {
        use TransferState as S;
        let bad = || Err(format!("{e:?} in state {:?}", self.state));
        match *e {
            Event::TransferInitiated { .. } => return bad(),
            Event::LegPrepared(s) => {
                let i = self.side(s)?;
                if self.prepared[i] || !matches!(self.state, S::Initiated | S::Preparing) {
                    return bad();
                }
                self.prepared[i] = true;
                self.state = if self.prepared == [true; 2] {
                    S::Prepared
                } else {
                    S::Preparing
                };
            }
            Event::LegRefused(s, code) => {
                let i = self.side(s)?;
                if self.prepared[i] || !matches!(self.state, S::Initiated | S::Preparing) {
                    return bad();
                }
                self.refusal = Some(code);
            }
            Event::CommitDecided => {
                if self.state != S::Prepared {
                    return bad();
                }
                self.state = S::Committing;
            }
            Event::AbortDecided => {
                if !matches!(self.state, S::Initiated | S::Preparing | S::Prepared) {
                    return bad();
                }
                self.state = S::Aborting;
                self.finish_abort();
            }
            Event::LegPosted(s) => {
                let i = self.side(s)?;
                if self.state != S::Committing || self.settled[i] {
                    return bad();
                }
                self.settled[i] = true;
                if self.settled == [true; 2] {
                    self.state = S::Committed;
                }
            }
            Event::LegVoided(s) => {
                let i = self.side(s)?;
                if self.state != S::Aborting || self.settled[i] || !self.prepared[i] {
                    return bad();
                }
                self.settled[i] = true;
                self.finish_abort();
            }
        }
        self.events += 1;
        Ok(())
    }

    /// Aborting ends when every prepared leg is voided.
    fn finish_abort(&mut self) {
        if (0..2).all(|i| !self.prepared[i] || self.settled[i]) {
            self.state = TransferState::Aborted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> Event {
        Event::TransferInitiated {
            transfer: Transfer {
                id: 9,
                debit_account_id: 1,
                credit_account_id: 2,
                amount: 5,
                ledger: 1,
                code: 1,
                ..Transfer::default()
            },
            debit_shard: 0,
            credit_shard: 1,
        }
    }

    #[test]
    fn events_round_trip_and_bad_bytes_do_not_decode() {
        let all = [
            init(),
            Event::LegPrepared(3),
            Event::LegRefused(1, CreateTransferResult::ExceedsCredits),
            Event::CommitDecided,
            Event::AbortDecided,
            Event::LegPosted(0),
            Event::LegVoided(7),
        ];
        for e in all {
            let b = e.encode();
            assert_eq!(Event::decode(&b), Some(e));
            assert_eq!(Event::decode(&b[..b.len() - 1]), None, "{e:?} truncated");
            let mut long = b.clone();
            long.push(0);
            assert_eq!(Event::decode(&long), None, "{e:?} extended");
        }
        // The form written before compact transfers: the 128-byte record.
        let Event::TransferInitiated { transfer, .. } = init() else {
            unreachable!()
        };
        let mut old = vec![INITIATED];
        let mut rec = [0u8; RECORD_BYTES];
        crate::ledger::encode_transfer(&transfer, &mut rec);
        old.extend_from_slice(&rec);
        old.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Event::decode(&old), Some(init()));
        assert!(init().encode().len() < old.len() / 2, "compact");
        assert_eq!(Event::decode(&[]), None);
        assert_eq!(Event::decode(&[99]), None);
        assert_eq!(Event::decode(&[REFUSED, 0, 0, 0, 0, 250]), None);
    }

    #[test]
    fn commit_path_reaches_committed() {
        use Event::*;
        let evs = [
            init(),
            LegPrepared(0),
            LegPrepared(1),
            CommitDecided,
            LegPosted(0),
        ];
        let a = Aggregate::fold(&evs).unwrap();
        assert_eq!(a.state, TransferState::Committing);
        let mut evs = evs.to_vec();
        evs.push(LegPosted(1));
        let a = Aggregate::fold(&evs).unwrap();
        assert_eq!(a.state, TransferState::Committed);
        assert!(a.state.is_final());
    }

    #[test]
    fn abort_path_voids_only_prepared_legs() {
        use Event::*;
        let refused = ExceedsCredits;
        let evs = [init(), LegPrepared(0), LegRefused(1, refused), AbortDecided];
        let a = Aggregate::fold(&evs).unwrap();
        assert_eq!(a.state, TransferState::Aborting);
        let mut done = evs.to_vec();
        done.push(LegVoided(0));
        let a = Aggregate::fold(&done).unwrap();
        assert_eq!(
            (a.state, a.refusal),
            (TransferState::Aborted, Some(refused))
        );
        // The refused leg holds nothing: voiding it is a protocol error.
        done.push(LegVoided(1));
        assert!(Aggregate::fold(&done).is_err());
        use CreateTransferResult::ExceedsCredits;
    }

    #[test]
    fn illegal_steps_are_refused() {
        use Event::*;
        let cases: &[&[Event]] = &[
            &[init(), CommitDecided],
            &[init(), LegPrepared(0), CommitDecided],
            &[init(), LegPrepared(0), LegPrepared(0)],
            &[
                init(),
                LegPrepared(0),
                LegPrepared(1),
                CommitDecided,
                AbortDecided,
            ],
            &[init(), LegPrepared(0), AbortDecided, LegPosted(0)],
            &[init(), LegPrepared(5)],
            &[init(), init()],
            &[LegPrepared(0)],
        ];
        for evs in cases {
            assert!(Aggregate::fold(evs.iter()).is_err(), "{evs:?}");
        }
    }
}
