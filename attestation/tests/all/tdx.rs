use std::panic::catch_unwind;

use sojourn_attestation::tdx::TdxVerifier;
use sojourn_attestation::{
    Evidence, Platform, ReferenceValues, Rejection, Tier, Timestamp, Verifier, VerifyError,
};

use crate::{h, must_fail, vector};

const V4_NOW: Timestamp = Timestamp::from_unix_secs(1_751_328_000); // 2025-07-01
const V5_NOW: Timestamp = Timestamp::from_unix_secs(1_772_323_200); // 2026-03-01

fn v4a() -> Evidence {
    Evidence::new(Platform::Tdx, vector("tdx/v4_a_quote.bin"))
        .with_collateral(vector("tdx/v4_a_collateral.json"))
}

fn v5b() -> Evidence {
    Evidence::new(Platform::Tdx, vector("tdx/v5_b_quote.bin"))
        .with_collateral(vector("tdx/fmspc_90c06f000000_collateral.json"))
}

const V4A_RD: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
const V5B_RD: &str = "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a";

#[test]
fn v4_a_verifies_up_to_date() {
    let v = TdxVerifier::new().unwrap();
    let a = v
        .verify(&v4a(), &h(V4A_RD), &ReferenceValues::default(), V4_NOW)
        .unwrap();
    let c = a.claims();
    assert_eq!(c.platform, Platform::Tdx);
    assert_eq!(c.tcb.status.as_deref(), Some("UpToDate"));
    assert!(c.tcb.advisory_ids.is_empty());
    assert_eq!(
        c.chip_id.as_deref().unwrap(),
        h("811dca2a26b952e85bb6448b097ba4fd")
    );
    assert_eq!(c.chip_family.as_deref(), Some("fmspc:b0c06f000000"));
    assert_eq!(
        c.tcb.tee_tcb_svn.as_deref().unwrap(),
        h("06010300000000000000000000000000")
    );
    assert!(!c.debug);
    assert_eq!(c.measurement("tdx.mrseam").unwrap(), h("5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1"));
    assert_eq!(c.measurement("tdx.mrtd").unwrap(), h("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"));
    assert_eq!(c.measurement("tdx.rtmr0").unwrap(), h("44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"));
    assert_eq!(c.measurement("tdx.rtmr1").unwrap(), h("0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378"));
    assert_eq!(c.measurement("tdx.rtmr2").unwrap(), h("d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132"));
    assert_eq!(c.measurement("tdx.rtmr3").unwrap(), vec![0u8; 48]);
    assert_eq!(c.host_data.as_deref(), Some(&[0u8; 48][..]));
    assert_eq!(
        a.trust_vector().hardware.as_ref().unwrap().tier,
        Tier::Affirming
    );
}

#[test]
fn v5_b_verifies_up_to_date() {
    let v = TdxVerifier::new().unwrap();
    let a = v
        .verify(&v5b(), &h(V5B_RD), &ReferenceValues::default(), V5_NOW)
        .unwrap();
    let c = a.claims();
    assert_eq!(c.tcb.status.as_deref(), Some("UpToDate"));
    assert_eq!(
        c.chip_id.as_deref().unwrap(),
        h("2734b654f553596897eaadfb5667a954")
    );
    assert_eq!(c.chip_family.as_deref(), Some("fmspc:90c06f000000"));
    assert_eq!(
        c.tcb.tee_tcb_svn.as_deref().unwrap(),
        h("0b010400000000000000000000000000")
    );
    assert_eq!(c.measurement("tdx.mrtd").unwrap(), h("7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"));
    assert_eq!(c.measurement("tdx.rtmr0").unwrap(), h("5c8daf76063a71ac8fcef4067564661fc682ed7944c7a5d21dbbced02f61ceff4ba0678c6aef3bdae8cbc614cec24619"));
    assert_eq!(c.measurement("tdx.rtmr2").unwrap(), h("6369b9c9a3b791ebcbdc5a0bb9536cfb57f50df2b393b33c8b29616d3568baa61f4b59dc6092e31ea8764bcbdfc69f20"));
    assert_eq!(c.measurement("tdx.mrseam").unwrap(), h("7bf063280e94fb051f5dd7b1fc59ce9aac42bb961df8d44b709c9b0ff87a7b4df648657ba6d1189589feab1d5a3c9a9d"));
    assert_eq!(c.measurement("tdx.rtmr1").unwrap(), h("463acaace1b6e97c76e92e41fe312aa66f3fd4dad60ec7acf169859db0343e3d1e591646795cdc80fbc0ca5f7041d253"));
    assert_eq!(c.measurement("tdx.rtmr3").unwrap(), vec![0u8; 48]);
    assert_eq!(c.host_data.as_deref(), Some(&[0u8; 48][..]));
    assert_eq!(c.report_data, h(V5B_RD));
    assert!(!c.debug);
    let d = c.tdx.as_ref().unwrap();
    assert_eq!(d.quote_version, 5);
    assert_eq!(d.td_attributes, h("0000001000000000"));
    assert_eq!(d.xfam, h("e702060000000000"));
    assert_eq!(d.tee_tcb_svn2, Some(h("0d010400000000000000000000000000")));
}

#[test]
fn outdated_quote_matches_no_tcb_level() {
    let v = TdxVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Tdx, vector("tdx/v5_outdated_quote.bin"))
        .with_collateral(vector("tdx/fmspc_90c06f000000_collateral.json"));
    let rdata = h("d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce477280000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(
        v.verify(&ev, &rdata, &ReferenceValues::default(), V5_NOW),
        Err(VerifyError::TcbLevelNotFound)
    );
}

