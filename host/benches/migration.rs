//! Attested migration between two host daemons over real HTTPS, against the physical floor of
//! the same bytes on this machine.
//!
//! Two host cores in software attestation mode run in this process, each with its own sealed
//! store in a temporary directory and its own API server on 127.0.0.1 (TLS 1.3 with a local
//! identity, one admin credential). For each memory size an object whose memory is that large
//! and filled with xorshift data (incompressible) is deployed on the source and migrated to
//! the destination with `HostControl::migrate`: the source reaches the destination through the
//! daemon's own link (`HttpLink`, the API client over TLS 1.3). The report's steps are taken
//! as the source measured them:
//!
//! - attestation: the offer round trip (TLS handshake, the destination's fresh HPKE key and
//!   evidence);
//! - appraisal: the destination's evidence against the object's migration policy;
//! - seal: the `Sent` commit with the `migrated-out` lineage entry, the snapshot and the HPKE
//!   seal of the bundle, until the last part is sealed: the package is sent part by part as
//!   it is sealed, so the first part of the transfer runs inside this step;
//! - transfer: the rest of the package over HTTPS, and at the destination its open, snapshot
//!   restore, lineage verify and the durable commit of the object, then the signed `ack`;
//! - commit: the source's tombstone.
//!
//! The floor is what the same number of bytes costs at least: one AES-256-GCM seal (ring) and
//! one TLS 1.3 connection over loopback (tokio-rustls, same kind of local identity, handshake
//! included) that carries them to a receiver reading them all and answering one byte.
//! Two more references are printed beside it, not counted in it: the same bytes written to a
//! new file next to the destination's store and fsync'ed (what a durable commit costs at
//! least), and copied into a freshly allocated buffer (what touching new memory costs here).
//!
//! The destination keeps the daemon's default of pages faulted in for the next arrival
//! (`[migration] warm_arrival_mib`; `SOJOURN_BENCH_WARM_MIB` sets another, 0 for none), and
//! the bench waits until they are before each migration and each floor: the thread that makes
//! them runs only on an idle core, but it would still take memory bandwidth from either.
//! The process keeps freed heap for reuse as the daemon does (`[runtime]
//! retain_freed_heap_mib`; `SOJOURN_BENCH_RETAIN_MIB` sets another, 0 for the allocator's own
//! behaviour): it applies to the floor too, which allocates in the same process.
//!
//! `SOJOURN_BENCH_MIB` (comma list, default `1,16,64`), `SOJOURN_BENCH_RUNS` (default 3);
//! `SOJOURN_BENCH_MARKS=1` prints each migration's CLOCK_MONOTONIC window (for
//! `perf record -k mono` and `perf report --time`).
//! Each cell is the median over the runs. Every run starts a fresh pair of hosts and migrates
//! a freshly deployed object; one unreported migration at the largest size comes first.
//! Run: `cargo bench -p sojourn-host --bench migration`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench: fail loudly

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sojourn_api::{
    Credential, DeployRequest, HostControl, LocalIdentity, MigrateRequest, MigrationReport, Role,
    ServeOptions,
};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_host::daemon::{CoreOptions, HostCore, LineageSetup};
use sojourn_store::{SealingKey, Store};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PAGE: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;
/// How long the bench waits for the destination's warm pages.
const WARM_WAIT: Duration = Duration::from_secs(30);

/// Fills the whole memory (from byte 64 on) with xorshift64 output, 8 bytes per step, in
/// `sojourn_init`; then sets `filled` and sleeps until a message (it takes none).
fn wat(pages: usize, seed: u64) -> String {
    let bytes = pages * PAGE;
    format!(
        r#"(module
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") {pages} {pages})
  (data (i32.const 0) "filled")
  (func (export "sojourn_init") (param i64) (result i64)
    (local $p i32) (local $x i64)
    (local.set $x (i64.const {seed}))
    (local.set $p (i32.const 64))
    (block $done
      (loop $fill
        (br_if $done (i32.ge_u (local.get $p) (i32.const {bytes})))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (i64.store (local.get $p) (local.get $x))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $fill)))
    (call $set (i32.const 0) (i32.const 6) (i64.const 1))
    (i64.const -1))
  (func (export "sojourn_tick") (param i64) (result i64)
    (i64.const -1)))"#
    )
}

