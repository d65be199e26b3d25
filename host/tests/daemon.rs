//! `sojourn host` as real processes: the CLI with local defaults, `kill -9` at random moments
//! under load (nothing acknowledged is lost, nothing runs twice, lineage stays continuous),
//! and a corrupt or foreign store refused without being touched.
//!
//! `SOJOURN_CRASH_KILLS` sets the number of kills (default 50).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sojourn_lineage::export::Item;
use sojourn_lineage::{verify_lineage, LineageEntry, VerifyOptions};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

mod common;
use common::{software_core, sojourn, tempdir, Host};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn local_defaults_the_cli_needs_no_flags() {
    let home = tempdir("cli");
    let host = Host::start(&home);
    let cli = |args: &[&str]| {
        let out = sojourn()
            .args(args)
            .env("SOJOURN_HOME", &home)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let counter = examples().join("counter");
    let (ok, out, err) = cli(&["deploy", counter.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("deployed counter as"), "{out}");
    let (ok, out, _) = cli(&["ls"]);
    assert!(
        ok && out.contains("counter") && out.contains("active"),
        "{out}"
    );
    let (ok, out, err) = cli(&["send", "counter", "hello"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&["inspect", "counter", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "counter");
    assert!(v["state"]["count"].as_i64().unwrap() >= 0);
    let lin = home.join("counter.lineage");
    let (ok, out, err) = cli(&["lineage", "export", "counter", "-o", lin.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["lineage", "verify", lin.to_str().unwrap()]);
    // The counter's policy does not accept software evidence: the verifier says so.
    assert!(!ok && (out + &err).contains("software evidence is not acceptable"));
    let (ok, out, err) = cli(&[
        "lineage",
        "verify",
        lin.to_str().unwrap(),
        "--reference-values",
        examples()
            .join("reference-values/software-dev.toml")
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    // A wrong token is refused.
    let (ok, _, err) = {
        let out = sojourn()
            .args([
                "ls",
                "--host",
                &host.url,
                "--token",
                "0000000000000000000000",
            ])
            .env("SOJOURN_HOME", &home)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(!ok && err.contains("unauthenticated"), "{err}");
    let log = host.terminate();
    assert!(log.contains("stopped"), "{log}");
    // The client file is private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(home.join("client.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
    let _ = std::fs::remove_dir_all(&home);
}

/// An object that counts the messages it consumes and its ticks (both monotonic) and keeps
/// the tick count in memory too, so memory chunks change with every tick.
const LEDGER_WAT: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") 2)
  (data (i32.const 0) "received")
  (data (i32.const 16) "ticks")
  (func (export "sojourn_tick") (param i64) (result i64)
    (call $set (i32.const 16) (i32.const 5) (i64.add (call $get (i32.const 16) (i32.const 5)) (i64.const 1)))
    (i64.store (i32.const 70000) (call $get (i32.const 16) (i32.const 5)))
    (i64.const 15))
  (func (export "sojourn_on_message") (param i32) (result i32)
    (call $set (i32.const 0) (i32.const 8) (i64.add (call $get (i32.const 0) (i32.const 8)) (i64.const 1)))
    (i32.const 0)))"#;

const LEDGER_TOML: &str = r#"[object]
name = "ledger"
version = 1
module = "ledger.wasm"
[cycle]
min_interval_ms = 5
inbox_capacity = 4096
max_message_bytes = 64
[limits]
fuel_per_entry = 100000
memory_pages_max = 2
[schema.fields.received]
type = "int"
default = 0
monotonic = true
[schema.fields.ticks]
type = "int"
default = 0
monotonic = true
[policy.writers]
tick = ["ticks"]
message = ["received"]
[policy.attestation]
allow_software = true
"#;

fn ledger_package(dir: &Path) -> PathBuf {
    let p = dir.join("ledger");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("object.toml"), LEDGER_TOML).unwrap();
    std::fs::write(p.join("ledger.wasm"), wat::parse_str(LEDGER_WAT).unwrap()).unwrap();
    p
}

fn deploy_request(dir: &Path) -> sojourn_api::DeployRequest {
    use base64::Engine as _;
    sojourn_api::DeployRequest {
        object_toml: std::fs::read_to_string(dir.join("object.toml")).unwrap(),
        module_base64: base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("ledger.wasm")).unwrap()),
    }
}

/// xorshift64*: reproducible random moments from a printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn field(v: &serde_json::Value, name: &str) -> i64 {
    v[name].as_i64().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// Committed (seq → state digest after seq-1) of every entry in a lineage export.
fn entries(bytes: &[u8]) -> BTreeMap<u64, String> {
    let mut input = bytes;
    let mut out = BTreeMap::new();
    while let Some(item) = Item::read(&mut input).unwrap() {
        if let Item::Entry { bytes, .. } = item {
            let e = LineageEntry::decode(&bytes).unwrap();
            assert!(
                out.insert(e.seq, hex::encode(e.state_after)).is_none(),
                "seq {} twice: an object ran twice",
                e.seq
            );
        }
    }
    out
}

#[test]
fn kill_dash_nine_at_random_moments_loses_nothing_acknowledged() {
    let kills: u64 = std::env::var("SOJOURN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill test: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let home = tempdir("crash");
    let pkg = ledger_package(&home);
    let rt = rt();

    let host = Host::start(&home);
    let client = host.client(&home);
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(client.deploy(&deploy_request(&pkg)).await.unwrap().id);
        }
        ids
    });
    // What the host acknowledged: messages per object, and (seq, state digest) observations.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let attempted: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut observed: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    let mut host = Some(host);
    let mut total_acked = 0u64;

    for round in 0..kills {
        let h = host.take().unwrap();
        let client = h.client(&home);
        // Right after a restart: every acknowledged message is in the object (consumed or
        // queued), no acknowledged transition is missing.
        rt.block_on(async {
            for id in &ids {
                let d = client.inspect(id).await.unwrap();
                let received = field(&d.state, "received") as u64;
                let a = acked.lock().unwrap().get(id).copied().unwrap_or(0);
                let t = attempted.lock().unwrap().get(id).copied().unwrap_or(0);
                assert!(
                    received + d.info.inbox >= a,
                    "round {round}, {id}: {received} consumed + {} queued < {a} acknowledged",
                    d.info.inbox
                );
                assert!(
                    received + d.info.inbox <= t,
                    "round {round}: more messages than sent"
                );
                if let Some((seq, _)) = observed.get(id).and_then(|o| o.last_key_value()) {
                    assert!(d.info.seq >= *seq, "round {round}: seq went back");
                }
            }
        });
        // Load: senders on every object, and observers of committed state, until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for task in 0..6u64 {
            let stop = stop.clone();
            let id = ids[(task % 3) as usize].clone();
            let acked = acked.clone();
            let attempted = attempted.clone();
            let client = client.clone();
            senders.push(rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    *attempted.lock().unwrap().entry(id.clone()).or_default() += 1;
                    match client.send_text(&id, &format!("t{task}m{n}")).await {
                        Ok(_) => *acked.lock().unwrap().entry(id.clone()).or_default() += 1,
                        Err(_) => break,
                    }
                }
            }));
        }
        let observer = {
            let stop = stop.clone();
            let client = client.clone();
            rt.spawn(async move {
                let mut observed: Vec<(String, u64, String)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.list().await {
                        Ok(l) => {
                            for o in l {
                                observed.push((o.id, o.seq, o.state_digest));
                            }
                        }
                        Err(_) => break,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                observed
            })
        };
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        h.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in senders {
            rt.block_on(t).unwrap();
        }
        for (id, seq, digest) in rt.block_on(observer).unwrap() {
            observed.entry(id).or_default().insert(seq, digest);
        }
        total_acked = acked.lock().unwrap().values().sum();
        host = Some(Host::start(&home));
    }

    // Finally: each lineage verifies across all the restarts, has every seq once, and every
    // committed state someone was shown is the state the lineage records at that point.
    let h = host.take().unwrap();
    let client = h.client(&home);
    rt.block_on(async {
        for id in &ids {
            let bytes = client.lineage(id).await.unwrap();
            let opts = VerifyOptions {
                reference: Some(
                    sojourn_attestation::ReferenceValues::default().allowing_software(),
                ),
                at: None,
            };
            let summary = verify_lineage(&bytes, &opts)
                .unwrap_or_else(|e| panic!("{id}: lineage does not verify: {e}"));
            let e = entries(&bytes);
            assert_eq!(e.len() as u64, summary.entries);
            assert_eq!(
                e.keys().copied().collect::<Vec<_>>(),
                (0..e.len() as u64).collect::<Vec<_>>()
            );
            for (seq, digest) in observed.get(id).into_iter().flatten() {
                if *seq == 0 {
                    continue;
                }
                assert_eq!(
                    e.get(&(seq - 1)),
                    Some(digest),
                    "{id}: state shown at seq {seq} is not what the lineage committed"
                );
            }
            let d = client.inspect(id).await.unwrap();
            assert!(d.info.seq as usize >= e.len());
        }
    });
    println!(
        "kill test: {kills} kills, {total_acked} acknowledged messages, {} observations",
        observed.values().map(BTreeMap::len).sum::<usize>()
    );
    assert!(total_acked > 0);
    h.terminate();
    let _ = std::fs::remove_dir_all(&home);
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_and_left_untouched() {
    let home = tempdir("corrupt");
    let pkg = ledger_package(&home);
    let h = Host::start(&home);
    let client = h.client(&home);
    rt().block_on(async { client.deploy(&deploy_request(&pkg)).await.unwrap() });
    h.terminate();
    let store = home.join("store.redb");

    // Foreign: the same store under another sealing key.
    let key = home.join("sealing.key");
    let original_key = std::fs::read(&key).unwrap();
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let before = sha(&store);
    let out = sojourn()
        .args(["host", "--listen", "127.0.0.1:0"])
        .env("SOJOURN_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to start") && err.contains("key"),
        "{err}"
    );
    assert_eq!(sha(&store), before, "a refused store must not be written");
    std::fs::write(&key, &original_key).unwrap();

    // Corrupt: flip one byte in every 4 KiB page after the first (wherever the records are).
    let mut bytes = std::fs::read(&store).unwrap();
    for i in (4096 + 100..bytes.len()).step_by(4096) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&store, &bytes).unwrap();
    let before = sha(&store);
    let started = Instant::now();
    let out = sojourn()
        .args(["host", "--listen", "127.0.0.1:0"])
        .env("SOJOURN_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupt store must be refused");
    assert!(err.contains("refusing to start"), "{err}");
    assert_eq!(sha(&store), before, "a refused store must not be written");
    assert!(started.elapsed() < Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&home);
}

