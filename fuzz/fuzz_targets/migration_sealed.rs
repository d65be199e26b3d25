//! The sealed package as it arrives from the network: the structural read (header, lengths)
//! and the whole open path (`open_owned`: header, HPKE decapsulation, segment authentication,
//! bundle read) must refuse arbitrary bytes without panicking; so must the order with each
//! tag after its segment (`TagAfterSegment::to_layout`, `SegmentOpener`).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sojourn_migration::binding::{Challenge, TransferId};
use sojourn_migration::package::{open_owned, SegmentOpener, TagAfterSegment};
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

/// The bytes as a package sent with each tag after its segment: put back in the layout, and
/// opened segment by segment with the binding of its own transfer. Nothing forged opens.
fn tag_after_segment(data: &[u8]) {
    let Ok(layout) = TagAfterSegment::to_layout(data) else {
        return;
    };
    assert_eq!(layout.len(), data.len(), "the same bytes in another order");
    let (key, binding) = destination();
    let Ok(order) = TagAfterSegment::of_header(&layout) else {
        panic!("to_layout took a header of_header refuses");
    };
    let Some(transfer) = SealedObject::from_bytes(&layout).ok().map(|s| s.transfer()) else {
        return;
    };
    let mut binding = binding.clone();
    binding.transfer = transfer;
    let Ok(mut opener) = SegmentOpener::new(key, &binding, &layout) else {
        return;
    };
    let mut layout = layout;
    if let (Some(seg), Some(tag)) = (order.segment(0), order.tag(0)) {
        let tag = layout[tag].to_vec();
        assert!(opener.open_next(&mut layout[seg], &tag).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    tag_after_segment(data);
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
