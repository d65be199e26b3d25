//! Memory images in files (format 3): written durable before their commit, pinned by their
//! record, staged ahead of a commit, collected when no record names them.

use std::sync::Arc;

use sojourn_store::{raw, CommitBatch, Op, Store, StoreError, Table, MEMORY_SEGMENT};

use crate::common::*;
use crate::tamper::expect_corrupt_at;

fn memory(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 253) as u8))
        .collect()
}

fn put_memory(s: &Store, n: u8, bytes: Vec<u8>) {
    commit(
        s,
        vec![Op::PutMemory {
            id: id(n),
            image: Arc::new(bytes),
        }],
    );
}

fn staged(s: &Store, n: u8, bytes: &[u8]) -> sojourn_store::StagedMemory {
    s.stage_memory(&id(n), bytes.len(), &mut |at, out| {
        out.copy_from_slice(&bytes[at..at + out.len()]);
        true
    })
    .unwrap()
}

#[test]
fn an_image_is_one_file_named_by_its_record_and_replacing_it_deletes_the_old_file() {
    let dir = tempdir();
    populated(dir.path());
    let first = std::fs::read(image_file(dir.path(), 1)).unwrap();
    {
        let s = open(dir.path());
        let len = MEMORY_SEGMENT * 2 + 8192;
        put_memory(&s, 1, memory(9, len));
        assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, memory(9, len));
        // The chunks went with the old image.
        assert!(s.load(&id(1)).unwrap().unwrap().chunks.is_empty());
    }
    assert_ne!(std::fs::read(image_file(dir.path(), 1)).unwrap(), first);
    assert_eq!(image_files(dir.path()).len(), 2, "one file per object");
    let s = open(dir.path());
    assert_eq!(
        s.load(&id(1)).unwrap().unwrap().memory,
        memory(9, MEMORY_SEGMENT * 2 + 8192)
    );
}

#[test]
fn a_large_image_synced_while_it_is_written_reads_back_whole() {
    // Above twice the early-sync interval (8 MiB): a second thread fdatasyncs the file while
    // later segments are written; the image is the same bytes.
    let dir = tempdir();
    populated(dir.path());
    let len = 20 << 20;
    {
        let s = open(dir.path());
        let m = staged(&s, 1, &memory(3, len));
        commit(
            &s,
            vec![Op::PutStagedMemory {
                id: id(1),
                memory: m,
            }],
        );
    }
    let s = open(dir.path());
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, memory(3, len));
}

#[test]
fn a_flipped_byte_in_an_image_file_is_refused() {
    for at in [0usize, 30, 5000, MEMORY_SEGMENT + 100] {
        let dir = tempdir();
        populated(dir.path());
        let path = image_file(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    }
}

#[test]
fn a_missing_truncated_or_extended_image_file_is_refused() {
    let dir = tempdir();
    populated(dir.path());
    let path = image_file(dir.path(), 1);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    std::fs::remove_file(&path).unwrap();
    let err = refused(dir.path(), key(1));
    assert!(err.to_string().contains("cannot open"), "{err}");
    expect_corrupt_at(err, Table::MemoryFiles, 1, None);
    // Put back as it was, the store opens.
    std::fs::write(&path, &bytes).unwrap();
    open(dir.path());
}

#[test]
fn another_objects_image_or_an_older_image_in_its_place_is_refused() {
    let dir = tempdir();
    let len = MEMORY_SEGMENT + 4096;
    populated(dir.path());
    let older = std::fs::read(image_file(dir.path(), 1)).unwrap();
    {
        let s = open(dir.path());
        put_memory(&s, 1, memory(1, len));
        put_memory(&s, 2, memory(2, len));
    }
    // B's file (same length) in A's place.
    let a = image_file(dir.path(), 1);
    let a_bytes = std::fs::read(&a).unwrap();
    std::fs::write(&a, std::fs::read(image_file(dir.path(), 2)).unwrap()).unwrap();
    expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    // A's older image (same length) in the place of its current one.
    assert_eq!(older.len(), a_bytes.len());
    std::fs::write(&a, &older).unwrap();
    let err = refused(dir.path(), key(1));
    assert!(err.to_string().contains("rolled back"), "{err}");
    // The older file back under its own (old) name: no record names it; it goes.
    std::fs::write(&a, &a_bytes).unwrap();
    let stray = dir
        .path()
        .join(raw::MEMORY_DIR)
        .join(raw::memory_file_name(&id(1), &[0x5a; 16]));
    std::fs::write(&stray, &older).unwrap();
    let s = open(dir.path());
    assert!(!stray.exists(), "an unnamed image file is deleted at open");
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, memory(1, len));
}

#[test]
fn an_image_file_moved_to_the_other_object_is_refused() {
    // A's file renamed to B's name pattern is not B's record's file.
    let dir = tempdir();
    populated(dir.path());
    {
        let s = open(dir.path());
        put_memory(&s, 2, memory(2, MEMORY_SEGMENT + 4096));
    }
    let a = image_file(dir.path(), 1);
    let b = image_file(dir.path(), 2);
    std::fs::copy(&a, &b).unwrap();
    expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 2, None);
}

