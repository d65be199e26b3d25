//! `SnpDerivedKey`: the sealing key from the SEV-SNP firmware (MSG_KEY_REQ).
//!
//! The request goes through `/dev/sev-guest` with virtee `sev`
//! (`sev::firmware::guest::Firmware::get_derived_key`), so this crate keeps
//! `#![forbid(unsafe_code)]`. The firmware mixes in the launch measurement and the guest
//! policy (GUEST_FIELD_SELECT bits 3 and 0), so another image, or the same image launched
//! under a weaker policy, derives a different key and cannot open the store. The guest SVN,
//! TCB version, image id and family id are not mixed in: a firmware update must not lose
//! the store. The request uses message version 1 (no launch mitigation vector), which every
//! SNP firmware supports. The 32 bytes the firmware returns are not used directly: they go
//! through HKDF-SHA256 with info `sojourn/store/sealing/v1`.

use zeroize::Zeroizing;

use super::{SealingKey, SealingKeySource, SnpRootKey};
use crate::StoreError;

/// The guest device.
pub const DEVICE: &str = "/dev/sev-guest";

/// HKDF info for the sealing key.
const INFO: &[u8] = b"sojourn/store/sealing/v1";

/// A sealing key derived by the SEV-SNP firmware from the VCEK (or VMRK), the launch
/// measurement and the guest policy.
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

    /// Mixes `vmpl` into the key instead of 0 (it must be at or above the guest's VMPL).
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }

    /// Derives from `root` instead of the VCEK.
    pub fn with_root_key(mut self, root: SnpRootKey) -> Self {
        self.root = root;
        self
    }

    #[cfg(target_os = "linux")]
    fn request(&self) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};

        let mut fw = Firmware::open().map_err(|e| {
            StoreError::KeyUnavailable(format!(
                "cannot open {DEVICE}: {e}; is this an SEV-SNP guest with the sev-guest driver?"
            ))
        })?;
        let mut fields = GuestFieldSelect::default();
        fields.set_guest_policy(true);
        fields.set_measurement(true);
        let request = DerivedKey::new(self.root == SnpRootKey::Vmrk, fields, self.vmpl, 0, 0, None);
        let key = fw.get_derived_key(Some(1), request).map_err(|e| {
            StoreError::KeyUnavailable(format!("the SNP firmware refused MSG_KEY_REQ: {e}"))
        })?;
        Ok(Zeroizing::new(key))
    }

    #[cfg(not(target_os = "linux"))]
    fn request(&self) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        Err(StoreError::KeyUnavailable(format!(
            "{DEVICE} exists only on Linux"
        )))
    }
}

impl SealingKeySource for SnpDerivedKey {
    fn load(&self) -> Result<SealingKey, StoreError> {
        let derived = self.request()?;
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, derived.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(INFO, out.as_mut())
            .map_err(|e| StoreError::KeyUnavailable(format!("HKDF: {e}")))?;
        Ok(SealingKey::from_zeroizing(out))
    }

    fn describe(&self) -> String {
        format!(
            "SEV-SNP derived key ({}, vmpl {}, bound to the launch measurement and guest policy)",
            match self.root {
                SnpRootKey::Vcek => "VCEK: bound to this chip",
                SnpRootKey::Vmrk => "VMRK: follows the VM across migration",
            },
            self.vmpl
        )
    }
}
