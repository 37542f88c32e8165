//! Consistency positions: where the primary was when a write committed, and whether a replica
//! has replayed that far.
//!
//! A [`CausalToken`] carries a [`Position`]: a WAL LSN on PostgreSQL, a GTID set on MariaDB, or
//! nothing on SQLite (whose reader sees every commit at once). It is a small serde value and a
//! compact, cookie-safe string, so it can travel between requests, processes and machines;
//! [`CausalToken::merge`] keeps the later position.
//!
//! ```
//! use sea_orm_replica::consistency::{CausalToken, Position};
//! let a: CausalToken = "p:16B374D848".parse().unwrap();
//! let b = CausalToken::from(Position::parse_pg_lsn("16/B374D900").unwrap());
//! assert_eq!(a.merge(&b), b);
//! assert_eq!(b.to_string(), "p:16B374D900");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a read-only unit must see, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Any available replica: the cheapest, and may miss recent writes.
    #[default]
    Eventual,
    /// Only a node that has replayed this token's position. A replica known to be there
    /// costs nothing; otherwise the replicas are asked (one round trip each), then the unit
    /// waits up to the wait bound, then runs on the primary.
    ReadYourWrites(CausalToken),
    /// Only replicas measured (by the monitor) no further behind than this; none → fallback.
    /// Costs nothing per unit: the monitor measures in the background.
    BoundedStaleness(Duration),
    /// The primary, in a `READ ONLY` transaction: sees the latest data, offloads nothing.
    Primary,
}

/// A replication position of the primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Position {
    /// No position (SQLite, or nothing written yet): every node satisfies it.
    #[default]
    None,
    /// A PostgreSQL WAL log sequence number.
    Lsn(u64),
    /// A MariaDB GTID set: per replication domain, the latest sequence number.
    Gtid(Vec<Gtid>),
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Server that wrote it.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

/// A position string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a replication position: `{0}`")]
pub struct BadPosition(pub String);

impl Position {
    /// Reads PostgreSQL's `X/Y` LSN text (as `pg_current_wal_lsn()::text` prints it).
    pub fn parse_pg_lsn(text: &str) -> Result<Self, BadPosition> {
        let bad = || BadPosition(text.to_owned());
        let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Position::Lsn(hi << 32 | lo))
    }

    /// Reads MariaDB's GTID list (`@@gtid_binlog_pos`): `0-1-100,1-2-5`; empty means none.
    pub fn parse_gtid_list(text: &str) -> Result<Self, BadPosition> {
        Self::parse_gtids(text, ',')
    }

    fn parse_gtids(text: &str, sep: char) -> Result<Self, BadPosition> {
        let bad = || BadPosition(text.to_owned());
        let mut gtids = Vec::new();
        for part in text.split(sep).map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.splitn(3, '-');
            let (Some(d), Some(s), Some(n)) = (it.next(), it.next(), it.next()) else {
                return Err(bad());
            };
            gtids.push(Gtid {
                domain: d.parse().map_err(|_| bad())?,
                server: s.parse().map_err(|_| bad())?,
                seq: n.parse().map_err(|_| bad())?,
            });
        }
        if gtids.is_empty() {
            return Ok(Position::None);
        }
        Ok(Position::Gtid(normalize(gtids)))
    }

    /// PostgreSQL's `X/Y` text for an LSN, MariaDB's comma-separated list for GTIDs.
    pub fn to_server_text(&self) -> String {
        match self {
            Position::None => String::new(),
            Position::Lsn(lsn) => format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
            Position::Gtid(g) => join_gtids(g, ","),
        }
    }

    /// True when a node at `self` has everything `wanted` has.
    pub fn has_reached(&self, wanted: &Position) -> bool {
        match (self, wanted) {
            (_, Position::None) => true,
            (Position::Lsn(have), Position::Lsn(want)) => have >= want,
            (Position::Gtid(have), Position::Gtid(want)) => want
                .iter()
                .all(|w| have.iter().any(|h| h.domain == w.domain && h.seq >= w.seq)),
            _ => false,
        }
    }

    /// The later of two positions (per domain, for GTIDs). Positions of different kinds
    /// cannot be compared; the one that is not `None` wins, else `other`.
    pub fn merge(&self, other: &Position) -> Position {
        match (self, other) {
            (Position::Lsn(a), Position::Lsn(b)) => Position::Lsn(*a.max(b)),
            (Position::Gtid(a), Position::Gtid(b)) => {
                Position::Gtid(normalize(a.iter().chain(b).copied().collect()))
            }
            (p, Position::None) => p.clone(),
            (_, p) => p.clone(),
        }
    }
}

