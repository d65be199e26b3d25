//! The second act of `sojourn demo`: three hosts on loopback, in software attestation mode
//! (INSECURE, for the demo; the objects' demo policies allow it), each a real daemon core with
//! its TLS 1.3 API. An object moves from host A to host B over the attested migration
//! protocol while messages keep arriving; a move to host C, whose evidence carries a
//! measurement the object's policy does not list, is refused; the lineage exported at B
//! verifies across both hosts. Everything runs in this process and is removed at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use sojourn_api::{
    Client, ClientConfig, Credential, DeployRequest, HostControl as _, LocalIdentity,
    MigrateRequest, MigrationReport, Role,
};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_store::{SealingKey, Store};

use crate::daemon::{CoreOptions, HostCore, LineageSetup};

/// The sample objects (the same files `sojourn demo`'s first act runs).
const EXAMPLES: [(&str, &[u8]); 3] = [
    (
        include_str!("../../examples/counter/object.toml"),
        include_bytes!("../../examples/counter/counter.wasm"),
    ),
    (
        include_str!("../../examples/thermostat/object.toml"),
        include_bytes!("../../examples/thermostat/thermostat.wasm"),
    ),
    (
        include_str!("../../examples/escrow/object.toml"),
        include_bytes!("../../examples/escrow/escrow.wasm"),
    ),
];

/// The launch measurement hosts A and B report (software evidence lets the demo choose it).
const GOOD_MEASUREMENT: [u8; 48] = [0x5a; 48];
/// Host C's: not in the objects' reference values.
const OTHER_MEASUREMENT: [u8; 48] = [0xc3; 48];

