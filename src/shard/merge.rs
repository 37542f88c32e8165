//! Merging sorted shard results: comparing column values as the servers sort them, and a
//! k-way merge that stops after the rows asked for.

use std::cmp::Ordering;

use sea_orm::Value;

/// Compares two column values of the same column the way `ORDER BY … ASC` does: numbers by
/// value, strings and bytes byte-wise (a binary / `C` collation), dates and times in time
/// order, uuids byte-wise. NULL sorts above every value when `nulls_high` (PostgreSQL),
/// below otherwise (MariaDB, SQLite). Values of types it cannot order compare equal.
pub fn compare_values(a: &Value, b: &Value, nulls_high: bool) -> Ordering {
    match (is_null(a), is_null(b)) {
        (true, true) => return Ordering::Equal,
        (true, false) => {
            return if nulls_high {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, true) => {
            return if nulls_high {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, false) => {}
    }
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (as_float(a), as_float(b)) {
        return x.total_cmp(&y);
    }
    match (a, b) {
        (Value::String(Some(x)), Value::String(Some(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Char(Some(x)), Value::Char(Some(y))) => x.cmp(y),
        (Value::Bytes(Some(x)), Value::Bytes(Some(y))) => x.cmp(y),
        (Value::Bool(Some(x)), Value::Bool(Some(y))) => x.cmp(y),
        (Value::Uuid(Some(x)), Value::Uuid(Some(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Value::ChronoDate(Some(x)), Value::ChronoDate(Some(y))) => x.cmp(y),
        (Value::ChronoTime(Some(x)), Value::ChronoTime(Some(y))) => x.cmp(y),
        (Value::ChronoDateTime(Some(x)), Value::ChronoDateTime(Some(y))) => x.cmp(y),
        (Value::ChronoDateTimeUtc(Some(x)), Value::ChronoDateTimeUtc(Some(y))) => x.cmp(y),
        (Value::ChronoDateTimeLocal(Some(x)), Value::ChronoDateTimeLocal(Some(y))) => x.cmp(y),
        (
            Value::ChronoDateTimeWithTimeZone(Some(x)),
            Value::ChronoDateTimeWithTimeZone(Some(y)),
        ) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn is_null(v: &Value) -> bool {
    matches!(
        v,
        Value::Bool(None)
            | Value::TinyInt(None)
            | Value::SmallInt(None)
            | Value::Int(None)
            | Value::BigInt(None)
            | Value::TinyUnsigned(None)
            | Value::SmallUnsigned(None)
            | Value::Unsigned(None)
            | Value::BigUnsigned(None)
            | Value::Float(None)
            | Value::Double(None)
            | Value::String(None)
            | Value::Char(None)
            | Value::Bytes(None)
            | Value::Json(None)
            | Value::Uuid(None)
            | Value::ChronoDate(None)
            | Value::ChronoTime(None)
            | Value::ChronoDateTime(None)
            | Value::ChronoDateTimeUtc(None)
            | Value::ChronoDateTimeLocal(None)
            | Value::ChronoDateTimeWithTimeZone(None)
    )
}

fn as_int(v: &Value) -> Option<i128> {
    Some(match v {
        Value::TinyInt(Some(x)) => (*x).into(),
        Value::SmallInt(Some(x)) => (*x).into(),
        Value::Int(Some(x)) => (*x).into(),
        Value::BigInt(Some(x)) => (*x).into(),
        Value::TinyUnsigned(Some(x)) => (*x).into(),
        Value::SmallUnsigned(Some(x)) => (*x).into(),
        Value::Unsigned(Some(x)) => (*x).into(),
        Value::BigUnsigned(Some(x)) => (*x).into(),
        _ => return None,
    })
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Float(Some(x)) => Some((*x).into()),
        Value::Double(Some(x)) => Some(*x),
        // an integer against a float: compare as floats
        other => as_int(other).map(|i| i as f64),
    }
}

/// Merges lists each sorted by `cmp` into one sorted list, skipping the first `skip` rows and
/// keeping at most `take`. Equal rows keep the order of their lists (the first list first),
/// then their order within a list. Costs O((skip + take) · k) comparisons for k lists: each
/// step takes the smallest head.
pub fn kway_merge<T>(
    lists: Vec<Vec<T>>,
    skip: usize,
    take: Option<usize>,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<T> {
    let total: usize = lists.iter().map(Vec::len).sum();
    let wanted = take.map_or(total, |t| t.min(total.saturating_sub(skip)));
    let mut out = Vec::with_capacity(wanted);
    let mut heads: Vec<std::collections::VecDeque<T>> = lists.into_iter().map(Into::into).collect();
    let mut skipped = 0;
    while out.len() < wanted {
        let mut best: Option<(usize, &T)> = None;
        for (i, list) in heads.iter().enumerate() {
            let Some(head) = list.front() else { continue };
            if best.is_none_or(|(_, current)| cmp(head, current) == Ordering::Less) {
                best = Some((i, head));
            }
        }
        let Some(row) = best.map(|(b, _)| b).and_then(|b| heads[b].pop_front()) else {
            break;
        };
        if skipped < skip {
            skipped += 1;
        } else {
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_sort_as_each_backend_does() {
        let null = Value::Int(None);
        let one = Value::Int(Some(1));
        assert_eq!(compare_values(&null, &one, true), Ordering::Greater);
        assert_eq!(compare_values(&null, &one, false), Ordering::Less);
        assert_eq!(compare_values(&null, &null, true), Ordering::Equal);
        assert_eq!(
            compare_values(&Value::BigInt(Some(-2)), &Value::Int(Some(1)), true),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Value::Double(Some(1.5)), &Value::Int(Some(1)), true),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(
                &Value::String(Some("B".into())),
                &Value::String(Some("a".into())),
                true
            ),
            Ordering::Less,
            "byte order"
        );
    }

    #[test]
    fn kway_merge_equals_a_sort_of_the_union() {
        let mut seed = 7_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        for round in 0..200 {
            let k = 1 + round % 5;
            let lists: Vec<Vec<(i64, usize)>> = (0..k)
                .map(|l| {
                    let n = (next() % 12) as usize;
                    let mut v: Vec<(i64, usize)> = (0..n).map(|_| (next() % 6, l)).collect();
                    v.sort();
                    v
                })
                .collect();
            let mut all: Vec<(i64, usize)> = lists.iter().flatten().copied().collect();
            all.sort(); // by key, then by list: the merge's tie rule
            let skip = (next() % 8) as usize;
            let take = (next() % 10) as usize;
            let merged = kway_merge(lists, skip, Some(take), |a, b| a.0.cmp(&b.0));
            let expected: Vec<_> = all.into_iter().skip(skip).take(take).collect();
            assert_eq!(merged, expected);
        }
    }
}
