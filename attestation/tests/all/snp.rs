use std::panic::catch_unwind;

use sojourn_attestation::snp::SnpVerifier;
use sojourn_attestation::{
    Evidence, ParseError, Platform, ReferenceValues, Rejection, Tier, Verifier, VerifyError,
};

use crate::{at, h, must_fail, pem_bundle, vector};

const NOW: &str = "2025-06-01T00:00:00Z";

fn milan_a() -> Evidence {
    Evidence::new(Platform::Snp, vector("snp/milan_a_report.bin"))
        .with_certs([vector("snp/milan_a_vcek.der")])
}

fn rd(ev: &Evidence) -> Vec<u8> {
    ev.report.get(0x50..0x90).unwrap().to_vec()
}

#[test]
fn milan_a_verifies_with_expected_fields() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    let a = v
        .verify(&ev, &rd(&ev), &ReferenceValues::default(), at(NOW))
        .unwrap();
    let c = a.claims();
    assert_eq!(c.platform, Platform::Snp);
    assert_eq!(c.measurement("snp.measurement").unwrap(), h("7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"));
    assert_eq!(c.report_data, h("d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd"));
    assert_eq!(c.host_data.as_deref(), Some(&[0u8; 32][..]));
    assert!(!c.debug);
    assert_eq!(c.smt_allowed, Some(true));
    assert_eq!(c.migration_agent_allowed, Some(false));
    assert_eq!(c.vmpl, Some(0));
    let r = c.tcb.reported.unwrap();
    assert_eq!((r.bootloader, r.tee, r.snp, r.microcode), (3, 0, 8, 115));
    for t in [c.tcb.committed, c.tcb.current, c.tcb.launch] {
        assert_eq!(t, Some(r));
    }
    assert_eq!(c.tcb.firmware.as_deref(), Some("1.52.4"));
    assert_eq!(c.chip_id.as_deref().unwrap(), h("d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6"));
    assert_eq!(c.signing_key.as_deref(), Some("VCEK"));
    assert_eq!(c.chip_family.as_deref(), Some("Milan"));
    let d = c.snp.as_ref().unwrap();
    assert_eq!((d.version, d.policy, d.guest_svn), (2, 0x30000, 0));
    assert_eq!(d.id_key_digest, vec![0; 48]);
    assert_eq!(
        (d.family_id.clone(), d.image_id.clone()),
        (vec![0; 16], vec![0; 16])
    );
    assert_eq!(d.cpuid, None);
    // Not pinned by default reference values: executables warning, rest affirming.
    let tv = a.trust_vector();
    assert_eq!(tv.hardware.as_ref().unwrap().tier, Tier::Affirming);
    assert_eq!(tv.executables.as_ref().unwrap().tier, Tier::Warning);
    assert_eq!(a.status(), Tier::Warning);
    let ear = a.to_ear();
    assert_eq!(ear["submods"]["snp-report"]["ear.status"], "warning");
    assert_eq!(
        ear["submods"]["snp-report"]["ear.trustworthiness-vector"]["hardware"],
        2
    );
}

#[test]
fn milan_a_pinned_measurement_affirms() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    let rv = ReferenceValues::from_toml_str(
        r#"version = 1
allowed_platforms = ["snp"]
[snp]
allowed_measurements = ["7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"]
min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
"#,
    )
    .unwrap();
    let a = v.verify(&ev, &rd(&ev), &rv, at(NOW)).unwrap();
    assert_eq!(a.status(), Tier::Affirming);
}

#[test]
fn milan_b_verifies_with_supplied_bundle() {
    let v = SnpVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Snp, vector("snp/milan_b_report.bin"))
        .with_certs([vector("snp/milan_b_vcek.der")])
        .with_certs(pem_bundle("snp/amd/milan_ask_ark_asvk.pem"));
    let a = v
        .verify(&ev, &rd(&ev), &ReferenceValues::default(), at(NOW))
        .unwrap();
    let c = a.claims();
    assert_eq!(c.measurement("snp.measurement").unwrap(), h("a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"));
    assert_eq!(c.report_data, h("ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e20000000000000000000000000000000000000000000000000000000000000000"));
    assert_eq!(c.tcb.current.unwrap().microcode, 206);
    assert_eq!(c.tcb.committed.unwrap().microcode, 115);
    assert_eq!(c.tcb.reported.unwrap().microcode, 115);
    assert_eq!(c.chip_id.as_deref().unwrap(), h("c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"));
    assert!(!c.debug);
    assert_eq!(c.smt_allowed, Some(true));
    let d = c.snp.as_ref().unwrap();
    assert_eq!((d.version, d.policy, d.guest_svn), (2, 0x3001f, 4));
    assert_eq!(d.id_key_digest, h("0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3"));
    assert_eq!(d.family_id, h("01000000000000000000000000000000"));
    assert_eq!(d.image_id, h("02000000000000000000000000000000"));
    assert_eq!(c.tcb.firmware.as_deref(), Some("1.52.4"));
    assert_eq!(c.host_data.as_deref(), Some(&[0u8; 32][..]));
    // ID-block pinning and guest SVN minimum.
    let rv = ReferenceValues::from_toml_str(
        r#"version = 1
allowed_platforms = ["snp"]
[snp]
allowed_id_key_digests = ["0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3"]
min_guest_svn = 4
"#,
    )
    .unwrap();
    v.verify(&ev, &rd(&ev), &rv, at(NOW)).unwrap();
    let mut rv2 = rv.clone();
    rv2.snp.min_guest_svn = Some(5);
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv2, at(NOW)),
        Err(VerifyError::Rejected(Rejection::GuestSvnBelowMinimum {
            found: 4,
            minimum: 5
        }))
    ));
    let mut rv3 = rv;
    rv3.snp.allowed_id_key_digests = Some(vec![vec![0; 48]]);
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv3, at(NOW)),
        Err(VerifyError::Rejected(Rejection::IdKeyNotAllowed(_)))
    ));
}

