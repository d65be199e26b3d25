//! Evidence plumbing shared by the CLI and the daemon: reference values from a file, and the
//! adapter that lets a boxed hardware attester serve a lineage writer.

use std::path::Path;

use anyhow::{Context, Result};
use sojourn_attestation::{Attester, ReferenceValues};

/// Reads reference values (TOML) from `path`; errors name the file.
pub fn read_reference(path: &Path) -> Result<ReferenceValues> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ReferenceValues::from_toml_str(&text).with_context(|| format!("{}", path.display()))
}

/// Adapts the boxed hardware attester to the `Send` bound the lineage writer needs.
pub struct HardwareAttester(pub Box<dyn Attester + Send + Sync>);

impl std::fmt::Debug for HardwareAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HardwareAttester({})", self.0.platform().as_str())
    }
}

impl Attester for HardwareAttester {
    fn platform(&self) -> sojourn_attestation::Platform {
        self.0.platform()
    }
    fn attest(
        &self,
        report_data: &[u8; 64],
    ) -> Result<sojourn_attestation::Evidence, sojourn_attestation::AttestError> {
        self.0.attest(report_data)
    }
}
