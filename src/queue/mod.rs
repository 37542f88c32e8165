//! A durable write-behind queue: the web request stores a command on a broker and returns; a
//! worker applies it to the primary, exactly once (seed 000's Redis queue, built on
//! [`replay`](crate::replay)).
//!
//! ```no_run
//! # #[cfg(feature = "queue-redis")]
//! # async fn demo(db: sea_orm_replica::ReplicatedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
//! use sea_orm::ConnectionTrait;
//! use sea_orm_replica::queue::{Command, Queue, RedisBroker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct AddView { banner_id: i32 }
//! impl Command for AddView {
//!     const NAME: &'static str = "add_view";
//!     fn key(&self) -> Option<String> { Some(self.banner_id.to_string()) } // one banner's views in order
//! }
//!
//! let queue = Queue::builder("views")
//!     .broker(RedisBroker::connect("redis://127.0.0.1:56379/", "views").await?)
//!     .handle(|cmd: AddView, unit| Box::pin(async move {
//!         let sql = format!("UPDATE banner SET views = views + 1 WHERE id = {}", cmd.banner_id);
//!         unit.execute_unprepared(&sql).await.map(drop)
//!     }))
//!     .build()?;
//! let worker = queue.worker(db.clone()).spawn();              // in the web process or its own
//! let ticket = queue.enqueue(&AddView { banner_id: 7 }).await?; // returns once Redis has it on disk
//! let token = queue.wait(&ticket, std::time::Duration::from_secs(2)).await?; // applied: its causal token
//! worker.stop().await;
//! # Ok(()) }
//! ```
//!
//! **What it promises.** `enqueue` returns only once the broker has stored the command durably
//! (Redis with `appendfsync always`: on disk; see [`RedisBroker`]), with a [`Ticket`], the
//! command's uuid v7. A worker applies it in a read-write unit whose identity is that uuid
//! ([`read_write_replayed_as`](crate::ReplicatedDatabase::read_write_replayed_as)) and then
//! acknowledges it; a crash between the commit and the acknowledgement redelivers it, and the
//! identity (the `sor_applied` primary key, on the server) refuses the second application.
//! While no primary is reachable, `enqueue` still succeeds and workers wait and resume on the
//! new primary. So: every acknowledged enqueue is applied exactly once.
//!
//! **Order.** Commands with the same [`key`](Command::key) go to one partition, which one
//! worker owns at a time (a lease in the broker) and applies in order; different partitions run
//! in parallel. A command that fails is retried (with back-off) before the ones behind it, so a
//! key's order holds; after [`max_attempts`](QueueBuilder::max_attempts) it moves to the
//! dead-letter stream with its last error and the partition goes on. Errors because the primary
//! is away are not attempts: the worker waits for it.
//!
//! **Backpressure.** At [`max_pending`](QueueBuilder::max_pending) commands waiting,
//! `enqueue` fails with [`ReplicaError::QueueFull`] and stores nothing.

mod broker;
#[cfg(feature = "queue-redis")]
mod redis;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbErr;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

pub use broker::{Broker, BrokerError, DeadLetter, Delivery, Depth, Message};
#[cfg(feature = "queue-redis")]
pub use redis::RedisBroker;
pub use worker::{Worker, WorkerBuilder, WorkerStats};

use crate::consistency::{unix_ms, CausalToken};
use crate::observe::record::QueueMetrics;
use crate::shard::{Hash, ShardKey};
use crate::unit::access::ReadWrite;
use crate::{ReplicaError, UnitOfWork};

/// A command the queue carries: serde, with a stable name.
pub trait Command: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The name it is stored under; keep it stable across deploys.
    const NAME: &'static str;

    /// Commands with the same key are applied in the order they were enqueued (one
    /// partition). `None`: any partition.
    fn key(&self) -> Option<String> {
        None
    }

    /// On a sharded handle ([`Queue::sharded_worker`]): the shard key whose shard's primary
    /// applies the command (usually the same value as [`key`](Self::key)). `None` there is a
    /// failed attempt.
    fn shard_key(&self) -> Option<ShardKey> {
        None
    }
}

/// What a handler returns.
pub type HandlerFuture<'c> = Pin<Box<dyn Future<Output = Result<(), DbErr>> + Send + 'c>>;

/// A registered handler, type-erased: deserializes the payload, then applies it in the unit.
type Apply =
    Arc<dyn for<'c> Fn(&str, &'c UnitOfWork<ReadWrite>) -> HandlerFuture<'c> + Send + Sync>;

