//! Tampering, rollback, foreign stores and garbage: every refusal is typed and changes
//! nothing on disk.

use proptest::prelude::*;
use sojourn_store::raw::{self, redb};
use sojourn_store::{RecordRef, SealingKey, Store, StoreError, Table, FORMAT_VERSION};

use crate::common::*;

pub(crate) fn expect_corrupt_at(err: StoreError, table: Table, object: u8, index: Option<u64>) {
    match err {
        StoreError::Corrupt {
            record:
                Some(RecordRef {
                    table: t,
                    object: o,
                    index: i,
                }),
            ref detail,
            ..
        } => {
            assert_eq!((t, o, i), (table, Some(id(object)), index), "{detail}");
            let msg = err.to_string();
            assert!(msg.contains(table.name()), "{msg}");
            assert!(msg.contains(&hex::encode(id(object))), "{msg}");
        }
        other => panic!("expected Corrupt at {table}: {other:?}"),
    }
}

fn expect_root_mismatch(err: StoreError) {
    match err {
        StoreError::Corrupt {
            record: None,
            detail,
            ..
        } => assert!(detail.contains("sealed root"), "{detail}"),
        other => panic!("expected a root mismatch: {other:?}"),
    }
}

#[test]
fn a_chunk_copied_to_another_object_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let a = raw_get(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(1), 0)).unwrap();
    raw_put(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(2), 0), &a);
    let err = refused(dir.path(), key(1));
    expect_corrupt_at(err, Table::Chunks, 2, Some(0));
}

#[test]
fn a_chunk_moved_to_another_index_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let a = raw_get(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(1), 0)).unwrap();
    raw_put(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(1), 1), &a);
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Chunks, 1, Some(1));
}

#[test]
fn a_head_copied_to_another_object_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let a = raw_get(dir.path(), raw::HEADS, &id(1)).unwrap();
    raw_put(dir.path(), raw::HEADS, &id(2), &a);
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Heads, 2, None);
}

#[test]
fn a_head_claiming_another_seq_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let mut a = raw_get(dir.path(), raw::HEADS, &id(1)).unwrap();
    a[..8].copy_from_slice(&99u64.to_be_bytes());
    raw_put(dir.path(), raw::HEADS, &id(1), &a);
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Heads, 1, None);
}

#[test]
fn one_record_rolled_back_to_an_older_sealed_version_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let old_chunk = raw_get(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(1), 0)).unwrap();
    let old_head = raw_get(dir.path(), raw::HEADS, &id(1)).unwrap();
    {
        let s = open(dir.path());
        commit(
            &s,
            vec![
                sojourn_store::Op::PutChunks {
                    id: id(1),
                    chunks: vec![(0, vec![0x55; 4096])],
                },
                sojourn_store::Op::PutHead {
                    id: id(1),
                    head: head(2, 300),
                },
            ],
        );
    }
    let copy = tempdir();
    for f in [raw::STORE_FILE, raw::HWM_FILE] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
    }
    std::fs::create_dir(copy.path().join(raw::MEMORY_DIR)).unwrap();
    for f in image_files(dir.path()) {
        let (from, to) = (
            dir.path().join(raw::MEMORY_DIR),
            copy.path().join(raw::MEMORY_DIR),
        );
        std::fs::copy(from.join(&f), to.join(&f)).unwrap();
    }
    // The chunk alone: it unseals (it is a genuine record of this object and index), only
    // the root sees it.
    raw_put(
        dir.path(),
        raw::CHUNKS,
        &raw::chunk_key(&id(1), 0),
        &old_chunk,
    );
    expect_root_mismatch(refused(dir.path(), key(1)));
    // The head alone (an older head seq, so the host would go back in time).
    raw_put(copy.path(), raw::HEADS, &id(1), &old_head);
    expect_root_mismatch(refused(copy.path(), key(1)));
}

#[test]
fn a_deleted_record_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    raw_write(dir.path(), |txn| {
        let mut t = txn.open_table(raw::MESSAGES).unwrap();
        assert!(t
            .remove(raw::indexed_key(&id(2), 2).as_slice())
            .unwrap()
            .is_some());
    });
    expect_root_mismatch(refused(dir.path(), key(1)));
}

#[test]
fn a_deleted_record_copied_back_in_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    let m1 = raw_get(dir.path(), raw::MESSAGES, &raw::indexed_key(&id(1), 1)).unwrap();
    {
        let s = open(dir.path());
        commit(
            &s,
            vec![sojourn_store::Op::DeleteMessagesThrough {
                id: id(1),
                arrival: 1,
            }],
        );
        assert_eq!(s.load(&id(1)).unwrap().unwrap().pending.len(), 1);
    }
    raw_put(dir.path(), raw::MESSAGES, &raw::indexed_key(&id(1), 1), &m1);
    expect_root_mismatch(refused(dir.path(), key(1)));
}

