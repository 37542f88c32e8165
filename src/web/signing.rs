//! Signed cookie values: what [`CausalLayer`](super::CausalLayer) hands a client is
//! authenticated with HMAC-SHA256, so a client can only send back what this service (or
//! another instance with the same key) gave it, before it expires.
//!
//! A value is `<payload>.<expiry>.<mac>`:
//!
//! - `payload`: a causal token as [`CausalToken`](crate::CausalToken) prints it (`p:16B374D848`,
//!   `m:0-1-100.1-2-5`), or for a sticky layer the last write's time in milliseconds since
//!   the Unix epoch;
//! - `expiry`: Unix seconds, lowercase hex; past it the value is ignored;
//! - `mac`: HMAC-SHA256 over `sor-causal/1`, the kind (`t` token or `s` sticky), the expiry
//!   and the payload, as unpadded base64url (43 characters).
//!
//! Every character is cookie- and header-safe. A value that does not verify (missing,
//! malformed, another key, the other kind, expired) is treated as absent: never an error.
//! The MAC is compared in constant time.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ReplicaError;

/// The environment variable [`CausalLayer::new`](super::CausalLayer::new) and
/// [`CausalLayer::from_env`](super::CausalLayer::from_env) read the signing key from: hex, at
/// least 64 digits (32 bytes), e.g. the output of `openssl rand -hex 32`.
pub const COOKIE_KEY_ENV: &str = "SOR_COOKIE_KEY";

/// The shortest signing key accepted, in bytes (HMAC-SHA256's output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Domain separation: a MAC made for anything else never verifies here.
const CONTEXT: &[u8] = b"sor-causal/1";

/// What a value carries; part of what is signed, so one kind never passes for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A causal token.
    Token,
    /// A sticky-after-write timestamp.
    Sticky,
    /// Tickets of queued commands the client is waiting for.
    Pending,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::Token => b"t",
            Kind::Sticky => b"s",
            Kind::Pending => b"q",
        }
    }
}

/// Where the key came from (shown by `Debug`; the key itself never is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// [`CausalLayer::signing_key`](super::CausalLayer::signing_key).
    Configured,
    /// [`COOKIE_KEY_ENV`].
    Environment,
    /// Generated for this process: values do not survive a restart or cross instances.
    PerProcess,
    /// No randomness was available and no key was given: nothing verifies, nothing is issued.
    Unavailable,
}