/// About 30 instructions (1 fuel each) per 8 bytes: 64 MiB takes ~250 M fuel.
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
[schema.fields.filled]
type = "int"
default = 0
[policy.writers]
init = ["filled"]
[policy.attestation]
allow_software = true
[policy.migration]
allowed = true
platforms = ["software"]
allow_software = true
"#
    )
}

fn deploy_request(mib: usize, seed: u64) -> DeployRequest {
    let pages = mib * MIB / PAGE;
    DeployRequest {
        object_toml: toml(pages),
        module_base64: base64::engine::general_purpose::STANDARD
            .encode(wat::parse_str(wat(pages, seed)).unwrap()),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut r = [0u8; N];
    getrandom::fill(&mut r).unwrap();
    r
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sojourn-bench-{tag}-{}",
        hex::encode(random::<8>())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One daemon: a core on its own store and its API server on 127.0.0.1.
struct Daemon {
    core: HostCore,
    url: String,
    ca_pem: String,
    token: String,
    identity: LocalIdentity,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dir: PathBuf,
}

impl Daemon {
    fn start(rt: &tokio::runtime::Runtime, tag: &str) -> Daemon {
        let dir = tempdir(tag);
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let store = Store::open(&dir.join("store"), SealingKey::from_bytes(random())).unwrap();
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
        let identity = LocalIdentity::load_or_create(&dir).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let options = CoreOptions {
            answer_secret: Some(random()),
            self_url: url.clone(),
            links: None, // HttpLink: the API client over TLS 1.3
            // As the daemon does by default (`[migration] warm_arrival_mib`).
            warm_arrival_bytes: warm_arrival_bytes(),
            ..CoreOptions::default()
        };
        let core = HostCore::start(store, lineage, options).unwrap();
        let admin = Credential::generate("bench-admin", Role::Admin).unwrap();
        let token = admin.token.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let control: Arc<dyn HostControl> = Arc::new(core.clone());
        let tls = identity.server_tls_config().unwrap();
        let served = rt.spawn(sojourn_api::serve_with(
            listener,
            tls,
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
            identity,
            stop: Some(stop),
            served: Some(served),
            dir,
        }
    }

    /// What a source needs to migrate an object here.
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deploys a filled object of `mib` MiB on `d`; returns its id once the fill is committed.
fn deploy_filled(d: &Daemon, mib: usize) -> String {
    let seed = u64::from_le_bytes(random()) | 1;
    let id = d.core.deploy(deploy_request(mib, seed)).unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let detail = d.core.inspect(&id).unwrap();
        if detail.state["filled"] == 1 {
            return id;
        }
        assert!(
            detail.info.status == "active",
            "the object stopped: {:?}",
            detail.info
        );
        assert!(Instant::now() < deadline, "not filled: {:?}", detail.info);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One migration's numbers, in ms.
#[derive(Default, Clone)]
struct Sample {
    total: f64,
    downtime: f64,
    quiesce: f64,
    attestation: f64,
    appraisal: f64,
    seal: f64,
    transfer: f64,
    commit: f64,
    package: f64, // MiB
}

fn sample(total: Duration, r: &MigrationReport) -> Sample {
    let step = |name: &str| {
        r.steps
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.micros as f64 / 1e3)
            .sum::<f64>()
    };
    Sample {
        total: total.as_secs_f64() * 1e3,
        downtime: r.downtime_micros as f64 / 1e3,
        quiesce: step("quiesce"),
        attestation: step("attestation"),
        appraisal: step("appraisal"),
        seal: step("seal"),
        transfer: step("transfer"),
        commit: step("commit"),
        package: r.package_bytes as f64 / MIB as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What the destination cannot avoid beyond the floor, for `bytes`, in ms: (write the bytes to
/// a new file in `dir` and fsync it, as its durable commit must at least; copy them into a
/// freshly allocated buffer, the cost of touching new memory on this machine, which the
/// pipeline does for the package at each end and the restored instance's memory).
fn extras(dir: &std::path::Path, bytes: usize) -> (f64, f64) {
    use std::io::Write as _;
    let src: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let path = dir.join("floor-durable.bin");
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&src).unwrap();
    f.sync_all().unwrap();
    let durable = t0.elapsed();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    let t0 = Instant::now();
    let copy = std::hint::black_box(src.to_vec());
    let fresh = t0.elapsed();
    drop(copy);
    (durable.as_secs_f64() * 1e3, fresh.as_secs_f64() * 1e3)
}

/// CPU time of the whole process (every thread: both hosts, the API runtime), in ms.
fn cpu_ms() -> f64 {
    cpu_time::ProcessTime::try_now()
        .expect("process CPU time (CLOCK_PROCESS_CPUTIME_ID)")
        .as_duration()
        .as_secs_f64()
        * 1e3
}

/// The floor for `bytes`: (AES-256-GCM seal, TLS 1.3 loopback send incl. handshake), in ms.
fn floor(
    rt: &tokio::runtime::Runtime,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    bytes: usize,
) -> (f64, f64, f64) {
    let mut buf = vec![0u8; bytes];
    let mut x = u64::from_le_bytes(random()) | 1;
    for c in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &random::<32>()).unwrap());
    let c0 = cpu_ms();
    let t0 = Instant::now();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(random()),
        Aad::empty(),
        &mut buf,
    )
    .unwrap();
    let seal = t0.elapsed();
    let buf = Arc::new(buf);
    let send = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let receiver = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut chunk = vec![0u8; 256 * 1024];
            let mut got = 0usize;
            loop {
                let n = tls.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
                if got >= bytes + 16 {
                    break;
                }
            }
            tls.write_all(&[1]).await.unwrap();
            tls.flush().await.unwrap();
            got
        });
        let t0 = Instant::now();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await.unwrap();
        let elapsed = t0.elapsed();
        assert_eq!(receiver.await.unwrap(), bytes + 16);
        elapsed
    });
    let cpu = cpu_ms() - c0;
    (seal.as_secs_f64() * 1e3, send.as_secs_f64() * 1e3, cpu)
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn sizes() -> Vec<usize> {
    match std::env::var("SOJOURN_BENCH_MIB") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("SOJOURN_BENCH_MIB: a comma list of MiB")
            })
            .collect(),
        Err(_) => vec![1, 16, 64],
    }
}

