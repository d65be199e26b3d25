//! The cryptographic core of attested migration: the offer binding, the destination appraisal
//! against the object's `[policy.migration]` (with real, software-TEE evidence), and the
//! HPKE package.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, Evidence, Platform, Timestamp};
use sojourn_migration::binding::{Challenge, TransferId};
use sojourn_migration::{
    appraise_destination, open, seal, DestinationKey, MigrationRefusal, MigrationTicket,
    ObjectBundle, OfferBinding, PackageError, RuntimeIdentity, SealedObject,
};
use sojourn_policy::{MigrationPlatform, MigrationRules, MigrationTrust, RuntimeVersion};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const OBJECT: [u8; 16] = [0x0b; 16];
const SEED: [u8; 32] = [7; 32];

fn now() -> Timestamp {
    Timestamp::from_unix_secs(1_750_000_000)
}

/// Rules a software destination satisfies.
fn rules() -> MigrationRules {
    MigrationRules {
        allowed: true,
        platforms: BTreeSet::from([MigrationPlatform::Software]),
        allow_software: true,
        measurements: BTreeSet::from([MEASUREMENT]),
        min_runtime_version: RuntimeVersion::parse("0.2.0"),
        claims: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
        ..MigrationRules::default()
    }
}

fn attester() -> SoftwareAttester {
    SoftwareAttester::new(SoftwareKey::from_seed(SEED).unwrap()).with_measurement(MEASUREMENT)
}

/// One attempt as the two hosts see it.
struct Attempt {
    transfer: TransferId,
    challenge: Challenge,
    channel: [u8; 32],
    key: DestinationKey,
    binding: OfferBinding,
}

fn runtime(version: &str) -> RuntimeIdentity {
    RuntimeIdentity {
        name: "sojourn".into(),
        version: version.into(),
        policy_engine: [0xe7; 32],
        claims: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
    }
}

fn attempt(n: u8) -> Attempt {
    let key = DestinationKey::generate().unwrap();
    let transfer = TransferId([n; 16]);
    let challenge = Challenge([n.wrapping_add(100); 32]);
    let channel = [n.wrapping_add(200); 32];
    let binding = OfferBinding {
        transfer,
        object_id: OBJECT,
        challenge,
        channel,
        hpke_public_key: key.public_bytes(),
        runtime: runtime("0.2.1"),
    };
    Attempt {
        transfer,
        challenge,
        channel,
        key,
        binding,
    }
}

fn evidence_for(a: &SoftwareAttester, b: &OfferBinding) -> Evidence {
    a.attest(&b.report_data()).unwrap()
}

fn appraise(
    rules: &MigrationRules,
    ev: &Evidence,
    b: &OfferBinding,
    at: &Attempt,
    source_trust: Option<u8>,
) -> Result<MigrationTicket, MigrationRefusal> {
    appraise_destination(
        rules,
        ev,
        b,
        &at.challenge,
        &at.channel,
        source_trust,
        now(),
    )
}

fn refusal(r: Result<MigrationTicket, MigrationRefusal>) -> MigrationRefusal {
    match r {
        Ok(t) => panic!("accepted: {}", t.summary()),
        Err(e) => e,
    }
}

fn bundle() -> ObjectBundle {
    ObjectBundle {
        object_id: OBJECT,
        snapshot: b"snapshot bytes".to_vec(),
        lineage: b"lineage bytes".to_vec(),
        pending_messages: vec![b"m1".to_vec(), Vec::new(), b"m3".to_vec()],
        source: "host-a".into(),
    }
}

fn ticket(at: &Attempt) -> MigrationTicket {
    let ev = evidence_for(&attester(), &at.binding);
    appraise(&rules(), &ev, &at.binding, at, None).unwrap()
}

mod appraisal {
    use super::*;
    use sojourn_attestation::{Rejection, VerifyError};

    #[test]
    fn an_acceptable_destination_gets_a_ticket() {
        let at = attempt(1);
        let ev = evidence_for(&attester(), &at.binding);
        let t = appraise(&rules(), &ev, &at.binding, &at, None).unwrap();
        assert_eq!(t.platform(), Platform::Software);
        assert_eq!(t.measurement_hex(), Some(hex::encode(MEASUREMENT).as_str()));
        // Software evidence is contraindicated hardware: it scores 0 (docs/trust-slope.md).
        assert_eq!(t.trust_score(), 0);
        assert_eq!(sojourn_migration::trust_score(t.appraisal()), 0);
        assert_eq!(t.binding(), &at.binding);
        assert_eq!(t.destination_key(), at.key.public_bytes().as_slice());
        assert!(
            t.summary().contains("software destination"),
            "{}",
            t.summary()
        );
        assert!(t.summary().contains("INSECURE"), "{}", t.summary());
        assert_eq!(t.appraisal().claims().report_data, at.binding.report_data());
        // Version exactly at the minimum and no-fall from a source that scored 0 are fine.
        let mut b = at.binding.clone();
        b.runtime.version = "0.2.0+build.5".into();
        let ev = evidence_for(&attester(), &b);
        let mut r = rules();
        r.trust = MigrationTrust::NoFall;
        appraise(&r, &ev, &b, &at, Some(0)).unwrap();
        appraise(&r, &ev, &b, &at, None).unwrap();
    }

    #[test]
    fn reference_value_verdicts_are_typed_refusals() {
        let at = attempt(2);
        // Another measurement.
        let other = attester().with_measurement([0x11; 48]);
        let e = refusal(appraise(
            &rules(),
            &evidence_for(&other, &at.binding),
            &at.binding,
            &at,
            None,
        ));
        assert_eq!(e.code(), "measurement", "{e}");
        assert!(e.to_string().contains(&hex::encode([0x11; 48])), "{e}");
        // Unpinned measurements accept it.
        let mut r = rules();
        r.measurements.clear();
        appraise(
            &r,
            &evidence_for(&other, &at.binding),
            &at.binding,
            &at,
            None,
        )
        .unwrap();

        // A debuggable destination, debug not allowed; then allowed.
        let dbg = attester().with_debug(true);
        let ev = evidence_for(&dbg, &at.binding);
        let e = refusal(appraise(&rules(), &ev, &at.binding, &at, None));
        assert_eq!(e.code(), "debug", "{e}");
        let mut r = rules();
        r.allow_debug = true;
        appraise(&r, &ev, &at.binding, &at, None).unwrap();

        // Software evidence where the policy does not accept it: listed but not allowed,
        // allowed but not listed, neither.
        let ev = evidence_for(&attester(), &at.binding);
        for (listed, allowed) in [(true, false), (false, true), (false, false)] {
            let mut r = rules();
            r.allow_software = allowed;
            r.platforms = if listed {
                BTreeSet::from([MigrationPlatform::Software, MigrationPlatform::Snp])
            } else {
                BTreeSet::from([MigrationPlatform::Snp, MigrationPlatform::Tdx])
            };
            let e = refusal(appraise(&r, &ev, &at.binding, &at, None));
            assert_eq!(e.code(), "software_not_allowed", "{listed} {allowed}: {e}");
        }
    }

    #[test]
    fn no_platform_listed_accepts_nothing() {
        let at = attempt(3);
        let mut r = rules();
        r.platforms.clear();
        r.allow_software = false;
        let e = refusal(appraise(
            &r,
            &evidence_for(&attester(), &at.binding),
            &at.binding,
            &at,
            None,
        ));
        assert_eq!(e.code(), "software_not_allowed");
        // A hardware platform the policy does not list is refused before any parsing…
        let tdx = Evidence::new(Platform::Tdx, vec![0; 16]);
        let e = refusal(appraise(&r, &tdx, &at.binding, &at, None));
        assert_eq!(e.code(), "platform_not_allowed");
        assert!(e.to_string().contains("(none)"), "{e}");
        let mut r2 = rules();
        r2.platforms.insert(MigrationPlatform::Snp);
        let e = refusal(appraise(&r2, &tdx, &at.binding, &at, None));
        assert_eq!(e.code(), "platform_not_allowed");
        assert!(e.to_string().contains("snp, software"), "{e}");
        // …and a listed one still has to verify.
        r2.platforms.insert(MigrationPlatform::Tdx);
        let e = refusal(appraise(&r2, &tdx, &at.binding, &at, None));
        assert!(matches!(e, MigrationRefusal::Evidence(_)), "{e:?}");
    }

