//! The `sojourn` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::path::PathBuf;
use std::process::Command;

fn sojourn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sojourn"))
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn pack_prints_a_stable_digest() {
    let out = sojourn()
        .args(["object", "pack", "--json"])
        .arg(examples().join("escrow"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = v["descriptor_sha256"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    let again = sojourn()
        .args(["object", "pack"])
        .arg(examples().join("escrow"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with(&digest));
}

#[test]
fn run_prints_transitions_and_json() {
    let out = sojourn()
        .args([
            "run",
            "--virtual-time",
            "--ticks",
            "3",
            "--json",
            "--send",
            "withdraw 5",
            "--send",
            "deposit 7",
        ])
        .arg(examples().join("escrow"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["entry"], "init");
    let msgs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["entry"] == "message").collect();
    assert_eq!(msgs[0]["outcome"], "rejected");
    assert!(msgs[0]["reason"].as_str().unwrap().contains("balance"));
    assert_eq!(msgs[1]["outcome"], "accepted");
    assert_eq!(msgs[1]["state_before"].as_str().unwrap().len(), 64);

    let out = sojourn()
        .args(["run", "--virtual-time", "--ticks", "2"])
        .arg(examples().join("counter"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tick    accepted writes[count=2]"), "{text}");
}

#[test]
fn bad_input_gets_a_clear_error_and_a_failing_exit() {
    let dir = std::env::temp_dir().join(format!("sojourn-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("object.toml"),
        "[object]\nname='x'\nversion=1\nmodule='x.wasm'\n[limits]\nfuel_per_entry=1\nmemory_pages_max=1\nmemory=2\n[schema.fields]\n",
    )
    .unwrap();
    let out = sojourn()
        .args(["object", "pack"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("object.toml") && err.contains("unknown field `memory`"),
        "{err}"
    );

    std::fs::write(
        dir.join("object.toml"),
        "[object]\nname='x'\nversion=1\nmodule='../x.wasm'\n[limits]\nfuel_per_entry=1\nmemory_pages_max=1\n[schema.fields]\n",
    )
    .unwrap();
    let out = sojourn().args(["run"]).arg(&dir).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("a path inside the object directory"));

    std::fs::write(
        dir.join("object.toml"),
        "[object]\nname='x'\nversion=1\nmodule='x.wasm'\n[limits]\nfuel_per_entry=1\nmemory_pages_max=1\n[schema.fields]\n",
    )
    .unwrap();
    std::fs::write(dir.join("x.wasm"), b"not wasm").unwrap();
    let out = sojourn().args(["run"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly module"));
    let _ = std::fs::remove_dir_all(&dir);

    let out = sojourn()
        .args(["run", "--for", "3 parsecs", "."])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn demo_runs_in_virtual_time() {
    let out = sojourn()
        .args(["demo", "--virtual-time", "--seconds", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("What each object did"));
    assert!(text.contains("runaway") && text.contains("suspended"));
    assert!(text.contains("is immutable"));
}

#[test]
fn run_writes_a_lineage_that_verifies_offline_and_tampering_is_reported() {
    let dir = std::env::temp_dir().join(format!("sojourn-lineage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("escrow.lineage");
    let run = sojourn()
        .args([
            "run",
            "--virtual-time",
            "--ticks",
            "2",
            "--send",
            "deposit 10",
            "--send",
            "withdraw 50",
            "--lineage-batch",
            "2",
            "--lineage-out",
        ])
        .arg(&out_file)
        .arg(examples().join("escrow"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("SOFTWARE (insecure"));
    let rv = examples().join("reference-values/software-dev.toml");
    let ok = sojourn()
        .args(["lineage", "verify", "--json", "--reference-values"])
        .arg(&rv)
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["summary"]["outcomes"]["rejected"], 1);
    // The escrow's own policy does not allow software evidence.
    let refused = sojourn()
        .args(["lineage", "verify", "--json"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(v["failure"]["field"], "evidence");
    // One flipped byte in the middle.
    let mut bytes = std::fs::read(&out_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&out_file, &bytes).unwrap();
    let bad = sojourn()
        .args(["lineage", "verify", "--reference-values"])
        .arg(&rv)
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does NOT verify: item"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attest_verify_checks_real_evidence_and_its_report_data() {
    let v = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attestation/tests/vectors/snp");
    let base = |extra: &[&str]| {
        let mut c = sojourn();
        c.args(["attest", "verify", "--json"])
            .arg(v.join("milan_a_report.bin"))
            .arg("--certs")
            .arg(v.join("milan_ask_ark.pem"))
            .arg("--certs")
            .arg(v.join("milan_a_vcek.der"))
            .args(extra);
        c.output().unwrap()
    };
    let good = "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd";
    let ok = base(&["--report-data", good]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut wrong = good.to_string();
    wrong.replace_range(0..2, "00");
    let bad = base(&["--report-data", &wrong]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
}
