//! Sealing of records: XChaCha20-Poly1305 with a random nonce, keys from HKDF-SHA256.
//! Memory-image segments (table `memory`, ~1 MiB each) use AES-256-GCM instead, which the
//! hardware runs several times faster: each segment under its own key, HMAC-SHA256(memory key,
//! salt) with a random 192-bit salt in the nonce's place, and the all-zero 96-bit nonce (a key
//! seals one value only, so GCM's nonce limits never come into play, after a disk rollback
//! included).
//!
//! A stored value is `prefix ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. The prefix is clear but
//! authenticated: the head's seq (u64 BE) for heads, the format version (u32 BE) for the
//! meta record, empty otherwise. The associated data is
//! `"sojourn/store/v1" ‖ table tag ‖ redb key ‖ prefix`, where the redb key is
//! `object id (16) ‖ index (BE)` (`"meta"` for the meta record).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Table;
use crate::key::SealingKey;
use crate::StoreError;

/// Domain of every associated data and derivation.
pub(crate) const DOMAIN: &[u8] = b"sojourn/store/v1";
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;

/// Why a value does not unseal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealError {
    /// Shorter than prefix + nonce + tag.
    Truncated,
    /// The tag does not verify: wrong key, wrong place, or altered.
    Auth,
}

impl SealError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SealError::Truncated => "the sealed value is truncated",
            SealError::Auth => {
                "the sealed value does not verify here (altered, or moved from another \
                 object, table or key)"
            }
        }
    }
}

/// The parts of a stored value.
pub(crate) struct Parts<'a> {
    pub(crate) prefix: &'a [u8],
    pub(crate) nonce: &'a [u8],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8],
}

pub(crate) fn split(table: Table, value: &[u8]) -> Result<Parts<'_>, SealError> {
    let p = table.prefix_len();
    if value.len() < p + NONCE_LEN + TAG_LEN {
        return Err(SealError::Truncated);
    }
    let (prefix, rest) = value.split_at(p);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(Parts {
        prefix,
        nonce,
        ciphertext,
        tag,
    })
}

/// Length of the stored value of a memory-image segment of `len` bytes.
pub(crate) const fn memory_value_len(len: usize) -> usize {
    NONCE_LEN + len + TAG_LEN
}

/// Nonces drawn from the operating system per [`NoncePool`] refill: one `getrandom` call
/// serves this many records instead of one call per record.
const POOL_NONCES: usize = 256;

/// Random nonces bought in bulk: each refill is `POOL_NONCES * NONCE_LEN` fresh bytes from
/// the operating system, handed out once each and wiped as they go. The nonces stay
/// independent, uniformly random and unpredictable (they are the OS's output, only fetched
/// ahead); none is handed out twice.
struct NoncePool {
    bytes: Zeroizing<[u8; POOL_NONCES * NONCE_LEN]>,
    /// Bytes of `bytes` already handed out (the rest are unused).
    used: usize,
}

impl NoncePool {
    fn new() -> Self {
        NoncePool {
            bytes: Zeroizing::new([0; POOL_NONCES * NONCE_LEN]),
            used: POOL_NONCES * NONCE_LEN,
        }
    }

    fn next(&mut self) -> Result<[u8; NONCE_LEN], StoreError> {
        if self.used + NONCE_LEN > self.bytes.len() {
            getrandom::fill(self.bytes.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
            self.used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        let taken = self
            .bytes
            .get_mut(self.used..self.used + NONCE_LEN)
            .ok_or_else(|| StoreError::Random("nonce pool out of range".into()))?;
        nonce.copy_from_slice(taken);
        taken.fill(0);
        self.used += NONCE_LEN;
        Ok(nonce)
    }
}

/// The keys derived from one [`SealingKey`].
pub(crate) struct Sealer {
    aead: XChaCha20Poly1305,
    mac: Hmac<Sha256>,
    /// Derives the AES-256-GCM key of each memory-image segment from its salt.
    memory: Hmac<Sha256>,
    nonces: std::sync::Mutex<NoncePool>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<keys redacted>)")
    }
}