#[test]
fn vlek_report_verifies_and_expires() {
    let v = SnpVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Snp, vector("snp/milan_vlek_report.bin"))
        .with_certs([vector("snp/milan_vlek_vlek.der")])
        .with_certs(pem_bundle("snp/amd/milan_ask_ark_asvk.pem"));
    let a = v
        .verify(&ev, &rd(&ev), &ReferenceValues::default(), at(NOW))
        .unwrap();
    let c = a.claims();
    assert_eq!(c.signing_key.as_deref(), Some("VLEK"));
    assert_eq!(c.vmpl, Some(1));
    assert_eq!(c.measurement("snp.measurement").unwrap(), h("8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0"));
    let r = c.tcb.reported.unwrap();
    assert_eq!((r.bootloader, r.tee, r.snp, r.microcode), (4, 0, 24, 217));
    assert_eq!(c.tcb.committed.unwrap().microcode, 219);
    assert_eq!(c.tcb.current.unwrap().microcode, 220);
    assert_eq!(c.tcb.firmware.as_deref(), Some("1.55.29"));
    assert_eq!(c.chip_id.as_deref(), Some(&[0u8; 64][..]));
    assert_eq!(c.report_data, h("819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca"));
    let d = c.snp.as_ref().unwrap();
    assert_eq!((d.version, d.policy, d.guest_svn), (3, 0x30000, 0));
    assert_eq!(d.cpuid, Some((0x19, 0x1, 0x1)));
    assert!(!c.debug);
    // The VLEK expired on 2025-12-10: sev alone would accept it, we do not.
    let e = v
        .verify(
            &ev,
            &rd(&ev),
            &ReferenceValues::default(),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap_err();
    assert!(
        matches!(e, VerifyError::CertificateNotValidAt { ref subject, .. } if subject == "SEV-VLEK"),
        "{e:?}"
    );
    // VMPL 1 is above max_vmpl = 0.
    let mut rv = ReferenceValues::default();
    rv.snp.max_vmpl = Some(0);
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(Rejection::VmplTooHigh {
            found: 1,
            maximum: 0
        }))
    ));
    // Without the ASVK the chain cannot be built.
    let bare = Evidence::new(Platform::Snp, ev.report.clone())
        .with_certs([vector("snp/milan_vlek_vlek.der")]);
    assert!(matches!(
        v.verify(&bare, &rd(&bare), &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::MissingEndorsement(_))
    ));
}

#[test]
fn genoa_verifies() {
    let v = SnpVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Snp, vector("snp/genoa_report.bin"))
        .with_certs(pem_bundle("snp/genoa_vcek.pem"))
        .with_certs(pem_bundle("snp/amd/genoa_ask_ark_asvk.pem"));
    let a = v
        .verify(&ev, &rd(&ev), &ReferenceValues::default(), at(NOW))
        .unwrap();
    let c = a.claims();
    assert_eq!(c.chip_family.as_deref(), Some("Genoa"));
    assert_eq!(c.measurement("snp.measurement").unwrap(), h("f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae"));
    let r = c.tcb.reported.unwrap();
    assert_eq!((r.bootloader, r.tee, r.snp, r.microcode), (10, 0, 23, 84));
    assert_eq!(c.tcb.firmware.as_deref(), Some("1.55.40"));
    assert_eq!(c.chip_id.as_deref().unwrap(), h("0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1"));
    assert_eq!(c.report_data, h("b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f0000000000000000000000000000000000000000000000000000000000000000"));
    let d = c.snp.as_ref().unwrap();
    assert_eq!((d.version, d.policy, d.guest_svn), (3, 0x3001f, 65547));
    assert_eq!(d.id_key_digest, h("942fd93ebde6ea7a96efadeafc60f1c6b3d10e703b1dafd7555b92f7f3d32d0e006767648cba5b102af3d65756af4177"));
    assert_eq!(d.family_id, h("01232000000000000000000000000000"));
    assert_eq!(d.image_id, h("02000000000000000000000000000000"));
    assert_eq!(d.cpuid, Some((0x19, 0x11, 0x1)));
    assert!(!c.debug);
    // The Genoa VCEK is not valid before 2025-01-24.
    assert!(matches!(
        v.verify(
            &ev,
            &rd(&ev),
            &ReferenceValues::default(),
            at("2024-06-01T00:00:00Z")
        ),
        Err(VerifyError::CertificateNotValidAt { .. })
    ));
    // Reference values that only allow Milan reject it.
    let mut rv = ReferenceValues::default();
    rv.snp.allowed_chip_families = vec!["Milan".into()];
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(Rejection::ChipFamilyNotAllowed(f))) if f == "Genoa"
    ));
}

