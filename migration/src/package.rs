//! The migration package (version 2): the object, sealed to the appraised destination's key.
//!
//! # Cryptography
//!
//! HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / export-only AEAD
//! (0xFFFF), used only to agree on a key:
//!
//! - `pkR` = the key in the [`MigrationTicket`] (only [`crate::appraise::appraise_destination`]
//!   makes one, so only a key that verified evidence binds is ever used);
//! - `info` = [`PACKAGE_INFO`];
//! - package key = `Export(`[`KEY_EXPORT_CONTEXT`]`, 32)`: an AES-256-GCM key that is new for
//!   every package (the KEM's ephemeral key is fresh per seal), and that only the holder of the
//!   destination's private key can derive.
//!
//! The bundle (the plaintext) is sealed with AES-256-GCM (ring) under the package key in a
//! STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, CRYPTO 2015):
//!
//! - the plaintext of `L` bytes is cut into `n` segments of [`SEGMENT`] bytes, the last one
//!   shorter (or full); an empty plaintext is **one empty segment**, so `n = max(1, ⌈L / SEGMENT⌉)`
//!   and there is always a last segment with a tag;
//! - segment `i` is sealed with nonce `i` (u64, big-endian) ‖ `last` (u32, big-endian: 1 for
//!   segment `n − 1`, else 0), and
//! - AAD = [`package_aad`] (SHA-256 over `"sojourn/migrate/package-aad/v1" || 0x00 ||`
//!   canonical CBOR `[transfer, object_id, challenge, channel, hpke_public_key]`) ‖ the 74-byte
//!   clear header.
//!
//! So a package opens only under the binding of the attempt it was sealed for: not in another
//! transfer, not for another challenge, not on another TLS connection (the exporter value is
//! known only to the two TLS endpoints, which also authenticates the sender as the source's end
//! of the channel), and not with another key (another shared secret, another package key). A
//! changed header field changes every segment's AAD (and `enc` the key as well). A segment
//! moved, swapped or duplicated is opened under another index's nonce; a dropped last segment
//! leaves a segment without the `last` flag at the end (and the declared length, in the AAD,
//! would have to change too); a truncated or lengthened package does not add up to its header
//! and is refused before any decryption. Nonces never repeat under a key: every package has its
//! own key, and the index is unique within it.
//!
//! Segments are sealed and opened in place, on up to [`MAX_THREADS`] threads when there are
//! several.
//!
//! # Package layout (big-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SJMIGPK2` |
//! | 8 | 2, 2, 2 | KEM, KDF, AEAD ids ([`HPKE_SUITE`]: 0x0020, 0x0001, 0xFFFF) |
//! | 14 | 16 | transfer id (in clear, for routing; also bound by the AAD) |
//! | 30 | 32 | `enc`, the encapsulated key |
//! | 62 | 8 | `L`, the plaintext length (at most [`MAX_PLAINTEXT_LEN`]) |
//! | 70 | 4 | segment size, always [`SEGMENT`] |
//! | 74 | `L` | the ciphertext: segment `i` is bytes `i·SEGMENT ..` of it, sealed in place |
//! | 74 + `L` | 16·`n` | tag table: the tag of segment `i` at 16·`i` |
//!
//! A package is exactly `74 + L + 16·n` bytes; anything else (another magic, suite or segment
//! size, a length over the maximum, a byte missing or left over) is [`PackageError::Malformed`].
//! The tags follow all segments so that the plaintext is sealed where it was written: no byte of
//! it moves.
//!
//! # Sent order
//!
//! A package may also be sent with each segment's tag right after the segment and no tag
//! table ([`SendOrder::TagAfterSegment`], [`seal_streaming_in`]): the same bytes, in an order
//! in which a receiver can authenticate and decrypt each segment as soon as it has arrived
//! ([`SegmentOpener`], then [`open_opened`]) and put the bytes back in the layout above
//! ([`TagAfterSegment`]), which is what it keeps.
//!
//! # Bundle encoding (version 2)
//!
//! Deterministic CBOR map: `{ "v": 2, "object": bstr(16), "source": tstr, "lineage": bstr,
//! "pending": [bstr…], "snapshot": bstr }` (keys in canonical order, shortest heads), read back
//! strictly: one encoding per bundle. The snapshot is last and its length is known before it is
//! written, so [`seal_with`] writes the small [`BundleHead`] and the snapshot's head, then lets
//! the caller write the snapshot straight into the package buffer.
//!
//! # Copies
//!
//! Sealing allocates one buffer of the package's final size; the snapshot is written into it
//! once (by the caller) and encrypted there. Opening ([`open_owned`]) takes the received buffer,
//! decrypts it in place and reads the bundle from it without copying: [`OpenedBundle`] lends
//! the snapshot, lineage and messages out of it and zeroes it when dropped.
//! [`open_owned_keeping`] also hands each segment's ciphertext to the caller just before it is
//! decrypted (a destination writes the package as it arrived to disk, its durable image), and
//! [`OpenedBundle::opening`] gives the package key and associated data that open it again.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::thread;

use hpke::aead::ExportOnlyAead;
use hpke::kdf::HkdfSha256;
use hpke::rand_core::{Infallible, TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::appraise::{HpkeKem, HpkePublicKey, MigrationTicket};
use crate::binding::{cbor, random, OfferBinding, RandomnessError, TransferId, HPKE_SUITE};

/// HPKE `info` for migration packages.
pub const PACKAGE_INFO: &[u8] = b"sojourn/migrate/package/v2";
/// HPKE exporter context of the package key.
pub const KEY_EXPORT_CONTEXT: &[u8] = b"sojourn/migrate/package-key/v2";
/// First bytes of a sealed package.
pub const PACKAGE_MAGIC: &[u8; 8] = b"SJMIGPK2";
/// Version of the bundle encoding.
pub const BUNDLE_FORMAT: u64 = 2;
/// Length of the encapsulated key.
pub const ENC_LEN: usize = 32;
/// Length of the clear header.
pub const HEADER_LEN: usize = 8 + 6 + 16 + ENC_LEN + 8 + 4;
/// Plaintext bytes per segment (the last segment may be shorter).
pub const SEGMENT: usize = 1 << 20;
/// Length of an AES-256-GCM tag; one per segment.
pub const TAG_LEN: usize = 16;
/// Largest plaintext (encoded bundle) a package carries: 4 GiB.
pub const MAX_PLAINTEXT_LEN: u64 = 4 << 30;
/// Most threads sealing or opening one package.
pub const MAX_THREADS: usize = 4;

const PREVIOUS_MAGIC: &[u8; 8] = b"SJMIGPK1";
const AAD_DOMAIN: &[u8] = b"sojourn/migrate/package-aad/v1\0";
const RNG_DOMAIN: &[u8] = b"sojourn/migrate/seal-rng/v1\0";
const DIGEST_LEN: usize = 32;
/// Per-segment AAD: the binding digest, then the header.
const SEGMENT_AAD_LEN: usize = DIGEST_LEN + HEADER_LEN;

type PrivateKey = <HpkeKem as hpke::Kem>::PrivateKey;
type EncappedKey = <HpkeKem as hpke::Kem>::EncappedKey;

/// Sealing or opening a package failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// No randomness from the operating system.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// The bundle is for another object than the binding names.
    #[error("the bundle is for object {found}, the binding for {expected}")]
    WrongObject {
        /// The binding's object id, hex.
        expected: String,
        /// The bundle's, hex.
        found: String,
    },
    /// The package is for another transfer than the binding's.
    #[error("the package is for another transfer than this binding's")]
    WrongTransfer,
    /// The key is not the one the binding names.
    #[error("the destination key is not the binding's HPKE key")]
    WrongKey,
    /// The package bytes are not a package this version writes.
    #[error("malformed package: {0}")]
    Malformed(String),
    /// The ciphertext does not authenticate under this key and binding (tampered, reordered,
    /// truncated, or sealed for another destination, transfer, challenge or channel).
    #[error("the package does not open with this key and binding")]
    Open,
    /// Sealing failed (HPKE refused the public key, or the cipher failed).
    #[error("seal failed: {0}")]
    Seal(String),
    /// The decrypted bundle is not a bundle this version writes.
    #[error("malformed bundle: {0}")]
    Bundle(String),
    /// The snapshot writer of [`seal_with`] failed or did not write the length it announced.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The bundle is larger than a package carries.
    #[error("the bundle is {len} bytes, more than a package carries ({max} bytes)")]
    TooLarge {
        /// The encoded bundle's length.
        len: u64,
        /// [`MAX_PLAINTEXT_LEN`].
        max: u64,
    },
    /// A sealing or opening thread could not be started or did not finish.
    #[error("worker thread: {0}")]
    Worker(String),
}

/// The object as it moves: everything the destination needs to resume it.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectBundle {
    /// The object.
    pub object_id: [u8; 16],
    /// Its snapshot (docs/snapshot-format.md).
    pub snapshot: Vec<u8>,
    /// Its lineage export (docs/lineage-format.md).
    pub lineage: Vec<u8>,
    /// Messages queued for it and not yet processed, in order.
    pub pending_messages: Vec<Vec<u8>>,
    /// The source host, as it names itself.
    pub source: String,
}

