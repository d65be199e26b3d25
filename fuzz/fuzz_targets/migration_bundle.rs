//! The decrypted object bundle a destination decodes after opening a package.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_migration::ObjectBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = ObjectBundle::from_bytes(data) {
        assert_eq!(b.to_bytes(), data, "bundle decoding is canonical");
    }
});
