//! The offer binding: what the destination's evidence commits to.
//!
//! For one migration attempt the destination makes a fresh HPKE key pair and produces evidence
//! whose 64 bytes of report data are [`OfferBinding::report_data`]: SHA-512 over a
//! domain-separated canonical encoding of
//!
//! - the attempt ([`TransferId`]) and the object it is for,
//! - the source's fresh [`Challenge`] (freshness: evidence from another attempt does not fit),
//! - the TLS channel the two hosts talk over ([`TLS_EXPORTER_LABEL`]; evidence relayed from
//!   another connection does not fit),
//! - the HPKE public key the package is to be sealed to (only the attested runtime holds the
//!   private half), and
//! - the destination runtime's identity ([`RuntimeIdentity`]: name, version, policy-engine
//!   build digest, operator claims), which the object's migration policy is checked against.
//!
//! Verifying the evidence against this report data (`appraise`) is what proves that the
//! attested machine chose all of the above.
//!
//! # Encoding (version 1)
//!
//! Deterministic CBOR (RFC 8949 §4.2.1: shortest heads, definite lengths, map keys sorted by
//! their encoded bytes), a map with text keys:
//!
//! ```text
//! { "v": 1, "suite": [32, 1, 65535], "object": bstr(16), "channel": bstr(32),
//!   "runtime": { "name": tstr, "claims": { tstr => tstr }, "version": tstr,
//!                "policy_engine": bstr(32) },
//!   "transfer": bstr(16), "challenge": bstr(32), "hpke_public_key": bstr(32) }
//! ```
//!
//! `suite` names the HPKE ciphersuite (KEM 0x0020, KDF 0x0001, AEAD 0xFFFF: export-only, the
//! package key is exported and the package sealed with AES-256-GCM, see [`crate::package`]), so
//! that another suite (such as the version 1 package's ChaCha20-Poly1305, 0x0003) cannot be
//! confused with this one. Report data:
//! `SHA-512("sojourn/migrate/offer-binding/v1" || 0x00 || encoding)`.
//! [`OfferBinding::from_bytes`] accepts only the exact canonical form.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256, Sha512};

pub use crate::protocol::{Challenge, TransferId};

/// The TLS exporter label (RFC 8446 §7.5 / RFC 5705) of the channel binding. Both hosts export
/// [`TLS_EXPORTER_LEN`] bytes with this label and **no context** from the TLS 1.3 connection
/// the migration runs over (rustls: `export_keying_material(&mut [0; 32],
/// TLS_EXPORTER_LABEL, None)`), and the result is [`OfferBinding::channel`]. The value is a
/// secret of the two TLS endpoints: do not log it.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-sojourn-migration-v1";
/// Length of the exported channel binding.
pub const TLS_EXPORTER_LEN: usize = 32;
/// Version of the binding encoding.
pub const BINDING_FORMAT: u64 = 1;
/// HPKE ciphersuite ids (RFC 9180 §7): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, export-only
/// AEAD (the package key is exported; [`crate::package`]).
pub const HPKE_SUITE: [u16; 3] = [0x0020, 0x0001, 0xFFFF];
/// Length of an X25519 HPKE public key.
pub const HPKE_PUBLIC_KEY_LEN: usize = 32;
/// Longest runtime name or version string.
pub const MAX_RUNTIME_STRING: usize = 64;

const REPORT_DATA_DOMAIN: &[u8] = b"sojourn/migrate/offer-binding/v1\0";
const KEY_ID_DOMAIN: &[u8] = b"sojourn/migrate/hpke-key/v1\0";

/// The destination runtime's identity, as it states it in its evidence.
///
/// Attestation proves only that the attested (measured) code stated this; a policy that does
/// not pin measurements accepts any code's statement. See docs/object-descriptor.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeIdentity {
    /// Runtime name (`sojourn`), 1 to 64 bytes.
    pub name: String,
    /// Runtime version (`MAJOR.MINOR.PATCH`, optional `-pre` / `+build`), 1 to 64 bytes.
    pub version: String,
    /// Digest identifying the policy-enforcing runtime build.
    pub policy_engine: [u8; 32],
    /// Operator / location claims (`region = "eu-west"`), at most 32.
    pub claims: BTreeMap<String, String>,
}