#[test]
fn a_staged_image_is_written_ahead_and_committed_once() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let bytes = memory(7, MEMORY_SEGMENT * 3 + 12288);
    // Staged on one thread while another commits to the same store.
    let m = std::thread::scope(|scope| {
        let stager = scope.spawn(|| staged(&s, 1, &bytes));
        for seq in 2..6 {
            commit(
                &s,
                vec![Op::PutHead {
                    id: id(2),
                    head: head(seq, 10),
                }],
            );
        }
        stager.join().unwrap()
    });
    assert_eq!(m.len(), bytes.len() as u64);
    assert_eq!(m.object(), &id(1));
    let before = s.load(&id(1)).unwrap().unwrap();
    assert_ne!(before.memory, bytes, "staging alone changes nothing");
    commit(
        &s,
        vec![Op::PutStagedMemory {
            id: id(1),
            memory: m.clone(),
        }],
    );
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, bytes);
    assert_eq!(s.stats().staged_images, 1);
    // Taken once.
    let again = s.commit(&CommitBatch {
        ops: vec![Op::PutStagedMemory {
            id: id(1),
            memory: m.clone(),
        }],
    });
    assert!(
        matches!(again, Err(StoreError::StagedMemory { .. })),
        "{again:?}"
    );
    // The committed file stays when the handle goes.
    drop(m);
    drop(s);
    assert_eq!(
        open(dir.path()).load(&id(1)).unwrap().unwrap().memory,
        bytes
    );
}

#[test]
fn a_staged_image_for_another_object_or_store_is_refused_and_an_untaken_one_is_deleted() {
    let dir = tempdir();
    let other_dir = tempdir();
    populated(dir.path());
    populated(other_dir.path());
    let s = open(dir.path());
    let other = open(other_dir.path());
    let files = image_files(dir.path()).len();
    let wrong_object = staged(&s, 2, &memory(3, 8192));
    let foreign = staged(&other, 1, &memory(3, 8192));
    assert_eq!(image_files(dir.path()).len(), files + 1);
    for (memory, why) in [
        (wrong_object.clone(), "another object"),
        (foreign.clone(), "another store"),
    ] {
        let before = s.stats().commit_counter;
        let err = s
            .commit(&CommitBatch {
                ops: vec![Op::PutStagedMemory { id: id(1), memory }],
            })
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(s.stats().commit_counter, before);
    }
    // A batch that fails after a staged op leaves the image untaken.
    let fine = staged(&s, 1, &memory(4, 8192));
    let err = s
        .commit(&CommitBatch {
            ops: vec![
                Op::PutStagedMemory {
                    id: id(1),
                    memory: fine.clone(),
                },
                Op::PutHead {
                    id: id(1),
                    head: head(1, 1), // not above the stored seq
                },
            ],
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::SeqNotIncreasing { .. }), "{err}");
    assert_ne!(s.load(&id(1)).unwrap().unwrap().memory, memory(4, 8192));
    // Untaken images are deleted with their last handle.
    drop((wrong_object, fine));
    assert_eq!(image_files(dir.path()).len(), files);
    drop(foreign);
    assert_eq!(image_files(other_dir.path()).len(), files);
}

#[test]
fn a_source_that_ends_early_is_an_error_and_leaves_no_file() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let files = image_files(dir.path());
    let err = s
        .stage_memory(&id(1), MEMORY_SEGMENT * 2, &mut |at, _| at == 0)
        .unwrap_err();
    assert!(matches!(err, StoreError::StagedMemory { .. }), "{err}");
    assert_eq!(image_files(dir.path()), files);
}

#[test]
fn a_staged_image_left_by_a_crash_is_deleted_at_the_next_open() {
    let dir = tempdir();
    populated(dir.path());
    let files = image_files(dir.path());
    {
        let s = open(dir.path());
        let m = staged(&s, 1, &memory(5, 8192));
        // As if the process died here: the handle is never dropped.
        std::mem::forget(m);
    }
    assert_eq!(image_files(dir.path()).len(), files.len() + 1);
    let s = open(dir.path());
    assert_eq!(image_files(dir.path()), files);
    assert_eq!(
        s.load(&id(1)).unwrap().unwrap().memory,
        crate::common::populated_memory()
    );
}

#[test]
fn a_format_2_image_is_read_and_replaced_by_a_file() {
    let dir = tempdir();
    populated_format2(dir.path());
    assert!(image_files(dir.path()).is_empty());
    let s = open(dir.path());
    assert_eq!(
        s.load(&id(1)).unwrap().unwrap().memory,
        crate::common::populated_memory()
    );
    put_memory(&s, 1, memory(6, 4096 * 3));
    drop(s);
    assert!(raw_get(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 0)).is_none());
    assert_eq!(image_files(dir.path()).len(), 1);
    let s = open(dir.path());
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, memory(6, 4096 * 3));
}

#[test]
fn an_object_with_both_a_file_and_format_2_records_is_refused() {
    let dir = tempdir();
    populated_format2(dir.path());
    let seg = raw_get(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 0)).unwrap();
    let dir = tempdir();
    populated(dir.path());
    // A format-2 record (sealed under the same key, in its right place) in a store where
    // A's image is a file.
    raw_put(dir.path(), raw::MEMORY, &raw::chunk_key(&id(1), 0), &seg);
    let err = refused(dir.path(), key(1));
    assert!(err.to_string().contains("two memory images"), "{err}");
    expect_corrupt_at(err, Table::MemoryFiles, 1, None);
}
