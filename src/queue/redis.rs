//! The queue on Redis Streams (feature `queue-redis`).
//!
//! Layout, every key under one hash tag so a Redis Cluster keeps a queue in one slot and the
//! scripts stay atomic: `sor:{NAME}:p<i>` (partition streams, consumer group `sor`, consumer
//! `p<i>`: the next owner of a partition re-reads what the last one left unacknowledged),
//! `sor:{NAME}:depth` (pending count), `sor:{NAME}:lease:<i>` (partition ownership),
//! `sor:{NAME}:attempts` (failed attempts per command), `sor:{NAME}:dead` (dead letters),
//! `sor:{NAME}:done:<id>` (the applied command's causal token, for `wait`); the channel
//! `sor:{NAME}:settled` carries each settled command's id (`wait` wakes on it, and polls too:
//! a push is best effort).
//!
//! Durability: a publish returns when Redis has answered the script that stored it. With
//! `appendonly yes` and `appendfsync always`, Redis writes and fsyncs the AOF before it sends
//! any reply (`beforeSleep` flushes the AOF before it handles pending writes), so an
//! acknowledged enqueue survives `kill -9` of Redis and a power loss of its machine. With
//! `appendfsync everysec` up to a second of acknowledged enqueues can be lost on a power loss
//! (not on a Redis crash); with `appendonly no`, everything since the last snapshot.
//! Replicas add nothing here unless the application waits for them (`WAIT`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};
use tokio::sync::{oneshot, Mutex};
use uuid::Uuid;

use super::broker::{Broker, BrokerError, DeadLetter, Delivery, Depth, Message};

/// The consumer group every partition stream has.
const GROUP: &str = "sor";

const PUBLISH: &str = r"
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
if d >= tonumber(ARGV[1]) then return redis.error_reply('SORFULL ' .. d) end
redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'name', ARGV[3], 'payload', ARGV[4])
return redis.call('INCR', KEYS[2])
";

const ACK: &str = r"
local n = redis.call('XACK', KEYS[1], 'sor', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if n == 1 then redis.call('DECR', KEYS[2]) end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], 'ok:' .. ARGV[3], 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return n
";

const DEAD: &str = r"
local n = redis.call('XACK', KEYS[1], 'sor', ARGV[1])
if n == 1 then
  redis.call('XADD', KEYS[4], '*', 'id', ARGV[2], 'name', ARGV[3], 'payload', ARGV[4], 'error', ARGV[5], 'attempts', ARGV[6])
  redis.call('DECR', KEYS[2])
end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('SET', KEYS[5], 'dead:' .. ARGV[5], 'PX', ARGV[7])
redis.call('PUBLISH', ARGV[8], ARGV[2])
return n
";

const OWN: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A queue's streams on one Redis server (or cluster slot).
pub struct RedisBroker {
    client: redis::Client,
    /// Non-blocking commands.
    conn: ConnectionManager,
    /// One connection per partition for blocking reads (a blocked connection answers nothing else).
    readers: Mutex<HashMap<u32, ConnectionManager>>,
    /// Partitions whose consumer group this process has made sure of.
    grouped: std::sync::Mutex<std::collections::HashSet<u32>>,
    prefix: String,
    scripts: Scripts,
    /// The `wait`s waiting for a push, and whether the listener runs.
    pushes: Arc<Pushes>,
}

