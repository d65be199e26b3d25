//! The SNP launch digest against `sev-snp-measure` (IBM, PyPI) on committed inputs
//! (tests/vectors/snp: gen.py made them and recorded the tool's output and commands).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sojourn_measure::snp::{vcpu_sig_for, SnpLaunch, VmmType};
use sojourn_measure::MeasureError;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/snp")
}

fn load() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

#[test]
fn matches_sev_snp_measure() {
    let v = load();
    assert!(v["tool"].as_str().unwrap().starts_with("sev-snp-measure"));
    let kernel = std::fs::read(dir().join("kernel.bin")).unwrap();
    let initrd = std::fs::read(dir().join("initrd.bin")).unwrap();
    let mut checked = 0;
    let mut direct_boot = 0;
    for c in v["vectors"].as_array().unwrap() {
        let fw_name = c["fw"].as_str().unwrap();
        let fw_path = if fw_name.starts_with('/') {
            PathBuf::from(fw_name)
        } else {
            dir().join(fw_name)
        };
        let Ok(fw) = std::fs::read(&fw_path) else {
            eprintln!("skip {}: {} not installed", c["name"], fw_path.display());
            continue;
        };
        if hex::encode(Sha256::digest(&fw)) != c["firmware_sha256"].as_str().unwrap() {
            eprintln!("skip {}: {} is another build", c["name"], fw_path.display());
            continue;
        }
        let sig = match c.get("vcpu_sig") {
            Some(s) => s.as_u64().unwrap() as u32,
            None => vcpu_sig_for(c["vcpu_type"].as_str().unwrap()).unwrap(),
        };
        let vmm: VmmType = c["vmm"].as_str().unwrap().parse().unwrap();
        let vcpus = c["vcpus"].as_u64().unwrap() as u32;
        let mut launch = SnpLaunch::new(&fw, vcpus, sig).vmm(vmm);
        if c["kernel"].as_bool().unwrap() {
            let ird = c["initrd"].as_bool().unwrap().then_some(&initrd[..]);
            launch = launch.direct_boot(&kernel, ird, c["append"].as_str().unwrap());
            direct_boot += 1;
        }
        let got = hex::encode(launch.digest().unwrap());
        assert_eq!(got, c["expected"].as_str().unwrap(), "vector {}", c["name"]);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} vectors checked");
    assert!(direct_boot >= 3);
}

#[test]
fn inputs_change_the_digest() {
    let fw = std::fs::read(dir().join("fw.bin")).unwrap();
    let k = std::fs::read(dir().join("kernel.bin")).unwrap();
    let base = SnpLaunch::new(&fw, 2, 0xa00f11)
        .direct_boot(&k, None, "a")
        .digest()
        .unwrap();
    for other in [
        SnpLaunch::new(&fw, 3, 0xa00f11).direct_boot(&k, None, "a"),
        SnpLaunch::new(&fw, 2, 0xa10f11).direct_boot(&k, None, "a"),
        SnpLaunch::new(&fw, 2, 0xa00f11).direct_boot(&k, None, "b"),
        SnpLaunch::new(&fw, 2, 0xa00f11).direct_boot(&k, Some(b""), "a"),
        SnpLaunch::new(&fw, 2, 0xa00f11).direct_boot(&k[1..], None, "a"),
        SnpLaunch::new(&fw, 2, 0xa00f11)
            .direct_boot(&k, None, "a")
            .guest_features(0x21),
    ] {
        let d = other.digest().unwrap();
        // An empty initrd hashes like no initrd (QEMU and sev-snp-measure agree).
        if other.initrd == Some(b"") {
            assert_eq!(d, base);
        } else {
            assert_ne!(d, base);
        }
    }
}

#[test]
fn direct_boot_needs_kernel_hashes_section() {
    // Debian's OVMF_CODE.fd has SEV metadata but no SNP_KERNEL_HASHES section.
    let Ok(fw) = std::fs::read("/usr/share/OVMF/OVMF_CODE.fd") else {
        return;
    };
    let e = SnpLaunch::new(&fw, 1, 0xa00f11)
        .direct_boot(b"k", None, "")
        .digest()
        .unwrap_err();
    assert!(matches!(e, MeasureError::OvmfUnsupported(_)), "{e}");
}

#[test]
fn bad_parameters_are_typed_errors() {
    let fw = std::fs::read(dir().join("fw.bin")).unwrap();
    assert!(matches!(
        SnpLaunch::new(&fw, 0, 1).digest(),
        Err(MeasureError::Input(_))
    ));
    assert!(matches!(
        vcpu_sig_for("EPYC-Nope"),
        Err(MeasureError::Input(_))
    ));
    assert!(matches!(
        SnpLaunch::new(&fw[..4096 * 3 + 1], 1, 1).digest(),
        Err(MeasureError::Ovmf(_))
    ));
}
