//! Attestation for Sojourn: evidence from confidential VMs, verified into typed claims.
//!
//! The crate has three seams:
//!
//! * [`Evidence`]: what a confidential VM says about itself — a [`Platform`], the raw
//!   hardware report and whatever certificates or collateral travel with it. It has a
//!   stable, versioned byte encoding ([`Evidence::to_bytes`] / [`Evidence::from_bytes`]).
//! * [`Attester`]: produces evidence over 64 bytes of caller-chosen report data.
//! * [`Verifier`]: evidence + expected report data + [`ReferenceValues`] + the time →
//!   an [`Appraisal`] or a typed [`VerifyError`]. Verifiers are synchronous and pure: no
//!   clock reads, no file or network I/O. Certificates and collateral are inputs.
//!
//! An [`Appraisal`] can only be built by this crate, after verification succeeded: code
//! that holds one knows the evidence was checked. It carries the [`Claims`] a policy can
//! test and an AR4SI-style [`TrustVector`].
//!
//! Backends, one module per TEE, each behind a cargo feature (all on by default, none
//! needs hardware to verify): [`snp`] (`snp`), [`tdx`] (`tdx`), [`azure`]
//! (`azure-snp-vtpm`, `azure-tdx-vtpm`) and [`danger::software`] (`software`). With a
//! backend's feature off, [`verifier_for`] returns [`VerifyError::BackendDisabled`]; it
//! never falls back to another backend.
//!
//! The host calls [`verify_evidence`] to verify and
//! [`danger::software::SoftwareAttester`] to produce software evidence.
#![forbid(unsafe_code)]
// With only some backends compiled in, some shared helpers go unused; the full default
// set is checked with warnings denied.
#![cfg_attr(
    not(all(
        feature = "snp",
        feature = "tdx",
        feature = "azure-snp-vtpm",
        feature = "azure-tdx-vtpm",
        feature = "software"
    )),
    allow(dead_code, unused_imports)
)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod bytes;
mod claims;
mod error;
mod evidence;
mod reference;
mod time;
mod x509;

pub mod azure;
pub mod danger;
pub mod snp;
pub mod tdx;

#[cfg(feature = "configfs-tsm")]
pub mod configfs_tsm;

pub use claims::{
    Appraisal, Claims, ComponentAppraisal, Measurement, SnpDetails, SnpTcb, TcbClaims, TdxDetails,
    Tier, TrustClaim, TrustVector,
};
pub use error::{AttestError, ParseError, Rejection, VerifyError};
pub use evidence::{detect_platform, Evidence, EvidenceError, Platform, EVIDENCE_FORMAT_VERSION};
pub use reference::{
    ReferenceValues, ReferenceValuesError, SnpReferenceValues, SoftwareReferenceValues,
    TdxReferenceValues, VtpmReferenceValues,
};
pub use time::{Timestamp, TimestampError};
pub use x509::certs_from_pem_bundle;

/// Produces evidence over caller-chosen report data on the machine it runs on.
pub trait Attester {
    /// The platform whose evidence this attester produces.
    fn platform(&self) -> Platform;

    /// Produce evidence whose report binds exactly these 64 bytes.
    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError>;
}

/// Verifies evidence of one platform and appraises it against reference values.
///
/// Implementations are pure: they read no clock, file or network. `now` is the time at
/// which certificates and collateral must be valid.
pub trait Verifier {
    /// The platform this verifier accepts.
    fn platform(&self) -> Platform;

    /// Verify `evidence`, check that it binds `expected_report_data` (64 bytes for raw
    /// SNP/TDX/software report data; for Azure vTPM evidence, the TPM quote's nonce) and
    /// appraise the claims against `reference`.
    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError>;
}

/// The verifier for `platform`, or [`VerifyError::BackendDisabled`] when its cargo
/// feature is off. Never substitutes another backend.
pub fn verifier_for(platform: Platform) -> Result<Box<dyn Verifier + Send + Sync>, VerifyError> {
    match platform {
        Platform::Snp => Ok(Box::new(snp::SnpVerifier::new()?)),
        Platform::Tdx => Ok(Box::new(tdx::TdxVerifier::new()?)),
        Platform::AzureSnpVtpm => Ok(Box::new(azure::AzureSnpVerifier::new()?)),
        Platform::AzureTdxVtpm => Ok(Box::new(azure::AzureTdxVerifier::new()?)),
        Platform::Software => Ok(Box::new(danger::software::SoftwareVerifier::new()?)),
    }
}

/// The attester for the confidential VM this process runs in: configfs-tsm (SEV-SNP or
/// TDX, as the kernel's provider says) under `/sys/kernel/config/tsm/report`. With the
/// `configfs-tsm` feature off, [`AttestError::BackendDisabled`]. Never falls back to the
/// software TEE: that is [`danger::software::SoftwareAttester`], chosen explicitly.
pub fn hardware_attester() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    #[cfg(feature = "configfs-tsm")]
    {
        Ok(Box::new(configfs_tsm::ConfigfsTsmAttester::open(
            configfs_tsm::DEFAULT_ROOT,
        )?))
    }
    #[cfg(not(feature = "configfs-tsm"))]
    {
        Err(AttestError::BackendDisabled {
            backend: "configfs-tsm",
            feature: "configfs-tsm",
        })
    }
}

/// Verify evidence with the backend its platform names: the one call the host needs.
///
/// Reference values decide which platforms are acceptable at all; software evidence is
/// refused unless they allow it explicitly.
pub fn verify_evidence(
    evidence: &Evidence,
    expected_report_data: &[u8],
    reference: &ReferenceValues,
    now: Timestamp,
) -> Result<Appraisal, VerifyError> {
    verifier_for(evidence.platform)?.verify(evidence, expected_report_data, reference, now)
}
