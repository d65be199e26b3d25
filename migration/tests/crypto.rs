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

    #[test]
    fn sealed_packages_open_at_the_appraised_destination() {
        let at = attempt(1);
        let t = ticket(&at);
        let sealed = seal(&t, &bundle()).unwrap();
        assert_eq!(sealed.transfer, at.transfer);
        assert_eq!(sealed.enc.len(), 32);
        let wire = sealed.to_bytes();
        let back = SealedObject::from_bytes(&wire).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(open(&at.key, &at.binding, &back).unwrap(), bundle());
        // Each seal is fresh.
        let again = seal(&t, &bundle()).unwrap();
        assert_ne!(again.enc, sealed.enc);
        assert_ne!(again.ciphertext, sealed.ciphertext);
        // The key's Debug hides the private half.
        let dbg = format!("{:?}", at.key);
        assert!(dbg.contains("<redacted>") && dbg.contains(&hex::encode(at.key.public_bytes())));
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
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let at = attempt(2);
        let sealed = seal(&ticket(&at), &bundle()).unwrap();
        let wire = sealed.to_bytes();
        for i in 0..wire.len() {
            for bit in [0x01u8, 0x80] {
                let mut x = wire.clone();
                x[i] ^= bit;
                let r = SealedObject::from_bytes(&x).and_then(|s| open(&at.key, &at.binding, &s));
                assert!(r.is_err(), "flip at byte {i} (bit {bit:#x}) went unnoticed");
            }
            assert!(SealedObject::from_bytes(&wire[..i]).is_err());
        }
        let mut long = wire.clone();
        long.push(0);
        assert!(SealedObject::from_bytes(&long).is_err());
        // Flips in the ciphertext and in enc are authentication failures.
        let mut s = sealed.clone();
        s.ciphertext[0] ^= 1;
        assert_eq!(open(&at.key, &at.binding, &s), Err(PackageError::Open));
        let mut s = sealed.clone();
        s.enc[5] ^= 1;
        assert_eq!(open(&at.key, &at.binding, &s), Err(PackageError::Open));
    }

    #[test]
    fn a_package_opens_only_for_its_key_and_binding() {
        let at = attempt(3);
        let sealed = seal(&ticket(&at), &bundle()).unwrap();
        // Another destination's key, with its own binding (everything else equal).
        let other = DestinationKey::generate().unwrap();
        let mut b = at.binding.clone();
        b.hpke_public_key = other.public_bytes();
        assert_eq!(open(&other, &b, &sealed), Err(PackageError::Open));
        // Another key with this binding: caught before decryption.
        assert_eq!(
            open(&other, &at.binding, &sealed),
            Err(PackageError::WrongKey)
        );
        // This key, but the binding of another transfer, challenge, channel or object.
        let mut b = at.binding.clone();
        b.transfer = TransferId([0xee; 16]);
        assert_eq!(open(&at.key, &b, &sealed), Err(PackageError::WrongTransfer));
        let mut s = sealed.clone();
        s.transfer = b.transfer;
        assert_eq!(open(&at.key, &b, &s), Err(PackageError::Open));
        let edits: Vec<fn(&mut OfferBinding)> = vec![
            |b| b.challenge = Challenge([0xee; 32]),
            |b| b.channel = [0xee; 32],
            |b| b.object_id = [0xee; 16],
        ];
        for edit in edits {
            let mut b = at.binding.clone();
            edit(&mut b);
            assert_eq!(open(&at.key, &b, &sealed), Err(PackageError::Open), "{b:?}");
        }
        // The runtime identity is not in the AAD (the ticket already checked it).
        let mut b = at.binding.clone();
        b.runtime.version = "9.0.0".into();
        assert!(open(&at.key, &b, &sealed).is_ok());
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
    }

    #[test]
    fn bundle_encoding_is_canonical_and_strict() {
        let b = bundle();
        let bytes = b.to_bytes();
        let value = sojourn_policy::canonical::decode(&bytes).unwrap();
        assert_eq!(sojourn_policy::canonical::encode(&value).unwrap(), bytes);
        assert_eq!(ObjectBundle::from_bytes(&bytes).unwrap(), b);
        for i in 0..bytes.len() {
            assert!(ObjectBundle::from_bytes(&bytes[..i]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(ObjectBundle::from_bytes(&long).is_err());
        assert!(!format!("{b:?}").contains("snapshot bytes"));
    }

    /// 64 MiB through seal and open in optimised builds (`cargo test --release`) or with
    /// SOJOURN_MIGRATION_BIG=1; 1 MiB otherwise, since unoptimised ChaCha20-Poly1305 runs at
    /// about 2 MB/s.
    #[test]
    fn large_bundles_round_trip() {
        let big = std::env::var("SOJOURN_MIGRATION_BIG").is_ok_and(|v| v == "1");
        let mib: usize = if big || !cfg!(debug_assertions) {
            64
        } else {
            1
        };
        let at = attempt(5);
        let mut big = bundle();
        big.snapshot = (0..mib << 20).map(|i| (i * 31 % 251) as u8).collect();
        let t0 = std::time::Instant::now();
        let sealed = seal(&ticket(&at), &big).unwrap();
        let wire = sealed.to_bytes();
        let opened = open(
            &at.key,
            &at.binding,
            &SealedObject::from_bytes(&wire).unwrap(),
        )
        .unwrap();
        assert!(opened == big, "{mib} MiB bundle did not round-trip");
        eprintln!(
            "{mib} MiB seal + encode + decode + open: {:?}",
            t0.elapsed()
        );
    }
}