struct DemoHost {
    name: &'static str,
    core: HostCore,
    client: ClientConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_host(name: &'static str, dir: PathBuf, measurement: [u8; 48]) -> Result<DemoHost> {
    std::fs::create_dir_all(&dir)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("randomness: {e}"))?;
    let mut sealing = [0u8; 32];
    getrandom::fill(&mut sealing).map_err(|e| anyhow!("randomness: {e}"))?;
    let setup = LineageSetup {
        attester: Arc::new(move || {
            SoftwareKey::from_seed(seed)
                .map(|k| {
                    Box::new(SoftwareAttester::new(k).with_measurement(measurement))
                        as Box<dyn Attester + Send>
                })
                .map_err(|e| e.to_string())
        }),
        reference: ReferenceValues::default().allowing_software(),
        label: "software".into(),
        software: true,
    };
    let store = Store::open(&dir, SealingKey::from_bytes(sealing))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let options = CoreOptions {
        workers: 2,
        self_url: url.clone(),
        ..CoreOptions::default()
    };
    let core = HostCore::start(store, setup, options).map_err(|e| anyhow!("host {name}: {e}"))?;
    let identity = LocalIdentity::load_or_create(&dir)?;
    let admin = Credential::generate(format!("demo-{name}"), Role::Admin)?;
    let client = ClientConfig {
        url,
        ca_pem: identity.ca_pem().to_string(),
        token: admin.token.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let control: Arc<dyn sojourn_api::HostControl> = Arc::new(core.clone());
    let tls = identity.server_tls_config()?;
    let server = tokio::spawn(async move {
        let _ = sojourn_api::serve(listener, tls, control, vec![admin], async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(DemoHost {
        name,
        core,
        client,
        stop: Some(stop),
        server,
    })
}

impl DemoHost {
    fn destination(&self) -> MigrateRequest {
        MigrateRequest {
            to: self.client.url.clone(),
            ca_pem: self.client.ca_pem.clone(),
            token: self.client.token.clone(),
        }
    }

    fn api(&self) -> Result<Client> {
        Ok(Client::from_config(&self.client)?)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.server.await;
        let core = self.core.clone();
        let _ = tokio::task::spawn_blocking(move || core.shutdown()).await;
    }
}

/// The demo's policy for the sample objects: they may move to software hosts whose evidence
/// reports [`GOOD_MEASUREMENT`], and trust may not fall.
fn demo_policy(toml: &str) -> String {
    let demo = format!(
        "[policy.migration]\nallowed = true\nplatforms = [\"software\"]\nallow_software = true\n\
         measurements = [\"{}\"]\ntrust = \"no-fall\"\n",
        hex::encode(GOOD_MEASUREMENT)
    );
    let toml = toml
        .replace("allow_software = false", "allow_software = true")
        .replace("[policy.migration]\nallowed = false\n", "");
    format!("{toml}\n{demo}")
}

fn print_report(r: &MigrationReport) {
    println!(
        "    outcome {}{}",
        r.outcome,
        r.reason
            .as_deref()
            .map(|x| format!(": {x}"))
            .unwrap_or_default()
    );
    if let Some(a) = &r.appraisal {
        println!("    appraisal: {a}");
    }
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} {:.1} ms", s.name, s.micros as f64 / 1000.0))
        .collect();
    println!("    steps: {}", steps.join(", "));
    if r.outcome == "transferred" {
        println!(
            "    package {} KiB, object ran nowhere for {:.1} ms",
            r.package_bytes / 1024,
            r.downtime_micros as f64 / 1000.0
        );
    }
}

/// Runs the two-host act. Returns an error if anything the demo shows did not happen.
pub async fn run() -> Result<()> {
    let started = Instant::now();
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).map_err(|e| anyhow!("randomness: {e}"))?;
    let root = std::env::temp_dir().join(format!("sojourn-demo-{}", hex::encode(tag)));
    let result = act(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    if result.is_ok() {
        println!(
            "\n(two-host act: {:.1} s; hosts stopped, {} removed)",
            started.elapsed().as_secs_f64(),
            root.display()
        );
    }
    result
}

async fn act(root: &std::path::Path) -> Result<()> {
    println!("\n== Act 2: attested migration between hosts (software attestation: INSECURE, demo only) ==");
    let a = start_host("A", root.join("a"), GOOD_MEASUREMENT).await?;
    let b = start_host("B", root.join("b"), GOOD_MEASUREMENT).await?;
    let c = start_host("C", root.join("c"), OTHER_MEASUREMENT).await?;
    for h in [&a, &b, &c] {
        let m = if h.name == "C" {
            OTHER_MEASUREMENT
        } else {
            GOOD_MEASUREMENT
        };
        println!(
            "  host {} at {} (measurement {}…)",
            h.name,
            h.client.url,
            &hex::encode(m)[..12]
        );
    }
    let outcome = scenario(&a, &b, &c).await;
    for h in [a, b, c] {
        h.stop().await;
    }
    outcome
}

async fn scenario(a: &DemoHost, b: &DemoHost, c: &DemoHost) -> Result<()> {
    use base64::Engine as _;
    let api_a = a.api()?;
    let mut ids = std::collections::BTreeMap::new();
    for (toml, wasm) in EXAMPLES {
        let req = DeployRequest {
            object_toml: demo_policy(toml),
            module_base64: base64::engine::general_purpose::STANDARD.encode(wasm),
        };
        let info = api_a.deploy(&req).await.context("deploy on A")?;
        println!("  deployed {:<10} on A: {}", info.name, info.id);
        ids.insert(info.name.clone(), info.id);
    }
    let escrow = ids.get("escrow").cloned().ok_or(anyhow!("no escrow"))?;
    let thermostat = ids
        .get("thermostat")
        .cloned()
        .ok_or(anyhow!("no thermostat"))?;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A client keeps depositing 1 into the escrow, following it to wherever it runs; a send
    // counts only once the host acknowledged it (durably queued).
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, refused, done) = (acked.clone(), refused.clone(), done.clone());
        let (api_a, api_b) = (a.api()?, b.api()?);
        let id = escrow.clone();
        tokio::spawn(async move {
            let mut at_b = false;
            while !done.load(Ordering::Relaxed) {
                let api = if at_b { &api_b } else { &api_a };
                match api.send_text(&id, "deposit 1").await {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if e.to_string().contains("moved to") {
                            at_b = true;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("\n  migrate escrow A -> B while deposits arrive:");
    let core_a = a.core.clone();
    let (id, dest) = (escrow.clone(), b.destination());
    let r = tokio::task::spawn_blocking(move || core_a.migrate(&id, dest)).await??;
    print_report(&r);
    if r.outcome != "transferred" {
        bail!("the move to B did not happen: {r:?}");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::Relaxed);
    let _ = sender.await;

    println!("\n  migrate thermostat A -> C (C's measurement is not in the object's policy):");
    let core_a = a.core.clone();
    let (id, dest) = (thermostat.clone(), c.destination());
    let r = tokio::task::spawn_blocking(move || core_a.migrate(&id, dest)).await??;
    print_report(&r);
    if r.outcome != "refused" {
        bail!("the move to C was not refused: {r:?}");
    }
    let t = a.api()?.inspect(&thermostat).await?;
    println!(
        "    thermostat still runs on A: status {}, seq {}",
        t.info.status, t.info.seq
    );

    // The deposits: every acknowledged one is in the balance, at B.
    let api_b = b.api()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let d = api_b.inspect(&escrow).await?;
        if d.info.inbox == 0 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deposited = detail.state["total_deposited"].as_i64().unwrap_or(-1);
    let acked = acked.load(Ordering::Relaxed);
    println!(
        "\n  escrow at B: {} deposits acknowledged ({} refused while it moved, retried), \
         total_deposited = {deposited}",
        acked,
        refused.load(Ordering::Relaxed)
    );
    if u64::try_from(deposited).ok() != Some(acked) {
        bail!("acknowledged deposits {acked} but the escrow holds {deposited}");
    }
    let at_a = a.api()?.inspect(&escrow).await?;
    println!(
        "  escrow at A: status {} (a tombstone: it never runs there again)",
        at_a.info.status
    );

    // One lineage across both hosts.
    let lineage = api_b.lineage(&escrow).await?;
    let opts = sojourn_lineage::VerifyOptions {
        // The reference values the hosts appraised their own evidence against (the trust
        // recorded in each entry is recomputed from them).
        reference: Some(ReferenceValues::default().allowing_software()),
        at: None,
    };
    let s = sojourn_lineage::verify_lineage(&lineage, &opts)
        .map_err(|e| anyhow!("the lineage exported at B does not verify: {e}"))?;
    println!(
        "  lineage exported at B verifies: {} entries, {} host keys, migrated-out {}, migrated-in {}",
        s.entries,
        s.hosts.len(),
        s.outcomes.get("migrated-out").copied().unwrap_or(0),
        s.outcomes.get("migrated-in").copied().unwrap_or(0)
    );
    let t_lineage = a.api()?.lineage(&thermostat).await?;
    let ts = sojourn_lineage::verify_lineage(&t_lineage, &opts)
        .map_err(|e| anyhow!("the thermostat's lineage does not verify: {e}"))?;
    println!(
        "  thermostat's lineage records the refusal: migration-refused {}",
        ts.outcomes.get("migration-refused").copied().unwrap_or(0)
    );
    Ok(())
}