    #[test]
    fn evidence_bound_to_another_challenge_or_channel_is_refused() {
        let at = attempt(4);
        let a = attester();
        // The binding answers another challenge / names another channel.
        let mut b = at.binding.clone();
        b.challenge = Challenge([0xf0; 32]);
        let e = refusal(appraise(&rules(), &evidence_for(&a, &b), &b, &at, None));
        assert_eq!(e.code(), "wrong_challenge");
        let mut b = at.binding.clone();
        b.channel = [0xf0; 32];
        let e = refusal(appraise(&rules(), &evidence_for(&a, &b), &b, &at, None));
        assert_eq!(e.code(), "wrong_channel");
        // The binding is right but the evidence was made over another challenge or channel:
        // its report data does not match.
        for edit in [
            (|b: &mut OfferBinding| b.challenge = Challenge([0xf0; 32])) as fn(&mut OfferBinding),
            |b| b.channel = [0xf0; 32],
            |b| b.hpke_public_key = vec![9; 32],
            |b| b.runtime.version = "9.9.9".into(),
            |b| {
                b.runtime.claims.insert("region".into(), "eu-west-2".into());
            },
            |b| b.runtime.policy_engine = [0; 32],
            |b| b.object_id = [0; 16],
            |b| b.transfer = TransferId([0; 16]),
        ]
        .into_iter()
        .enumerate()
        {
            let (i, edit) = edit;
            let mut other = at.binding.clone();
            edit(&mut other);
            assert_ne!(other, at.binding, "edit {i}");
            let ev = evidence_for(&a, &other);
            let e = refusal(appraise(&rules(), &ev, &at.binding, &at, None));
            assert_eq!(
                e,
                MigrationRefusal::Evidence(VerifyError::ReportDataMismatch),
                "{e}"
            );
        }
        // Tampered evidence does not verify at all.
        let mut ev = evidence_for(&a, &at.binding);
        ev.report[100] ^= 1;
        let e = refusal(appraise(&rules(), &ev, &at.binding, &at, None));
        assert!(
            matches!(e, MigrationRefusal::Evidence(VerifyError::Signature(_))),
            "{e:?}"
        );
    }

    #[test]
    fn replayed_evidence_from_an_earlier_transfer_is_refused() {
        let a = attester();
        let first = attempt(5);
        let ev1 = evidence_for(&a, &first.binding);
        appraise(&rules(), &ev1, &first.binding, &first, None).unwrap();
        // The next attempt has a fresh challenge; the old evidence and binding are replayed.
        let second = attempt(6);
        let e = refusal(appraise(&rules(), &ev1, &first.binding, &second, None));
        assert_eq!(e.code(), "wrong_challenge");
        // Replayed evidence under a binding rewritten for the new attempt.
        let e = refusal(appraise(&rules(), &ev1, &second.binding, &second, None));
        assert_eq!(
            e,
            MigrationRefusal::Evidence(VerifyError::ReportDataMismatch)
        );
        // Replayed over the same challenge but another TLS connection.
        let mut relayed = first.binding.clone();
        relayed.channel = second.channel;
        let mut at = attempt(5);
        at.channel = second.channel;
        let e = refusal(appraise(&rules(), &ev1, &relayed, &at, None));
        assert_eq!(
            e,
            MigrationRefusal::Evidence(VerifyError::ReportDataMismatch)
        );
    }

    #[test]
    fn runtime_identity_is_checked_against_the_policy() {
        let at = attempt(7);
        let a = attester();
        for (version, ok) in [
            ("0.1.9", false),
            ("0.2.0-rc.1", false),
            ("garbage", false),
            ("0.2.0", true),
            ("1.0.0", true),
        ] {
            let mut b = at.binding.clone();
            b.runtime.version = version.into();
            let r = appraise(&rules(), &evidence_for(&a, &b), &b, &at, None);
            match (r, ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    assert_eq!(e.code(), "runtime_too_old", "{version}: {e}");
                    assert!(e.to_string().contains("0.2.0"), "{e}");
                }
                (r, _) => panic!("{version}: {:?}", r.map(|t| t.summary().to_owned())),
            }
        }
        // Claims: absent, different, present with extras.
        let mut b = at.binding.clone();
        b.runtime.claims.clear();
        let e = refusal(appraise(&rules(), &evidence_for(&a, &b), &b, &at, None));
        assert_eq!(
            e,
            MigrationRefusal::ClaimMissing {
                name: "region".into(),
                required: "eu-west".into(),
                found: None
            }
        );
        b.runtime.claims.insert("region".into(), "us-east".into());
        let e = refusal(appraise(&rules(), &evidence_for(&a, &b), &b, &at, None));
        assert_eq!(e.code(), "claim_missing");
        assert!(e.to_string().contains("us-east"), "{e}");
        b.runtime.claims.insert("region".into(), "eu-west".into());
        b.runtime.claims.insert("operator".into(), "acme".into());
        appraise(&rules(), &evidence_for(&a, &b), &b, &at, None).unwrap();
        // A key that is not an X25519 key.
        let mut b = at.binding.clone();
        b.hpke_public_key = vec![1; 31];
        let e = refusal(appraise(&rules(), &evidence_for(&a, &b), &b, &at, None));
        assert_eq!(e.code(), "bad_key");
    }

    #[test]
    fn trust_may_not_fall_when_the_policy_says_so() {
        let at = attempt(8);
        let ev = evidence_for(&attester(), &at.binding);
        let mut r = rules();
        r.trust = MigrationTrust::NoFall;
        let e = refusal(appraise(&r, &ev, &at.binding, &at, Some(50)));
        assert_eq!(
            e,
            MigrationRefusal::TrustWouldFall {
                source_score: 50,
                destination_score: 0
            }
        );
        assert_eq!(e.code(), "trust_would_fall");
        // "any" records the fall but allows it.
        r.trust = MigrationTrust::Any;
        assert_eq!(
            appraise(&r, &ev, &at.binding, &at, Some(100))
                .unwrap()
                .trust_score(),
            0
        );
    }

    #[test]
    fn migration_not_allowed_refuses_before_anything_else() {
        let at = attempt(9);
        let mut r = rules();
        r.allowed = false;
        // Even garbage evidence with a wrong challenge: the policy answers first.
        let e = refusal(appraise(
            &r,
            &Evidence::new(Platform::Snp, vec![]),
            &at.binding,
            &attempt(10),
            None,
        ));
        assert_eq!(e, MigrationRefusal::MigrationNotAllowed);
        assert_eq!(e.code(), "migration_not_allowed");
    }

    /// Software evidence carries no TCB, and hardware vectors cannot carry a binding's report
    /// data, so the TCB floor is checked here at the conversion: the rules' minimum becomes the
    /// reference values' minimum, which the attestation crate's own tests enforce
    /// (`TcbBelowMinimum`, `TcbStatusNotAccepted`). The refusal mapping is checked directly.
    #[test]
    fn rules_become_fail_closed_reference_values() {
        let d = sojourn_policy::parse_descriptor(
            "d",
            &format!(
                r#"
[object]
name = "o"
version = 1
module = "o.wasm"
[limits]
fuel_per_entry = 1
memory_pages_max = 1
[schema.fields.x]
type = "int"
default = 0
[policy.migration]
allowed = true
platforms = ["snp", "tdx", "az-snp", "az-tdx"]
allow_debug = true
measurements = ["{}"]
min_tcb = {{ snp = {{ bootloader = 3, tee = 1, snp = 8, microcode = 115, fmc = 2 }}, tdx = {{ accepted_tcb_status = ["UpToDate", "SWHardeningNeeded"] }} }}
"#,
                hex::encode(MEASUREMENT)
            ),
            b"m",
        )
        .unwrap();
        let rv = sojourn_migration::reference_values(&d.policy.migration);
        assert_eq!(
            rv.allowed_platforms,
            vec![
                Platform::AzureSnpVtpm,
                Platform::AzureTdxVtpm,
                Platform::Snp,
                Platform::Tdx
            ]
        );
        assert!(!rv.allow_software && rv.allow_debug && !rv.allow_migration_agent);
        let m = Some(vec![MEASUREMENT.to_vec()]);
        assert_eq!(rv.snp.allowed_measurements, m);
        assert_eq!(rv.tdx.allowed_mrtd, m);
        assert_eq!(rv.software.allowed_measurements, m);
        let tcb = rv.snp.min_tcb.unwrap();
        assert_eq!(
            tcb.components(),
            vec![
                ("fmc", 2),
                ("bootloader", 3),
                ("tee", 1),
                ("snp", 8),
                ("microcode", 115)
            ]
        );
        assert_eq!(
            rv.tdx.accepted_tcb_status,
            vec!["SWHardeningNeeded".to_owned(), "UpToDate".to_owned()]
        );
        // Defaults: no SNP floor, TDX UpToDate only, nothing allowed without platforms.
        let rv = sojourn_migration::reference_values(&MigrationRules::default());
        assert!(rv.allowed_platforms.is_empty() && !rv.allow_software && !rv.allow_debug);
        assert_eq!(rv.snp.min_tcb, None);
        assert_eq!(rv.snp.allowed_measurements, None);
        assert_eq!(rv.tdx.accepted_tcb_status, vec!["UpToDate".to_owned()]);
        // The verifier's TCB verdicts map to `tcb`.
        for r in [
            Rejection::TcbStatusNotAccepted("OutOfDate".into()),
            Rejection::SmtNotAllowed,
        ] {
            let code = MigrationRefusal::from(VerifyError::Rejected(r.clone())).code();
            let want = if matches!(r, Rejection::SmtNotAllowed) {
                "evidence"
            } else {
                "tcb"
            };
            assert_eq!(code, want, "{r}");
        }
    }

    /// The policy crate's names are the attestation crate's: every platform maps both ways and
    /// every TDX status the policy accepts is one reference values accept.
    #[test]
    fn policy_names_mirror_attestation_names() {
        let policy: BTreeSet<&str> = MigrationPlatform::ALL.iter().map(|p| p.as_str()).collect();
        let attest: BTreeSet<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(policy, attest);
        for s in sojourn_policy::migration::TDX_TCB_STATUSES {
            sojourn_attestation::ReferenceValues::from_toml_str(&format!(
                "version = 1\nallowed_platforms = [\"tdx\"]\n[tdx]\naccepted_tcb_status = [\"{s}\"]"
            ))
            .unwrap();
        }
        assert!(sojourn_attestation::ReferenceValues::from_toml_str(
            "version = 1\nallowed_platforms = [\"tdx\"]\n[tdx]\naccepted_tcb_status = [\"Fine\"]"
        )
        .is_err());
    }
}