/// Everything the destination's evidence commits to for one attempt.
#[derive(Clone, PartialEq, Eq)]
pub struct OfferBinding {
    /// The attempt.
    pub transfer: TransferId,
    /// The object being moved.
    pub object_id: [u8; 16],
    /// The source's challenge for this attempt.
    pub challenge: Challenge,
    /// The TLS exporter value of the connection ([`TLS_EXPORTER_LABEL`]).
    pub channel: [u8; 32],
    /// The destination's fresh HPKE public key (32 bytes, X25519).
    pub hpke_public_key: Vec<u8>,
    /// The destination runtime's identity.
    pub runtime: RuntimeIdentity,
}

impl fmt::Debug for OfferBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfferBinding")
            .field("transfer", &self.transfer)
            .field("object_id", &hex::encode(self.object_id))
            .field("challenge", &self.challenge)
            .field("channel", &"<redacted>")
            .field("hpke_public_key", &hex::encode(&self.hpke_public_key))
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// Bytes that are not a binding this version writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// Not the canonical encoding, or a field of the wrong type or size.
    #[error("offer binding: {0}")]
    Malformed(String),
    /// Another binding format version.
    #[error("offer binding: version {0} unsupported (expected {BINDING_FORMAT})")]
    UnsupportedVersion(u64),
    /// Another HPKE ciphersuite.
    #[error("offer binding: HPKE suite {0:?} unsupported")]
    UnsupportedSuite(Vec<u64>),
}

impl From<cbor::Error> for BindingError {
    fn from(e: cbor::Error) -> Self {
        BindingError::Malformed(e.0)
    }
}

fn check_runtime(r: &RuntimeIdentity) -> Result<(), BindingError> {
    for (what, s) in [("name", &r.name), ("version", &r.version)] {
        if s.is_empty() || s.len() > MAX_RUNTIME_STRING || s.chars().any(char::is_control) {
            return Err(BindingError::Malformed(format!(
                "runtime {what}: 1 to {MAX_RUNTIME_STRING} bytes without control characters"
            )));
        }
    }
    sojourn_policy::migration::check_claims(&r.claims)
        .map_err(|(k, what)| BindingError::Malformed(format!("runtime claim {k:?}: {what}")))
}

impl OfferBinding {
    /// The canonical encoding (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = cbor::Writer::with_capacity(256);
        // Keys in canonical order: shorter first, then bytewise.
        w.map(8);
        w.text("v");
        w.uint(BINDING_FORMAT);
        w.text("suite");
        w.array(HPKE_SUITE.len());
        for id in HPKE_SUITE {
            w.uint(id.into());
        }
        w.text("object");
        w.bytes(&self.object_id);
        w.text("channel");
        w.bytes(&self.channel);
        w.text("runtime");
        w.map(4);
        w.text("name");
        w.text(&self.runtime.name);
        w.text("claims");
        w.text_map(&self.runtime.claims);
        w.text("version");
        w.text(&self.runtime.version);
        w.text("policy_engine");
        w.bytes(&self.runtime.policy_engine);
        w.text("transfer");
        w.bytes(&self.transfer.0);
        w.text("challenge");
        w.bytes(&self.challenge.0);
        w.text("hpke_public_key");
        w.bytes(&self.hpke_public_key);
        w.finish()
    }

    /// Reads [`OfferBinding::to_bytes`]'s output; anything else (another order, a longer
    /// head, a trailing byte, a wrong size) is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<OfferBinding, BindingError> {
        let mut r = cbor::Reader::new(bytes);
        r.expect_map(8)?;
        r.expect_key("v")?;
        let v = r.uint()?;
        if v != BINDING_FORMAT {
            return Err(BindingError::UnsupportedVersion(v));
        }
        r.expect_key("suite")?;
        let n = r.array()?;
        let mut suite = Vec::new();
        for _ in 0..n.min(8) {
            suite.push(r.uint()?);
        }
        if suite != HPKE_SUITE.map(u64::from) {
            return Err(BindingError::UnsupportedSuite(suite));
        }
        r.expect_key("object")?;
        let object_id = r.fixed::<16>()?;
        r.expect_key("channel")?;
        let channel = r.fixed::<32>()?;
        r.expect_key("runtime")?;
        r.expect_map(4)?;
        r.expect_key("name")?;
        let name = r.text()?.to_owned();
        r.expect_key("claims")?;
        let claims = r.text_map()?;
        r.expect_key("version")?;
        let version = r.text()?.to_owned();
        r.expect_key("policy_engine")?;
        let policy_engine = r.fixed::<32>()?;
        r.expect_key("transfer")?;
        let transfer = TransferId(r.fixed::<16>()?);
        r.expect_key("challenge")?;
        let challenge = Challenge(r.fixed::<32>()?);
        r.expect_key("hpke_public_key")?;
        let hpke_public_key = r.fixed::<HPKE_PUBLIC_KEY_LEN>()?.to_vec();
        r.finish()?;
        let b = OfferBinding {
            transfer,
            object_id,
            challenge,
            channel,
            hpke_public_key,
            runtime: RuntimeIdentity {
                name,
                version,
                policy_engine,
                claims,
            },
        };
        check_runtime(&b.runtime)?;
        Ok(b)
    }

    /// The 64 bytes of report data the destination's evidence must carry (for Azure vTPM
    /// evidence: the TPM quote's nonce).
    pub fn report_data(&self) -> [u8; 64] {
        Sha512::new()
            .chain_update(REPORT_DATA_DOMAIN)
            .chain_update(self.to_bytes())
            .finalize()
            .into()
    }

    /// SHA-256 of the HPKE public key (domain-separated): a short name for the key, e.g. the
    /// protocol's `KeyId`.
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(&self.hpke_public_key)
            .finalize()
            .into()
    }
}

