//! Azure HCL report parsing: header, IGVM request data, runtime JSON, JWK, TDREPORT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_attestation::azure::hcl;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = hcl::parse(data) {
        let _ = r.expected_report_data();
        if let Ok(j) = r.runtime_json() {
            let _ = hcl::jwk_rsa_key(&j, "HCLAkPub");
        }
    }
});
