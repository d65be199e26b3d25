//! The sealed package as it arrives from the network: the structural read (header, lengths)
//! and the whole open path (`open_owned`: header, HPKE decapsulation, segment authentication,
//! bundle read) must refuse arbitrary bytes without panicking.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sojourn_migration::binding::{Challenge, TransferId};
use sojourn_migration::package::open_owned;
use sojourn_migration::{DestinationKey, OfferBinding, RuntimeIdentity, SealedObject};

/// One destination key for the whole run, and a binding for it.
fn destination() -> &'static (DestinationKey, OfferBinding) {
    static DEST: OnceLock<(DestinationKey, OfferBinding)> = OnceLock::new();
    DEST.get_or_init(|| {
        let key = DestinationKey::generate().expect("randomness");
        let binding = OfferBinding {
            transfer: TransferId([0; 16]),
            object_id: [0; 16],
            challenge: Challenge([0; 32]),
            channel: [0; 32],
            hpke_public_key: key.public_bytes(),
            runtime: RuntimeIdentity {
                name: "sojourn".into(),
                version: "0.1.0".into(),
                policy_engine: [0; 32],
                claims: BTreeMap::new(),
            },
        };
        (key, binding)
    })
}

fuzz_target!(|data: &[u8]| {
    match SealedObject::from_bytes(data) {
        Ok(s) => {
            assert_eq!(s.to_bytes(), data, "sealed package round trip");
            // The binding of the package's own transfer, so that opening gets past the
            // transfer check to the decapsulation and the segments. Nothing forged opens.
            let (key, binding) = destination();
            let mut binding = binding.clone();
            binding.transfer = s.transfer();
            assert!(open_owned(key, &binding, s.into_bytes()).is_err());
        }
        Err(_) => {
            let (key, binding) = destination();
            assert!(open_owned(key, binding, data.to_vec()).is_err());
        }
    }
});
