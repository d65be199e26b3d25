//! The fast integrity check (`verify_chain_and_signatures`): valid exports pass; any change to
//! the signed history, its framing or its signatures is caught; no input makes it panic. And
//! the in-place entry parser agrees with `LineageEntry::decode`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use sojourn_lineage::export::Item;
use sojourn_lineage::fast::EntryRef;
use sojourn_lineage::{
    verify_chain_and_signatures, verify_chain_and_signatures_parallel, verify_lineage,
    LineageEntry, P256Signer, VerifyOptions, WriterConfig,
};

mod common;
use common::*;

/// Byte offsets where each item starts, and the items' types.
fn item_spans(bytes: &[u8]) -> Vec<(std::ops::Range<usize>, Item)> {
    let mut input = bytes;
    let mut out = Vec::new();
    loop {
        let start = bytes.len() - input.len();
        let Some(i) = Item::read(&mut input).unwrap() else {
            break;
        };
        out.push((start..bytes.len() - input.len(), i));
    }
    out
}

#[test]
fn valid_exports_pass_and_agree_with_the_full_check() {
    for (script, cfg) in [
        ("ttstzgt", small()),
        ("t", small()),
        (
            "tttttttttt",
            WriterConfig {
                batch_size: 1,
                ..small()
            },
        ),
        (
            "tsztgstt",
            WriterConfig {
                batch_size: 7,
                epoch_max_entries: 3,
                epoch_max_age_ms: 60_000,
            },
        ),
    ] {
        let bytes = history(1, script, cfg, false);
        let full = verify_lineage(&bytes, &opts()).unwrap();
        let fast = verify_chain_and_signatures(&bytes).unwrap();
        assert_eq!(fast.entries, full.entries, "{script}");
        assert_eq!(fast.batches, full.batches, "{script}");
        assert_eq!(fast.hosts, full.hosts, "{script}");
        assert_eq!(fast.object_id, full.object_id, "{script}");
        assert_eq!(fast.descriptor_digest, full.descriptor_digest, "{script}");
        // The head is the digest of the last entry.
        let last = items(&bytes)
            .into_iter()
            .rev()
            .find_map(|i| match i {
                Item::Entry { bytes, .. } => Some(bytes),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            fast.head,
            hex::encode(sojourn_policy::canonical::sha256(&last))
        );
    }
    // It does not appraise evidence: software evidence the full check refuses (the object's
    // policy does not allow it and no reference values are given) passes the integrity check.
    let bytes = history(1, "tt", small(), false);
    assert!(verify_lineage(&bytes, &VerifyOptions::default()).is_err());
    verify_chain_and_signatures(&bytes).unwrap();
}

/// Every single-byte change (xor 0x04, as in tests/lineage.rs) anywhere in the export is
/// detected, evidence items included: the fast check recomputes each evidence id, binds the
/// public key to the entries' host key id and checks the epoch rules. Stride 1 in release,
/// 5 in debug builds (where every check runs ES256 verifications unoptimised).
/// The header's epoch limits are covered too: every batch signature includes them.
#[test]
fn tampering_with_any_byte_is_detected() {
    let bytes = history(
        1,
        "tstgt",
        WriterConfig {
            batch_size: 3,
            ..small()
        },
        false,
    );
    verify_chain_and_signatures(&bytes).unwrap();
    let header = &item_spans(&bytes)[0].0;
    let stride = if cfg!(debug_assertions) { 5 } else { 1 };
    let mut missed = Vec::new();
    for i in (0..bytes.len()).step_by(stride) {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        if verify_chain_and_signatures(&b).is_ok() {
            missed.push(i);
        }
    }
    // Every flip is caught, header included (its epoch limits are signed with each batch).
    let _ = header;
    assert!(
        missed.is_empty(),
        "flips missed at bytes {missed:?} of {}",
        bytes.len()
    );
    // Truncations. A prefix that ends right after a batch signature is itself a complete,
    // signed lineage (the format has no end marker): both checks accept it, with fewer
    // entries and another head; whoever expects more must compare the head or the count.
    let full = verify_chain_and_signatures(&bytes).unwrap();
    let batch_ends: Vec<usize> = item_spans(&bytes)
        .into_iter()
        .filter(|(_, i)| matches!(i, Item::Batch { .. }))
        .map(|(r, _)| r.end)
        .collect();
    for len in 0..bytes.len() {
        match verify_chain_and_signatures(&bytes[..len]) {
            Err(_) => {}
            Ok(s) => {
                assert!(batch_ends.contains(&len), "truncated to {len}");
                assert!(s.entries < full.entries && s.head != full.head);
                assert!(verify_lineage(&bytes[..len], &opts()).is_ok());
            }
        }
    }
    // Anything appended.
    let mut b = bytes.clone();
    b.push(0);
    assert!(verify_chain_and_signatures(&b).is_err());
}

#[test]
fn header_epoch_limits_are_covered_by_every_batch_signature() {
    // The header's epoch limits are part of every batch payload: raising them after the fact
    // breaks the signatures, and both checks say so.
    let bytes = history(1, "ttt", small(), false);
    let mut its = items(&bytes);
    if let Item::Header {
        epoch_max_entries,
        epoch_max_age_ms,
        ..
    } = &mut its[0]
    {
        *epoch_max_entries += 1000;
        *epoch_max_age_ms += 1000;
    }
    let b = join(&its);
    assert_eq!(
        verify_chain_and_signatures(&b).unwrap_err().field,
        "cose.payload"
    );
    assert_eq!(
        verify_lineage(&b, &opts()).unwrap_err().field,
        "cose.payload"
    );
}

#[test]
fn dropped_reordered_duplicated_and_foreign_entries_are_detected() {
    let cfg = WriterConfig {
        batch_size: 100,
        ..small()
    };
    let bytes = history(1, "tttttt", cfg, false);
    let its = items(&bytes);
    let entries: Vec<usize> = its
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, Item::Entry { .. }))
        .map(|(n, _)| n)
        .collect();
    let expect = |v: &[Item], field: &str, what: &str| {
        let e = verify_chain_and_signatures(&join(v)).unwrap_err();
        assert_eq!(e.field, field, "{what}: {e}");
        // The full check agrees on the field.
        let full = verify_lineage(&join(v), &opts()).unwrap_err();
        assert_eq!(full.field, field, "{what} (full): {full}");
        e
    };
    let mut dropped = its.clone();
    dropped.remove(entries[2]);
    expect(&dropped, "batch", "drop");
    let mut swapped = its.clone();
    swapped.swap(entries[2], entries[3]);
    expect(&swapped, "batch", "reorder");
    // Reordered with the placement fixed up: the sequence gives it away.
    let mut renumbered = swapped.clone();
    for (k, at) in entries.iter().enumerate() {
        if let Item::Entry { index, .. } = &mut renumbered[*at] {
            *index = k as u64;
        }
    }
    let e = expect(&renumbered, "seq", "reorder, renumbered");
    assert_eq!(e.seq, Some(3));
    // A duplicate placed as the next entry.
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
    let e = expect(&dup, "seq", "duplicate");
    assert_eq!(e.seq, Some(2));
    // A duplicated item (same placement twice).
    let mut twice = its.clone();
    twice.insert(entries[2], its[entries[2]].clone());
    expect(&twice, "batch", "duplicated item");
    // Another object's entry.
    let other = items(&history(2, "tttttt", cfg, false));
    let mut foreign = its.clone();
    let Item::Entry { bytes: ob, .. } = &other[entries[2]] else {
        panic!()
    };
    if let Item::Entry { bytes, .. } = &mut foreign[entries[2]] {
        *bytes = ob.clone();
    }
    expect(&foreign, "object_id", "entry of another object");
    // Another object's whole export under this header.
    let mut swapped_header = other.clone();
    swapped_header[0] = its[0].clone();
    expect(&swapped_header, "object_id", "another object's lineage");
    // Entries after the last signature.
    let mut unsigned = its.clone();
    unsigned.pop();
    expect(&unsigned, "batch", "unsigned tail");
    // A batch signature moved before its entries' end.
    let mut early = its.clone();
    let sig = early.pop().unwrap();
    early.insert(entries[4], sig);
    expect(&early, "inclusion_proof", "early signature");
}

