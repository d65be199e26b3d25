//! The signing seam: a host's lineage key. Today a P-256 key held in memory (ES256); the trait
//! lets it later live in a vTPM or an HSM without touching the lineage code.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
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

/// A P-256 signing key in memory.
pub struct P256Signer {
    key: SigningKey,
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
        SigningKey::from_slice(bytes)
            .ok()
            .map(|key| P256Signer { key })
    }
}

impl LineageSigner for P256Signer {
    fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }
    fn algorithm(&self) -> coset::iana::Algorithm {
        coset::iana::Algorithm::ES256
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(msg);
        sig.to_bytes().to_vec()
    }
}

/// Verifies an ES256 signature (64 bytes r‖s) by a SEC1 public key.
pub fn verify_es256(public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    let vk = VerifyingKey::from_sec1_bytes(public_key).map_err(|_| "not a P-256 public key")?;
    let sig = Signature::from_slice(sig).map_err(|_| "malformed ES256 signature")?;
    vk.verify(msg, &sig)
        .map_err(|_| "signature does not verify".to_string())
}
