//! Integration tests over the real vectors in `tests/vectors/` (see its README for
//! provenance and the expected values asserted here). One binary, one module per backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(all(feature = "azure-snp-vtpm", feature = "azure-tdx-vtpm"))]
mod azure;
#[cfg(all(
    feature = "snp",
    feature = "tdx",
    feature = "azure-snp-vtpm",
    feature = "software"
))]
mod evidence;
#[cfg(feature = "snp")]
mod snp;
#[cfg(feature = "software")]
mod software;
#[cfg(feature = "tdx")]
mod tdx;

/// With a backend compiled out, the factory says so with a typed error; it never falls
/// back to another backend.
#[test]
fn disabled_backends_are_typed_errors() {
    use sojourn_attestation::{verifier_for, Platform};
    for (p, on) in [
        (Platform::Snp, cfg!(feature = "snp")),
        (Platform::Tdx, cfg!(feature = "tdx")),
        (Platform::AzureSnpVtpm, cfg!(feature = "azure-snp-vtpm")),
        (Platform::AzureTdxVtpm, cfg!(feature = "azure-tdx-vtpm")),
        (Platform::Software, cfg!(feature = "software")),
    ] {
        match verifier_for(p) {
            Ok(v) => assert!(on && v.platform() == p, "{p}"),
            Err(VerifyError::BackendDisabled { platform, .. }) => {
                assert!(!on && platform == p, "{p}")
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
    if !cfg!(feature = "configfs-tsm") && !cfg!(feature = "sev-guest") {
        assert!(matches!(
            sojourn_attestation::hardware_attester(),
            Err(sojourn_attestation::AttestError::BackendDisabled { .. })
        ));
    }
}

use std::path::PathBuf;

use sojourn_attestation::{Timestamp, VerifyError};

pub fn vector(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn pem_bundle(rel: &str) -> Vec<Vec<u8>> {
    sojourn_attestation::certs_from_pem_bundle(&vector(rel)).unwrap()
}

pub fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

pub fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Run `f`; it must return a typed error and must not panic.
pub fn must_fail<T: std::fmt::Debug>(
    what: &str,
    r: std::thread::Result<Result<T, VerifyError>>,
) -> VerifyError {
    match r {
        Err(_) => panic!("{what}: panicked"),
        Ok(Ok(v)) => panic!("{what}: unexpectedly verified: {v:?}"),
        Ok(Err(e)) => e,
    }
}
