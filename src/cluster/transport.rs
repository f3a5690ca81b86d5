//! How shards reach each other: the `Transport` trait and its in-process
//! implementation (a channel per shard, read by that shard's thread). The
//! deterministic simulated network is in `sim.rs`.
//!
//! A transport may lose, delay, duplicate or reorder envelopes: the
//! protocol re-sends from the outbox and every handler is idempotent. It
//! must not corrupt them (a real one would checksum them).

use crossbeam_channel::Sender;

use super::ids::ShardId;
use super::message::Envelope;

/// Carries envelopes between shards.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends `envelope` to shard `to`; never blocks for long and never
    /// fails: an envelope that cannot be delivered is dropped (the sender's
    /// outbox sends it again).
    fn send(&self, to: ShardId, envelope: Envelope);
}

/// What a shard thread reads from its channel.
#[derive(Debug)]
pub(crate) enum Inbox {
    /// Messages from a shard.
    Envelope(Envelope),
    /// Stop the thread.
    Stop,
}

/// In-process channels, one per shard: the default transport. Unbounded:
/// the senders are the shards themselves and the callers waiting on them,
/// so the work in flight is bounded by the callers' batches.
#[derive(Debug)]
pub struct ChannelTransport {
    senders: Vec<Sender<Inbox>>,
}

impl ChannelTransport {
    pub(crate) fn new(senders: Vec<Sender<Inbox>>) -> Self {
        ChannelTransport { senders }
    }

    pub(crate) fn stop(&self) {
        for s in &self.senders {
            let _ = s.send(Inbox::Stop);
        }
    }
}

impl Transport for ChannelTransport {
    fn send(&self, to: ShardId, envelope: Envelope) {
        if let Some(s) = self.senders.get(to as usize) {
            // A closed channel means the cluster is shutting down.
            let _ = s.send(Inbox::Envelope(envelope));
        }
    }
}

/// Groups `(to, message)` pairs into one envelope per destination, in
/// first-seen order of destinations.
pub(crate) fn envelopes(
    from: ShardId,
    sends: Vec<(ShardId, super::message::Message)>,
) -> Vec<(ShardId, Envelope)> {
    let mut out: Vec<(ShardId, Envelope)> = Vec::new();
    for (to, m) in sends {
        match out.iter_mut().find(|(t, _)| *t == to) {
            Some((_, env)) => env.messages.push(m),
            None => out.push((
                to,
                Envelope {
                    from,
                    messages: vec![m],
                },
            )),
        }
    }
    out
}
