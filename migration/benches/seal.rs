//! Migration package throughput: `seal` + `open` (HPKE base mode, X25519 / HKDF-SHA256 /
//! ChaCha20-Poly1305, bundle encoding included) against bare AEAD seals of the same bytes.
//!
//! `cargo bench -p sojourn-migration --bench seal` (release profile). Prints a table; each cell
//! is the best of three runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, Timestamp};
use sojourn_migration::binding::{Challenge, TransferId};
use sojourn_migration::{
    appraise_destination, open, seal, DestinationKey, MigrationTicket, ObjectBundle, OfferBinding,
    RuntimeIdentity, SealedObject,
};
use sojourn_policy::{MigrationPlatform, MigrationRules};

fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = None;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let v = f();
        best = best.min(t0.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn setup() -> (DestinationKey, OfferBinding, MigrationTicket) {
    let key = DestinationKey::generate().unwrap();
    let binding = OfferBinding {
        transfer: TransferId([1; 16]),
        object_id: [2; 16],
        challenge: Challenge([3; 32]),
        channel: [4; 32],
        hpke_public_key: key.public_bytes(),
        runtime: RuntimeIdentity {
            name: "sojourn".into(),
            version: "0.1.0".into(),
            policy_engine: [5; 32],
            claims: BTreeMap::new(),
        },
    };
    let attester = SoftwareAttester::new(SoftwareKey::from_seed([7; 32]).unwrap());
    let evidence = attester.attest(&binding.report_data()).unwrap();
    let rules = MigrationRules {
        allowed: true,
        platforms: BTreeSet::from([MigrationPlatform::Software]),
        allow_software: true,
        ..MigrationRules::default()
    };
    let ticket = appraise_destination(
        &rules,
        &evidence,
        &binding,
        &binding.challenge,
        &binding.channel,
        None,
        Timestamp::from_unix_secs(1_750_000_000),
    )
    .unwrap();
    (key, binding, ticket)
}

fn cell(d: Duration, bytes: usize) -> String {
    let ms = d.as_secs_f64() * 1e3;
    let mbs = bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    format!("{ms:8.1} ms {mbs:7.0} MiB/s")
}

fn main() {
    let (key, binding, ticket) = setup();
    println!(
        "| size | package seal | package open | RustCrypto ChaCha20-Poly1305 seal | ring ChaCha20-Poly1305 seal |"
    );
    println!("|---|---|---|---|---|");
    for mib in [1usize, 16, 64] {
        let n = mib << 20;
        let bundle = ObjectBundle {
            object_id: [2; 16],
            snapshot: (0..n).map(|i| (i * 31 % 251) as u8).collect(),
            lineage: vec![9; 4096],
            pending_messages: vec![vec![1; 256]; 4],
            source: "bench".into(),
        };
        let (t_seal, sealed) = best(|| seal(&ticket, &bundle).unwrap());
        let wire = sealed.to_bytes();
        let (t_open, opened) =
            best(|| open(&key, &binding, &SealedObject::from_bytes(&wire).unwrap()).unwrap());
        assert!(opened == bundle);

        let plain = bundle.to_bytes();
        let aead = chacha20poly1305::ChaCha20Poly1305::new(&[0x42u8; 32].into());
        let (t_rc, ct) = best(|| {
            aead.encrypt(
                &[0u8; 12].into(),
                Payload {
                    msg: &plain,
                    aad: b"aad",
                },
            )
            .unwrap()
        });
        assert_eq!(ct.len(), plain.len() + 16);

        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[0x42; 32]).unwrap(),
        );
        let (t_ring, _) = best(|| {
            let mut buf = plain.clone();
            ring_key
                .seal_in_place_append_tag(
                    ring::aead::Nonce::assume_unique_for_key([0; 12]),
                    ring::aead::Aad::from(b"aad"),
                    &mut buf,
                )
                .unwrap();
            buf
        });
        println!(
            "| {mib} MiB | {} | {} | {} | {} |",
            cell(t_seal, n),
            cell(t_open, n),
            cell(t_rc, n),
            cell(t_ring, n)
        );
    }
}