mod binding {
    use super::*;
    use sojourn_migration::BindingError;

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let mut b = attempt(1).binding;
        b.runtime.claims = BTreeMap::from([
            ("zz".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
            ("bb".to_owned(), "3".to_owned()),
            ("region.long-name_x".to_owned(), "eu-west".to_owned()),
        ]);
        let bytes = b.to_bytes();
        // An independent canonical-CBOR check agrees (map keys sorted, shortest heads).
        let value = sojourn_policy::canonical::decode(&bytes).unwrap();
        assert_eq!(sojourn_policy::canonical::encode(&value).unwrap(), bytes);
        assert_eq!(OfferBinding::from_bytes(&bytes).unwrap(), b);
        // Debug never prints the channel secret.
        assert!(!format!("{b:?}").contains(&hex::encode(b.channel)));
        // Truncations, trailing bytes and byte flips: refused, or another binding with
        // other report data. Never a panic.
        for i in 0..bytes.len() {
            assert!(OfferBinding::from_bytes(&bytes[..i]).is_err());
            let mut x = bytes.clone();
            x[i] ^= 0x20;
            if let Ok(other) = OfferBinding::from_bytes(&x) {
                assert_ne!(other, b);
                assert_ne!(other.report_data(), b.report_data());
                assert_eq!(other.to_bytes(), x);
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(OfferBinding::from_bytes(&long).is_err());
        // Version 2 is not read.
        let mut v2 = bytes.clone();
        assert_eq!(&v2[1..3], &[0x61, b'v']);
        v2[3] = 0x02;
        assert_eq!(
            OfferBinding::from_bytes(&v2),
            Err(BindingError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn report_data_commits_to_every_field() {
        let b = attempt(1).binding;
        let mut seen = BTreeSet::from([b.report_data()]);
        let edits: Vec<fn(&mut OfferBinding)> = vec![
            |b| b.transfer.0[15] ^= 1,
            |b| b.object_id[0] ^= 1,
            |b| b.challenge.0[31] ^= 1,
            |b| b.channel[0] ^= 1,
            |b| b.hpke_public_key[0] ^= 1,
            |b| b.runtime.name.push('x'),
            |b| b.runtime.version = "0.2.2".into(),
            |b| b.runtime.policy_engine[0] ^= 1,
            |b| {
                b.runtime.claims.insert("rack".into(), "7".into());
            },
            |b| {
                b.runtime.claims.insert("region".into(), "eu-west ".into());
            },
        ];
        for edit in edits {
            let mut x = b.clone();
            edit(&mut x);
            assert!(seen.insert(x.report_data()), "{x:?}");
        }
    }

    #[test]
    fn decoding_refuses_out_of_range_runtime_identities() {
        let mut b = attempt(1).binding;
        b.runtime.version = "v".repeat(65);
        assert!(matches!(
            OfferBinding::from_bytes(&b.to_bytes()),
            Err(BindingError::Malformed(_))
        ));
        let mut b = attempt(1).binding;
        b.runtime.claims.insert("Bad".into(), "x".into());
        assert!(OfferBinding::from_bytes(&b.to_bytes()).is_err());
        let mut b = attempt(1).binding;
        b.hpke_public_key = vec![1; 33];
        assert!(OfferBinding::from_bytes(&b.to_bytes()).is_err());
    }

    #[test]
    fn fresh_attempts_differ() {
        let (t1, c1) = sojourn_migration::fresh_attempt().unwrap();
        let (t2, c2) = sojourn_migration::fresh_attempt().unwrap();
        assert_ne!(t1, t2);
        assert_ne!(c1, c2);
        assert_eq!(
            sojourn_migration::TLS_EXPORTER_LABEL,
            b"EXPORTER-sojourn-migration-v1"
        );
    }
}

mod package {
    use super::*;
    use proptest::prelude::*;
    use sojourn_migration::package::{
        open_owned, open_owned_keeping, seal_streaming, seal_streaming_with, seal_to_bytes,
        seal_with, sealed_len, BundleHead, HEADER_LEN, MAX_PLAINTEXT_LEN, SEGMENT, TAG_LEN,
    };
    use sojourn_migration::BindingError;
    use std::ops::Range;
    use std::sync::Arc;

    // Header fields (docs: package layout).
    const TRANSFER: Range<usize> = 14..30;
    const ENC: Range<usize> = 30..62;
    const LEN: Range<usize> = 62..70;
    const SEG: Range<usize> = 70..74;

    fn declared_len(wire: &[u8]) -> usize {
        u64::from_be_bytes(wire[LEN].try_into().unwrap()) as usize
    }

    fn segments(wire: &[u8]) -> usize {
        declared_len(wire).div_ceil(SEGMENT).max(1)
    }

    /// Byte range of segment `i` in the package.
    fn seg(wire: &[u8], i: usize) -> Range<usize> {
        let l = declared_len(wire);
        HEADER_LEN + (i * SEGMENT).min(l)..HEADER_LEN + ((i + 1) * SEGMENT).min(l)
    }

    /// Byte range of the tag of segment `i`.
    fn tag(wire: &[u8], i: usize) -> Range<usize> {
        let at = HEADER_LEN + declared_len(wire) + i * TAG_LEN;
        at..at + TAG_LEN
    }

    fn with_snapshot(n: usize) -> ObjectBundle {
        let mut b = bundle();
        b.snapshot = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        b
    }

    /// A snapshot length that makes the encoded bundle exactly `plaintext` bytes long.
    fn snapshot_len_for(b: &ObjectBundle, plaintext: usize) -> usize {
        (plaintext.saturating_sub(200)..=plaintext)
            .find(|&s| b.head().encoded_len(s) == Some(plaintext))
            .unwrap()
    }

    /// Seals and opens `b` through the owned API, checking that nothing was copied.
    fn round_trip(at: &Attempt, t: &MigrationTicket, b: &ObjectBundle) -> Vec<u8> {
        let mut seen = None;
        let wire = seal_with(t, &b.head(), b.snapshot.len(), |buf| {
            seen = Some((buf.as_ptr(), buf.capacity()));
            buf.extend_from_slice(&b.snapshot);
            Ok(())
        })
        .unwrap();
        // One allocation, of the final size: the writer's buffer is the package.
        assert_eq!(seen, Some((wire.as_ptr(), wire.capacity())));
        assert_eq!(wire.len(), wire.capacity());
        assert_eq!(&wire[..8], b"SJMIGPK2");
        let n = segments(&wire);
        assert_eq!(
            wire.len(),
            HEADER_LEN + b.head().encoded_len(b.snapshot.len()).unwrap() + n * TAG_LEN
        );
        let copy = wire.clone();
        let range = copy.as_ptr_range();
        let opened = open_owned(&at.key, &at.binding, copy).unwrap();
        assert_eq!(opened.object_id(), b.object_id);
        assert_eq!(opened.source(), b.source);
        assert_eq!(opened.lineage(), b.lineage.as_slice());
        assert!(opened.snapshot() == b.snapshot.as_slice());
        assert!(opened
            .pending_messages()
            .eq(b.pending_messages.iter().map(Vec::as_slice)));
        // Opened in place: the snapshot is read from the received buffer itself.
        let snap = opened.snapshot().as_ptr_range();
        assert!(range.start <= snap.start && snap.end <= range.end);
        let back = opened.into_bundle();
        assert!(back == *b, "{} bytes did not round-trip", b.snapshot.len());
        // The buffer handed back for reuse is the received one (not a copy), with the
        // plaintext in place.
        let again = open_owned(&at.key, &at.binding, wire.clone()).unwrap();
        let snap = again.snapshot().as_ptr().addr();
        let buffer = again.into_buffer();
        assert_eq!(buffer.len(), wire.len());
        let offset = snap - buffer.as_ptr().addr();
        assert!(buffer[offset..offset + b.snapshot.len()] == b.snapshot[..]);
        wire
    }

    #[test]
    fn the_opening_opens_the_package_as_it_arrived_without_the_private_key() {
        use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
        let at = attempt(3);
        let t = ticket(&at);
        let b = with_snapshot(2 * SEGMENT + 12_345);
        let wire = seal_with(&t, &b.head(), b.snapshot.len(), |buf| {
            buf.extend_from_slice(&b.snapshot);
            Ok(())
        })
        .unwrap();
        // Every byte is handed over once, as it arrived, before it is decrypted; all of it on
        // the opening thread, the segments in order.
        let kept = std::sync::Mutex::new(vec![None::<u8>; wire.len()]);
        let order = std::sync::Mutex::new(Vec::new());
        let opener = std::thread::current().id();
        let keep = |at: u64, bytes: &[u8]| {
            assert_eq!(std::thread::current().id(), opener);
            order.lock().unwrap().push(at);
            let mut k = kept.lock().unwrap();
            for (i, b) in bytes.iter().enumerate() {
                let slot = &mut k[at as usize + i];
                assert!(slot.is_none(), "byte {} handed over twice", at as usize + i);
                *slot = Some(*b);
            }
        };
        let opened = open_owned_keeping(&at.key, &at.binding, wire.clone(), Some(&keep)).unwrap();
        let kept: Vec<u8> = kept
            .into_inner()
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert!(kept == wire, "the kept bytes are the package as it arrived");
        let order = order.into_inner().unwrap();
        let expected: Vec<u64> = [0, (HEADER_LEN + declared_len(&wire)) as u64]
            .into_iter()
            .chain((0..segments(&wire)).map(|i| seg(&wire, i).start as u64))
            .collect();
        assert_eq!(
            order, expected,
            "header, tag table, then the segments in order"
        );
        let o = opened.opening();
        assert_eq!(o.plaintext_len, declared_len(&wire));
        assert_eq!(opened.plaintext().len(), o.plaintext_len);
        // The bundle's parts are inside the plaintext.
        let p = opened.plaintext().as_ptr_range();
        let snap = opened.snapshot().as_ptr_range();
        assert!(p.start <= snap.start && snap.end <= p.end);
        // STREAM over the bytes as they arrived, with only the opening.
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, o.key.as_slice()).unwrap());
        let n = segments(&wire);
        let mut arrived = wire.clone();
        for i in 0..n {
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            if i + 1 == n {
                nonce[8..].copy_from_slice(&1u32.to_be_bytes());
            }
            let tag: [u8; TAG_LEN] = wire[tag(&wire, i)].try_into().unwrap();
            let r = seg(&wire, i);
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(o.aad.as_slice()),
                Tag::from(tag),
                &mut arrived[r],
                0..,
            )
            .unwrap();
        }
        assert!(arrived[HEADER_LEN..HEADER_LEN + o.plaintext_len] == *opened.plaintext());
        // Another attempt's package has another key.
        let other = attempt(4);
        let wire2 = seal_with(&ticket(&other), &b.head(), b.snapshot.len(), |buf| {
            buf.extend_from_slice(&b.snapshot);
            Ok(())
        })
        .unwrap();
        // Not for this attempt's key: nothing is handed over.
        let touched = std::sync::atomic::AtomicBool::new(false);
        let mark = |_: u64, _: &[u8]| touched.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(open_owned_keeping(&at.key, &at.binding, wire2.clone(), Some(&mark)).is_err());
        assert!(!touched.load(std::sync::atomic::Ordering::SeqCst));
        let opened2 = open_owned(&other.key, &other.binding, wire2).unwrap();
        assert_ne!(opened2.opening().key.as_slice(), o.key.as_slice());
        assert_ne!(opened2.opening().aad, o.aad);
    }

    #[test]
    fn a_package_that_does_not_open_hands_over_only_bytes_as_they_arrived() {
        let at = attempt(5);
        let t = ticket(&at);
        let b = with_snapshot(6 * SEGMENT);
        let wire = seal_with(&t, &b.head(), b.snapshot.len(), |buf| {
            buf.extend_from_slice(&b.snapshot);
            Ok(())
        })
        .unwrap();
        assert!(segments(&wire) >= 6);
        for bad in [0, 1, segments(&wire) - 1] {
            let mut tampered = wire.clone();
            tampered[seg(&wire, bad).start + 7] ^= 0x20;
            let kept = std::sync::Mutex::new(Vec::new());
            let keep = |at: u64, bytes: &[u8]| kept.lock().unwrap().push((at, bytes.to_vec()));
            let r = open_owned_keeping(&at.key, &at.binding, tampered.clone(), Some(&keep));
            assert!(
                matches!(r, Err(PackageError::Open)),
                "segment {bad} tampered"
            );
            let kept = kept.into_inner().unwrap();
            // The header and tag table first, then segments in order up to where it stopped:
            // each exactly the bytes that arrived (the tampered one included, if kept).
            assert!(kept.len() >= 2);
            for (k, (at, bytes)) in kept.iter().enumerate() {
                let at = *at as usize;
                assert!(tampered[at..at + bytes.len()] == bytes[..], "piece {k}");
                if k >= 3 {
                    assert!(at > kept[k - 1].0 as usize, "in order");
                }
            }
        }
    }

    #[test]
    fn sealed_packages_open_at_the_appraised_destination() {
        let at = attempt(1);
        let t = ticket(&at);
        let sealed = seal(&t, &bundle()).unwrap();
        assert_eq!(sealed.transfer(), at.transfer);
        assert_eq!(sealed.enc().len(), 32);
        let wire = sealed.to_bytes();
        let back = SealedObject::from_bytes(&wire).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(open(&at.key, &at.binding, &back).unwrap(), bundle());
        // Each seal is fresh.
        let again = seal(&t, &bundle()).unwrap();
        assert_ne!(again.enc(), sealed.enc());
        assert_ne!(
            again.as_bytes()[HEADER_LEN..],
            sealed.as_bytes()[HEADER_LEN..]
        );
        // The key's Debug hides the private half.
        let dbg = format!("{:?}", at.key);
        assert!(dbg.contains("<redacted>") && dbg.contains(&hex::encode(at.key.public_bytes())));
        // The opened bundle's Debug shows no contents.
        let opened = open_owned(&at.key, &at.binding, wire.clone()).unwrap();
        assert!(!format!("{opened:?}").contains("snapshot bytes"));
        // An empty bundle works too.
        let empty = ObjectBundle {
            object_id: OBJECT,
            snapshot: vec![],
            lineage: vec![],
            pending_messages: vec![],
            source: String::new(),
        };
        let s = seal(&t, &empty).unwrap();
        assert_eq!(open(&at.key, &at.binding, &s).unwrap(), empty);
        round_trip(&at, &t, &empty);
    }

    /// Snapshot lengths around the segment size, and encoded bundles of exactly one segment
    /// minus one, one, and one plus one byte (the segment layer's own tests cover plaintexts
    /// of 0 and 1 bytes, shorter than any bundle).
    #[test]
    fn round_trips_at_segment_boundaries() {
        let at = attempt(6);
        let t = ticket(&at);
        let b = bundle();
        let mut lens = vec![0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5];
        for p in [SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT] {
            lens.push(snapshot_len_for(&b, p));
        }
        for n in lens {
            let b = with_snapshot(n);
            let wire = round_trip(&at, &t, &b);
            let l = b.head().encoded_len(n).unwrap();
            assert_eq!(declared_len(&wire), l);
            assert_eq!(segments(&wire), l.div_ceil(SEGMENT).max(1), "{n}");
        }
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let at = attempt(2);
        let wire = seal_to_bytes(&ticket(&at), &bundle()).unwrap();
        assert_eq!(segments(&wire), 1);
        for i in 0..wire.len() {
            for bit in [0x01u8, 0x80] {
                let mut x = wire.clone();
                x[i] ^= bit;
                let r = open_owned(&at.key, &at.binding, x.clone());
                assert!(r.is_err(), "flip at byte {i} (bit {bit:#x}) went unnoticed");
                if i >= ENC.start {
                    // enc, the lengths, ciphertext and tags: the length fields are structural,
                    // the rest fails authentication.
                    let want_open = !(LEN.contains(&i) || SEG.contains(&i));
                    assert_eq!(
                        matches!(r, Err(PackageError::Open)),
                        want_open,
                        "byte {i}: {r:?}"
                    );
                }
                // The copying path agrees.
                let r = SealedObject::from_bytes(&x).and_then(|s| open(&at.key, &at.binding, &s));
                assert!(r.is_err());
            }
            assert!(matches!(
                open_owned(&at.key, &at.binding, wire[..i].to_vec()),
                Err(PackageError::Malformed(_))
            ));
            assert!(SealedObject::from_bytes(&wire[..i]).is_err());
        }
        let mut long = wire.clone();
        long.push(0);
        assert!(SealedObject::from_bytes(&long).is_err());
        assert!(matches!(
            open_owned(&at.key, &at.binding, long),
            Err(PackageError::Malformed(_))
        ));
        assert!(open_owned(&at.key, &at.binding, wire).is_ok());
    }

    /// Flips in a four-segment package (3 MiB + the head + 5 bytes): every header and tag
    /// byte, and the first, a middle and the last byte of every segment.
    #[test]
    fn flips_in_every_segment_and_tag_are_detected() {
        let at = attempt(7);
        let wire = seal_to_bytes(&ticket(&at), &with_snapshot(3 * SEGMENT + 5)).unwrap();
        let n = segments(&wire);
        assert_eq!(n, 4);
        let mut at_bytes: Vec<usize> = (0..HEADER_LEN).collect();
        for i in 0..n {
            let r = seg(&wire, i);
            at_bytes.extend([r.start, (r.start + r.end) / 2, r.end - 1]);
            at_bytes.extend(tag(&wire, i));
        }
        let mut x = wire.clone();
        for i in at_bytes {
            x[i] ^= 0x10;
            let r = open_owned(&at.key, &at.binding, x.clone());
            assert!(r.is_err(), "flip at byte {i} went unnoticed");
            if i >= HEADER_LEN {
                assert_eq!(r.unwrap_err(), PackageError::Open, "byte {i}");
            }
            x[i] ^= 0x10;
        }
        assert!(open_owned(&at.key, &at.binding, x).is_ok());
    }

    #[test]
    fn truncated_reordered_dropped_or_duplicated_segments_do_not_open() {
        let at = attempt(8);
        let wire = seal_to_bytes(&ticket(&at), &with_snapshot(3 * SEGMENT + 5)).unwrap();
        let l = declared_len(&wire);
        let n = segments(&wire);
        assert_eq!(n, 4);
        let open_it = |x: Vec<u8>| open_owned(&at.key, &at.binding, x);

        // Truncated anywhere (header fields, segment and tag boundaries): structural.
        let mut cuts = vec![0, 1, 8, 14, 30, 62, 70, HEADER_LEN - 1, HEADER_LEN];
        for i in 0..n {
            cuts.extend([
                seg(&wire, i).start + 1,
                seg(&wire, i).end,
                tag(&wire, i).start + 7,
            ]);
        }
        cuts.push(wire.len() - 1);
        for c in cuts {
            assert!(
                matches!(open_it(wire[..c].to_vec()), Err(PackageError::Malformed(_))),
                "cut at {c}"
            );
        }

        // The last segment and its tag dropped, the declared length fixed to match.
        let last = seg(&wire, n - 1);
        let mut x = wire[..last.start].to_vec();
        x.extend_from_slice(&wire[tag(&wire, 0).start..tag(&wire, n - 1).start]);
        x[LEN].copy_from_slice(&((last.start - HEADER_LEN) as u64).to_be_bytes());
        assert_eq!(declared_len(&x), l - last.len());
        assert_eq!(open_it(x.clone()).unwrap_err(), PackageError::Open);
        // … with the length left as it was: structural.
        x[LEN].copy_from_slice(&(l as u64).to_be_bytes());
        assert!(matches!(open_it(x), Err(PackageError::Malformed(_))));

        // Two segments swapped, with their tags.
        let swap = |a: usize, b: usize, tags_too: bool, data_too: bool| {
            let mut x = wire.clone();
            if data_too {
                let (ra, rb) = (seg(&wire, a), seg(&wire, b));
                x[ra.clone()].copy_from_slice(&wire[rb.clone()]);
                x[rb].copy_from_slice(&wire[ra]);
            }
            if tags_too {
                let (ta, tb) = (tag(&wire, a), tag(&wire, b));
                x[ta.clone()].copy_from_slice(&wire[tb.clone()]);
                x[tb].copy_from_slice(&wire[ta]);
            }
            x
        };
        assert_eq!(
            open_it(swap(0, 1, true, true)).unwrap_err(),
            PackageError::Open
        );
        assert_eq!(
            open_it(swap(1, 2, true, true)).unwrap_err(),
            PackageError::Open
        );
        assert_eq!(
            open_it(swap(0, 2, true, false)).unwrap_err(),
            PackageError::Open
        );
        assert_eq!(
            open_it(swap(0, 1, false, true)).unwrap_err(),
            PackageError::Open
        );

        // A segment duplicated over the next one, with its tag.
        let mut x = wire.clone();
        x.copy_within(seg(&wire, 0), seg(&wire, 1).start);
        x.copy_within(tag(&wire, 0), tag(&wire, 1).start);
        assert_eq!(open_it(x).unwrap_err(), PackageError::Open);

        // A full segment (and its tag) appended after the last, length fixed.
        let mut x = wire[..seg(&wire, n - 1).end].to_vec();
        x.extend_from_slice(&wire[seg(&wire, 0)]);
        x.extend_from_slice(&wire[tag(&wire, 0).start..]);
        x.extend_from_slice(&wire[tag(&wire, 0)]);
        x[LEN].copy_from_slice(&((l + SEGMENT) as u64).to_be_bytes());
        assert_eq!(open_it(x).unwrap_err(), PackageError::Open);

        // Another segment size, or a length beyond the maximum: refused from the header.
        let mut x = wire.clone();
        x[SEG].copy_from_slice(&((SEGMENT as u32) / 2).to_be_bytes());
        assert!(matches!(open_it(x), Err(PackageError::Malformed(_))));
        let mut x = wire.clone();
        x[LEN].copy_from_slice(&(MAX_PLAINTEXT_LEN + 1).to_be_bytes());
        assert!(matches!(open_it(x), Err(PackageError::Malformed(m)) if m.contains("maximum")));
        let mut x = wire.clone();
        x[LEN].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(open_it(x), Err(PackageError::Malformed(_))));

        assert!(open_it(wire).is_ok());
    }

    #[test]
    fn a_package_opens_only_for_its_key_and_binding() {
        let at = attempt(3);
        // Several segments, so that every check also runs on the threaded path.
        let wire = seal_to_bytes(&ticket(&at), &with_snapshot(2 * SEGMENT)).unwrap();
        let open_with = |key: &DestinationKey, b: &OfferBinding| open_owned(key, b, wire.clone());
        // Another destination's key, with its own binding (everything else equal).
        let other = DestinationKey::generate().unwrap();
        let mut b = at.binding.clone();
        b.hpke_public_key = other.public_bytes();
        assert_eq!(open_with(&other, &b).unwrap_err(), PackageError::Open);
        // Another key with this binding: caught before decryption.
        assert_eq!(
            open_with(&other, &at.binding).unwrap_err(),
            PackageError::WrongKey
        );
        // This key, but the binding of another transfer, challenge, channel or object.
        let mut b = at.binding.clone();
        b.transfer = TransferId([0xee; 16]);
        assert_eq!(
            open_with(&at.key, &b).unwrap_err(),
            PackageError::WrongTransfer
        );
        // … also when the clear transfer id is rewritten to match.
        let mut x = wire.clone();
        x[TRANSFER].copy_from_slice(&b.transfer.0);
        assert_eq!(open_owned(&at.key, &b, x).unwrap_err(), PackageError::Open);
        let edits: Vec<fn(&mut OfferBinding)> = vec![
            |b| b.challenge = Challenge([0xee; 32]),
            |b| b.channel = [0xee; 32],
            |b| b.channel[31] ^= 1,
            |b| b.object_id = [0xee; 16],
        ];
        for edit in edits {
            let mut b = at.binding.clone();
            edit(&mut b);
            assert_eq!(
                open_with(&at.key, &b).unwrap_err(),
                PackageError::Open,
                "{b:?}"
            );
        }
        // The runtime identity is not in the AAD (the ticket already checked it).
        let mut b = at.binding.clone();
        b.runtime.version = "9.0.0".into();
        assert!(open_with(&at.key, &b).is_ok());
        // Another attempt's package (same object, same destination key) for this binding.
        let mut other_attempt = attempt(9);
        other_attempt.binding.hpke_public_key = at.key.public_bytes();
        let ev = evidence_for(&attester(), &other_attempt.binding);
        let t = appraise(&rules(), &ev, &other_attempt.binding, &other_attempt, None).unwrap();
        let foreign = seal_to_bytes(&t, &bundle()).unwrap();
        let mut x = foreign.clone();
        x[TRANSFER].copy_from_slice(&at.transfer.0);
        assert_eq!(
            open_owned(&at.key, &at.binding, x).unwrap_err(),
            PackageError::Open
        );
        assert_eq!(
            open_owned(&at.key, &at.binding, foreign.clone()).unwrap_err(),
            PackageError::WrongTransfer
        );
        assert!(open_owned(&at.key, &other_attempt.binding, foreign).is_ok());
    }

    #[test]
    fn a_bundle_of_another_object_is_not_sealed() {
        let at = attempt(4);
        let mut wrong = bundle();
        wrong.object_id = [0; 16];
        assert!(matches!(
            seal(&ticket(&at), &wrong),
            Err(PackageError::WrongObject { .. })
        ));
        let head = BundleHead {
            object_id: [0; 16],
            source: "s",
            lineage: &[],
            pending_messages: &[],
        };
        let r = seal_with(&ticket(&at), &head, 0, |_| panic!("not called"));
        assert!(matches!(r, Err(PackageError::WrongObject { .. })));
    }

    #[test]
    fn a_snapshot_writer_must_write_exactly_what_it_announced() {
        let at = attempt(10);
        let t = ticket(&at);
        let b = with_snapshot(1000);
        let head = b.head();
        let snap = |buf: &mut Vec<u8>, n: usize| buf.extend_from_slice(&b.snapshot[..n]);
        for (announced, written) in [(1000, 999), (1000, 0), (999, 1000), (0, 1)] {
            let r = seal_with(&t, &head, announced, |buf| {
                snap(buf, written);
                Ok(())
            });
            assert!(
                matches!(&r, Err(PackageError::Snapshot(m)) if m.contains("announced")),
                "{announced} {written}: {r:?}"
            );
        }
        let r = seal_with(&t, &head, 1000, |_| Err("the object went away".into()));
        assert_eq!(
            r,
            Err(PackageError::Snapshot("the object went away".into()))
        );
        // A writer that replaces what came before it.
        let r = seal_with(&t, &head, 1000, |buf| {
            let n = buf.len();
            buf.clear();
            buf.resize(n, 0);
            snap(buf, 1000);
            Ok(())
        });
        assert!(matches!(r, Err(PackageError::Snapshot(_))), "{r:?}");
        // The right length works.
        let wire = seal_with(&t, &head, 1000, |buf| {
            snap(buf, 1000);
            Ok(())
        })
        .unwrap();
        assert!(
            open_owned(&at.key, &at.binding, wire)
                .unwrap()
                .into_bundle()
                == b
        );
    }

    /// Seals `b` part by part, the writer passing the snapshot in pieces of `piece` bytes;
    /// checks that what was emitted is what is returned, and returns the parts.
    fn stream(t: &MigrationTicket, b: &ObjectBundle, piece: usize) -> Vec<Arc<Vec<u8>>> {
        let mut emitted = Vec::new();
        let parts = seal_streaming(
            t,
            &b.head(),
            b.snapshot.len(),
            |put| {
                for c in b.snapshot.chunks(piece) {
                    put(c);
                }
                Ok(())
            },
            &mut |p| emitted.push(p),
        )
        .unwrap();
        assert_eq!(emitted.len(), parts.len());
        assert!(emitted.iter().zip(&parts).all(|(e, p)| Arc::ptr_eq(e, p)));
        parts
    }

    /// A package sealed part by part is a package: its parts, concatenated, open to the same
    /// bundle, for plaintexts that end on either side of segment boundaries and however the
    /// writer cuts the snapshot. It is the header, one part per segment (each exactly a
    /// segment of ciphertext but the last), and the tag table.
    #[test]
    fn a_package_sealed_in_parts_opens_like_a_whole_one() {
        let at = attempt(12);
        let t = ticket(&at);
        let b0 = bundle();
        for plaintext in [1000, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let b = with_snapshot(snapshot_len_for(&b0, plaintext));
            let n = plaintext.div_ceil(SEGMENT);
            for piece in [7, 4099, SEGMENT + 3] {
                let parts = stream(&t, &b, piece);
                assert_eq!(parts.len(), n + 2, "{plaintext} in pieces of {piece}");
                assert_eq!(parts[0].len(), HEADER_LEN);
                assert!(parts[1..n].iter().all(|p| p.len() == SEGMENT));
                assert_eq!(parts[n].len(), plaintext - (n - 1) * SEGMENT);
                assert_eq!(parts[n + 1].len(), n * TAG_LEN);
                let wire: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(wire.len(), sealed_len(&b.head(), b.snapshot.len()).unwrap());
                let opened = open_owned(&at.key, &at.binding, wire)
                    .unwrap()
                    .into_bundle();
                assert!(opened == b, "{plaintext} in pieces of {piece}");
            }
        }
        // Tampering with a segment part, or sending the parts in another order, is caught.
        let b = with_snapshot(snapshot_len_for(&b0, 2 * SEGMENT + 10));
        let parts = stream(&t, &b, 4096);
        let mut flipped: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        flipped[2][100] ^= 1;
        let mut swapped: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        swapped.swap(1, 2);
        for bad in [flipped, swapped] {
            let wire: Vec<u8> = bad.concat();
            assert_eq!(
                open_owned(&at.key, &at.binding, wire).unwrap_err(),
                PackageError::Open
            );
        }
        // Sealed for this attempt only.
        let other = attempt(13);
        let wire: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert!(open_owned(&other.key, &other.binding, wire).is_err());
    }

    /// Sealed into buffers the sender recycles: each segment is sealed in the buffer it is
    /// given (here: buffers that still hold an earlier part's bytes, some larger than asked),
    /// and the parts open to the same bundle as ever.
    #[test]
    fn a_package_sealed_in_recycled_buffers_opens_like_any_other() {
        let at = attempt(15);
        let t = ticket(&at);
        let b = with_snapshot(snapshot_len_for(&bundle(), 3 * SEGMENT + 5));
        // Two buffers going round, both dirty, one larger than a segment.
        let mut pool: Vec<Vec<u8>> = vec![vec![0xAA; SEGMENT + 100], vec![0x55; 10]];
        let mut given: Vec<*const u8> = Vec::new();
        let mut emitted: Vec<*const u8> = Vec::new();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut asked = Vec::new();
        {
            let pool = std::cell::RefCell::new(&mut pool);
            seal_streaming_with(
                &t,
                &b.head(),
                b.snapshot.len(),
                |put| {
                    for c in b.snapshot.chunks(5000) {
                        put(c);
                    }
                    Ok(())
                },
                &mut |capacity| {
                    asked.push(capacity);
                    let v = pool.borrow_mut().pop().unwrap_or_default();
                    given.push(v.as_ptr());
                    v
                },
                &mut |part| {
                    // The sender is done with each part at once: back into the pool (a
                    // copy of its bytes kept to check the package).
                    emitted.push(part.as_ptr());
                    parts.push(part.clone());
                    // Segments go round; the header and the tag table are too small to.
                    if part.capacity() >= SEGMENT {
                        pool.borrow_mut().insert(0, part);
                    }
                },
            )
            .unwrap();
        }
        let n = 4;
        assert_eq!(parts.len(), n + 2);
        assert_eq!(asked, [SEGMENT, SEGMENT, SEGMENT, 5]);
        // Segments 1..3 were sealed in the buffers given (the large dirty one, then parts
        // that came back); the first, given a buffer too small, grew it.
        assert_eq!(emitted[2..5], given[1..4]);
        let wire: Vec<u8> = parts.concat();
        assert_eq!(wire.len(), sealed_len(&b.head(), b.snapshot.len()).unwrap());
        let opened = open_owned(&at.key, &at.binding, wire)
            .unwrap()
            .into_bundle();
        assert!(opened == b);
    }

    #[test]
    fn a_snapshot_writer_in_parts_must_pass_exactly_what_it_announced() {
        let at = attempt(14);
        let t = ticket(&at);
        let b = with_snapshot(3000);
        let head = b.head();
        for (announced, written) in [(3000, 2999), (3000, 0), (2999, 3000), (0, 1)] {
            let mut emitted = 0;
            let r = seal_streaming(
                &t,
                &head,
                announced,
                |put| {
                    put(&b.snapshot[..written]);
                    Ok(())
                },
                &mut |_| emitted += 1,
            );
            assert!(
                matches!(&r, Err(PackageError::Snapshot(m)) if m.contains("announced")),
                "{announced} {written}: {r:?}"
            );
        }
        let r = seal_streaming(
            &t,
            &head,
            3000,
            |_| Err("the object went away".into()),
            &mut |_| {},
        );
        assert_eq!(
            r,
            Err(PackageError::Snapshot("the object went away".into()))
        );
        let mut wrong = head;
        wrong.object_id = [0; 16];
        let r = seal_streaming(&t, &wrong, 3000, |_| panic!("not called"), &mut |_| {
            panic!("nothing is emitted for another object")
        });
        assert!(matches!(r, Err(PackageError::WrongObject { .. })));
    }

    #[test]
    fn other_versions_and_suites_are_refused() {
        let at = attempt(11);
        let wire = seal_to_bytes(&ticket(&at), &bundle()).unwrap();
        let mut v1 = wire.clone();
        v1[..8].copy_from_slice(b"SJMIGPK1");
        let e = open_owned(&at.key, &at.binding, v1).unwrap_err();
        assert!(e.to_string().contains("version 1"), "{e}");
        let mut chacha = wire.clone();
        chacha[12..14].copy_from_slice(&[0, 3]);
        let e = open_owned(&at.key, &at.binding, chacha).unwrap_err();
        assert!(e.to_string().contains("suite"), "{e}");
        // The binding commits to the export-only suite and refuses the version 1 one.
        let bytes = at.binding.to_bytes();
        let suite = [
            0x65, b's', b'u', b'i', b't', b'e', 0x83, 0x18, 0x20, 0x01, 0x19, 0xff, 0xff,
        ];
        let at_suite = bytes.windows(suite.len()).position(|w| w == suite).unwrap();
        let mut old = bytes[..at_suite + 10].to_vec();
        old.push(0x03);
        old.extend_from_slice(&bytes[at_suite + suite.len()..]);
        assert_eq!(
            OfferBinding::from_bytes(&old),
            Err(BindingError::UnsupportedSuite(vec![32, 1, 3]))
        );
    }

    #[test]
    fn bundle_encoding_is_canonical_and_strict() {
        let b = bundle();
        let bytes = b.to_bytes();
        let value = sojourn_policy::canonical::decode(&bytes).unwrap();
        assert_eq!(sojourn_policy::canonical::encode(&value).unwrap(), bytes);
        assert_eq!(ObjectBundle::from_bytes(&bytes).unwrap(), b);
        assert_eq!(&bytes[1..4], &[0x61, b'v', 0x02], "bundle format 2");
        for i in 0..bytes.len() {
            assert!(ObjectBundle::from_bytes(&bytes[..i]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(ObjectBundle::from_bytes(&long).is_err());
        let mut v1 = bytes.clone();
        v1[3] = 0x01;
        assert!(ObjectBundle::from_bytes(&v1).is_err());
        assert!(!format!("{b:?}").contains("snapshot bytes"));
    }

    /// 64 MiB through seal and open in optimised builds (`cargo test --release`) or with
    /// SOJOURN_MIGRATION_BIG=1; 8 MiB otherwise.
    #[test]
    fn large_bundles_round_trip() {
        let big = std::env::var("SOJOURN_MIGRATION_BIG").is_ok_and(|v| v == "1");
        let mib: usize = if big || !cfg!(debug_assertions) {
            64
        } else {
            8
        };
        let at = attempt(5);
        let big = with_snapshot(mib << 20);
        let t = ticket(&at);
        let t0 = std::time::Instant::now();
        let wire = seal_to_bytes(&t, &big).unwrap();
        let t1 = std::time::Instant::now();
        let range = wire.as_ptr_range();
        let opened = open_owned(&at.key, &at.binding, wire).unwrap();
        let t2 = std::time::Instant::now();
        // Read in place: the snapshot lies in the received buffer.
        let s = opened.snapshot().as_ptr_range();
        assert!(range.start <= s.start && s.end <= range.end);
        assert!(opened.snapshot() == big.snapshot.as_slice());
        eprintln!("{mib} MiB seal: {:?}, open: {:?}", t1 - t0, t2 - t1);
    }

    #[test]
    fn random_bytes_never_panic() {
        let at = attempt(12);
        let t = ticket(&at);
        let wire = seal_to_bytes(&t, &bundle()).unwrap();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        });
        // Arbitrary bytes, and arbitrary bytes behind a valid header.
        runner
            .run(
                &(
                    proptest::collection::vec(any::<u8>(), 0..600),
                    any::<bool>(),
                ),
                |(bytes, behind_header)| {
                    let x = if behind_header {
                        let mut x = wire[..HEADER_LEN].to_vec();
                        x.extend_from_slice(&bytes);
                        x
                    } else {
                        bytes
                    };
                    prop_assert!(open_owned(&at.key, &at.binding, x).is_err());
                    Ok(())
                },
            )
            .unwrap();
        // A real package with a few bytes changed and maybe cut short.
        runner
            .run(
                &(
                    proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 1..4),
                    proptest::option::of(any::<proptest::sample::Index>()),
                ),
                |(flips, cut)| {
                    let mut x = wire.clone();
                    for (i, v) in flips {
                        let i = i.index(x.len());
                        x[i] ^= v;
                    }
                    if let Some(c) = cut {
                        x.truncate(c.index(x.len()));
                    }
                    prop_assert!(open_owned(&at.key, &at.binding, x).is_err());
                    Ok(())
                },
            )
            .unwrap();
    }
}

/// A package sent with each segment's tag right after it, opened segment by segment as it
/// arrives.
mod tag_after_segment {
    use super::*;
    use sojourn_migration::package::{
        open_opened, open_owned, seal_streaming_in, seal_streaming_with, SegmentOpener, SendOrder,
        TagAfterSegment, HEADER_LEN, SEGMENT, TAG_LEN,
    };