#[test]
fn tampered_signatures_keys_and_proofs_are_detected() {
    let bytes = history(1, "ttttt", small(), false);
    let its = items(&bytes);
    let b = its
        .iter()
        .position(|i| matches!(i, Item::Batch { .. }))
        .unwrap();
    let expect = |v: &[Item], field: &str, what: &str| {
        let e = verify_chain_and_signatures(&join(v)).unwrap_err();
        assert_eq!(e.field, field, "{what}: {e}");
        for threads in [2, 3, 8] {
            assert_eq!(
                verify_chain_and_signatures_parallel(&join(v), threads),
                Err(e.clone()),
                "{what}, {threads} threads"
            );
        }
    };
    // Signature bytes.
    let mut resigned = its.clone();
    if let Item::Batch { cose, .. } = &mut resigned[b] {
        let n = cose.len();
        cose[n - 5] ^= 0x55;
    }
    expect(&resigned, "cose.signature", "signature bytes");
    // Every batch signature broken: the first one is reported, however many threads.
    let mut all = its.clone();
    for i in &mut all {
        if let Item::Batch { cose, .. } = i {
            let n = cose.len();
            cose[n - 5] ^= 0x55;
        }
    }
    expect(&all, "cose.signature", "all signatures");
    assert_eq!(
        verify_chain_and_signatures(&join(&all)).unwrap_err().item,
        b
    );
    // A broken signature, then a broken chain: the signature comes first.
    let mut both = resigned.clone();
    let last_entry = both
        .iter()
        .rposition(|i| matches!(i, Item::Entry { .. }))
        .unwrap();
    both.remove(last_entry);
    expect(&both, "cose.signature", "signature before chain");
    // A broken chain before a broken signature: the chain comes first.
    let mut chain_first = its.clone();
    let e1 = chain_first
        .iter()
        .position(|i| matches!(i, Item::Entry { .. }))
        .unwrap();
    chain_first.remove(e1 + 1);
    for i in chain_first.iter_mut().skip(e1 + 2) {
        if let Item::Batch { cose, .. } = i {
            let n = cose.len();
            cose[n - 5] ^= 0x55;
        }
    }
    expect(&chain_first, "batch", "chain before signature");
    // A valid signature by another key over the same payload.
    let mut other_key = its.clone();
    let Item::Batch { cose, batch } = &its[b] else {
        panic!()
    };
    let sign1 =
        <coset::CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(cose).unwrap();
    let forger = P256Signer::from_secret(&[9; 32]).unwrap();
    let forged = coset::CoseSign1Builder::new()
        .protected(sign1.protected.header.clone())
        .payload(sign1.payload.clone().unwrap())
        .create_signature(&[], |m| sojourn_lineage::LineageSigner::sign(&forger, m))
        .build();
    other_key[b] = Item::Batch {
        batch: *batch,
        cose: coset::TaggedCborSerializable::to_tagged_vec(forged).unwrap(),
    };
    expect(&other_key, "cose.signature", "signed by another key");
    // The evidence claims another key (the forger's): the entries' host key id gives it away.
    let ev = its
        .iter()
        .position(|i| matches!(i, Item::Evidence { .. }))
        .unwrap();
    let mut swapped_key = other_key.clone();
    if let Item::Evidence { public_key, .. } = &mut swapped_key[ev] {
        *public_key = sojourn_lineage::LineageSigner::public_key(&forger);
    }
    expect(&swapped_key, "host_key_id", "evidence for another key");
    // Evidence bytes that do not match their id.
    let mut ev_bytes = its.clone();
    if let Item::Evidence { evidence, .. } = &mut ev_bytes[ev] {
        evidence[10] ^= 1;
    }
    expect(&ev_bytes, "evidence.id", "evidence bytes");
    // An audit path element.
    let e0 = its
        .iter()
        .position(|i| matches!(i, Item::Entry { .. }))
        .unwrap();
    let mut proof = its.clone();
    if let Item::Entry { path, .. } = &mut proof[e0] {
        path[0][0] ^= 1;
    }
    let e = verify_chain_and_signatures(&join(&proof)).unwrap_err();
    assert_eq!(e.field, "inclusion_proof", "{e}");
    assert_eq!(e.seq, Some(0));
    // An extra audit path element.
    let mut longer = its.clone();
    if let Item::Entry { path, .. } = &mut longer[e0] {
        path.push([0; 32]);
    }
    expect(&longer, "inclusion_proof", "longer path");
}

