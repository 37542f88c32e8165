//! PostgreSQL's hash-partitioning hash, bit for bit.
//!
//! For a table `PARTITION BY HASH (k)`, PostgreSQL (10 and later; checked against 15) computes,
//! in `compute_partition_hash_value` (`src/backend/partitioning/partbounds.c`):
//!
//! ```text
//! row_hash = 0
//! for each key column that is not NULL:
//!     row_hash = hash_combine64(row_hash, <type's extended hash>(value, HASH_PARTITION_SEED))
//! partition = the one with REMAINDER row_hash % MODULUS
//! ```
//!
//! The extended hash functions are Bob Jenkins' lookup3 as adapted in `src/common/hashfn.c`
//! (`hash_bytes_extended`, `hash_bytes_uint32_extended`), with the seed folded into the initial
//! state. This module reproduces them for the key types the crate shards on:
//!
//! | column type | PostgreSQL function | here |
//! |---|---|---|
//! | `bigint` | `hashint8extended` | [`hash_int8`] |
//! | `integer` (and `smallint`) | `hashint4extended` (`hashint2extended`) | [`hash_int4`] |
//! | `text`, `varchar` (deterministic collation) | `hashtextextended` | [`hash_bytes`] of the UTF-8 bytes |
//! | `uuid` | `uuid_hash_extended` | [`hash_bytes`] of the 16 bytes |
//!
//! A value that fits in 32 bits hashes the same as `bigint` and as `integer` (PostgreSQL keeps
//! the integer types' hashes compatible), so an `i64` key may be stored in either column type.
//! The results are those of a little-endian server (x86_64, aarch64); a big-endian server hashes
//! byte strings differently.
//!
//! Everything here is pure arithmetic: no allocation, no I/O.

/// The seed PostgreSQL passes to every column's extended hash function when it places a row in
/// a hash partition (`HASH_PARTITION_SEED` in `src/include/catalog/partition.h`). As a signed
/// `bigint`, for calls such as `hashint8extended(k, 8816678312871386365)`, it is
/// 8816678312871386365.
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The constant `hash_combine64` adds (`src/include/common/hashfn.h`).
const COMBINE64_CONSTANT: u64 = 0x49a0_f4dd_15e5_a8e3;

/// lookup3's initial state before the key length is added (`0x9e3779b9 + 3923095`).
const INITIAL: u32 = 0x9e37_79b9_u32.wrapping_add(3_923_095);