#[test]
fn wrong_chip_and_wrong_family_vceks_are_rejected() {
    let v = SnpVerifier::new().unwrap();
    let report = vector("snp/milan_b_report.bin");
    let rdata = report.get(0x50..0x90).unwrap().to_vec();
    for (name, certs) in [
        ("other Milan chip", vec![vector("snp/milan_a_vcek.der")]),
        ("Turin VCEK", vec![vector("snp/turin_vcek.der")]),
        ("Genoa VCEK", pem_bundle("snp/genoa_vcek.pem")),
    ] {
        let ev = Evidence::new(Platform::Snp, report.clone()).with_certs(certs);
        let e = v
            .verify(&ev, &rdata, &ReferenceValues::default(), at(NOW))
            .unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Signature(_) | VerifyError::TcbInconsistent(_)
            ),
            "{name}: {e:?}"
        );
    }
}

#[test]
fn reference_value_rejections() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    // TCB below minimum.
    let mut rv = ReferenceValues::default();
    rv.snp.min_tcb = ReferenceValues::from_toml_str(
        "version = 1\nallowed_platforms = [\"snp\"]\n[snp]\nmin_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 200 }",
    )
    .unwrap()
    .snp
    .min_tcb;
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(Rejection::TcbBelowMinimum {
            component: "microcode",
            found: 115,
            minimum: 200
        }))
    ));
    // SMT forbidden.
    let mut rv = ReferenceValues::default();
    rv.allow_smt = false;
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(Rejection::SmtNotAllowed))
    ));
    // Measurement not in the list.
    let mut rv = ReferenceValues::default();
    rv.snp.allowed_measurements = Some(vec![vec![0; 48]]);
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(
            Rejection::MeasurementNotAllowed { .. }
        ))
    ));
    // Platform not allowed.
    let mut rv = ReferenceValues::default();
    rv.allowed_platforms = vec![Platform::Tdx];
    assert!(matches!(
        v.verify(&ev, &rd(&ev), &rv, at(NOW)),
        Err(VerifyError::Rejected(Rejection::PlatformNotAllowed(
            Platform::Snp
        )))
    ));
}

#[test]
fn wrong_report_data_and_missing_certs() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    let mut other = rd(&ev);
    other[0] ^= 1;
    assert_eq!(
        v.verify(&ev, &other, &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::ReportDataMismatch)
    );
    assert!(matches!(
        v.verify(&ev, &other[..32], &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::ReportDataLength { found: 32, .. })
    ));
    let bare = Evidence::new(Platform::Snp, ev.report.clone());
    assert_eq!(
        v.verify(&bare, &rd(&ev), &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::MissingEndorsement("VCEK certificate"))
    );
}

/// Every single-bit flip anywhere in the report (signed part, signature, and the
/// unsigned reserved tail, which must be zero) is rejected with a typed error.
#[test]
fn every_bit_flip_is_rejected() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    let want = rd(&ev);
    let rv = ReferenceValues::default();
    for bit in 0..ev.report.len() * 8 {
        let mut m = ev.clone();
        m.report[bit / 8] ^= 1 << (bit % 8);
        let r = catch_unwind(|| v.verify(&m, &want, &rv, at(NOW)));
        must_fail(&format!("bit {bit}"), r);
    }
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let v = SnpVerifier::new().unwrap();
    let ev = milan_a();
    let want = rd(&ev);
    for len in 0..ev.report.len() {
        let mut m = ev.clone();
        m.report.truncate(len);
        let r = catch_unwind(|| v.verify(&m, &want, &ReferenceValues::default(), at(NOW)));
        let e = must_fail(&format!("len {len}"), r);
        assert!(
            matches!(e, VerifyError::Malformed(ParseError::Length { .. })),
            "{len}: {e:?}"
        );
    }
}

/// sev 8 with `crypto_nossl` (pure Rust) verifies the samples on its own, too.
#[test]
fn sev_crypto_nossl_cross_check() {
    use sev::certs::snp::{builtin::milan, ca, Certificate, Chain, Verifiable};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser;
    let report = AttestationReport::from_bytes(&vector("snp/milan_a_report.bin")).unwrap();
    let chain = Chain {
        ca: ca::Chain {
            ark: milan::ark().unwrap(),
            ask: milan::ask().unwrap(),
        },
        vek: Certificate::from_der(&vector("snp/milan_a_vcek.der")).unwrap(),
    };
    (&chain, &report).verify().unwrap();
}