/// In process: after a clean shutdown and a restart on the same store, every object has the
/// same committed state, sequence, schedule and inbox as before, and the lineage continues.
#[test]
fn a_restart_resumes_every_object_with_its_schedule_and_inbox() {
    use sojourn_api::HostControl as _;

    // Wakes once an hour; messages wait in the inbox until then.
    let wat = r#"(module
      (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
      (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "ticks")
      (func (export "sojourn_tick") (param i64) (result i64)
        (call $set (i32.const 0) (i32.const 5) (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
        (i64.const 3600000))
      (func (export "sojourn_on_message") (param i32) (result i32) (i32.const 0)))"#;
    let toml = "[object]\nname = \"slow\"\nversion = 1\nmodule = \"slow.wasm\"\n\
                [cycle]\ninbox_capacity = 16\n[limits]\nfuel_per_entry = 100000\nmemory_pages_max = 1\n\
                [schema.fields.ticks]\ntype = \"int\"\ndefault = 0\n[policy.writers]\ntick = [\"ticks\"]\n";
    let home = tempdir("restart");
    let req = {
        use base64::Engine as _;
        sojourn_api::DeployRequest {
            object_toml: toml.into(),
            module_base64: base64::engine::general_purpose::STANDARD
                .encode(wat::parse_str(wat).unwrap()),
        }
    };
    let core = software_core(&home, [9; 32]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(core.deploy(req.clone()).unwrap().id);
    }
    // The first tick is due at once; wait until every object has run it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while core.list().unwrap().iter().any(|o| o.seq < 2) {
        assert!(Instant::now() < deadline, "first ticks did not commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, id) in ids.iter().enumerate() {
        for m in 0..=i {
            core.send(id, format!("m{m}").into_bytes()).unwrap();
        }
    }
    core.suspend(&ids[3], Some("maintenance".into())).unwrap();
    let before = core.list().unwrap();
    let lineage_before: Vec<Vec<u8>> = ids.iter().map(|id| core.lineage(id).unwrap()).collect();
    core.shutdown();
    drop(core);

    let core = software_core(&home, [9; 32]);
    let after = core.list().unwrap();
    assert_eq!(
        before, after,
        "same seq, state, schedule, inbox and status after a restart"
    );
    assert!(after.iter().any(|o| o.inbox == 3));
    assert!(after
        .iter()
        .all(|o| o.next_wake_ms.is_some() || o.status == "suspended"));
    assert_eq!(
        after[after.iter().position(|o| o.id == ids[3]).unwrap()].status,
        "suspended"
    );
    for (id, old) in ids.iter().zip(&lineage_before) {
        assert_eq!(
            &core.lineage(id).unwrap(),
            old,
            "nothing was appended by the restart"
        );
    }
    // Resuming keeps the schedule the object chose (it owns its cycle): active again, next
    // wake where it was (an hour after its first tick), messages still queued.
    let info = core.resume(&ids[3]).unwrap();
    assert_eq!(info.status, "active");
    assert_eq!(info.inbox, 4);
    let due = info.next_wake_ms.unwrap();
    assert!(due > sojourn_host::daemon::wall_ms() + 3_000_000, "{due}");
    // (Lineage continuity across restarts is checked by the kill -9 test.)
    core.shutdown();
    let _ = std::fs::remove_dir_all(&home);
}
