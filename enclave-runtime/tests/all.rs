//! Runtime behaviour: transactions, rejections, rollback, containment, snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use sojourn_policy::{parse_descriptor, Value};
use sojourn_runtime::{
    Decision, InboxError, ObjectEngine, ObjectId, Outcome, ResidentObject, Schedule, Status,
    TransitionRecord,
};

pub const GUEST: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (import "sojourn" "field_set_bytes" (func $setb (param i32 i32 i32 i32)))
  (import "sojourn" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "sojourn" "emit" (func $emit (param i32 i32)))
  (import "sojourn" "random" (func $random (param i32 i32)))
  (import "sojourn" "last_rejection" (func $lastrej (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $ticks (mut i64) (i64.const 0))
  (global $seen_rejections (mut i32) (i32.const 0))
  (data (i32.const 0) "count")
  (data (i32.const 16) "label")
  (data (i32.const 32) "seen")
  (func $note
    (if (i32.gt_s (call $lastrej (i32.const 128) (i32.const 128)) (i32.const 0))
      (then (global.set $seen_rejections (i32.add (global.get $seen_rejections) (i32.const 1))))))
  (func (export "sojourn_tick") (param $now i64) (result i64)
    (call $note)
    (global.set $ticks (i64.add (global.get $ticks) (i64.const 1)))
    (call $set (i32.const 0) (i32.const 5) (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
    (i64.store (i32.const 256) (global.get $ticks))
    (i64.const 100))
  (func (export "sojourn_on_message") (param $len i32) (result i32)
    (local $c i32)
    (call $note)
    (drop (call $msg_read (i32.const 64) (i32.const 64)))
    (local.set $c (i32.load8_u (i32.const 64)))
    (if (i32.eq (local.get $c) (i32.const 105)) (then ;; i: increment
       (call $set (i32.const 0) (i32.const 5) (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
       (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 100)) (then (return (i32.const 1)))) ;; d: defer
    (if (i32.eq (local.get $c) (i32.const 114)) (then (return (i32.const 2)))) ;; r: refuse
    (if (i32.eq (local.get $c) (i32.const 122)) (then ;; z: reset a monotonic field
       (call $set (i32.const 0) (i32.const 5) (i64.const 0)) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 108)) (then ;; l: change the immutable label
       (call $setb (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 1)) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 109)) (then ;; m: scribble on memory, then an invalid write
       (i32.store (i32.const 512) (i32.const 0xdeadbeef))
       (call $set (i32.const 32) (i32.const 4) (i64.const -1)) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 120)) (then ;; x: randomness into a field
       (call $random (i32.const 300) (i32.const 8))
       (call $set (i32.const 32) (i32.const 4) (i64.and (i64.load (i32.const 300)) (i64.const 0xffff)))
       (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 101)) (then ;; e: emit the tick global and rejections seen
       (i64.store (i32.const 400) (global.get $ticks))
       (i32.store (i32.const 408) (global.get $seen_rejections))
       (call $emit (i32.const 400) (i32.const 12)) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable)) ;; t: trap
    (i32.const 0)))"#;

pub fn descriptor_toml(rollback: &str) -> String {
    format!(
        r#"
[object]
name = "probe"
version = 1
module = "probe.wasm"
[cycle]
min_interval_ms = 10
max_interval_ms = 1000
inbox_capacity = 4
max_message_bytes = 16
[limits]
fuel_per_entry = 100000
memory_pages_max = 4
rollback = "{rollback}"
[schema.fields.count]
type = "int"
min = 0
default = 0
monotonic = true
[schema.fields.label]
type = "string"
max_len = 8
default = "obj"
immutable = true
[schema.fields.seen]
type = "int"
min = 0
max = 65535
default = 0
[policy.writers]
tick = ["count"]
message = ["count", "seen", "label"]
[[policy.invariants]]
name = "count_is_small"
expr = "count < 1000"
"#
    )
}

pub fn probe(engine: &ObjectEngine, rollback: &str) -> (ResidentObject, TransitionRecord) {
    let wasm = wat::parse_str(GUEST).unwrap();
    let d = parse_descriptor("probe/object.toml", &descriptor_toml(rollback), &wasm).unwrap();
    let m = engine.compile(&wasm).unwrap();
    ResidentObject::create(engine, &m, d, ObjectId([7; 16]), 1_000, [1; 32]).unwrap()
}

fn int(obj: &ResidentObject, f: &str) -> i64 {
    match obj.fields().get(f) {
        Some(Value::Int(i)) => *i,
        other => panic!("{f}: {other:?}"),
    }
}

fn send(obj: &mut ResidentObject, now: i64, msg: &str) -> Vec<TransitionRecord> {
    obj.enqueue(msg.as_bytes().to_vec()).unwrap();
    obj.wake(now, [2; 32])
}

mod transactions {
    use super::*;

    #[test]
    fn ticks_commit_and_the_object_chooses_its_cadence() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, init) = probe(&engine, "fields");
        assert_eq!(init.outcome, Outcome::Accepted);
        assert_eq!(obj.schedule(), Schedule::WakeAt(1_000));
        let recs = obj.wake(1_000, [0; 32]);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].outcome, Outcome::Accepted);
        assert_ne!(recs[0].state_before, recs[0].state_after);
        assert_eq!(int(&obj, "count"), 1);
        assert_eq!(obj.schedule(), Schedule::WakeAt(1_100));
        assert_eq!(
            recs[0].decision,
            Some(Decision::WakeAt {
                at_ms: 1_100,
                requested_ms: None
            })
        );
        assert!(recs[0].fuel_used > 0);
        assert_eq!(recs[0].seq, 1);
    }

    #[test]
    fn rejected_writes_leave_state_untouched_and_are_visible_next_entry() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "fields");
        obj.wake(1_000, [0; 32]);
        let before = obj.state_digest();
        for (msg, needle) in [
            ("z", "monotonic"),
            ("l", "immutable"),
            ("m", "below the minimum"),
        ] {
            let recs = send(&mut obj, 2_000, msg);
            match &recs[0].outcome {
                Outcome::Rejected { reason } => assert!(reason.contains(needle), "{reason}"),
                o => panic!("{msg}: {o:?}"),
            }
            assert_eq!(recs[0].state_before, recs[0].state_after);
            // The tick that follows in the same wake commits normally.
            assert_eq!(recs[1].outcome, Outcome::Accepted);
        }
        assert_ne!(obj.state_digest(), before); // only the ticks moved it
        assert_eq!(int(&obj, "count"), 4);
        // Each rejection was seen by the next entry (the tick after it).
        let recs = send(&mut obj, 3_000, "e");
        let out = &recs[0].emitted[0];
        assert_eq!(i32::from_le_bytes(out[8..12].try_into().unwrap()), 3);
    }

    #[test]
    fn policy_writers_and_invariants_are_enforced() {
        let wasm = wat::parse_str(GUEST).unwrap();
        let toml = descriptor_toml("fields")
            .replace("tick = [\"count\"]", "tick = []")
            .replace("count < 1000", "count < 2");
        let d = parse_descriptor("x", &toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let (mut obj, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([1; 16]), 0, [0; 32]).unwrap();
        let r = obj.wake(0, [0; 32]);
        assert!(
            matches!(&r[0].outcome, Outcome::Rejected { reason } if reason.contains("tick may not write field `count`"))
        );
        send(&mut obj, 1, "i");
        let r = send(&mut obj, 2, "i");
        assert!(
            matches!(&r[0].outcome, Outcome::Rejected { reason } if reason.contains("count_is_small")),
            "{r:?}"
        );
        assert_eq!(int(&obj, "count"), 1);
    }

    #[test]
    fn elections_consume_defer_refuse() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "fields");
        obj.enqueue(b"d".to_vec()).unwrap();
        obj.enqueue(b"r".to_vec()).unwrap();
        obj.enqueue(b"i".to_vec()).unwrap();
        let recs = obj.wake(5, [0; 32]);
        let outs: Vec<&str> = recs.iter().map(|r| r.outcome.label()).collect();
        assert_eq!(outs, ["deferred", "refused", "accepted", "accepted"]);
        assert_eq!(obj.inbox_len(), 1, "the deferred message stays queued");
        let recs = obj.wake(200, [0; 32]);
        assert_eq!(recs[0].outcome, Outcome::Deferred);
        assert_eq!(recs[0].inputs.message_digest, recs[0].inputs.message_digest);
    }

    #[test]
    fn inbox_limits_are_clear_errors() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "fields");
        assert_eq!(
            obj.enqueue(vec![b'i'; 17]),
            Err(InboxError::TooLarge { len: 17, max: 16 })
        );
        for _ in 0..4 {
            obj.enqueue(b"d".to_vec()).unwrap();
        }
        assert_eq!(
            obj.enqueue(b"d".to_vec()),
            Err(InboxError::Full { capacity: 4 })
        );
        let silent = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "sojourn_tick") (param i64) (result i64) (i64.const -1)))"#,
        )
        .unwrap();
        let toml = "[object]\nname='s'\nversion=1\nmodule='s.wasm'\n[limits]\nfuel_per_entry=1000\nmemory_pages_max=1\n[schema.fields]\n";
        let d = parse_descriptor("s", toml, &silent).unwrap();
        let m = engine.compile(&silent).unwrap();
        let (mut s, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([2; 16]), 0, [0; 32]).unwrap();
        assert_eq!(s.enqueue(b"hi".to_vec()), Err(InboxError::NotAccepted));
        s.wake(0, [0; 32]);
        assert_eq!(s.schedule(), Schedule::AwaitMessage);
    }

    #[test]
    fn cadence_is_clamped_to_policy() {
        let engine = ObjectEngine::new().unwrap();
        for (ret, min, max, expect_at, asked) in [
            ("5", "10", "1000", 10, Some(5)),
            ("5000", "10", "1000", 1000, Some(5000)),
            ("-1", "10", "1000", 1000, Some(-1)),
            ("50", "10", "1000", 50, None),
        ] {
            let wasm = wat::parse_str(format!(
                r#"(module (memory (export "memory") 1)
                     (func (export "sojourn_tick") (param i64) (result i64) (i64.const {ret})))"#
            ))
            .unwrap();
            let toml = format!("[object]\nname='c'\nversion=1\nmodule='c.wasm'\n[cycle]\nmin_interval_ms={min}\nmax_interval_ms={max}\n[limits]\nfuel_per_entry=1000\nmemory_pages_max=1\n[schema.fields]\n");
            let d = parse_descriptor("c", &toml, &wasm).unwrap();
            let m = engine.compile(&wasm).unwrap();
            let (mut o, _) =
                ResidentObject::create(&engine, &m, d, ObjectId([3; 16]), 0, [0; 32]).unwrap();
            let r = o.wake(0, [0; 32]);
            assert_eq!(
                r[0].decision,
                Some(Decision::WakeAt {
                    at_ms: expect_at,
                    requested_ms: asked
                }),
                "tick returned {ret}"
            );
        }
    }

    #[test]
    fn randomness_is_recorded_and_replays() {
        let engine = ObjectEngine::new().unwrap();
        let (mut a, _) = probe(&engine, "fields");
        let (mut b, _) = probe(&engine, "fields");
        let ra = send(&mut a, 10, "x");
        let rb = send(&mut b, 10, "x");
        assert_eq!(ra[0].inputs.random_bytes, 8);
        assert_eq!(ra, rb, "same inputs, same transitions");
        assert_eq!(a.fields(), b.fields());
        b.enqueue(b"x".to_vec()).unwrap();
        let rc = b.wake(20, [9; 32]);
        assert_ne!(rc[0].inputs.random_seed, ra[0].inputs.random_seed);
    }
}