/// A registered command's shard key, from its payload.
type Locate = Arc<dyn Fn(&str) -> Option<ShardKey> + Send + Sync>;

/// What a worker needs of a registered command.
#[derive(Clone)]
pub(crate) struct Handler {
    apply: Apply,
    locate: Locate,
}

/// The identity of an enqueued command: its uuid v7. Print it into a cookie or a response;
/// parse it back with `str::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(Uuid);

impl Ticket {
    /// The ticket of the command with identity `id`.
    pub fn from_id(id: Uuid) -> Self {
        Ticket(id)
    }

    /// The command's identity (also its unit's identity in `sor_applied`).
    pub fn id(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Ticket {
    type Err = ReplicaError;
    fn from_str(s: &str) -> Result<Self, ReplicaError> {
        s.trim()
            .parse()
            .map(Ticket)
            .map_err(|_| ReplicaError::Config("a ticket is a uuid".into()))
    }
}

tokio::task_local! {
    /// The tickets enqueued inside a web request (the layer sends them back in a cookie).
    static REQUEST_TICKETS: std::sync::Mutex<Vec<Uuid>>;
}

/// Runs `fut`, collecting the tickets of the commands enqueued inside it.
#[cfg(feature = "tower")]
pub(crate) async fn collecting_tickets<F: Future>(fut: F) -> (F::Output, Vec<Uuid>) {
    let tickets = std::sync::Mutex::new(Vec::new());
    let (out, tickets) = REQUEST_TICKETS
        .scope(tickets, async move {
            let out = fut.await;
            let tickets = REQUEST_TICKETS
                .try_with(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|p| p.into_inner())))
                .unwrap_or_default();
            (out, tickets)
        })
        .await;
    (out, tickets)
}

/// The largest serialized command `enqueue` accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Builds a [`Queue`].
pub struct QueueBuilder {
    name: String,
    broker: Option<Arc<dyn Broker>>,
    partitions: u32,
    max_pending: u64,
    max_attempts: u32,
    keep_outcome: Duration,
    handlers: HashMap<&'static str, Handler>,
}

impl fmt::Debug for QueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .field("commands", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl QueueBuilder {
    /// The broker (required).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Partitions: how many keys apply in parallel (default 8, 1 to 1024). Keep it the same
    /// across deploys: a key's partition depends on it.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Pending commands at most; `enqueue` then fails with [`ReplicaError::QueueFull`]
    /// (default 100,000).
    pub fn max_pending(mut self, n: u64) -> Self {
        self.max_pending = n;
        self
    }

    /// Failed attempts before a command goes to the dead-letter stream (default 5).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// How long an applied command's causal token is kept for [`Queue::wait`] (default 1 h).
    pub fn keep_outcome(mut self, keep: Duration) -> Self {
        self.keep_outcome = keep;
        self
    }

    /// Registers `C` and the function that applies it in a read-write unit on the primary.
    /// The function may run more than once for one command (a failover, a retry): database
    /// work only; only one run ever commits.
    pub fn handle<C, F>(mut self, handler: F) -> Self
    where
        C: Command,
        F: for<'c> Fn(C, &'c UnitOfWork<ReadWrite>) -> HandlerFuture<'c> + Send + Sync + 'static,
    {
        let apply: Apply =
            Arc::new(
                move |payload, unit| match serde_json::from_str::<C>(payload) {
                    Ok(command) => handler(command, unit),
                    Err(e) => {
                        let why = format!("command `{}` does not deserialize: {e}", C::NAME);
                        Box::pin(async move { Err(DbErr::Custom(why)) })
                    }
                },
            );
        let locate: Locate = Arc::new(|payload| {
            serde_json::from_str::<C>(payload)
                .ok()
                .and_then(|c| c.shard_key())
        });
        self.handlers.insert(C::NAME, Handler { apply, locate });
        self
    }

    /// The queue.
    pub fn build(self) -> Result<Queue, ReplicaError> {
        let broker = self
            .broker
            .ok_or_else(|| ReplicaError::Config("a queue needs a broker".into()))?;
        if !(1..=1024).contains(&self.partitions) {
            return Err(ReplicaError::Config(
                "a queue has 1 to 1024 partitions".into(),
            ));
        }
        if self.max_pending == 0 {
            return Err(ReplicaError::Config(
                "max_pending must be above zero".into(),
            ));
        }
        Ok(Queue {
            inner: Arc::new(QueueInner {
                broker,
                partitions: self.partitions,
                max_pending: self.max_pending,
                max_attempts: self.max_attempts,
                keep_outcome: self.keep_outcome,
                handlers: self.handlers,
                metrics: QueueMetrics::new(&self.name),
                name: self.name,
            }),
        })
    }
}