    fn with_snapshot(n: usize) -> ObjectBundle {
        let mut b = bundle();
        b.snapshot = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        b
    }

    /// The parts of `b` sealed in `order`, and the sizes of the buffers asked for.
    fn parts(
        t: &MigrationTicket,
        b: &ObjectBundle,
        order: SendOrder,
    ) -> (Vec<Vec<u8>>, Vec<usize>) {
        let mut parts = Vec::new();
        let mut asked = Vec::new();
        seal_streaming_in(
            order,
            t,
            &b.head(),
            b.snapshot.len(),
            |put| {
                for piece in b.snapshot.chunks(70_001) {
                    put(piece);
                }
                Ok(())
            },
            &mut |n| {
                asked.push(n);
                Vec::with_capacity(n)
            },
            &mut |p| parts.push(p),
        )
        .unwrap();
        (parts, asked)
    }

    const SIZES: [usize; 6] = [
        0,
        1,
        SEGMENT - 200,
        SEGMENT + 1,
        2 * SEGMENT,
        3 * SEGMENT + 77,
    ];

    #[test]
    fn each_segment_is_followed_by_its_tag_and_the_layout_opens() {
        let at = attempt(40);
        let t = ticket(&at);
        for n in SIZES {
            let b = with_snapshot(n);
            let (sent, asked) = parts(&t, &b, SendOrder::TagAfterSegment);
            let wire = sent.concat();
            let order = TagAfterSegment::of_header(&wire).unwrap();
            assert_eq!(wire.len(), order.package_len(), "{n}");
            // The header, then one part per segment (its bytes and its tag): no tag table.
            assert_eq!(sent.len(), 1 + order.segments(), "{n}");
            for (i, part) in sent[1..].iter().enumerate() {
                assert_eq!(part.len(), order.segment(i).unwrap().len() + TAG_LEN, "{n}");
            }
            // Every buffer asked for has room for its segment's tag.
            let room: Vec<usize> = (0..order.segments())
                .map(|i| order.segment(i).unwrap().len() + TAG_LEN)
                .collect();
            assert_eq!(asked, room, "{n}");
            let layout = TagAfterSegment::to_layout(&wire).unwrap();
            let opened = open_owned(&at.key, &at.binding, layout.clone()).unwrap();
            assert!(opened.into_bundle() == b, "{n}");
            // The same bundle sealed in its layout has the same shape.
            let (plain, _) = parts(&t, &b, SendOrder::Layout);
            assert_eq!(plain.concat().len(), layout.len());
            assert_eq!(plain.len(), 2 + order.segments());
        }
    }