impl fmt::Debug for ObjectBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBundle")
            .field("object_id", &hex::encode(self.object_id))
            .field("snapshot_bytes", &self.snapshot.len())
            .field("lineage_bytes", &self.lineage.len())
            .field("pending_messages", &self.pending_messages.len())
            .field("source", &self.source)
            .finish()
    }
}

impl ObjectBundle {
    /// Everything but the snapshot, borrowed.
    pub fn head(&self) -> BundleHead<'_> {
        BundleHead {
            object_id: self.object_id,
            source: &self.source,
            lineage: &self.lineage,
            pending_messages: &self.pending_messages,
        }
    }

    /// The canonical encoding (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let head = self.head();
        let mut out = Vec::with_capacity(head.encoded_len(self.snapshot.len()).unwrap_or_default());
        head.encode_into(&mut out, self.snapshot.len());
        out.extend_from_slice(&self.snapshot);
        out
    }

    /// Reads [`ObjectBundle::to_bytes`]'s output, strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<ObjectBundle, PackageError> {
        let b = parse_bundle(bytes)?;
        Ok(ObjectBundle {
            object_id: b.object_id,
            snapshot: b.snapshot.to_vec(),
            lineage: b.lineage.to_vec(),
            pending_messages: b.pending.iter().map(|m| m.to_vec()).collect(),
            source: b.source.to_owned(),
        })
    }
}

/// The bundle without its snapshot: what [`seal_with`] encodes before the caller writes the
/// snapshot.
#[derive(Clone, Copy)]
pub struct BundleHead<'a> {
    /// The object (must be the ticket's).
    pub object_id: [u8; 16],
    /// The source host, as it names itself.
    pub source: &'a str,
    /// The object's lineage export (docs/lineage-format.md).
    pub lineage: &'a [u8],
    /// Messages queued for it and not yet processed, in order.
    pub pending_messages: &'a [Vec<u8>],
}

impl fmt::Debug for BundleHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleHead")
            .field("object_id", &hex::encode(self.object_id))
            .field("source", &self.source)
            .field("lineage_bytes", &self.lineage.len())
            .field("pending_messages", &self.pending_messages.len())
            .finish()
    }
}

impl BundleHead<'_> {
    /// The exact length of the whole bundle's encoding with a snapshot of `snapshot_len` bytes
    /// (`None` if it does not fit in memory).
    pub fn encoded_len(&self, snapshot_len: usize) -> Option<usize> {
        let bstr = |n: usize| n.checked_add(head_len(n as u64));
        let mut total = head_len(6)
            + text_len("v")
            + head_len(BUNDLE_FORMAT)
            + text_len("object")
            + head_len(16)
            + 16
            + text_len("source")
            + text_len("lineage")
            + text_len("pending")
            + text_len("snapshot");
        total = total.checked_add(bstr(self.source.len())?)?;
        total = total.checked_add(bstr(self.lineage.len())?)?;
        total = total.checked_add(head_len(self.pending_messages.len() as u64))?;
        for m in self.pending_messages {
            total = total.checked_add(bstr(m.len())?)?;
        }
        total.checked_add(bstr(snapshot_len)?)
    }

    /// Appends the encoding up to and including the snapshot's byte-string head, with the
    /// crate's CBOR writer (shortest heads; [`BundleHead::encoded_len`] counts the same).
    fn encode_into(&self, out: &mut Vec<u8>, snapshot_len: usize) {
        let mut w = cbor::Writer::appending(std::mem::take(out));
        w.map(6);
        w.text("v");
        w.uint(BUNDLE_FORMAT);
        w.text("object");
        w.bytes(&self.object_id);
        w.text("source");
        w.text(self.source);
        w.text("lineage");
        w.bytes(self.lineage);
        w.text("pending");
        w.array(self.pending_messages.len());
        for m in self.pending_messages {
            w.bytes(m);
        }
        w.text("snapshot");
        w.bytes_head(snapshot_len);
        *out = w.finish();
    }
}

/// A bundle read in place: slices of the plaintext.
struct BundleRef<'a> {
    object_id: [u8; 16],
    source: &'a str,
    lineage: &'a [u8],
    pending: Vec<&'a [u8]>,
    snapshot: &'a [u8],
}

/// Reads a bundle encoding strictly, borrowing from it.
fn parse_bundle(bytes: &[u8]) -> Result<BundleRef<'_>, PackageError> {
    let bad = |e: cbor::Error| PackageError::Bundle(e.0);
    let mut r = cbor::Reader::new(bytes);
    r.expect_map(6).map_err(bad)?;
    r.expect_key("v").map_err(bad)?;
    let v = r.uint().map_err(bad)?;
    if v != BUNDLE_FORMAT {
        return Err(PackageError::Bundle(format!(
            "version {v} unsupported (expected {BUNDLE_FORMAT})"
        )));
    }
    r.expect_key("object").map_err(bad)?;
    let object_id = r.fixed::<16>().map_err(bad)?;
    r.expect_key("source").map_err(bad)?;
    let source = r.text().map_err(bad)?;
    r.expect_key("lineage").map_err(bad)?;
    let lineage = r.bytes().map_err(bad)?;
    r.expect_key("pending").map_err(bad)?;
    // Not preallocated: the count is untrusted, and each message takes at least one byte.
    let n = r.array().map_err(bad)?;
    let mut pending = Vec::new();
    for _ in 0..n {
        pending.push(r.bytes().map_err(bad)?);
    }
    r.expect_key("snapshot").map_err(bad)?;
    let snapshot = r.bytes().map_err(bad)?;
    r.finish().map_err(bad)?;
    Ok(BundleRef {
        object_id,
        source,
        lineage,
        pending,
        snapshot,
    })
}

/// Length of a CBOR head in shortest form.
fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn text_len(t: &str) -> usize {
    head_len(t.len() as u64) + t.len()
}

/// Number of segments of a plaintext of `len` bytes (an empty plaintext is one empty segment).
fn segment_count(len: usize) -> usize {
    len.div_ceil(SEGMENT).max(1)
}

/// Length of the package of a plaintext of `len` bytes (`None` if it does not fit in memory).
fn package_len(len: usize) -> Option<usize> {
    HEADER_LEN
        .checked_add(len)?
        .checked_add(segment_count(len).checked_mul(TAG_LEN)?)
}

/// The clear header.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Header {
    transfer: TransferId,
    enc: [u8; ENC_LEN],
    plaintext_len: usize,
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let fields: [&[u8]; 8] = [
            PACKAGE_MAGIC,
            &HPKE_SUITE[0].to_be_bytes(),
            &HPKE_SUITE[1].to_be_bytes(),
            &HPKE_SUITE[2].to_be_bytes(),
            &self.transfer.0,
            &self.enc,
            &(self.plaintext_len as u64).to_be_bytes(),
            &(SEGMENT as u32).to_be_bytes(),
        ];
        let mut at = 0;
        for f in fields {
            if let Some(dst) = out.get_mut(at..at + f.len()) {
                dst.copy_from_slice(f);
            }
            at += f.len();
        }
        out
    }

    /// Reads the header of `package` and checks that the whole package has the length it
    /// declares.
    fn parse(package: &[u8]) -> Result<Header, PackageError> {
        let header = Header::parse_fields(package)?;
        let total = package_len(header.plaintext_len).ok_or_else(|| {
            PackageError::Malformed("the declared length does not fit in memory".into())
        })?;
        if package.len() != total {
            return Err(PackageError::Malformed(format!(
                "{} bytes, the header declares {total} ({} of plaintext in {} segments)",
                package.len(),
                header.plaintext_len,
                segment_count(header.plaintext_len)
            )));
        }
        Ok(header)
    }

    /// Reads the header at the start of `bytes` (the rest is not looked at).
    fn parse_fields(package: &[u8]) -> Result<Header, PackageError> {
        let bad = PackageError::Malformed;
        let Some(mut rest) = package.first_chunk::<HEADER_LEN>().map(|h| h.as_slice()) else {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                package.len()
            )));
        };
        let magic: &[u8; 8] = take(&mut rest)?;
        if magic == PREVIOUS_MAGIC {
            return Err(bad(
                "a version 1 package (this host reads version 2 only)".into()
            ));
        }
        if magic != PACKAGE_MAGIC {
            return Err(bad("bad magic (not a migration package)".into()));
        }
        let suite: [[u8; 2]; 3] = [*take(&mut rest)?, *take(&mut rest)?, *take(&mut rest)?];
        if suite != HPKE_SUITE.map(u16::to_be_bytes) {
            return Err(bad(format!(
                "unsupported HPKE suite {} (expected {})",
                hex::encode(suite.concat()),
                hex::encode(HPKE_SUITE.map(u16::to_be_bytes).concat())
            )));
        }
        let transfer = TransferId(*take(&mut rest)?);
        let enc: [u8; ENC_LEN] = *take(&mut rest)?;
        let declared = u64::from_be_bytes(*take(&mut rest)?);
        let segment = u32::from_be_bytes(*take(&mut rest)?);
        if usize::try_from(segment).ok() != Some(SEGMENT) {
            return Err(bad(format!("segment size {segment}, expected {SEGMENT}")));
        }
        if declared > MAX_PLAINTEXT_LEN {
            return Err(bad(format!(
                "declared length {declared} above the maximum {MAX_PLAINTEXT_LEN}"
            )));
        }
        let expected = usize::try_from(declared)
            .ok()
            .filter(|&len| package_len(len).is_some());
        let Some(plaintext_len) = expected else {
            return Err(bad(format!(
                "declared length {declared} does not fit in memory"
            )));
        };
        Ok(Header {
            transfer,
            enc,
            plaintext_len,
        })
    }
}