/// An HMAC-SHA256 key, ready to sign and verify.
#[derive(Clone)]
pub(crate) struct SigningKey {
    mac: Option<Hmac<Sha256>>,
    pub(crate) source: KeySource,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from bytes; at least [`MIN_KEY_BYTES`].
    pub(crate) fn new(key: &[u8], source: KeySource) -> Result<Self, ReplicaError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(ReplicaError::Config(format!(
                "the cookie signing key has {} bytes; it needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len()
            )));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| ReplicaError::Config("the cookie signing key was refused".into()))?;
        Ok(SigningKey {
            mac: Some(mac),
            source,
        })
    }

    /// The key in [`COOKIE_KEY_ENV`]: `Ok(None)` when unset or empty, an error (that never
    /// quotes the value) when it is not hex or too short.
    pub(crate) fn from_env() -> Result<Option<Self>, ReplicaError> {
        let Some(text) = std::env::var_os(COOKIE_KEY_ENV).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let text = text.to_str().ok_or_else(|| {
            ReplicaError::Config(format!("{COOKIE_KEY_ENV} is not hex (not even unicode)"))
        })?;
        let bytes = decode_hex(text.trim()).ok_or_else(|| {
            ReplicaError::Config(format!(
                "{COOKIE_KEY_ENV} is not hex (expected an even number of 0-9a-f digits, e.g. from `openssl rand -hex 32`)"
            ))
        })?;
        Self::new(&bytes, KeySource::Environment)
            .map(Some)
            .map_err(|err| ReplicaError::Config(format!("{COOKIE_KEY_ENV}: {err}")))
    }

    /// This process's random key, made on first use and shared by every layer without a key.
    pub(crate) fn per_process() -> Self {
        static KEY: OnceLock<Option<[u8; MIN_KEY_BYTES]>> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut key = [0u8; MIN_KEY_BYTES];
            match getrandom::fill(&mut key) {
                Ok(()) => Some(key),
                Err(err) => {
                    tracing::error!(%err, "no randomness for the cookie signing key: causal cookies are neither issued nor accepted; set {COOKIE_KEY_ENV}");
                    None
                }
            }
        });
        match key.as_ref().map(|k| Self::new(k, KeySource::PerProcess)) {
            Some(Ok(key)) => key,
            _ => SigningKey {
                mac: None,
                source: KeySource::Unavailable,
            },
        }
    }

    fn mac(&self, kind: Kind, expiry: &str, payload: &str) -> Option<Hmac<Sha256>> {
        let mut mac = self.mac.clone()?;
        for part in [CONTEXT, kind.tag(), expiry.as_bytes()] {
            mac.update(part);
            mac.update(b".");
        }
        mac.update(payload.as_bytes());
        Some(mac)
    }

    /// The signed value for `payload`, valid for `ttl`; `None` without a usable key.
    pub(crate) fn seal(&self, kind: Kind, payload: &str, ttl: Duration) -> Option<String> {
        let expires = SystemTime::now()
            .checked_add(ttl)
            .map_or(u64::MAX, unix_secs);
        let expiry = format!("{expires:x}");
        let tag = self.mac(kind, &expiry, payload)?.finalize().into_bytes();
        Some(format!(
            "{payload}.{expiry}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_slice())
        ))
    }

    /// The payload of `value` if it is a value of this kind, signed with this key and not
    /// expired; `None` otherwise.
    pub(crate) fn open<'v>(&self, kind: Kind, value: &'v str) -> Option<&'v str> {
        let (rest, tag) = value.rsplit_once('.')?;
        let (payload, expiry) = rest.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(kind, expiry, payload)?.verify_slice(&tag).ok()?;
        let expires = u64::from_str_radix(expiry, 16).ok()?;
        (unix_secs(SystemTime::now()) < expires).then_some(payload)
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn key(byte: u8) -> SigningKey {
        SigningKey::new(&[byte; 32], KeySource::Configured).unwrap()
    }

    #[test]
    fn values_round_trip_and_are_cookie_safe() {
        let k = key(1);
        for payload in ["p:16B374D848", "m:0-1-100.1-2-5", "1712345678901"] {
            let value = k.seal(Kind::Token, payload, TTL).unwrap();
            assert!(value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b",;\"\\".contains(&b)));
            assert!(value.len() <= payload.len() + 1 + 8 + 1 + 43, "{value}");
            assert_eq!(k.open(Kind::Token, &value), Some(payload));
        }
    }

    #[test]
    fn anything_not_signed_by_this_key_for_this_kind_is_ignored() {
        let (k, other) = (key(1), key(2));
        let value = k.seal(Kind::Token, "p:10", TTL).unwrap();
        assert_eq!(other.open(Kind::Token, &value), None, "another key");
        assert_eq!(k.open(Kind::Sticky, &value), None, "the other kind");
        let forged = value.replacen("p:10", "p:FFFFFFFFFF", 1);
        assert_eq!(k.open(Kind::Token, &forged), None, "payload changed");
        let (rest, tag) = value.rsplit_once('.').unwrap();
        let (payload, _) = rest.rsplit_once('.').unwrap();
        let later = format!("{payload}.ffffffffff.{tag}");
        assert_eq!(k.open(Kind::Token, &later), None, "expiry changed");
        for junk in [
            "",
            "p:10",
            "p:10..",
            "p:10.0.",
            "...",
            "a.b.c",
            "\u{0}.\u{1}.\u{2}",
        ] {
            assert_eq!(k.open(Kind::Token, junk), None, "{junk:?}");
        }
        let expired = k.seal(Kind::Token, "p:10", Duration::ZERO).unwrap();
        assert_eq!(k.open(Kind::Token, &expired), None, "expired");
    }

    #[test]
    fn short_keys_and_bad_hex_are_config_errors() {
        assert!(matches!(
            SigningKey::new(&[0; 31], KeySource::Configured),
            Err(ReplicaError::Config(_))
        ));
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é0"), None);
    }

    #[test]
    fn the_per_process_key_is_shared_and_never_printed() {
        let (a, b) = (SigningKey::per_process(), SigningKey::per_process());
        let value = a.seal(Kind::Token, "p:10", TTL).unwrap();
        assert_eq!(b.open(Kind::Token, &value), Some("p:10"));
        assert_eq!(format!("{a:?}"), "SigningKey { source: PerProcess, .. }");
    }
}
