//! The canonical descriptor decoder (what snapshots and migrations carry): any bytes give a
//! descriptor that re-encodes to exactly those bytes, or an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sojourn_policy::Descriptor;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Descriptor::decode(data) {
        assert_eq!(d.encode(), data, "decode accepts only canonical bytes");
    }
});