/// The next `N` bytes of the header.
fn take<'a, const N: usize>(rest: &mut &'a [u8]) -> Result<&'a [u8; N], PackageError> {
    let (field, tail) = rest
        .split_first_chunk::<N>()
        .ok_or_else(|| PackageError::Malformed("truncated header".into()))?;
    *rest = tail;
    Ok(field)
}

/// A sealed package, as it travels: checked for structure (magic, suite, lengths), not yet
/// authenticated.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedObject {
    header: Header,
    bytes: Vec<u8>,
}

impl fmt::Debug for SealedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedObject")
            .field("transfer", &self.header.transfer)
            .field("enc", &hex::encode(self.header.enc))
            .field("plaintext_bytes", &self.header.plaintext_len)
            .field("package_bytes", &self.bytes.len())
            .finish()
    }
}

impl SealedObject {
    /// Reads package bytes (copying them); the lengths must account for every byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedObject, PackageError> {
        let header = Header::parse(bytes)?;
        Ok(SealedObject {
            header,
            bytes: bytes.to_vec(),
        })
    }

    /// [`SealedObject::from_bytes`], keeping the buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Result<SealedObject, PackageError> {
        let header = Header::parse(&bytes)?;
        Ok(SealedObject { header, bytes })
    }

    /// The package bytes (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The package bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The package bytes, for [`open_owned`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The attempt it was sealed for (in clear; also authenticated through the AAD).
    pub fn transfer(&self) -> TransferId {
        self.header.transfer
    }

    /// The HPKE encapsulated key.
    pub fn enc(&self) -> &[u8; ENC_LEN] {
        &self.header.enc
    }

    /// The length of the encoded bundle it carries, as declared.
    pub fn plaintext_len(&self) -> usize {
        self.header.plaintext_len
    }
}

/// The destination's HPKE key pair for one attempt: generated fresh per offer, held only in
/// the destination runtime's memory, dropped (and zeroed) after the package is opened.
pub struct DestinationKey {
    private: PrivateKey,
    public: HpkePublicKey,
}

impl fmt::Debug for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationKey")
            .field("public", &hex::encode(self.public_bytes()))
            .field("private", &"<redacted>")
            .finish()
    }
}

impl DestinationKey {
    /// A fresh key pair from 32 bytes of operating-system randomness (RFC 9180
    /// `DeriveKeyPair`).
    pub fn generate() -> Result<DestinationKey, PackageError> {
        let mut ikm: [u8; 32] = random()?;
        let (private, public) = HpkeKem::derive_keypair(&ikm);
        ikm.zeroize();
        Ok(DestinationKey { private, public })
    }

    /// The public key (32 bytes), for [`OfferBinding::hpke_public_key`].
    pub fn public_bytes(&self) -> Vec<u8> {
        self.public.to_bytes().to_vec()
    }
}

/// The binding digest of a package: commits to the attempt, object, challenge, channel and
/// key. Every segment's AAD starts with it.
pub fn package_aad(binding: &OfferBinding) -> [u8; 32] {
    let mut w = cbor::Writer::with_capacity(160);
    w.array(5);
    w.bytes(&binding.transfer.0);
    w.bytes(&binding.object_id);
    w.bytes(&binding.challenge.0);
    w.bytes(&binding.channel);
    w.bytes(&binding.hpke_public_key);
    Sha256::new()
        .chain_update(AAD_DOMAIN)
        .chain_update(w.finish())
        .finalize()
        .into()
}

/// The AAD of every segment: the binding digest, then the clear header.
fn segment_aad(binding: &OfferBinding, header: &[u8; HEADER_LEN]) -> [u8; SEGMENT_AAD_LEN] {
    let mut aad = [0u8; SEGMENT_AAD_LEN];
    let (digest, head) = aad.split_at_mut(DIGEST_LEN);
    digest.copy_from_slice(&package_aad(binding));
    head.copy_from_slice(header);
    aad
}

/// The nonce of segment `index`: index (u64 BE) ‖ last flag (u32 BE).
fn segment_nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    let (i, flag) = n.split_at_mut(8);
    i.copy_from_slice(&index.to_be_bytes());
    flag.copy_from_slice(&u32::from(last).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The AES-256-GCM key of a package from its HPKE context's exporter.
fn package_key(
    export: impl FnOnce(&mut [u8]) -> Result<(), hpke::HpkeError>,
) -> Result<LessSafeKey, ()> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    export(bytes.as_mut_slice()).map_err(|_| ())?;
    let key = UnboundKey::new(&AES_256_GCM, bytes.as_slice()).map_err(|_| ())?;
    Ok(LessSafeKey::new(key))
}

/// One segment of a package being sealed or opened in place.
struct Segment<'a> {
    index: u64,
    last: bool,
    data: &'a mut [u8],
    tag: &'a mut [u8; TAG_LEN],
}

/// Cuts the body (plaintext or ciphertext) and the tag table into segments; `None` if the tag
/// table does not have one slot per segment.
fn segments<'a>(body: &'a mut [u8], tags: &'a mut [u8]) -> Option<Vec<Segment<'a>>> {
    let n = segment_count(body.len());
    let (slots, rest) = tags.as_chunks_mut::<TAG_LEN>();
    if !rest.is_empty() || slots.len() != n {
        return None;
    }
    let pieces: Vec<&mut [u8]> = if body.is_empty() {
        vec![body]
    } else {
        body.chunks_mut(SEGMENT).collect()
    };
    if pieces.len() != n {
        return None;
    }
    Some(
        pieces
            .into_iter()
            .zip(slots.iter_mut())
            .enumerate()
            .map(|(i, (data, tag))| Segment {
                index: i as u64,
                last: i + 1 == n,
                data,
                tag,
            })
            .collect(),
    )
}

/// Seals one segment in place and writes its tag into its slot.
fn seal_segment(
    key: &LessSafeKey,
    aad: &[u8; SEGMENT_AAD_LEN],
    s: Segment<'_>,
) -> Result<(), PassError> {
    let tag = key
        .seal_in_place_separate_tag(segment_nonce(s.index, s.last), Aad::from(aad), s.data)
        .map_err(|_| PassError::Crypto)?;
    *s.tag = tag.as_ref().try_into().map_err(|_| PassError::Crypto)?;
    Ok(())
}

/// Opens one segment in place with the tag in its slot.
fn open_segment(
    key: &LessSafeKey,
    aad: &[u8; SEGMENT_AAD_LEN],
    s: Segment<'_>,
) -> Result<(), PassError> {
    key.open_in_place_separate_tag(
        segment_nonce(s.index, s.last),
        Aad::from(aad),
        Tag::from(*s.tag),
        s.data,
        0..,
    )
    .map(|_| ())
    .map_err(|_| PassError::Crypto)
}

/// Why a segment pass failed.
enum PassError {
    /// A segment did not seal or open.
    Crypto,
    /// A worker thread could not start or panicked.
    Worker(String),
}

/// Runs `work` on every segment: on the calling thread for one segment, else on up to
/// `min(available_parallelism, MAX_THREADS)` threads (the calling thread is one of them).
/// Every thread is joined; the first failure is the result.
fn for_each_segment<F>(segments: Vec<Segment<'_>>, work: &F) -> Result<(), PassError>
where
    F: Fn(Segment<'_>) -> Result<(), PassError> + Sync,
{
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(segments.len());
    if threads <= 1 {
        return segments.into_iter().try_for_each(work);
    }
    // Round-robin: every thread gets whole segments, and at most one more than another.
    let mut groups: Vec<Vec<Segment<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, s) in segments.into_iter().enumerate() {
        if let Some(g) = groups.get_mut(k % threads) {
            g.push(s);
        }
    }
    fn run<F>(group: Vec<Segment<'_>>, work: &F) -> Result<(), PassError>
    where
        F: Fn(Segment<'_>) -> Result<(), PassError>,
    {
        group.into_iter().try_for_each(work)
    }
    thread::scope(|scope| {
        let mut groups = groups.into_iter();
        let mine = groups.next();
        let mut outcome = Ok(());
        let mut handles = Vec::new();
        for group in groups {
            match thread::Builder::new()
                .name("sojourn-package".into())
                .spawn_scoped(scope, move || run(group, work))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    outcome = Err(PassError::Worker(format!("could not start a thread: {e}")));
                    break;
                }
            }
        }
        if outcome.is_ok() {
            if let Some(group) = mine {
                outcome = run(group, work);
            }
        }
        join_workers(handles, outcome)
    })
}

/// Joins every worker; the first failure, this thread's (`outcome`) first, is the result.
fn join_workers(
    handles: Vec<thread::ScopedJoinHandle<'_, Result<(), PassError>>>,
    mut outcome: Result<(), PassError>,
) -> Result<(), PassError> {
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(PassError::Worker("a thread panicked".into())));
        if outcome.is_ok() {
            outcome = r;
        }
    }
    outcome
}