pub(crate) struct QueueInner {
    name: String,
    broker: Arc<dyn Broker>,
    partitions: u32,
    max_pending: u64,
    max_attempts: u32,
    keep_outcome: Duration,
    handlers: HashMap<&'static str, Handler>,
    /// Its metric keys (depth, age, applied, …), built once.
    pub(crate) metrics: QueueMetrics,
}

/// A durable write-behind queue of typed commands (see the [module](self)). Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("partitions", &self.inner.partitions)
            .finish()
    }
}

/// The queue as the broker sees it now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    /// The queue's name.
    pub name: String,
    /// Commands enqueued and not yet applied.
    pub pending: u64,
    /// How long the oldest pending command has waited, in ms.
    pub oldest_pending_ms: Option<u64>,
    /// Commands in the dead-letter stream.
    pub dead_letters: u64,
}

impl fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue {}: {} pending (oldest {}), {} dead letters",
            self.name,
            self.pending,
            self.oldest_pending_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            self.dead_letters
        )
    }
}

impl Queue {
    pub(crate) fn from_inner(inner: Arc<QueueInner>) -> Self {
        Queue { inner }
    }

    /// Maps the broker's errors to the library's, naming this queue.
    fn broker_error(&self) -> impl Fn(BrokerError) -> ReplicaError + '_ {
        |e| broker_error(&self.inner.name, e)
    }
}

fn broker_error(queue: &str, e: BrokerError) -> ReplicaError {
    match e {
        BrokerError::Full { pending, max } => ReplicaError::QueueFull {
            queue: queue.to_owned(),
            pending,
            max,
        },
        BrokerError::Unavailable(reason) => ReplicaError::Broker(reason),
    }
}

