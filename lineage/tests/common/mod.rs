//! Shared by the lineage test binaries: a small object, its descriptor, and a helper that
//! runs it and writes its lineage with software evidence.
#![allow(dead_code)]

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::ReferenceValues;
use sojourn_lineage::export::Item;
use sojourn_lineage::{LineageWriter, P256Signer, VerifyOptions, WriterConfig};
use sojourn_policy::parse_descriptor;
use sojourn_runtime::{ObjectEngine, ObjectId, ResidentObject};

pub const GUEST: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (import "sojourn" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (data (i32.const 16) "secret")
  (data (i32.const 32) "gated")
  (func (export "sojourn_tick") (param i64) (result i64)
    (call $set (i32.const 0) (i32.const 5) (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
    (i64.const 10))
  (func (export "sojourn_on_message") (param i32) (result i32)
    (drop (call $msg_read (i32.const 64) (i32.const 16)))
    (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 115)) (then ;; s: secret := count
      (call $set (i32.const 16) (i32.const 6) (call $get (i32.const 0) (i32.const 5)))))
    (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 103)) (then ;; g: gated := 1
      (call $set (i32.const 32) (i32.const 5) (i64.const 1))))
    (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 122)) (then ;; z: count := 0 (monotonic)
      (call $set (i32.const 0) (i32.const 5) (i64.const 0))))
    (i32.const 0)))"#;

pub fn toml(allow_software: bool) -> String {
    format!(
        r#"
[object]
name = "ledger"
version = 1
module = "l.wasm"
[limits]
fuel_per_entry = 100000
memory_pages_max = 1
[schema.fields.count]
type = "int"
default = 0
monotonic = true
[schema.fields.secret]
type = "int"
default = 0
attestation_required = true
[schema.fields.gated]
type = "int"
default = 0
[policy.writers]
tick = ["count"]
message = ["count", "secret", "gated"]
[policy.attestation]
allow_software = {allow_software}
[[policy.trust.rules]]
field = "gated"
window = 2
min_score = 100
"#
    )
}

pub fn software_reference() -> ReferenceValues {
    ReferenceValues::default().allowing_software()
}

/// Runs the object through `script` ('t' = wake, other = message then wake) and returns the
/// export bytes.
pub fn history(object: u8, script: &str, cfg: WriterConfig, allow_software: bool) -> Vec<u8> {
    let wasm = wat::parse_str(GUEST).unwrap();
    let d = parse_descriptor("ledger/object.toml", &toml(allow_software), &wasm).unwrap();
    let engine = ObjectEngine::new().unwrap();
    let m = engine.compile(&wasm).unwrap();
    let id = ObjectId([object; 16]);
    let mut now = 1_800_000_000_000i64;
    let (mut obj, init) = ResidentObject::create(&engine, &m, d.clone(), id, now, [1; 32]).unwrap();
    let key = SoftwareKey::from_seed([7; 32]).unwrap();
    let mut w = LineageWriter::new(
        id.0,
        &d,
        Box::new(P256Signer::from_secret(&[object.max(1); 32]).unwrap()),
        Box::new(SoftwareAttester::new(key)),
        software_reference(),
        cfg,
    );
    w.append(&init, now).unwrap();
    obj.set_trust(Some(w.trust().clone()));
    for c in script.chars() {
        now += 10;
        if c != 't' {
            obj.enqueue(c.to_string().into_bytes()).unwrap();
        }
        obj.wake_with(now, [2; 32], &mut |rec, trust| {
            w.append(rec, now).unwrap();
            *trust = Some(w.trust().clone());
        });
    }
    w.flush().unwrap();
    w.drain_output()
}

pub fn opts() -> VerifyOptions {
    VerifyOptions {
        reference: Some(software_reference()),
        at: None,
    }
}

pub fn items(bytes: &[u8]) -> Vec<Item> {
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(i) = Item::read(&mut input).unwrap() {
        out.push(i);
    }
    out
}

pub fn join(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        i.write(&mut out);
    }
    out
}

pub fn small() -> WriterConfig {
    WriterConfig {
        batch_size: 4,
        epoch_max_entries: 5,
        epoch_max_age_ms: 60_000,
    }
}