#[test]
fn a_deleted_first_memory_segment_is_detected() {
    let dir = tempdir();
    populated_format2(dir.path());
    raw_write(dir.path(), |txn| {
        let mut t = txn.open_table(raw::MEMORY).unwrap();
        t.remove(raw::chunk_key(&id(1), 0).as_slice()).unwrap();
    });
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Memory, 1, Some(1));
}

#[test]
fn a_deleted_last_memory_segment_is_detected() {
    let dir = tempdir();
    populated_format2(dir.path());
    raw_write(dir.path(), |txn| {
        let mut t = txn.open_table(raw::MEMORY).unwrap();
        t.remove(raw::chunk_key(&id(1), 1).as_slice()).unwrap();
    });
    expect_root_mismatch(refused(dir.path(), key(1)));
}

#[test]
fn a_memory_segment_copied_to_another_object_or_index_is_detected() {
    let dir = tempdir();
    populated_format2(dir.path());
    let seg = raw_get(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 1)).unwrap();
    raw_put(dir.path(), raw::MEMORY, &raw::chunk_key(&id(2), 0), &seg);
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Memory, 2, Some(0));
    let dir = tempdir();
    populated_format2(dir.path());
    raw_put(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 2), &seg);
    expect_corrupt_at(refused(dir.path(), key(1)), Table::Memory, 1, Some(2));
}

#[test]
fn a_deleted_lineage_segment_is_detected() {
    let dir = tempdir();
    populated(dir.path());
    raw_write(dir.path(), |txn| {
        let mut t = txn.open_table(raw::LINEAGE).unwrap();
        t.remove(raw::indexed_key(&id(1), 0).as_slice()).unwrap();
    });
    let err = refused(dir.path(), key(1));
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn whole_store_rollback_is_detected_by_the_high_water_mark() {
    let dir = tempdir();
    populated(dir.path());
    let saved = std::fs::read(dir.path().join(raw::STORE_FILE)).unwrap();
    {
        let s = open(dir.path());
        for seq in 2..5 {
            commit(
                &s,
                vec![sojourn_store::Op::PutHead {
                    id: id(1),
                    head: head(seq, 10),
                }],
            );
        }
        assert_eq!(s.stats().commit_counter, 5);
    }
    std::fs::write(dir.path().join(raw::STORE_FILE), &saved).unwrap();
    match refused(dir.path(), key(1)) {
        StoreError::RolledBack {
            store_counter,
            high_water,
        } => assert_eq!((store_counter, high_water), (2, 5)),
        other => panic!("{other:?}"),
    }
    // The message says so.
    let msg = refused(dir.path(), key(1)).to_string();
    assert!(msg.starts_with("store rolled back"), "{msg}");
}

#[test]
fn a_missing_or_foreign_high_water_file_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    let hwm = dir.path().join(raw::HWM_FILE);
    let saved = std::fs::read(&hwm).unwrap();
    std::fs::remove_file(&hwm).unwrap();
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::HighWaterMissing { .. }
    ));
    // Another store's hwm (same key): its slots name another store id.
    let other = tempdir();
    populated(other.path());
    std::fs::copy(other.path().join(raw::HWM_FILE), &hwm).unwrap();
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::HighWaterInvalid { .. }
    ));
    // Both slots damaged.
    std::fs::write(&hwm, vec![0u8; 112]).unwrap();
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::HighWaterInvalid { .. }
    ));
    // One slot damaged: the other still vouches (the write that tore it was not yet
    // acknowledged).
    let mut one = saved.clone();
    one[60] ^= 1;
    std::fs::write(&hwm, &one).unwrap();
    open(dir.path());
}

#[test]
fn a_foreign_key_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    let err = refused(dir.path(), key(2));
    assert!(
        matches!(err, StoreError::ForeignOrWrongKey { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("sealed with a different key"));
    // And the right key still opens it.
    open(dir.path());
}

#[test]
fn a_garbage_file_is_refused_and_nothing_is_created() {
    let dir = tempdir();
    let mut junk = vec![0u8; 64 * 1024];
    getrandom::fill(&mut junk).unwrap();
    std::fs::write(dir.path().join(raw::STORE_FILE), &junk).unwrap();
    let err = refused(dir.path(), key(1));
    assert!(
        matches!(err, StoreError::Corrupt { record: None, .. }),
        "{err:?}"
    );
    assert!(!dir.path().join(raw::HWM_FILE).exists());
    // A tiny file, too.
    std::fs::write(dir.path().join(raw::STORE_FILE), b"redb?").unwrap();
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::Corrupt { .. }
    ));
}