    #[test]
    fn every_byte_of_the_sent_order_has_one_place_in_the_layout() {
        for l in [
            0,
            1,
            5000,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT + 77,
        ] {
            let order = TagAfterSegment::of_header(&header_for(l)).unwrap();
            let len = order.package_len();
            assert_eq!(len, HEADER_LEN + l + TAG_LEN * l.div_ceil(SEGMENT).max(1));
            let mut seen = vec![false; len];
            let mut at = 0;
            while at < len {
                let (to, n) = order.place(at).unwrap();
                assert!(n >= 1 && to + n <= len, "{l} at {at}");
                // Runs are maximal within a field: the next byte starts another run or
                // continues this one consecutively.
                for k in 0..n {
                    assert!(!seen[to + k], "{l}: {} placed twice", to + k);
                    seen[to + k] = true;
                }
                at += n;
            }
            assert!(seen.iter().all(|s| *s), "{l}: not every byte placed");
            assert_eq!(order.place(len), None);
            assert_eq!(order.place(usize::MAX / 2), None);
            // A segment's tag comes right after it.
            for i in 0..order.segments() {
                let seg = order.segment(i).unwrap();
                let sent_end = HEADER_LEN + i * (SEGMENT + TAG_LEN) + seg.len();
                assert_eq!(
                    order.place(sent_end).unwrap().0,
                    order.tag(i).unwrap().start
                );
            }
        }
    }