/// Keeps, per domain, the GTID with the highest sequence number; sorted by domain.
fn normalize(mut gtids: Vec<Gtid>) -> Vec<Gtid> {
    gtids.sort_by(|a, b| a.domain.cmp(&b.domain).then(b.seq.cmp(&a.seq)));
    gtids.dedup_by_key(|g| g.domain);
    gtids
}

fn join_gtids(gtids: &[Gtid], sep: &str) -> String {
    gtids
        .iter()
        .map(|g| format!("{}-{}-{}", g.domain, g.server, g.seq))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Proof of a write: the primary's position after it committed. A read-only unit given the
/// token runs only where that position has been replayed.
///
/// With [sharding](crate::shard), one token carries a position per shard it has seen (a
/// shard's clusters have unrelated positions): a write on shard `a` adds `a`'s position, and a
/// read on shard `b` waits only for `b`'s. Merging keeps the later position per shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CausalToken {
    /// The position on an unsharded handle.
    position: Position,
    /// Per shard name, the position on that shard; never holds [`Position::None`].
    shards: BTreeMap<String, Position>,
}

/// The position a token holds for a shard it has not seen.
static NO_POSITION: Position = Position::None;

impl CausalToken {
    /// A token at `position` (of an unsharded handle).
    pub fn new(position: Position) -> Self {
        CausalToken {
            position,
            shards: BTreeMap::new(),
        }
    }

    /// A token at `position` on the shard called `shard`.
    pub fn on_shard(shard: &str, position: Position) -> Self {
        let mut shards = BTreeMap::new();
        if position != Position::None {
            shards.insert(shard.to_owned(), position);
        }
        CausalToken {
            position: Position::None,
            shards,
        }
    }

    /// The position it carries for an unsharded handle.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// The position it carries for the shard called `shard` ([`Position::None`] if none).
    pub fn shard_position(&self, shard: &str) -> &Position {
        self.shards.get(shard).unwrap_or(&NO_POSITION)
    }

    /// The position for a handle: unsharded (`None`) or a shard's.
    pub(crate) fn position_for(&self, shard: Option<&str>) -> &Position {
        match shard {
            None => &self.position,
            Some(name) => self.shard_position(name),
        }
    }

    /// The shards it has a position for, with their positions, by name.
    pub fn shards(&self) -> impl Iterator<Item = (&str, &Position)> {
        self.shards.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// True when it carries no position at all.
    pub fn is_empty(&self) -> bool {
        self.position == Position::None && self.shards.is_empty()
    }

    /// The later of two tokens, per shard.
    pub fn merge(&self, other: &CausalToken) -> CausalToken {
        let mut shards = self.shards.clone();
        for (name, theirs) in &other.shards {
            let merged = match shards.get(name) {
                Some(ours) => ours.merge(theirs),
                None => theirs.clone(),
            };
            shards.insert(name.clone(), merged);
        }
        CausalToken {
            position: self.position.merge(&other.position),
            shards,
        }
    }
}

impl From<Position> for CausalToken {
    fn from(position: Position) -> Self {
        CausalToken::new(position)
    }
}

/// Milliseconds since the Unix epoch now (0 on a clock before it): what the library stamps
/// records, samples and views with.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// True for a name a token can carry: what [`ShardedDatabase`](crate::shard::ShardedDatabase)
/// accepts as a shard name (ASCII letters, digits, `_` and `-`, 1 to 64 of them), so the
/// token stays a cookie-safe string.
pub fn valid_shard_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn fmt_position(position: &Position, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match position {
        Position::None => f.write_str("-"),
        Position::Lsn(lsn) => write!(f, "p:{lsn:X}"),
        Position::Gtid(g) => write!(f, "m:{}", join_gtids(g, ".")),
    }
}

fn parse_position(s: &str) -> Result<Position, BadPosition> {
    Ok(match s.split_once(':') {
        _ if s == "-" || s.is_empty() => Position::None,
        Some(("p", hex)) => {
            Position::Lsn(u64::from_str_radix(hex, 16).map_err(|_| BadPosition(s.to_owned()))?)
        }
        Some(("m", list)) => Position::parse_gtids(list, '.')?,
        _ => return Err(BadPosition(s.to_owned())),
    })
}

/// The compact form: `p:<hex LSN>`, `m:<domain-server-seq>.<…>`, or `-` for none; with shards,
/// `|`-separated parts, one `<shard>=<position>` per shard (`a=p:1F|b=m:0-1-5`), after the
/// unsharded position if there is one. It uses only cookie-safe characters.
impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.position != Position::None || self.shards.is_empty() {
            fmt_position(&self.position, f)?;
            first = false;
        }
        for (name, position) in &self.shards {
            if !first {
                f.write_str("|")?;
            }
            first = false;
            write!(f, "{name}=")?;
            fmt_position(position, f)?;
        }
        Ok(())
    }
}

