//! Lineage: valid histories verify; every kind of tampering is caught with a precise error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use sojourn_lineage::export::Item;
use sojourn_lineage::{verify_lineage, P256Signer, VerifyOptions, WriterConfig};
use sojourn_runtime::Outcome;

mod common;
use common::*;

#[test]
fn a_valid_history_verifies_and_summarises() {
    let bytes = history(1, "ttstzgt", small(), false);
    let s = verify_lineage(&bytes, &opts()).unwrap();
    assert!(s.entries >= 10, "{s:?}");
    assert_eq!(s.hosts.len(), 1);
    assert_eq!(s.platforms.iter().collect::<Vec<_>>(), ["software"]);
    assert!(
        s.outcomes["rejected"] >= 2,
        "monotonic reset and trust-gated write: {s:?}"
    );
    assert!(s.batches >= 3);
    // Software evidence never accrues trust.
    assert!(s.trust.iter().all(|(_, score, _)| *score == 0));
}

#[test]
fn software_evidence_is_refused_unless_allowed() {
    let bytes = history(1, "tt", small(), false);
    let e = verify_lineage(&bytes, &VerifyOptions::default()).unwrap_err();
    assert_eq!(e.field, "evidence", "{e}");
    assert!(
        e.reason.contains("host-key evidence does not verify"),
        "{e}"
    );
    // The object's own policy may allow it.
    let bytes = history(1, "tt", small(), true);
    verify_lineage(&bytes, &VerifyOptions::default()).unwrap();
}

#[test]
fn trust_gated_and_attested_writes() {
    // With software evidence (score 0) the gated field can never change: the runtime rejects
    // it from the lineage it holds, and the rejection is in the lineage.
    let bytes = history(1, "tgt", small(), false);
    let its = items(&bytes);
    let rejected: Vec<String> = its
        .iter()
        .filter_map(|i| match i {
            Item::Entry { bytes, .. } => {
                let e = sojourn_lineage::LineageEntry::decode(bytes).unwrap();
                e.reason
            }
            _ => None,
        })
        .collect();
    assert!(rejected.iter().any(|r| r.contains("trust")), "{rejected:?}");
    // Changing the attestation-required field carries evidence bound to that entry;
    // removing that evidence is detected.
    let bytes = history(1, "ts", small(), false);
    let its = items(&bytes);
    let entry_ev = its
        .iter()
        .position(|i| {
            matches!(
                i,
                Item::Evidence {
                    purpose: sojourn_lineage::export::EvidencePurpose::Entry,
                    ..
                }
            )
        })
        .expect("entry evidence");
    let mut cut = its.clone();
    cut.remove(entry_ev);
    let e = verify_lineage(&join(&cut), &opts()).unwrap_err();
    assert_eq!(e.field, "entry_evidence", "{e}");
}

#[test]
fn tampering_with_any_byte_is_detected() {
    let bytes = history(
        1,
        "tst",
        WriterConfig {
            batch_size: 3,
            ..small()
        },
        false,
    );
    verify_lineage(&bytes, &opts()).unwrap();
    let stride = if cfg!(debug_assertions) { 7 } else { 1 };
    for i in (0..bytes.len()).step_by(stride) {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        assert!(
            verify_lineage(&b, &opts()).is_err(),
            "flip at byte {i} of {}",
            bytes.len()
        );
    }
    for len in (0..bytes.len()).step_by(13) {
        assert!(
            verify_lineage(&bytes[..len], &opts()).is_err(),
            "truncated to {len}"
        );
    }
}