/// lookup3's `mix`: mixes three 32-bit values reversibly.
#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3's `final`: the last mixing of (a, b, c).
#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// The initial (a, b, c) for a key of `len` bytes, perturbed by `seed` as PostgreSQL does:
/// the seed's high half into `a`, its low half into `b`, then one `mix` (skipped for seed 0).
#[inline(always)]
fn initial_state(len: u32, seed: u64) -> (u32, u32, u32) {
    let init = INITIAL.wrapping_add(len);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// A little-endian `u32` from exactly four bytes.
#[inline(always)]
fn le32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

/// `hash_bytes_extended(k, len, seed)` from `src/common/hashfn.c`, little-endian.
///
/// The length is taken modulo 2³² as PostgreSQL's `uint32 len` would (a datum is at most 1 GB).
#[inline]
fn hash_bytes_extended(key: &[u8], seed: u64) -> u64 {
    let (mut a, mut b, mut c) = initial_state(key.len() as u32, seed);

    let mut blocks = key.chunks_exact(12);
    for block in &mut blocks {
        a = a.wrapping_add(le32(&block[0..4]));
        b = b.wrapping_add(le32(&block[4..8]));
        c = c.wrapping_add(le32(&block[8..12]));
        mix(&mut a, &mut b, &mut c);
    }

    // The last 0..=11 bytes: the switch in hashfn.c adds bytes 0..4 to `a` and 4..8 to `b` as
    // little-endian words, and bytes 8..11 to `c` shifted up one byte ("the lowest byte of c
    // is reserved for the length"). Missing bytes add nothing, so zero padding is exact; the
    // padding byte at index 11 is shifted out of `c`.
    let tail = blocks.remainder();
    let mut padded = [0u8; 12];
    padded[..tail.len()].copy_from_slice(tail);
    a = a.wrapping_add(le32(&padded[0..4]));
    b = b.wrapping_add(le32(&padded[4..8]));
    c = c.wrapping_add(le32(&padded[8..12]) << 8);

    // Unlike Jenkins' original lookup3, PostgreSQL runs `final` for an empty tail too.
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_bytes_uint32_extended(k, seed)` from `src/common/hashfn.c`.
#[inline]
fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = initial_state(4, seed);
    a = a.wrapping_add(k);
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_combine64(a, b)` from `src/include/common/hashfn.h` (wrapping arithmetic).
#[inline(always)]
fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(COMBINE64_CONSTANT)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// `hashint8extended(value, HASH_PARTITION_SEED)`: the column hash of a `bigint`.
///
/// Folds the high half into the low half (`lohalf ^= value >= 0 ? hihalf : !hihalf`), so every
/// value that fits in an `i32` hashes as [`hash_int4`] does, then hashes the 32-bit result.
/// PostgreSQL returns it as a signed `bigint`; this is the same 64 bits as a `u64`.
#[inline]
pub fn hash_int8(value: i64) -> u64 {
    let lo = value as u32;
    let hi = (value >> 32) as u32;
    let folded = lo ^ if value >= 0 { hi } else { !hi };
    hash_uint32_extended(folded, HASH_PARTITION_SEED)
}

/// `hashint4extended(value, HASH_PARTITION_SEED)`: the column hash of an `integer` (and, since
/// `hashint2extended` widens first, of a `smallint`). Equal to [`hash_int8`] of the same value.
#[inline]
pub fn hash_int4(value: i32) -> u64 {
    hash_uint32_extended(value as u32, HASH_PARTITION_SEED)
}

/// `hash_bytes_extended(bytes, len, HASH_PARTITION_SEED)`: the column hash of a `text` or
/// `varchar` (pass its UTF-8 bytes; `hashtextextended` under a deterministic collation, which
/// is every collation except ICU ones created `deterministic = false`) and of a `uuid` (pass
/// its 16 bytes in network order, as [`uuid::Uuid::as_bytes`] gives them; `uuid_hash_extended`).
/// No allocation; linear in the length.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_bytes_extended(bytes, HASH_PARTITION_SEED)
}

/// The row hash of a single-column partition key whose column hash is `column_hash`:
/// `hash_combine64(0, column_hash)`, which is `column_hash + 0x49a0f4dd15e5a8e3` (wrapping).
/// A NULL key would have row hash 0 (PostgreSQL skips NULL columns).
#[inline]
pub fn partition_hash(column_hash: u64) -> u64 {
    hash_combine64(0, column_hash)
}

/// The partition remainder of a row: `row_hash % modulus`, the `REMAINDER` of the partition
/// `FOR VALUES WITH (MODULUS modulus, REMAINDER r)` that holds the row.
///
/// `modulus` must be positive (PostgreSQL requires a positive `integer`); a `modulus` of 0
/// gives 0 instead of panicking.
#[inline]
pub fn remainder(row_hash: u64, modulus: u64) -> u64 {
    row_hash.checked_rem(modulus).unwrap_or(0)
}

/// The partition remainder of a `bigint` key `value` among `modulus` partitions (see
/// [`remainder`] for `modulus` 0). The same for `integer` and `smallint` columns holding the value.
#[inline]
pub fn partition_of_i64(value: i64, modulus: u64) -> u64 {
    remainder(partition_hash(hash_int8(value)), modulus)
}

/// The partition remainder of a `text` / `varchar` key `value` (deterministic collation) among
/// `modulus` partitions (see [`remainder`] for `modulus` 0).
#[inline]
pub fn partition_of_str(value: &str, modulus: u64) -> u64 {
    remainder(partition_hash(hash_bytes(value.as_bytes())), modulus)
}

/// The partition remainder of a `uuid` key (its 16 bytes, as [`uuid::Uuid::as_bytes`] gives
/// them) among `modulus` partitions (see [`remainder`] for `modulus` 0).
#[inline]
pub fn partition_of_uuid(value: &[u8; 16], modulus: u64) -> u64 {
    remainder(partition_hash(hash_bytes(value)), modulus)
}

#[cfg(test)]
mod tests {
    //! Every expected value below was read from a PostgreSQL 15.20 server (x86_64): the
    //! `*extended(value, 8816678312871386365)` SQL functions, which return the 64 bits as a
    //! signed `bigint`, and the partitions rows landed in (`tableoid`) for the remainders.

    use super::*;

    /// `left(ALPHA, n)` for n in 0..=40 covers every tail length 0..=11 and 0 to 3 full blocks.
    const ALPHA: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";

    #[test]
    fn seed_as_bigint() {
        assert_eq!(HASH_PARTITION_SEED as i64, 8816678312871386365);
    }

    #[test]
    fn int8_matches_hashint8extended() {
        // SELECT hashint8extended(k, 8816678312871386365)
        let cases: &[(i64, i64)] = &[
            (0, -4403592609991167795),
            (1, 5968994663651403477),
            (-1, -5017072347659237694),
            (2, -6784076462669891433),
            (-2, 2147707635919668551),
            (42, 7363975540656877951),
            (-42, 6660635123915733087),
            (2147483647, -6050265599104649060),
            (-2147483648, 4938542303000433043),
            (2147483648, 4938542303000433043),
            (-2147483649, -6050265599104649060),
            (4294967295, -5017072347659237694),
            (4294967296, 5968994663651403477),
            (-4294967296, -4403592609991167795),
            (-4294967297, 2147707635919668551),
            (i64::MAX, 4938542303000433043),
            (i64::MIN, -6050265599104649060),
            (1234567890123456789, -9105224441813162067),
            (-1234567890123456789, 3192319900816398085),
            (1000000007, -432754958688118905),
        ];
        for &(value, expected) in cases {
            assert_eq!(
                hash_int8(value),
                expected as u64,
                "hashint8extended({value})"
            );
        }
    }

    #[test]
    fn int4_matches_hashint4extended_and_int8() {
        // SELECT hashint4extended(k, 8816678312871386365)
        let cases: &[(i32, i64)] = &[
            (0, -4403592609991167795),
            (1, 5968994663651403477),
            (-1, -5017072347659237694),
            (42, 7363975540656877951),
            (-42, 6660635123915733087),
            (i32::MAX, -6050265599104649060),
            (i32::MIN, 4938542303000433043),
            (123456, 7518462043501142587),
            (-987654, -6603995886890600109),
        ];
        for &(value, expected) in cases {
            assert_eq!(
                hash_int4(value),
                expected as u64,
                "hashint4extended({value})"
            );
            assert_eq!(
                hash_int8(i64::from(value)),
                hash_int4(value),
                "int8 = int4 for {value}"
            );
        }
    }

    #[test]
    fn text_prefixes_match_hashtextextended() {
        // SELECT hashtextextended(left('abc…ABCD', n), 8816678312871386365), n = 0..=40
        let expected: [i64; 41] = [
            -5700645584453517373,
            -6705225459120232837,
            596009030900183869,
            3628778498291917250,
            4029384952263848046,
            4809259092934399961,
            -658605897836517514,
            -1516236981150442578,
            -7754745184861941070,
            -7860738947571725408,
            -8306284229451770207,
            -2046435308545367432,
            -7876791541613377658,
            -6785754114725280077,
            -5209977316171801933,
            3744103518171237272,
            -2963246452690924729,
            -4290088002765369671,
            -3976194482402635722,
            6411573653485454739,
            -3730286019426601237,
            -9009476528635760866,
            1804191968730614896,
            -7324642668702903167,
            -10959101940276370,
            1383018584709609407,
            -7171292135076916904,
            -3591893460407905134,
            -5796803543855781931,
            -6585685641171239353,
            6288301289192221736,
            -5841615286663842331,
            -4837114046275650304,
            -166370921194069178,
            -5845132278389786067,
            5169896017269077166,
            -7380664822038775401,
            8947608406779142553,
            1037916853476851152,
            4683932627487655592,
            -2881466975380023087,
        ];
        for (n, &hash) in expected.iter().enumerate() {
            let text = &ALPHA[..n];
            assert_eq!(
                hash_bytes(text.as_bytes()),
                hash as u64,
                "hashtextextended({text:?})"
            );
        }
    }

    #[test]
    fn utf8_text_matches_hashtextextended() {
        // SELECT hashtextextended(s, 8816678312871386365) in a UTF8 database
        let cases: &[(&str, i64)] = &[
            ("é", 4377877661621198540),
            ("ß", 2243351082813529914),
            ("日本語", -8050275759738715173),
            ("🦀", 1255201537425408073),
            ("Grüße, Jürgen ❤", -3965465066959663307),
            (
                "Ωμέγα-σήμερα-κόσμε-日本語テキスト-🦀🦀",
                6897728093500958952,
            ),
            ("naïve café", -312925380848054187),
            ("ü", -713069178574967820),
            ("0123456789ab", -5633321544240525495),
            ("0123456789aé", 3174545096174141930),
        ];
        for &(text, expected) in cases {
            assert_eq!(
                hash_bytes(text.as_bytes()),
                expected as u64,
                "hashtextextended({text:?})"
            );
        }
    }

    #[test]
    fn uuid_matches_uuid_hash_extended() {
        // SELECT uuid_hash_extended(u, 8816678312871386365)
        let cases: &[(&str, i64)] = &[
            ("00000000-0000-0000-0000-000000000000", -5281082146396728638),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", -148986464341306210),
            ("123e4567-e89b-12d3-a456-426614174000", -1252132692482143582),
            ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", -2100911171879832829),
            ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 7845930159168796807),
            ("01890a5d-ac96-774b-bcce-b302099a8057", 4610099341960504173),
        ];
        for &(text, expected) in cases {
            let uuid = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(
                hash_bytes(uuid.as_bytes()),
                expected as u64,
                "uuid_hash_extended({text})"
            );
        }
    }

    #[test]
    fn other_seeds_match_the_server() {
        // Seed 0 skips the seed's mix; seed 1 perturbs only `b`.
        let seed0: &[(usize, i64)] = &[
            (0, -6939563903564495251),
            (1, 3591986179850072241),
            (5, 3076356108696143428),
            (12, -7556637188122330412),
            (13, 8871624171452417744),
            (40, 7005817330312134559),
        ];
        for &(n, expected) in seed0 {
            assert_eq!(
                hash_bytes_extended(&ALPHA.as_bytes()[..n], 0),
                expected as u64
            );
        }
        let seed1: &[(usize, i64)] = &[
            (0, -150071773020461347),
            (7, 8893296306369806751),
            (40, -1050305914824397336),
        ];
        for &(n, expected) in seed1 {
            assert_eq!(
                hash_bytes_extended(&ALPHA.as_bytes()[..n], 1),
                expected as u64
            );
        }
        // SELECT hashint8extended(k, 0): the same fold, then hash_uint32_extended with seed 0
        let int8_seed0: &[(u32, i64)] = &[
            (0, 4154612158245552303),
            (1, -3670598878359251130),
            (u32::MAX, -1888257769727981238), // -1 folds to 0xFFFFFFFF
            (0x8000_0000, 1977219185673256887), // i64::MAX folds to 0x80000000
        ];
        for &(k, expected) in int8_seed0 {
            assert_eq!(hash_uint32_extended(k, 0), expected as u64);
        }
    }

    #[test]
    fn uint32_hash_is_the_four_byte_hash() {
        // hash_bytes_uint32_extended(k) = hash_bytes_extended(&k, 4) on little-endian.
        for k in [0u32, 1, 0xdead_beef, u32::MAX] {
            for seed in [0, 1, HASH_PARTITION_SEED] {
                assert_eq!(
                    hash_uint32_extended(k, seed),
                    hash_bytes_extended(&k.to_le_bytes(), seed)
                );
            }
        }
    }

    #[test]
    fn partition_hash_is_combine_with_zero() {
        assert_eq!(partition_hash(0), 0x49a0_f4dd_15e5_a8e3);
        assert_eq!(partition_hash(u64::MAX), 0x49a0_f4dd_15e5_a8e2);
        assert_eq!(
            hash_combine64(1, 0),
            1 ^ (0x49a0_f4dd_15e5_a8e3 + (1 << 54))
        );
        assert_eq!(remainder(17, 5), 2);
        assert_eq!(remainder(17, 0), 0);
        assert_eq!(remainder(u64::MAX, 1), 0);
    }

    #[test]
    fn int8_partitions_match_the_server() {
        // (k, remainder under MODULUS 8, remainder under MODULUS 7): the partition each row
        // landed in, by tableoid, for tables PARTITION BY HASH (k bigint).
        let cases: &[(i64, u64, u64)] = &[
            (i64::MIN, 7, 0),
            (-1234567890123456789, 0, 2),
            (-2147483649, 7, 0),
            (-2147483648, 6, 3),
            (-42, 2, 4),
            (-2, 2, 4),
            (-1, 5, 0),
            (0, 0, 4),
            (1, 0, 5),
            (2, 2, 6),
            (42, 2, 0),
            (1000000007, 2, 4),
            (2147483647, 7, 0),
            (2147483648, 6, 3),
            (1234567890123456789, 0, 6),
            (i64::MAX, 6, 3),
        ];
        for &(key, by8, by7) in cases {
            assert_eq!(partition_of_i64(key, 8), by8, "{key} among 8");
            assert_eq!(partition_of_i64(key, 7), by7, "{key} among 7");
        }
    }

    #[test]
    fn text_and_uuid_partitions_match_the_server() {
        // PARTITION BY HASH (k text), MODULUS 8
        let texts: &[(&str, u64)] = &[
            ("", 6),
            ("a", 6),
            ("ab", 0),
            ("abc", 5),
            ("hello", 4),
            ("hello, world", 4),
            ("Grüße, Jürgen ❤", 0),
            ("🦀", 4),
            ("550e8400-e29b-41d4-a716-446655440000", 0),
        ];
        for &(key, expected) in texts {
            assert_eq!(partition_of_str(key, 8), expected, "{key:?} among 8");
        }
        // PARTITION BY HASH (k uuid), MODULUS 7
        let uuids: &[(&str, u64)] = &[
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", 0),
            ("01890a5d-ac96-774b-bcce-b302099a8057", 1),
            ("00000000-0000-0000-0000-000000000000", 2),
            ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 3),
            ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", 4),
            ("123e4567-e89b-12d3-a456-426614174000", 5),
        ];
        for &(key, expected) in uuids {
            let uuid = uuid::Uuid::parse_str(key).unwrap();
            assert_eq!(
                partition_of_uuid(uuid.as_bytes(), 7),
                expected,
                "{key} among 7"
            );
        }
    }

    #[test]
    fn unaligned_input_hashes_the_same() {
        // PostgreSQL has aligned and unaligned paths with one result; we read bytes either way.
        let mut buffer = [0u8; 48];
        for offset in 0..4 {
            buffer[offset..offset + 40].copy_from_slice(ALPHA.as_bytes());
            for n in 0..=40 {
                assert_eq!(
                    hash_bytes(&buffer[offset..offset + n]),
                    hash_bytes(&ALPHA.as_bytes()[..n])
                );
            }
        }
    }
}
