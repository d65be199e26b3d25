use std::panic::catch_unwind;

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey, SoftwareVerifier};
use sojourn_attestation::{
    verify_evidence, Attester, Evidence, Platform, ReferenceValues, Rejection, Tier, Timestamp,
    Verifier, VerifyError,
};

use crate::must_fail;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn key() -> SoftwareKey {
    SoftwareKey::from_seed_hex(&"11".repeat(32)).unwrap()
}

#[test]
fn software_evidence_is_refused_by_default() {
    let ev = SoftwareAttester::new(key()).attest(&[7; 64]).unwrap();
    assert_eq!(ev.platform, Platform::Software);
    assert_eq!(
        verify_evidence(&ev, &[7; 64], &ReferenceValues::default(), NOW),
        Err(VerifyError::Rejected(Rejection::SoftwareNotAllowed))
    );
}

#[test]
fn software_evidence_when_allowed_is_contraindicated() {
    let ev = SoftwareAttester::new(key())
        .with_measurement([3; 48])
        .attest(&[7; 64])
        .unwrap();
    let rv = ReferenceValues::default().allowing_software();
    let a = verify_evidence(&ev, &[7; 64], &rv, NOW).unwrap();
    assert_eq!(a.claims().platform, Platform::Software);
    assert_eq!(
        a.claims().measurement("software.measurement").unwrap(),
        [3; 48]
    );
    assert_eq!(a.claims().chip_id.as_deref().unwrap(), key().public_key());
    assert_eq!(
        a.trust_vector().hardware.as_ref().unwrap().tier,
        Tier::Contraindicated
    );
    assert_eq!(a.status(), Tier::Contraindicated);
    // Round trip through the container.
    let back = Evidence::from_bytes(&ev.to_bytes()).unwrap();
    assert_eq!(back, ev);
    // A pinned key that is not this one.
    let mut rv2 = rv.clone();
    rv2.software.allowed_keys = Some(vec![vec![0; 32]]);
    assert!(matches!(
        verify_evidence(&ev, &[7; 64], &rv2, NOW),
        Err(VerifyError::Rejected(Rejection::SoftwareKeyNotAllowed(_)))
    ));
    // Wrong nonce.
    assert_eq!(
        verify_evidence(&ev, &[8; 64], &rv, NOW),
        Err(VerifyError::ReportDataMismatch)
    );
}

#[test]
fn debug_against_forbid_debug() {
    let ev = SoftwareAttester::new(key())
        .with_debug(true)
        .attest(&[1; 64])
        .unwrap();
    let rv = ReferenceValues::default().allowing_software();
    assert_eq!(
        verify_evidence(&ev, &[1; 64], &rv, NOW),
        Err(VerifyError::Rejected(Rejection::DebugNotAllowed))
    );
    let mut rv = rv;
    rv.allow_debug = true;
    let a = verify_evidence(&ev, &[1; 64], &rv, NOW).unwrap();
    assert!(a.claims().debug);
}

#[test]
fn every_bit_flip_and_truncation_is_rejected() {
    let v = SoftwareVerifier::new().unwrap();
    let ev = SoftwareAttester::new(key()).attest(&[9; 64]).unwrap();
    let rv = ReferenceValues::default().allowing_software();
    for bit in 0..ev.report.len() * 8 {
        let mut m = ev.clone();
        m.report[bit / 8] ^= 1 << (bit % 8);
        must_fail(
            &format!("bit {bit}"),
            catch_unwind(|| v.verify(&m, &[9; 64], &rv, NOW)),
        );
    }
    for len in 0..ev.report.len() {
        let mut m = ev.clone();
        m.report.truncate(len);
        must_fail(
            &format!("len {len}"),
            catch_unwind(|| v.verify(&m, &[9; 64], &rv, NOW)),
        );
    }
}

#[test]
fn key_file_round_trip() {
    let k = SoftwareKey::generate().unwrap();
    let k2 = SoftwareKey::from_seed_hex(&k.to_seed_hex()).unwrap();
    assert_eq!(k.public_key(), k2.public_key());
    assert!(SoftwareKey::from_seed_hex("abcd").is_err());
}
