//! The sealed package as it arrives from the network (before any decryption).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_migration::SealedObject;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SealedObject::from_bytes(data) {
        let again = SealedObject::from_bytes(&s.to_bytes());
        assert!(again.is_ok(), "sealed package round trip");
    }
});
