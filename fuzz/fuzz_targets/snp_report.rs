//! SEV-SNP report parsing and verification on arbitrary bytes (with a fixed real VCEK).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sojourn_attestation::snp::SnpVerifier;
use sojourn_attestation::{Evidence, Platform, ReferenceValues, Timestamp, Verifier};

static VERIFIER: OnceLock<Option<SnpVerifier>> = OnceLock::new();
const VCEK: &[u8] = include_bytes!("../../attestation/tests/vectors/snp/milan_a_vcek.der");

fuzz_target!(|data: &[u8]| {
    let Some(v) = VERIFIER.get_or_init(|| SnpVerifier::new().ok()) else {
        return;
    };
    let ev = Evidence::new(Platform::Snp, data.to_vec()).with_certs([VCEK.to_vec()]);
    let rd = data.get(0x50..0x90).unwrap_or(&[0; 64]);
    let _ = v.verify(
        &ev,
        rd,
        &ReferenceValues::default(),
        Timestamp::from_unix_secs(1_748_736_000),
    );
});
