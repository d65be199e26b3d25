use std::panic::catch_unwind;

use sojourn_attestation::{
    detect_platform, verifier_for, Evidence, EvidenceError, Platform, EVIDENCE_FORMAT_VERSION,
};

use crate::vector;

#[test]
fn detects_every_sample() {
    for (file, p) in [
        ("snp/milan_a_report.bin", Platform::Snp),
        ("snp/milan_b_report.bin", Platform::Snp),
        ("snp/milan_vlek_report.bin", Platform::Snp),
        ("snp/genoa_report.bin", Platform::Snp),
        ("tdx/v4_a_quote.bin", Platform::Tdx),
        ("tdx/v5_b_quote.bin", Platform::Tdx),
        ("tdx/v4_debug_quote.bin", Platform::Tdx),
        ("azure/tdx_td_quote.bin", Platform::Tdx),
        ("azure/snp_hcl_report.bin", Platform::AzureSnpVtpm),
        ("azure/tdx_hcl_report.bin", Platform::AzureTdxVtpm),
        ("azure/snp_evidence_v1.json", Platform::AzureSnpVtpm),
        ("azure/snp_evidence_v2.json", Platform::AzureSnpVtpm),
    ] {
        assert_eq!(detect_platform(&vector(file)), Some(p), "{file}");
    }
    assert_eq!(detect_platform(b"hello"), None);
    assert_eq!(detect_platform(&vector("tdx/v4_a_collateral.json")), None);
}

#[test]
fn container_round_trip_and_strictness() {
    let ev = Evidence::new(Platform::Snp, vector("snp/milan_a_report.bin"))
        .with_certs([vector("snp/milan_a_vcek.der")]);
    let bytes = ev.to_bytes();
    assert_eq!(Evidence::from_bytes(&bytes).unwrap(), ev);
    assert_eq!(detect_platform(&bytes), Some(Platform::Snp));
    assert_eq!(Evidence::from_any_bytes(&bytes, None).unwrap(), ev);
    assert!(matches!(
        Evidence::from_any_bytes(&bytes, Some(Platform::Tdx)),
        Err(EvidenceError::PlatformMismatch { .. })
    ));
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["sojourn-evidence"] = serde_json::json!(EVIDENCE_FORMAT_VERSION + 1);
    assert!(matches!(
        Evidence::from_bytes(&serde_json::to_vec(&v).unwrap()),
        Err(EvidenceError::UnsupportedVersion(2))
    ));
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["extra"] = serde_json::json!(1);
    assert!(matches!(
        Evidence::from_bytes(&serde_json::to_vec(&v).unwrap()),
        Err(EvidenceError::Decode(_))
    ));
    for len in 0..bytes.len() {
        let r = catch_unwind(|| Evidence::from_any_bytes(&bytes[..len], None));
        assert!(matches!(r, Ok(Err(_))), "len {len}");
    }
}

#[test]
fn raw_samples_with_explicit_platform() {
    let raw = vector("snp/milan_a_report.bin");
    assert!(matches!(
        Evidence::from_any_bytes(&raw, Some(Platform::Tdx)),
        Err(EvidenceError::PlatformMismatch { .. })
    ));
    assert_eq!(
        Evidence::from_any_bytes(&raw, Some(Platform::Snp))
            .unwrap()
            .platform,
        Platform::Snp
    );
    assert!(matches!(
        Evidence::from_any_bytes(b"junk", None),
        Err(EvidenceError::Unrecognised)
    ));
}

#[test]
fn factory_builds_every_default_backend() {
    for p in Platform::ALL {
        assert_eq!(verifier_for(p).unwrap().platform(), p);
    }
}
