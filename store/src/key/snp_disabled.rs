//! `SnpDerivedKey` without the `snp` feature: same API, `load` always fails.

use super::{SealingKey, SealingKeySource, SnpRootKey};
use crate::StoreError;

/// A sealing key derived by the SEV-SNP firmware. **Disabled**: this build has no `snp`
/// feature, so [`SealingKeySource::load`] returns [`StoreError::KeyUnavailable`].
#[derive(Clone, Debug, Default)]
pub struct SnpDerivedKey {
    vmpl: u32,
    root: SnpRootKey,
}

impl SnpDerivedKey {
    /// VMPL 0, rooted in the VCEK.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mixes `vmpl` into the key instead of 0.
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }

    /// Derives from `root` instead of the VCEK.
    pub fn with_root_key(mut self, root: SnpRootKey) -> Self {
        self.root = root;
        self
    }
}

impl SealingKeySource for SnpDerivedKey {
    fn load(&self) -> Result<SealingKey, StoreError> {
        Err(StoreError::KeyUnavailable(
            "built without the `snp` feature".into(),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "SEV-SNP derived key (vmpl {}, root {:?}): unavailable, built without the `snp` feature",
            self.vmpl, self.root
        )
    }
}
