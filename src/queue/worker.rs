//! Workers: own partitions, apply their commands in order, exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::TransactionError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::broker::Delivery;
use super::{Queue, QueueInner};
use crate::shard::ShardedDatabase;
use crate::unit::scope::CausalScope;
use crate::{ReplicaError, ReplicatedDatabase};

/// What a worker has done.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct WorkerStats {
    /// Commands applied (committed by this worker).
    pub applied: u64,
    /// Deliveries found applied already (a redelivery after a crash): acknowledged, not applied.
    pub skipped: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
    /// Commands moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Waits for the primary (or the broker) to come back.
    pub waits: u64,
    /// Commands applied per second since the worker started.
    pub applied_per_sec: f64,
}

struct Counters {
    started: std::time::Instant,
    applied: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    waits: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            started: std::time::Instant::now(),
            applied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> WorkerStats {
        let applied = self.applied.load(Ordering::Relaxed);
        WorkerStats {
            applied,
            applied_per_sec: applied as f64 / self.started.elapsed().as_secs_f64().max(1e-3),
            skipped: self.skipped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where a worker applies commands.
#[derive(Clone)]
pub(crate) enum Target {
    /// One replicated cluster's primary.
    One(ReplicatedDatabase),
    /// The primary of each command's shard.
    Sharded(ShardedDatabase),
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    queue: Arc<QueueInner>,
    db: Target,
    lease: Duration,
    block: Duration,
    batch: usize,
    apply_batch: usize,
    retry_delay: Duration,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue.name)
            .field("lease", &self.lease)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(queue: Arc<QueueInner>, db: Target) -> Self {
        WorkerBuilder {
            queue,
            db,
            lease: Duration::from_secs(10),
            block: Duration::from_millis(500),
            batch: 32,
            apply_batch: 1,
            retry_delay: Duration::from_millis(100),
        }
    }

    /// How long a worker owns a partition without renewing it (default 10 s): after a worker
    /// dies, its partitions wait this long for another. Keep it above the handle's replay
    /// budget, so a worker waiting out a failover keeps its partitions.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Deliveries read at once per partition (default 32).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Commands applied in one transaction (default 1): consecutive commands of a partition,
    /// each with its own identity row, committed together. If any of them fails (or was
    /// applied before), the batch rolls back and its commands are applied one by one, so a
    /// poison command costs its neighbours nothing but the retry. More throughput, at the
    /// price of longer transactions. At most [`batch`](Self::batch) per read.
    pub fn apply_batch(mut self, n: usize) -> Self {
        self.apply_batch = n.max(1);
        self
    }

    /// The first wait before retrying a failed command (default 100 ms, doubling to 5 s).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Starts the worker: one task per partition, each applying when it owns the partition.
    pub fn spawn(self) -> Worker {
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::new());
        let owner: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let mut tasks: Vec<JoinHandle<()>> = (0..self.queue.partitions)
            .map(|partition| {
                let run = PartitionRun {
                    queue: self.queue.clone(),
                    db: self.db.clone(),
                    owner: owner.clone(),
                    partition,
                    lease: self.lease,
                    block: self.block,
                    batch: self.batch,
                    apply_batch: self.apply_batch,
                    retry_delay: self.retry_delay,
                    counters: counters.clone(),
                };
                let span =
                    tracing::info_span!("queue_partition", queue = %self.queue.name, partition);
                tokio::spawn(run.run(stopped.clone()).instrument(span))
            })
            .collect();
        tasks.push(tokio::spawn(publish_status(
            Queue::from_inner(self.queue.clone()),
            stopped,
        )));
        Worker {
            stop,
            tasks,
            counters,
        }
    }
}

/// How often a worker publishes its queue's depth, oldest age and dead letters as metrics.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes the queue's status gauges every [`STATUS_INTERVAL`] while the worker runs (one
/// `status()` read: a few broker round trips).
async fn publish_status(queue: Queue, mut stopped: watch::Receiver<bool>) {
    loop {
        // a broker that does not answer holds neither this loop nor `stop()`
        let publish = async {
            if let Err(err) = queue.status().await {
                tracing::debug!(%err, "queue status unavailable");
            }
            tokio::time::sleep(STATUS_INTERVAL).await;
        };
        tokio::select! {
            _ = publish => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// A running worker. [`stop`](Self::stop) finishes the command in hand, releases the
/// partitions and returns; dropping it stops it too (without waiting).
#[must_use = "a worker stops when dropped"]
pub struct Worker {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Worker {
    /// What it has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// Stops after the command in hand, releasing its partitions.
    pub async fn stop(mut self) -> WorkerStats {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.counters.snapshot()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What applying one delivery came to.
enum Applied {
    /// Committed; the commit's causal token.
    Done(String),
    /// Its identity was recorded already: applied before.
    Before,
    /// The primary is away (or the outcome is not known yet): wait, then try again.
    Wait(String),
    /// The command failed (its handler, its payload, the server refusing it): an attempt.
    Failed(String),
    /// A batch whose commands live on different shards: apply them one by one.
    Split,
}

struct PartitionRun {
    queue: Arc<QueueInner>,
    db: Target,
    owner: Arc<str>,
    partition: u32,
    lease: Duration,
    block: Duration,
    batch: usize,
    apply_batch: usize,
    retry_delay: Duration,
    counters: Arc<Counters>,
}

impl PartitionRun {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let broker = &self.queue.broker;
        // after taking the partition, and after any failure: the unacknowledged ones first
        let mut redeliver = true;
        let mut owned = false;
        let mut pause = self.retry_delay;
        // the lease is renewed a third of the way through, not at every read
        let renew_every = self.lease / 3;
        let mut renewed: Option<std::time::Instant> = None;
        while !*stopped.borrow() {
            let due = renewed.is_none_or(|at| at.elapsed() >= renew_every);
            match if due {
                broker.own(self.partition, &self.owner, self.lease).await
            } else {
                Ok(true)
            } {
                Ok(true) => {
                    if due {
                        renewed = Some(std::time::Instant::now());
                    }
                    if !owned {
                        tracing::debug!(owner = %self.owner, "partition taken");
                        owned = true;
                        redeliver = true;
                    }
                }
                Ok(false) => {
                    owned = false;
                    renewed = None;
                    idle(&mut stopped, renew_every).await;
                    continue;
                }
                Err(e) => {
                    renewed = None;
                    tracing::warn!(error = %e, "broker unavailable; waiting");
                    bump(&self.counters.waits);
                    idle(&mut stopped, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let deliveries = match broker
                .read(self.partition, redeliver, self.batch, self.block)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "broker read failed; waiting");
                    bump(&self.counters.waits);
                    idle(&mut stopped, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    redeliver = true;
                    continue;
                }
            };
            if redeliver && deliveries.is_empty() {
                redeliver = false;
                continue;
            }
            match self.apply_in_order(&deliveries, &mut stopped).await {
                Ok(()) => pause = self.retry_delay,
                Err(wait) => {
                    idle(&mut stopped, pause.max(wait)).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    redeliver = true;
                }
            }
        }
        if owned {
            let _ = broker.release(self.partition, &self.owner).await;
        }
    }

    /// Applies `deliveries` in order, [`apply_batch`](WorkerBuilder::apply_batch) at a time;
    /// stops at the first that must be tried again (`Err`: the least wait before that).
    async fn apply_in_order(
        &self,
        deliveries: &[Delivery],
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), Duration> {
        for chunk in deliveries.chunks(self.apply_batch) {
            if *stopped.borrow() {
                return Ok(());
            }
            if chunk.len() > 1 {
                match self.apply_many(chunk).await {
                    Applied::Done(token) => {
                        for delivery in chunk {
                            self.settle(delivery, Applied::Done(token.clone())).await?;
                        }
                        continue;
                    }
                    wait @ Applied::Wait(_) => return self.settle(&chunk[0], wait).await,
                    // one of them failed, was applied before, or they span shards: one by one
                    Applied::Before | Applied::Failed(_) | Applied::Split => {}
                }
            }
            for delivery in chunk {
                if *stopped.borrow() {
                    return Ok(());
                }
                let outcome = self.apply(delivery).await;
                self.settle(delivery, outcome).await?;
            }
        }
        Ok(())
    }

    /// Acts on what applying `delivery` came to: acknowledges it (applied now or before),
    /// or counts the failure and dead-letters it once it failed too often. `Err`: try it
    /// again after this wait.
    async fn settle(&self, delivery: &Delivery, outcome: Applied) -> Result<(), Duration> {
        let broker = &self.queue.broker;
        let acked = match outcome {
            Applied::Done(token) => {
                bump(&self.counters.applied);
                self.queue.metrics.applied(1);
                broker
                    .ack(self.partition, delivery, &token, self.queue.keep_outcome)
                    .await
            }
            Applied::Before => {
                bump(&self.counters.skipped);
                self.queue.metrics.skipped(1);
                broker
                    .ack(self.partition, delivery, "", self.queue.keep_outcome)
                    .await
            }
            Applied::Wait(why) => {
                tracing::warn!(id = %delivery.message.id, reason = %why, "primary unavailable; waiting");
                bump(&self.counters.waits);
                return Err(self.retry_delay);
            }
            // only a batch spans shards; one delivery never does
            Applied::Split => return Err(self.retry_delay),
            Applied::Failed(error) => {
                let attempts = broker
                    .failed(delivery)
                    .await
                    .map_err(|_| self.retry_delay)?;
                if attempts < self.queue.max_attempts {
                    tracing::warn!(id = %delivery.message.id, attempts, %error, "command failed; retrying");
                    bump(&self.counters.retries);
                    self.queue.metrics.retried();
                    return Err(self.retry_delay);
                }
                tracing::error!(id = %delivery.message.id, attempts, %error, "command failed too often; dead-lettered");
                bump(&self.counters.dead_lettered);
                self.queue.metrics.dead_lettered();
                broker
                    .dead_letter(self.partition, delivery, &error, attempts)
                    .await
            }
        };
        // applied (or dead-lettered) but not acknowledged: redelivered, then skipped
        acked.map_err(|_| self.retry_delay)
    }

    /// Applies one delivery in a replayed unit whose identity is the command's id.
    async fn apply(&self, delivery: &Delivery) -> Applied {
        self.apply_many(std::slice::from_ref(delivery)).await
    }

    /// Applies `deliveries` in one replayed unit recording every command's identity.
    async fn apply_many(&self, deliveries: &[Delivery]) -> Applied {
        let mut steps = Vec::with_capacity(deliveries.len());
        let mut shard: Option<&str> = None;
        for delivery in deliveries {
            let message = &delivery.message;
            let Some(handler) = self.queue.handlers.get(message.name.as_str()) else {
                return Applied::Failed(format!(
                    "no handler for command `{}` in this worker",
                    message.name
                ));
            };
            if let Target::Sharded(shards) = &self.db {
                let Some(key) = (handler.locate)(&message.payload) else {
                    return Applied::Failed(format!(
                        "command `{}` has no shard key (Command::shard_key) for a sharded worker",
                        message.name
                    ));
                };
                let name = match shards.locate(key).await {
                    Ok(name) => name,
                    Err(e) => return Applied::Failed(e.to_string()),
                };
                if shard.is_some_and(|s| s != name) {
                    return Applied::Split;
                }
                shard = Some(name);
            }
            steps.push((
                handler.apply.clone(),
                Arc::<str>::from(message.payload.as_str()),
            ));
        }
        let db = match (&self.db, shard) {
            (Target::One(db), _) => db,
            (Target::Sharded(shards), Some(name)) => match shards.shard_named(name) {
                Ok(db) => db,
                Err(e) => return Applied::Failed(e.to_string()),
            },
            (Target::Sharded(_), None) => return Applied::Failed("an empty batch".into()),
        };
        let steps = Arc::new(steps);
        let ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.message.id).collect();
        let scope = CausalScope::new(false, None);
        let result = scope
            .run(db.read_write_replayed_batch(&ids, move |unit| {
                let steps = steps.clone();
                Box::pin(async move {
                    for (apply, payload) in steps.iter() {
                        apply(payload, unit).await?;
                    }
                    Ok::<(), sea_orm::DbErr>(())
                })
            }))
            .await;
        match result {
            Ok(()) => Applied::Done(scope.written().map(|t| t.to_string()).unwrap_or_default()),
            Err(TransactionError::Transaction(e)) => Applied::Failed(e.to_string()),
            Err(TransactionError::Connection(e)) => {
                if ReplicaError::is_primary_unavailable(&e) {
                    return Applied::Wait(e.to_string());
                }
                match ReplicaError::from_db_err(e) {
                    ReplicaError::AlreadyApplied { .. } => Applied::Before,
                    e @ ReplicaError::CommitOutcomeUnknown { .. } => Applied::Wait(e.to_string()),
                    e => Applied::Failed(e.to_string()),
                }
            }
        }
    }
}

/// Sleeps `d`, or less if the worker is stopped.
async fn idle(stopped: &mut watch::Receiver<bool>, d: Duration) {
    let _ = tokio::time::timeout(d, stopped.changed()).await;
}
