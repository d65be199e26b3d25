//! The SNP verifier when the `snp` feature is off: construction fails with a typed error.

use crate::error::VerifyError;
use crate::evidence::Platform;

/// Placeholder: the `snp` feature is off.
#[derive(Debug)]
pub struct SnpVerifier(());

impl SnpVerifier {
    /// Always [`VerifyError::BackendDisabled`].
    pub fn new() -> Result<Self, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::Snp,
            feature: "snp",
        })
    }
}

impl crate::Verifier for SnpVerifier {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn verify(
        &self,
        _: &crate::Evidence,
        _: &[u8],
        _: &crate::ReferenceValues,
        _: crate::Timestamp,
    ) -> Result<crate::Appraisal, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::Snp,
            feature: "snp",
        })
    }
}
