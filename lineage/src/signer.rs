//! The signing seam: a host's lineage key. Today a P-256 key held in memory (ES256); the trait
//! lets it later live in a vTPM or an HSM without touching the lineage code.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest as _, Sha256};

/// Signs lineage batches.
pub trait LineageSigner: Send {
    /// SEC1 uncompressed public key.
    fn public_key(&self) -> Vec<u8>;
    /// The COSE algorithm (ES256 = -7).
    fn algorithm(&self) -> coset::iana::Algorithm;
    /// Signs `msg`.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
}

/// Key id of a public key: SHA-256 of its SEC1 bytes.
pub fn key_id(public_key: &[u8]) -> [u8; 32] {
    Sha256::digest(public_key).into()
}

/// A P-256 signing key in memory. Signs with `ring` (constant-time assembly, about ten times
/// faster than the pure-Rust signer here: signing is what a busy host spends its lineage time
/// on); the `p256` key derives the public key and signs only if `ring`'s randomness fails.
pub struct P256Signer {
    key: SigningKey,
    fast: Option<ring::signature::EcdsaKeyPair>,
    public: Vec<u8>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for P256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P256Signer({})", hex::encode(key_id(&self.public_key())))
    }
}

impl P256Signer {
    /// From 32 secret bytes (the host draws them from the OS); `None` if they are not a valid
    /// scalar (probability ~2^-128: draw again).
    pub fn from_secret(bytes: &[u8; 32]) -> Option<P256Signer> {
        let key = SigningKey::from_slice(bytes).ok()?;
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let rng = ring::rand::SystemRandom::new();
        let fast = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            bytes,
            &public,
            &rng,
        )
        .ok();
        Some(P256Signer {
            key,
            fast,
            public,
            rng,
        })
    }
}

impl LineageSigner for P256Signer {
    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }
    fn algorithm(&self) -> coset::iana::Algorithm {
        coset::iana::Algorithm::ES256
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        if let Some(sig) = self.fast.as_ref().and_then(|k| k.sign(&self.rng, msg).ok()) {
            return sig.as_ref().to_vec();
        }
        let sig: Signature = self.key.sign(msg);
        sig.to_bytes().to_vec()
    }
}

/// A P-256 public key (SEC1 uncompressed) for verifying ES256 signatures. Verification uses
/// `ring` (several times faster than the pure-Rust `p256` verifier here, and verification is
/// where a lineage verifier spends its time); signing keys stay in `p256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Es256Key(std::sync::Arc<[u8]>);

impl Es256Key {
    /// From SEC1 uncompressed bytes (65 bytes, 0x04 prefix); the point itself is validated by
    /// every verification.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Es256Key, String> {
        if bytes.len() == 65 && bytes.first() == Some(&4) {
            Ok(Es256Key(bytes.into()))
        } else {
            Err("not a P-256 public key (SEC1 uncompressed)".into())
        }
    }

    /// Verifies an ES256 signature (64 bytes r‖s) over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(msg, sig)
            .map_err(|_| "signature does not verify".to_string())
    }
}

/// Verifies an ES256 signature (64 bytes r‖s) by a SEC1 public key.
pub fn verify_es256(public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    Es256Key::from_sec1_bytes(public_key)?.verify(msg, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_signer_produces_es256_signatures_the_verifier_accepts() {
        let s = P256Signer::from_secret(&[7; 32]).expect("valid scalar");
        assert!(s.fast.is_some(), "ring accepted the key");
        let sig = s.sign(b"batch");
        assert_eq!(sig.len(), 64);
        assert!(verify_es256(&s.public_key(), b"batch", &sig).is_ok());
        assert!(verify_es256(&s.public_key(), b"other", &sig).is_err());
        // The pure-Rust fallback signs for the same key.
        let slow: Signature = s.key.sign(b"batch");
        assert!(verify_es256(&s.public_key(), b"batch", &slow.to_bytes()).is_ok());
    }
}
