//! Migration package throughput (version 2: HPKE export-only key agreement, AES-256-GCM
//! segments sealed and opened in place on up to 4 threads) against bare AEAD seals of the same
//! bytes.
//!
//! `cargo bench -p sojourn-migration --bench seal` (release profile). Prints a table; each cell
//! is the best of five runs.
//!
//! - *seal*: `seal_with`, the snapshot written into the package buffer by the callback (one
//!   copy from a source buffer, as the host writes it from the object's memory), including the
//!   allocation of the package buffer and the HPKE setup.
//! - *open*: `open_owned` of a received buffer (not included: making the copy it consumes),
//!   bundle parsed in place.
//! - *drop*: dropping the opened bundle, which zeroes the whole buffer.
//! - *copy*: copying the snapshot into a fresh buffer (allocation and page faults included):
//!   what the seal's snapshot writer costs by itself.
//! - *ring AES-256-GCM*: one in-place seal of the same bytes on one thread (no allocation).
//! - *ChaCha20-Poly1305*: RustCrypto's, one seal, as version 1 of the package sealed (single
//!   shot, one thread).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, Timestamp};
use sojourn_migration::binding::{Challenge, TransferId};
use sojourn_migration::package::{open_owned, seal_with, BundleHead};
use sojourn_migration::{
    appraise_destination, DestinationKey, MigrationTicket, OfferBinding, RuntimeIdentity,
};
use sojourn_policy::{MigrationPlatform, MigrationRules};

const RUNS: usize = 5;

/// Best time of `f` over [`RUNS`] runs, each on a fresh input from `setup` (not timed).
fn best<I, T>(mut setup: impl FnMut() -> I, mut f: impl FnMut(I) -> T) -> (Duration, T) {
    let mut out = None;
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let input = setup();
        let t0 = Instant::now();
        let v = f(input);
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
    format!("{ms:.1} ms ({mbs:.0} MiB/s)")
}

fn main() {
    let (key, binding, ticket) = setup();
    println!(
        "threads: {} available, at most {} used",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        sojourn_migration::package::MAX_THREADS
    );
    println!(
        "| size | v2 seal | v2 open | drop (zeroize) | copy | ring AES-256-GCM seal, 1 thread | ChaCha20-Poly1305 seal (v1's AEAD) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for mib in [1usize, 16, 64] {
        let n = mib << 20;
        let snapshot: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        let lineage = vec![9; 4096];
        let pending = vec![vec![1; 256]; 4];
        let head = BundleHead {
            object_id: [2; 16],
            source: "bench",
            lineage: &lineage,
            pending_messages: &pending,
        };

        let (t_seal, wire) = best(
            || (),
            |()| {
                seal_with(&ticket, &head, snapshot.len(), |buf| {
                    buf.extend_from_slice(&snapshot);
                    Ok(())
                })
                .unwrap()
            },
        );
        let (t_open, opened) = best(|| wire.clone(), |w| open_owned(&key, &binding, w).unwrap());
        assert!(opened.snapshot() == snapshot.as_slice());
        drop(opened);
        let (t_drop, ()) = best(|| open_owned(&key, &binding, wire.clone()).unwrap(), drop);
        let (t_copy, copied) = best(
            || (),
            |()| {
                let mut v = Vec::with_capacity(n);
                v.extend_from_slice(&snapshot);
                v
            },
        );
        assert_eq!(copied.len(), n);

        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[0x42; 32]).unwrap(),
        );
        let (t_ring, _) = best(
            || snapshot.clone(),
            |mut buf| {
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key([0; 12]),
                        ring::aead::Aad::from(b"aad"),
                        &mut buf,
                    )
                    .unwrap();
                (buf, tag)
            },
        );

        let aead = chacha20poly1305::ChaCha20Poly1305::new(&[0x42u8; 32].into());
        let (t_chacha, ct) = best(
            || (),
            |()| {
                aead.encrypt(
                    &[0u8; 12].into(),
                    Payload {
                        msg: &snapshot,
                        aad: b"aad",
                    },
                )
                .unwrap()
            },
        );
        assert_eq!(ct.len(), n + 16);

        println!(
            "| {mib} MiB | {} | {} | {} | {} | {} | {} |",
            cell(t_seal, n),
            cell(t_open, n),
            cell(t_drop, n),
            cell(t_copy, n),
            cell(t_ring, n),
            cell(t_chacha, n)
        );
    }
}
