//! Shared by the host's integration tests: scratch directories and an in-process host core in
//! software attestation mode.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sojourn_api::{Client, ClientConfig};

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_host::daemon::{CoreOptions, HostCore, LineageSetup};
use sojourn_store::{SealingKey, Store};

/// A fresh directory under the system's temporary directory.
pub fn tempdir(tag: &str) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).unwrap();
    let d = std::env::temp_dir().join(format!("sojourn-{tag}-{}", hex::encode(r)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A host core on the store in `dir`, with software evidence from `seed` (the same seed gives
/// the same attestation key and sealing key, so a restart reopens the store).
pub fn software_core(dir: &Path, seed: [u8; 32]) -> HostCore {
    software_core_with(dir, seed, false, CoreOptions::default())
}

/// [`software_core`] with options; `debug` makes its evidence claim a debug-enabled TEE
/// (which migration policies forbid by default).
pub fn software_core_with(
    dir: &Path,
    seed: [u8; 32],
    debug: bool,
    options: CoreOptions,
) -> HostCore {
    let setup = LineageSetup {
        attester: Arc::new(move || {
            SoftwareKey::from_seed(seed)
                .map(|k| {
                    Box::new(SoftwareAttester::new(k).with_debug(debug)) as Box<dyn Attester + Send>
                })
                .map_err(|e| e.to_string())
        }),
        reference: ReferenceValues::default().allowing_software(),
        label: "software".into(),
        software: true,
    };
    let store = Store::open(dir, SealingKey::from_bytes([seed[0]; 32])).unwrap();
    HostCore::start(store, setup, options).unwrap()
}

/// The `sojourn` binary under test.
pub fn sojourn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sojourn"))
}

/// A running `sojourn host`.
pub struct Host {
    pub child: Child,
    pub url: String,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Host {
    pub fn start(home: &Path) -> Host {
        Host::start_with(home, "127.0.0.1:0", &[])
    }

    /// Starts `sojourn host` on `listen` with extra environment variables.
    pub fn start_with(home: &Path, listen: &str, env: &[(&str, &str)]) -> Host {
        Host::start_args(home, &["--listen", listen], env)
    }

    /// Starts `sojourn host ARGS...`.
    pub fn start_args(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Host {
        let mut child = sojourn()
            .arg("host")
            .args(args)
            .env("SOJOURN_HOME", home)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(u) = l.trim().strip_prefix("listening on") {
                        let _ = tx.send(u.trim().to_string());
                    }
                    lines.lock().unwrap().push(l);
                }
            });
        }
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(format!("stderr: {l}"));
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("host did not start: {:#?}", lines.lock().unwrap());
            }
        };
        Host { child, url, lines }
    }

    pub fn client(&self, home: &Path) -> Client {
        let cfg = ClientConfig::load(&home.join("client.toml")).unwrap();
        assert_eq!(cfg.url, self.url);
        Client::from_config(&cfg).unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{:#?}", self.lines.lock().unwrap());
        self.lines.lock().unwrap().join("\n")
    }
}

/// An object that counts its ticks and the messages it consumed.
pub const MOVER_WAT: &str = r#"(module
  (import "sojourn" "field_get_i64" (func $get (param i32 i32) (result i64)))
  (import "sojourn" "field_set_i64" (func $set (param i32 i32 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "received")
  (data (i32.const 16) "ticks")
  (func (export "sojourn_tick") (param i64) (result i64)
    (call $set (i32.const 16) (i32.const 5) (i64.add (call $get (i32.const 16) (i32.const 5)) (i64.const 1)))
    (i64.store (i32.const 4000) (call $get (i32.const 16) (i32.const 5)))
    (i64.const 20))
  (func (export "sojourn_on_message") (param i32) (result i32)
    (call $set (i32.const 0) (i32.const 8) (i64.add (call $get (i32.const 0) (i32.const 8)) (i64.const 1)))
    (i32.const 0)))"#;

/// The mover's `object.toml` with `migration` appended to its `[policy.migration]` (which
/// already says `allowed = true`).
pub fn mover_toml(migration: &str) -> String {
    format!(
        r#"[object]
name = "mover"
version = 1
module = "mover.wasm"
[cycle]
min_interval_ms = 5
inbox_capacity = 64
[limits]
fuel_per_entry = 100000
memory_pages_max = 1
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
[policy.migration]
allowed = true
{migration}
"#
    )
}
