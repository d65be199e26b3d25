//! Lineage append and verification throughput, one core.
//!
//! `cargo bench -p sojourn-lineage --bench lineage`; `SOJOURN_BENCH_ENTRIES` sets the number
//! of entries per case (default 100000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench binary

use std::time::Instant;

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::ReferenceValues;
use sojourn_lineage::{verify_lineage, LineageWriter, P256Signer, VerifyOptions, WriterConfig};
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
        "machine: {} logical CPUs (single-threaded runs); entries per case: {n}",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!(
        "{:>8} {:>16} {:>18} {:>12}",
        "batch", "appends/s", "verified/s", "export"
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
        let t = Instant::now();
        let s = verify_lineage(&export, &opts).unwrap();
        let verify = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(s.entries, n);
        println!(
            "{batch:>8} {append:>16.0} {verify:>18.0} {:>9} KiB",
            export.len() / 1024
        );
    }
    println!("(verification includes decoding, chain, inclusion proofs, batch signatures, evidence, state replay and trust slope)");
}
