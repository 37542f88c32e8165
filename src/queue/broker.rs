//! What the queue needs of a broker: durable partitioned streams with per-partition ownership,
//! acknowledgement, a dead-letter stream and a place to leave each applied command's causal
//! token. [`RedisBroker`](super::RedisBroker) is the first; NATS JetStream (dedup by message id,
//! acks, raft-replicated streams) can implement the same trait.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

/// A command as the broker stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The command's identity (uuid v7): the ticket, and the unit's identity when applied.
    pub id: Uuid,
    /// The command's registered name.
    pub name: String,
    /// The command, serialized (JSON).
    pub payload: String,
}

/// A message handed to a worker, with the broker's own id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The broker's id of the entry (a Redis stream id).
    pub entry: String,
    /// The message.
    pub message: Message,
}

/// A dead letter: a command that failed too often, with its last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The broker's id of the dead-letter entry.
    pub entry: String,
    /// The command's identity.
    pub id: Uuid,
    /// The command's name.
    pub name: String,
    /// The command, serialized.
    pub payload: String,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

/// How full the queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Depth {
    /// Commands enqueued and not yet applied (or dead-lettered).
    pub pending: u64,
    /// When the oldest of them was enqueued (ms since the Unix epoch), if any.
    pub oldest_ms: Option<u64>,
    /// Commands in the dead-letter stream.
    pub dead_letters: u64,
}

/// A broker's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The queue holds its maximum of pending commands; nothing was stored.
    #[error("the queue is full: {pending} pending, at most {max}")]
    Full {
        /// Pending commands.
        pending: u64,
        /// The maximum.
        max: u64,
    },
    /// The broker could not be reached or refused the operation. For a publish, whether it
    /// was stored is unknown: enqueue again with the same id (the worker applies it once).
    #[error("broker: {0}")]
    Unavailable(String),
}

/// A durable, partitioned broker. Each partition is consumed in order by one owner at a
/// time; an owner that dies loses its lease and the next one reads its unacknowledged
/// deliveries first, in order.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Stores `message` in `partition`, durably, unless `max_pending` are pending already.
    /// Returns only once the broker has stored it durably.
    async fn publish(
        &self,
        partition: u32,
        message: &Message,
        max_pending: u64,
    ) -> Result<(), BrokerError>;

    /// Takes or renews ownership of `partition` for `owner` for `lease`; false when another
    /// owner holds it.
    async fn own(&self, partition: u32, owner: &str, lease: Duration) -> Result<bool, BrokerError>;

    /// Gives up ownership of `partition` if `owner` holds it.
    async fn release(&self, partition: u32, owner: &str) -> Result<(), BrokerError>;

    /// Up to `count` deliveries of `partition`, in order: `redeliver` re-reads those delivered
    /// and not acknowledged (after a crash or a failure); otherwise new ones, waiting up to
    /// `block` for some.
    async fn read(
        &self,
        partition: u32,
        redeliver: bool,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError>;

    /// The delivery was applied (or found applied already): remove it, and leave `token`
    /// (the commit's causal token) under its id for [`wait`](super::Queue::wait), for `keep`.
    async fn ack(
        &self,
        partition: u32,
        delivery: &Delivery,
        token: &str,
        keep: Duration,
    ) -> Result<(), BrokerError>;

    /// Counts a failed attempt at `delivery`; the attempts so far.
    async fn failed(&self, delivery: &Delivery) -> Result<u32, BrokerError>;

    /// Moves `delivery` to the dead-letter stream with its last `error`.
    async fn dead_letter(
        &self,
        partition: u32,
        delivery: &Delivery,
        error: &str,
        attempts: u32,
    ) -> Result<(), BrokerError>;

    /// The token left by [`ack`](Self::ack) for `id`, if the command was applied; for a
    /// dead-lettered command, `Err` text starting with `dead: `.
    async fn outcome(&self, id: Uuid) -> Result<Option<Result<String, String>>, BrokerError>;

    /// A future that resolves when the broker pushes word that `id` was settled (acknowledged
    /// or dead-lettered). Interest is registered by this call, before the future is polled, so
    /// a settlement after it is not missed. Best effort: a push lost on the way costs
    /// [`wait`](super::Queue::wait) only its next poll of [`outcome`](Self::outcome). The
    /// default never resolves (a broker without pushes: `wait` polls).
    fn settled(&self, id: Uuid) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let _ = id;
        Box::pin(std::future::pending())
    }

    /// Pending commands, the oldest one's age, dead letters.
    async fn depth(&self, partitions: u32) -> Result<Depth, BrokerError>;

    /// The first `limit` dead letters.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError>;

    /// Removes a dead letter and its recorded outcome; returns it.
    async fn take_dead_letter(&self, entry: &str) -> Result<Option<DeadLetter>, BrokerError>;
}
