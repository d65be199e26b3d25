//! `object.toml` parsing: any text gives a descriptor or a located error, never a panic; a
//! descriptor that parses round-trips through its canonical encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_policy::{parse_descriptor, Descriptor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_descriptor("fuzz/object.toml", text, b"module") {
        let again = Descriptor::decode(&d.encode());
        assert_eq!(again.ok().as_ref(), Some(&d), "canonical round trip");
    }
});
