//! Attested migration between host cores, in process, over the protocol
//! (`sojourn_migration::protocol`) with its durable states: the destination's evidence is
//! appraised against the object's own migration policy, the object travels HPKE-sealed,
//! answers are signed, and lost or duplicated messages end with exactly one owner. The same
//! protocol over TLS between real processes, with kill -9 at each step, is in
//! `tests/migration_processes.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sojourn_api::{
    DeployRequest, ErrorCode, HostControl, MigrationAnswer, MigrationOffer, MigrationOfferAnswer,
};
use sojourn_attestation::ReferenceValues;
use sojourn_host::daemon::migrate::{LocalNetwork, PeerLink};
use sojourn_host::daemon::{CoreOptions, HostCore};
use sojourn_lineage::{verify_lineage, VerifyOptions};

mod common;
use common::{mover_toml as toml, software_core_with, tempdir, MOVER_WAT as WAT};

const SOFTWARE_OK: &str = "platforms = [\"software\"]\nallow_software = true";

fn request_with(wat: &str, toml: &str) -> DeployRequest {
    use base64::Engine as _;
    DeployRequest {
        object_toml: toml.into(),
        module_base64: base64::engine::general_purpose::STANDARD
            .encode(wat::parse_str(wat).unwrap()),
    }
}

fn request(migration: &str) -> DeployRequest {
    request_with(WAT, &toml(migration))
}

