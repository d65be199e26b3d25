//! Lineage append and verification throughput, one core: appends, the fast integrity check
//! (`verify_chain_and_signatures`: chain, inclusion proofs, batch signatures) and the full
//! check (`verify_lineage`: that plus evidence appraisal, state replay and trust slope).
//!
//! `cargo bench -p sojourn-lineage --bench lineage`; `SOJOURN_BENCH_ENTRIES` sets the number
//! of entries per case (default 100000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench binary

use std::time::Instant;

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::ReferenceValues;
use sojourn_lineage::{
    verify_chain_and_signatures, verify_chain_and_signatures_parallel, verify_lineage,
    LineageSigner as _, LineageWriter, P256Signer, VerifyOptions, WriterConfig,
};
use sojourn_policy::{parse_descriptor, state_digest, Fields, Value};
use sojourn_runtime::{Decision, Digest, EntryInputs, ObjectId, Outcome, TransitionRecord};

const TOML: &str = r#"
[object]
name = "bench"
version = 1
module = "b.wasm"
[limits]
fuel_per_entry = 1000
memory_pages_max = 1
[schema.fields.count]
type = "int"
default = 0
monotonic = true
[policy.writers]
tick = ["count"]
[policy.trust]
read_only_below = 0
"#;

fn main() {
    let n: u64 = std::env::var("SOJOURN_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let d = parse_descriptor("bench", TOML, b"module").unwrap();
    let digest = Digest(d.digest());
    // The records a counter produces: tick k writes count = k.
    let mut records = Vec::with_capacity(n as usize);
    let mut fields: Fields = d.initial_state();
    for seq in 0..n {
        let before = Digest(state_digest(&fields));
        let mut writes = Fields::new();
        if seq > 0 {
            writes.insert("count".into(), Value::Int(seq as i64));
            fields.insert("count".into(), Value::Int(seq as i64));
        }
        records.push(TransitionRecord {
            object_id: ObjectId([1; 16]),
            seq,
            entry: if seq == 0 {
                sojourn_policy::EntryPoint::Init
            } else {
                sojourn_policy::EntryPoint::Tick
            },
            inputs: EntryInputs {
                now_ms: 1_800_000_000_000 + seq as i64,
                random_seed: Digest([0; 32]),
                random_bytes: 0,
                message_digest: None,
            },
            state_before: before,
            state_after: Digest(state_digest(&fields)),
            outcome: Outcome::Accepted,
            writes,
            emitted: Vec::new(),
            logs: Vec::new(),
            decision: Some(Decision::WakeAt {
                at_ms: 0,
                requested_ms: None,
            }),
            fuel_used: 10,
            descriptor_digest: digest,
        });
    }
    println!(
        "machine: {} logical CPUs (single-threaded runs unless marked); entries per case: {n}",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "{:>8} {:>12} {:>16} {:>16} {:>16} {:>12}",
        "batch",
        "appends/s",
        "fast verified/s",
        format!("fast x{cpus} thr/s"),
        "full verified/s",
        "export"
    );
    for batch in [64usize, 256, 1024] {
        let mut w = LineageWriter::new(
            [1; 16],
            &d,
            Box::new(P256Signer::from_secret(&[3; 32]).unwrap()),
            Box::new(SoftwareAttester::new(
                SoftwareKey::from_seed([4; 32]).unwrap(),
            )),
            ReferenceValues::default().allowing_software(),
            WriterConfig {
                batch_size: batch,
                epoch_max_entries: 10_000,
                epoch_max_age_ms: 3_600_000,
            },
        );
        let t = Instant::now();
        for r in &records {
            // The trust-slope check the runtime makes before committing, then the append.
            d.check_trust(&r.writes, Some(w.trust())).unwrap();
            w.append(r, r.inputs.now_ms).unwrap();
        }
        w.flush().unwrap();
        let append = n as f64 / t.elapsed().as_secs_f64();
        let export = w.drain_output();
        let opts = VerifyOptions {
            reference: Some(ReferenceValues::default().allowing_software()),
            at: None,
        };
        // Best of three for the fast check (it is short enough for noise to matter).
        let mut fast = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let s = verify_chain_and_signatures(&export).unwrap();
            fast = fast.max(n as f64 / t.elapsed().as_secs_f64());
            assert_eq!(s.entries, n);
        }
        let mut par = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let s = verify_chain_and_signatures_parallel(&export, cpus).unwrap();
            par = par.max(n as f64 / t.elapsed().as_secs_f64());
            assert_eq!(s.entries, n);
        }
        let t = Instant::now();
        let s = verify_lineage(&export, &opts).unwrap();
        let full = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(s.entries, n);
        println!(
            "{batch:>8} {append:>12.0} {fast:>16.0} {par:>16.0} {full:>16.0} {:>9} KiB",
            export.len() / 1024
        );
    }
    // What one batch signature costs the verifier: the floor of the fast check per batch.
    let signer = P256Signer::from_secret(&[3; 32]).unwrap();
    let (pk, sig) = (signer.public_key(), signer.sign(b"payload"));
    let t = Instant::now();
    for _ in 0..200 {
        sojourn_lineage::signer::verify_es256(&pk, b"payload", &sig).unwrap();
    }
    println!(
        "one ES256 verification: {:.0} us",
        t.elapsed().as_secs_f64() * 1e6 / 200.0
    );
    println!("(fast: decoding, chain, inclusion proofs, batch signatures, one thread unless marked; full: that plus evidence appraisal, state replay and trust slope)");
}