#[test]
fn dropped_reordered_duplicated_forked_and_foreign_entries_are_detected() {
    let bytes = history(
        1,
        "tttttt",
        WriterConfig {
            batch_size: 100,
            ..small()
        },
        false,
    );
    let its = items(&bytes);
    let entries: Vec<usize> = its
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, Item::Entry { .. }))
        .map(|(n, _)| n)
        .collect();
    let expect = |v: Vec<Item>, field: &str, what: &str| {
        let e = verify_lineage(&join(&v), &opts()).unwrap_err();
        assert_eq!(e.field, field, "{what}: {e}");
        e
    };
    let mut dropped = its.clone();
    dropped.remove(entries[2]);
    expect(dropped, "batch", "drop");
    let mut swapped = its.clone();
    swapped.swap(entries[2], entries[3]);
    expect(swapped, "batch", "reorder");
    // A duplicate or a fork placed as the next entry: the sequence number gives it away.
    let mut dup = its.clone();
    let (
        Item::Entry { bytes: b2, .. },
        Item::Entry {
            batch, index, path, ..
        },
    ) = (&its[entries[2]], &its[entries[3]])
    else {
        panic!()
    };
    dup[entries[3]] = Item::Entry {
        bytes: b2.clone(),
        batch: *batch,
        index: *index,
        path: path.clone(),
    };
    let e = expect(dup, "seq", "duplicate");
    assert_eq!(e.seq, Some(2));
    // Another object's entries do not belong here.
    let other = items(&history(
        2,
        "tttttt",
        WriterConfig {
            batch_size: 100,
            ..small()
        },
        false,
    ));
    let mut foreign = its.clone();
    let Item::Entry { bytes: ob, .. } = &other[entries[2]] else {
        panic!()
    };
    if let Item::Entry { bytes, .. } = &mut foreign[entries[2]] {
        *bytes = ob.clone();
    }
    expect(foreign, "object_id", "replayed entry of another object");
    // Entries after the last signature are refused.
    let mut unsigned = its.clone();
    unsigned.pop();
    expect(unsigned, "batch", "unsigned tail");
}

#[test]
fn keys_must_be_bound_by_fresh_evidence_for_that_key() {
    let bytes = history(1, "ttt", small(), false);
    let its = items(&bytes);
    let ev = its
        .iter()
        .position(|i| matches!(i, Item::Evidence { .. }))
        .unwrap();
    // Evidence presented for a different key.
    let mut other_key = its.clone();
    if let Item::Evidence { public_key, .. } = &mut other_key[ev] {
        *public_key = P256Signer::from_secret(&[9; 32])
            .map(|s| sojourn_lineage::LineageSigner::public_key(&s))
            .unwrap();
    }
    let e = verify_lineage(&join(&other_key), &opts()).unwrap_err();
    assert_eq!(e.field, "host_key_id", "{e}");
    // Evidence claimed for another point of the lineage (stale or replayed).
    let mut stale = its.clone();
    if let Item::Evidence { epoch_prev, .. } = &mut stale[ev] {
        epoch_prev[0] ^= 1;
    }
    let e = verify_lineage(&join(&stale), &opts()).unwrap_err();
    assert!(e.reason.contains("another point of the lineage"), "{e}");
    // A batch signed by a key no evidence binds.
    let mut resigned = its.clone();
    let b = resigned
        .iter()
        .position(|i| matches!(i, Item::Batch { .. }))
        .unwrap();
    if let Item::Batch { cose, .. } = &mut resigned[b] {
        let n = cose.len();
        cose[n - 5] ^= 0x55;
    }
    let e = verify_lineage(&join(&resigned), &opts()).unwrap_err();
    assert_eq!(e.field, "cose.signature", "{e}");
    // An epoch that outlives its entry budget.
    let mut cfg = small();
    cfg.epoch_max_entries = 1_000;
    let long = history(1, "tttttttt", cfg, false);
    let mut its = items(&long);
    if let Item::Header {
        epoch_max_entries, ..
    } = &mut its[0]
    {
        *epoch_max_entries = 3;
    }
    let e = verify_lineage(&join(&its), &opts()).unwrap_err();
    assert!(e.reason.contains("without fresh evidence"), "{e}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn random_histories_verify_and_any_single_mutation_fails(
            script in "[tszg]{1,10}",
            batch in 1usize..6,
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let cfg = WriterConfig { batch_size: batch, epoch_max_entries: 4, epoch_max_age_ms: 60_000 };
            let bytes = history(3, &script, cfg, false);
            prop_assert!(verify_lineage(&bytes, &opts()).is_ok());
            let mut b = bytes.clone();
            let i = flip.index(b.len());
            b[i] ^= 1 << bit;
            prop_assert!(verify_lineage(&b, &opts()).is_err(), "flip bit {} of byte {}", bit, i);
        }
    }
}

