//! The store against a simple in-memory model: random batches (valid and invalid ops),
//! random reopens, then a full comparison.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use sojourn_store::{
    CommitBatch, HeadRecord, ObjectImage, ObjectKey, Op, Store, StoreError, MEMORY_SEGMENT,
};

use crate::common::*;

#[derive(Clone, Debug, Default, PartialEq)]
struct MObject {
    image: Option<ObjectImage>,
    head: Option<HeadRecord>,
    memory: Vec<u8>,
    chunks: BTreeMap<u32, Vec<u8>>,
    lineage: Vec<Vec<u8>>,
    pending: BTreeMap<u64, Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Fail {
    Exists,
    Unknown,
    Seq,
    Gap,
    TooLarge,
}

fn kind(e: &StoreError) -> Fail {
    match e {
        StoreError::Exists { .. } => Fail::Exists,
        StoreError::UnknownObject { .. } => Fail::Unknown,
        StoreError::SeqNotIncreasing { .. } => Fail::Seq,
        StoreError::LineageGap { .. } => Fail::Gap,
        StoreError::ChunkTooLarge { .. } => Fail::TooLarge,
        other => panic!("unexpected error: {other}"),
    }
}

type Model = HashMap<ObjectKey, MObject>;

fn apply(model: &mut Model, op: &Op) -> Result<(), Fail> {
    let id = *op.object();
    let known = model.get(&id).is_some_and(|o| o.image.is_some());
    if !matches!(op, Op::PutImage { .. }) && !known {
        return Err(Fail::Unknown);
    }
    let o = model.entry(id).or_default();
    match op {
        Op::PutImage { image, .. } => {
            if o.image.is_some() {
                return Err(Fail::Exists);
            }
            o.image = Some(image.clone());
        }
        Op::PutHead { head, .. } => {
            if o.head.as_ref().is_some_and(|h| head.seq <= h.seq) {
                return Err(Fail::Seq);
            }
            o.head = Some(head.clone());
        }
        Op::PutChunks { chunks, .. } => {
            for (i, b) in chunks {
                if b.len() > 4096 {
                    return Err(Fail::TooLarge);
                }
                o.chunks.insert(*i, b.clone());
            }
        }
        Op::PutMemory { image, .. } => {
            o.memory = image.to_vec();
            o.chunks.clear();
        }
        // Staged images need a store to stage them: `memfile.rs` tests them.
        Op::PutStagedMemory { .. } => panic!("the model does not generate staged images"),
        Op::AppendLineage { segment, bytes, .. } => {
            if *segment != o.lineage.len() as u64 {
                return Err(Fail::Gap);
            }
            o.lineage.push(bytes.clone());
        }
        Op::PutMessage { arrival, bytes, .. } => {
            o.pending.insert(*arrival, bytes.clone());
        }
        Op::DeleteMessagesThrough { arrival, .. } => {
            o.pending.retain(|a, _| a > arrival);
        }
    }
    Ok(())
}

fn apply_batch(model: &mut Model, ops: &[Op]) -> Result<(), Fail> {
    let mut next = model.clone();
    for op in ops {
        apply(&mut next, op)?;
    }
    *model = next;
    Ok(())
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn op() -> impl Strategy<Value = Op> {
    let obj = (0u8..3).prop_map(id);
    let len = prop_oneof![Just(0usize), 1usize..64, Just(4096usize), Just(4097usize)];
    prop_oneof![
        (obj.clone(), any::<u8>()).prop_map(|(id, s)| Op::PutImage {
            id,
            image: ObjectImage {
                name: format!("obj-{s}"),
                descriptor: bytes(s, 7),
                module: bytes(s, 20),
            },
        }),
        (obj.clone(), 0u64..12, 0usize..400, any::<u8>()).prop_map(|(id, seq, n, s)| {
            Op::PutHead {
                id,
                head: HeadRecord {
                    seq,
                    bytes: bytes(s, n),
                },
            }
        }),
        (
            obj.clone(),
            proptest::collection::vec((0u32..5, len, any::<u8>()), 0..3)
        )
            .prop_map(|(id, cs)| Op::PutChunks {
                id,
                chunks: cs.into_iter().map(|(i, n, s)| (i, bytes(s, n))).collect(),
            }),
        // Memory images: empty, within one segment, exactly one, and across segments.
        (
            obj.clone(),
            prop_oneof![
                Just(0usize),
                1usize..9000,
                Just(MEMORY_SEGMENT),
                Just(MEMORY_SEGMENT + 1),
                Just(2 * MEMORY_SEGMENT + 4096),
            ],
            any::<u8>()
        )
            .prop_map(|(id, n, s)| Op::PutMemory {
                id,
                image: std::sync::Arc::new(bytes(s, n)),
            }),
        (obj.clone(), 0u64..4, 0usize..100, any::<u8>()).prop_map(|(id, segment, n, s)| {
            Op::AppendLineage {
                id,
                segment,
                bytes: bytes(s, n),
            }
        }),
        (obj.clone(), 0u64..8, 0usize..50, any::<u8>()).prop_map(|(id, arrival, n, s)| {
            Op::PutMessage {
                id,
                arrival,
                bytes: bytes(s, n),
            }
        }),
        (obj, 0u64..8).prop_map(|(id, arrival)| Op::DeleteMessagesThrough { id, arrival }),
    ]
}

fn compare(store: &Store, model: &Model) {
    let mut expected: Vec<_> = model.iter().filter(|(_, o)| o.image.is_some()).collect();
    expected.sort_by_key(|(id, _)| **id);
    let all = store.load_all().unwrap();
    assert_eq!(all.len(), expected.len());
    for (got, (id, m)) in all.iter().zip(expected) {
        assert_eq!(&got.id, id);
        assert_eq!(Some(&got.image), m.image.as_ref());
        assert_eq!(got.head.as_ref(), m.head.as_ref());
        assert_eq!(got.memory, m.memory);
        assert_eq!(&got.chunks, &m.chunks);
        assert_eq!(got.lineage_segments, m.lineage.len() as u64);
        let pending: Vec<_> = m.pending.iter().map(|(a, b)| (*a, b.clone())).collect();
        assert_eq!(got.pending, pending);
        assert_eq!(store.lineage(id).unwrap(), m.lineage.concat());
        assert_eq!(store.load(id).unwrap().as_ref(), Some(got));
    }
}

fn run(dir: &Path, batches: &[(Vec<Op>, bool)]) {
    let mut model = Model::new();
    let mut store = open(dir);
    let mut counter = 0;
    for (ops, reopen) in batches {
        let want = apply_batch(&mut model, ops);
        let got = store.commit(&CommitBatch { ops: ops.clone() });
        match (&want, &got) {
            (Ok(()), Ok(r)) => {
                if !ops.is_empty() {
                    counter += 1;
                }
                assert_eq!(r.commit_counter, counter);
            }
            (Err(w), Err(g)) => assert_eq!(w, &kind(g), "{g}"),
            _ => panic!("model {want:?}, store {got:?}, ops {ops:?}"),
        }
        if *reopen {
            drop(store);
            store = open(dir);
            assert_eq!(store.stats().commit_counter, counter);
        }
    }
    compare(&store, &model);
    drop(store);
    let store = open(dir);
    compare(&store, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(
        batches in proptest::collection::vec(
            (proptest::collection::vec(op(), 0..6), proptest::bool::weighted(0.2)),
            1..10,
        )
    ) {
        // Give the objects images often enough that the other ops mostly apply.
        let mut all = vec![(
            (0u8..2).map(|n| Op::PutImage { id: id(n), image: image("seed") }).collect(),
            false,
        )];
        all.extend(batches);
        let dir = tempdir();
        run(dir.path(), &all);
    }
}
