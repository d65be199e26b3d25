//! Helpers shared by the test modules.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use sojourn_store::raw::{self, redb};
use sojourn_store::{
    CommitBatch, HeadRecord, ObjectImage, ObjectKey, Op, SealingKey, Store, StoreError,
    MEMORY_SEGMENT,
};

pub fn key(n: u8) -> SealingKey {
    SealingKey::from_bytes([n; 32])
}

pub fn id(n: u8) -> ObjectKey {
    let mut k = [0u8; 16];
    k[0] = 0xA0;
    k[15] = n;
    k
}

pub fn image(name: &str) -> ObjectImage {
    ObjectImage {
        name: name.to_string(),
        descriptor: format!("descriptor of {name}").into_bytes(),
        module: vec![0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, key(1)).unwrap()
}

pub fn commit(store: &Store, ops: Vec<Op>) -> u64 {
    store.commit(&CommitBatch { ops }).unwrap().commit_counter
}

pub fn head(seq: u64, len: usize) -> HeadRecord {
    HeadRecord {
        seq,
        bytes: vec![seq as u8; len],
    }
}

/// A store with two objects A (1) and B (2), each with an image, a head, chunk 0 and 1,
/// two lineage segments and two pending messages; A's memory image is a file.
pub fn populated(dir: &Path) {
    populated_as(dir, false);
}

/// [`populated`] with A's memory image as format-2 records in the `memory` table (what
/// earlier builds wrote, which this one reads); B has no image.
pub fn populated_format2(dir: &Path) {
    populated_as(dir, true);
}

fn populated_as(dir: &Path, format2: bool) {
    let s = open(dir);
    for (n, name) in [(1u8, "a"), (2u8, "b")] {
        // A has a memory image of two segments (the second short), B none.
        let memory = if n == 1 {
            populated_memory()
        } else {
            Vec::new()
        };
        let memory_op = if format2 && memory.is_empty() {
            None
        } else {
            Some(Op::PutMemory {
                id: id(n),
                image: std::sync::Arc::new(memory),
            })
        };
        let ops = vec![
            Op::PutImage {
                id: id(n),
                image: image(name),
            },
            Op::PutHead {
                id: id(n),
                head: head(1, 300),
            },
        ];
        let rest = vec![
            Op::PutChunks {
                id: id(n),
                chunks: vec![(0, vec![n; 4096]), (1, vec![n + 10; 100])],
            },
            Op::AppendLineage {
                id: id(n),
                segment: 0,
                bytes: vec![n; 600],
            },
            Op::AppendLineage {
                id: id(n),
                segment: 1,
                bytes: vec![n + 1; 600],
            },
            Op::PutMessage {
                id: id(n),
                arrival: 1,
                bytes: b"m1".to_vec(),
            },
            Op::PutMessage {
                id: id(n),
                arrival: 2,
                bytes: b"m2".to_vec(),
            },
        ];
        let ops = ops.into_iter().chain(memory_op).chain(rest).collect();
        let batch = CommitBatch { ops };
        if format2 {
            s.commit_format2_images(&batch).unwrap();
        } else {
            s.commit(&batch).unwrap();
        }
    }
}

/// Object A's memory image in [`populated`]: two segments, the second short.
pub fn populated_memory() -> Vec<u8> {
    (0..MEMORY_SEGMENT + 4096)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// The memory-image files in `dir`'s `memory` directory, by name.
pub fn image_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir.join(raw::MEMORY_DIR)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The path of object `n`'s one memory-image file.
pub fn image_file(dir: &Path, n: u8) -> std::path::PathBuf {
    let prefix = hex::encode(id(n));
    let names: Vec<String> = image_files(dir)
        .into_iter()
        .filter(|f| f.starts_with(&prefix))
        .collect();
    assert_eq!(names.len(), 1, "object {n} has files {names:?}");
    dir.join(raw::MEMORY_DIR).join(&names[0])
}

/// SHA-256 of every file in `dir`, by name: equal before and after means nothing was
/// written, created or removed.
pub fn snapshot(dir: &Path) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            for (inner, digest) in snapshot(&entry.path()) {
                out.insert(format!("{name}/{inner}"), digest);
            }
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        out.insert(name, Sha256::digest(&bytes).into());
    }
    out
}

/// Opens with `key`, expects a refusal, and checks that no file changed.
pub fn refused(dir: &Path, key: SealingKey) -> StoreError {
    let before = snapshot(dir);
    let err = match Store::open(dir, key) {
        Ok(_) => panic!("the store opened"),
        Err(e) => e,
    };
    assert_eq!(before, snapshot(dir), "a refused open changed files: {err}");
    err
}

/// Runs `f` in a raw redb write transaction on the store file (the store must be closed).
pub fn raw_write(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join(raw::STORE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

/// Reads a raw value.
pub fn raw_get(dir: &Path, table: raw::Def, key: &[u8]) -> Option<Vec<u8>> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.join(raw::STORE_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(table).unwrap();
    t.get(key).unwrap().map(|v| v.value().to_vec())
}

pub fn raw_put(dir: &Path, table: raw::Def, key: &[u8], value: &[u8]) {
    raw_write(dir, |txn| {
        let mut t = txn.open_table(table).unwrap();
        t.insert(key, value).unwrap();
    });
}
