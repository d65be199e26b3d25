use std::panic::catch_unwind;

use sha2::Digest as _;
use sojourn_attestation::azure::{hcl, tpm, AzureSnpVerifier, AzureTdxVerifier};
use sojourn_attestation::{
    Evidence, Platform, ReferenceValues, Rejection, Timestamp, Verifier, VerifyError,
};

use crate::{at, h, must_fail, pem_bundle, vector};

const NOW: &str = "2025-06-01T00:00:00Z";

fn snp_ev() -> Evidence {
    Evidence::new(Platform::AzureSnpVtpm, vector("azure/snp_hcl_report.bin"))
        .with_certs(pem_bundle("azure/snp_vcek_ask_ark.pem"))
        .with_tpm_quote(vector("azure/snp_tpm_quote.bin"))
}

#[test]
fn snp_hcl_report_parses_as_documented() {
    let bytes = vector("azure/snp_hcl_report.bin");
    assert_eq!(bytes.len(), 2600);
    let r = hcl::parse(&bytes).unwrap();
    assert_eq!(
        (r.version, r.report_size, r.request_type, r.status),
        (1, 2346, 2, 0)
    );
    assert_eq!(r.report_type, hcl::HwReportType::Snp);
    assert_eq!(r.hash_type, 1);
    assert_eq!(r.runtime_data.len(), 1110);
    assert_eq!(
        sha2::Sha256::digest(r.runtime_data).to_vec(),
        h("b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac")
    );
    let json = r.runtime_json().unwrap();
    let kids: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["HCLAkPub", "HCLEkPub"]);
    assert_eq!(
        json["vm-configuration"]["vmUniqueId"],
        "911B0EF8-9DBA-48B0-B275-4E4DF2D39252"
    );
}

#[test]
fn snp_tpm_quote_parses_as_documented() {
    let q = tpm::parse_quote(&vector("azure/snp_tpm_quote.bin")).unwrap();
    assert_eq!(q.signature.len(), 256);
    assert_eq!(q.pcrs.len(), 24);
    let a = tpm::parse_attest(&q.message).unwrap();
    assert_eq!(a.extra_data, b"challenge");
    assert_eq!(a.pcr_indices, (0..24).collect::<Vec<u8>>());
    assert_eq!(
        a.pcr_digest,
        h("0daff74c2fca14910b1e9b54a384707434c3365db9f163cc73a39a9f7500833f")
    );
}

#[test]
fn azure_snp_verifies_with_nonce() {
    let v = AzureSnpVerifier::new().unwrap();
    let a = v
        .verify(
            &snp_ev(),
            b"challenge",
            &ReferenceValues::default(),
            at(NOW),
        )
        .unwrap();
    let c = a.claims();
    assert_eq!(c.platform, Platform::AzureSnpVtpm);
    assert_eq!(c.report_data, b"challenge");
    assert_eq!(c.measurement("snp.measurement").unwrap(), h("9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1a12e0c22944eb386d17c315"));
    let r = c.tcb.reported.unwrap();
    assert_eq!((r.bootloader, r.tee, r.snp, r.microcode), (3, 0, 8, 115));
    assert_eq!(c.chip_id.as_deref().unwrap(), h("19752a447db501a32ade46428a46e92639bd3515dbb45e2e67bbcb0934ffcf1f3e3c004ccb4a99c9fa7e4ffb09da6b324ac58acedaf679f24ba7db5f838c6cca"));
    assert!(!c.debug);
    let d = c.snp.as_ref().unwrap();
    assert_eq!((d.version, d.policy, c.vmpl), (2, 0x3001f, Some(0)));
    assert_eq!(c.vm_configuration.as_ref().unwrap()["secure-boot"], true);
    assert!(c.measurement("pcr0").is_some() && c.measurement("pcr23").is_some());
    let names: Vec<&str> = a.components().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["snp-report", "hcl-report", "vtpm-quote"]);
    // A nonce other than the quote's is rejected; so is an over-long one.
    assert_eq!(
        v.verify(
            &snp_ev(),
            b"challengf",
            &ReferenceValues::default(),
            at(NOW)
        ),
        Err(VerifyError::ReportDataMismatch)
    );
    assert!(matches!(
        v.verify(&snp_ev(), &[0; 65], &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::ReportDataLength { .. })
    ));
    // Pinned PCR mismatch.
    let mut rv = ReferenceValues::default();
    rv.vtpm.pcrs.insert(7, vec![0; 32]);
    assert!(matches!(
        v.verify(&snp_ev(), b"challenge", &rv, at(NOW)),
        Err(VerifyError::Rejected(
            Rejection::MeasurementNotAllowed { .. }
        ))
    ));
    // Missing quote.
    let mut ev = snp_ev();
    ev.tpm_quote = None;
    assert_eq!(
        v.verify(&ev, b"challenge", &ReferenceValues::default(), at(NOW)),
        Err(VerifyError::MissingEndorsement("vTPM quote"))
    );
}