impl Queue {
    /// A queue called `name` (1–64 of `[A-Za-z0-9_-]`, checked by the broker).
    pub fn builder(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder {
            name: name.into(),
            broker: None,
            partitions: 8,
            max_pending: 100_000,
            max_attempts: 5,
            keep_outcome: Duration::from_secs(3600),
            handlers: HashMap::new(),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Stores `command` on the broker and returns its ticket once the broker has it durably.
    ///
    /// Errors: [`ReplicaError::QueueFull`] (nothing stored); [`ReplicaError::Broker`] when the
    /// broker did not answer (whether it stored it is unknown: enqueue again, the worker
    /// applies a command id once); [`ReplicaError::Config`] for a command with no handler or
    /// one larger than [`MAX_PAYLOAD`].
    pub async fn enqueue<C: Command>(&self, command: &C) -> Result<Ticket, ReplicaError> {
        self.enqueue_as(Uuid::now_v7(), command).await
    }

    /// [`enqueue`](Self::enqueue) under a given id (to retry an enqueue whose answer was
    /// lost without applying it twice).
    pub async fn enqueue_as<C: Command>(
        &self,
        id: Uuid,
        command: &C,
    ) -> Result<Ticket, ReplicaError> {
        if !self.inner.handlers.contains_key(C::NAME) {
            return Err(ReplicaError::Config(format!(
                "no handler is registered for command `{}` on queue `{}`",
                C::NAME,
                self.inner.name
            )));
        }
        let payload = serde_json::to_string(command)
            .map_err(|e| ReplicaError::Config(format!("command `{}`: {e}", C::NAME)))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(ReplicaError::Config(format!(
                "command `{}` is {} bytes, more than {MAX_PAYLOAD}",
                C::NAME,
                payload.len()
            )));
        }
        let partition = match command.key() {
            Some(key) => Hash::shard_of(&ShardKey::Str(key), self.inner.partitions as usize) as u32,
            None => fastrand::u32(..self.inner.partitions),
        };
        let message = Message {
            id,
            name: C::NAME.to_owned(),
            payload,
        };
        self.inner
            .broker
            .publish(partition, &message, self.inner.max_pending)
            .await
            .map_err(self.broker_error())?;
        tracing::debug!(queue = %self.inner.name, %id, command = C::NAME, partition, "enqueued");
        // inside a web request: the layer sends the ticket back, and waits for it next time
        let _ = REQUEST_TICKETS.try_with(|t| t.lock().unwrap_or_else(|p| p.into_inner()).push(id));
        Ok(Ticket(id))
    }

    /// Waits until the command of `ticket` is applied, up to `timeout`: `Some(token)`, the
    /// causal token of its commit (hand it to the next read-only unit, and that read sees the
    /// write on a replica); `None` if not applied yet. A command that went to the dead-letter
    /// stream: [`ReplicaError::DeadLettered`]. (A command found applied before, on a
    /// redelivery, gives an empty token.)
    pub async fn wait(
        &self,
        ticket: &Ticket,
        timeout: Duration,
    ) -> Result<Option<CausalToken>, ReplicaError> {
        let until = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            // registered before the look, so a settlement right after it wakes us
            let settled = self.inner.broker.settled(ticket.0);
            match self
                .inner
                .broker
                .outcome(ticket.0)
                .await
                .map_err(self.broker_error())?
            {
                Some(Ok(token)) => {
                    return Ok(Some(token.parse().unwrap_or_default()));
                }
                Some(Err(error)) => {
                    return Err(ReplicaError::DeadLettered {
                        id: ticket.0,
                        error,
                    })
                }
                None if tokio::time::Instant::now() >= until => return Ok(None),
                None => {
                    // the broker's push, or the next poll (a push is best effort)
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    tokio::select! {
                        _ = settled => {}
                        _ = tokio::time::sleep(pause.min(left)) => {}
                    }
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Pending commands, the oldest one's wait, dead letters.
    pub async fn status(&self) -> Result<QueueStatus, ReplicaError> {
        let depth = self
            .inner
            .broker
            .depth(self.inner.partitions)
            .await
            .map_err(self.broker_error())?;
        let now = unix_ms();
        let oldest_pending_ms = depth.oldest_ms.map(|t| now.saturating_sub(t));
        self.inner.metrics.status(
            depth.pending,
            oldest_pending_ms.map(Duration::from_millis),
            depth.dead_letters,
        );
        Ok(QueueStatus {
            name: self.inner.name.clone(),
            pending: depth.pending,
            oldest_pending_ms,
            dead_letters: depth.dead_letters,
        })
    }

    /// The first `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, ReplicaError> {
        self.inner
            .broker
            .dead_letters(limit)
            .await
            .map_err(self.broker_error())
    }

    /// Enqueues a dead letter again (same id: if it was applied after all, it is not applied
    /// twice) and removes it from the dead-letter stream; its new ticket. `None`: no such entry.
    pub async fn retry_dead_letter(&self, entry: &str) -> Result<Option<Ticket>, ReplicaError> {
        let Some(dead) = self.take_dead_letter(entry).await? else {
            return Ok(None);
        };
        let message = Message {
            id: dead.id,
            name: dead.name,
            payload: dead.payload,
        };
        // its partition is lost with it; a retried command has no order to keep
        let partition = fastrand::u32(..self.inner.partitions);
        self.inner
            .broker
            .publish(partition, &message, u64::MAX)
            .await
            .map_err(self.broker_error())?;
        Ok(Some(Ticket(message.id)))
    }

    /// Drops a dead letter for good; the dropped letter, if it existed.
    pub async fn drop_dead_letter(&self, entry: &str) -> Result<Option<DeadLetter>, ReplicaError> {
        self.take_dead_letter(entry).await
    }

    async fn take_dead_letter(&self, entry: &str) -> Result<Option<DeadLetter>, ReplicaError> {
        let valid = entry.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.len() < 21
                && b.len() < 21
                && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
        if !valid {
            return Err(ReplicaError::Config(
                "a dead letter's entry is a stream id like 1700000000000-0".into(),
            ));
        }
        self.inner
            .broker
            .take_dead_letter(entry)
            .await
            .map_err(self.broker_error())
    }

    /// A worker that applies this queue's commands on `db`'s primary.
    pub fn worker(&self, db: crate::ReplicatedDatabase) -> WorkerBuilder {
        WorkerBuilder::new(self.inner.clone(), worker::Target::One(db))
    }

    /// A worker that applies each command on the primary of the shard of its
    /// [`shard_key`](Command::shard_key). A batch ([`WorkerBuilder::apply_batch`]) spanning
    /// shards is applied one command at a time.
    pub fn sharded_worker(&self, shards: crate::shard::ShardedDatabase) -> WorkerBuilder {
        WorkerBuilder::new(self.inner.clone(), worker::Target::Sharded(shards))
    }
}