impl Sealer {
    pub(crate) fn new(key: &SealingKey) -> Result<Self, StoreError> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(DOMAIN), key.expose());
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        let mut memory = Zeroizing::new([0u8; 32]);
        hk.expand(b"sojourn/store/v1/encryption", enc.as_mut())
            .and_then(|()| hk.expand(b"sojourn/store/v1/mac", mac.as_mut()))
            .and_then(|()| hk.expand(b"sojourn/store/v2/memory-image-keys", memory.as_mut()))
            .map_err(|e| StoreError::KeyUnavailable(format!("HKDF: {e}")))?;
        let aead = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(enc.as_ref()));
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(mac.as_ref())
            .map_err(|e| StoreError::KeyUnavailable(format!("HMAC: {e}")))?;
        let memory = <Hmac<Sha256> as Mac>::new_from_slice(memory.as_ref())
            .map_err(|e| StoreError::KeyUnavailable(format!("HMAC: {e}")))?;
        Ok(Self {
            aead,
            mac,
            memory,
            nonces: std::sync::Mutex::new(NoncePool::new()),
        })
    }

    fn aad(table: Table, key: &[u8], prefix: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(DOMAIN.len() + 1 + key.len() + prefix.len());
        aad.extend_from_slice(DOMAIN);
        aad.push(table.tag());
        aad.extend_from_slice(key);
        aad.extend_from_slice(prefix);
        aad
    }

    /// Seals `plaintext` for `key` in `table`, with the clear `prefix`.
    pub(crate) fn seal(
        &self,
        table: Table,
        key: &[u8],
        prefix: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        debug_assert_eq!(prefix.len(), table.prefix_len());
        if table == Table::Memory {
            let mut out = vec![0; memory_value_len(plaintext.len())];
            self.seal_memory_into(key, plaintext, &mut out)?;
            return Ok(out);
        }
        let nonce = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()?;
        let mut out = Vec::with_capacity(prefix.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(plaintext);
        let aad = Self::aad(table, key, prefix);
        let tag = self
            .aead
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad,
                out.get_mut(body..).unwrap_or_default(),
            )
            .map_err(|_| StoreError::KeyUnavailable("record too large to seal".into()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Seals a memory-image segment for `key` into `out`, which must be exactly
    /// [`memory_value_len`] of the segment long (the segment is copied in, then sealed there).
    pub(crate) fn seal_memory_into(
        &self,
        key: &[u8],
        segment: &[u8],
        out: &mut [u8],
    ) -> Result<(), StoreError> {
        if out.len() != memory_value_len(segment.len()) {
            return Err(StoreError::KeyUnavailable(
                "record too large to seal".into(),
            ));
        }
        out.get_mut(NONCE_LEN..NONCE_LEN + segment.len())
            .ok_or_else(|| StoreError::KeyUnavailable("record too large to seal".into()))?
            .copy_from_slice(segment);
        self.seal_memory_in_place(key, out)
    }

    /// [`Sealer::seal_memory_into`] of a segment already written where its ciphertext goes:
    /// `out` is the whole value ([`memory_value_len`] of the segment), its plaintext at
    /// `NONCE_LEN ..` and the salt and tag places still to be filled. Saves the copy.
    pub(crate) fn seal_memory_in_place(
        &self,
        key: &[u8],
        out: &mut [u8],
    ) -> Result<(), StoreError> {
        let too_large = || StoreError::KeyUnavailable("record too large to seal".into());
        if out.len() < NONCE_LEN + TAG_LEN {
            return Err(too_large());
        }
        let salt = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()?;
        let (head, rest) = out.split_at_mut(NONCE_LEN);
        let (body, tag_out) = rest.split_at_mut(rest.len() - TAG_LEN);
        head.copy_from_slice(&salt);
        let aad = Self::aad(Table::Memory, key, &[]);
        let tag = self
            .segment_key(&salt)
            .and_then(|k| {
                k.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key([0; 12]),
                    ring::aead::Aad::from(&aad),
                    body,
                )
                .ok()
            })
            .ok_or_else(too_large)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Verifies and decrypts a stored value of `table` at `key`.
    pub(crate) fn unseal(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let parts = split(table, value)?;
        let aad = Self::aad(table, key, parts.prefix);
        let mut buf = parts.ciphertext.to_vec();
        if table == Table::Memory {
            let tag: [u8; TAG_LEN] = parts.tag.try_into().map_err(|_| SealError::Truncated)?;
            let k = self.segment_key(parts.nonce).ok_or(SealError::Auth)?;
            k.open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key([0; 12]),
                ring::aead::Aad::from(&aad),
                ring::aead::Tag::from(tag),
                &mut buf,
                0..,
            )
            .map_err(|_| SealError::Auth)?;
            return Ok(buf);
        }
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(parts.nonce),
                &aad,
                &mut buf,
                Tag::from_slice(parts.tag),
            )
            .map_err(|_| SealError::Auth)?;
        Ok(buf)
    }

    /// The AES-256-GCM key of the memory-image segment with this salt (`None` only if ring
    /// refuses a 32-byte key, which it does not).
    fn segment_key(&self, salt: &[u8]) -> Option<ring::aead::LessSafeKey> {
        let mut mac = self.memory.clone();
        mac.update(b"segment");
        mac.update(salt);
        let key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key.as_ref())
            .ok()
            .map(ring::aead::LessSafeKey::new)
    }

    /// The record's accumulator term: HMAC(mac key, "acc" ‖ table ‖ key ‖ nonce ‖ tag).
    /// The tag binds everything else (prefix, ciphertext, place), so the term names one
    /// sealed version of one record.
    pub(crate) fn term(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<[u8; 32], SealError> {
        let parts = split(table, value)?;
        let mut mac = self.mac.clone();
        mac.update(b"acc");
        mac.update(&[table.tag()]);
        mac.update(key);
        mac.update(parts.nonce);
        mac.update(parts.tag);
        Ok(mac.finalize().into_bytes().into())
    }

    /// MAC for the high-water-mark file.
    pub(crate) fn hwm_mac(&self, store_id: &[u8; 16], counter: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"sojourn/store/hwm/v1");
        mac.update(store_id);
        mac.update(&counter.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks a high-water-mark MAC in constant time.
    pub(crate) fn hwm_verify(&self, store_id: &[u8; 16], counter: u64, tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(b"sojourn/store/hwm/v1");
        mac.update(store_id);
        mac.update(&counter.to_be_bytes());
        mac.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> Sealer {
        Sealer::new(&SealingKey::from_bytes([7; 32])).unwrap()
    }

    #[test]
    fn seal_binds_place_and_prefix() {
        let s = sealer();
        let v = s
            .seal(
                Table::Heads,
                b"object-id-16byte",
                &5u64.to_be_bytes(),
                b"hello",
            )
            .unwrap();
        assert_eq!(
            s.unseal(Table::Heads, b"object-id-16byte", &v).unwrap(),
            b"hello"
        );
        // Another key, another table, another prefix: refused.
        assert_eq!(
            s.unseal(Table::Heads, b"object-id-16bytf", &v),
            Err(SealError::Auth)
        );
        assert_eq!(
            s.unseal(Table::Images, b"object-id-16byte", &v),
            Err(SealError::Auth)
        );
        let mut w = v.clone();
        w[7] ^= 1; // the seq prefix
        assert_eq!(
            s.unseal(Table::Heads, b"object-id-16byte", &w),
            Err(SealError::Auth)
        );
        // Another sealing key: refused.
        let other = Sealer::new(&SealingKey::from_bytes([8; 32])).unwrap();
        assert_eq!(
            other.unseal(Table::Heads, b"object-id-16byte", &v),
            Err(SealError::Auth)
        );
        // Fresh nonce each time: same plaintext, different value, different term.
        let v2 = s
            .seal(
                Table::Heads,
                b"object-id-16byte",
                &5u64.to_be_bytes(),
                b"hello",
            )
            .unwrap();
        assert_ne!(v, v2);
        assert_ne!(
            s.term(Table::Heads, b"object-id-16byte", &v).unwrap(),
            s.term(Table::Heads, b"object-id-16byte", &v2).unwrap()
        );
    }

    #[test]
    fn nonces_are_fresh_across_pool_refills() {
        let s = sealer();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * POOL_NONCES + 7) {
            let v = s.seal(Table::Chunks, &[1; 20], &[], b"x").unwrap();
            let parts = split(Table::Chunks, &v).unwrap();
            assert_ne!(parts.nonce, &[0u8; NONCE_LEN][..]);
            assert!(seen.insert(parts.nonce.to_vec()), "a nonce repeated");
            assert_eq!(s.unseal(Table::Chunks, &[1; 20], &v).unwrap(), b"x");
        }
    }

    #[test]
    fn memory_segments_are_sealed_each_under_its_own_key_and_bound_to_their_place() {
        let s = sealer();
        let seg = vec![0x5a; 100_000];
        let v = s.seal(Table::Memory, &[1; 20], &[], &seg).unwrap();
        assert_eq!(v.len(), NONCE_LEN + seg.len() + TAG_LEN);
        assert_eq!(s.unseal(Table::Memory, &[1; 20], &v).unwrap(), seg);
        // Not readable as another table's record, at another key, or with another salt, tag
        // or byte; and not by the XChaCha path (another cipher).
        assert_eq!(s.unseal(Table::Memory, &[2; 20], &v), Err(SealError::Auth));
        assert_eq!(s.unseal(Table::Chunks, &[1; 20], &v), Err(SealError::Auth));
        for at in [0, NONCE_LEN, NONCE_LEN + 50_000, v.len() - 1] {
            let mut w = v.clone();
            w[at] ^= 1;
            assert_eq!(
                s.unseal(Table::Memory, &[1; 20], &w),
                Err(SealError::Auth),
                "{at}"
            );
        }
        let other = Sealer::new(&SealingKey::from_bytes([8; 32])).unwrap();
        assert_eq!(
            other.unseal(Table::Memory, &[1; 20], &v),
            Err(SealError::Auth)
        );
        // Sealed in place (as the store writes segments) it opens the same way.
        let mut in_place = vec![0u8; memory_value_len(seg.len())];
        s.seal_memory_into(&[1; 20], &seg, &mut in_place).unwrap();
        assert_eq!(s.unseal(Table::Memory, &[1; 20], &in_place).unwrap(), seg);
        assert!(s
            .seal_memory_into(&[1; 20], &seg, &mut in_place[1..])
            .is_err());
        // Fresh salt each time: the same segment sealed twice gives other bytes.
        let v2 = s.seal(Table::Memory, &[1; 20], &[], &seg).unwrap();
        assert_ne!(v[..NONCE_LEN], v2[..NONCE_LEN]);
        assert_ne!(v[NONCE_LEN..], v2[NONCE_LEN..]);
    }

    #[test]
    fn hwm_mac_verifies() {
        let s = sealer();
        let t = s.hwm_mac(&[1; 16], 9);
        assert!(s.hwm_verify(&[1; 16], 9, &t));
        assert!(!s.hwm_verify(&[1; 16], 10, &t));
        assert!(!s.hwm_verify(&[2; 16], 9, &t));
    }

    proptest! {
        #[test]
        fn random_bytes_never_unseal(table in 0usize..7, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = [Table::Images, Table::Heads, Table::Chunks, Table::Lineage, Table::Messages, Table::Meta, Table::Memory][table];
            let s = sealer();
            prop_assert!(s.unseal(t, &[0; 16], &bytes).is_err());
            // term never panics either; it only parses.
            let _ = s.term(t, &[0; 16], &bytes);
        }
    }
}
