//! Load on the host daemon's core: N resident objects at their own cadences (1–5 s, chosen
//! by each object from its randomness), every transition durable with its lineage.
//! Prints a table: tick lateness p50/p99/p99.9, ticks and durable transitions per second,
//! store commits per second, resident memory per object.
//!
//! `SOJOURN_BENCH_OBJECTS` (default 10000), `SOJOURN_BENCH_SECONDS` (default 30).
//! Run: `cargo bench -p sojourn-host --bench daemon_load`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench: fail loudly

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sojourn_api::{DeployRequest, HostControl};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_host::daemon::{CoreOptions, HostCore, LineageSetup};
use sojourn_store::{SealingKey, Store};

/// Ticks every 1000 + (random % 4000) ms, counts ticks in a field and in memory.
const WAT: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (import "sojourn" "random" (func $random (param i32 i32)))
  (memory (export "memory") 1 1)
  (data (i32.const 0) "ticks")
  (func (export "sojourn_tick") (param i64) (result i64)
    (call $set (i32.const 0) (i32.const 5) (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
    (i64.store (i32.const 1024) (call $get (i32.const 0) (i32.const 5)))
    (call $random (i32.const 64) (i32.const 8))
    (i64.add (i64.const 1000) (i64.rem_u (i64.load (i32.const 64)) (i64.const 4000)))))"#;

const TOML: &str = r#"[object]
name = "pulse"
version = 1
module = "pulse.wasm"
[cycle]
min_interval_ms = 100
[limits]
fuel_per_entry = 100000
memory_pages_max = 1
[schema.fields.ticks]
type = "int"
default = 0
monotonic = true
[policy.writers]
tick = ["ticks"]
"#;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2} ms")
    } else {
        "> 100 ms".to_string()
    }
}

fn main() {
    let n = env("SOJOURN_BENCH_OBJECTS", 10_000);
    let secs = env("SOJOURN_BENCH_SECONDS", 30);
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).unwrap();
    let dir = std::env::temp_dir().join(format!("sojourn-bench-{}", hex::encode(r)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).unwrap();
    let store = Store::open(&dir, SealingKey::from_bytes(k)).unwrap();
    let seed = SoftwareKey::generate().unwrap().to_seed_hex();
    let lineage = LineageSetup {
        attester: Arc::new(move || {
            SoftwareKey::from_seed_hex(&seed)
                .map(|k| Box::new(SoftwareAttester::new(k)) as Box<dyn Attester + Send>)
                .map_err(|e| e.to_string())
        }),
        reference: ReferenceValues::default().allowing_software(),
        label: "software".into(),
        software: true,
    };
    let rss0 = rss_kib();
    let core = HostCore::start(store, lineage, CoreOptions::default()).unwrap();
    let req = DeployRequest {
        object_toml: TOML.into(),
        module_base64: base64::engine::general_purpose::STANDARD
            .encode(wat::parse_str(WAT).unwrap()),
    };
    let t0 = Instant::now();
    let threads = 32u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let core = core.clone();
            let req = req.clone();
            s.spawn(move || {
                for _ in (t..n).step_by(threads as usize) {
                    core.deploy(req.clone()).unwrap();
                }
            });
        }
    });
    let deploy_s = t0.elapsed().as_secs_f64();
    // Let the first wakes (due right after deploy) pass, then measure a steady window.
    std::thread::sleep(Duration::from_secs(6));
    let rss1 = rss_kib();
    let m = core.metrics();
    m.reset_lateness();
    let (ticks0, dur0, commits0) = (
        m.ticks.load(Relaxed),
        m.durable_transitions.load(Relaxed),
        m.commits.load(Relaxed),
    );
    let bytes0 = core.store().stats().bytes_written;
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = t1.elapsed().as_secs_f64();
    let l = m.lateness();
    let ticks = m.ticks.load(Relaxed) - ticks0;
    let durable = m.durable_transitions.load(Relaxed) - dur0;
    let commits = m.commits.load(Relaxed) - commits0;
    let bytes = core.store().stats().bytes_written - bytes0;
    let rss2 = rss_kib();
    core.shutdown();
    let _ = std::fs::remove_dir_all(&dir);

    println!("daemon load: {n} objects, cadence 1-5 s each, {secs} s window, software attestation, sealed redb store with fsync per group commit");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| deploy (32 threads) | {deploy_s:.1} s ({:.0} objects/s) |",
        n as f64 / deploy_s
    );
    println!("| wakes observed | {} |", l.count);
    println!("| tick lateness p50 | {} |", ms(l.p50_ms));
    println!("| tick lateness p99 | {} |", ms(l.p99_ms));
    println!("| tick lateness p99.9 | {} |", ms(l.p999_ms));
    println!("| tick lateness mean | {:.2} ms |", l.mean_ms);
    println!("| ticks per second | {:.0} |", ticks as f64 / window);
    println!(
        "| durable transitions per second | {:.0} |",
        durable as f64 / window
    );
    println!(
        "| store commits per second | {:.0} |",
        commits as f64 / window
    );
    println!(
        "| store MiB written per second | {:.2} |",
        bytes as f64 / window / 1048576.0
    );
    println!(
        "| resident memory per object (after deploy) | {:.0} KiB |",
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
    println!(
        "| resident memory per object (end of window) | {:.0} KiB |",
        (rss2.saturating_sub(rss0)) as f64 / n as f64
    );
}
