//! Round trips, batch atomicity and the per-op rules.

use std::collections::BTreeMap;

use crate::common::*;
use sojourn_store::raw;
use sojourn_store::{
    CommitBatch, HeadRecord, Op, Store, StoreError, StoredObject, FORMAT_VERSION, MEMORY_SEGMENT,
};

#[test]
fn round_trip_of_all_record_kinds_across_reopen() {
    let dir = tempdir();
    populated(dir.path());
    {
        let s = open(dir.path());
        assert_eq!(s.stats().commit_counter, 2);
        commit(
            &s,
            vec![
                Op::PutHead {
                    id: id(1),
                    head: head(2, 333),
                },
                Op::PutChunks {
                    id: id(1),
                    chunks: vec![(1, vec![9; 4096]), (7, Vec::new())],
                },
                Op::AppendLineage {
                    id: id(1),
                    segment: 2,
                    bytes: b"third".to_vec(),
                },
                Op::PutMessage {
                    id: id(1),
                    arrival: 3,
                    bytes: b"m3".to_vec(),
                },
                Op::DeleteMessagesThrough {
                    id: id(1),
                    arrival: 1,
                },
            ],
        );
        let st = s.stats();
        assert_eq!((st.commits, st.commit_counter), (1, 3));
        assert_eq!(st.records_written, 5);
        assert!(st.bytes_written > 4096 + 333);
    }
    let s = open(dir.path());
    assert_eq!(s.stats().commit_counter, 3);
    let a = s.load(&id(1)).unwrap().unwrap();
    let expected = StoredObject {
        id: id(1),
        image: image("a"),
        head: Some(head(2, 333)),
        memory: (0..MEMORY_SEGMENT + 4096)
            .map(|i| (i % 251) as u8)
            .collect(),
        chunks: BTreeMap::from([(0, vec![1; 4096]), (1, vec![9; 4096]), (7, Vec::new())]),
        lineage_segments: 3,
        pending: vec![(2, b"m2".to_vec()), (3, b"m3".to_vec())],
    };
    assert_eq!(a, expected);
    let mut lineage = vec![1u8; 600];
    lineage.extend(vec![2u8; 600]);
    lineage.extend(b"third");
    assert_eq!(s.lineage(&id(1)).unwrap(), lineage);
    // B is untouched.
    let b = s.load(&id(2)).unwrap().unwrap();
    assert_eq!(b.head, Some(head(1, 300)));
    assert_eq!(b.pending.len(), 2);
    let all = s.load_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], expected);
    assert_eq!(all[1], b);
    assert_eq!(s.load(&id(3)).unwrap(), None);
    assert!(matches!(
        s.lineage(&id(3)),
        Err(StoreError::UnknownObject { .. })
    ));
}

#[test]
fn a_memory_image_replaces_the_chunks_and_older_images() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    // A: two segments and chunks 0 and 1 over them. A shorter image replaces all of that.
    let small: Vec<u8> = (0..10_000).map(|i| (i % 7) as u8).collect();
    commit(
        &s,
        vec![
            Op::PutMemory {
                id: id(1),
                image: std::sync::Arc::new(small.clone()),
            },
            Op::PutChunks {
                id: id(1),
                chunks: vec![(2, vec![5; 4096])],
            },
        ],
    );
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!(a.memory, small);
    assert_eq!(a.chunks, BTreeMap::from([(2, vec![5; 4096])]));
    // B: chunks only, then an image of three segments; the chunks go.
    let big: Vec<u8> = (0..3 * MEMORY_SEGMENT).map(|i| (i % 13) as u8).collect();
    commit(
        &s,
        vec![Op::PutMemory {
            id: id(2),
            image: std::sync::Arc::new(big.clone()),
        }],
    );
    drop(s);
    // Everything verifies at open (root, segment order) and reads back.
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!((a.memory, a.chunks.len()), (small, 1));
    let b = s.load(&id(2)).unwrap().unwrap();
    assert_eq!(b.memory, big);
    assert!(b.chunks.is_empty());
    // An image for an unknown object is refused like any other op.
    assert!(matches!(
        s.commit(&CommitBatch {
            ops: vec![Op::PutMemory {
                id: id(9),
                image: std::sync::Arc::new(vec![1; 10]),
            }],
        }),
        Err(StoreError::UnknownObject { .. })
    ));
}