struct Scripts {
    publish: Script,
    ack: Script,
    dead: Script,
    own: Script,
    release: Script,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// Longest wait of a blocking read; the read connections answer within this plus a margin.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(2);

impl RedisBroker {
    /// Connects to `url` (`redis://host:port/db`; the password, if any, is never logged) for
    /// the queue called `name` (1–64 of `[A-Za-z0-9_-]`).
    pub async fn connect(url: &str, name: &str) -> Result<Self, crate::ReplicaError> {
        if !crate::consistency::valid_shard_name(name) {
            return Err(crate::ReplicaError::Config(
                "a queue name is 1 to 64 of A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| {
            crate::ReplicaError::Config(format!("the Redis URL is not valid: {:?}", e.kind()))
        })?;
        let conn = manager(&client, Duration::from_secs(5))
            .await
            .map_err(|e| crate::ReplicaError::Broker(format!("Redis is unreachable: {e}")))?;
        Ok(RedisBroker {
            client,
            conn,
            readers: Mutex::new(HashMap::new()),
            grouped: std::sync::Mutex::new(std::collections::HashSet::new()),
            prefix: format!("sor:{{{name}}}"),
            pushes: Arc::default(),
            scripts: Scripts {
                publish: Script::new(PUBLISH),
                ack: Script::new(ACK),
                dead: Script::new(DEAD),
                own: Script::new(OWN),
                release: Script::new(RELEASE),
            },
        })
    }

    fn stream(&self, partition: u32) -> String {
        format!("{}:p{partition}", self.prefix)
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    async fn reader(&self, partition: u32) -> Result<ConnectionManager, BrokerError> {
        let mut readers = self.readers.lock().await;
        if let Some(conn) = readers.get(&partition) {
            return Ok(conn.clone());
        }
        let conn = manager(&self.client, MAX_BLOCK + Duration::from_secs(5))
            .await
            .map_err(unavailable)?;
        readers.insert(partition, conn.clone());
        Ok(conn)
    }
}

/// Settlements pushed by Redis (`PUBLISH` in the ack and dead-letter scripts), handed to the
/// `wait`s that registered for them.
#[derive(Default)]
struct Pushes {
    waiters: std::sync::Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
    listening: AtomicBool,
}

/// Registrations kept before the abandoned ones (a `wait` that timed out) are swept.
const SWEEP_AT: usize = 1024;

impl Pushes {
    fn register(&self, id: Uuid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.len() >= SWEEP_AT {
            waiters.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
        }
        waiters.entry(id).or_default().push(tx);
        rx
    }

    fn settle(&self, id: Uuid) {
        let senders = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}

/// Listens on `channel` while the broker lives, reconnecting with back-off; each id pushed
/// wakes its waiters.
async fn listen(client: redis::Client, channel: String, pushes: Weak<Pushes>) {
    /// Ended (the broker dropped, or the runtime that ran it shut down): the next `wait` on a
    /// live broker starts another.
    struct Ended(Weak<Pushes>);
    impl Drop for Ended {
        fn drop(&mut self) {
            if let Some(pushes) = self.0.upgrade() {
                pushes.listening.store(false, Ordering::Relaxed);
            }
        }
    }
    let _ended = Ended(pushes.clone());
    let mut backoff = Duration::from_millis(100);
    while pushes.strong_count() > 0 {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    loop {
                        // a tick now and then, to stop once the broker is gone
                        let next =
                            tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
                        let Some(pushes) = pushes.upgrade() else {
                            return;
                        };
                        match next {
                            Ok(Some(msg)) => {
                                let id = msg
                                    .get_payload::<String>()
                                    .ok()
                                    .and_then(|p| p.parse().ok());
                                if let Some(id) = id {
                                    pushes.settle(id);
                                }
                            }
                            Ok(None) => break, // the connection is gone: reconnect
                            Err(_) => {}
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "queue push channel unavailable; wait polls"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn manager(
    client: &redis::Client,
    response: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client.clone(), config).await
}

fn text(entry: &StreamId, field: &str) -> String {
    entry.get::<String>(field).unwrap_or_default()
}

fn message(entry: &StreamId) -> Option<Message> {
    Some(Message {
        id: text(entry, "id").parse().ok()?,
        name: text(entry, "name"),
        payload: text(entry, "payload"),
    })
}

fn dead_letter(entry: &StreamId) -> Option<DeadLetter> {
    let m = message(entry)?;
    Some(DeadLetter {
        entry: entry.id.clone(),
        id: m.id,
        name: m.name,
        payload: m.payload,
        error: text(entry, "error"),
        attempts: text(entry, "attempts").parse().unwrap_or(0),
    })
}

/// The ms part of a stream id (`1700000000000-0`).
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        partition: u32,
        message: &Message,
        max_pending: u64,
    ) -> Result<(), BrokerError> {
        let result: Result<u64, _> = self
            .scripts
            .publish
            .key(self.stream(partition))
            .key(self.key("depth"))
            .arg(max_pending)
            .arg(message.id.to_string())
            .arg(&message.name)
            .arg(&message.payload)
            .invoke_async(&mut self.conn.clone())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("SORFULL") => Err(BrokerError::Full {
                pending: e
                    .detail()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(max_pending),
                max: max_pending,
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn own(&self, partition: u32, owner: &str, lease: Duration) -> Result<bool, BrokerError> {
        let got: i64 = self
            .scripts
            .own
            .key(self.key(&format!("lease:{partition}")))
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let known = || {
            self.grouped
                .lock()
                .map(|g| g.contains(&partition))
                .unwrap_or(false)
        };
        if got == 1 && !known() {
            let created: Result<(), _> = self
                .conn
                .clone()
                .xgroup_create_mkstream(self.stream(partition), GROUP, "0")
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(unavailable(e)),
            }
            if let Ok(mut g) = self.grouped.lock() {
                g.insert(partition);
            }
        }
        Ok(got == 1)
    }

    async fn release(&self, partition: u32, owner: &str) -> Result<(), BrokerError> {
        let _: i64 = self
            .scripts
            .release
            .key(self.key(&format!("lease:{partition}")))
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn read(
        &self,
        partition: u32,
        redeliver: bool,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let consumer = format!("p{partition}");
        let mut options = StreamReadOptions::default()
            .group(GROUP, &consumer)
            .count(count.max(1));
        if !redeliver {
            options = options.block(block.min(MAX_BLOCK).as_millis().max(1) as usize);
        }
        let from = if redeliver { "0" } else { ">" };
        let mut conn = self.reader(partition).await?;
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[self.stream(partition)], &[from], &options)
            .await
            .map_err(unavailable)?;
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(|entry| {
                // an entry deleted while pending comes back empty: nothing to deliver
                message(&entry).map(|message| Delivery {
                    entry: entry.id,
                    message,
                })
            })
            .collect();
        Ok(entries)
    }

    async fn ack(
        &self,
        partition: u32,
        delivery: &Delivery,
        token: &str,
        keep: Duration,
    ) -> Result<(), BrokerError> {
        let _: i64 = self
            .scripts
            .ack
            .key(self.stream(partition))
            .key(self.key("depth"))
            .key(self.key("attempts"))
            .key(self.key(&format!("done:{}", delivery.message.id)))
            .arg(&delivery.entry)
            .arg(delivery.message.id.to_string())
            .arg(token)
            .arg(keep.as_millis().max(1) as u64)
            .arg(self.key("settled"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn failed(&self, delivery: &Delivery) -> Result<u32, BrokerError> {
        let n: i64 = self
            .conn
            .clone()
            .hincr(self.key("attempts"), delivery.message.id.to_string(), 1)
            .await
            .map_err(unavailable)?;
        Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    async fn dead_letter(
        &self,
        partition: u32,
        delivery: &Delivery,
        error: &str,
        attempts: u32,
    ) -> Result<(), BrokerError> {
        let m = &delivery.message;
        let _: i64 = self
            .scripts
            .dead
            .key(self.stream(partition))
            .key(self.key("depth"))
            .key(self.key("attempts"))
            .key(self.key("dead"))
            .key(self.key(&format!("done:{}", m.id)))
            .arg(&delivery.entry)
            .arg(m.id.to_string())
            .arg(&m.name)
            .arg(&m.payload)
            .arg(error)
            .arg(attempts)
            .arg(24 * 3600 * 1000u64)
            .arg(self.key("settled"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn outcome(&self, id: Uuid) -> Result<Option<Result<String, String>>, BrokerError> {
        let value: Option<String> = self
            .conn
            .clone()
            .get(self.key(&format!("done:{id}")))
            .await
            .map_err(unavailable)?;
        Ok(value.map(|v| match v.strip_prefix("ok:") {
            Some(token) => Ok(token.to_owned()),
            None => Err(v.strip_prefix("dead:").unwrap_or(&v).to_owned()),
        }))
    }

    fn settled(&self, id: Uuid) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if !self.pushes.listening.swap(true, Ordering::Relaxed) {
            tokio::spawn(listen(
                self.client.clone(),
                self.key("settled"),
                Arc::downgrade(&self.pushes),
            ));
        }
        let rx = self.pushes.register(id);
        Box::pin(async move {
            // a dropped sender (never, while the broker lives) resolves too: wait polls
            let _ = rx.await;
        })
    }

    async fn depth(&self, partitions: u32) -> Result<Depth, BrokerError> {
        let mut conn = self.conn.clone();
        let (pending, dead): (Option<i64>, u64) = redis::pipe()
            .get(self.key("depth"))
            .xlen(self.key("dead"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut firsts = redis::pipe();
        for p in 0..partitions {
            firsts.xrange_count(self.stream(p), "-", "+", 1);
        }
        let firsts: Vec<StreamRangeReply> =
            firsts.query_async(&mut conn).await.map_err(unavailable)?;
        let head = (pending, dead);
        let oldest_ms = firsts
            .iter()
            .filter_map(|r| r.ids.first())
            .filter_map(|e| id_ms(&e.id))
            .min();
        Ok(Depth {
            pending: head.0.unwrap_or(0).max(0) as u64,
            oldest_ms,
            dead_letters: head.1,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(self.key("dead"), "-", "+", limit.max(1))
            .await
            .map_err(unavailable)?;
        Ok(reply.ids.iter().filter_map(dead_letter).collect())
    }

    async fn take_dead_letter(&self, entry: &str) -> Result<Option<DeadLetter>, BrokerError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = conn
            .xrange(self.key("dead"), entry, entry)
            .await
            .map_err(unavailable)?;
        let Some(found) = reply.ids.first().and_then(dead_letter) else {
            return Ok(None);
        };
        // gone from the stream, and its outcome ("dead") forgotten: a retry starts afresh
        let _: (u64, u64) = redis::pipe()
            .xdel(self.key("dead"), &[entry])
            .del(self.key(&format!("done:{}", found.id)))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Some(found))
    }
}