/// No randomness could be drawn from the operating system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomnessError(pub String);

pub(crate) fn random<const N: usize>() -> Result<[u8; N], RandomnessError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| RandomnessError(e.to_string()))?;
    Ok(out)
}

/// A fresh random transfer id and challenge for a new attempt (never reuse either).
pub fn fresh_attempt() -> Result<(TransferId, Challenge), RandomnessError> {
    Ok((TransferId(random()?), Challenge(random()?)))
}

/// A minimal deterministic-CBOR writer and strict reader for the fixed layouts of this crate
/// (binding, AAD, bundle). Writing cannot fail; reading accepts only shortest heads and
/// definite lengths, which with a fixed key order makes the encoding canonical.
pub(crate) mod cbor {
    use std::collections::BTreeMap;

    /// A malformed or non-canonical input.
    #[derive(Debug)]
    pub(crate) struct Error(pub(crate) String);

    fn err<T>(what: impl Into<String>) -> Result<T, Error> {
        Err(Error(what.into()))
    }

    const UINT: u8 = 0;
    const BYTES: u8 = 2;
    const TEXT: u8 = 3;
    const ARRAY: u8 = 4;
    const MAP: u8 = 5;

    pub(crate) struct Writer(Vec<u8>);

    impl Writer {
        pub(crate) fn with_capacity(n: usize) -> Self {
            Writer(Vec::with_capacity(n))
        }
        /// A writer that appends to `out` (taken back with [`Writer::finish`]).
        pub(crate) fn appending(out: Vec<u8>) -> Self {
            Writer(out)
        }
        fn head(&mut self, major: u8, n: u64) {
            let m = major << 5;
            if n < 24 {
                self.0.push(m | n as u8);
            } else if let Ok(x) = u8::try_from(n) {
                self.0.extend([m | 24, x]);
            } else if let Ok(x) = u16::try_from(n) {
                self.0.push(m | 25);
                self.0.extend(x.to_be_bytes());
            } else if let Ok(x) = u32::try_from(n) {
                self.0.push(m | 26);
                self.0.extend(x.to_be_bytes());
            } else {
                self.0.push(m | 27);
                self.0.extend(n.to_be_bytes());
            }
        }
        pub(crate) fn uint(&mut self, n: u64) {
            self.head(UINT, n);
        }
        pub(crate) fn bytes(&mut self, b: &[u8]) {
            self.bytes_head(b.len());
            self.0.extend_from_slice(b);
        }
        /// The head of a byte string of `len` bytes, whose bytes the caller appends.
        pub(crate) fn bytes_head(&mut self, len: usize) {
            self.head(BYTES, len as u64);
        }
        pub(crate) fn text(&mut self, s: &str) {
            self.head(TEXT, s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
        }
        pub(crate) fn array(&mut self, n: usize) {
            self.head(ARRAY, n as u64);
        }
        pub(crate) fn map(&mut self, n: usize) {
            self.head(MAP, n as u64);
        }
        /// A text → text map in canonical key order (shorter keys first, then bytewise).
        pub(crate) fn text_map(&mut self, m: &BTreeMap<String, String>) {
            let mut entries: Vec<(&String, &String)> = m.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            self.map(entries.len());
            for (k, v) in entries {
                self.text(k);
                self.text(v);
            }
        }
        pub(crate) fn finish(self) -> Vec<u8> {
            self.0
        }
    }

