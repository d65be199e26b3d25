//! Shared by the host's integration tests: scratch directories and an in-process host core in
//! software attestation mode.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
