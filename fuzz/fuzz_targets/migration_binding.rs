//! The migration offer binding a destination sends (strict canonical decoding): whatever
//! parses re-encodes to the same bytes, and its report data is computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_migration::OfferBinding;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = OfferBinding::from_bytes(data) {
        let _ = b.report_data();
        assert_eq!(b.to_bytes(), data, "binding decoding is canonical");
    }
});