mod rollback {
    use super::*;

    fn scribble_present(obj: &mut ResidentObject) -> u32 {
        // The snapshot carries the non-zero memory chunks verbatim: look for the scribble.
        let snap = obj.snapshot().unwrap();
        let needle = 0xdeadbeef_u32.to_le_bytes();
        u32::from(snap.windows(4).any(|w| w == needle))
    }

    #[test]
    fn memory_rollback_restores_linear_memory_on_rejection() {
        let engine = ObjectEngine::new().unwrap();
        let (mut with, _) = probe(&engine, "memory");
        let (mut without, _) = probe(&engine, "fields");
        for obj in [&mut with, &mut without] {
            let r = send(obj, 10, "m");
            assert!(matches!(r[0].outcome, Outcome::Rejected { .. }));
        }
        assert_eq!(
            scribble_present(&mut with),
            0,
            "rollback = memory undoes the scribble"
        );
        assert_eq!(
            scribble_present(&mut without),
            1,
            "rollback = fields keeps memory as left"
        );
    }
}

mod containment {
    use super::*;

    fn hostile(body: &str, pages_max: u32) -> (ObjectEngine, ResidentObject, TransitionRecord) {
        let wasm = wat::parse_str(format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "sojourn_tick") (param i64) (result i64) {body}))"#
        ))
        .unwrap();
        let toml = format!("[object]\nname='h'\nversion=1\nmodule='h.wasm'\n[limits]\nfuel_per_entry=200000\nmemory_pages_max={pages_max}\nrollback='memory'\n[schema.fields]\n");
        let d = parse_descriptor("h", &toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let (mut o, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([4; 16]), 0, [0; 32]).unwrap();
        let r = o.wake(0, [0; 32]).remove(0);
        (engine, o, r)
    }

    #[test]
    fn runaway_entries_are_stopped_and_the_object_suspended() {
        for (body, needle) in [
            ("(loop $l (br $l)) (i64.const 0)", "fuel budget exhausted"),
            (
                "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i64.const 0)",
                "exceeds the cap of 8 pages",
            ),
            ("unreachable", "unreachable"),
            ("(i64.const -7)", "returned -7"),
        ] {
            let (_e, mut o, r) = hostile(body, 8);
            match &r.outcome {
                Outcome::Faulted { reason } => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{body}: {other:?}"),
            }
            assert!(matches!(o.status(), Status::Suspended { reason } if reason.contains(needle)));
            // A suspended object does not run, but stays inspectable and snapshot-able.
            assert!(o.wake(10_000, [0; 32]).is_empty());
            assert!(o.snapshot().is_ok());
        }
    }

    #[test]
    fn non_replayable_objects_are_budgeted_in_wall_time_replayable_ones_in_fuel() {
        for (replayable, needle) in [
            (false, "time budget exceeded"),
            (true, "fuel budget exhausted"),
        ] {
            let wasm = wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "sojourn_tick") (param i64) (result i64) (loop $l (br $l)) (i64.const 0)))"#,
            )
            .unwrap();
            let toml = format!("[object]\nname='h'\nversion=1\nmodule='h.wasm'\n[limits]\nfuel_per_entry=100000\ntime_per_entry_ms=50\nmemory_pages_max=1\nreplayable={replayable}\n[schema.fields]\n");
            let d = parse_descriptor("h", &toml, &wasm).unwrap();
            let engine = ObjectEngine::new().unwrap();
            let m = engine.compile(&wasm).unwrap();
            let (mut o, _) =
                ResidentObject::create(&engine, &m, d, ObjectId([4; 16]), 0, [0; 32]).unwrap();
            // The host's epoch ticker.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (e2, s2) = (engine.clone(), stop.clone());
            let ticker = std::thread::spawn(move || {
                while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    e2.tick_epoch();
                }
            });
            let r = o.wake(0, [0; 32]).remove(0);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            ticker.join().unwrap();
            match &r.outcome {
                Outcome::Faulted { reason } => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn initial_memory_above_the_cap_is_refused_at_creation() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 3)
                 (func (export "sojourn_tick") (param i64) (result i64) (i64.const 0)))"#,
        )
        .unwrap();
        let toml = "[object]\nname='h'\nversion=1\nmodule='h.wasm'\n[limits]\nfuel_per_entry=1000\nmemory_pages_max=2\n[schema.fields]\n";
        let d = parse_descriptor("h", toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let err =
            ResidentObject::create(&engine, &m, d, ObjectId([4; 16]), 0, [0; 32]).unwrap_err();
        assert!(err.to_string().contains("cap of 2 pages"), "{err}");
    }

    #[test]
    fn a_descriptor_for_another_module_is_refused() {
        let engine = ObjectEngine::new().unwrap();
        let wasm = wat::parse_str(GUEST).unwrap();
        let d = parse_descriptor("p", &descriptor_toml("fields"), b"other bytes").unwrap();
        let m = engine.compile(&wasm).unwrap();
        let err =
            ResidentObject::create(&engine, &m, d, ObjectId([0; 16]), 0, [0; 32]).unwrap_err();
        assert!(err.to_string().contains("names module sha256"), "{err}");
    }
}

