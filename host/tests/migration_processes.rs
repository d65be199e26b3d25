//! Attested migration between real `sojourn host` processes over TLS, with each host killed
//! (abort, like `kill -9`: nothing beyond what was committed survives) at each step of the
//! protocol, then restarted: afterwards exactly one host runs the object, every acknowledged
//! message is in its state, and its lineage verifies across both hosts.
//!
//! Crash points (`SOJOURN_CRASH_AT`): `source-offering` (after `Offering` is durable),
//! `dest-offered` (evidence made, not yet answered), `source-sent` (after `Sent` +
//! `migrated-out` are durable, before the package leaves), `dest-staged` (the arrived
//! object's memory image file is durable, no store record names it), `dest-received` (the object is
//! durable at the destination, the `ack` not yet sent), `source-answered` (the signed answer
//! arrived, the tombstone not yet written). `SOJOURN_MIGRATION_FAULT_ROUNDS` repeats each
//! (default 1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::path::Path;
use std::time::{Duration, Instant};

use sojourn_api::{Client, ClientConfig, DeployRequest};
use sojourn_attestation::ReferenceValues;
use sojourn_lineage::{verify_lineage, VerifyOptions};

mod common;
use common::{mover_toml, sojourn, tempdir, Host, MOVER_WAT as WAT};

const SOFTWARE_OK: &str = "platforms = [\"software\"]\nallow_software = true";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(home: &Path) -> Client {
    Client::from_config(&ClientConfig::load(&home.join("client.toml")).unwrap()).unwrap()
}

/// Where the object is: `Some(status)` or `None` (the host never had it).
fn status(rt: &tokio::runtime::Runtime, home: &Path, id: &str) -> Option<(String, i64, u64)> {
    rt.block_on(client(home).inspect(id)).ok().map(|d| {
        (
            d.info.status,
            d.state["received"].as_i64().unwrap_or(-1),
            d.info.inbox,
        )
    })
}

fn listen_of(url: &str) -> String {
    url.trim_start_matches("https://").to_string()
}

