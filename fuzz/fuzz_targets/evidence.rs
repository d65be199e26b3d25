//! The evidence container and format auto-detection (container JSON, trustee Azure JSON,
//! bare reports), plus the claimed report data of whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_attestation::{detect_platform, Evidence};

fuzz_target!(|data: &[u8]| {
    let _ = detect_platform(data);
    if let Ok(ev) = Evidence::from_any_bytes(data, None) {
        let _ = ev.claimed_report_data();
        let again = Evidence::from_bytes(&ev.to_bytes());
        assert_eq!(again.ok().as_ref(), Some(&ev), "container round trip");
    }
});
