//! The migration package: the object, sealed with HPKE to the appraised destination's key.
//!
//! HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305,
//! single shot:
//!
//! - `pkR` = the key in the [`MigrationTicket`] (only [`crate::appraise::appraise_destination`]
//!   makes one, so only a key that verified evidence binds is ever used);
//! - `info` = [`PACKAGE_INFO`];
//! - `aad` = SHA-256(`"sojourn/migrate/package-aad/v1" || 0x00 ||` canonical CBOR
//!   `[transfer, object_id, challenge, channel, hpke_public_key]`), so a package opens only
//!   under the binding of the attempt it was sealed for: not in another transfer, not for
//!   another challenge, not on another TLS connection (the exporter value is known only to the
//!   two TLS endpoints, which also authenticates the sender as the source's end of the channel);
//! - plaintext = [`ObjectBundle::to_bytes`].
//!
//! # Sealed package layout ([`SealedObject::to_bytes`], big-endian)
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `SJMIGPK1` |
//! | 2, 2, 2 | KEM, KDF, AEAD ids (0x0020, 0x0001, 0x0003) |
//! | 16 | transfer id (in clear, for routing; also bound by the AAD) |
//! | 2 | length of `enc` (32) |
//! | 32 | `enc`, the encapsulated key |
//! | 8 | length of the ciphertext |
//! | n | ciphertext (plaintext length + 16-byte tag) |
//!
//! # Bundle encoding (version 1)
//!
//! Deterministic CBOR map: `{ "v": 1, "object": bstr(16), "source": tstr, "lineage": bstr,
//! "pending": [bstr…], "snapshot": bstr }` (keys in canonical order), read back strictly.
//!
//! Single shot and in place: sealing needs the bundle plus one encoding of it (which becomes the
//! ciphertext); opening needs the ciphertext plus one decrypted copy, then the bundle. 64 MiB
//! bundles are fine.

use std::fmt;