/// One crash at `point` in the host `crash_source ? A : B`; returns which host ends up
/// running the object.
fn crash_once(point: &str, crash_source: bool) -> &'static str {
    let rt = rt();
    let (home_a, home_b) = (tempdir("mp-a"), tempdir("mp-b"));
    let env: &[(&str, &str)] = &[("SOJOURN_CRASH_AT", point)];
    let mut a = Some(Host::start_with(
        &home_a,
        "127.0.0.1:0",
        if crash_source { env } else { &[] },
    ));
    let mut b = Some(Host::start_with(
        &home_b,
        "127.0.0.1:0",
        if crash_source { &[] } else { env },
    ));
    let (url_a, url_b) = (
        a.as_ref().unwrap().url.clone(),
        b.as_ref().unwrap().url.clone(),
    );

    use base64::Engine as _;
    let id = rt
        .block_on(client(&home_a).deploy(&DeployRequest {
            object_toml: mover_toml(SOFTWARE_OK),
            module_base64:
                base64::engine::general_purpose::STANDARD.encode(wat::parse_str(WAT).unwrap()),
        }))
        .unwrap()
        .id;
    let sent = 7;
    for i in 0..sent {
        rt.block_on(client(&home_a).send_text(&id, &format!("m{i}")))
            .unwrap();
    }

    let out = sojourn()
        .args(["migrate", &id, "--from"])
        .arg(home_a.join("client.toml"))
        .arg("--to")
        .arg(home_b.join("client.toml"))
        .output()
        .unwrap();
    let cli = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The crashed host has exited (abort); restart it on the same address.
    let crashed = if crash_source { &mut a } else { &mut b };
    let mut h = crashed.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let died = loop {
        if let Some(st) = h.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{point}: the host did not reach the crash point; cli: {cli}\n{:#?}",
            h.lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!died.success(), "{point}: {died:?}");
    let (home, url) = if crash_source {
        (&home_a, &url_a)
    } else {
        (&home_b, &url_b)
    };
    *crashed = Some(Host::start_with(home, &listen_of(url), &[]));

    // Settle: exactly one host runs the object, the other holds a tombstone or never had
    // it, and no acknowledged message is lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    let owner = loop {
        let (sa, sb) = (status(&rt, &home_a, &id), status(&rt, &home_b, &id));
        let active = |s: &Option<(String, i64, u64)>| {
            s.as_ref()
                .is_some_and(|(st, got, inbox)| st == "active" && *got == sent && *inbox == 0)
        };
        let gone = |s: &Option<(String, i64, u64)>| {
            s.as_ref().is_none_or(|(st, _, _)| st == "transferred")
        };
        if active(&sa) && gone(&sb) {
            break "A";
        }
        if active(&sb) && gone(&sa) {
            break "B";
        }
        assert!(
            Instant::now() < deadline,
            "{point}: not settled: A {sa:?}, B {sb:?}; cli: {cli}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // The owner's lineage verifies; if it moved, the source's export is its prefix.
    let (owner_home, other_home) = if owner == "A" {
        (&home_a, &home_b)
    } else {
        (&home_b, &home_a)
    };
    let lineage = rt.block_on(client(owner_home).lineage(&id)).unwrap();
    let opts = VerifyOptions {
        reference: Some(ReferenceValues::default().allowing_software()),
        at: None,
    };
    let s = verify_lineage(&lineage, &opts).unwrap_or_else(|e| panic!("{point}: {e}"));
    if owner == "B" {
        let prefix = rt.block_on(client(other_home).lineage(&id)).unwrap();
        assert!(lineage.starts_with(&prefix), "{point}: one chain");
        assert_eq!(s.outcomes.get("migrated-in"), Some(&1), "{point}: {s:?}");
    } else {
        assert!(!s.outcomes.contains_key("migrated-in"), "{point}: {s:?}");
    }
    // One memory image file where it runs; one at a source it left (its tombstone's); none
    // at a destination it never reached, even one that crashed holding a staged image.
    let images = |home: &Path| {
        std::fs::read_dir(home.join("memory"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&id))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(images(owner_home), 1, "{point}: images where it runs");
    assert_eq!(
        images(other_home),
        usize::from(owner == "B"),
        "{point}: images at the other host"
    );
    // It keeps running where it is.
    let before = rt
        .block_on(client(owner_home).inspect(&id))
        .unwrap()
        .info
        .seq;
    std::thread::sleep(Duration::from_millis(200));
    let after = rt
        .block_on(client(owner_home).inspect(&id))
        .unwrap()
        .info
        .seq;
    assert!(after > before, "{point}: the owner runs it");

    for h in [a, b].into_iter().flatten() {
        h.terminate();
    }
    let _ = std::fs::remove_dir_all(&home_a);
    let _ = std::fs::remove_dir_all(&home_b);
    owner
}

#[test]
fn a_host_killed_at_any_step_of_a_migration_leaves_exactly_one_owner() {
    let rounds: usize = std::env::var("SOJOURN_MIGRATION_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // (point, crash the source?, who must own the object afterwards)
    let cases = [
        ("source-offering", true, "A"),
        ("dest-offered", false, "A"),
        ("source-sent", true, "A"),
        ("dest-staged", false, "A"),
        ("dest-received", false, "B"),
        ("source-answered", true, "B"),
    ];
    for round in 0..rounds {
        for (point, crash_source, want) in cases {
            let owner = crash_once(point, crash_source);
            assert_eq!(owner, want, "round {round}: {point}");
            eprintln!("round {round}: {point}: settled, owner {owner}");
        }
    }
}

#[test]
fn sigterm_drains_every_object_to_the_configured_peer() {
    let rt = rt();
    let (home_a, home_b) = (tempdir("drain-a"), tempdir("drain-b"));
    let b = Host::start(&home_b);
    let config = home_a.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[migration]\ndrain_deadline_s = 30\n[[migration.peers]]\nurl = \"{}\"\nca_file = \"{}\"\ntoken_file = \"{}\"\n",
            b.url,
            home_b.join("tls/ca.pem").display(),
            home_b.join("admin.token").display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let a = Host::start_args(
        &home_a,
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    use base64::Engine as _;
    let mut ids = Vec::new();
    for i in 0..3 {
        let t = mover_toml(SOFTWARE_OK).replace("\"mover\"", &format!("\"d{i}\""));
        let id = rt
            .block_on(client(&home_a).deploy(&DeployRequest {
                object_toml: t,
                module_base64:
                    base64::engine::general_purpose::STANDARD.encode(wat::parse_str(WAT).unwrap()),
            }))
            .unwrap()
            .id;
        rt.block_on(client(&home_a).send_text(&id, "hello"))
            .unwrap();
        ids.push(id);
    }
    let out = a.terminate();
    assert!(out.contains("drain: 3 moved, 0 pending, 0 stay"), "{out}");
    for id in &ids {
        let d = rt.block_on(client(&home_b).inspect(id)).unwrap();
        assert_eq!(d.info.status, "active", "{id}");
        let got = loop {
            let d = rt.block_on(client(&home_b).inspect(id)).unwrap();
            if d.info.inbox == 0 {
                break d.state["received"].as_i64();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(got, Some(1), "the acknowledged message moved with it");
    }
    // Restarted, A holds only tombstones.
    let a = Host::start_args(
        &home_a,
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    for id in &ids {
        let d = rt.block_on(client(&home_a).inspect(id)).unwrap();
        assert_eq!(d.info.status, "transferred");
    }
    a.kill9();
    b.terminate();
    let _ = std::fs::remove_dir_all(&home_a);
    let _ = std::fs::remove_dir_all(&home_b);
}
