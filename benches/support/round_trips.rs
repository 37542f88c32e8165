//! Round trips, counted on the wire: a loopback TCP proxy in front of a PostgreSQL server that
//! reads every message the client sends and forwards it unchanged.
//!
//! In PostgreSQL's protocol the client waits for `ReadyForQuery` after each simple `Query` and
//! after each `Sync`, so those two messages are the round trips. A `Sync` that follows
//! `Parse`/`Bind`/`Describe`/`Execute`/`Close` ends a statement; a `Sync` on its own is sqlx's
//! ping (sqlx 0.9 pings with a bare `Sync`: before handing out an idle connection when the pool
//! has `test_before_acquire`, and always when a connection goes back to the pool). Neither
//! `log_statement` nor `pg_stat_statements` ever sees a bare `Sync`, which is why this counts
//! on the wire instead. Used only in a separate counting phase: the timed runs go straight to
//! the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the clients of one proxy sent, summed over its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Simple-protocol queries (`Query`): `BEGIN`, `COMMIT`, `raw_sql`, …
    pub simple: u64,
    /// Extended-protocol statements (a `Sync` after `Parse`/`Bind`/`Execute`…).
    pub extended: u64,
    /// Bare `Sync`s: sqlx's pings.
    pub pings: u64,
    /// TCP reads on the proxy's client side, about one per client send.
    pub sends: u64,
    /// Connections opened through the proxy.
    pub connections: u64,
}

impl Counts {
    /// Every message the client then waits on.
    pub fn round_trips(&self) -> u64 {
        self.simple + self.extended + self.pings
    }

    /// `self - before`, field by field.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            simple: self.simple - before.simple,
            extended: self.extended - before.extended,
            pings: self.pings - before.pings,
            sends: self.sends - before.sends,
            connections: self.connections - before.connections,
        }
    }
}

#[derive(Default)]
struct Counters {
    simple: AtomicU64,
    extended: AtomicU64,
    pings: AtomicU64,
    sends: AtomicU64,
    connections: AtomicU64,
}

/// A counting proxy; it stops with the runtime.
pub struct Proxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (c, upstream) = (c.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        c.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = forward(client, server, c).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, counters })
    }

    /// `url` (a `postgres://` URL) pointed at this proxy, without TLS so that the messages
    /// can be read.
    pub fn url(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("a valid PostgreSQL URL");
        u.set_host(Some(&self.addr.ip().to_string())).expect("host");
        u.set_port(Some(self.addr.port())).expect("port");
        u.query_pairs_mut().append_pair("sslmode", "disable");
        u.to_string()
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            simple: c.simple.load(Ordering::Relaxed),
            extended: c.extended.load(Ordering::Relaxed),
            pings: c.pings.load(Ordering::Relaxed),
            sends: c.sends.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        }
    }
}

/// `host:port` of a `postgres://` URL.
pub fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).expect("a valid PostgreSQL URL");
    format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5432)
    )
}

async fn forward(client: TcpStream, server: TcpStream, c: Arc<Counters>) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = client_read.read(&mut buf).await?;
        if n == 0 {
            let _ = server_write.shutdown().await;
            return Ok(());
        }
        c.sends.fetch_add(1, Ordering::Relaxed);
        parser.feed(&buf[..n], &c);
        server_write.write_all(&buf[..n]).await?;
    }
}

/// Splits the client's byte stream into messages.
#[derive(Default)]
struct Parser {
    pending: Vec<u8>,
    /// Past the startup message: messages carry a type byte.
    typed: bool,
    /// A statement message was sent since the last `Sync`.
    statement: bool,
}

/// `SSLRequest` and `GSSENCRequest`: untyped, and followed by another untyped message.
const NEGOTIATION_CODES: [u32; 2] = [80_877_103, 80_877_104];

impl Parser {
    fn feed(&mut self, data: &[u8], c: &Counters) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            if !self.typed {
                if rest.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
                if rest.len() < len {
                    break;
                }
                let code = u32::from_be_bytes(rest[4..8].try_into().unwrap());
                if !NEGOTIATION_CODES.contains(&code) {
                    self.typed = true; // the startup message
                }
                at += len;
                continue;
            }
            if rest.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            if rest.len() < 1 + len {
                break;
            }
            match rest[0] {
                b'Q' => {
                    c.simple.fetch_add(1, Ordering::Relaxed);
                    self.statement = false;
                }
                b'P' | b'B' | b'D' | b'E' | b'C' => self.statement = true,
                b'S' => {
                    if self.statement {
                        c.extended.fetch_add(1, Ordering::Relaxed);
                    } else {
                        c.pings.fetch_add(1, Ordering::Relaxed);
                    }
                    self.statement = false;
                }
                _ => {}
            }
            at += 1 + len;
        }
        self.pending.drain(..at);
    }
}
