//! Attested migration between two host cores in one process, each with its own API server on
//! 127.0.0.1 (TLS 1.3) and the source sending over the daemon's own link (`HttpLink`): the
//! path a package takes between real hosts, where the destination takes it as it arrives and
//! writes it to its store meanwhile (`daemon::spool`). The object's memory is checked whole
//! at the destination, and again after the destination restarts from its store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sojourn_api::{
    Credential, DeployRequest, HostControl, LocalIdentity, MigrateRequest, Role, ServeOptions,
};
use sojourn_host::daemon::{CoreOptions, HostCore};

mod common;
use common::{software_core_with, tempdir};

const PAGE: usize = 64 * 1024;

/// Pages each host keeps faulted in for the next arrival (`warm_arrival_bytes`).
const WARM: usize = 1 << 20;

/// Fills memory from byte 64 with xorshift64 output in `sojourn_init`; every message checks
/// the whole of it again, and that bytes 32..40 hold `checks`, then sets `intact` (1 if every
/// byte is as written), counts itself in `checks` and writes that to bytes 32..40 (a write to
/// memory after the arrival, which the destination's next checkpoint and restart must keep).
fn wat(pages: usize) -> String {
    let bytes = pages * PAGE;
    let fill = |check: bool| {
        let step = if check {
            "(if (i64.ne (i64.load (local.get $p)) (local.get $x)) (then (local.set $ok (i64.const 0))))"
        } else {
            "(i64.store (local.get $p) (local.get $x))"
        };
        format!(
            r#"(local.set $x (i64.const 0x9E3779B97F4A7C15))
    (local.set $p (i32.const 64))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (i32.const {bytes})))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        {step}
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $next)))"#
        )
    };
    format!(
        r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") {pages} {pages})
  (data (i32.const 0) "intactchecks")
  (func (export "sojourn_init") (param i64) (result i64)
    (local $p i32) (local $x i64)
    {}
    (call $set (i32.const 0) (i32.const 6) (i64.const 1))
    (i64.const -1))
  (func (export "sojourn_tick") (param i64) (result i64) (i64.const -1))
  (func (export "sojourn_on_message") (param i32) (result i32)
    (local $p i32) (local $x i64) (local $ok i64)
    (local.set $ok (i64.const 1))
    ;; The count of checks so far, which the previous message wrote at byte 32.
    (if (i64.ne (i64.load (i32.const 32)) (call $get (i32.const 6) (i32.const 6)))
      (then (local.set $ok (i64.const 0))))
    {}
    (call $set (i32.const 0) (i32.const 6) (local.get $ok))
    (call $set (i32.const 6) (i32.const 6)
      (i64.add (call $get (i32.const 6) (i32.const 6)) (i64.const 1)))
    (i64.store (i32.const 32) (call $get (i32.const 6) (i32.const 6)))
    (i32.const 0)))"#,
        fill(false),
        fill(true)
    )
}

fn toml(pages: usize) -> String {
    let fuel = (pages * PAGE / 8) as u64 * 40 + 1_000_000;
    format!(
        r#"[object]
name = "ballast"
version = 1
module = "ballast.wasm"
[cycle]
min_interval_ms = 10
[limits]
fuel_per_entry = {fuel}
time_per_entry_ms = 60000
memory_pages_max = {pages}
[schema.fields.intact]
type = "int"
default = 0
[schema.fields.checks]
type = "int"
default = 0
[policy.writers]
init = ["intact"]
message = ["intact", "checks"]
[policy.attestation]
allow_software = true
[policy.migration]
allowed = true
platforms = ["software"]
allow_software = true
"#
    )
}

