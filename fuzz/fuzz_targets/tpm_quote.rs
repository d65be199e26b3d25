//! vTPM quote parsing (az-cvm-vtpm layout, TPMS_ATTEST) and verification with a fixed
//! real attestation key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sojourn_attestation::azure::{hcl, tpm};

const HCL: &[u8] = include_bytes!("../../attestation/tests/vectors/azure/snp_hcl_report.bin");
static AK: OnceLock<Option<hcl::RsaPublicKey>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = tpm::parse_quote(data) {
        let _ = tpm::parse_attest(&q.message);
    }
    let ak = AK.get_or_init(|| {
        let r = hcl::parse(HCL).ok()?;
        hcl::jwk_rsa_key(&r.runtime_json().ok()?, "HCLAkPub").ok()
    });
    if let Some(ak) = ak {
        let _ = tpm::verify_quote(data, ak, b"challenge");
    }
});
