//! UKI measurements: PCR 11 against systemd-measure, Authenticode against pesign, PCR 4 and
//! the RTMRs against hand-computed extend chains, and the reference-values file against the
//! verifier's own parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256, Sha384};
use sojourn_measure::pe::PeImage;
use sojourn_measure::reference::ReferenceSpec;
use sojourn_measure::tcg::{
    extend, gpt_event_data, pcr_sha256, rtmr, rtmr_for_pcr, Event, EventType,
};
use sojourn_measure::uki::{measured_sections, BootModel, Uki};

fn vectors() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/uki/expected.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sojourn-measure-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write the test UKI and its section files (what systemd-measure and pesign read).
fn dump(dir: &Path) {
    let (uki, p) = common::test_uki();
    std::fs::write(dir.join("uki.efi"), &uki).unwrap();
    std::fs::write(dir.join("linux"), &p.linux).unwrap();
    std::fs::write(dir.join("osrel"), &p.osrel).unwrap();
    std::fs::write(dir.join("cmdline"), &p.cmdline).unwrap();
    std::fs::write(dir.join("initrd"), &p.initrd).unwrap();
}

/// `SOJOURN_MEASURE_DUMP=DIR cargo test -p sojourn-measure --test uki dump_inputs` writes the
/// inputs that tests/vectors/uki/gen.sh feeds to the independent tools.
#[test]
fn dump_inputs() {
    if let Some(d) = std::env::var_os("SOJOURN_MEASURE_DUMP") {
        std::fs::create_dir_all(&d).unwrap();
        dump(Path::new(&d));
    }
}

fn systemd_measure(dir: &Path, bank: &str) -> Option<String> {
    let bin = [
        "/usr/lib/systemd/systemd-measure",
        "/lib/systemd/systemd-measure",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())?;
    let out = Command::new(bin)
        .arg("calculate")
        .arg(format!("--linux={}", dir.join("linux").display()))
        .arg(format!("--osrel={}", dir.join("osrel").display()))
        .arg(format!("--cmdline={}", dir.join("cmdline").display()))
        .arg(format!("--initrd={}", dir.join("initrd").display()))
        .arg(format!("--bank={bank}"))
        .arg("--phase=")
        .arg("--json=short")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "systemd-measure failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[bank][0]["hash"].as_str()?.to_string())
}