/// A core on the store in `dir` and its API server on 127.0.0.1.
struct Daemon {
    core: HostCore,
    url: String,
    ca_pem: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Daemon {
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, seed: u8) -> Daemon {
        let identity = LocalIdentity::load_or_create(dir).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let options = CoreOptions {
            answer_secret: Some([seed; 32]),
            self_url: url.clone(),
            links: None, // HttpLink: the API client over TLS 1.3
            // Less than a package: it arrives partly into pages faulted in ahead.
            warm_arrival_bytes: WARM,
            ..CoreOptions::default()
        };
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let core = software_core_with(&dir.join("store"), [seed; 32], false, options);
        let admin = Credential::generate("test-admin", Role::Admin).unwrap();
        let token = admin.token.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let control: Arc<dyn HostControl> = Arc::new(core.clone());
        let served = rt.spawn(sojourn_api::serve_with(
            listener,
            identity.server_tls_config().unwrap(),
            control,
            vec![admin],
            ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Daemon {
            core,
            url,
            ca_pem: identity.ca_pem().to_string(),
            token,
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn request(&self) -> MigrateRequest {
        MigrateRequest {
            to: self.url.clone(),
            ca_pem: self.ca_pem.clone(),
            token: self.token.clone(),
        }
    }

    fn stop(mut self, rt: &tokio::runtime::Runtime) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.served.take() {
            rt.block_on(h).unwrap().unwrap();
        }
        self.core.shutdown();
    }
}

/// Waits until `done` holds for the object on `core`.
fn wait(core: &HostCore, id: &str, what: &str, done: impl Fn(&sojourn_api::ObjectDetail) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = core.inspect(id).unwrap();
        if done(&d) {
            return;
        }
        assert!(
            d.info.status == "active",
            "{what}: the object stopped: {:?}",
            d.recent
        );
        assert!(Instant::now() < deadline, "{what}: {:?}", d.info);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks the object's whole memory on `core` (one message) and returns the check's result.
fn check(core: &HostCore, id: &str, what: &str) -> i64 {
    let checks = |d: &sojourn_api::ObjectDetail| d.state["checks"].as_i64().unwrap_or(0);
    let before = checks(&core.inspect(id).unwrap());
    core.send(id, b"check".to_vec()).unwrap();
    wait(core, id, what, |d| checks(d) > before);
    core.inspect(id).unwrap().state["intact"].as_i64().unwrap()
}

#[test]
fn a_package_taken_as_it_arrives_is_the_objects_memory_image_and_survives_a_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dir_a, dir_b): (PathBuf, PathBuf) = (tempdir("http-a"), tempdir("http-b"));
    let a = Daemon::start(&rt, &dir_a, 31);
    let b = Daemon::start(&rt, &dir_b, 32);
    // 5 MiB: blocks of the package go to the destination's file with direct I/O.
    let pages = 80;
    let id = a
        .core
        .deploy(DeployRequest {
            object_toml: toml(pages),
            module_base64: base64::engine::general_purpose::STANDARD
                .encode(wat::parse_str(wat(pages)).unwrap()),
        })
        .unwrap()
        .id;
    wait(&a.core, &id, "filled", |d| d.state["intact"] == 1);
    assert_eq!(check(&a.core, &id, "checked at the source"), 1);

    assert!(b
        .core
        .wait_warm_arrival_pages(std::time::Duration::from_secs(30)));
    let report = HostControl::migrate(&a.core, &id, b.request()).unwrap();
    assert_eq!(report.outcome, "transferred", "{report:?}");
    // The package as it arrived is the object's image: written while it arrived, finished
    // with the package key once it opened, named by the arrival's commit.
    let stats = b.core.store().stats();
    assert_eq!(stats.keyed_images, 1, "{stats:?}");
    let m = b.core.metrics();
    assert_eq!(m.packages_spooled.load(Ordering::Relaxed), 1);
    // Sent with each tag after its segment, so every segment was opened as it arrived.
    assert_eq!(m.packages_opened_arriving.load(Ordering::Relaxed), 1);
    // Received into pages of the host's own, the memory's pages moved out of them (where
    // the kernel tracks writes: Linux 6.7 and later).
    assert_eq!(
        m.arrivals_moved.load(Ordering::Relaxed),
        u64::from(sojourn_mem::write_tracking_available())
    );
    // Into the destination's warm pages as far as they reach, where pages are moved.
    assert!(report.package_bytes > WARM as u64);
    assert_eq!(
        m.package_bytes_warm.load(Ordering::Relaxed),
        u64::from(sojourn_mem::write_tracking_available()) * WARM as u64
    );
    let direct = m.package_bytes_direct.load(Ordering::Relaxed);
    if sojourn_store::direct_io_supported(&dir_b) {
        // All but a partial block at either end.
        let floor = report.package_bytes - 2 * 4096;
        assert!(
            direct >= floor && direct <= report.package_bytes,
            "{direct} {report:?}"
        );
    } else {
        assert_eq!(direct, 0);
    }
    assert_eq!(stats.staged_images, 1, "{stats:?}");
    assert_eq!(check(&b.core, &id, "checked at the destination"), 1);
    assert_eq!(check(&b.core, &id, "checked again at the destination"), 1);

    // The destination restarts from its store: the image file is read (every segment
    // authenticated) and the memory is whole.
    let digest = b.core.inspect(&id).unwrap().info.state_digest;
    b.stop(&rt);
    let b = Daemon::start(&rt, &dir_b, 32);
    assert_eq!(b.core.inspect(&id).unwrap().info.state_digest, digest);
    assert_eq!(check(&b.core, &id, "checked after a restart"), 1);

    a.stop(&rt);
    b.stop(&rt);
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}
