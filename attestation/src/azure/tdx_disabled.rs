//! The Azure TDX verifier when the `azure-tdx-vtpm` feature is off: construction fails with a typed error.

use crate::error::VerifyError;
use crate::evidence::Platform;

/// Placeholder: the `azure-tdx-vtpm` feature is off.
#[derive(Debug)]
pub struct AzureTdxVerifier(());

impl AzureTdxVerifier {
    /// Always [`VerifyError::BackendDisabled`].
    pub fn new() -> Result<Self, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::AzureTdxVtpm,
            feature: "azure-tdx-vtpm",
        })
    }
}

impl crate::Verifier for AzureTdxVerifier {
    fn platform(&self) -> Platform {
        Platform::AzureTdxVtpm
    }

    fn verify(
        &self,
        _: &crate::Evidence,
        _: &[u8],
        _: &crate::ReferenceValues,
        _: crate::Timestamp,
    ) -> Result<crate::Appraisal, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::AzureTdxVtpm,
            feature: "azure-tdx-vtpm",
        })
    }
}