/// `tests/vectors/v1`: a store written by the format-1 build (commit 3778380, the last
/// before memory images), key `[1; 32]`, object `a0..01` with a head, chunks 0 and 3,
/// one lineage segment and one message. This build reads it, and its first commit makes
/// it a format-2 store that still holds everything.
#[test]
fn a_version_1_store_is_read_and_upgraded_at_its_next_commit() {
    let dir = tempdir();
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1");
    for f in [raw::STORE_FILE, raw::HWM_FILE] {
        std::fs::copy(vectors.join(f), dir.path().join(f)).unwrap();
    }
    let version = |dir: &std::path::Path| {
        let meta = raw_get(dir, raw::META, raw::META_KEY).unwrap();
        u32::from_be_bytes(meta[..4].try_into().unwrap())
    };
    assert_eq!(version(dir.path()), 1);
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    assert!(a.memory.is_empty());
    assert_eq!(
        a.chunks,
        BTreeMap::from([(0, vec![0x11; 4096]), (3, vec![0x33; 4096])])
    );
    assert_eq!(a.head.as_ref().map(|h| h.seq), Some(1));
    assert_eq!(s.lineage(&id(1)).unwrap(), b"lineage segment zero");
    commit(
        &s,
        vec![Op::PutHead {
            id: id(1),
            head: head(2, 10),
        }],
    );
    drop(s);
    assert_eq!(version(dir.path()), FORMAT_VERSION);
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!(a.chunks.len(), 2);
    assert_eq!(a.pending, vec![(1, b"m1".to_vec())]);
    commit(
        &s,
        vec![Op::PutMemory {
            id: id(1),
            image: std::sync::Arc::new(vec![4; 8192]),
        }],
    );
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!((a.memory, a.chunks.len()), (vec![4; 8192], 0));
}

/// `tests/vectors/v2`: a store written by the format-2 build (commit 6ae598d, the last
/// before image files), key `[1; 32]`, object `a0..01` with a head, a 12 KiB memory image
/// (bytes `i % 251`) as records in `memory`, chunk 1 over it and one lineage segment. This
/// build reads it; its next image is a file and the records go.
#[test]
fn a_version_2_store_is_read_and_its_next_image_is_a_file() {
    let dir = tempdir();
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v2");
    for f in [raw::STORE_FILE, raw::HWM_FILE] {
        std::fs::copy(vectors.join(f), dir.path().join(f)).unwrap();
    }
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    let image: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    assert_eq!(a.memory, image);
    assert_eq!(a.chunks, BTreeMap::from([(1, vec![0x22; 4096])]));
    assert_eq!(s.lineage(&id(1)).unwrap(), b"lineage segment zero");
    commit(
        &s,
        vec![Op::PutMemory {
            id: id(1),
            image: std::sync::Arc::new(vec![5; 8192]),
        }],
    );
    drop(s);
    assert!(raw_get(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 0)).is_none());
    assert_eq!(image_files(dir.path()).len(), 1);
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!((a.memory, a.chunks.len()), (vec![5; 8192], 0));
}

#[test]
fn new_store_is_empty_and_empty_batch_writes_nothing() {
    let dir = tempdir();
    let s = open(dir.path());
    assert!(s.load_all().unwrap().is_empty());
    assert_eq!(s.commit(&CommitBatch::default()).unwrap().commit_counter, 0);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.stats().commit_counter, 0);
    assert!(dir.path().join("store.hwm").exists());
}

#[test]
fn a_batch_with_a_failing_op_writes_nothing() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let before = s.load_all().unwrap();
    let bad = |last: Op| CommitBatch {
        ops: vec![
            Op::PutHead {
                id: id(1),
                head: head(5, 10),
            },
            Op::PutChunks {
                id: id(1),
                chunks: vec![(0, vec![0xEE; 4096]), (9, vec![1])],
            },
            Op::AppendLineage {
                id: id(1),
                segment: 2,
                bytes: b"x".to_vec(),
            },
            Op::PutMessage {
                id: id(1),
                arrival: 9,
                bytes: b"m9".to_vec(),
            },
            Op::DeleteMessagesThrough {
                id: id(2),
                arrival: 10,
            },
            Op::PutImage {
                id: id(3),
                image: image("c"),
            },
            last,
        ],
    };
    let failing = [
        (
            Op::AppendLineage {
                id: id(1),
                segment: 5,
                bytes: vec![],
            },
            "LineageGap",
        ),
        (
            Op::PutImage {
                id: id(2),
                image: image("again"),
            },
            "Exists",
        ),
        (
            Op::PutHead {
                id: id(4),
                head: head(1, 1),
            },
            "UnknownObject",
        ),
        (
            Op::PutHead {
                id: id(1),
                head: head(5, 1),
            },
            "SeqNotIncreasing",
        ),
        (
            Op::PutChunks {
                id: id(1),
                chunks: vec![(3, vec![0; 4097])],
            },
            "ChunkTooLarge",
        ),
    ];
    for (last, kind) in failing {
        let err = s.commit(&bad(last)).unwrap_err();
        assert!(format!("{err:?}").starts_with(kind), "{kind}: {err:?}");
        assert_eq!(s.load_all().unwrap(), before, "after {kind}");
        assert_eq!(s.stats().commit_counter, 2);
        assert_eq!(s.stats().commits, 0);
    }
    // Still usable, and the accumulator was not touched by the failed batches: a reopen
    // (which recomputes the root) succeeds after a good commit.
    let good = bad(Op::PutMessage {
        id: id(3),
        arrival: 1,
        bytes: b"c1".to_vec(),
    });
    assert_eq!(s.commit(&good).unwrap().commit_counter, 3);
    drop(s);
    let s = open(dir.path());
    let a = s.load(&id(1)).unwrap().unwrap();
    assert_eq!(a.head.unwrap().seq, 5);
    assert_eq!(a.chunks[&0], vec![0xEE; 4096]);
    assert_eq!(a.lineage_segments, 3);
    assert!(s.load(&id(2)).unwrap().unwrap().pending.is_empty());
    assert_eq!(
        s.load(&id(3)).unwrap().unwrap().pending,
        vec![(1, b"c1".to_vec())]
    );
}