use hpke::aead::{AeadTag, ChaCha20Poly1305};
use hpke::inout::InOutBuf;
use hpke::kdf::HkdfSha256;
use hpke::rand_core::{Infallible, TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::appraise::{HpkeKem, HpkePublicKey, MigrationTicket};
use crate::binding::{cbor, random, OfferBinding, RandomnessError, TransferId, HPKE_SUITE};

/// HPKE `info` for migration packages.
pub const PACKAGE_INFO: &[u8] = b"sojourn/migrate/package/v1";
/// First bytes of a sealed package.
pub const PACKAGE_MAGIC: &[u8; 8] = b"SJMIGPK1";
/// Version of the bundle encoding.
pub const BUNDLE_FORMAT: u64 = 1;
/// Length of the encapsulated key.
pub const ENC_LEN: usize = 32;

const AAD_DOMAIN: &[u8] = b"sojourn/migrate/package-aad/v1\0";
const RNG_DOMAIN: &[u8] = b"sojourn/migrate/seal-rng/v1\0";
const HEADER_LEN: usize = 8 + 6 + 16 + 2 + ENC_LEN + 8;
/// Length of the ChaCha20-Poly1305 tag at the end of the ciphertext.
pub const TAG_LEN: usize = 16;

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
    /// The ciphertext does not authenticate under this key and binding (tampered, or sealed
    /// for another destination, transfer, challenge or channel).
    #[error("the package does not open with this key and binding")]
    Open,
    /// HPKE refused to seal (an invalid public key).
    #[error("HPKE seal failed: {0}")]
    Seal(String),
    /// The decrypted bundle is not a bundle this version writes.
    #[error("malformed bundle: {0}")]
    Bundle(String),
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
    /// The canonical encoding (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode(0)
    }

    /// The encoding, in a buffer with room for `tail` more bytes (the seal's tag), so that a
    /// large bundle is never copied to grow it.
    fn encode(&self, tail: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() + tail);
        self.encode_into(&mut out);
        out
    }

    /// An upper bound of the encoding's length.
    fn encoded_len(&self) -> usize {
        let n = self.pending_messages.len();
        self.snapshot.len()
            + self.lineage.len()
            + self.source.len()
            + self.pending_messages.iter().map(Vec::len).sum::<usize>()
            + 9 * n
            + 128
    }

    /// Appends the encoding to `out` (same bytes as the crate's CBOR writer: shortest heads).
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_head(out, MAJOR_MAP, 6);
        put_text(out, "v");
        put_head(out, MAJOR_UINT, BUNDLE_FORMAT);
        put_text(out, "object");
        put_bytes(out, &self.object_id);
        put_text(out, "source");
        put_text(out, &self.source);
        put_text(out, "lineage");
        put_bytes(out, &self.lineage);
        put_text(out, "pending");
        put_head(out, MAJOR_ARRAY, self.pending_messages.len() as u64);
        for m in &self.pending_messages {
            put_bytes(out, m);
        }
        put_text(out, "snapshot");
        put_bytes(out, &self.snapshot);
    }

    /// Reads [`ObjectBundle::to_bytes`]'s output, strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<ObjectBundle, PackageError> {
        let (bundle, snapshot) = Self::parse(bytes)?;
        Ok(ObjectBundle {
            snapshot: snapshot.to_vec(),
            ..bundle
        })
    }

    /// [`ObjectBundle::from_bytes`] that keeps `bytes`' buffer as the snapshot (the last
    /// field, so it is the buffer's tail): the large part is moved down, not copied out.
    fn from_vec(mut bytes: Vec<u8>) -> Result<ObjectBundle, PackageError> {
        let (bundle, snapshot) = Self::parse(&bytes)?;
        let start = bytes.len() - snapshot.len();
        bytes.drain(..start);
        Ok(ObjectBundle {
            snapshot: bytes,
            ..bundle
        })
    }

    /// Parses the encoding; the returned bundle's snapshot is empty, the snapshot is the
    /// returned slice (which ends the input).
    fn parse(bytes: &[u8]) -> Result<(ObjectBundle, &[u8]), PackageError> {
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
        let source = r.text().map_err(bad)?.to_owned();
        r.expect_key("lineage").map_err(bad)?;
        let lineage = r.bytes().map_err(bad)?.to_vec();
        r.expect_key("pending").map_err(bad)?;
        let n = r.array().map_err(bad)?;
        let mut pending_messages = Vec::new();
        for _ in 0..n {
            pending_messages.push(r.bytes().map_err(bad)?.to_vec());
        }
        r.expect_key("snapshot").map_err(bad)?;
        let snapshot = r.bytes().map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok((
            ObjectBundle {
                object_id,
                snapshot: Vec::new(),
                lineage,
                pending_messages,
                source,
            },
            snapshot,
        ))
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

/// A CBOR head in shortest form.
fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(x) = u8::try_from(n) {
        out.extend([m | 24, x]);
    } else if let Ok(x) = u16::try_from(n) {
        out.push(m | 25);
        out.extend(x.to_be_bytes());
    } else if let Ok(x) = u32::try_from(n) {
        out.push(m | 26);
        out.extend(x.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend(n.to_be_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_text(out: &mut Vec<u8>, t: &str) {
    put_head(out, MAJOR_TEXT, t.len() as u64);
    out.extend_from_slice(t.as_bytes());
}

/// A sealed package, as it travels.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedObject {
    /// The attempt it was sealed for (in clear; also authenticated through the AAD).
    pub transfer: TransferId,
    /// The HPKE encapsulated key (32 bytes).
    pub enc: Vec<u8>,
    /// The ChaCha20-Poly1305 ciphertext of the bundle, tag included.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedObject")
            .field("transfer", &self.transfer)
            .field("enc", &hex::encode(&self.enc))
            .field("ciphertext_bytes", &self.ciphertext.len())
            .finish()
    }
}

impl SealedObject {
    /// The package bytes (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.ciphertext.len());
        write_header(&mut out, &self.transfer, &self.enc, self.ciphertext.len());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads package bytes; the lengths must account for every byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedObject, PackageError> {
        let bad = |what: &str| PackageError::Malformed(what.to_owned());
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], PackageError> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        if take(8)? != PACKAGE_MAGIC {
            return Err(bad("bad magic"));
        }
        let suite = take(6)?;
        let want: Vec<u8> = HPKE_SUITE.iter().flat_map(|id| id.to_be_bytes()).collect();
        if suite != want.as_slice() {
            return Err(bad("unsupported HPKE suite"));
        }
        let transfer = TransferId(take(16)?.try_into().map_err(|_| bad("transfer"))?);
        let enc_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| bad("enc length"))?);
        if usize::from(enc_len) != ENC_LEN {
            return Err(bad("encapsulated key is not 32 bytes"));
        }
        let enc = take(ENC_LEN)?.to_vec();
        let ct_len = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("length"))?);
        let ct_len = usize::try_from(ct_len).map_err(|_| bad("ciphertext length"))?;
        let ciphertext = take(ct_len)?.to_vec();
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(SealedObject {
            transfer,
            enc,
            ciphertext,
        })
    }
}

