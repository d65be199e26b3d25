//! The decrypted object bundle (format 2) a destination decodes after opening a package:
//! decoding is strict and canonical, and its head re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_migration::ObjectBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = ObjectBundle::from_bytes(data) {
        assert_eq!(b.to_bytes(), data, "bundle decoding is canonical");
        assert_eq!(
            b.head().encoded_len(b.snapshot.len()),
            Some(data.len()),
            "bundle length is computed exactly"
        );
    }
});
