//! Sealing keys and where they come from.
//!
//! One trait per seam: [`SealingKeySource`]. The store never picks a source itself; the
//! daemon's configuration names one. [`SoftwareKeyFile`] is the insecure one (a key in a file
//! next to or away from the data); [`SnpDerivedKey`] asks the SEV-SNP firmware (feature
//! `snp`; without it, the type exists and its `load` returns
//! [`StoreError::KeyUnavailable`]).

use std::fmt;

use zeroize::Zeroizing;

use crate::StoreError;

mod software;
pub(crate) use software::sync_parent_dir;
pub use software::SoftwareKeyFile;

#[cfg(feature = "snp")]
mod snp;
#[cfg(not(feature = "snp"))]
#[path = "snp_disabled.rs"]
mod snp;
pub use snp::SnpDerivedKey;

/// The 32-byte key the store derives its encryption and MAC keys from. Zeroized on drop;
/// its `Debug` never shows it.
pub struct SealingKey(Zeroizing<[u8; 32]>);

impl SealingKey {
    /// Wraps 32 key bytes. The caller's copy of `bytes` is not zeroized by this.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// A fresh random key (for tests and for new software key files).
    pub fn random() -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Where the sealing key comes from.
pub trait SealingKeySource {
    /// Obtains the key (creating it, for sources that create their key on first use).
    fn load(&self) -> Result<SealingKey, StoreError>;
    /// A line for logs and `status` output: what the source is and how far it can be trusted.
    fn describe(&self) -> String;
}

/// The root key the SEV-SNP firmware derives the sealing key from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnpRootKey {
    /// The chip's VCEK: the key is bound to this physical CPU (and this launch measurement
    /// and policy). Data sealed with it cannot be opened on another machine; move objects
    /// by migration, not by copying the store.
    #[default]
    Vcek,
    /// The VM root key (VMRK) provisioned by a migration agent: the key follows the VM
    /// across a live migration of the whole CVM. Needs a migration agent; not the default.
    Vmrk,
}