#[test]
fn trustee_evidence_json_v1_and_v2() {
    let v = AzureSnpVerifier::new().unwrap();
    for (file, nonce, measurement, vm, chip) in [
        ("azure/snp_evidence_v1.json", b"challenge".to_vec(),
         "6a063be9dd79f6371c842e480f8dc3b5c725961344e57130e88c5adf49e8f7f6c79b75a5eb77fc769959f4aeb2f9401e",
         "26F8BC30-774E-4290-8E7A-535F3B672AEE",
         "66a5a7b4403a3006ca734aa36a76dd3061d56f398e1e73b0be683ecd2eede9e70811c677abf8d9c9251b52baafbdc97b8121ec0c75661ffba636073b09fa563a"),
        ("azure/snp_evidence_v2.json",
         h("982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"),
         "5b0ce64ad1c1f6375dbda5f760b98526ca1bcf91b8195091afc28e7b024251d68fe32e05af34048d6607678cd23283ff",
         "7DF7B373-B947-4AAA-96E5-C358F2A03D20",
         "2e0e62a0e6f39bc491381b091ff79cfe03ad0b42a6bbe764fd408923963d9097440365dbf8c3412c8da4969024d81b19c1d4f12197f460bf2b5283a25e32f684"),
    ] {
        let ev = Evidence::from_any_bytes(&vector(file), None).unwrap();
        assert_eq!(ev.platform, Platform::AzureSnpVtpm);
        let a = v
            .verify(&ev, &nonce, &ReferenceValues::default(), at("2026-01-01T00:00:00Z"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let c = a.claims();
        assert_eq!(c.measurement("snp.measurement").unwrap(), h(measurement), "{file}");
        let r = c.tcb.reported.unwrap();
        assert_eq!((r.bootloader, r.tee, r.snp, r.microcode), (4, 0, 24, 219));
        assert_eq!(c.vm_configuration.as_ref().unwrap()["vmUniqueId"], vm);
        assert_eq!(c.report_data, nonce);
        assert_eq!(c.chip_id.as_deref().unwrap(), h(chip));
        let d = c.snp.as_ref().unwrap();
        assert_eq!((d.version, d.policy, c.vmpl), (3, 0x3001f, Some(0)));
        assert!(!c.debug);
    }
}

/// Bit flips over the signed parts of the HCL report: the SNP report (every 5th bit: each
/// run is a full ECDSA + RSA chain + RSA quote verification) and the runtime data (every
/// bit of every 7th byte).
#[test]
fn hcl_bit_flips_are_rejected() {
    let v = AzureSnpVerifier::new().unwrap();
    let ev = snp_ev();
    let rv = ReferenceValues::default();
    let now = at(NOW);
    let hw_bits = (32 * 8..1216 * 8).step_by(5);
    let var_bits = (1236..2346)
        .step_by(7)
        .flat_map(|b| (0..8).map(move |i| b * 8 + i));
    for bit in hw_bits.chain(var_bits) {
        let mut m = ev.clone();
        m.report[bit / 8] ^= 1 << (bit % 8);
        must_fail(
            &format!("bit {bit}"),
            catch_unwind(|| v.verify(&m, b"challenge", &rv, now)),
        );
    }
    // report_size is 2346; the rest is zero padding, which may be dropped.
    for len in (0..2346).step_by(3) {
        let mut m = ev.clone();
        m.report.truncate(len);
        must_fail(
            &format!("len {len}"),
            catch_unwind(|| v.verify(&m, b"challenge", &rv, now)),
        );
    }
}

/// Every bit of the TPM quote (signature, TPMS_ATTEST, PCR values) and every truncation.
#[test]
fn tpm_quote_bit_flips_are_rejected() {
    let hcl_bytes = vector("azure/snp_hcl_report.bin");
    let r = hcl::parse(&hcl_bytes).unwrap();
    let ak = hcl::jwk_rsa_key(&r.runtime_json().unwrap(), "HCLAkPub").unwrap();
    let quote = vector("azure/snp_tpm_quote.bin");
    let ok = tpm::verify_quote(&quote, &ak, b"challenge").unwrap();
    assert_eq!(ok.pcrs().len(), 24);
    for bit in 0..quote.len() * 8 {
        let mut m = quote.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        must_fail(
            &format!("bit {bit}"),
            catch_unwind(|| tpm::verify_quote(&m, &ak, b"challenge")),
        );
    }
    for len in 0..quote.len() {
        must_fail(
            &format!("len {len}"),
            catch_unwind(|| tpm::verify_quote(&quote[..len], &ak, b"challenge")),
        );
    }
}

#[test]
fn tdx_hcl_report_and_quote() {
    let bytes = vector("azure/tdx_hcl_report.bin");
    let r = hcl::parse(&bytes).unwrap();
    assert_eq!(
        (r.version, r.report_size, r.request_type, r.status),
        (2, 2437, 2, 0)
    );
    assert_eq!(r.report_type, hcl::HwReportType::Tdx);
    assert_eq!(r.runtime_data.len(), 1201);
    let expected = r.expected_report_data().unwrap();
    assert_eq!(
        &expected[..32],
        &h("9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839")[..]
    );
    // The TDREPORT's MRTD (offset 512 + 16 of the TDREPORT) is the documented one.
    assert_eq!(
        &r.hw_report[528..576],
        &h("024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b")[..]
    );
    assert_eq!(&r.hw_report[128..192], &expected[..]);
    let json = r.runtime_json().unwrap();
    assert_eq!(
        json["vm-configuration"]["vmUniqueId"],
        "6332533D-5649-4D02-8AA7-8F64B7C3EE21"
    );
    let ak = hcl::jwk_rsa_key(&json, "HCLAkPub").unwrap();
    let q = tpm::verify_quote(&vector("azure/tdx_tpm_quote.bin"), &ak, b"challenge").unwrap();
    assert_eq!(q.pcrs().len(), 24);
    let attest = tpm::parse_attest(
        &tpm::parse_quote(&vector("azure/tdx_tpm_quote.bin"))
            .unwrap()
            .message,
    )
    .unwrap();
    assert_eq!(
        attest.pcr_digest,
        h("6c0e21d918212d57872a752bcf358355d508d1d5b8cb632259b898b15f9f658d")
    );
    // Wrong AK (the SNP sample's) does not verify the TDX sample's quote.
    let snp = vector("azure/snp_hcl_report.bin");
    let snp_ak = hcl::jwk_rsa_key(
        &hcl::parse(&snp).unwrap().runtime_json().unwrap(),
        "HCLAkPub",
    )
    .unwrap();
    assert_eq!(
        tpm::verify_quote(&vector("azure/tdx_tpm_quote.bin"), &snp_ak, b"challenge"),
        Err(VerifyError::Signature("TPM quote"))
    );
}

/// Full Azure TDX verification needs collateral for FMSPC 00806f050000, which the vectors
/// do not have: the verifier says so with a typed error instead of skipping the TD quote.
#[test]
fn azure_tdx_without_collateral_is_a_typed_error() {
    let v = AzureTdxVerifier::new().unwrap();
    let ev = Evidence::new(Platform::AzureTdxVtpm, vector("azure/tdx_hcl_report.bin"))
        .with_td_quote(vector("azure/tdx_td_quote.bin"))
        .with_tpm_quote(vector("azure/tdx_tpm_quote.bin"));
    assert_eq!(
        v.verify(
            &ev,
            b"challenge",
            &ReferenceValues::default(),
            Timestamp::from_unix_secs(1_750_000_000)
        ),
        Err(VerifyError::MissingEndorsement("TDX collateral"))
    );
    let mut no_quote = ev.clone();
    no_quote.td_quote = None;
    assert_eq!(
        v.verify(
            &no_quote,
            b"challenge",
            &ReferenceValues::default(),
            Timestamp::from_unix_secs(1_750_000_000)
        ),
        Err(VerifyError::MissingEndorsement("TD quote"))
    );
    // With some other FMSPC's collateral, dcap-qvl refuses.
    let other = ev.with_collateral(vector("tdx/v4_a_collateral.json"));
    assert!(v
        .verify(
            &other,
            b"challenge",
            &ReferenceValues::default(),
            Timestamp::from_unix_secs(1_751_328_000)
        )
        .is_err());
}