fn wait(core: &HostCore, id: &str, what: &str, done: impl Fn(&sojourn_api::ObjectDetail) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(d) = core.inspect(id) {
            if done(&d) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            core.inspect(id)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn verify(lineage: &[u8]) -> sojourn_lineage::LineageSummary {
    let opts = VerifyOptions {
        reference: Some(ReferenceValues::default().allowing_software()),
        at: None,
    };
    verify_lineage(lineage, &opts).unwrap()
}

/// Two (or more) cores on one in-process network.
struct Net {
    net: LocalNetwork,
    dirs: Vec<std::path::PathBuf>,
    cores: Vec<(String, HostCore)>,
}

impl Net {
    fn new() -> Net {
        Net {
            net: LocalNetwork::new(),
            dirs: Vec::new(),
            cores: Vec::new(),
        }
    }

    fn host(&mut self, url: &str, seed: u8, debug: bool) -> HostCore {
        let dir = tempdir(&format!("mig-{seed}"));
        self.dirs.push(dir.clone());
        self.start(url, &dir, seed, debug)
    }

    fn start(&mut self, url: &str, dir: &std::path::Path, seed: u8, debug: bool) -> HostCore {
        let options = CoreOptions {
            answer_secret: Some([seed; 32]),
            self_url: url.into(),
            links: Some(self.net.factory()),
            ..CoreOptions::default()
        };
        let core = software_core_with(dir, [seed; 32], debug, options);
        self.net.register(url, &core);
        self.cores.push((url.to_string(), core.clone()));
        core
    }
}

impl Net {
    /// Stops the host at `url` and forgets it (its store can be opened again).
    fn stop(&mut self, url: &str) {
        self.net.unregister(url);
        for (_, core) in self.cores.iter().filter(|(u, _)| u == url) {
            core.shutdown();
        }
        self.cores.retain(|(u, _)| u != url);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Stop every host this test started (their objects would otherwise keep ticking and
        // committing for the rest of the test binary's run).
        for (_, core) in self.cores.drain(..) {
            core.shutdown();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn migrate(
    from: &HostCore,
    id: &str,
    net: &LocalNetwork,
    to: &str,
) -> sojourn_api::MigrationReport {
    from.migrate_to(id, LocalNetwork::address(to), &net.link(to))
        .unwrap()
}

#[test]
fn an_object_moves_whole_continues_at_the_destination_and_leaves_a_tombstone() {
    let mut n = Net::new();
    let a = n.host("https://a", 1, false);
    let b = n.host("https://b", 2, false);
    let id = a.deploy(request(SOFTWARE_OK)).unwrap().id;
    for i in 0..5 {
        a.send(&id, format!("m{i}").into_bytes()).unwrap();
    }
    wait(&a, &id, "ticks and messages at the source", |d| {
        d.info.seq >= 10 && d.state["received"] == 5
    });

    let r = migrate(&a, &id, &n.net, "https://b");
    assert_eq!(r.outcome, "transferred", "{r:?}");
    assert!(
        r.appraisal.as_deref().unwrap().contains("INSECURE"),
        "{r:?}"
    );
    assert!(r.package_bytes > 0, "{r:?}");
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "quiesce",
            "attestation",
            "appraisal",
            "seal",
            "transfer",
            "commit"
        ]
    );

    // Its memory image is the package as it arrived, written to the destination's store
    // while the package was opened, and the arrival's commit took that file.
    assert_eq!(b.store().stats().staged_images, 1);
    assert_eq!(b.store().stats().keyed_images, 1);
    assert_eq!(a.store().stats().staged_images, 0);
    // In process, the package is handed over whole (over HTTP it is taken as it arrives:
    // tests/migration_http.rs).
    assert_eq!(b.metrics().packages_spooled.load(Ordering::Relaxed), 0);

    // The same object at the destination, continuing (it may already have ticked there).
    let left = a.inspect(&id).unwrap();
    assert_eq!(left.info.status, "transferred");
    let arrived = b.inspect(&id).unwrap();
    assert_eq!(arrived.state["received"], left.state["received"]);
    assert!(arrived.state["ticks"].as_i64() >= left.state["ticks"].as_i64());
    assert!(arrived.info.seq > left.info.seq);
    assert_eq!(
        a.send(&id, b"x".to_vec()).unwrap_err().code,
        ErrorCode::Conflict,
        "the source refuses messages for an object that left"
    );

    // It runs at the destination, from where it stopped.
    for i in 0..3 {
        b.send(&id, format!("n{i}").into_bytes()).unwrap();
    }
    let seq = arrived.info.seq;
    wait(&b, &id, "the destination to run it", |d| {
        d.state["received"] == 8 && d.info.seq > seq + 3
    });

    // One lineage across both hosts: it verifies, with both events and both hosts' keys; the
    // source's export is a prefix of the destination's.
    let at_a = a.lineage(&id).unwrap();
    let at_b = b.lineage(&id).unwrap();
    assert!(at_b.starts_with(&at_a));
    let s = verify(&at_b);
    assert_eq!(s.outcomes["migrated-out"], 1);
    assert_eq!(s.outcomes["migrated-in"], 1);
    assert!(s.hosts.len() >= 2, "{s:?}");

    // A second attempt from the tombstone is refused; the tombstone survives a restart.
    assert!(a
        .migrate_to(
            &id,
            LocalNetwork::address("https://b"),
            &n.net.link("https://b")
        )
        .is_err());
    n.stop("https://a");
    drop(a);
    let dir_a = n.dirs[0].clone();
    let a = n.start("https://a", &dir_a, 1, false);
    let again = a.inspect(&id).unwrap();
    assert_eq!(again.info.status, "transferred");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(a.inspect(&id).unwrap().info.seq, again.info.seq);
    assert!(a.resume(&id).is_err());
    a.shutdown();
    b.shutdown();
}

/// Counts packages and can drop or duplicate messages.
struct Faulty {
    inner: Box<dyn PeerLink>,
    packages: AtomicUsize,
    /// Drop the answer of the first N packages (the package is delivered).
    drop_package_answers: usize,
    /// Never deliver packages.
    drop_packages: bool,
    /// Deliver every package twice.
    duplicate: bool,
    log: Mutex<Vec<String>>,
}

impl Faulty {
    fn new(inner: Box<dyn PeerLink>) -> Faulty {
        Faulty {
            inner,
            packages: AtomicUsize::new(0),
            drop_package_answers: 0,
            drop_packages: false,
            duplicate: false,
            log: Mutex::new(Vec::new()),
        }
    }
}

impl PeerLink for Faulty {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn offer(&self, offer: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String> {
        self.log.lock().unwrap().push("offer".into());
        self.inner.offer(offer)
    }
    fn package(&self, t: &str, k: &str, sealed: Arc<Vec<u8>>) -> Result<MigrationAnswer, String> {
        let n = self.packages.fetch_add(1, Ordering::SeqCst);
        if self.drop_packages {
            self.log.lock().unwrap().push("package lost".into());
            return Err("lost".into());
        }
        let mut a = self.inner.package(t, k, Arc::clone(&sealed));
        if self.duplicate {
            a = self.inner.package(t, k, sealed);
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("package {:?}", a.as_ref().map(|a| &a.outcome)));
        if n < self.drop_package_answers {
            return Err("answer lost".into());
        }
        a
    }
    fn status(&self, t: &str) -> Result<MigrationAnswer, String> {
        self.log.lock().unwrap().push("status".into());
        self.inner.status(t)
    }
    fn refusal(&self, t: &str, r: &str) -> Result<(), String> {
        self.log.lock().unwrap().push("refusal".into());
        self.inner.refusal(t, r)
    }
}

#[test]
fn refused_destinations_get_no_package_and_the_object_runs_on_at_the_source() {
    let mut n = Net::new();
    let a = n.host("https://a", 3, false);
    let _b = n.host("https://b", 4, false);
    let _debug = n.host("https://debug", 5, true);
    let pinned = "platforms = [\"software\"]\nallow_software = true\nmeasurements = [\""
        .to_string()
        + &"ab".repeat(48)
        + "\"]";
    let cases = [
        (SOFTWARE_OK.to_string(), "https://debug", "debug"),
        (
            "platforms = [\"snp\", \"tdx\"]".to_string(),
            "https://b",
            "software_not_allowed",
        ),
        (pinned, "https://b", "measurement"),
    ];
    for (i, (policy, dest, code)) in cases.iter().enumerate() {
        // Distinct objects (the name is part of the identity).
        let t = toml(policy).replace("name = \"mover\"", &format!("name = \"mover{i}\""));
        let id = a.deploy(request_with(WAT, &t)).unwrap().id;
        wait(&a, &id, "a few ticks", |d| d.info.seq >= 3);
        let link = Faulty::new(Box::new(n.net.link(dest)));
        let r = a
            .migrate_to(&id, LocalNetwork::address(dest), &link)
            .unwrap();
        assert_eq!(r.outcome, "refused", "{r:?}");
        assert_eq!(r.refusal_code.as_deref(), Some(*code), "{r:?}");
        assert_eq!(
            link.packages.load(Ordering::SeqCst),
            0,
            "no sealed byte left"
        );
        assert_eq!(*link.log.lock().unwrap(), ["offer", "refusal"]);
        let seq = a.inspect(&id).unwrap().info.seq;
        assert_eq!(a.inspect(&id).unwrap().info.status, "active");
        wait(&a, &id, "the object to run again at the source", |d| {
            d.info.seq > seq + 2
        });
        let s = verify(&a.lineage(&id).unwrap());
        assert_eq!(s.outcomes["migration-refused"], 1);
        assert!(!s.outcomes.contains_key("migrated-out"));
    }
    // A destination that already runs the object refuses the offer.
    let id = a.deploy(request(SOFTWARE_OK)).unwrap().id;
    let r = migrate(&a, &id, &n.net, "https://a");
    assert_eq!(r.outcome, "aborted", "{r:?}");
    assert!(r.reason.unwrap().contains("already runs"));
}

#[test]
fn lost_and_duplicated_messages_end_with_exactly_one_owner() {
    let mut n = Net::new();
    let a = n.host("https://a", 6, false);
    let b = n.host("https://b", 7, false);

    // 1. The first package's answer is lost: the package is sent again, the destination
    //    answers `ack` again (it holds the object once).
    let id = a.deploy(request(SOFTWARE_OK)).unwrap().id;
    let mut link = Faulty::new(Box::new(n.net.link("https://b")));
    link.drop_package_answers = 1;
    let r = a
        .migrate_to(&id, LocalNetwork::address("https://b"), &link)
        .unwrap();
    assert_eq!(r.outcome, "transferred", "{r:?}");
    assert_eq!(link.packages.load(Ordering::SeqCst), 2);
    assert_eq!(b.inspect(&id).unwrap().info.status, "active");
    assert_eq!(verify(&b.lineage(&id).unwrap()).outcomes["migrated-in"], 1);

    // 2. Every package is delivered twice.
    let t = toml(SOFTWARE_OK).replace("\"mover\"", "\"dup\"");
    let id2 = a.deploy(request_with(WAT, &t)).unwrap().id;
    let mut link = Faulty::new(Box::new(n.net.link("https://b")));
    link.duplicate = true;
    let r = a
        .migrate_to(&id2, LocalNetwork::address("https://b"), &link)
        .unwrap();
    assert_eq!(r.outcome, "transferred", "{r:?}");
    assert_eq!(verify(&b.lineage(&id2).unwrap()).outcomes["migrated-in"], 1);

    // 3. No package ever arrives: the source asks, the destination records the attempt
    //    aborted, and the object runs at the source again.
    let t = toml(SOFTWARE_OK).replace("\"mover\"", "\"lost\"");
    let id3 = a.deploy(request_with(WAT, &t)).unwrap().id;
    let mut link = Faulty::new(Box::new(n.net.link("https://b")));
    link.drop_packages = true;
    let r = a
        .migrate_to(&id3, LocalNetwork::address("https://b"), &link)
        .unwrap();
    assert_eq!(r.outcome, "aborted", "{r:?}");
    assert!(b.inspect(&id3).is_err(), "the destination never took it");
    let seq = a.inspect(&id3).unwrap().info.seq;
    wait(&a, &id3, "the source to run it again", |d| {
        d.info.seq > seq + 2
    });

    // 4. The destination goes away after the package may have left: the object runs nowhere
    //    (`pending`), the source does not resume on its own; when the destination is back,
    //    the resolver asks, and exactly one host ends up running it.
    let t = toml(SOFTWARE_OK).replace("\"mover\"", "\"pending\"");
    let id4 = a.deploy(request_with(WAT, &t)).unwrap().id;
    let mut link = Faulty::new(Box::new(n.net.link("https://b")));
    link.drop_packages = true;
    n.net.unregister("https://b"); // status questions are lost too
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let a = a.clone();
        let id4 = id4.clone();
        std::thread::spawn(move || {
            let r = a.migrate_to(&id4, LocalNetwork::address("https://b"), &link);
            let _ = tx.send(r);
        });
    }
    let r = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    // The offer itself was lost (b is down): nothing left, so the source decided alone.
    assert_eq!(r.outcome, "aborted", "{r:?}");
    // Now with the destination up for the offer but gone for the package and the status:
    n.net.register("https://b", &b);
    struct GoneAfterOffer<'a>(&'a LocalNetwork, Box<dyn PeerLink>);
    impl PeerLink for GoneAfterOffer<'_> {
        fn url(&self) -> &str {
            self.1.url()
        }
        fn offer(&self, o: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String> {
            let a = self.1.offer(o);
            self.0.unregister("https://b");
            a
        }
        fn package(&self, t: &str, k: &str, s: Arc<Vec<u8>>) -> Result<MigrationAnswer, String> {
            self.1.package(t, k, s)
        }
        fn status(&self, t: &str) -> Result<MigrationAnswer, String> {
            self.1.status(t)
        }
        fn refusal(&self, t: &str, r: &str) -> Result<(), String> {
            self.1.refusal(t, r)
        }
    }
    let link = GoneAfterOffer(&n.net, Box::new(n.net.link("https://b")));
    let r = a
        .migrate_to(&id4, LocalNetwork::address("https://b"), &link)
        .unwrap();
    assert_eq!(r.outcome, "pending", "{r:?}");
    let frozen = a.inspect(&id4).unwrap();
    assert_eq!(frozen.info.status, "moving");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        a.inspect(&id4).unwrap().info.seq,
        frozen.info.seq,
        "runs nowhere"
    );
    assert!(b.inspect(&id4).is_err());
    n.net.register("https://b", &b);
    // b still holds the offer (and its key): asked for status, it records the attempt
    // aborted; the source resumes.
    wait(&a, &id4, "the resolver to settle the attempt", |d| {
        d.info.status == "active"
    });
    assert!(b.inspect(&id4).is_err());
    let s = verify(&a.lineage(&id4).unwrap());
    assert_eq!(s.outcomes["migrated-out"], 1);
    assert_eq!(s.outcomes["migration-refused"], 2);
}

#[test]
fn an_object_can_come_back_to_a_host_it_left() {
    let mut n = Net::new();
    let a = n.host("https://a", 8, false);
    let b = n.host("https://b", 9, false);
    let id = a.deploy(request(SOFTWARE_OK)).unwrap().id;
    a.send(&id, b"1".to_vec()).unwrap();
    wait(&a, &id, "ticks", |d| d.info.seq >= 4);
    assert_eq!(migrate(&a, &id, &n.net, "https://b").outcome, "transferred");
    b.send(&id, b"2".to_vec()).unwrap();
    wait(&b, &id, "ticks at b", |d| d.state["received"] == 2);
    assert_eq!(migrate(&b, &id, &n.net, "https://a").outcome, "transferred");
    let back = a.inspect(&id).unwrap();
    assert_eq!(back.info.status, "active");
    assert_eq!(back.state["received"], 2);
    a.send(&id, b"3".to_vec()).unwrap();
    wait(&a, &id, "ticks back at a", |d| d.state["received"] == 3);
    let s = verify(&a.lineage(&id).unwrap());
    assert_eq!(s.outcomes["migrated-in"], 2);
    assert_eq!(s.outcomes["migrated-out"], 2);
    // Back at a, its memory image was staged again and replaced the one it left behind:
    // one image file for it.
    assert_eq!(a.store().stats().staged_images, 1);
    assert_eq!(a.store().stats().keyed_images, 1);
    // And after a restart of a, it is restored whole from the store and runs on.
    n.stop("https://a");
    drop(a);
    let dir_a = n.dirs[0].clone();
    let files = std::fs::read_dir(dir_a.join(sojourn_store::raw::MEMORY_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&id))
        .count();
    assert_eq!(files, 1);
    let a = n.start("https://a", &dir_a, 8, false);
    let after = a.inspect(&id).unwrap();
    assert_eq!(after.info.status, "active");
    assert_eq!(after.state["received"], 3);
    wait(&a, &id, "ticks after the restart", |d| {
        d.info.seq > after.info.seq + 2
    });
    verify(&a.lineage(&id).unwrap());
}

/// An object whose state depends only on its messages' order and sizes (its ticks write
/// nothing).
const FOLD_WAT: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "acc")
  (func (export "sojourn_tick") (param i64) (result i64) (i64.const 20))
  (func (export "sojourn_on_message") (param i32) (result i32)
    (call $set (i32.const 0) (i32.const 3)
      (i64.add (i64.mul (call $get (i32.const 0) (i32.const 3)) (i64.const 31))
               (i64.extend_i32_u (local.get 0))))
    (i64.store (i32.mul (i32.add (i32.rem_u (local.get 0) (i32.const 15)) (i32.const 1)) (i32.const 4096))
               (call $get (i32.const 0) (i32.const 3)))
    (i32.const 0)))"#;