mod snapshots {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_preserves_memory_globals_fields_inbox_and_schedule() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "memory");
        obj.wake(0, [0; 32]);
        obj.wake(100, [0; 32]);
        send(&mut obj, 150, "x");
        obj.enqueue(b"d".to_vec()).unwrap();
        let snap = obj.snapshot().unwrap();
        let other = ObjectEngine::new().unwrap();
        let mut back = ResidentObject::restore(&other, &snap).unwrap();
        assert_eq!(
            back.full_state_digest().unwrap(),
            obj.full_state_digest().unwrap()
        );
        assert_eq!(back.fields(), obj.fields());
        assert_eq!(back.inbox_len(), 1);
        assert_eq!(back.schedule(), obj.schedule());
        // The tick counter lives in a wasm global: it must have survived.
        let a = send(&mut obj, 300, "e");
        let b = send(&mut back, 300, "e");
        assert_eq!(a, b);
        // Three ticks ran before the message (which is offered before this wake's tick).
        assert_eq!(
            u64::from_le_bytes(a[1].emitted[0][..8].try_into().unwrap()),
            3
        );
    }

    /// Re-checksums `body` as a snapshot.
    fn wrap(body: &[u8]) -> Vec<u8> {
        let mut out = b"SJSNAP\x00\x02".to_vec();
        out.extend_from_slice(body);
        let sum = sojourn_policy::canonical::sha256(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn snapshot_bytes_are_the_canonical_encoding_and_non_canonical_ones_are_refused() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "memory");
        obj.wake(0, [0; 32]);
        send(&mut obj, 150, "x");
        obj.enqueue(b"d".to_vec()).unwrap();
        let snap = obj.snapshot().unwrap();
        // A small snapshot passed on in pieces: the same bytes, checksum last.
        let mut pieces = Vec::new();
        obj.snapshot_writer()
            .unwrap()
            .write_to(&mut |b: &[u8]| pieces.extend_from_slice(b));
        assert_eq!(pieces, snap);
        let body = &snap[8..snap.len() - 32];
        // Decoding canonically re-encodes the tree and compares: the streaming writer wrote
        // exactly the canonical encoding of the whole map.
        let tree = sojourn_policy::canonical::decode(body).unwrap();
        assert_eq!(sojourn_policy::canonical::encode(&tree).unwrap(), body);
        assert_eq!(wrap(body), snap);
        // The same map, keys in insertion (non-canonical) order, correctly checksummed.
        let ciborium::Value::Map(mut entries) = tree.clone() else {
            panic!("not a map")
        };
        entries.reverse();
        let mut reordered = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(entries), &mut reordered).unwrap();
        assert_ne!(reordered, body);
        let err = ResidentObject::restore(&engine, &wrap(&reordered))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deterministic"), "{err}");
        // A run's first index in a longer form than needed: the memory is
        // `[[[first, count], …], pad, pages]`.
        let pos = body
            .windows(5)
            .position(|w| {
                w[0] == 0x83
                    && (0x81..0x98).contains(&w[1])
                    && w[2] == 0x82
                    && w[3] < 24
                    && w[4] < 24
            })
            .expect("the memory's runs");
        let mut long = body.to_vec();
        long.splice(pos + 3..pos + 4, [0x18, body[pos + 3]]);
        let err = ResidentObject::restore(&engine, &wrap(&long))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deterministic"), "{err}");
        // Restored (through the fast reader) to the same state.
        let mut back = ResidentObject::restore(&engine, &snap).unwrap();
        assert_eq!(back.snapshot().unwrap(), snap);
    }

    /// A memory of 8 MiB and more is laid out by two threads on restore: a 10 MiB memory
    /// with data written by instantiation and by the object, sparse, on both sides of its
    /// middle and grown beyond its initial size, restores to the same bytes and continues
    /// identically.
    #[test]
    fn a_large_memory_restores_the_same_from_both_halves() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 100 200)
                 (data (i32.const 16) "written at instantiation")
                 (data (i32.const 5242880) "in the upper half")
                 (func (export "sojourn_tick") (param i64) (result i64)
                   (local $p i32)
                   (drop (memory.grow (i32.const 60)))
                   (loop $l
                     (i64.store (local.get $p) (i64.add (local.get 0) (i64.extend_i32_u (local.get $p))))
                     (local.set $p (i32.add (local.get $p) (i32.const 40960)))
                     (br_if $l (i32.lt_u (local.get $p) (i32.const 10485760))))
                   (i64.store (i32.const 16) (i64.const 0))
                   (i64.const -1)))"#,
        )
        .unwrap();
        let toml = "[object]\nname='big'\nversion=1\nmodule='big.wasm'\n[limits]\nfuel_per_entry=10000000\nmemory_pages_max=200\n[schema.fields]\n";
        let d = parse_descriptor("big", toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let (mut obj, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([8; 16]), 0, [0; 32]).unwrap();
        obj.wake(3, [0; 32]);
        let snap = obj.snapshot().unwrap();
        let other = ObjectEngine::new().unwrap();
        let mut back = ResidentObject::restore(&other, &snap).unwrap();
        assert_eq!(back.snapshot().unwrap(), snap);
        let mut auth = ResidentObject::restore_authenticated(&other, &snap).unwrap();
        assert_eq!(auth.snapshot().unwrap(), snap);
        obj.wake(9, [0; 32]);
        back.wake(9, [0; 32]);
        assert_eq!(
            back.full_state_digest().unwrap(),
            obj.full_state_digest().unwrap()
        );
    }

    /// Snapshots of 1 MiB and more are checksummed on a second thread while they are
    /// restored: a flip anywhere, in memory bytes the body reader accepts as they are, is
    /// still refused as a checksum mismatch, and the intact one restores exactly.
    #[test]
    fn a_large_snapshot_is_restored_only_if_its_checksum_matches() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 32)
                 (func (export "sojourn_tick") (param i64) (result i64)
                   (local $p i32)
                   (loop $l
                     (i32.store (local.get $p) (i32.add (local.get $p) (i32.const 7)))
                     (local.set $p (i32.add (local.get $p) (i32.const 4)))
                     (br_if $l (i32.lt_u (local.get $p) (i32.const 2097152))))
                   (i64.const -1)))"#,
        )
        .unwrap();
        let toml = "[object]\nname='big'\nversion=1\nmodule='big.wasm'\n[limits]\nfuel_per_entry=10000000\nmemory_pages_max=32\n[schema.fields]\n";
        let d = parse_descriptor("big", toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let (mut obj, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([9; 16]), 0, [0; 32]).unwrap();
        obj.wake(0, [0; 32]);
        let snap = obj.snapshot().unwrap();
        assert!(snap.len() > 2 << 20, "{}", snap.len());
        // Written after other bytes (as into a package), with its declared length, the same
        // bytes; the digest alone is its checksum.
        let w = obj.snapshot_writer().unwrap();
        assert_eq!(w.len(), snap.len());
        let mut buf = b"prefix".to_vec();
        w.write_into(&mut buf);
        assert_eq!((&buf[..6], &buf[6..]), (&b"prefix"[..], &snap[..]));
        // Passed on in pieces (a package sealed part by part): the same bytes, in order.
        let mut pieces = Vec::new();
        let mut calls = 0;
        w.write_to(&mut |b: &[u8]| {
            pieces.extend_from_slice(b);
            calls += 1;
        });
        assert_eq!(pieces, snap);
        assert!(calls > 1);
        let mut unchecked = Vec::new();
        w.write_unchecked_to(&mut |b: &[u8]| unchecked.extend_from_slice(b));
        assert_eq!(obj.full_state_digest().unwrap().0, snap[snap.len() - 32..]);
        let mut back = ResidentObject::restore(&engine, &snap).unwrap();
        assert_eq!(back.snapshot().unwrap(), snap);
        // Restored as authenticated bytes (from an opened package): the same object; the
        // checksum is not recomputed, so only the structure can refuse such bytes.
        let mut auth = ResidentObject::restore_authenticated(&engine, &snap).unwrap();
        assert_eq!(
            auth.full_state_digest().unwrap(),
            back.full_state_digest().unwrap()
        );
        // With the module from the caller (a host's cache): the same object, the module
        // asked for once with the snapshot's module bytes; a module from other bytes is
        // refused against the descriptor's digest.
        let asked = std::cell::Cell::new(0);
        let module = engine.compile(obj.module_bytes()).unwrap();
        let mut cached = ResidentObject::restore_authenticated_with(&engine, &snap, &|wasm| {
            asked.set(asked.get() + 1);
            assert_eq!(wasm, module.original_bytes());
            Ok(module.clone())
        })
        .unwrap();
        assert_eq!(asked.get(), 1);
        assert_eq!(
            cached.full_state_digest().unwrap(),
            back.full_state_digest().unwrap()
        );
        let stranger = engine
            .compile(
                &wat::parse_str(
                    "(module (memory (export \"memory\") 1) \
                     (func (export \"sojourn_tick\") (param i64) (result i64) (i64.const 5)))",
                )
                .unwrap(),
            )
            .unwrap();
        assert!(matches!(
            ResidentObject::restore_authenticated_with(&engine, &snap, &|_| Ok(stranger.clone())),
            Err(sojourn_runtime::RuntimeError::DescriptorMismatch { .. })
        ));
        let mut other_sum = snap.clone();
        let last = other_sum.len() - 1;
        other_sum[last] ^= 1;
        assert!(ResidentObject::restore(&engine, &other_sum).is_err());
        assert!(ResidentObject::restore_authenticated(&engine, &other_sum).is_ok());
        assert!(ResidentObject::restore_authenticated(&engine, &snap[..snap.len() - 40]).is_err());
        // Written for an authenticating container: the same bytes, the checksum left zero;
        // `restore_authenticated` takes it, `restore` refuses it.
        assert_eq!(unchecked.len(), snap.len());
        assert_eq!(unchecked[..snap.len() - 32], snap[..snap.len() - 32]);
        assert_eq!(unchecked[snap.len() - 32..], [0; 32]);
        let mut from_unchecked =
            ResidentObject::restore_authenticated(&engine, &unchecked).unwrap();
        assert_eq!(
            from_unchecked.full_state_digest().unwrap(),
            back.full_state_digest().unwrap()
        );
        let err = ResidentObject::restore(&engine, &unchecked)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum"), "{err}");
        for at in [snap.len() / 2, snap.len() - 40, snap.len() - 1] {
            let mut bad = snap.clone();
            bad[at] ^= 0x01;
            let err = ResidentObject::restore(&engine, &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("checksum"), "flip at {at}: {err}");
        }
    }

    #[test]
    fn truncated_or_corrupted_snapshots_are_rejected() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "fields");
        obj.wake(0, [0; 32]);
        let snap = obj.snapshot().unwrap();
        let mut lens: Vec<usize> = (0..snap.len()).step_by(97).collect();
        lens.extend([0, 1, 7, 8, 39, 40, snap.len() - 1]);
        for len in lens {
            let err = ResidentObject::restore(&engine, &snap[..len]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("checksum") || msg.contains("not a Sojourn snapshot"),
                "{len}: {msg}"
            );
        }
        for i in (0..snap.len()).step_by(61) {
            let mut bad = snap.clone();
            bad[i] ^= 0x10;
            assert!(
                ResidentObject::restore(&engine, &bad).is_err(),
                "flip at {i}"
            );
        }
        let mut v3 = snap.clone();
        v3[7] = 3;
        assert!(ResidentObject::restore(&engine, &v3)
            .unwrap_err()
            .to_string()
            .contains("version 3"));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Wake(u16),
        Send(u8),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u16..500).prop_map(Ev::Wake),
            prop::sample::select(b"idrzlmxet".to_vec()).prop_map(Ev::Send),
        ]
    }

    fn apply(obj: &mut ResidentObject, now: &mut i64, e: &Ev, out: &mut Vec<String>) {
        match e {
            Ev::Wake(dt) => {
                *now += i64::from(*dt);
                let seed = [(*now % 251) as u8; 32];
                for r in obj.wake(*now, seed) {
                    out.push(format!("{r:?}"));
                }
            }
            Ev::Send(c) => out.push(format!("{:?}", obj.enqueue(vec![*c]))),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn n_steps_equal_k_steps_snapshot_restore_and_the_rest(
            events in prop::collection::vec(ev(), 1..24),
            split in 0usize..24,
            memory_rollback in any::<bool>(),
        ) {
            let rb = if memory_rollback { "memory" } else { "fields" };
            let k = split.min(events.len());
            let e1 = ObjectEngine::new().unwrap();
            let (mut a, _) = probe(&e1, rb);
            let (mut b, _) = probe(&e1, rb);
            let (mut now_a, mut now_b) = (1_000, 1_000);
            let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
            for e in &events {
                apply(&mut a, &mut now_a, e, &mut out_a);
            }
            for e in &events[..k] {
                apply(&mut b, &mut now_b, e, &mut out_b);
            }
            let snap = b.snapshot().unwrap();
            let e2 = ObjectEngine::new().unwrap();
            let mut b = ResidentObject::restore(&e2, &snap).unwrap();
            for e in &events[k..] {
                apply(&mut b, &mut now_b, e, &mut out_b);
            }
            prop_assert_eq!(out_a, out_b);
            prop_assert_eq!(a.full_state_digest().unwrap(), b.full_state_digest().unwrap());
        }

        /// Incremental checkpoints: a store that keeps the whole memory of the first
        /// checkpoint, every later checkpoint's dirty chunks by index and the latest execution
        /// state rebuilds the object exactly, at any point.
        #[test]
        fn checkpoints_accumulated_in_a_chunk_map_restore_exactly(
            events in prop::collection::vec(ev(), 1..24),
            every in 1usize..5,
            memory_rollback in any::<bool>(),
            track_writes in any::<bool>(),
        ) {
            let rb = if memory_rollback { "memory" } else { "fields" };
            // Checkpoints that track writes (where the kernel can) or compare with a copy.
            let engine = || {
                let e = ObjectEngine::new().unwrap();
                if track_writes { e } else { e.without_write_tracking() }
            };
            let e1 = engine();
            let (mut a, _) = probe(&e1, rb);
            let mut chunks = std::collections::BTreeMap::new();
            let mut memory = Vec::new();
            let mut wholes = 0;
            let mut now = 1_000;
            let mut out = Vec::new();
            let mut dirty_total = 0usize;
            for (i, e) in events.iter().enumerate() {
                apply(&mut a, &mut now, e, &mut out);
                if i % every == 0 {
                    let cp = a.checkpoint().unwrap();
                    prop_assert_eq!(cp.seq, a.seq());
                    if let Some(whole) = cp.memory {
                        prop_assert!(cp.dirty.is_empty());
                        memory = whole.to_vec();
                        chunks.clear();
                        wholes += 1;
                    }
                    dirty_total += cp.dirty.len();
                    for (idx, bytes) in cp.dirty {
                        prop_assert_eq!(bytes.len(), 4096);
                        chunks.insert(idx, bytes);
                    }
                }
            }
            // The final checkpoint brings the store up to date (exec is always whole).
            let cp = a.checkpoint().unwrap();
            if let Some(whole) = cp.memory {
                memory = whole.to_vec();
                chunks.clear();
                wholes += 1;
            }
            for (idx, bytes) in cp.dirty {
                chunks.insert(idx, bytes);
            }
            let exec = cp.exec;
            // Only the first checkpoint is whole; the probe's memory is one page: at most 16
            // chunks each time after it.
            prop_assert_eq!(wholes, 1);
            prop_assert_eq!(memory.len(), 65536);
            prop_assert!(dirty_total <= 16 * events.len());
            let wasm = wat::parse_str(GUEST).unwrap();
            let e2 = engine();
            let m = e2.compile(&wasm).unwrap();
            let mut b = ResidentObject::restore_checkpoint(
                &e2, &m, &a.descriptor().encode(), &exec, &memory, &chunks,
            ).unwrap();
            prop_assert_eq!(a.full_state_digest().unwrap(), b.full_state_digest().unwrap());
            // And both continue identically; the restored one's next checkpoint is a delta.
            let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
            let (mut na, mut nb) = (now, now);
            for e in &events {
                apply(&mut a, &mut na, e, &mut out_a);
                apply(&mut b, &mut nb, e, &mut out_b);
            }
            prop_assert_eq!(out_a, out_b);
            let (ca, cb) = (a.checkpoint().unwrap(), b.checkpoint().unwrap());
            prop_assert!(cb.memory.is_none());
            prop_assert_eq!(ca, cb);
            prop_assert_eq!(
                a.memory_writes_tracked(),
                track_writes && sojourn_mem::write_tracking_available()
            );
        }
    }

    /// A whole checkpoint made in a reused buffer (larger, full of other bytes) holds exactly
    /// the memory, like one made in a new allocation; a later (incremental) one ignores it.
    #[test]
    fn a_whole_checkpoint_in_a_reused_buffer_is_the_same_checkpoint() {
        let engine = ObjectEngine::new().unwrap();
        let (mut a, _) = probe(&engine, "fields");
        let (mut b, _) = probe(&engine, "fields");
        let fresh = a.checkpoint().unwrap();
        let reused = b.checkpoint_with_buffer(vec![0xEE; 200_000]).unwrap();
        assert_eq!(fresh, reused);
        assert_eq!(reused.memory.as_ref().map(|m| m.len()), Some(65536));
        a.wake(0, [0; 32]);
        b.wake(0, [0; 32]);
        let (ca, cb) = (
            a.checkpoint().unwrap(),
            b.checkpoint_with_buffer(vec![1; 10]).unwrap(),
        );
        assert!(cb.memory.is_none());
        assert_eq!(ca, cb);
    }

    /// The first checkpoint of an object whose memory the host has already stored (a
    /// migration's destination stages the image from the snapshot it restores) carries no
    /// memory, and the copy that later checkpoints compare with is taken before anything runs:
    /// the next checkpoint carries exactly what the next entry wrote, and the stored image
    /// with those chunks rebuilds the object. Settled early, by a checkpoint, or by the entry
    /// itself, the result is the same.
    #[test]
    fn a_checkpoint_of_stored_memory_takes_its_copy_before_the_next_entry() {
        for engine in [
            ObjectEngine::new().unwrap(),
            ObjectEngine::new().unwrap().without_write_tracking(),
        ] {
            stored_memory_checkpoints(&engine);
        }
    }

    /// With write tracking (where the kernel has it) no copy is owed at all.
    fn stored_memory_checkpoints(engine: &ObjectEngine) {
        let engine = engine.clone();
        let wasm = wat::parse_str(GUEST).unwrap();
        let m = engine.compile(&wasm).unwrap();
        for settle in ["by the entry", "early", "by a checkpoint"] {
            let (mut obj, _) = probe(&engine, "fields");
            obj.wake(0, [0; 32]);
            let snap = obj.snapshot().unwrap();
            // What the destination stored: the restored object's whole memory.
            let mut twin = ResidentObject::restore(&engine, &snap).unwrap();
            let whole = twin.checkpoint().unwrap();
            let image = whole.memory.as_deref().unwrap().clone();
            let mut arrived = ResidentObject::restore(&engine, &snap).unwrap();
            let cp = arrived
                .checkpoint_stored_memory(vec![0xEE; 100_000])
                .unwrap();
            assert!(cp.memory.is_none() && cp.dirty.is_empty(), "{settle}");
            assert_eq!(cp.exec, whole.exec, "{settle}");
            let tracked = arrived.memory_writes_tracked();
            assert_eq!(arrived.checkpoint_unsettled(), !tracked);
            match settle {
                "early" => arrived.settle_checkpoint(),
                "by a checkpoint" => {
                    let again = arrived.checkpoint().unwrap();
                    assert!(again.memory.is_none() && again.dirty.is_empty());
                }
                _ => {}
            }
            assert_eq!(
                arrived.checkpoint_unsettled(),
                settle == "by the entry" && !tracked
            );
            assert_eq!(
                arrived.wake(1_000_000, [0; 32]).len(),
                1,
                "{settle}: one tick"
            );
            assert!(!arrived.checkpoint_unsettled());
            let next = arrived.checkpoint().unwrap();
            // The tick stores its counter at address 256: exactly chunk 0 changed.
            assert!(next.memory.is_none());
            assert_eq!(
                next.dirty.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                vec![0],
                "{settle}"
            );
            let chunks: std::collections::BTreeMap<u32, Vec<u8>> =
                next.dirty.iter().cloned().collect();
            let d = arrived.descriptor().encode();
            let mut back =
                ResidentObject::restore_checkpoint(&engine, &m, &d, &next.exec, &image, &chunks)
                    .unwrap();
            assert_eq!(
                back.full_state_digest().unwrap(),
                arrived.full_state_digest().unwrap(),
                "{settle}"
            );
        }
    }

    /// What a format-1 store holds (no whole image, the non-zero chunks only) restores to the
    /// same object as the whole image does.
    #[test]
    fn memory_stored_as_chunks_only_restores_the_same_object() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "memory");
        obj.wake(0, [0; 32]);
        let cp = obj.checkpoint().unwrap();
        let memory = cp.memory.as_deref().unwrap().clone();
        let chunks: std::collections::BTreeMap<u32, Vec<u8>> = memory
            .chunks(4096)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|b| *b != 0))
            .map(|(i, c)| (i as u32, c.to_vec()))
            .collect();
        assert!(!chunks.is_empty());
        let wasm = wat::parse_str(GUEST).unwrap();
        let m = engine.compile(&wasm).unwrap();
        let d = obj.descriptor().encode();
        let want = obj.full_state_digest().unwrap();
        for (image, over) in [
            (&memory[..], &Default::default()),
            (&[][..], &chunks),
            (&memory[..], &chunks),
        ] {
            let mut back =
                ResidentObject::restore_checkpoint(&engine, &m, &d, &cp.exec, image, over).unwrap();
            assert_eq!(back.full_state_digest().unwrap(), want);
        }
    }

    #[test]
    fn a_checkpoint_without_changes_carries_no_chunks_and_bad_exec_bytes_are_refused() {
        let engine = ObjectEngine::new().unwrap();
        let (mut obj, _) = probe(&engine, "fields");
        let first = obj.checkpoint().unwrap();
        assert!(first.dirty.is_empty(), "the first checkpoint is whole");
        let memory = first.memory.as_deref().unwrap().clone();
        assert_eq!(memory.len(), 65536);
        let again = obj.checkpoint().unwrap();
        assert!(again.dirty.is_empty() && again.memory.is_none());
        assert_eq!(again.exec, first.exec);
        obj.wake(0, [0; 32]);
        let after_tick = obj.checkpoint().unwrap();
        // The tick stores its counter at address 256: exactly chunk 0 changed.
        assert_eq!(
            after_tick.dirty.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0]
        );
        let wasm = wat::parse_str(GUEST).unwrap();
        let m = engine.compile(&wasm).unwrap();
        let d = obj.descriptor().encode();
        let chunks: std::collections::BTreeMap<u32, Vec<u8>> =
            after_tick.dirty.iter().cloned().collect();
        let mut restored =
            ResidentObject::restore_checkpoint(&engine, &m, &d, &after_tick.exec, &memory, &chunks)
                .unwrap();
        assert_eq!(
            restored.full_state_digest().unwrap(),
            obj.full_state_digest().unwrap()
        );
        // Without the tick's chunk the counter is the old one: the chunk is laid over the
        // whole memory, not ignored.
        let mut stale = ResidentObject::restore_checkpoint(
            &engine,
            &m,
            &d,
            &after_tick.exec,
            &memory,
            &Default::default(),
        )
        .unwrap();
        assert_ne!(
            stale.full_state_digest().unwrap(),
            obj.full_state_digest().unwrap()
        );
        for len in [0, 5, 8, after_tick.exec.len() - 1] {
            assert!(ResidentObject::restore_checkpoint(
                &engine,
                &m,
                &d,
                &after_tick.exec[..len],
                &memory,
                &chunks
            )
            .is_err());
        }
        // A whole memory that is not a number of chunks, or larger than the object's.
        for bad_memory in [&memory[..100], &[1u8; 65536 * 2][..]] {
            assert!(ResidentObject::restore_checkpoint(
                &engine,
                &m,
                &d,
                &after_tick.exec,
                bad_memory,
                &chunks
            )
            .is_err());
        }
        // A short chunk, and a chunk beyond the object's memory.
        for (index, bytes) in [(0, vec![0; 100]), (9999, vec![0; 4096])] {
            let bad = std::collections::BTreeMap::from([(index, bytes)]);
            assert!(ResidentObject::restore_checkpoint(
                &engine,
                &m,
                &d,
                &after_tick.exec,
                &memory,
                &bad
            )
            .is_err());
        }
    }
}