/// The package header: everything before the ciphertext.
fn write_header(out: &mut Vec<u8>, transfer: &TransferId, enc: &[u8], ciphertext_len: usize) {
    out.extend_from_slice(PACKAGE_MAGIC);
    for id in HPKE_SUITE {
        out.extend(id.to_be_bytes());
    }
    out.extend_from_slice(&transfer.0);
    out.extend((enc.len() as u16).to_be_bytes());
    out.extend_from_slice(enc);
    out.extend((ciphertext_len as u64).to_be_bytes());
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

/// The AAD of a package: commits to the attempt, object, challenge, channel and key.
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

/// Seal `bundle` to the ticket's destination. The bundle must be for the object the ticket's
/// binding names.
pub fn seal(ticket: &MigrationTicket, bundle: &ObjectBundle) -> Result<SealedObject, PackageError> {
    if bundle.object_id != ticket.binding().object_id {
        return Err(PackageError::WrongObject {
            expected: hex::encode(ticket.binding().object_id),
            found: hex::encode(bundle.object_id),
        });
    }
    let mut ciphertext = Vec::with_capacity(bundle.encoded_len() + TAG_LEN);
    bundle.encode_into(&mut ciphertext);
    let (transfer, enc) = seal_at(ticket, bundle, &mut ciphertext, 0)?;
    Ok(SealedObject {
        transfer,
        enc: enc.to_vec(),
        ciphertext,
    })
}

/// [`seal`] straight to the package bytes ([`SealedObject::to_bytes`] of its result, the same
/// bytes), built in one buffer: the bundle is encoded after room for the header, encrypted in
/// place, and the header written in front. No copy of the (large) ciphertext is made.
pub fn seal_to_bytes(
    ticket: &MigrationTicket,
    bundle: &ObjectBundle,
) -> Result<Vec<u8>, PackageError> {
    if bundle.object_id != ticket.binding().object_id {
        return Err(PackageError::WrongObject {
            expected: hex::encode(ticket.binding().object_id),
            found: hex::encode(bundle.object_id),
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + bundle.encoded_len() + TAG_LEN);
    out.resize(HEADER_LEN, 0);
    bundle.encode_into(&mut out);
    let (transfer, enc) = seal_at(ticket, bundle, &mut out, HEADER_LEN)?;
    let ciphertext_len = out.len() - HEADER_LEN;
    let mut header = Vec::with_capacity(HEADER_LEN);
    write_header(&mut header, &transfer, &enc, ciphertext_len);
    match out.get_mut(..HEADER_LEN) {
        Some(head) if header.len() == HEADER_LEN => head.copy_from_slice(&header),
        _ => return Err(PackageError::Seal("package header length".into())),
    }
    Ok(out)
}

/// Encrypts `buf[from..]` (the bundle's encoding) in place and appends the tag; returns the
/// transfer and the encapsulated key.
fn seal_at(
    ticket: &MigrationTicket,
    bundle: &ObjectBundle,
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(TransferId, [u8; ENC_LEN]), PackageError> {
    let binding = ticket.binding();
    if bundle.object_id != binding.object_id {
        buf.zeroize();
        return Err(PackageError::WrongObject {
            expected: hex::encode(binding.object_id),
            found: hex::encode(bundle.object_id),
        });
    }
    let aad = package_aad(binding);
    let mut rng = match SeededRng::new() {
        Ok(rng) => rng,
        Err(e) => {
            buf.zeroize();
            return Err(e.into());
        }
    };
    // Encrypted in place: the plaintext encoding becomes the ciphertext, with no second copy.
    let sealed =
        hpke::single_shot_seal_inout_detached_with_rng::<ChaCha20Poly1305, HkdfSha256, HpkeKem>(
            &OpModeS::Base,
            ticket.hpke_key(),
            PACKAGE_INFO,
            InOutBuf::from(buf.get_mut(from..).unwrap_or_default()),
            &aad,
            &mut rng,
        );
    let (enc, tag) = match sealed {
        Ok(x) => x,
        Err(e) => {
            // The buffer may still hold plaintext: do not leave it behind.
            buf.zeroize();
            return Err(PackageError::Seal(e.to_string()));
        }
    };
    buf.extend_from_slice(&tag.to_bytes());
    let enc: [u8; ENC_LEN] = enc
        .to_bytes()
        .as_slice()
        .try_into()
        .map_err(|_| PackageError::Seal("encapsulated key length".into()))?;
    Ok((binding.transfer, enc))
}

/// Open a package on the destination with the attempt's key and binding. Fails unless it was
/// sealed to this key for exactly this binding's transfer, object, challenge and channel, and
/// carries a well-formed bundle of the binding's object.
pub fn open(
    key: &DestinationKey,
    binding: &OfferBinding,
    sealed: &SealedObject,
) -> Result<ObjectBundle, PackageError> {
    if sealed.transfer != binding.transfer {
        return Err(PackageError::WrongTransfer);
    }
    if key.public_bytes() != binding.hpke_public_key {
        return Err(PackageError::WrongKey);
    }
    let enc = EncappedKey::from_bytes(&sealed.enc)
        .map_err(|_| PackageError::Malformed("encapsulated key".into()))?;
    let aad = package_aad(binding);
    let split = sealed
        .ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(PackageError::Open)?;
    let (body, tag) = sealed.ciphertext.split_at(split);
    let tag = AeadTag::<ChaCha20Poly1305>::from_bytes(tag).map_err(|_| PackageError::Open)?;
    // Decrypted from the ciphertext straight into one new buffer. The tag is checked before
    // any plaintext is produced. The buffer is not zeroized: its content becomes the object's
    // state in this same (encrypted) guest memory anyway; it also becomes the bundle's
    // snapshot (no further copy).
    let mut plaintext = vec![0u8; body.len()];
    let buffer = InOutBuf::new(body, plaintext.as_mut_slice()).map_err(|_| PackageError::Open)?;
    hpke::single_shot_open_inout_detached::<ChaCha20Poly1305, HkdfSha256, HpkeKem>(
        &OpModeR::Base,
        &key.private,
        &enc,
        PACKAGE_INFO,
        buffer,
        &aad,
        &tag,
    )
    .map_err(|_| PackageError::Open)?;
    let bundle = ObjectBundle::from_vec(plaintext)?;
    if bundle.object_id != binding.object_id {
        return Err(PackageError::WrongObject {
            expected: hex::encode(binding.object_id),
            found: hex::encode(bundle.object_id),
        });
    }
    Ok(bundle)
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
    fn bundle_read_from_its_own_buffer_equals_the_copying_read() {
        let b = bundle();
        let bytes = b.to_bytes();
        assert!(bytes.len() <= b.encoded_len());
        assert_eq!(ObjectBundle::from_bytes(&bytes).unwrap(), b);
        assert_eq!(ObjectBundle::from_vec(bytes.clone()).unwrap(), b);
        for len in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(ObjectBundle::from_vec(bytes[..len].to_vec()).is_err());
        }
        let mut longer = bytes;
        longer.push(0);
        assert!(ObjectBundle::from_vec(longer).is_err());
    }

    #[test]
    fn package_header_has_its_documented_length() {
        let s = SealedObject {
            transfer: TransferId([5; 16]),
            enc: vec![6; ENC_LEN],
            ciphertext: vec![7; 40],
        };
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 40);
        assert_eq!(SealedObject::from_bytes(&bytes).unwrap(), s);
    }
}