fn ms(v: f64) -> String {
    format!("{v:.1}")
}

/// `SOJOURN_BENCH_WARM_MIB`, else the daemon's default `[migration] warm_arrival_mib`.
fn warm_arrival_bytes() -> usize {
    let mib = std::env::var("SOJOURN_BENCH_WARM_MIB")
        .ok()
        .map(|v| v.parse::<u64>().expect("SOJOURN_BENCH_WARM_MIB: MiB"))
        .unwrap_or(sojourn_host::daemon::config::DEFAULT_WARM_ARRIVAL_MIB);
    (mib << 20) as usize
}

fn main() {
    let sizes = sizes();
    let runs: usize = std::env::var("SOJOURN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let marks = std::env::var_os("SOJOURN_BENCH_MARKS").is_some();
    let profile = if cfg!(debug_assertions) {
        "debug (unoptimized: numbers are not representative)"
    } else {
        "optimized (bench/release profile)"
    };
    println!("migration bench: two host cores in one process, software attestation, sealed redb stores, API servers on 127.0.0.1 (TLS 1.3), source link = HttpLink");
    println!(
        "machine: {} CPUs ({}), build: {profile}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    // As the daemon does at start with its default `[runtime] retain_freed_heap_mib` (or
    // SOJOURN_BENCH_RETAIN_MIB; 0 leaves the allocator as it is).
    let retain_mib = std::env::var("SOJOURN_BENCH_RETAIN_MIB")
        .ok()
        .map(|v| v.parse::<u64>().expect("SOJOURN_BENCH_RETAIN_MIB: MiB"))
        .unwrap_or(sojourn_host::daemon::config::DEFAULT_RETAIN_FREED_HEAP_MIB);
    let retained = sojourn_mem::retain_freed_heap((retain_mib << 20) as usize);
    println!(
        "freed heap kept for reuse: {} (`[runtime] retain_freed_heap_mib`; SOJOURN_BENCH_RETAIN_MIB)",
        if retained {
            format!("up to {retain_mib} MiB per heap")
        } else {
            "as the allocator decides".into()
        }
    );
    // As the daemon does at start with its default `[runtime] huge_pages = "auto"`.
    let huge = sojourn_mem::set_huge_pages(sojourn_mem::HugePages::Auto);
    println!(
        "huge pages for large buffers: {} (setting auto; see sojourn-mem)",
        if huge { "advised" } else { "not used" }
    );
    println!(
        "pages kept for the next arrival at the destination: {} MiB (`[migration] warm_arrival_mib`; SOJOURN_BENCH_WARM_MIB); each migration and each floor starts once they are faulted in",
        warm_arrival_bytes() >> 20
    );
    println!("sizes: {sizes:?} MiB, {runs} runs each (a fresh object per run); cells are medians");
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-api")
        .build()
        .unwrap();
    // One migration at the largest size first, not reported: the process's first touches of
    // memory the VM never gave it before cost several times what reused memory does.
    if let Some(&largest) = sizes.iter().max() {
        let (a, b) = (Daemon::start(&rt, "src"), Daemon::start(&rt, "dst"));
        let id = deploy_filled(&a, largest);
        let r = HostControl::migrate(&a.core, &id, b.request()).unwrap();
        assert_eq!(r.outcome, "transferred", "{r:?}");
        a.stop(&rt);
        b.stop(&rt);
    }

    let mut rows = Vec::new();
    let mut per_run = Vec::new();
    for &mib in &sizes {
        let mut samples = Vec::new();
        let mut floors = Vec::new();
        let mut cpus = Vec::new();
        for run in 0..runs {
            // A fresh pair of hosts per run: every run starts from the same footprint (the
            // objects of earlier runs would otherwise stay resident and grow it).
            let (a, b) = (Daemon::start(&rt, "src"), Daemon::start(&rt, "dst"));
            let floor_server = b.identity.server_tls_config().unwrap();
            let floor_client = client_tls(&b.ca_pem);
            let to_b = b.request();
            let t0 = Instant::now();
            let id = deploy_filled(&a, mib);
            let fill = t0.elapsed();
            // The destination's warm pages are made on a thread that runs only on an idle
            // core; nothing measured runs beside it.
            let warm = warm_arrival_bytes() > 0;
            assert_eq!(b.core.wait_warm_arrival_pages(WARM_WAIT), warm);
            let c1 = cpu_ms();
            let t1 = Instant::now();
            let report = HostControl::migrate(&a.core, &id, to_b.clone()).unwrap();
            let total = t1.elapsed();
            let cpu = cpu_ms() - c1;
            if marks {
                // CLOCK_MONOTONIC (Instant's Debug on Linux), for `perf record -k mono` + `--time`.
                eprintln!(
                    "  mark: migrate {mib} MiB from {t1:?} to {:?}",
                    Instant::now()
                );
            }
            assert_eq!(report.outcome, "transferred", "{report:?}");
            assert_eq!(b.core.inspect(&id).unwrap().state["filled"], 1);
            let s = sample(total, &report);
            let package = report.package_bytes as usize;
            assert_eq!(b.core.wait_warm_arrival_pages(WARM_WAIT), warm);
            let (fseal, fsend, fcpu) =
                floor(&rt, floor_server.clone(), floor_client.clone(), package);
            let (durable, fresh) = extras(&b.dir, package);
            eprintln!(
                "  {mib} MiB run {}: deploy+fill {:.0} ms | total {} downtime {} | quiesce {} attestation {} appraisal {} seal {} transfer {} commit {} | package {:.2} MiB | floor seal {} send {} | durable write {} fresh copy {} | cpu {} (floor {})",
                run + 1,
                fill.as_secs_f64() * 1e3,
                ms(s.total),
                ms(s.downtime),
                ms(s.quiesce),
                ms(s.attestation),
                ms(s.appraisal),
                ms(s.seal),
                ms(s.transfer),
                ms(s.commit),
                s.package,
                ms(fseal),
                ms(fsend),
                ms(durable),
                ms(fresh),
                ms(cpu),
                ms(fcpu),
            );
            samples.push(s);
            floors.push((fseal, fsend, durable, fresh));
            cpus.push((cpu, fcpu));
            a.stop(&rt);
            b.stop(&rt);
        }
        let col = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let fseal = median(floors.iter().map(|f| f.0).collect());
        let fsend = median(floors.iter().map(|f| f.1).collect());
        let ffloor = median(floors.iter().map(|f| f.0 + f.1).collect());
        let total = col(|s| s.total);
        let durable = median(floors.iter().map(|f| f.2).collect());
        let fresh = median(floors.iter().map(|f| f.3).collect());
        // The floor's TLS send varies between runs several times more than the migration
        // does, so the ratio is also given per run, against the floor measured right after.
        let ratios: Vec<f64> = samples
            .iter()
            .zip(&floors)
            .map(|(s, f)| s.total / (f.0 + f.1))
            .collect();
        per_run.push(format!(
            "{mib} MiB: total / floor per run: median {:.2}×, {:.2}–{:.2}×, {} of {} at or under 2×",
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
            ratios.iter().filter(|r| **r <= 2.0).count(),
            ratios.len(),
        ));
        let cpu = median(cpus.iter().map(|c| c.0).collect());
        let fcpu = median(cpus.iter().map(|c| c.1).collect());
        rows.push(format!(
            "| {mib} MiB | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} ({} + {}) | {:.1}× | {} | {} | {} | {} |",
            ms(total),
            ms(col(|s| s.downtime)),
            ms(col(|s| s.quiesce)),
            ms(col(|s| s.attestation)),
            ms(col(|s| s.appraisal)),
            ms(col(|s| s.seal)),
            ms(col(|s| s.transfer)),
            ms(col(|s| s.commit)),
            col(|s| s.package),
            ms(ffloor),
            ms(fseal),
            ms(fsend),
            total / ffloor,
            ms(durable),
            ms(fresh),
            ms(cpu),
            ms(fcpu),
        ));
    }
    println!();
    println!("| size | total ms | downtime ms | quiesce | attestation | appraisal | seal | transfer | commit | package MiB | floor ms (seal + TLS) | total/floor | durable write ms | fresh-buffer copy ms | CPU ms | floor CPU ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    for r in per_run {
        println!("{r}");
    }
    println!();
    println!("total: wall time of `HostControl::migrate` at the source; downtime: the object quiesced until the source's decision; steps (ms) as the source measured them; seal includes the `Sent` commit and the snapshot, and overlaps the start of the transfer (parts are sent as they are sealed); transfer includes the destination's open, restore, lineage verify and durable commit;");
    println!("total/floor: the median total over the median floor; the lines under the table give it per run, each migration against the floor measured right after it.");
    println!("floor: one AES-256-GCM seal (ring) of the package's byte count + one TLS 1.3 loopback connection (handshake included) carrying it to a receiver that reads it all and answers one byte.");
    println!("not in the floor, for context: durable write = the same bytes written to a new file beside the destination's store and fsync'ed (its durable commit must do at least that); fresh-buffer copy = the same bytes copied into a newly allocated buffer (page faults: the pipeline touches new memory for the package at each end and for the restored instance's memory).");
    println!("CPU ms: CPU time of the whole process (all threads, CLOCK_PROCESS_CPUTIME_ID) during the migration and during the floor; with {} cores, wall time is at least CPU / cores.", std::thread::available_parallelism().map_or(0, |n| n.get()));
}
