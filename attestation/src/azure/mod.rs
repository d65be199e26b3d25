//! Azure confidential VMs, vTPM path.
//!
//! On Azure the paravisor (HCL) owns the SEV-SNP/TDX REPORT_DATA: it holds the SHA-256 of
//! the HCL runtime data, a JSON document that carries the vTPM attestation key
//! (`HCLAkPub`) and the VM configuration. So a nonce cannot be bound through the hardware
//! report; it is bound through the vTPM quote's qualifying data (`extraData`), signed by
//! that attestation key. Verification therefore:
//!
//! 1. verifies the hardware report inside the HCL report (SNP: [`crate::snp`] checks; TDX:
//!    the TD quote with dcap-qvl, which must agree with the HCL report's TDREPORT);
//! 2. checks REPORT_DATA = hash(runtime data) ‖ zero padding (IGVM hash type);
//! 3. takes the RSA attestation key from the runtime data (JWK) and verifies the TPM
//!    quote's RSASSA-PKCS1-v1_5 SHA-256 signature with it;
//! 4. checks `extraData` = the expected nonce, and SHA-256 over the quoted PCR values =
//!    the quote's `pcrDigest`.
//!
//! The HCL report and TPM quote are parsed here by hand (pure Rust; no libtss2).

pub mod hcl;
pub mod tpm;

#[cfg(any(feature = "azure-snp-vtpm", feature = "azure-tdx-vtpm"))]
mod common;

#[cfg(feature = "azure-snp-vtpm")]
mod snp_imp;
#[cfg(feature = "azure-snp-vtpm")]
pub use snp_imp::AzureSnpVerifier;

#[cfg(feature = "azure-tdx-vtpm")]
mod tdx_imp;
#[cfg(feature = "azure-tdx-vtpm")]
pub use tdx_imp::AzureTdxVerifier;

#[cfg(not(feature = "azure-snp-vtpm"))]
mod snp_disabled;
#[cfg(not(feature = "azure-snp-vtpm"))]
pub use snp_disabled::AzureSnpVerifier;

#[cfg(not(feature = "azure-tdx-vtpm"))]
mod tdx_disabled;
#[cfg(not(feature = "azure-tdx-vtpm"))]
pub use tdx_disabled::AzureTdxVerifier;
