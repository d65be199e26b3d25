//! The TDX verifier when the `tdx` feature is off: construction fails with a typed error.

use crate::error::VerifyError;
use crate::evidence::Platform;

/// Placeholder: the `tdx` feature is off.
#[derive(Debug)]
pub struct TdxVerifier(());

impl TdxVerifier {
    /// Always [`VerifyError::BackendDisabled`].
    pub fn new() -> Result<Self, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::Tdx,
            feature: "tdx",
        })
    }
}

impl crate::Verifier for TdxVerifier {
    fn platform(&self) -> Platform {
        Platform::Tdx
    }

    fn verify(
        &self,
        _: &crate::Evidence,
        _: &[u8],
        _: &crate::ReferenceValues,
        _: crate::Timestamp,
    ) -> Result<crate::Appraisal, VerifyError> {
        Err(VerifyError::BackendDisabled {
            platform: Platform::Tdx,
            feature: "tdx",
        })
    }
}