    pub(crate) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub(crate) fn new(buf: &'a [u8]) -> Self {
            Reader { buf, pos: 0 }
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
            let end = self
                .pos
                .checked_add(n)
                .ok_or(Error("length overflow".into()))?;
            let s = self
                .buf
                .get(self.pos..end)
                .ok_or_else(|| Error(format!("truncated at offset {}", self.pos)))?;
            self.pos = end;
            Ok(s)
        }
        fn head(&mut self, major: u8) -> Result<u64, Error> {
            let at = self.pos;
            let b = self.take(1)?.first().copied().unwrap_or(0xff);
            let (m, ai) = (b >> 5, b & 31);
            if m != major {
                return err(format!(
                    "offset {at}: CBOR major type {m}, expected {major}"
                ));
            }
            let (n, min) = match ai {
                0..=23 => return Ok(u64::from(ai)),
                24 => (u64::from(self.take(1)?.first().copied().unwrap_or(0)), 24),
                25 => (self.be(2)?, 0x100),
                26 => (self.be(4)?, 0x1_0000),
                27 => (self.be(8)?, 0x1_0000_0000),
                _ => return err(format!("offset {at}: indefinite or reserved length")),
            };
            if n < min {
                return err(format!("offset {at}: length not in shortest form"));
            }
            Ok(n)
        }
        fn be(&mut self, n: usize) -> Result<u64, Error> {
            Ok(self
                .take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
        fn len(&mut self, major: u8) -> Result<usize, Error> {
            let n = self.head(major)?;
            usize::try_from(n).or(err("length does not fit in memory"))
        }
        pub(crate) fn uint(&mut self) -> Result<u64, Error> {
            self.head(UINT)
        }
        pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Error> {
            let n = self.len(BYTES)?;
            self.take(n)
        }
        pub(crate) fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Error> {
            let b = self.bytes()?;
            b.try_into()
                .or(err(format!("expected {N} bytes, got {}", b.len())))
        }
        pub(crate) fn text(&mut self) -> Result<&'a str, Error> {
            let n = self.len(TEXT)?;
            std::str::from_utf8(self.take(n)?).or(err("text is not UTF-8"))
        }
        pub(crate) fn array(&mut self) -> Result<usize, Error> {
            self.len(ARRAY)
        }
        pub(crate) fn expect_map(&mut self, n: usize) -> Result<(), Error> {
            let found = self.len(MAP)?;
            if found != n {
                return err(format!("a map of {n} entries, found {found}"));
            }
            Ok(())
        }
        pub(crate) fn expect_key(&mut self, key: &str) -> Result<(), Error> {
            let at = self.pos;
            match self.text() {
                Ok(k) if k == key => Ok(()),
                Ok(k) => err(format!("offset {at}: key {key:?} expected, found {k:?}")),
                Err(e) => err(format!("offset {at}: key {key:?} expected: {}", e.0)),
            }
        }
        /// A text → text map whose keys are strictly increasing in canonical order.
        pub(crate) fn text_map(&mut self) -> Result<BTreeMap<String, String>, Error> {
            let n = self.len(MAP)?;
            let mut out = BTreeMap::new();
            let mut prev: Option<&str> = None;
            for _ in 0..n {
                let k = self.text()?;
                if let Some(p) = prev {
                    if (p.len(), p.as_bytes()) >= (k.len(), k.as_bytes()) {
                        return err("map keys not in canonical order (or repeated)");
                    }
                }
                prev = Some(k);
                let v = self.text()?;
                out.insert(k.to_owned(), v.to_owned());
            }
            Ok(out)
        }
        pub(crate) fn finish(self) -> Result<(), Error> {
            if self.pos != self.buf.len() {
                return err(format!("{} trailing bytes", self.buf.len() - self.pos));
            }
            Ok(())
        }
    }
}