#[test]
fn head_seq_must_increase() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let put = |seq| CommitBatch {
        ops: vec![Op::PutHead {
            id: id(1),
            head: HeadRecord {
                seq,
                bytes: vec![1, 2, 3],
            },
        }],
    };
    for seq in [1, 0] {
        match s.commit(&put(seq)) {
            Err(StoreError::SeqNotIncreasing {
                id: i,
                stored,
                given,
            }) => {
                assert_eq!((i, stored, given), (id(1), 1, seq));
            }
            other => panic!("{other:?}"),
        }
    }
    s.commit(&put(7)).unwrap();
    assert!(matches!(
        s.commit(&put(7)),
        Err(StoreError::SeqNotIncreasing { stored: 7, .. })
    ));
    // Within one batch too.
    let twice = CommitBatch {
        ops: vec![put(9).ops[0].clone(), put(9).ops[0].clone()],
    };
    assert!(matches!(
        s.commit(&twice),
        Err(StoreError::SeqNotIncreasing {
            stored: 9,
            given: 9,
            ..
        })
    ));
    assert_eq!(s.load(&id(1)).unwrap().unwrap().head.unwrap().seq, 7);
    // A new object's first head may have any seq.
    commit(
        &s,
        vec![
            Op::PutImage {
                id: id(5),
                image: image("e"),
            },
            Op::PutHead {
                id: id(5),
                head: head(0, 1),
            },
        ],
    );
}

#[test]
fn lineage_gap_is_refused() {
    let dir = tempdir();
    let s = open(dir.path());
    commit(
        &s,
        vec![Op::PutImage {
            id: id(1),
            image: image("a"),
        }],
    );
    let seg = |segment| CommitBatch {
        ops: vec![Op::AppendLineage {
            id: id(1),
            segment,
            bytes: vec![segment as u8],
        }],
    };
    assert!(matches!(
        s.commit(&seg(1)),
        Err(StoreError::LineageGap {
            expected: 0,
            given: 1,
            ..
        })
    ));
    s.commit(&seg(0)).unwrap();
    assert!(matches!(
        s.commit(&seg(0)),
        Err(StoreError::LineageGap {
            expected: 1,
            given: 0,
            ..
        })
    ));
    assert!(matches!(
        s.commit(&seg(2)),
        Err(StoreError::LineageGap {
            expected: 1,
            given: 2,
            ..
        })
    ));
    s.commit(&seg(1)).unwrap();
    assert_eq!(s.lineage(&id(1)).unwrap(), vec![0, 1]);
}

#[test]
fn ops_on_unknown_objects_and_second_images_are_refused() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let ops = [
        Op::PutHead {
            id: id(9),
            head: head(1, 1),
        },
        Op::PutChunks {
            id: id(9),
            chunks: vec![],
        },
        Op::AppendLineage {
            id: id(9),
            segment: 0,
            bytes: vec![],
        },
        Op::PutMessage {
            id: id(9),
            arrival: 0,
            bytes: vec![],
        },
        Op::DeleteMessagesThrough {
            id: id(9),
            arrival: 0,
        },
    ];
    for op in ops {
        match s.commit(&CommitBatch { ops: vec![op] }) {
            Err(StoreError::UnknownObject { id: i }) => assert_eq!(i, id(9)),
            other => panic!("{other:?}"),
        }
    }
    match s.commit(&CommitBatch {
        ops: vec![Op::PutImage {
            id: id(1),
            image: image("a2"),
        }],
    }) {
        Err(StoreError::Exists { id: i }) => assert_eq!(i, id(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.load(&id(1)).unwrap().unwrap().image, image("a"));
    let e = s
        .commit(&CommitBatch {
            ops: vec![Op::PutChunks {
                id: id(1),
                chunks: vec![(4, vec![0; 5000])],
            }],
        })
        .unwrap_err();
    assert!(matches!(
        e,
        StoreError::ChunkTooLarge {
            index: 4,
            len: 5000,
            ..
        }
    ));
}

#[test]
fn store_is_send_and_sync_and_commits_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempdir();
    let s = open(dir.path());
    commit(
        &s,
        (0..4u8)
            .map(|n| Op::PutImage {
                id: id(n),
                image: image("t"),
            })
            .collect(),
    );
    std::thread::scope(|scope| {
        for n in 0..4u8 {
            let s = &s;
            scope.spawn(move || {
                for seq in 1..=5 {
                    s.commit(&CommitBatch {
                        ops: vec![Op::PutHead {
                            id: id(n),
                            head: head(seq, 10),
                        }],
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(s.stats().commit_counter, 21);
    drop(s);
    let s = open(dir.path());
    for o in s.load_all().unwrap() {
        assert_eq!(o.head.unwrap().seq, 5);
    }
}