/// Hands every segment to `keep`, in order, on the calling thread, and runs `work` on each
/// segment once it was kept, on up to `min(available_parallelism, MAX_THREADS) - 1` other
/// threads; the calling thread joins them once it has kept the last segment. Keeping (a
/// destination writing the package to one file, whose writes serialise anyway) so runs on one
/// thread beside the work instead of taking turns with it on every thread. Every thread is
/// joined; the first failure is the result, and no segment is kept after it.
fn keep_then_open<F>(
    segments: Vec<Segment<'_>>,
    keep: &dyn Fn(&Segment<'_>),
    work: &F,
) -> Result<(), PassError>
where
    F: Fn(Segment<'_>) -> Result<(), PassError> + Sync,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let helpers = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(segments.len())
        .saturating_sub(1);
    if helpers == 0 {
        return segments.into_iter().try_for_each(|s| {
            keep(&s);
            work(s)
        });
    }
    let (kept, queue) = std::sync::mpsc::channel::<Segment<'_>>();
    let queue = std::sync::Mutex::new(queue);
    let failed = AtomicBool::new(false);
    // Works on kept segments until the keeper is done and none is left.
    let drain = || -> Result<(), PassError> {
        loop {
            let next = match queue.lock() {
                Ok(q) => q.recv(),
                Err(_) => return Err(PassError::Worker("a thread panicked".into())),
            };
            let Ok(segment) = next else {
                return Ok(());
            };
            if failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Err(e) = work(segment) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    };
    thread::scope(|scope| {
        let mut outcome = Ok(());
        let mut handles = Vec::new();
        for _ in 0..helpers {
            match thread::Builder::new()
                .name("sojourn-package".into())
                .spawn_scoped(scope, drain)
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    outcome = Err(PassError::Worker(format!("could not start a thread: {e}")));
                    failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        for segment in segments {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            keep(&segment);
            if kept.send(segment).is_err() {
                break;
            }
        }
        drop(kept);
        if outcome.is_ok() {
            outcome = drain();
        }
        join_workers(handles, outcome)
    })
}

/// A hash-based expander over a 32-byte OS seed: HPKE's sender needs an infallible RNG, and
/// drawing the seed up front lets an OS failure be an error rather than a panic. Block `i`
/// is SHA-256(domain || seed || i).
struct SeededRng {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl SeededRng {
    fn new() -> Result<SeededRng, RandomnessError> {
        Ok(SeededRng {
            seed: Zeroizing::new(random()?),
            counter: 0,
            block: Zeroizing::new([0; 32]),
            used: 32,
        })
    }
    fn refill(&mut self) {
        *self.block = Sha256::new()
            .chain_update(RNG_DOMAIN)
            .chain_update(*self.seed)
            .chain_update(self.counter.to_be_bytes())
            .finalize()
            .into();
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for d in dst.iter_mut() {
            if self.used >= self.block.len() {
                self.refill();
            }
            *d = self.block.get(self.used).copied().unwrap_or(0);
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

fn wrong_object(expected: &[u8; 16], found: &[u8; 16]) -> PackageError {
    PackageError::WrongObject {
        expected: hex::encode(expected),
        found: hex::encode(found),
    }
}

/// A buffer that may hold plaintext: its bytes are zeroed when it is dropped, in bulk (a fill
/// behind an optimisation barrier; `Zeroizing<Vec<u8>>` zeroes byte by byte, about three
/// times slower on tens of MiB). Plaintext is only ever written within its length.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl std::ops::Deref for Secret {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Secret {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// A received package's bytes: on the heap, or in anonymous pages of the host's own (a
/// destination that received it so, so that the object's memory pages can be moved out of
/// it: see `ResidentObject::restore_moving` in sojourn-runtime).
#[derive(Debug)]
pub enum PackageBytes {
    /// A buffer on the heap.
    Heap(Vec<u8>),
    /// Anonymous pages of the host's own ([`sojourn_mem::AnonPages`]), exactly the package long.
    Pages(sojourn_mem::AnonPages),
}

impl std::ops::Deref for PackageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PackageBytes::Heap(bytes) => bytes,
            PackageBytes::Pages(pages) => pages,
        }
    }
}

impl PackageBytes {
    /// Overwrites every byte with zeros: for a package that may hold plaintext (segments
    /// opened as they arrived) and is being discarded.
    pub fn zeroize(&mut self) {
        match self {
            PackageBytes::Heap(bytes) => bytes.as_mut_slice().zeroize(),
            PackageBytes::Pages(pages) => pages.zeroize(),
        }
    }
}

impl From<Vec<u8>> for PackageBytes {
    fn from(bytes: Vec<u8>) -> PackageBytes {
        PackageBytes::Heap(bytes)
    }
}

/// What an [`OpenedBundle`] holds: the package's buffer, zeroed when dropped (its pages
/// are `None` once [`OpenedBundle::take_pages`] has taken them).
enum Received {
    Heap(Secret),
    Pages(Option<sojourn_mem::AnonPages>),
}

impl Received {
    fn bytes(&self) -> &[u8] {
        match self {
            Received::Heap(b) => b,
            Received::Pages(Some(p)) => p,
            Received::Pages(None) => &[],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Received::Heap(b) => b,
            Received::Pages(Some(p)) => p,
            Received::Pages(None) => &mut [],
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // The heap buffer zeroes itself; pages still held are zeroed here.
        if let Received::Pages(Some(p)) = self {
            p.zeroize();
        }
    }
}

/// Seals a bundle to the ticket's destination, building the package in one buffer.
///
/// `head` is everything but the snapshot and must be for the object the ticket's binding
/// names. `write_snapshot` is called once with the package buffer and must **append** exactly
/// `snapshot_len` bytes, the snapshot, and touch nothing before them; the buffer already has
/// the capacity (writing more would reallocate it, and the old allocation would not be
/// zeroed). A writer error or another length is
/// [`PackageError::Snapshot`]. The plaintext is then encrypted where it was written: the buffer
/// is allocated once, the snapshot written once, nothing is copied after. On any error the
/// buffer is zeroed before it is freed.
pub fn seal_with(
    ticket: &MigrationTicket,
    head: &BundleHead<'_>,
    snapshot_len: usize,
    write_snapshot: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<Vec<u8>, PackageError> {
    let setup = SealSetup::new(ticket, head, snapshot_len)?;
    let SealSetup {
        key,
        header,
        aad,
        plaintext_len,
        total,
    } = setup;

    // Zeroed on every early return: it holds plaintext until the last segment is sealed.
    // Huge pages: a fresh package buffer is touched once, whole (see `sojourn_mem`).
    let mut buf = Secret(sojourn_mem::with_capacity(total));
    buf.extend_from_slice(&header);
    head.encode_into(&mut buf, snapshot_len);
    let snapshot_at = plaintext_len - snapshot_len;
    if buf.len() != HEADER_LEN + snapshot_at {
        return Err(PackageError::Seal("bundle head length".into()));
    }
    let before = buf.len();
    write_snapshot(&mut buf).map_err(PackageError::Snapshot)?;
    if buf.len() != HEADER_LEN + plaintext_len {
        return Err(PackageError::Snapshot(format!(
            "{snapshot_len} bytes announced, the writer took the buffer from {before} to {} bytes",
            buf.len()
        )));
    }
    if buf.get(..HEADER_LEN) != Some(header.as_slice()) {
        return Err(PackageError::Snapshot(
            "the writer changed bytes before the snapshot".into(),
        ));
    }
    buf.resize(total, 0);

    let (_, rest) = buf.split_at_mut(HEADER_LEN);
    let (body, tags) = rest.split_at_mut(plaintext_len);
    let parts = segments(body, tags).ok_or_else(|| PackageError::Seal("segment layout".into()))?;
    let sealed = for_each_segment(parts, &|s| seal_segment(&key, &aad, s));
    match sealed {
        Ok(()) => Ok(std::mem::take(&mut *buf)),
        Err(PassError::Crypto) => Err(PackageError::Seal("AES-256-GCM seal failed".into())),
        Err(PassError::Worker(e)) => Err(PackageError::Worker(e)),
    }
}

/// What sealing a package starts from: the package key (HPKE, fresh), the clear header and
/// the segments' AAD, and the lengths.
struct SealSetup {
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
    aad: [u8; SEGMENT_AAD_LEN],
    plaintext_len: usize,
    total: usize,
}

impl SealSetup {
    fn new(
        ticket: &MigrationTicket,
        head: &BundleHead<'_>,
        snapshot_len: usize,
    ) -> Result<SealSetup, PackageError> {
        let binding = ticket.binding();
        if head.object_id != binding.object_id {
            return Err(wrong_object(&binding.object_id, &head.object_id));
        }
        let (plaintext_len, total) = sealed_lengths(head, snapshot_len)?;

        // The key first: the header (which every segment's AAD holds) names `enc`.
        let mut rng = SeededRng::new()?;
        let (enc, context) = hpke::setup_sender_with_rng::<ExportOnlyAead, HkdfSha256, HpkeKem>(
            &OpModeS::Base,
            ticket.hpke_key(),
            PACKAGE_INFO,
            &mut rng,
        )
        .map_err(|e| PackageError::Seal(format!("HPKE: {e}")))?;
        let key = package_key(|out| context.export(KEY_EXPORT_CONTEXT, out))
            .map_err(|()| PackageError::Seal("could not derive the package key".into()))?;
        drop(context);
        let enc: [u8; ENC_LEN] = enc
            .to_bytes()
            .as_slice()
            .try_into()
            .map_err(|_| PackageError::Seal("encapsulated key length".into()))?;
        let header = Header {
            transfer: binding.transfer,
            enc,
            plaintext_len,
        }
        .to_bytes();
        let aad = segment_aad(binding, &header);
        Ok(SealSetup {
            key,
            header,
            aad,
            plaintext_len,
            total,
        })
    }
}

/// The plaintext and package lengths of a bundle with a snapshot of `snapshot_len` bytes.
fn sealed_lengths(
    head: &BundleHead<'_>,
    snapshot_len: usize,
) -> Result<(usize, usize), PackageError> {
    let too_large = |len: u64| PackageError::TooLarge {
        len,
        max: MAX_PLAINTEXT_LEN,
    };
    let plaintext_len = head
        .encoded_len(snapshot_len)
        .ok_or_else(|| too_large(u64::MAX))?;
    if plaintext_len as u64 > MAX_PLAINTEXT_LEN {
        return Err(too_large(plaintext_len as u64));
    }
    let total = package_len(plaintext_len).ok_or_else(|| too_large(plaintext_len as u64))?;
    Ok((plaintext_len, total))
}

/// The exact length of the package [`seal_with`] or [`seal_streaming`] makes of this bundle:
/// known before anything is sealed, so a sender can announce it (`Content-Length`) and start
/// sending the first parts while later ones are sealed.
pub fn sealed_len(head: &BundleHead<'_>, snapshot_len: usize) -> Result<usize, PackageError> {
    sealed_lengths(head, snapshot_len).map(|(_, total)| total)
}

/// Where the snapshot's first byte lies in the package [`seal_with`] or [`seal_streaming`]
/// make of this bundle: after the clear header and the bundle's head, in the plaintext that
/// an opened package holds where its ciphertext was. A sealer lays the snapshot out for that
/// offset (`SnapshotWriter::align_pages_at` in `sojourn-runtime`), so that a destination
/// which receives the package into page-aligned memory finds the object's memory pages on
/// page boundaries there. `None` if the bundle does not fit in memory.
pub fn snapshot_offset(head: &BundleHead<'_>, snapshot_len: usize) -> Option<usize> {
    let plaintext_len = head.encoded_len(snapshot_len)?;
    HEADER_LEN.checked_add(plaintext_len.checked_sub(snapshot_len)?)
}

/// [`seal_with`], handing the package out in parts as they are sealed, so that sending can
/// overlap sealing. The concatenation of the parts is byte for byte a package
/// [`seal_with`] could have made (same layout, opened by [`open_owned`]): the clear header,
/// then each segment's ciphertext as soon as the snapshot writer has written past it (the
/// last one once the whole snapshot is written), then the tag table.
///
/// `write_snapshot` is called once and must pass exactly `snapshot_len` bytes, the snapshot,
/// to the function it is given, in order and in pieces of any size. `emit` receives every
/// part in order as it is ready; the same parts are returned at the end, for a sender that
/// must send the package again. A writer error or another length is
/// [`PackageError::Snapshot`], and then the parts emitted so far do not make a package: a
/// receiver must not be told that it ended. Plaintext lives only in the segment being filled,
/// which is zeroed if sealing stops early.
pub fn seal_streaming(
    ticket: &MigrationTicket,
    head: &BundleHead<'_>,
    snapshot_len: usize,
    write_snapshot: impl FnOnce(&mut dyn FnMut(&[u8])) -> Result<(), String>,
    emit: &mut dyn FnMut(Arc<Vec<u8>>),
) -> Result<Vec<Arc<Vec<u8>>>, PackageError> {
    let mut parts = Vec::new();
    seal_streaming_with(
        ticket,
        head,
        snapshot_len,
        write_snapshot,
        &mut Vec::with_capacity,
        &mut |part: Vec<u8>| {
            let part = Arc::new(part);
            emit(Arc::clone(&part));
            parts.push(part);
        },
    )?;
    Ok(parts)
}

/// [`seal_streaming`] for a sender that keeps no part: each part goes to `emit` and nowhere
/// else, and each segment is sealed in a buffer from `buffer(capacity)` (an empty vector with
/// at least that capacity, which may be one an earlier part came in and the sender is done
/// with; a sender that recycles them touches no fresh memory for a large package). The
/// same bytes as [`seal_streaming`], part for part.
pub fn seal_streaming_with(
    ticket: &MigrationTicket,
    head: &BundleHead<'_>,
    snapshot_len: usize,
    write_snapshot: impl FnOnce(&mut dyn FnMut(&[u8])) -> Result<(), String>,
    buffer: &mut dyn FnMut(usize) -> Vec<u8>,
    emit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), PackageError> {
    seal_streaming_in(
        SendOrder::Layout,
        ticket,
        head,
        snapshot_len,
        write_snapshot,
        buffer,
        emit,
    )
}

/// [`seal_streaming_with`], the parts in `order`: with [`SendOrder::TagAfterSegment`] each
/// segment's part ends with its tag (the buffers asked for have room for it) and no tag
/// table follows, so that a receiver can open each segment as it arrives
/// ([`SegmentOpener`]). The bytes are the package's, in another order
/// ([`TagAfterSegment`] says where each belongs).
pub fn seal_streaming_in(
    order: SendOrder,
    ticket: &MigrationTicket,
    head: &BundleHead<'_>,
    snapshot_len: usize,
    write_snapshot: impl FnOnce(&mut dyn FnMut(&[u8])) -> Result<(), String>,
    buffer: &mut dyn FnMut(usize) -> Vec<u8>,
    emit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), PackageError> {
    let setup = SealSetup::new(ticket, head, snapshot_len)?;
    let mut out = |part: Vec<u8>| emit(part);
    out(setup.header.to_vec());
    let first = fresh(buffer, SEGMENT.min(setup.plaintext_len) + order.tag_room());
    let mut filler = SegmentFiller {
        order,
        key: &setup.key,
        aad: &setup.aad,
        plaintext_len: setup.plaintext_len,
        written: 0,
        index: 0,
        current: Secret(first),
        tags: Vec::with_capacity(segment_count(setup.plaintext_len) * TAG_LEN),
        error: None,
        buffer,
        out: &mut out,
    };
    let mut head_bytes = Secret(Vec::with_capacity(setup.plaintext_len - snapshot_len));
    head.encode_into(&mut head_bytes, snapshot_len);
    if head_bytes.len() != setup.plaintext_len - snapshot_len {
        return Err(PackageError::Seal("bundle head length".into()));
    }
    filler.put(&head_bytes);
    write_snapshot(&mut |bytes: &[u8]| filler.put(bytes)).map_err(PackageError::Snapshot)?;
    if let Some(e) = filler.error.take() {
        return Err(e);
    }
    if filler.written != setup.plaintext_len
        || filler.index != segment_count(setup.plaintext_len) as u64
    {
        return Err(PackageError::Snapshot(format!(
            "{snapshot_len} bytes announced, the writer passed {}",
            filler
                .written
                .saturating_sub(setup.plaintext_len - snapshot_len)
        )));
    }
    let tags = std::mem::take(&mut filler.tags);
    drop(filler);
    if order == SendOrder::Layout {
        out(tags);
    }
    Ok(())
}

/// A buffer from `buffer`, made empty (whatever it held before is overwritten, not read).
fn fresh(buffer: &mut dyn FnMut(usize) -> Vec<u8>, capacity: usize) -> Vec<u8> {
    let mut v = buffer(capacity);
    v.clear();
    v.reserve(capacity);
    v
}

/// Cuts the plaintext, as it is written, into segments, and seals and emits each one when it
/// is complete (the last one when the whole plaintext is in).
struct SegmentFiller<'a> {
    order: SendOrder,
    key: &'a LessSafeKey,
    aad: &'a [u8; SEGMENT_AAD_LEN],
    plaintext_len: usize,
    written: usize,
    index: u64,
    current: Secret,
    tags: Vec<u8>,
    /// The first failure; everything after it is ignored.
    error: Option<PackageError>,
    buffer: &'a mut dyn FnMut(usize) -> Vec<u8>,
    out: &'a mut dyn FnMut(Vec<u8>),
}

impl SegmentFiller<'_> {
    fn put(&mut self, mut bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if bytes.len() > self.plaintext_len - self.written {
            self.error = Some(PackageError::Snapshot(format!(
                "the writer passed more than the {} bytes announced",
                self.plaintext_len
            )));
            return;
        }
        // An empty plaintext is one empty segment, sealed when nothing is left to write.
        loop {
            let room = SEGMENT - self.current.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.extend_from_slice(now);
            self.written += now.len();
            bytes = rest;
            let complete = self.written == self.plaintext_len;
            if self.current.len() == SEGMENT || complete {
                if complete && self.index == segment_count(self.plaintext_len) as u64 {
                    return; // the last segment is already out (empty writes after the end)
                }
                self.seal_current(complete);
                if self.error.is_some() {
                    return;
                }
            }
            if bytes.is_empty() {
                return;
            }
        }
    }

    fn seal_current(&mut self, last: bool) {
        let next = if last {
            Vec::new()
        } else {
            fresh(
                &mut *self.buffer,
                SEGMENT.min(self.plaintext_len - self.written) + self.order.tag_room(),
            )
        };
        let mut data = std::mem::replace(&mut self.current, Secret(next));
        let mut tag = [0u8; TAG_LEN];
        let s = Segment {
            index: self.index,
            last,
            data: data.as_mut_slice(),
            tag: &mut tag,
        };
        if seal_segment(self.key, self.aad, s).is_err() {
            self.error = Some(PackageError::Seal("AES-256-GCM seal failed".into()));
            return;
        }
        self.index += 1;
        match self.order {
            SendOrder::Layout => self.tags.extend_from_slice(&tag),
            SendOrder::TagAfterSegment => data.extend_from_slice(&tag),
        }
        // Ciphertext now: nothing to zero.
        (self.out)(std::mem::take(&mut data.0));
    }
}

/// [`seal_with`] of a whole [`ObjectBundle`] (its snapshot is copied into the package
/// buffer once).
pub fn seal_to_bytes(
    ticket: &MigrationTicket,
    bundle: &ObjectBundle,
) -> Result<Vec<u8>, PackageError> {
    seal_with(ticket, &bundle.head(), bundle.snapshot.len(), |buf| {
        buf.extend_from_slice(&bundle.snapshot);
        Ok(())
    })
}

/// [`seal_to_bytes`], as a [`SealedObject`] (the same bytes, not copied).
pub fn seal(ticket: &MigrationTicket, bundle: &ObjectBundle) -> Result<SealedObject, PackageError> {
    SealedObject::from_vec(seal_to_bytes(ticket, bundle)?)
}

/// An opened package: the decrypted bundle, read in place in the received buffer. It lends the
/// snapshot, lineage and messages out of that buffer and zeroes the whole buffer when dropped.
pub struct OpenedBundle {
    buf: Received,
    opening: PackageOpening,
    object_id: [u8; 16],
    source: String,
    lineage: Range<usize>,
    pending: Vec<Range<usize>>,
    snapshot: Range<usize>,
}

impl fmt::Debug for OpenedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedBundle")
            .field("object_id", &hex::encode(self.object_id))
            .field("source", &self.source)
            .field("snapshot_bytes", &self.snapshot.len())
            .field("lineage_bytes", &self.lineage.len())
            .field("pending_messages", &self.pending.len())
            .finish()
    }
}

/// How to open a package's ciphertext again without the destination's HPKE private key: the
/// package key and the segments' associated data, for a destination that keeps the package
/// as it arrived (its store holds this, sealed, beside the bytes). The layout is the STREAM of
/// the module docs: [`HEADER_LEN`] clear bytes, `plaintext_len` bytes in segments of
/// [`SEGMENT`] bytes, one tag per segment.
pub struct PackageOpening {
    /// The package's AES-256-GCM key.
    pub key: Zeroizing<[u8; 32]>,
    /// Every segment's associated data.
    pub aad: Vec<u8>,
    /// The bundle's length.
    pub plaintext_len: usize,
}

impl fmt::Debug for PackageOpening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageOpening")
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl OpenedBundle {
    fn slice(&self, r: &Range<usize>) -> &[u8] {
        self.buf.bytes().get(r.clone()).unwrap_or_default()
    }

    /// How to open the package's bytes as they arrived again (see [`PackageOpening`]).
    pub fn opening(&self) -> &PackageOpening {
        &self.opening
    }

    /// The whole bundle (the decrypted plaintext), which the other accessors lend parts of.
    pub fn plaintext(&self) -> &[u8] {
        self.buf
            .bytes()
            .get(HEADER_LEN..HEADER_LEN + self.opening.plaintext_len)
            .unwrap_or_default()
    }

    /// The object (checked to be the binding's).
    pub fn object_id(&self) -> [u8; 16] {
        self.object_id
    }

    /// The source host, as it names itself.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lineage export.
    pub fn lineage(&self) -> &[u8] {
        self.slice(&self.lineage)
    }

    /// The pending messages, in order.
    pub fn pending_messages(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.pending.iter().map(|r| self.slice(r))
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &[u8] {
        self.slice(&self.snapshot)
    }

    /// The buffer itself (the whole decrypted package), to be reused by the caller: it is no
    /// longer zeroed on drop, which the caller takes on (overwriting it, as a restored object's
    /// first checkpoint does).
    /// A package opened in pages of its own gives an empty buffer (see
    /// [`OpenedBundle::take_pages`]).
    pub fn into_buffer(mut self) -> Vec<u8> {
        match &mut self.buf {
            Received::Heap(b) => std::mem::take(&mut **b),
            Received::Pages(_) => Vec::new(),
        }
    }

    /// Whether the package was opened in anonymous pages of the host's own (see
    /// [`OpenedBundle::take_pages`]).
    pub fn in_pages(&self) -> bool {
        matches!(self.buf, Received::Pages(Some(_)))
    }

    /// The pages the package was opened in, and where the snapshot lies in them, for a
    /// restore that moves the object's memory pages out of them (which overwrites them from
    /// the snapshot on: read the lineage and messages first); `None` for a package opened on
    /// the heap. Taken, they are no longer zeroed when dropped (the caller takes that on),
    /// and this bundle lends nothing more (every part is empty).
    pub fn take_pages(&mut self) -> Option<(sojourn_mem::AnonPages, Range<usize>)> {
        match &mut self.buf {
            Received::Pages(pages) => pages.take().map(|p| (p, self.snapshot.clone())),
            Received::Heap(_) => None,
        }
    }

    /// An owned [`ObjectBundle`]: the lineage and messages are copied, the snapshot is moved
    /// to the front of the buffer (no new allocation), which becomes the bundle's snapshot and
    /// is then no longer zeroed on drop.
    pub fn into_bundle(mut self) -> ObjectBundle {
        let lineage = self.lineage().to_vec();
        let pending_messages = self.pending_messages().map(<[u8]>::to_vec).collect();
        let snapshot = match &mut self.buf {
            Received::Heap(b) => {
                let mut snapshot = std::mem::take(&mut **b);
                snapshot.truncate(self.snapshot.end);
                snapshot.drain(..self.snapshot.start.min(self.snapshot.end));
                snapshot
            }
            Received::Pages(_) => self.snapshot().to_vec(),
        };
        ObjectBundle {
            object_id: self.object_id,
            snapshot,
            lineage,
            pending_messages,
            source: std::mem::take(&mut self.source),
        }
    }
}

/// Opens a package on the destination with the attempt's key and binding, in place: the
/// segments are decrypted where they are (in parallel), and the bundle is read from the
/// plaintext without copying. Fails unless the package was sealed to this key for exactly
/// this binding's transfer, object, challenge and channel, is complete and in order, and
/// carries a well-formed bundle of the binding's object. The buffer is zeroed if opening
/// fails, and when the [`OpenedBundle`] is dropped.
pub fn open_owned(
    key: &DestinationKey,
    binding: &OfferBinding,
    package: Vec<u8>,
) -> Result<OpenedBundle, PackageError> {
    open_owned_keeping(key, binding, package, None)
}

/// Where [`open_owned_keeping`] hands the package's bytes: `(offset in the package, bytes)`,
/// called on the thread that opens it.
pub type KeepBytes<'a> = dyn Fn(u64, &[u8]) + 'a;

/// [`open_owned`] that first hands every byte of the package as it arrived to `keep`, as
/// `(offset in the package, bytes)`, all on the calling thread: the header and the tag table
/// once the header and the key agreement have been checked, then each segment's ciphertext
/// in order, each before it is decrypted in place (by other threads, while the next segments
/// are handed over). A destination writes them to disk there, to keep the package as its
/// durable image ([`OpenedBundle::opening`] opens it again), while the segments are being
/// opened. Nothing is handed over for a package that is not for this binding's transfer and
/// key; a package that does not open may have been handed over in part.
pub fn open_owned_keeping(
    key: &DestinationKey,
    binding: &OfferBinding,
    package: impl Into<PackageBytes>,
    keep: Option<&KeepBytes<'_>>,
) -> Result<OpenedBundle, PackageError> {
    let mut buf = match package.into() {
        PackageBytes::Heap(bytes) => Received::Heap(Secret(bytes)),
        PackageBytes::Pages(pages) => Received::Pages(Some(pages)),
    };
    let header = Header::parse(buf.bytes())?;
    let ReceiverKey {
        aead,
        key_bytes,
        aad,
        ..
    } = ReceiverKey::new(key, binding, buf.bytes())?;

    let (head, rest) = buf.bytes_mut().split_at_mut(HEADER_LEN);
    let (body, tags) = rest.split_at_mut(header.plaintext_len);
    if let Some(keep) = keep {
        keep(0, head);
        keep((HEADER_LEN + header.plaintext_len) as u64, tags);
    }
    let parts =
        segments(body, tags).ok_or_else(|| PackageError::Malformed("segment layout".into()))?;
    let open = |s: Segment<'_>| open_segment(&aead, &aad, s);
    let opened = match keep {
        None => for_each_segment(parts, &open),
        Some(keep) => keep_then_open(
            parts,
            &|s| keep(HEADER_LEN as u64 + s.index * SEGMENT as u64, s.data),
            &open,
        ),
    };
    match opened {
        Ok(()) => {}
        Err(PassError::Crypto) => return Err(PackageError::Open),
        Err(PassError::Worker(e)) => return Err(PackageError::Worker(e)),
    }

    read_opened(
        buf,
        binding,
        PackageOpening {
            key: key_bytes,
            aad: aad.to_vec(),
            plaintext_len: header.plaintext_len,
        },
    )
}

/// The package key of a package whose header is at the start of `bytes`, for this
/// destination key and binding: checked that the header names the binding's transfer and
/// that the key is the binding's.
struct ReceiverKey {
    header: Header,
    received: [u8; HEADER_LEN],
    aead: LessSafeKey,
    key_bytes: Zeroizing<[u8; 32]>,
    aad: [u8; SEGMENT_AAD_LEN],
}

impl ReceiverKey {
    fn new(
        key: &DestinationKey,
        binding: &OfferBinding,
        bytes: &[u8],
    ) -> Result<ReceiverKey, PackageError> {
        let header = Header::parse_fields(bytes)?;
        if header.transfer != binding.transfer {
            return Err(PackageError::WrongTransfer);
        }
        if key.public_bytes() != binding.hpke_public_key {
            return Err(PackageError::WrongKey);
        }
        let enc = EncappedKey::from_bytes(&header.enc)
            .map_err(|_| PackageError::Malformed("encapsulated key".into()))?;
        // A failed decapsulation (e.g. a low-order point) is an authentication failure too.
        let context = hpke::setup_receiver::<ExportOnlyAead, HkdfSha256, HpkeKem>(
            &OpModeR::Base,
            &key.private,
            &enc,
            PACKAGE_INFO,
        )
        .map_err(|_| PackageError::Open)?;
        let mut key_bytes = Zeroizing::new([0u8; 32]);
        context
            .export(KEY_EXPORT_CONTEXT, key_bytes.as_mut_slice())
            .map_err(|_| PackageError::Open)?;
        drop(context);
        let aead = package_key(|out| {
            out.copy_from_slice(key_bytes.as_slice());
            Ok(())
        })
        .map_err(|()| PackageError::Open)?;
        // The header as received (`parse_fields` accepted exactly these bytes).
        let received: [u8; HEADER_LEN] = bytes
            .first_chunk()
            .copied()
            .ok_or_else(|| PackageError::Malformed("truncated header".into()))?;
        let aad = segment_aad(binding, &received);
        Ok(ReceiverKey {
            header,
            received,
            aead,
            key_bytes,
            aad,
        })
    }
}

/// The bundle of a package whose every segment has been opened in `buf`.
fn read_opened(
    buf: Received,
    binding: &OfferBinding,
    opening: PackageOpening,
) -> Result<OpenedBundle, PackageError> {
    let plaintext = buf
        .bytes()
        .get(HEADER_LEN..HEADER_LEN + opening.plaintext_len)
        .ok_or_else(|| PackageError::Malformed("segment layout".into()))?;
    let b = parse_bundle(plaintext)?;
    if b.object_id != binding.object_id {
        return Err(wrong_object(&binding.object_id, &b.object_id));
    }
    let at = |part: &[u8]| -> Result<Range<usize>, PackageError> {
        let start = part
            .as_ptr()
            .addr()
            .checked_sub(buf.bytes().as_ptr().addr())
            .ok_or_else(|| PackageError::Bundle("field outside the bundle".into()))?;
        Ok(start..start + part.len())
    };
    let lineage = at(b.lineage)?;
    let pending = b.pending.iter().map(|m| at(m)).collect::<Result<_, _>>()?;
    let snapshot = at(b.snapshot)?;
    let (object_id, source) = (b.object_id, b.source.to_owned());
    Ok(OpenedBundle {
        buf,
        opening,
        object_id,
        source,
        lineage,
        pending,
        snapshot,
    })
}

/// Open a package on the destination with the attempt's key and binding ([`open_owned`] of a
/// copy of its bytes, as an owned bundle).
pub fn open(
    key: &DestinationKey,
    binding: &OfferBinding,
    sealed: &SealedObject,
) -> Result<ObjectBundle, PackageError> {
    open_owned(key, binding, sealed.bytes.clone()).map(OpenedBundle::into_bundle)
}

/// The order in which a package's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendOrder {
    /// As the package lies (the layout above): the tag table after the last segment.
    #[default]
    Layout,
    /// Each segment's tag right after the segment, no tag table: a receiver can authenticate
    /// and decrypt each segment as soon as it has arrived ([`SegmentOpener`]), and puts the
    /// tags back in the layout ([`TagAfterSegment`]).
    TagAfterSegment,
}

impl SendOrder {
    /// Room for a tag after each segment's bytes.
    fn tag_room(self) -> usize {
        match self {
            SendOrder::Layout => 0,
            SendOrder::TagAfterSegment => TAG_LEN,
        }
    }
}

/// Where each byte of a package sent in [`SendOrder::TagAfterSegment`] belongs in the
/// package's layout: the header where it is, segment `i` at its place, and its tag, which
/// follows it, in the tag table. The same length, another order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagAfterSegment {
    plaintext_len: usize,
}

impl TagAfterSegment {
    /// The order of the package whose clear header is at the start of `header` (which
    /// comes first in either order). The header's fields are checked as when the package is
    /// opened; nothing is decrypted.
    pub fn of_header(header: &[u8]) -> Result<TagAfterSegment, PackageError> {
        Header::parse_fields(header).map(|h| TagAfterSegment {
            plaintext_len: h.plaintext_len,
        })
    }

    /// The package's length (in either order).
    pub fn package_len(&self) -> usize {
        package_len(self.plaintext_len).unwrap_or(usize::MAX)
    }

    /// How many segments (and tags) it has.
    pub fn segments(&self) -> usize {
        segment_count(self.plaintext_len)
    }

    /// Where segment `index` lies in the layout (an empty range for the one segment of an
    /// empty bundle); `None` past the last.
    pub fn segment(&self, index: usize) -> Option<Range<usize>> {
        (index < self.segments()).then(|| {
            let start = (index * SEGMENT).min(self.plaintext_len);
            HEADER_LEN + start..HEADER_LEN + ((index + 1) * SEGMENT).min(self.plaintext_len)
        })
    }

    /// How many bytes of the sent order come up to the end of tag `index` (once that many
    /// have arrived, segment `index` and its tag are in); `None` past the last.
    pub fn sent_through(&self, index: usize) -> Option<usize> {
        let seg = self.segment(index)?;
        Some(HEADER_LEN + index * (SEGMENT + TAG_LEN) + seg.len() + TAG_LEN)
    }

    /// Where tag `index` lies in the layout; `None` past the last.
    pub fn tag(&self, index: usize) -> Option<Range<usize>> {
        (index < self.segments()).then(|| {
            let at = HEADER_LEN + self.plaintext_len + index * TAG_LEN;
            at..at + TAG_LEN
        })
    }

    /// Where byte `at` of the sent order belongs in the layout, and how many bytes from there
    /// on are consecutive in both (at least one); `None` past the package's end.
    pub fn place(&self, at: usize) -> Option<(usize, usize)> {
        if at < HEADER_LEN {
            return Some((at, HEADER_LEN - at));
        }
        let rel = at - HEADER_LEN;
        let index = rel / (SEGMENT + TAG_LEN);
        let within = rel % (SEGMENT + TAG_LEN);
        let segment = self.segment(index)?;
        let seg_len = segment.len();
        if within < seg_len {
            return Some((segment.start + within, seg_len - within));
        }
        let tag = self.tag(index)?;
        let k = within - seg_len;
        (k < TAG_LEN).then(|| (tag.start + k, TAG_LEN - k))
    }

    /// The package in its layout, from its bytes in this order (a copy).
    pub fn to_layout(sent: &[u8]) -> Result<Vec<u8>, PackageError> {
        let order = TagAfterSegment::of_header(sent)?;
        if sent.len() != order.package_len() {
            return Err(PackageError::Malformed(format!(
                "{} bytes, the header declares {}",
                sent.len(),
                order.package_len()
            )));
        }
        let mut out = vec![0u8; sent.len()];
        let mut at = 0;
        while at < sent.len() {
            let (to, n) = order
                .place(at)
                .ok_or_else(|| PackageError::Malformed("segment layout".into()))?;
            let n = n.min(sent.len() - at);
            match (out.get_mut(to..to + n), sent.get(at..at + n)) {
                (Some(dst), Some(src)) => dst.copy_from_slice(src),
                _ => return Err(PackageError::Malformed("segment layout".into())),
            }
            at += n;
        }
        Ok(out)
    }
}

/// Opens a package's segments one by one, in order, as they arrive (each with its tag: a
/// package sent in [`SendOrder::TagAfterSegment`]), so that a destination decrypts during
/// the transfer instead of after it. Made from the clear header with the attempt's key and
/// binding, as [`open_owned`] starts; every segment is authenticated as it is decrypted in
/// place, and [`open_opened`] then reads the bundle from the package without decrypting it
/// again, once every segment has been opened here.
pub struct SegmentOpener {
    order: TagAfterSegment,
    received: [u8; HEADER_LEN],
    aead: LessSafeKey,
    key_bytes: Zeroizing<[u8; 32]>,
    aad: [u8; SEGMENT_AAD_LEN],
    object_id: [u8; 16],
    /// [`package_aad`] of the binding it was made for.
    binding: [u8; 32],
    /// The tags of the segments opened so far, in order.
    tags: Vec<u8>,
    /// A segment did not open: nothing more is opened.
    failed: bool,
}

impl fmt::Debug for SegmentOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentOpener")
            .field("segments", &self.order.segments())
            .field("opened", &self.opened())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SegmentOpener {
    /// From the package's clear header (at the start of `header`): the same checks as
    /// [`open_owned`] makes of it (the binding's transfer, the binding's key, the key
    /// agreement).
    pub fn new(
        key: &DestinationKey,
        binding: &OfferBinding,
        header: &[u8],
    ) -> Result<SegmentOpener, PackageError> {
        let r = ReceiverKey::new(key, binding, header)?;
        let order = TagAfterSegment {
            plaintext_len: r.header.plaintext_len,
        };
        Ok(SegmentOpener {
            order,
            received: r.received,
            aead: r.aead,
            key_bytes: r.key_bytes,
            aad: r.aad,
            object_id: binding.object_id,
            binding: package_aad(binding),
            tags: Vec::with_capacity(order.segments() * TAG_LEN),
            failed: false,
        })
    }

    /// Where the package's bytes belong (its length and segments).
    pub fn order(&self) -> TagAfterSegment {
        self.order
    }

    /// How many segments have been opened.
    pub fn opened(&self) -> usize {
        self.tags.len() / TAG_LEN
    }

    /// Whether every segment has been opened.
    pub fn is_done(&self) -> bool {
        !self.failed && self.opened() == self.order.segments()
    }

    /// Authenticates and decrypts the next segment in place: `data` is its ciphertext (all
    /// of it, as [`TagAfterSegment::segment`] places it) and `tag` its tag. An error for a
    /// segment that does not open (then nothing more opens here, and what `data` holds is
    /// unspecified: the package is refused), one of another length, or one past the last.
    pub fn open_next(&mut self, data: &mut [u8], tag: &[u8]) -> Result<(), PackageError> {
        let index = self.opened();
        let expected = self.order.segment(index).map(|r| r.len());
        let tag: Option<[u8; TAG_LEN]> = tag.try_into().ok();
        let (false, Some(len), Some(tag)) = (self.failed, expected, tag) else {
            self.failed = true;
            return Err(PackageError::Open);
        };
        if data.len() != len {
            self.failed = true;
            return Err(PackageError::Malformed(format!(
                "segment {index}: {} bytes, expected {len}",
                data.len()
            )));
        }
        let mut slot = tag;
        let s = Segment {
            index: index as u64,
            last: index + 1 == self.order.segments(),
            data,
            tag: &mut slot,
        };
        if open_segment(&self.aead, &self.aad, s).is_err() {
            self.failed = true;
            return Err(PackageError::Open);
        }
        self.tags.extend_from_slice(&tag);
        Ok(())
    }
}

/// The bundle of a package whose every segment `opener` has opened in place (in its layout:
/// the header, the decrypted segments, the tag table), read as [`open_owned`] reads it. The
/// package must be the one the opener was made for (the same header) and its tag table the
/// tags the opener checked, so that the package kept as it arrived opens again with
/// [`OpenedBundle::opening`]. The buffer is zeroed if this fails, and when the
/// [`OpenedBundle`] is dropped.
pub fn open_opened(
    binding: &OfferBinding,
    package: impl Into<PackageBytes>,
    opener: SegmentOpener,
) -> Result<OpenedBundle, PackageError> {
    let buf = match package.into() {
        PackageBytes::Heap(bytes) => Received::Heap(Secret(bytes)),
        PackageBytes::Pages(pages) => Received::Pages(Some(pages)),
    };
    if !opener.is_done() {
        return Err(PackageError::Open);
    }
    if opener.object_id != binding.object_id {
        return Err(wrong_object(&binding.object_id, &opener.object_id));
    }
    if opener.binding != package_aad(binding) {
        return Err(PackageError::Open);
    }
    let header = Header::parse(buf.bytes())?;
    let tags = opener
        .order
        .tag(0)
        .map(|first| first.start..first.start + opener.tags.len());
    if buf.bytes().get(..HEADER_LEN) != Some(opener.received.as_slice())
        || header.plaintext_len != opener.order.plaintext_len
        || tags.and_then(|t| buf.bytes().get(t)) != Some(opener.tags.as_slice())
    {
        return Err(PackageError::Open);
    }
    read_opened(
        buf,
        binding,
        PackageOpening {
            key: opener.key_bytes,
            aad: opener.aad.to_vec(),
            plaintext_len: header.plaintext_len,
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn bundle() -> ObjectBundle {
        ObjectBundle {
            object_id: [3; 16],
            snapshot: (0..70_000u32).map(|i| i as u8).collect(),
            lineage: vec![9; 300],
            pending_messages: vec![b"a".to_vec(), vec![1; 30]],
            source: "https://src.example".into(),
        }
    }

    #[test]
    fn bundle_encoding_has_its_computed_length_and_reads_back() {
        let b = bundle();
        let bytes = b.to_bytes();
        assert_eq!(Some(bytes.len()), b.head().encoded_len(b.snapshot.len()));
        assert_eq!(ObjectBundle::from_bytes(&bytes).unwrap(), b);
        for len in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(ObjectBundle::from_bytes(&bytes[..len]).is_err());
        }
        let mut longer = bytes;
        longer.push(0);
        assert!(ObjectBundle::from_bytes(&longer).is_err());
        // Every CBOR head size.
        for n in [0usize, 23, 24, 255, 256, 65_535, 65_536] {
            let mut x = bundle();
            x.snapshot = vec![7; n];
            x.lineage = vec![8; n];
            let bytes = x.to_bytes();
            assert_eq!(Some(bytes.len()), x.head().encoded_len(n), "{n}");
            assert_eq!(ObjectBundle::from_bytes(&bytes).unwrap(), x);
        }
    }

    #[test]
    fn header_has_its_documented_layout() {
        let h = Header {
            transfer: TransferId([5; 16]),
            enc: [6; ENC_LEN],
            plaintext_len: 40,
        };
        let head = h.to_bytes();
        assert_eq!(HEADER_LEN, 74);
        assert_eq!(&head[..8], b"SJMIGPK2");
        assert_eq!(&head[8..14], &[0, 0x20, 0, 1, 0xff, 0xff]);
        assert_eq!(&head[14..30], &[5; 16]);
        assert_eq!(&head[30..62], &[6; 32]);
        assert_eq!(&head[62..70], &40u64.to_be_bytes());
        assert_eq!(&head[70..74], &(1u32 << 20).to_be_bytes());
        let mut package = head.to_vec();
        package.resize(HEADER_LEN + 40 + TAG_LEN, 0);
        assert!(Header::parse(&package) == Ok(h));
        assert!(Header::parse(&package[..package.len() - 1]).is_err());
        package.push(0);
        assert!(Header::parse(&package).is_err());
    }

    #[test]
    fn segment_counts_and_package_lengths() {
        for (len, n) in [
            (0, 1),
            (1, 1),
            (SEGMENT - 1, 1),
            (SEGMENT, 1),
            (SEGMENT + 1, 2),
            (3 * SEGMENT + 5, 4),
        ] {
            assert_eq!(segment_count(len), n, "{len}");
            assert_eq!(package_len(len), Some(HEADER_LEN + len + 16 * n));
        }
        assert_eq!(package_len(usize::MAX), None);
    }

    /// The segment layer alone, at exact plaintext lengths (a bundle is never shorter than
    /// its head, so 0 and 1 are reachable only here).
    #[test]
    fn segments_seal_and_open_at_every_boundary() {
        let key = || LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
        let aad = [1u8; SEGMENT_AAD_LEN];
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let n = segment_count(len);
            let mut buf = plain.clone();
            buf.resize(len + n * TAG_LEN, 0);
            let (body, tags) = buf.split_at_mut(len);
            let k = key();
            let parts = segments(body, tags).unwrap();
            assert_eq!(parts.len(), n);
            assert!(parts.last().unwrap().last);
            assert!(parts.iter().rev().skip(1).all(|s| !s.last));
            let r = for_each_segment(parts, &|s| seal_segment(&k, &aad, s));
            assert!(r.is_ok());
            if len > 0 {
                assert_ne!(&buf[..len], plain.as_slice());
            }
            let (body, tags) = buf.split_at_mut(len);
            let r = for_each_segment(segments(body, tags).unwrap(), &|s| {
                open_segment(&k, &aad, s)
            });
            assert!(r.is_ok(), "{len}");
            assert_eq!(&buf[..len], plain.as_slice(), "{len}");
        }
    }

    #[test]
    fn nonces_carry_index_and_last_flag() {
        assert_eq!(
            segment_nonce(0x0102, true).as_ref(),
            &[0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1]
        );
        assert_eq!(
            segment_nonce(7, false).as_ref(),
            &[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0]
        );
    }
}
