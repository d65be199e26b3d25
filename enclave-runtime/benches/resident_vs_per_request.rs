//! Resident objects versus a per-request function host, on the same object and events.
//!
//! `cargo bench -p sojourn-runtime --bench resident_vs_per_request` prints a table of
//! per-event medians and ends with `resident_vs_per_request_ratio: <R>`.
//! Set `SOJOURN_BENCH_EVENTS` to change the number of events per case (default 20000), and
//! `SOJOURN_BENCH_SKIP_ROLLBACK=1` to skip the memory-rollback table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench binary: failures abort

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sojourn_policy::{parse_descriptor, EntryPoint, Fields, Value};
use sojourn_runtime::function_host::FunctionHost;
use sojourn_runtime::{ObjectEngine, ObjectId, Outcome, ResidentObject};

const COUNTER_TOML: &str = include_str!("../../examples/counter/object.toml");
const COUNTER_WASM: &[u8] = include_bytes!("../../examples/counter/counter.wasm");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// A guest with `pages` of memory that dirties one 4 KiB chunk per tick.
fn toucher(pages: u32, rollback: &str) -> (Vec<u8>, String) {
    let wat = format!(
        r#"(module
          (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
          (memory (export "memory") {pages})
          (global $n (mut i32) (i32.const 0))
          (data (i32.const 0) "n")
          (func (export "sojourn_tick") (param $now i64) (result i64)
            (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (i32.store (i32.add (i32.const 8) (i32.rem_u (i32.mul (global.get $n) (i32.const 4096)) (i32.const {bytes})))
                       (global.get $n))
            (call $set (i32.const 0) (i32.const 1) (i64.extend_i32_u (global.get $n)))
            (i64.const 1)))"#,
        bytes = pages * 65536
    );
    let wasm = wat::parse_str(wat).unwrap();
    let toml = format!(
        "[object]\nname='toucher'\nversion=1\nmodule='t.wasm'\n[limits]\nfuel_per_entry=100000\n\
         memory_pages_max={pages}\nrollback='{rollback}'\n[schema.fields.n]\ntype='int'\ndefault=0\n\
         [policy.writers]\ntick=['n']\n"
    );
    (wasm, toml)
}

fn resident_tick_median(wasm: &[u8], toml: &str, events: usize) -> Duration {
    let engine = ObjectEngine::new().unwrap();
    let d = parse_descriptor("bench", toml, wasm).unwrap();
    let m = engine.compile(wasm).unwrap();
    let (mut obj, _) =
        ResidentObject::create(&engine, &m, d, ObjectId([1; 16]), 0, [0; 32]).unwrap();
    let mut samples = Vec::with_capacity(events);
    for i in 0..events {
        let now = i as i64 * 100;
        let t = Instant::now();
        let recs = obj.wake(now, [3; 32]);
        samples.push(t.elapsed());
        assert_eq!(recs[0].outcome, Outcome::Accepted);
    }
    median(samples)
}

fn main() {
    let events: usize = std::env::var("SOJOURN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let descriptor = parse_descriptor("counter/object.toml", COUNTER_TOML, COUNTER_WASM).unwrap();

    // (a) resident: one live instance, one call per event, schema/policy check included.
    let resident = resident_tick_median(COUNTER_WASM, COUNTER_TOML, events);

    // (b) per-request: new store + instantiate from InstancePre (pooling allocator), state
    //     loaded from and stored to a key-value map around each call, same checks.
    let host = FunctionHost::new(COUNTER_WASM, descriptor.clone()).unwrap();
    let mut kv = HashMap::new();
    let mut samples = Vec::with_capacity(events);
    for i in 0..events {
        let t = Instant::now();
        let out = host
            .handle_tick(&mut kv, "counter", i as i64 * 100, [3; 32])
            .unwrap();
        samples.push(t.elapsed());
        assert_eq!(out, Outcome::Accepted);
    }
    let per_request = median(samples);

    // (c) the schema/policy check alone, as a resident tick does it.
    let before: Fields = descriptor.initial_state();
    let mut writes = Fields::new();
    writes.insert("count".into(), Value::Int(1));
    let mut samples = Vec::with_capacity(events);
    for _ in 0..events {
        let t = Instant::now();
        let after = descriptor.check_transition(EntryPoint::Tick, &before, &writes);
        samples.push(t.elapsed());
        assert!(after.is_ok());
    }
    let check = median(samples);

    println!(
        "machine: {} logical CPUs; events per case: {events}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("object: examples/counter (tick: read count, write count+1, return 100 ms)");
    println!();
    println!("{:<58} {:>12}", "case", "median/event");
    println!(
        "{:<58} {:>10.0}ns",
        "(a) resident: live instance, call, schema+policy check",
        ns(resident)
    );
    println!(
        "{:<58} {:>10.0}ns",
        "(b) per-request: store+instantiate (pooling), kv load/store",
        ns(per_request)
    );
    println!(
        "{:<58} {:>10.0}ns",
        "(c) schema+policy check alone (resident per-tick overhead)",
        ns(check)
    );

    // (d) rollback = "memory": cost per MiB of resident memory, one dirty chunk per tick.
    if std::env::var_os("SOJOURN_BENCH_SKIP_ROLLBACK").is_some() {
        println!();
        println!(
            "resident_vs_per_request_ratio: {:.1}",
            ns(per_request) / ns(resident)
        );
        return;
    }
    println!();
    println!(
        "{:<14} {:>14} {:>14} {:>16} {:>16}",
        "memory", "fields/tick", "memory/tick", "extra per MiB", "full copy/MiB"
    );
    let rb_events = (events / 4).max(200);
    for pages in [16u32, 64, 256] {
        let (w, t_fields) = toucher(pages, "fields");
        let (_, t_mem) = toucher(pages, "memory");
        let a = resident_tick_median(&w, &t_fields, rb_events);
        let b = resident_tick_median(&w, &t_mem, rb_events);
        let mib = f64::from(pages) / 16.0;
        // What a naive snapshot-every-entry would pay: copying the whole memory.
        let src = vec![1u8; pages as usize * 65536];
        let mut dst = vec![0u8; src.len()];
        let mut copies = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            copies.push(t.elapsed());
            std::hint::black_box(&dst);
        }
        let copy = median(copies);
        println!(
            "{:<14} {:>12.0}ns {:>12.0}ns {:>14.0}ns {:>14.0}ns",
            format!("{mib} MiB"),
            ns(a),
            ns(b),
            (ns(b) - ns(a)) / mib,
            ns(copy) / mib
        );
    }
    println!();
    println!(
        "resident_vs_per_request_ratio: {:.1}",
        ns(per_request) / ns(resident)
    );
}
