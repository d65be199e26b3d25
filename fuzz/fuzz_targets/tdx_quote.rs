//! TDX quote framing, parsing and dcap-qvl verification on arbitrary bytes (fixed real
//! collateral, parsed once).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sojourn_attestation::tdx::{TdxCollateral, TdxVerifier};
use sojourn_attestation::{Evidence, Platform, ReferenceValues, Timestamp};

const COLLATERAL: &[u8] =
    include_bytes!("../../attestation/tests/vectors/tdx/v4_a_collateral.json");
static PARSED: OnceLock<Option<(TdxVerifier, TdxCollateral)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((v, c)) = PARSED.get_or_init(|| {
        Some((
            TdxVerifier::new().ok()?,
            TdxVerifier::parse_collateral(COLLATERAL).ok()?,
        ))
    }) else {
        return;
    };
    let ev = Evidence::new(Platform::Tdx, data.to_vec());
    let rd = ev.claimed_report_data().unwrap_or_default();
    let _ = v.verify_with_collateral(
        &ev,
        c,
        &rd,
        &ReferenceValues::default(),
        Timestamp::from_unix_secs(1_751_328_000),
    );
});