const FOLD_TOML: &str = r#"[object]
name = "fold"
version = 1
module = "fold.wasm"
[cycle]
min_interval_ms = 1
inbox_capacity = 256
[limits]
fuel_per_entry = 100000
memory_pages_max = 1
[schema.fields.acc]
type = "int"
default = 0
[policy.writers]
message = ["acc"]
[policy.attestation]
allow_software = true
[policy.migration]
allowed = true
platforms = ["software"]
allow_software = true
"#;

#[test]
fn a_migrated_object_ends_where_one_that_never_moved_does() {
    let mut n = Net::new();
    let a = n.host("https://a", 10, false);
    let b = n.host("https://b", 11, false);
    let c = n.host("https://c", 12, false);
    let rounds: usize = std::env::var("SOJOURN_EQUIV_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        let mut seed = [0u8; 64];
        getrandom::fill(&mut seed).unwrap();
        let count = 5 + usize::from(seed[0] % 30);
        let lens: Vec<usize> = (0..count)
            .map(|i| 1 + usize::from(seed[1 + i % 63] % 97))
            .collect();
        let cut = usize::from(seed[63]) % (count + 1);
        let t = FOLD_TOML.replace("\"fold\"", &format!("\"fold{round}\""));
        let moved = a.deploy(request_with(FOLD_WAT, &t)).unwrap().id;
        let still = c.deploy(request_with(FOLD_WAT, &t)).unwrap().id;
        let mut at = &a;
        for (i, len) in lens.iter().enumerate() {
            if i == cut {
                wait(at, &moved, "messages consumed before the move", |d| {
                    d.info.inbox == 0
                });
                assert_eq!(
                    migrate(&a, &moved, &n.net, "https://b").outcome,
                    "transferred"
                );
                at = &b;
            }
            at.send(&moved, vec![b'x'; *len]).unwrap();
            c.send(&still, vec![b'x'; *len]).unwrap();
        }
        if cut == count {
            wait(at, &moved, "messages consumed", |d| d.info.inbox == 0);
            assert_eq!(
                migrate(&a, &moved, &n.net, "https://b").outcome,
                "transferred"
            );
            at = &b;
        }
        wait(at, &moved, "all messages", |d| d.info.inbox == 0);
        wait(&c, &still, "all messages", |d| d.info.inbox == 0);
        let (m, s) = (at.inspect(&moved).unwrap(), c.inspect(&still).unwrap());
        assert_eq!(m.state, s.state, "round {round}: cut {cut} of {count}");
        assert_eq!(m.info.state_digest, s.info.state_digest, "round {round}");
    }
}