#[test]
fn non_canonical_framing_is_refused() {
    let bytes = history(1, "tt", small(), false);
    let spans = item_spans(&bytes);
    let Some((
        range,
        Item::Entry {
            bytes: eb, batch, ..
        },
    )) = spans.iter().find(|(_, i)| matches!(i, Item::Entry { .. }))
    else {
        panic!()
    };
    let entry = &bytes[range.clone()];
    // The batch number (a small uint right after the entry byte string) in two bytes.
    let mut c = entry.to_vec();
    let hdr = if eb.len() < 256 { 2 } else { 3 };
    let at = 7 + hdr + eb.len();
    assert_eq!(c[at], *batch as u8);
    c.splice(at..at + 1, [0x18, *batch as u8]);
    let mut b = bytes[..range.start].to_vec();
    b.extend_from_slice(&c);
    b.extend_from_slice(&bytes[range.end..]);
    let e = verify_chain_and_signatures(&b).unwrap_err();
    assert!(e.reason.contains("shortest form"), "{e}");
    assert!(verify_lineage(&b, &opts()).is_err());
    // An indefinite-length audit path.
    let mut c = entry.to_vec();
    let path_at = at + 2;
    let n = (c[path_at] & 0x1f) as usize;
    c[path_at] = 0x9f;
    c.insert(path_at + 1 + n * 34, 0xff);
    let mut b = bytes[..range.start].to_vec();
    b.extend_from_slice(&c);
    b.extend_from_slice(&bytes[range.end..]);
    assert!(verify_chain_and_signatures(&b).is_err());
    assert!(verify_lineage(&b, &opts()).is_err());
}