/// At most this many shard positions in one token: a token is client input (a cookie), and a
/// huge one must not cost memory or time.
pub const MAX_TOKEN_SHARDS: usize = 256;

impl FromStr for CausalToken {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, BadPosition> {
        let s = s.trim();
        let mut token = CausalToken::default();
        for (i, part) in s.split('|').enumerate() {
            match part.split_once('=') {
                Some((name, position)) => {
                    if !valid_shard_name(name)
                        || token.shards.contains_key(name)
                        || token.shards.len() >= MAX_TOKEN_SHARDS
                    {
                        return Err(BadPosition(s.to_owned()));
                    }
                    let position = parse_position(position)?;
                    if position != Position::None {
                        token.shards.insert(name.to_owned(), position);
                    }
                }
                None if i == 0 => {
                    token.position = parse_position(part)?;
                }
                None => return Err(BadPosition(s.to_owned())),
            }
        }
        Ok(token)
    }
}

impl Serialize for CausalToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CausalToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_lsns_round_trip_and_order() {
        let p = Position::parse_pg_lsn("16/B374D848").unwrap();
        assert_eq!(p, Position::Lsn(0x16_B374_D848));
        assert_eq!(p.to_server_text(), "16/B374D848");
        assert!(Position::Lsn(10).has_reached(&Position::Lsn(10)));
        assert!(!Position::Lsn(9).has_reached(&Position::Lsn(10)));
        assert!(Position::parse_pg_lsn("nope").is_err());
        assert!(Position::parse_pg_lsn("1FFFFFFFF/0").is_err());
    }

    #[test]
    fn gtid_sets_merge_per_domain() {
        let a = Position::parse_gtid_list("0-1-100,1-2-5").unwrap();
        let b = Position::parse_gtid_list("0-1-90, 2-3-7").unwrap();
        let m = a.merge(&b);
        assert_eq!(m.to_server_text(), "0-1-100,1-2-5,2-3-7");
        assert!(m.has_reached(&a) && m.has_reached(&b));
        assert!(!a.has_reached(&m), "domain 2 is missing from a");
        assert_eq!(Position::parse_gtid_list("").unwrap(), Position::None);
        assert!(Position::parse_gtid_list("0-1").is_err());
    }

    #[test]
    fn tokens_are_compact_cookie_safe_strings_and_serde_values() {
        for text in ["p:16B374D848", "m:0-1-100.1-2-5", "-"] {
            let token: CausalToken = text.parse().unwrap();
            assert_eq!(token.to_string(), text);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b",;\"\\".contains(&b)));
            let json = serde_json::to_string(&token).unwrap();
            assert_eq!(serde_json::from_str::<CausalToken>(&json).unwrap(), token);
        }
        assert!("x:1".parse::<CausalToken>().is_err());
        assert!("p:zz".parse::<CausalToken>().is_err());
        let later = CausalToken::new(Position::Lsn(5)).merge(&CausalToken::new(Position::Lsn(3)));
        assert_eq!(later.position(), &Position::Lsn(5));
        assert!(Position::None.has_reached(&Position::None));
        assert!(Position::Lsn(1).has_reached(&Position::None));
    }

    #[test]
    fn sharded_tokens_keep_a_position_per_shard() {
        let a = CausalToken::on_shard("a", Position::Lsn(0x10));
        let b = CausalToken::on_shard("b", Position::parse_gtid_list("0-1-5").unwrap());
        let both = a
            .merge(&b)
            .merge(&CausalToken::on_shard("a", Position::Lsn(0x8)));
        assert_eq!(both.to_string(), "a=p:10|b=m:0-1-5");
        assert_eq!(
            both.shard_position("a"),
            &Position::Lsn(0x10),
            "merge keeps the later"
        );
        assert_eq!(both.shard_position("c"), &Position::None);
        assert_eq!(both.position(), &Position::None);
        let parsed: CausalToken = "p:5|a=p:10|b=m:0-1-5".parse().unwrap();
        assert_eq!(parsed.position(), &Position::Lsn(5));
        assert_eq!(parsed.to_string(), "p:5|a=p:10|b=m:0-1-5");
        assert_eq!(parsed.merge(&both), parsed);
        for bad in [
            "a=p:1|a=p:2",
            "p:1|p:2",
            "a b=p:1",
            "=p:1",
            "a=x:1",
            "a=p:1|",
            "a=p:zz",
            "a=p:1=2",
        ] {
            assert!(bad.parse::<CausalToken>().is_err(), "{bad}");
        }
        let many: String = (0..=MAX_TOKEN_SHARDS)
            .map(|i| format!("s{i}=p:1"))
            .collect::<Vec<_>>()
            .join("|");
        assert!(many.parse::<CausalToken>().is_err(), "too many shards");
    }
}