/// An object that counts its entries twice, in a field and in linear memory, and traps (the
/// entry faults, the object is suspended) if the two ever differ: a memory write the store
/// lost shows as a fault after a restart.
const MEMO_WAT: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (func $count (local $n i64)
    (local.set $n (i64.add (call $get (i32.const 0) (i32.const 5)) (i64.const 1)))
    (i64.store (i32.const 8192) (i64.add (i64.load (i32.const 8192)) (i64.const 1)))
    (if (i64.ne (i64.load (i32.const 8192)) (local.get $n)) (then unreachable))
    (call $set (i32.const 0) (i32.const 5) (local.get $n)))
  (func (export "sojourn_tick") (param i64) (result i64) (call $count) (i64.const 10))
  (func (export "sojourn_on_message") (param i32) (result i32) (call $count) (i32.const 0)))"#;

/// The arrival's first checkpoint names the memory image staged from the package and defers
/// the copy that later checkpoints compare with: what the object writes to memory at the
/// destination after it arrived is stored, and survives a restart there.
#[test]
fn memory_written_after_an_arrival_survives_a_restart_of_the_destination() {
    let mut n = Net::new();
    let a = n.host("https://a", 20, false);
    let b = n.host("https://b", 21, false);
    let t = FOLD_TOML
        .replace("\"fold\"", "\"memo\"")
        .replace("[schema.fields.acc]", "[schema.fields.count]")
        .replace(
            "message = [\"acc\"]",
            "message = [\"count\"]\ntick = [\"count\"]",
        );
    let id = a.deploy(request_with(MEMO_WAT, &t)).unwrap().id;
    let count = |d: &sojourn_api::ObjectDetail| d.state["count"].as_i64().unwrap_or(0);
    let running = |core: &HostCore, what: &str, more_than: i64| {
        wait(core, &id, what, |d| {
            count(d) > more_than || d.info.status != "active"
        });
        let d = core.inspect(&id).unwrap();
        assert_eq!(d.info.status, "active", "{what}: {:?}", d.recent);
        count(&d)
    };
    running(&a, "entries at the source", 3);
    assert_eq!(migrate(&a, &id, &n.net, "https://b").outcome, "transferred");
    // The arrival's image is the kept package (a keyed image), which the restart reads.
    assert_eq!(b.store().stats().keyed_images, 1);
    let arrived = count(&b.inspect(&id).unwrap());
    let before = running(&b, "entries at the destination", arrived + 3);
    n.stop("https://b");
    drop(b);
    let dir_b = n.dirs[1].clone();
    let b = n.start("https://b", &dir_b, 21, false);
    // Every entry after the restart checks memory against the field.
    running(&b, "entries after the restart", before + 3);
    a.shutdown();
    b.shutdown();
}