    /// A header declaring `l` bytes of plaintext (only its fields are read).
    fn header_for(l: usize) -> Vec<u8> {
        let at = attempt(41);
        let b = with_snapshot(0);
        let mut h = Vec::new();
        seal_streaming_with(
            &ticket(&at),
            &b.head(),
            0,
            |_| Ok(()),
            &mut Vec::with_capacity,
            &mut |p| {
                if h.is_empty() {
                    h = p;
                }
            },
        )
        .unwrap();
        h[62..70].copy_from_slice(&(l as u64).to_be_bytes());
        h
    }

    /// Receives `wire` (sent in [`SendOrder::TagAfterSegment`]) as a destination does:
    /// each byte to its place in the layout, each segment opened once its tag is in.
    fn receive(at: &Attempt, wire: &[u8]) -> (Vec<u8>, Result<SegmentOpener, PackageError>) {
        let order = TagAfterSegment::of_header(wire).unwrap();
        let mut layout = vec![0u8; order.package_len()];
        let mut opener: Option<Result<SegmentOpener, PackageError>> = None;
        let mut pos = 0;
        while pos < wire.len() {
            let (to, n) = order.place(pos).unwrap();
            layout[to..to + n].copy_from_slice(&wire[pos..pos + n]);
            pos += n;
            if pos == HEADER_LEN {
                opener = Some(SegmentOpener::new(&at.key, &at.binding, &layout));
            }
            if let Some(Ok(o)) = &mut opener {
                let i = o.opened();
                if let (Some(seg), Some(tag)) = (order.segment(i), order.tag(i)) {
                    if to + n == tag.end {
                        let tag_bytes = layout[tag].to_vec();
                        if let Err(e) = o.open_next(&mut layout[seg], &tag_bytes) {
                            return (layout, Err(e));
                        }
                    }
                }
            }
        }
        (layout, opener.unwrap())
    }