#[test]
fn pcr11_matches_systemd_measure() {
    let (bytes, _) = common::test_uki();
    let uki = Uki::parse(&bytes).unwrap();
    assert_eq!(uki.stub_version(), Some(252));
    let ev = uki.pcr11_events(252);
    // .linux, .osrel, .cmdline, .initrd: name + contents each, in the stub's order.
    let names: Vec<&str> = ev.iter().map(|e| e.description.as_str()).collect();
    assert_eq!(names[0], ".linux (name)");
    assert_eq!(names[2], ".osrel (name)");
    assert_eq!(names[4], ".cmdline (name)");
    assert_eq!(names[6], ".initrd (name)");
    assert_eq!(ev.len(), 8);
    let pcr11 = hex::encode(pcr_sha256(&ev, 11));
    let v = vectors();
    assert_eq!(
        pcr11,
        v["pcr11_sha256"].as_str().unwrap(),
        "committed systemd-measure vector"
    );
    // The same chain in SHA-384 (systemd-measure --bank=sha384).
    let mut r = vec![0u8; 48];
    for e in &ev {
        r = extend::<Sha384>(&r, &e.sha384);
    }
    assert_eq!(hex::encode(&r), v["pcr11_sha384"].as_str().unwrap());
    // Live, where systemd-measure is installed (Debian: package systemd).
    let d = scratch("pcr11");
    dump(&d);
    if let Some(live) = systemd_measure(&d, "sha256") {
        assert_eq!(pcr11, live, "live systemd-measure");
    } else {
        eprintln!("systemd-measure not installed: checked the committed vector only");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn authenticode_matches_pesign() {
    let (bytes, _) = common::test_uki();
    let pe = PeImage::parse(&bytes).unwrap();
    let got = hex::encode(pe.authenticode::<Sha256>().unwrap());
    let v = vectors();
    assert_eq!(
        got,
        v["uki_authenticode_sha256"].as_str().unwrap(),
        "committed pesign vector"
    );
    // Independent of the section walk: with contiguous sections and no certificate table,
    // Authenticode = H(file without the 4 CheckSum bytes and the 8-byte directory entry).
    let opt = 0x58;
    let dir4 = opt + 112 + 32;
    let mut h = Sha256::new();
    h.update(&bytes[..opt + 64]);
    h.update(&bytes[opt + 68..dir4]);
    h.update(&bytes[dir4 + 8..]);
    assert_eq!(got, hex::encode(h.finalize()));
    let d = scratch("pesign");
    dump(&d);
    if let Ok(out) = Command::new("pesign")
        .args(["-h", "-i"])
        .arg(d.join("uki.efi"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let live = text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        assert_eq!(got, live, "live pesign: {text}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn authenticode_skips_certificate_table_and_hashes_trailing_data() {
    let sections = [
        (".text", common::stream("t", 1000)),
        (".data", common::stream("d", 513)),
    ];
    let cert = common::stream("cert", 77);
    let plain = common::build_pe(&sections, b"TRAILER!", None);
    let signed = common::build_pe(&sections, b"TRAILER!", Some(&cert));
    let a = PeImage::parse(&plain)
        .unwrap()
        .authenticode::<Sha256>()
        .unwrap();
    let b = PeImage::parse(&signed)
        .unwrap()
        .authenticode::<Sha256>()
        .unwrap();
    assert_eq!(
        a, b,
        "the certificate table and its directory entry are not hashed"
    );
    let other = common::build_pe(&sections, b"TRAILER?", None);
    assert_ne!(
        a,
        PeImage::parse(&other)
            .unwrap()
            .authenticode::<Sha256>()
            .unwrap()
    );
    let d = scratch("pesign-signed");
    std::fs::write(d.join("signed.efi"), &signed).unwrap();
    if let Ok(out) = Command::new("pesign")
        .args(["-h", "-i"])
        .arg(d.join("signed.efi"))
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert_eq!(
                hex::encode(&b),
                text.split_whitespace().last().unwrap_or_default()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pcr4_is_the_documented_extend_chain() {
    let (bytes, p) = common::test_uki();
    let uki = Uki::parse(&bytes).unwrap();
    let events = uki.boot_events(&BootModel::debian12()).unwrap();
    let h = |d: &[u8]| Sha256::digest(d).to_vec();
    let uki_auth = PeImage::parse(&bytes)
        .unwrap()
        .authenticode::<Sha256>()
        .unwrap();
    let k_auth = PeImage::parse(&p.linux)
        .unwrap()
        .authenticode::<Sha256>()
        .unwrap();
    let mut pcr = vec![0u8; 32];
    for d in [
        h(b"Calling EFI Application from Boot Option"),
        h(&[0, 0, 0, 0]),
        uki_auth,
        k_auth,
    ] {
        pcr = Sha256::digest([pcr, d].concat()).to_vec();
    }
    assert_eq!(pcr_sha256(&events, 4).to_vec(), pcr);
    // A boot option tried and returned from first adds "Returning…" and "Calling…" again.
    let retried = uki
        .boot_events(&BootModel::debian12().with_failed_boot_attempts(1))
        .unwrap();
    let mut pcr = vec![0u8; 32];
    for d in [
        h(b"Calling EFI Application from Boot Option"),
        h(&[0, 0, 0, 0]),
        h(b"Returning from EFI Application from Boot Option"),
        h(b"Calling EFI Application from Boot Option"),
        PeImage::parse(&bytes)
            .unwrap()
            .authenticode::<Sha256>()
            .unwrap(),
        PeImage::parse(&p.linux)
            .unwrap()
            .authenticode::<Sha256>()
            .unwrap(),
    ] {
        pcr = Sha256::digest([pcr, d].concat()).to_vec();
    }
    assert_eq!(pcr_sha256(&retried, 4).to_vec(), pcr);
    // PCR 9: the kernel's initrd measurement; PCR 12: nothing (no command-line override).
    // Load options: the .cmdline without its trailing newline, UTF-16LE, NUL-terminated.
    let text = String::from_utf8(p.cmdline.clone()).unwrap();
    let mut opts: Vec<u8> = text
        .trim_end()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    opts.extend_from_slice(&[0, 0]);
    assert_eq!(uki.stub_load_options(), opts);
    let mut p9 = vec![0u8; 32];
    p9 = Sha256::digest([p9, h(&opts)].concat()).to_vec();
    p9 = Sha256::digest([p9, h(&p.initrd)].concat()).to_vec();
    assert_eq!(pcr_sha256(&events, 9).to_vec(), p9);
    assert_eq!(pcr_sha256(&events, 12), [0u8; 32]);
    // PCR 11 from the whole sequence equals the stub's own events.
    assert_eq!(
        pcr_sha256(&events, 11),
        pcr_sha256(&uki.pcr11_events(252), 11)
    );
}

#[test]
fn rtmrs_follow_the_cc_mapping() {
    assert_eq!(rtmr_for_pcr(0), None); // MRTD
    assert_eq!(rtmr_for_pcr(1), Some(0));
    assert_eq!(rtmr_for_pcr(7), Some(0));
    for p in 2..=6 {
        assert_eq!(rtmr_for_pcr(p), Some(1));
    }
    for p in 8..=15 {
        assert_eq!(rtmr_for_pcr(p), Some(2));
    }
    assert_eq!(rtmr_for_pcr(16), None);

    let (bytes, p) = common::test_uki();
    let disk = gpt_disk();
    let gpt = gpt_event_data(&disk, 512).unwrap();
    let uki = Uki::parse(&bytes).unwrap();
    let h = |d: &[u8]| Sha384::digest(d).to_vec();
    let uki_auth = PeImage::parse(&bytes)
        .unwrap()
        .authenticode::<Sha384>()
        .unwrap();
    let k_auth = PeImage::parse(&p.linux)
        .unwrap()
        .authenticode::<Sha384>()
        .unwrap();
    let chain = |digests: Vec<Vec<u8>>| {
        let mut r = vec![0u8; 48];
        for d in digests {
            r = Sha384::digest([r, d].concat()).to_vec();
        }
        r
    };
    // RTMR[1] by hand: PCR 4 action, separators of PCR 2..6, GPT (PCR 5), UKI, kernel,
    // the two ExitBootServices actions (PCR 5).
    let sep = h(&[0, 0, 0, 0]);
    let rtmr1 = chain(vec![
        h(b"Calling EFI Application from Boot Option"),
        sep.clone(),
        sep.clone(),
        sep.clone(),
        sep.clone(),
        sep.clone(),
        h(&gpt),
        uki_auth,
        k_auth,
        h(b"Exit Boot Services Invocation"),
        h(b"Exit Boot Services Returned with Success"),
    ]);
    // Stub 252 measures only through TCG2: RTMR[2] stays zero on TDX.
    let ev252 = uki
        .boot_events(&BootModel::debian12().with_gpt(gpt.clone()))
        .unwrap();
    assert_eq!(rtmr(&ev252, 1).to_vec(), rtmr1);
    assert_eq!(rtmr(&ev252, 2), [0u8; 48]);
    // RTMR[0] gets only PCR 1's separator from this sequence (the firmware's configuration
    // events before it are not modelled); PCR 0's separator goes to MRTD, i.e. nowhere.
    assert_eq!(rtmr(&ev252, 0).to_vec(), chain(vec![sep.clone()]));
    // Stub 256+ also measures through the CC protocol: RTMR[2] = its PCR 11 chain in SHA-384.
    let ev256 = uki
        .boot_events(&BootModel::debian12().with_gpt(gpt).with_stub_version(256))
        .unwrap();
    let stub: Vec<Vec<u8>> = uki
        .pcr11_events(256)
        .into_iter()
        .map(|e| e.sha384)
        .collect();
    assert_eq!(rtmr(&ev256, 2).to_vec(), chain(stub));
    assert_eq!(rtmr(&ev256, 1).to_vec(), rtmr1);
}

#[test]
fn stub_section_order_by_version() {
    assert_eq!(
        measured_sections(252),
        [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"]
    );
    assert_eq!(
        measured_sections(255),
        [
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat",
            ".pcrpkey"
        ]
    );
    let v257 = measured_sections(257);
    assert_eq!(v257[4], ".ucode");
    assert!(!v257.contains(&".pcrsig"));
}

#[test]
fn gpt_event_counts_used_entries_only() {
    let disk = gpt_disk();
    let d = gpt_event_data(&disk, 512).unwrap();
    assert_eq!(&d[..8], b"EFI PART");
    assert_eq!(u64::from_le_bytes(d[92..100].try_into().unwrap()), 2);
    assert_eq!(d.len(), 92 + 8 + 2 * 128);
    let ev = Event::of_data(5, EventType::GptEvent, "gpt", &d);
    assert_eq!(ev.sha256, Sha256::digest(&d).to_vec());
}

/// A 64 KiB disk with a GPT: 128 entries of 128 bytes, two used.
fn gpt_disk() -> Vec<u8> {
    let mut disk = vec![0u8; 64 * 1024];
    let h = 512;
    disk[h..h + 8].copy_from_slice(b"EFI PART");
    disk[h + 8..h + 12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    disk[h + 12..h + 16].copy_from_slice(&92u32.to_le_bytes());
    disk[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
    disk[h + 80..h + 84].copy_from_slice(&128u32.to_le_bytes());
    disk[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
    for (i, label) in [(0usize, "esp"), (1, "root")] {
        let e = 1024 + 128 * i;
        disk[e..e + 16].copy_from_slice(&common::stream(label, 16));
        disk[e + 16..e + 32].copy_from_slice(&common::stream(&format!("{label}-uuid"), 16));
    }
    disk
}

#[test]
fn reference_values_load_in_the_verifier() {
    let (bytes, _) = common::test_uki();
    let uki = Uki::parse(&bytes).unwrap();
    let ev = uki.boot_events(&BootModel::debian12()).unwrap();
    let mut azure = ReferenceSpec::default();
    azure.platforms = vec!["az-snp".into(), "az-tdx".into()];
    for p in [4u8, 11] {
        azure.vtpm_pcrs.insert(p, hex::encode(pcr_sha256(&ev, p)));
    }
    let text = azure.to_toml(&["test".into()]).unwrap();
    let rv = sojourn_attestation::ReferenceValues::from_toml_str(&text).unwrap();
    assert_eq!(rv.vtpm.pcrs.get(&4).unwrap(), &pcr_sha256(&ev, 4).to_vec());
    assert_eq!(
        rv.vtpm.pcrs.get(&11).unwrap(),
        &pcr_sha256(&ev, 11).to_vec()
    );

    let mut snp = ReferenceSpec::default();
    snp.platforms = vec!["snp".into()];
    snp.snp_measurements = vec!["ab".repeat(48)];
    let rv =
        sojourn_attestation::ReferenceValues::from_toml_str(&snp.to_toml(&[]).unwrap()).unwrap();
    assert_eq!(rv.snp.allowed_measurements, Some(vec![vec![0xab; 48]]));

    let mut tdx = ReferenceSpec::default();
    tdx.platforms = vec!["tdx".into()];
    tdx.tdx_rtmrs.insert(1, "cd".repeat(48));
    let rv =
        sojourn_attestation::ReferenceValues::from_toml_str(&tdx.to_toml(&[]).unwrap()).unwrap();
    assert_eq!(rv.tdx.allowed_rtmr[1], Some(vec![vec![0xcd; 48]]));

    // Combinations whose pins would reject the other platform are refused.
    let mut mixed = snp.clone();
    mixed.platforms.push("az-snp".into());
    mixed.vtpm_pcrs = azure.vtpm_pcrs.clone();
    assert!(mixed.to_toml(&[]).is_err());
}