#[test]
fn collateral_outside_window_is_rejected() {
    let v = TdxVerifier::new().unwrap();
    // Window ends 2025-07-19T10:00:35Z; one day later.
    let late = Timestamp::parse("2025-07-20T10:00:35Z").unwrap();
    let e = v
        .verify(&v4a(), &h(V4A_RD), &ReferenceValues::default(), late)
        .unwrap_err();
    assert!(matches!(e, VerifyError::Collateral { .. }), "{e:?}");
    // And before it starts (2025-06-19T10:32:27Z).
    let early = Timestamp::parse("2025-06-01T00:00:00Z").unwrap();
    let e = v
        .verify(&v4a(), &h(V4A_RD), &ReferenceValues::default(), early)
        .unwrap_err();
    assert!(matches!(e, VerifyError::Collateral { .. }), "{e:?}");
    // Collateral of another FMSPC does not cover the quote.
    let wrong = Evidence::new(Platform::Tdx, vector("tdx/v4_a_quote.bin"))
        .with_collateral(vector("tdx/fmspc_90c06f000000_collateral.json"));
    assert!(v
        .verify(&wrong, &h(V4A_RD), &ReferenceValues::default(), V5_NOW)
        .is_err());
    // No collateral at all.
    let bare = Evidence::new(Platform::Tdx, vector("tdx/v4_a_quote.bin"));
    assert_eq!(
        v.verify(&bare, &h(V4A_RD), &ReferenceValues::default(), V4_NOW),
        Err(VerifyError::MissingEndorsement("TDX collateral"))
    );
}

#[test]
fn reference_value_rejections() {
    let v = TdxVerifier::new().unwrap();
    let mut rv = ReferenceValues::default();
    rv.tdx.accepted_tcb_status = vec!["SWHardeningNeeded".into()];
    assert_eq!(
        v.verify(&v4a(), &h(V4A_RD), &rv, V4_NOW),
        Err(VerifyError::Rejected(Rejection::TcbStatusNotAccepted(
            "UpToDate".into()
        )))
    );
    let mut rv = ReferenceValues::default();
    rv.tdx.allowed_mrtd = Some(vec![vec![0; 48]]);
    assert!(matches!(
        v.verify(&v4a(), &h(V4A_RD), &rv, V4_NOW),
        Err(VerifyError::Rejected(
            Rejection::MeasurementNotAllowed { .. }
        ))
    ));
    let mut rv = ReferenceValues::default();
    rv.tdx.allowed_mrtd = Some(vec![h("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")]);
    let a = v.verify(&v4a(), &h(V4A_RD), &rv, V4_NOW).unwrap();
    assert_eq!(a.status(), Tier::Affirming);
    let mut wrong = h(V4A_RD);
    wrong[63] ^= 0x80;
    assert_eq!(
        v.verify(&v4a(), &wrong, &ReferenceValues::default(), V4_NOW),
        Err(VerifyError::ReportDataMismatch)
    );
}

/// Bit flips in the signed header + TD body: one bit per byte (bit = offset mod 8) over
/// all 632 bytes, then every 13th byte of the authentication data (signature, attestation
/// key, QE report, QE signature, certification data). Each dcap-qvl run takes
/// milliseconds in a debug build, so the tail is strided.
#[test]
fn bit_flips_are_rejected() {
    let v = TdxVerifier::new().unwrap();
    let ev = v4a();
    let collateral = TdxVerifier::parse_collateral(ev.collateral.as_deref().unwrap()).unwrap();
    let want = h(V4A_RD);
    let rv = ReferenceValues::default();
    let offsets: Vec<usize> = (0..632).chain((632..ev.report.len()).step_by(13)).collect();
    for off in offsets {
        let mut m = ev.clone();
        m.report[off] ^= 1 << (off % 8);
        let r = catch_unwind(|| v.verify_with_collateral(&m, &collateral, &want, &rv, V4_NOW));
        // The PCK chain (from byte 1258) is PEM text. A flip that leaves the decoded DER
        // certificates unchanged (whitespace, text between PEM blocks) changes nothing that
        // is signed, so it may verify; every other flip must not.
        if off >= 1258 {
            let der = |q: &[u8]| {
                sojourn_attestation::certs_from_pem_bundle(q.get(1258..4936).unwrap()).ok()
            };
            if der(&ev.report) == der(&m.report) {
                assert!(r.is_ok(), "byte {off}: panicked");
                continue;
            }
        }
        must_fail(&format!("byte {off}"), r);
    }
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let v = TdxVerifier::new().unwrap();
    let ev = v4a();
    let collateral = TdxVerifier::parse_collateral(ev.collateral.as_deref().unwrap()).unwrap();
    let want = h(V4A_RD);
    // The quote ends at 4936; the sample carries 70 zero bytes of buffer padding after it.
    for len in 0..ev.report.len() {
        let mut m = ev.clone();
        m.report.truncate(len);
        let r = catch_unwind(|| {
            v.verify_with_collateral(&m, &collateral, &want, &ReferenceValues::default(), V4_NOW)
        });
        if len < 4936 {
            must_fail(&format!("len {len}"), r);
        } else {
            assert!(matches!(r, Ok(Ok(_))), "len {len}: padding only");
        }
    }
}