    #[test]
    fn segments_opened_as_they_arrive_give_the_bundle() {
        let at = attempt(42);
        let t = ticket(&at);
        for n in SIZES {
            let b = with_snapshot(n);
            let wire = parts(&t, &b, SendOrder::TagAfterSegment).0.concat();
            let kept = TagAfterSegment::to_layout(&wire).unwrap();
            let (layout, opener) = receive(&at, &wire);
            let opener = opener.unwrap();
            assert!(opener.is_done(), "{n}: {opener:?}");
            let opened = open_opened(&at.binding, layout, opener).unwrap();
            // The package as it arrived (its layout) opens again with the opening, as the
            // one `open_owned` gives.
            let again = open_owned(&at.key, &at.binding, kept).unwrap();
            assert_eq!(opened.opening().key, again.opening().key);
            assert_eq!(opened.opening().aad, again.opening().aad);
            assert!(opened.into_bundle() == b, "{n}");
        }
    }

    #[test]
    fn a_flipped_byte_stops_the_opening_at_its_segment() {
        let at = attempt(43);
        let t = ticket(&at);
        let b = with_snapshot(3 * SEGMENT + 77);
        let wire = parts(&t, &b, SendOrder::TagAfterSegment).0.concat();
        let order = TagAfterSegment::of_header(&wire).unwrap();
        let stride = SEGMENT + TAG_LEN;
        // (where in the sent order, the segment that fails)
        let cases = [
            (HEADER_LEN, 0),
            (HEADER_LEN + SEGMENT - 1, 0),
            (HEADER_LEN + SEGMENT, 0), // its tag
            (HEADER_LEN + stride + 5, 1),
            (HEADER_LEN + 3 * stride + 76, 3),
            (wire.len() - 1, 3), // the last tag
        ];
        for (flip, segment) in cases {
            let mut bad = wire.clone();
            bad[flip] ^= 0x20;
            let (layout, opener) = receive(&at, &bad);
            assert_eq!(opener.unwrap_err(), PackageError::Open, "flip at {flip}");
            // Segments before it were opened, it was not, and nothing after it is.
            let mut o = SegmentOpener::new(&at.key, &at.binding, &layout).unwrap();
            for i in 0..segment {
                let seg = order.segment(i).unwrap();
                let mut data = TagAfterSegment::to_layout(&wire).unwrap()[seg].to_vec();
                let tag = &wire[HEADER_LEN + i * stride + SEGMENT..][..TAG_LEN];
                o.open_next(&mut data, tag).unwrap();
            }
            assert_eq!(o.opened(), segment);
        }
        // A header flip changes every segment's associated data: nothing opens.
        let mut bad = wire.clone();
        bad[20] ^= 1;
        let (_, opener) = receive(&at, &bad);
        assert!(opener.is_err());
    }