/// An object of a module the destination already compiled arrives without compiling it
/// again; the first arrival of a module compiles it once (and deploys of one module compile it
/// once).
#[test]
fn arrivals_reuse_the_destinations_compiled_module() {
    let mut n = Net::new();
    let a = n.host("https://a", 30, false);
    let b = n.host("https://b", 31, false);
    let compiled = |h: &HostCore| h.metrics().modules_compiled.load(Ordering::Relaxed);
    let first = a
        .deploy(request_with(
            FOLD_WAT,
            &FOLD_TOML.replace("\"fold\"", "\"fold-a\""),
        ))
        .unwrap()
        .id;
    let second = a
        .deploy(request_with(
            FOLD_WAT,
            &FOLD_TOML.replace("\"fold\"", "\"fold-b\""),
        ))
        .unwrap()
        .id;
    assert_eq!(compiled(&a), 1, "two deploys of one module");
    assert_eq!(compiled(&b), 0);
    assert_eq!(
        migrate(&a, &first, &n.net, "https://b").outcome,
        "transferred"
    );
    assert_eq!(compiled(&b), 1, "the first arrival of the module");
    assert_eq!(
        migrate(&a, &second, &n.net, "https://b").outcome,
        "transferred"
    );
    assert_eq!(compiled(&b), 1, "the second arrival reuses it");
    b.send(&second, b"xy".to_vec()).unwrap();
    wait(&b, &second, "a message at the destination", |d| {
        d.info.inbox == 0 && d.state["acc"] != 0
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn drain_moves_every_object_a_peer_may_take_and_says_why_the_others_stay() {
    let mut n = Net::new();
    let a = n.host("https://a", 13, false);
    let debug = n.host("https://debug", 14, true);
    let b = n.host("https://b", 15, false);
    let mut movable = Vec::new();
    for i in 0..5 {
        let t = toml(SOFTWARE_OK).replace("\"mover\"", &format!("\"m{i}\""));
        movable.push(a.deploy(request_with(WAT, &t)).unwrap().id);
    }
    let pinned = toml(
        &("platforms = [\"software\"]\nallow_software = true\nmeasurements = [\"".to_string()
            + &"cd".repeat(48)
            + "\"]"),
    )
    .replace("\"mover\"", "\"pinned\"");
    let stays = a.deploy(request_with(WAT, &pinned)).unwrap().id;
    let never = toml("")
        .replace("allowed = true", "allowed = false")
        .replace("\"mover\"", "\"never\"");
    let never = a.deploy(request_with(WAT, &never)).unwrap().id;

    // Peers in order: the debug host (every policy refuses it), then b.
    let to = ["https://debug", "https://b"]
        .iter()
        .map(|u| sojourn_api::MigrateRequest {
            to: (*u).into(),
            ca_pem: String::new(),
            token: String::new(),
        })
        .collect();
    let r = a
        .drain_to(sojourn_api::DrainRequest {
            to,
            deadline_s: Some(60),
        })
        .unwrap();
    let mut moved: Vec<String> = r.moved.iter().map(|m| m.object.clone()).collect();
    moved.sort();
    movable.sort();
    assert_eq!(moved, movable, "{r:#?}");
    assert!(r.pending.is_empty());
    for id in &movable {
        assert_eq!(a.inspect(id).unwrap().info.status, "transferred");
        assert_eq!(b.inspect(id).unwrap().info.status, "active");
        assert!(debug.inspect(id).is_err());
        // Refused by the first peer, recorded, then taken by the second.
        let s = verify(&b.lineage(id).unwrap());
        assert_eq!(s.outcomes["migration-refused"], 1, "{s:?}");
    }
    let mut stayed: Vec<(&str, &Vec<String>)> = r
        .stayed
        .iter()
        .map(|s| (s.object.as_str(), &s.reasons))
        .collect();
    stayed.sort();
    assert_eq!(stayed.len(), 2, "{r:#?}");
    let reasons = |id: &str| stayed.iter().find(|(o, _)| *o == id).unwrap().1.join(" | ");
    assert!(reasons(&stays).contains("debug"), "{}", reasons(&stays));
    assert!(
        reasons(&stays).contains("measurement"),
        "{}",
        reasons(&stays)
    );
    assert!(
        reasons(&never).contains("does not allow migration"),
        "{}",
        reasons(&never)
    );
    assert_eq!(a.inspect(&stays).unwrap().info.status, "active");
    assert_eq!(a.inspect(&never).unwrap().info.status, "active");
}

/// A man in the middle: relays evidence made for another connection, or replays an earlier
/// attempt's evidence.
struct Relay {
    inner: Box<dyn PeerLink>,
    replay: Mutex<Option<MigrationOfferAnswer>>,
    mode: &'static str,
    packages: AtomicUsize,
}

impl PeerLink for Relay {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn offer(&self, offer: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String> {
        let (answer, channel) = self.inner.offer(offer)?;
        match self.mode {
            // The relay's own connection to the source has another exporter value.
            "relay" => Ok((answer, [0x42; 32])),
            // First call: remember; second: answer with the remembered evidence.
            _ => {
                let mut r = self.replay.lock().unwrap();
                match r.take() {
                    None => {
                        *r = Some(answer.clone());
                        Ok((answer, channel))
                    }
                    Some(old) => Ok((old, channel)),
                }
            }
        }
    }
    fn package(&self, t: &str, k: &str, s: Arc<Vec<u8>>) -> Result<MigrationAnswer, String> {
        self.packages.fetch_add(1, Ordering::SeqCst);
        self.inner.package(t, k, s)
    }
    fn status(&self, t: &str) -> Result<MigrationAnswer, String> {
        self.inner.status(t)
    }
    fn refusal(&self, t: &str, r: &str) -> Result<(), String> {
        self.inner.refusal(t, r)
    }
}

#[test]
fn relayed_or_replayed_evidence_is_refused_before_anything_is_sealed() {
    let mut n = Net::new();
    let a = n.host("https://a", 16, false);
    let _b = n.host("https://b", 17, false);

    let id = a.deploy(request(SOFTWARE_OK)).unwrap().id;
    let relay = Relay {
        inner: Box::new(n.net.link("https://b")),
        replay: Mutex::new(None),
        mode: "relay",
        packages: AtomicUsize::new(0),
    };
    let r = a
        .migrate_to(&id, LocalNetwork::address("https://b"), &relay)
        .unwrap();
    assert_eq!(r.outcome, "refused", "{r:?}");
    assert_eq!(r.refusal_code.as_deref(), Some("wrong_channel"));
    assert_eq!(relay.packages.load(Ordering::SeqCst), 0);

    // Replay: the relay records the evidence of one attempt and answers the next with it.
    let replay = Relay {
        inner: Box::new(n.net.link("https://b")),
        replay: Mutex::new(None),
        mode: "replay",
        packages: AtomicUsize::new(0),
    };
    let t = toml(SOFTWARE_OK).replace("\"mover\"", "\"replayed\"");
    let id2 = a.deploy(request_with(WAT, &t)).unwrap().id;
    // First attempt goes through (its evidence is recorded by the relay) and is transferred.
    assert_eq!(
        a.migrate_to(&id2, LocalNetwork::address("https://b"), &replay)
            .unwrap()
            .outcome,
        "transferred"
    );
    // The object of the second attempt gets the first attempt's evidence.
    let r = a
        .migrate_to(&id, LocalNetwork::address("https://b"), &replay)
        .unwrap();
    assert_eq!(r.outcome, "refused", "{r:?}");
    assert_eq!(r.refusal_code.as_deref(), Some("wrong_challenge"), "{r:?}");
    assert_eq!(
        replay.packages.load(Ordering::SeqCst),
        1,
        "only the first attempt's"
    );
    assert_eq!(a.inspect(&id).unwrap().info.status, "active");
}
