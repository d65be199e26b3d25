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

#[cfg(any(feature = "configfs-tsm", feature = "sev-guest"))]
mod cert_table;
#[cfg(feature = "configfs-tsm")]
pub mod configfs_tsm;
#[cfg(feature = "sev-guest")]
pub mod sev_guest;

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

use std::path::Path;

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

/// Where the kernel mounts configfs-tsm's report interface.
const CONFIGFS_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";
/// The SEV-SNP guest device.
const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// A kernel interface [`hardware_attester`] can produce evidence through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interface {
    ConfigfsTsm,
    SevGuest,
}

/// Which interface to use, given where they would be: configfs-tsm first (feature
/// `configfs-tsm`, `configfs_root` exists), then `/dev/sev-guest` (feature `sev-guest`,
/// `sev_guest` exists). The order is fixed, so turning a feature on never changes the
/// choice when the preferred interface is present.
fn choose_interface(configfs_root: &Path, sev_guest: &Path) -> Result<Interface, AttestError> {
    let mut tried = Vec::new();
    if cfg!(feature = "configfs-tsm") {
        if configfs_root.exists() {
            return Ok(Interface::ConfigfsTsm);
        }
        tried.push("configfs-tsm (/sys/kernel/config/tsm/report)");
    }
    if cfg!(feature = "sev-guest") {
        if sev_guest.exists() {
            return Ok(Interface::SevGuest);
        }
        tried.push("sev-guest (/dev/sev-guest)");
    }
    if tried.is_empty() {
        return Err(AttestError::BackendDisabled {
            backend: "configfs-tsm",
            feature: "configfs-tsm",
        });
    }
    Err(AttestError::NoHardwareInterface { tried })
}

/// The attester for the confidential VM this process runs in, by the first interface
/// present:
///
/// 1. configfs-tsm (feature `configfs-tsm`; SEV-SNP or TDX, as the kernel's provider
///    says) when `/sys/kernel/config/tsm/report` exists;
/// 2. `/dev/sev-guest` (feature `sev-guest`; SEV-SNP, extended report at VMPL 0) when it
///    exists.
///
/// An interface that is present but fails to open is an error, not a reason to try the
/// next. None present: [`AttestError::NoHardwareInterface`] naming those tried. Both
/// features off: [`AttestError::BackendDisabled`]. Never falls back to the software TEE:
/// that is [`danger::software::SoftwareAttester`], chosen explicitly.
pub fn hardware_attester() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    match choose_interface(Path::new(CONFIGFS_TSM_ROOT), Path::new(SEV_GUEST_DEVICE))? {
        Interface::ConfigfsTsm => open_configfs_tsm(),
        Interface::SevGuest => open_sev_guest(),
    }
}

#[cfg(feature = "configfs-tsm")]
fn open_configfs_tsm() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    Ok(Box::new(configfs_tsm::ConfigfsTsmAttester::open(
        CONFIGFS_TSM_ROOT,
    )?))
}

#[cfg(not(feature = "configfs-tsm"))]
fn open_configfs_tsm() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    Err(AttestError::BackendDisabled {
        backend: "configfs-tsm",
        feature: "configfs-tsm",
    })
}

#[cfg(feature = "sev-guest")]
fn open_sev_guest() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    Ok(Box::new(sev_guest::SevGuestAttester::open()?))
}

#[cfg(not(feature = "sev-guest"))]
fn open_sev_guest() -> Result<Box<dyn Attester + Send + Sync>, AttestError> {
    Err(AttestError::BackendDisabled {
        backend: "sev-guest",
        feature: "sev-guest",
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory with `configfs` and/or `sev-guest` present.
    fn layout(
        name: &str,
        configfs: bool,
        sev_guest: bool,
    ) -> (std::path::PathBuf, [std::path::PathBuf; 2]) {
        let dir =
            std::env::temp_dir().join(format!("sojourn-choose-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (c, d) = (dir.join("tsm/report"), dir.join("sev-guest"));
        if configfs {
            std::fs::create_dir_all(&c).unwrap();
        }
        if sev_guest {
            std::fs::write(&d, b"").unwrap();
        }
        (dir, [c, d])
    }

    #[test]
    fn interface_order_is_fixed_and_absence_is_typed() {
        let tsm = cfg!(feature = "configfs-tsm");
        let sg = cfg!(feature = "sev-guest");
        for (name, has_c, has_d) in [
            ("none", false, false),
            ("both", true, true),
            ("tsm", true, false),
            ("dev", false, true),
        ] {
            let (dir, [c, d]) = layout(name, has_c, has_d);
            let got = choose_interface(&c, &d);
            let want = if tsm && has_c {
                Some(Interface::ConfigfsTsm)
            } else if sg && has_d {
                Some(Interface::SevGuest)
            } else {
                None
            };
            match (got, want) {
                (Ok(i), Some(w)) => assert_eq!(i, w, "{name}"),
                (Err(AttestError::BackendDisabled { .. }), None) => {
                    assert!(!tsm && !sg, "{name}")
                }
                (Err(AttestError::NoHardwareInterface { tried }), None) => {
                    assert!(tsm || sg, "{name}");
                    let mut expected = Vec::new();
                    if tsm {
                        expected.push("configfs-tsm (/sys/kernel/config/tsm/report)");
                    }
                    if sg {
                        expected.push("sev-guest (/dev/sev-guest)");
                    }
                    assert_eq!(tried, expected, "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn hardware_attester_without_hardware_is_a_typed_error() {
        let present = Path::new(CONFIGFS_TSM_ROOT).exists() || Path::new(SEV_GUEST_DEVICE).exists();
        if present {
            return; // a real CVM: covered by hardware runs, not here
        }
        let r = hardware_attester();
        if cfg!(any(feature = "configfs-tsm", feature = "sev-guest")) {
            let e = r.err().unwrap();
            assert!(
                matches!(e, AttestError::NoHardwareInterface { .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains("tried:"), "{e}");
        } else {
            assert!(matches!(r, Err(AttestError::BackendDisabled { .. })));
        }
    }
}