#[test]
fn outcomes_match_the_runtime() {
    let bytes = history(1, "tz", small(), false);
    let its = items(&bytes);
    let outcomes: Vec<String> = its
        .iter()
        .filter_map(|i| match i {
            Item::Entry { bytes, .. } => Some(
                sojourn_lineage::LineageEntry::decode(bytes)
                    .unwrap()
                    .outcome,
            ),
            _ => None,
        })
        .collect();
    // init, tick (count 1), message z (count back to 0: monotonic, rejected), tick.
    assert_eq!(outcomes, ["accepted", "accepted", "rejected", "accepted"]);
    let _ = Outcome::Accepted;
}

/// A host that restarts persists [`WriterState`] after each flushed batch and resumes from
/// it with a fresh key: the concatenated output is one lineage that verifies (the new key is
/// bound by new evidence at the chain head). Resuming from a stale state forks the chain,
/// and the verifier says so.
#[test]
fn a_resumed_writer_continues_the_same_lineage_and_a_stale_resume_is_detected() {
    use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
    use sojourn_lineage::{LineageWriter, WriterState};
    use sojourn_policy::parse_descriptor;
    use sojourn_runtime::{ObjectEngine, ObjectId, ResidentObject};

    let wasm = wat::parse_str(GUEST).unwrap();
    let d = parse_descriptor("ledger/object.toml", &toml(true), &wasm).unwrap();
    let engine = ObjectEngine::new().unwrap();
    let m = engine.compile(&wasm).unwrap();
    let id = ObjectId([9; 16]);
    let mut now = 1_800_000_000_000i64;
    let (mut obj, init) = ResidentObject::create(&engine, &m, d.clone(), id, now, [1; 32]).unwrap();
    let attester = || {
        Box::new(SoftwareAttester::new(
            SoftwareKey::from_seed([7; 32]).unwrap(),
        ))
    };
    let mut w = LineageWriter::new(
        id.0,
        &d,
        Box::new(P256Signer::from_secret(&[3; 32]).unwrap()),
        attester(),
        software_reference(),
        small(),
    );
    w.append(&init, now).unwrap();
    let mut out = Vec::new();
    let mut states = Vec::new();
    let mut snaps = Vec::new();
    for round in 0..3u8 {
        for _ in 0..3 {
            now += 10;
            obj.wake_with(now, [2; 32], &mut |rec, trust| {
                w.append(rec, now).unwrap();
                *trust = Some(w.trust().clone());
            });
        }
        w.flush().unwrap();
        out.extend(w.drain_output());
        let state = w.state().unwrap();
        let state = WriterState::decode(&state.encode()).unwrap();
        states.push((out.len(), state.clone()));
        snaps.push(obj.snapshot().unwrap());
        // "Restart": a new key, the same lineage.
        w = LineageWriter::resume(
            id.0,
            &d,
            Box::new(P256Signer::from_secret(&[10 + round; 32]).unwrap()),
            attester(),
            software_reference(),
            small(),
            &state,
        )
        .unwrap();
    }
    let s = verify_lineage(&out, &opts()).unwrap();
    assert_eq!(s.entries, 10);
    // A host that only has the export (a migration destination) computes the same position.
    assert_eq!(WriterState::from_export(&out).unwrap(), states[2].1);
    assert!(WriterState::from_export(&out[..out.len() - 1]).is_err());
    // The writer resumed after the last round wrote nothing: three runs, three keys.
    assert_eq!(s.hosts.len(), 3, "one key per run: {s:?}");

    // A host that resumes from the first state (a stale head, say after a disk rollback)
    // although the second round was written forks the chain: the verifier refuses it.
    let (cut, _) = &states[1];
    let (_, stale) = &states[0];
    let mut forked = out[..*cut].to_vec();
    let mut old = ResidentObject::restore(&engine, &snaps[0]).unwrap();
    let mut w = LineageWriter::resume(
        id.0,
        &d,
        Box::new(P256Signer::from_secret(&[99; 32]).unwrap()),
        attester(),
        software_reference(),
        small(),
        stale,
    )
    .unwrap();
    now += 10;
    old.wake_with(now, [2; 32], &mut |rec, _| w.append(rec, now).unwrap());
    w.flush().unwrap();
    forked.extend(w.drain_output());
    let e = verify_lineage(&forked, &opts()).unwrap_err();
    assert!(!e.to_string().is_empty());
    // Appending the stale run after the first round alone is a valid continuation.
    let mut alone = out[..states[0].0].to_vec();
    alone.extend(&forked[*cut..]);
    assert!(verify_lineage(&alone, &opts()).is_ok());
    assert!(WriterState::decode(&[0; 47]).is_err());
}