#[test]
fn a_store_with_random_pages_is_refused() {
    // A real header followed by garbage: redb's integrity check (or our catch of its
    // assertions) refuses it.
    let dir = tempdir();
    populated(dir.path());
    let path = dir.path().join(raw::STORE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut junk = vec![0u8; bytes.len() - 4096];
    getrandom::fill(&mut junk).unwrap();
    bytes[4096..].copy_from_slice(&junk);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::Corrupt { .. }
    ));
}

#[test]
fn a_flipped_byte_in_a_record_value_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    let value = raw_get(dir.path(), raw::CHUNKS, &raw::chunk_key(&id(1), 0)).unwrap();
    let nonce = &value[..24];
    let path = dir.path().join(raw::STORE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(pos) = bytes[at..].windows(24).position(|w| w == nonce) {
        let p = at + pos + 24 + 2000; // inside the ciphertext
        bytes[p] ^= 0x01;
        found += 1;
        at = at + pos + 24;
    }
    assert!(found >= 1, "the sealed chunk was not found in the file");
    std::fs::write(&path, &bytes).unwrap();
    let err = refused(dir.path(), key(1));
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    let mut meta = raw_get(dir.path(), raw::META, raw::META_KEY).unwrap();
    meta[..4].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
    raw_put(dir.path(), raw::META, raw::META_KEY, &meta);
    match refused(dir.path(), key(1)) {
        StoreError::UnsupportedVersion { found, supported } => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_meta_record_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    raw_write(dir.path(), |txn| {
        let mut t = txn.open_table(raw::META).unwrap();
        t.remove(raw::META_KEY).unwrap();
    });
    match refused(dir.path(), key(1)) {
        StoreError::Corrupt {
            record: Some(RecordRef { table, .. }),
            ..
        } => assert_eq!(table, Table::Meta),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_foreign_table_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    raw_write(dir.path(), |txn| {
        let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
        txn.open_table(def).unwrap().insert(1, 2).unwrap();
    });
    assert!(matches!(
        refused(dir.path(), key(1)),
        StoreError::Corrupt { .. }
    ));
}

#[test]
fn a_missing_store_file_with_a_high_water_mark_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    std::fs::remove_file(dir.path().join(raw::STORE_FILE)).unwrap();
    match refused(dir.path(), key(1)) {
        StoreError::StoreMissing { high_water, .. } => assert_eq!(high_water, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_open_is_locked_out() {
    let dir = tempdir();
    let s = open(dir.path());
    let err = Store::open(dir.path(), key(1)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(s);
    open(dir.path());
}

#[test]
fn an_unfinished_creation_is_finished() {
    // A crash after store.hwm and an empty store.redb were created: the next open finishes
    // the creation with the same store id.
    let dir = tempdir();
    drop(open(dir.path()));
    let hwm = std::fs::read(dir.path().join(raw::HWM_FILE)).unwrap();
    std::fs::write(dir.path().join(raw::STORE_FILE), b"").unwrap();
    let s = open(dir.path());
    assert_eq!(s.stats().commit_counter, 0);
    drop(s);
    assert_eq!(std::fs::read(dir.path().join(raw::HWM_FILE)).unwrap(), hwm);
    open(dir.path());
}

fn tables() -> [(Table, raw::Def, Vec<u8>); 7] {
    [
        (Table::Images, raw::IMAGES, id(1).to_vec()),
        (Table::Heads, raw::HEADS, id(1).to_vec()),
        (
            Table::Chunks,
            raw::CHUNKS,
            raw::chunk_key(&id(1), 1).to_vec(),
        ),
        (
            Table::Lineage,
            raw::LINEAGE,
            raw::indexed_key(&id(1), 1).to_vec(),
        ),
        (
            Table::Messages,
            raw::MESSAGES,
            raw::indexed_key(&id(1), 2).to_vec(),
        ),
        (
            Table::Memory,
            raw::MEMORY,
            raw::chunk_key(&id(1), 1).to_vec(),
        ),
        (Table::MemoryFiles, raw::MEMORY_FILES, id(1).to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random bytes in place of a sealed value, in any table: an error, never a panic.
    #[test]
    fn random_bytes_as_a_sealed_value_give_an_error(
        which in 0usize..8,
        value in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempdir();
        populated(dir.path());
        if which == 7 {
            raw_put(dir.path(), raw::META, raw::META_KEY, &value);
        } else {
            let (_, def, k) = tables()[which].clone();
            raw_put(dir.path(), def, &k, &value);
        }
        let before = snapshot(dir.path());
        let r = Store::open(dir.path(), SealingKey::from_bytes([1; 32]));
        prop_assert!(r.is_err());
        prop_assert_eq!(before, snapshot(dir.path()));
    }
}
