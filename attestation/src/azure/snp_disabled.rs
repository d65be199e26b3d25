//! The Azure SNP verifier when the `azure-snp-vtpm` feature is off: construction fails with a typed error.

use crate::error::VerifyError;
use crate::evidence::Platform;

/// Placeholder: the `azure-snp-vtpm` feature is off.
#[derive(Debug)]
pub struct AzureSnpVerifier(());

impl AzureSnpVerifier {
    /// Always [`VerifyError::BackendDisabled`].
    pub fn new() -> Result<Self, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::AzureSnpVtpm,
            feature: "azure-snp-vtpm",
        })
    }
}

impl crate::Verifier for AzureSnpVerifier {
    fn platform(&self) -> Platform {
        Platform::AzureSnpVtpm
    }

    fn verify(
        &self,
        _: &crate::Evidence,
        _: &[u8],
        _: &crate::ReferenceValues,
        _: crate::Timestamp,
    ) -> Result<crate::Appraisal, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::AzureSnpVtpm,
            feature: "azure-snp-vtpm",
        })
    }
}