    #[test]
    fn an_opener_opens_only_its_package_whole_and_in_order() {
        let at = attempt(44);
        let other = attempt(45);
        let t = ticket(&at);
        let b = with_snapshot(2 * SEGMENT + 9);
        let wire = parts(&t, &b, SendOrder::TagAfterSegment).0.concat();
        let order = TagAfterSegment::of_header(&wire).unwrap();
        // Another attempt's key or binding.
        assert!(SegmentOpener::new(&other.key, &at.binding, &wire).is_err());
        assert_eq!(
            SegmentOpener::new(&at.key, &other.binding, &wire).unwrap_err(),
            PackageError::WrongTransfer
        );
        let layout = TagAfterSegment::to_layout(&wire).unwrap();
        let tag = |i: usize| layout[order.tag(i).unwrap()].to_vec();
        let seg = |i: usize| layout[order.segment(i).unwrap()].to_vec();
        // Out of order: segment 1 first does not open (another nonce).
        let mut o = SegmentOpener::new(&at.key, &at.binding, &layout).unwrap();
        assert_eq!(o.open_next(&mut seg(1), &tag(1)), Err(PackageError::Open));
        assert!(
            o.open_next(&mut seg(0), &tag(0)).is_err(),
            "nothing after a failure"
        );
        // A short segment, a short tag.
        let mut o = SegmentOpener::new(&at.key, &at.binding, &layout).unwrap();
        assert!(o.open_next(&mut seg(0)[1..].to_vec(), &tag(0)).is_err());
        let mut o = SegmentOpener::new(&at.key, &at.binding, &layout).unwrap();
        assert!(o.open_next(&mut seg(0), &tag(0)[..15]).is_err());
        // Not every segment opened: no bundle.
        let mut o = SegmentOpener::new(&at.key, &at.binding, &layout).unwrap();
        let mut decrypted = layout.clone();
        for i in 0..2 {
            let r = order.segment(i).unwrap();
            o.open_next(&mut decrypted[r], &tag(i)).unwrap();
        }
        assert!(!o.is_done());
        assert_eq!(
            open_opened(&at.binding, decrypted.clone(), o).unwrap_err(),
            PackageError::Open
        );
        // Every segment opened, then the kept tag table altered: refused (the image would
        // not open again).
        let (good, opener) = receive(&at, &wire);
        let mut altered = good.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            open_opened(&at.binding, altered, opener.unwrap()).unwrap_err(),
            PackageError::Open
        );
        // Or the header.
        let (good2, opener) = receive(&at, &wire);
        let mut altered = good2;
        altered[20] ^= 1;
        assert!(open_opened(&at.binding, altered, opener.unwrap()).is_err());
        // And one past the last segment is refused.
        let (_, opener) = receive(&at, &wire);
        let mut opener = opener.unwrap();
        assert!(opener.open_next(&mut [], &tag(0)).is_err());
        let _ = good;
    }

    #[test]
    fn a_layout_of_another_length_is_refused() {
        let at = attempt(46);
        let wire = parts(
            &ticket(&at),
            &with_snapshot(5000),
            SendOrder::TagAfterSegment,
        )
        .0
        .concat();
        assert!(TagAfterSegment::to_layout(&wire[..wire.len() - 1]).is_err());
        let mut long = wire.clone();
        long.push(0);
        assert!(TagAfterSegment::to_layout(&long).is_err());
        assert!(TagAfterSegment::to_layout(&wire[..10]).is_err());
    }
}
