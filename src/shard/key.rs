//! Shard keys: the value that says which shard a row lives on.

use std::fmt;

use sea_orm::Value;
use uuid::Uuid;

/// A shard key: an integer, a string or a uuid, as the shard-key column holds it.
///
/// ```
/// use sea_orm_replica::shard::ShardKey;
/// assert_eq!(ShardKey::from(42_i64), ShardKey::Int(42));
/// assert_eq!(ShardKey::from("tenant-7"), ShardKey::Str("tenant-7".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShardKey {
    /// An integer key (`bigint`, `integer`, ... columns): placed as a `bigint`.
    Int(i64),
    /// A string key (`text`, `varchar`).
    Str(String),
    /// A uuid key.
    Uuid(Uuid),
}

impl ShardKey {
    /// The key a column value holds: integers that fit an `i64`, strings and uuids; `None`
    /// for NULL, unset and every other type.
    pub fn from_value(value: &Value) -> Option<ShardKey> {
        Some(match value {
            Value::TinyInt(Some(v)) => ShardKey::Int((*v).into()),
            Value::SmallInt(Some(v)) => ShardKey::Int((*v).into()),
            Value::Int(Some(v)) => ShardKey::Int((*v).into()),
            Value::BigInt(Some(v)) => ShardKey::Int(*v),
            Value::TinyUnsigned(Some(v)) => ShardKey::Int((*v).into()),
            Value::SmallUnsigned(Some(v)) => ShardKey::Int((*v).into()),
            Value::Unsigned(Some(v)) => ShardKey::Int((*v).into()),
            Value::BigUnsigned(Some(v)) => ShardKey::Int(i64::try_from(*v).ok()?),
            Value::String(Some(v)) => ShardKey::Str(v.clone()),
            Value::Uuid(Some(v)) => ShardKey::Uuid(*v),
            _ => return None,
        })
    }

    /// The key as the text a directory row holds: the integer in decimal, the string itself,
    /// the uuid hyphenated in lower case.
    pub fn to_text(&self) -> String {
        match self {
            ShardKey::Int(v) => v.to_string(),
            ShardKey::Str(s) => s.clone(),
            ShardKey::Uuid(u) => u.hyphenated().to_string(),
        }
    }

    /// The key for error messages: at most 64 characters.
    pub(crate) fn shown(&self) -> String {
        let text = self.to_string();
        match text.char_indices().nth(64) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardKey::Int(v) => write!(f, "{v}"),
            ShardKey::Str(s) => write!(f, "{s:?}"),
            ShardKey::Uuid(u) => write!(f, "{u}"),
        }
    }
}

macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl From<$t> for ShardKey {
            fn from(v: $t) -> Self {
                ShardKey::Int(v.into())
            }
        }
    )*};
}
int_key!(i8, i16, i32, i64, u8, u16, u32);

impl From<&str> for ShardKey {
    fn from(v: &str) -> Self {
        ShardKey::Str(v.to_owned())
    }
}

impl From<String> for ShardKey {
    fn from(v: String) -> Self {
        ShardKey::Str(v)
    }
}

impl From<&String> for ShardKey {
    fn from(v: &String) -> Self {
        ShardKey::Str(v.clone())
    }
}

impl From<Uuid> for ShardKey {
    fn from(v: Uuid) -> Self {
        ShardKey::Uuid(v)
    }
}

impl From<&ShardKey> for ShardKey {
    fn from(v: &ShardKey) -> Self {
        v.clone()
    }
}

/// A new row id that is unique across every shard with no coordination: a uuid v7 (a
/// millisecond timestamp then random bits), so ids also sort roughly by creation time and keep
/// B-tree inserts local.
///
/// ```
/// let a = sea_orm_replica::shard::new_id();
/// let b = sea_orm_replica::shard::new_id();
/// assert_ne!(a, b);
/// assert_eq!(a.get_version_num(), 7);
/// ```
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_column_values() {
        assert_eq!(
            ShardKey::from_value(&Value::Int(Some(-3))),
            Some(ShardKey::Int(-3))
        );
        assert_eq!(
            ShardKey::from_value(&Value::BigUnsigned(Some(u64::MAX))),
            None
        );
        assert_eq!(ShardKey::from_value(&Value::BigInt(None)), None);
        assert_eq!(ShardKey::from_value(&Value::Double(Some(1.0))), None);
        let long = ShardKey::from("x".repeat(500));
        assert!(long.shown().chars().count() <= 65);
        assert_eq!(ShardKey::from(7_u32).to_text(), "7");
    }
}