#[test]
fn the_entry_parser_agrees_with_the_decoder() {
    let bytes = history(1, "tstzgt", small(), false);
    for i in items(&bytes) {
        if let Item::Entry { bytes, .. } = i {
            let parsed = EntryRef::parse(&bytes).unwrap();
            assert_eq!(parsed.to_entry(), LineageEntry::decode(&bytes).unwrap());
            assert_eq!(parsed.to_entry().encode().unwrap(), bytes);
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn sample() -> &'static (Vec<u8>, Vec<Vec<u8>>) {
        static S: OnceLock<(Vec<u8>, Vec<Vec<u8>>)> = OnceLock::new();
        S.get_or_init(|| {
            let bytes = history(
                4,
                "tstzgt",
                WriterConfig {
                    batch_size: 3,
                    ..small()
                },
                false,
            );
            let entries = items(&bytes)
                .into_iter()
                .filter_map(|i| match i {
                    Item::Entry { bytes, .. } => Some(bytes),
                    _ => None,
                })
                .collect();
            (bytes, entries)
        })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(prop::sample::Index, u8),
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, Vec<u8>),
        Delete(prop::sample::Index, usize),
        Truncate(prop::sample::Index),
        Duplicate(prop::sample::Index, usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..12)
            )
                .prop_map(|(i, v)| Mutation::Insert(i, v)),
            (any::<prop::sample::Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
            any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            (any::<prop::sample::Index>(), 1usize..400)
                .prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        ]
    }

    fn apply(b: &mut Vec<u8>, m: &Mutation) {
        if b.is_empty() {
            return;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            Mutation::Set(i, x) => {
                let i = i.index(b.len());
                b[i] = *x;
            }
            Mutation::Insert(i, v) => {
                let i = i.index(b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i.index(b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate(i) => {
                let i = i.index(b.len());
                b.truncate(i);
            }
            Mutation::Duplicate(i, n) => {
                let i = i.index(b.len());
                let end = (i + n).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = verify_chain_and_signatures(&bytes);
            // Behind a valid header too (so the item loop sees them).
            let (valid, _) = sample();
            let header_len = item_spans(valid)[0].0.end;
            let mut b = valid[..header_len].to_vec();
            b.extend_from_slice(&bytes);
            prop_assert!(verify_chain_and_signatures(&b).is_err());
            // Entry-shaped garbage.
            let mut e = vec![0x85, 0x65, b'e', b'n', b't', b'r', b'y'];
            e.extend_from_slice(&bytes);
            let _ = EntryRef::parse(&bytes);
            b.truncate(header_len);
            b.extend_from_slice(&e);
            prop_assert!(verify_chain_and_signatures(&b).is_err());
        }

        #[test]
        fn mutated_exports_never_panic_and_are_refused(
            ms in prop::collection::vec(mutation(), 1..4)
        ) {
            let (valid, _) = sample();
            let mut b = valid.clone();
            for m in &ms {
                apply(&mut b, m);
            }
            let r = verify_chain_and_signatures(&b);
            // The parallel check reaches exactly the same verdict.
            prop_assert_eq!(&verify_chain_and_signatures_parallel(&b, 3), &r);
            // A mutation may cancel itself out; otherwise it is caught, unless it only raised
            // the header's unsigned epoch limits or cut the export right after a batch.
            if b != *valid && r.is_ok() {
                let header_len = item_spans(valid)[0].0.end;
                prop_assert!(
                    b.ends_with(&valid[header_len..]) || valid.starts_with(&b),
                    "{:?}",
                    ms
                );
            }
        }

        #[test]
        fn mutated_entries_parse_only_as_the_decoder_decodes(
            which in any::<prop::sample::Index>(),
            ms in prop::collection::vec(mutation(), 1..3)
        ) {
            let (_, entries) = sample();
            let mut e = which.get(entries).clone();
            for m in &ms {
                apply(&mut e, m);
            }
            let decoded = LineageEntry::decode(&e);
            match EntryRef::parse(&e) {
                Ok(parsed) => {
                    // Only the mutation map's canonical form is left to its decoder.
                    match sojourn_policy::canonical::decode(parsed.mutation) {
                        Ok(ciborium::Value::Map(_)) => {
                            prop_assert_eq!(decoded.map_err(|e| e.to_string()), Ok(parsed.to_entry()));
                        }
                        _ => prop_assert!(decoded.is_err()),
                    }
                }
                Err(_) => prop_assert!(decoded.is_err(), "the decoder accepts what the parser refuses"),
            }
        }
    }
}