/// Migration events (the object left, arrived, or a move was refused) are entries of kind
/// `migration`: they change no state, advance the sequence, and verify like any other entry.
#[test]
fn migration_events_are_entries_that_change_nothing() {
    use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
    use sojourn_lineage::{LineageWriter, WriterState};
    use sojourn_policy::parse_descriptor;
    use sojourn_runtime::{ObjectEngine, ObjectId, ResidentObject};

    let wasm = wat::parse_str(GUEST).unwrap();
    let d = parse_descriptor("ledger/object.toml", &toml(true), &wasm).unwrap();
    let engine = ObjectEngine::new().unwrap();
    let m = engine.compile(&wasm).unwrap();
    let id = ObjectId([5; 16]);
    let now = 1_800_000_000_000i64;
    let (mut obj, init) = ResidentObject::create(&engine, &m, d.clone(), id, now, [1; 32]).unwrap();
    let attester = || {
        Box::new(SoftwareAttester::new(
            SoftwareKey::from_seed([7; 32]).unwrap(),
        ))
    };
    let mut w = LineageWriter::new(
        id.0,
        &d,
        Box::new(P256Signer::from_secret(&[3; 32]).unwrap()),
        attester(),
        software_reference(),
        small(),
    );
    w.append(&init, now).unwrap();
    obj.wake_with(now + 10, [2; 32], &mut |rec, _| {
        w.append(rec, now + 10).unwrap()
    });
    let before = obj.state_digest();
    assert!(obj.record_migration(Outcome::Accepted, now + 20).is_none());
    let refused = obj
        .record_migration(
            Outcome::MigrationRefused {
                reason: "destination measurement not in the policy".into(),
            },
            now + 20,
        )
        .unwrap();
    w.append(&refused, now + 20).unwrap();
    let out = obj
        .record_migration(
            Outcome::MigratedOut {
                detail: "to https://b.example: snp, affirming".into(),
            },
            now + 30,
        )
        .unwrap();
    w.append(&out, now + 30).unwrap();
    assert_eq!(obj.state_digest(), before);
    assert_eq!(refused.seq + 1, out.seq);
    w.flush().unwrap();
    let bytes = w.drain_output();
    let s = verify_lineage(&bytes, &opts()).unwrap();
    assert_eq!(s.outcomes["migration-refused"], 1);
    assert_eq!(s.outcomes["migrated-out"], 1);
    assert_eq!(s.final_state, hex::encode(before.0));
    assert_eq!(
        WriterState::from_export(&bytes).unwrap().next_seq,
        obj.seq()
    );
}
