//! [`Store`]: open (verify, then open for writing), load, commit.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableError, TableHandle,
};

use crate::acc::Acc;
use crate::error::{RecordRef, Table};
use crate::hwm::Hwm;
use crate::key::{sync_parent_dir, SealingKey};
use crate::memfile::{self, FileRecord, KeyedImageWriter, StagedMemory};
use crate::overlay::OverlayBackend;
use crate::raw::{
    self, definition, HWM_FILE, MEMORY_DIR, META, META_KEY, OBJECT_TABLES, STORE_FILE,
};
use crate::seal::{memory_value_len, split, SealError, Sealer};
use crate::{
    CommitBatch, CommitReceipt, HeadRecord, ObjectImage, ObjectKey, Op, StoreError, StoreStats,
    StoredObject, CHUNK_SIZE, FORMAT_VERSION, MEMORY_SEGMENT, OLDEST_FORMAT_VERSION,
};

/// redb's page cache for the store (the objects live in memory anyway; the cache serves
/// reads at open and commits).
const CACHE_BYTES: usize = 64 << 20;

/// The decoded meta record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    /// The format version the record was written with (every commit writes
    /// [`FORMAT_VERSION`]).
    version: u32,
    store_id: [u8; 16],
    counter: u64,
    root: Acc,
}

const META_PLAIN_LEN: usize = 16 + 8 + 32;

impl Meta {
    fn seal(&self, sealer: &Sealer) -> Result<Vec<u8>, StoreError> {
        let mut plain = Vec::with_capacity(META_PLAIN_LEN);
        plain.extend_from_slice(&self.store_id);
        plain.extend_from_slice(&self.counter.to_be_bytes());
        plain.extend_from_slice(&self.root.to_be_bytes());
        sealer.seal(Table::Meta, META_KEY, &FORMAT_VERSION.to_be_bytes(), &plain)
    }

    fn unseal(sealer: &Sealer, path: &Path, value: &[u8]) -> Result<Meta, StoreError> {
        let corrupt = |detail: &str| corrupt(path, Some(meta_ref()), detail);
        let version = value
            .get(..4)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt("the meta record is truncated"))?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(StoreError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let plain = match sealer.unseal(Table::Meta, META_KEY, value) {
            Ok(p) => p,
            Err(SealError::Auth) => {
                return Err(StoreError::ForeignOrWrongKey {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(corrupt(e.describe())),
        };
        if plain.len() != META_PLAIN_LEN {
            return Err(corrupt("the meta record has the wrong length"));
        }
        let (id, rest) = plain.split_at(16);
        let (counter, root) = rest.split_at(8);
        let store_id = <[u8; 16]>::try_from(id).map_err(|_| corrupt("meta: store id"))?;
        let counter = <[u8; 8]>::try_from(counter)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("meta: counter"))?;
        let root = <[u8; 32]>::try_from(root)
            .map(|r| Acc::from_be_bytes(&r))
            .map_err(|_| corrupt("meta: root"))?;
        Ok(Meta {
            version,
            store_id,
            counter,
            root,
        })
    }
}

fn meta_ref() -> RecordRef {
    RecordRef {
        table: Table::Meta,
        object: None,
        index: None,
    }
}

fn corrupt(path: &Path, record: Option<RecordRef>, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        record,
        detail: detail.into(),
    }
}

fn record_ref(table: Table, key: &[u8]) -> RecordRef {
    match raw::parse_key(table, key) {
        Some((object, index)) => RecordRef {
            table,
            object: Some(object),
            index,
        },
        None => RecordRef {
            table,
            object: None,
            index: None,
        },
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A redb error at run time: corruption is [`StoreError::Corrupt`], the rest
/// [`StoreError::Database`].
fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(detail) => corrupt(path, None, format!("redb: {detail}")),
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        source => StoreError::Database {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// A redb error while opening a file that exists: anything but a lock or a real I/O error
/// means the file is not a (sound) redb database.
fn open_err(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        // redb reports "not a redb database" and short reads as I/O errors of these kinds.
        DatabaseError::Storage(StorageError::Io(source))
            if !matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            io(path, source)
        }
        other => corrupt(path, None, format!("redb cannot open it: {other}")),
    }
}

/// The image plaintext: `name len (u64 BE) ‖ name ‖ descriptor len (u64 BE) ‖ descriptor ‖
/// module`.
fn encode_image(image: &ObjectImage) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + image.name.len() + image.descriptor.len() + image.module.len());
    out.extend_from_slice(&(image.name.len() as u64).to_be_bytes());
    out.extend_from_slice(image.name.as_bytes());
    out.extend_from_slice(&(image.descriptor.len() as u64).to_be_bytes());
    out.extend_from_slice(&image.descriptor);
    out.extend_from_slice(&image.module);
    out
}

fn decode_image(plain: &[u8]) -> Option<ObjectImage> {
    fn take_len(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let rest = b.get(8..)?;
        if len > rest.len() {
            return None;
        }
        Some(rest.split_at(len))
    }
    let (name, rest) = take_len(plain)?;
    let (descriptor, module) = take_len(rest)?;
    Some(ObjectImage {
        name: String::from_utf8(name.to_vec()).ok()?,
        descriptor: descriptor.to_vec(),
        module: module.to_vec(),
    })
}

fn head_seq(value: &[u8]) -> Option<u64> {
    let parts = split(Table::Heads, value).ok()?;
    Some(u64::from_be_bytes(parts.prefix.try_into().ok()?))
}

/// The order rule of an object's memory segments: numbered 0, 1, 2, … with none missing, each
/// at most [`MEMORY_SEGMENT`] bytes, and only the last one shorter.
#[derive(Clone, Copy)]
struct SegmentOrder {
    next: u64,
    previous_full: bool,
}

impl SegmentOrder {
    const START: SegmentOrder = SegmentOrder {
        next: 0,
        previous_full: true,
    };

    /// Takes the segment numbered `index` (`None`: a bad key) of `len` bytes.
    fn take(&mut self, index: Option<u64>, len: usize) -> Result<(), String> {
        if index != Some(self.next) {
            return Err(format!("memory segment {} is missing", self.next));
        }
        if !self.previous_full {
            return Err("a memory segment after a short one".into());
        }
        if len > MEMORY_SEGMENT {
            return Err("a memory segment is too long".into());
        }
        self.previous_full = len == MEMORY_SEGMENT;
        self.next = self.next.saturating_add(1);
        Ok(())
    }
}

/// What verification of an existing file found.
enum Verified {
    /// A redb file with none of our records and no meta: a creation that did not finish.
    Empty,
    /// A sound store: its meta, the meta value's exact bytes, and the memory-image files
    /// its records name.
    Store(Meta, Vec<u8>, BTreeSet<String>),
}

/// Verifies everything `open` promises about the database: meta, every record, the root.
fn verify_db<D: ReadableDatabase>(
    db: &D,
    sealer: &Sealer,
    path: &Path,
    memory_dir: &Path,
) -> Result<Verified, StoreError> {
    let txn = db.begin_read().map_err(|e| db_err(path, e))?;
    let names: Vec<String> = txn
        .list_tables()
        .map_err(|e| db_err(path, e))?
        .map(|t| t.name().to_string())
        .collect();
    let ours: BTreeSet<&str> = OBJECT_TABLES
        .iter()
        .map(|t| t.name())
        .chain([Table::Meta.name()])
        .collect();
    let meta_value = match txn.open_table(META) {
        Ok(t) => t
            .get(META_KEY)
            .map_err(|e| db_err(path, e))?
            .map(|v| v.value().to_vec()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(db_err(path, e)),
    };
    let Some(meta_value) = meta_value else {
        // No meta: fine only if there is nothing else either.
        for name in &names {
            if !ours.contains(name.as_str()) {
                return Err(corrupt(
                    path,
                    None,
                    format!("not a Sojourn store (table `{name}`)"),
                ));
            }
        }
        for table in OBJECT_TABLES.iter().chain([&Table::Meta]) {
            match txn.open_table(definition(*table)) {
                Ok(t) => {
                    if t.len().map_err(|e| db_err(path, e))? != 0 {
                        return Err(corrupt(
                            path,
                            Some(meta_ref()),
                            "the meta record is missing",
                        ));
                    }
                }
                Err(TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(db_err(path, e)),
            }
        }
        return Ok(Verified::Empty);
    };
    let meta = Meta::unseal(sealer, path, &meta_value)?;
    for name in &names {
        if !ours.contains(name.as_str()) {
            return Err(corrupt(path, None, format!("unknown table `{name}`")));
        }
    }

    let mut root = Acc::ZERO;
    let mut objects: BTreeSet<ObjectKey> = BTreeSet::new();
    // Objects with a format-2 image (in `memory`), and the image files named.
    let mut with_segments: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    for table in OBJECT_TABLES {
        let t = match txn.open_table(definition(table)) {
            Ok(t) => t,
            // Version 1 had no memory images.
            Err(TableError::TableDoesNotExist(_)) if table == Table::Memory && meta.version < 2 => {
                continue
            }
            // Versions 1 and 2 had no image files.
            Err(TableError::TableDoesNotExist(_))
                if table == Table::MemoryFiles && meta.version < 3 =>
            {
                continue
            }
            Err(TableError::TableDoesNotExist(_)) => {
                return Err(corrupt(path, None, format!("table `{table}` is missing")))
            }
            Err(e) => return Err(db_err(path, e)),
        };
        // The next lineage segment expected, and the memory segments' order, per object
        // (keys come in order).
        let mut next_segment: Option<(ObjectKey, u64)> = None;
        let mut memory_order: Option<(ObjectKey, SegmentOrder)> = None;
        for entry in t.iter().map_err(|e| db_err(path, e))? {
            let (k, v) = entry.map_err(|e| db_err(path, e))?;
            let (key, value) = (k.value(), v.value());
            let at = || Some(record_ref(table, key));
            let (id, index) = raw::parse_key(table, key)
                .ok_or_else(|| corrupt(path, at(), "a key of the wrong length"))?;
            let plain = sealer
                .unseal(table, key, value)
                .map_err(|e| corrupt(path, at(), e.describe()))?;
            let term = sealer
                .term(table, key, value)
                .map_err(|e| corrupt(path, at(), e.describe()))?;
            root.add(&term);
            match table {
                Table::Images => {
                    decode_image(&plain)
                        .ok_or_else(|| corrupt(path, at(), "the image does not decode"))?;
                    objects.insert(id);
                }
                _ if !objects.contains(&id) => {
                    return Err(corrupt(
                        path,
                        at(),
                        "a record of an object without an image",
                    ))
                }
                Table::Chunks if plain.len() > CHUNK_SIZE => {
                    return Err(corrupt(path, at(), "a chunk larger than 4096 bytes"))
                }
                Table::Memory => {
                    let mut order = match memory_order {
                        Some((prev, order)) if prev == id => order,
                        _ => SegmentOrder::START,
                    };
                    order
                        .take(index, plain.len())
                        .map_err(|e| corrupt(path, at(), e))?;
                    memory_order = Some((id, order));
                    with_segments.insert(id);
                }
                Table::MemoryFiles => {
                    if with_segments.contains(&id) {
                        return Err(corrupt(
                            path,
                            at(),
                            "an object with two memory images (a file and records)",
                        ));
                    }
                    let record = FileRecord::decode(&plain)
                        .ok_or_else(|| corrupt(path, at(), "the record does not decode"))?;
                    // Every byte of the file is read and authenticated, as records are.
                    memfile::read_image(sealer, memory_dir, &id, &record)
                        .map_err(|e| corrupt(&e.path, at(), e.detail))?;
                    files.insert(raw::memory_file_name(&id, &record.name));
                }
                Table::Lineage => {
                    let expected = match next_segment {
                        Some((prev, n)) if prev == id => n,
                        _ => 0,
                    };
                    if index != Some(expected) {
                        return Err(corrupt(
                            path,
                            at(),
                            format!("lineage segment {expected} is missing"),
                        ));
                    }
                    next_segment = Some((id, expected.saturating_add(1)));
                }
                _ => {}
            }
        }
    }
    if root != meta.root {
        return Err(corrupt(
            path,
            None,
            "the records do not match the sealed root: a record was rolled back to an \
             older sealed version, deleted, or copied in",
        ));
    }
    Ok(Verified::Store(meta, meta_value, files))
}

/// Verifies the existing, non-empty store file at `path` without writing to it: redb's
/// integrity check and any crash recovery run on an in-memory overlay of the file.
fn verify_file(path: &Path, sealer: &Sealer, memory_dir: &Path) -> Result<Verified, StoreError> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let backend = OverlayBackend::new(file).map_err(|e| io(path, e))?;
    // redb trusts a cleanly closed file and debug builds of it assert on inconsistencies;
    // a crafted file (its page checksums are not cryptographic) must not take the daemon
    // down, so a panic while reading it is a corrupt store. Nothing outlives the closure.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| open_err(path, e))?;
        verify_db(&db, sealer, path, memory_dir)
    }));
    match result {
        Ok(r) => r,
        Err(_) => Err(corrupt(
            path,
            None,
            "the database engine failed while reading it",
        )),
    }
}

/// Mutable state, behind the commit lock (held for a whole commit).
#[derive(Debug)]
struct Inner {
    root: Acc,
    counter: u64,
    hwm: Hwm,
}

/// The store. `Send + Sync`; commits are serialised internally.
pub struct Store {
    db: Database,
    sealer: Sealer,
    path: PathBuf,
    /// Where memory-image files go.
    memory_dir: PathBuf,
    hwm_path: PathBuf,
    store_id: [u8; 16],
    inner: Mutex<Inner>,
    /// Apart from `inner`, so that `stats` does not wait for a commit's fsync.
    stats: Mutex<StoreStats>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("store_id", &hex::encode(self.store_id))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates, when `dir` has no store file) the store in `dir`.
    ///
    /// An existing store is verified first — redb's page checksums, the meta record, every
    /// record's seal, the accumulator root, the high-water mark — without writing to it; any
    /// failure is a typed error and leaves both files as they were. `dir` must exist.
    pub fn open(dir: &Path, key: SealingKey) -> Result<Store, StoreError> {
        let sealer = Sealer::new(&key)?;
        drop(key);
        let db_path = dir.join(STORE_FILE);
        let hwm_path = dir.join(HWM_FILE);
        let memory_dir = dir.join(MEMORY_DIR);
        let dir_meta = std::fs::metadata(dir).map_err(|e| io(dir, e))?;
        if !dir_meta.is_dir() {
            return Err(io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        // Taken first: it is also the lock that keeps a second daemon out.
        let hwm = Hwm::open_existing(&hwm_path)?;
        let db_len = match std::fs::metadata(&db_path) {
            Ok(m) if m.is_file() => Some(m.len()),
            Ok(_) => {
                return Err(corrupt(&db_path, None, "not a regular file"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&db_path, e)),
        };
        let verified = match db_len {
            None | Some(0) => Verified::Empty,
            Some(_) => verify_file(&db_path, &sealer, &memory_dir)?,
        };
        match verified {
            Verified::Empty => {
                let store = Self::create(db_path, sealer, hwm, &hwm_path, memory_dir)?;
                // Images staged for a store that was never written are nobody's.
                memfile::collect_garbage(&store.memory_dir, &BTreeSet::new());
                Ok(store)
            }
            Verified::Store(meta, meta_value, files) => {
                let hwm = hwm.ok_or(StoreError::HighWaterMissing {
                    path: hwm_path.clone(),
                })?;
                let high = hwm.high_water(&sealer, &meta.store_id)?.ok_or(
                    StoreError::HighWaterInvalid {
                        path: hwm_path.clone(),
                    },
                )?;
                if meta.counter < high {
                    return Err(StoreError::RolledBack {
                        store_counter: meta.counter,
                        high_water: high,
                    });
                }
                // Verified: now open it for real (redb writes its header here, and repairs
                // the file if it was not closed cleanly, as it just did in memory).
                let db = Builder::new()
                    .set_cache_size(CACHE_BYTES)
                    .open(&db_path)
                    .map_err(|e| open_err(&db_path, e))?;
                // The same bytes we verified? (Nothing else may write while we hold the lock.)
                let now = {
                    let txn = db.begin_read().map_err(|e| db_err(&db_path, e))?;
                    let t = txn.open_table(META).map_err(|e| db_err(&db_path, e))?;
                    let v = t.get(META_KEY).map_err(|e| db_err(&db_path, e))?;
                    v.map(|v| v.value().to_vec())
                };
                if now.as_deref() != Some(meta_value.as_slice()) {
                    return Err(corrupt(
                        &db_path,
                        None,
                        "the store changed while it was opened",
                    ));
                }
                let mut stats = StoreStats {
                    commit_counter: meta.counter,
                    ..StoreStats::default()
                };
                if meta.counter > high {
                    // A crash between a commit and its high-water write: catch up.
                    if hwm.write(&sealer, &meta.store_id, meta.counter).is_err() {
                        stats.high_water_failures += 1;
                    }
                }
                // Image files no record names: staged and never committed, or replaced
                // with a crash before they were deleted.
                memfile::collect_garbage(&memory_dir, &files);
                Ok(Store {
                    db,
                    sealer,
                    path: db_path,
                    memory_dir,
                    hwm_path,
                    store_id: meta.store_id,
                    inner: Mutex::new(Inner {
                        root: meta.root,
                        counter: meta.counter,
                        hwm,
                    }),
                    stats: Mutex::new(stats),
                })
            }
        }
    }

    /// Creates a new store (or finishes creating one that has no meta record yet).
    fn create(
        db_path: PathBuf,
        sealer: Sealer,
        hwm: Option<Hwm>,
        hwm_path: &Path,
        memory_dir: PathBuf,
    ) -> Result<Store, StoreError> {
        // The high-water-mark file comes first, so that a store file never exists without
        // one (after a crash here, a store file without meta is finished on the next open).
        let (hwm, store_id) = match hwm {
            Some(hwm) => {
                let slots = hwm.read(&sealer)?;
                let best = slots.iter().max_by_key(|s| s.counter).copied().ok_or(
                    StoreError::HighWaterInvalid {
                        path: hwm_path.to_path_buf(),
                    },
                )?;
                if best.counter > 0 {
                    return Err(StoreError::StoreMissing {
                        path: db_path,
                        high_water: best.counter,
                    });
                }
                (hwm, best.store_id)
            }
            None => {
                let mut store_id = [0u8; 16];
                getrandom::fill(&mut store_id).map_err(|e| StoreError::Random(e.to_string()))?;
                (Hwm::create(hwm_path, &sealer, &store_id)?, store_id)
            }
        };
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&db_path)
            .map_err(|e| open_err(&db_path, e))?;
        let meta = Meta {
            version: FORMAT_VERSION,
            store_id,
            counter: 0,
            root: Acc::ZERO,
        };
        let mut txn = db.begin_write().map_err(|e| db_err(&db_path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err(&db_path, redb::Error::from(e)))?;
        for table in OBJECT_TABLES {
            txn.open_table(definition(table))
                .map_err(|e| db_err(&db_path, e))?;
        }
        {
            let mut t = txn.open_table(META).map_err(|e| db_err(&db_path, e))?;
            t.insert(META_KEY, meta.seal(&sealer)?.as_slice())
                .map_err(|e| db_err(&db_path, e))?;
        }
        txn.commit().map_err(|e| db_err(&db_path, e))?;
        sync_parent_dir(&db_path).map_err(|e| io(&db_path, e))?;
        Ok(Store {
            db,
            sealer,
            path: db_path,
            memory_dir,
            hwm_path: hwm_path.to_path_buf(),
            store_id,
            inner: Mutex::new(Inner {
                root: Acc::ZERO,
                counter: 0,
                hwm,
            }),
            stats: Mutex::new(StoreStats::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Inner is only changed after a commit succeeded, all at once: a panic elsewhere
        // cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_lock(&self) -> MutexGuard<'_, StoreStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, e)
    }

    fn corrupt_at(&self, table: Table, key: &[u8], detail: impl Into<String>) -> StoreError {
        corrupt(&self.path, Some(record_ref(table, key)), detail)
    }

    fn unseal_at(&self, table: Table, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer
            .unseal(table, key, value)
            .map_err(|e| self.corrupt_at(table, key, e.describe()))
    }

    /// Seals chunk records (key, sealed value, term), in the order given, on up to
    /// [`SEAL_THREADS`] threads when there are many.
    #[allow(clippy::type_complexity)]
    fn seal_chunks(
        &self,
        id: &ObjectKey,
        chunks: &[(u32, Vec<u8>)],
    ) -> Result<Vec<([u8; 20], Vec<u8>, [u8; 32])>, StoreError> {
        let seal_one = |(index, bytes): &(u32, Vec<u8>)| {
            let key = raw::chunk_key(id, *index);
            let value = self.sealer.seal(Table::Chunks, &key, &[], bytes)?;
            let term = self.term_at(Table::Chunks, &key, &value)?;
            Ok((key, value, term))
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(SEAL_THREADS);
        if threads < 2 || chunks.len() < PARALLEL_SEAL_MIN {
            return chunks.iter().map(seal_one).collect();
        }
        let per = chunks.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut parts = chunks.chunks(per);
            // This thread seals the first part while the others seal the rest.
            let first = parts.next().unwrap_or_default();
            let handles: Vec<_> = parts
                .map(|part| scope.spawn(move || part.iter().map(seal_one).collect::<Vec<_>>()))
                .collect();
            let mut out: Vec<Result<_, StoreError>> = Vec::with_capacity(chunks.len());
            out.extend(first.iter().map(seal_one));
            for h in handles {
                match h.join() {
                    Ok(part) => out.extend(part),
                    Err(_) => {
                        return Err(StoreError::KeyUnavailable(
                            "a sealing thread stopped".into(),
                        ));
                    }
                }
            }
            out.into_iter().collect()
        })
    }

    fn term_at(&self, table: Table, key: &[u8], value: &[u8]) -> Result<[u8; 32], StoreError> {
        self.sealer
            .term(table, key, value)
            .map_err(|e| self.corrupt_at(table, key, e.describe()))
    }

    /// Every object, fully unsealed and checked (root + HWM are checked in `open`).
    ///
    /// Waits for a commit in progress and holds commits off while it reads (a commit that
    /// replaced an object's memory image deletes the old image's file once it is durable).
    pub fn load_all(&self) -> Result<Vec<StoredObject>, StoreError> {
        let _commits = self.lock();
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let ids: Vec<ObjectKey> = {
            let images = txn.open_table(raw::IMAGES).map_err(|e| self.err(e))?;
            let mut ids = Vec::new();
            for entry in images.iter().map_err(|e| self.err(e))? {
                let (k, _) = entry.map_err(|e| self.err(e))?;
                let (id, _) = raw::parse_key(Table::Images, k.value())
                    .ok_or_else(|| self.corrupt_at(Table::Images, k.value(), "bad key"))?;
                ids.push(id);
            }
            ids
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(o) = self.load_in(&txn, &id)? {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// One object, fully unsealed, or `None` if it has no image.
    /// Holds commits off while it reads, as [`Store::load_all`] does.
    pub fn load(&self, id: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let _commits = self.lock();
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        self.load_in(&txn, id)
    }

    fn load_in(
        &self,
        txn: &ReadTransaction,
        id: &ObjectKey,
    ) -> Result<Option<StoredObject>, StoreError> {
        let image = {
            let t = txn.open_table(raw::IMAGES).map_err(|e| self.err(e))?;
            let Some(v) = t.get(id.as_slice()).map_err(|e| self.err(e))? else {
                return Ok(None);
            };
            let plain = self.unseal_at(Table::Images, id, v.value())?;
            decode_image(&plain)
                .ok_or_else(|| self.corrupt_at(Table::Images, id, "the image does not decode"))?
        };
        let head = {
            let t = txn.open_table(raw::HEADS).map_err(|e| self.err(e))?;
            match t.get(id.as_slice()).map_err(|e| self.err(e))? {
                None => None,
                Some(v) => {
                    let bytes = self.unseal_at(Table::Heads, id, v.value())?;
                    let seq = head_seq(v.value())
                        .ok_or_else(|| self.corrupt_at(Table::Heads, id, "no seq"))?;
                    Some(HeadRecord { seq, bytes })
                }
            }
        };
        let mut memory = Vec::new();
        match txn.open_table(raw::MEMORY) {
            // A version-1 store not written to since: no images.
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.err(e)),
            Ok(t) => {
                let lo = raw::chunk_key(id, 0);
                let hi = raw::chunk_key(id, u32::MAX);
                let mut order = SegmentOrder::START;
                for entry in t
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(|e| self.err(e))?
                {
                    let (k, v) = entry.map_err(|e| self.err(e))?;
                    let index = raw::parse_key(Table::Memory, k.value()).and_then(|(_, i)| i);
                    let plain = self.unseal_at(Table::Memory, k.value(), v.value())?;
                    order
                        .take(index, plain.len())
                        .map_err(|e| self.corrupt_at(Table::Memory, k.value(), e))?;
                    if memory.is_empty() {
                        memory = plain;
                    } else {
                        memory.extend_from_slice(&plain);
                    }
                }
            }
        }
        match txn.open_table(raw::MEMORY_FILES) {
            // A store not written to since version 3: no image files.
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.err(e)),
            Ok(t) => {
                if let Some(v) = t.get(id.as_slice()).map_err(|e| self.err(e))? {
                    let record = self.file_record(id, v.value())?;
                    memory = memfile::read_image(&self.sealer, &self.memory_dir, id, &record)
                        .map_err(|e| {
                            corrupt(&e.path, Some(record_ref(Table::MemoryFiles, id)), e.detail)
                        })?;
                }
            }
        }
        let mut chunks = BTreeMap::new();
        {
            let t = txn.open_table(raw::CHUNKS).map_err(|e| self.err(e))?;
            let lo = raw::chunk_key(id, 0);
            let hi = raw::chunk_key(id, u32::MAX);
            for entry in t
                .range(lo.as_slice()..=hi.as_slice())
                .map_err(|e| self.err(e))?
            {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let index = raw::parse_key(Table::Chunks, k.value())
                    .and_then(|(_, i)| i)
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| self.corrupt_at(Table::Chunks, k.value(), "bad key"))?;
                chunks.insert(index, self.unseal_at(Table::Chunks, k.value(), v.value())?);
            }
        }
        let lineage_segments = {
            let t = txn.open_table(raw::LINEAGE).map_err(|e| self.err(e))?;
            let lo = raw::indexed_key(id, 0);
            let hi = raw::indexed_key(id, u64::MAX);
            let mut n = 0u64;
            for entry in t
                .range(lo.as_slice()..=hi.as_slice())
                .map_err(|e| self.err(e))?
            {
                entry.map_err(|e| self.err(e))?;
                n += 1;
            }
            n
        };
        let mut pending = Vec::new();
        {
            let t = txn.open_table(raw::MESSAGES).map_err(|e| self.err(e))?;
            let lo = raw::indexed_key(id, 0);
            let hi = raw::indexed_key(id, u64::MAX);
            for entry in t
                .range(lo.as_slice()..=hi.as_slice())
                .map_err(|e| self.err(e))?
            {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let arrival = raw::parse_key(Table::Messages, k.value())
                    .and_then(|(_, i)| i)
                    .ok_or_else(|| self.corrupt_at(Table::Messages, k.value(), "bad key"))?;
                pending.push((
                    arrival,
                    self.unseal_at(Table::Messages, k.value(), v.value())?,
                ));
            }
        }
        Ok(Some(StoredObject {
            id: *id,
            image,
            head,
            memory,
            chunks,
            lineage_segments,
            pending,
        }))
    }

    /// Lineage segments of one object concatenated, in order.
    pub fn lineage(&self, id: &ObjectKey) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        {
            let images = txn.open_table(raw::IMAGES).map_err(|e| self.err(e))?;
            if images
                .get(id.as_slice())
                .map_err(|e| self.err(e))?
                .is_none()
            {
                return Err(StoreError::UnknownObject { id: *id });
            }
        }
        let t = txn.open_table(raw::LINEAGE).map_err(|e| self.err(e))?;
        let lo = raw::indexed_key(id, 0);
        let hi = raw::indexed_key(id, u64::MAX);
        let mut out = Vec::new();
        let mut expected = 0u64;
        for entry in t
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(|e| self.err(e))?
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            if raw::parse_key(Table::Lineage, k.value()).and_then(|(_, i)| i) != Some(expected) {
                return Err(self.corrupt_at(
                    Table::Lineage,
                    k.value(),
                    format!("lineage segment {expected} is missing"),
                ));
            }
            out.extend_from_slice(&self.unseal_at(Table::Lineage, k.value(), v.value())?);
            expected = expected.saturating_add(1);
        }
        Ok(out)
    }

    /// One durable write transaction for the whole batch. Returns after fsync.
    ///
    /// Ops apply in order; if one fails, nothing of the batch is written and the error is
    /// returned (the store stays usable). An empty batch writes nothing and returns the
    /// current counter. After the commit is durable, the high-water mark is written and
    /// fdatasync'ed; if that fails the commit still stands (it is durable) and
    /// [`StoreStats::high_water_failures`] counts it.
    pub fn commit(&self, batch: &CommitBatch) -> Result<CommitReceipt, StoreError> {
        self.commit_as(batch, false)
    }

    /// [`Store::commit`], writing [`Op::PutMemory`] images as format 2 did (records in the
    /// `memory` table, not files). For tests of the stores older builds left, which this
    /// build still reads; nothing else calls it.
    #[doc(hidden)]
    pub fn commit_format2_images(&self, batch: &CommitBatch) -> Result<CommitReceipt, StoreError> {
        self.commit_as(batch, true)
    }

    fn commit_as(&self, batch: &CommitBatch, format2: bool) -> Result<CommitReceipt, StoreError> {
        let mut inner = self.lock();
        if batch.ops.is_empty() {
            return Ok(CommitReceipt {
                commit_counter: inner.counter,
            });
        }
        let counter = inner.counter.checked_add(1).ok_or_else(|| {
            corrupt(
                &self.path,
                Some(meta_ref()),
                "the commit counter is exhausted",
            )
        })?;
        // Whole images are written to files of their own first, durable before the
        // transaction that names them; dropped (deleted) if the batch fails before it.
        let mut staged = Vec::new();
        for op in batch.ops.iter().filter(|_| !format2) {
            if let Op::PutMemory { id, image } = op {
                staged.push(self.stage_memory(id, image.len(), &mut |at, out| {
                    image
                        .get(at..at.saturating_add(out.len()))
                        .map(|b| out.copy_from_slice(b))
                        .is_some()
                })?);
            }
        }
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(redb::Error::from(e)))?;
        let mut w = Writer {
            store: self,
            root: inner.root,
            known: HashSet::new(),
            records: 0,
            bytes: 0,
            staged: staged.into_iter(),
            format2,
            staged_taken: 0,
            keyed_taken: 0,
            named: Vec::new(),
            replaced: Vec::new(),
        };
        {
            let mut tables = Tables {
                images: txn.open_table(raw::IMAGES).map_err(|e| self.err(e))?,
                heads: txn.open_table(raw::HEADS).map_err(|e| self.err(e))?,
                chunks: txn.open_table(raw::CHUNKS).map_err(|e| self.err(e))?,
                lineage: txn.open_table(raw::LINEAGE).map_err(|e| self.err(e))?,
                messages: txn.open_table(raw::MESSAGES).map_err(|e| self.err(e))?,
                // Created here in a version-1 store (whose meta becomes version 2 below).
                memory: txn.open_table(raw::MEMORY).map_err(|e| self.err(e))?,
                // Created here in a store of an earlier version.
                memory_files: txn.open_table(raw::MEMORY_FILES).map_err(|e| self.err(e))?,
            };
            for op in &batch.ops {
                // On error the transaction is dropped, which aborts it.
                w.apply(&mut tables, op)?;
            }
        }
        let meta = Meta {
            version: FORMAT_VERSION,
            store_id: self.store_id,
            counter,
            root: w.root,
        };
        {
            let mut t = txn.open_table(META).map_err(|e| self.err(e))?;
            t.insert(META_KEY, meta.seal(&self.sealer)?.as_slice())
                .map_err(|e| self.err(e))?;
        }
        // From here the commit may reach the disk even if it reports an error: the files it
        // names are kept (one left unnamed is deleted at the next open).
        for m in &w.named {
            m.keep();
        }
        txn.commit().map_err(|e| self.err(e))?;
        for old in &w.replaced {
            // Best effort: one left behind is deleted at the next open.
            let _ = std::fs::remove_file(self.memory_dir.join(old));
        }

        inner.root = w.root;
        inner.counter = counter;
        let hwm_ok = inner
            .hwm
            .write(&self.sealer, &self.store_id, counter)
            .is_ok();
        let mut stats = self.stats_lock();
        stats.commits += 1;
        stats.records_written += w.records;
        stats.staged_images += w.staged_taken;
        stats.keyed_images += w.keyed_taken;
        stats.bytes_written += w.bytes;
        stats.commit_counter = counter;
        if !hwm_ok {
            stats.high_water_failures += 1;
        }
        Ok(CommitReceipt {
            commit_counter: counter,
        })
    }

    /// Writes the whole memory image of object `id` — `len` bytes, which `fill(offset, out)`
    /// gives a segment at a time (false if it cannot) — to a file of the store's, sealed and
    /// durable, ahead of the commit that makes it the object's image
    /// ([`Op::PutStagedMemory`]). It does not wait for commits, and commits do not wait for
    /// it: it may run on any thread while others commit. An image that no commit takes is
    /// deleted when the returned handle's last clone is dropped, or at the next open.
    pub fn stage_memory(
        &self,
        id: &ObjectKey,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<StagedMemory, StoreError> {
        memfile::write_image(&self.sealer, &self.memory_dir, self.store_id, id, len, fill)
    }

    /// Starts writing a [`KeyedImage`] of object `id`: a memory image whose file is written as
    /// it is given (ciphertext sealed by someone else, such as an arriving migration package
    /// as its bytes come in) and whose key the store keeps in its sealed record. Finished
    /// ([`KeyedImageWriter::finish`]), it is a [`StagedMemory`] like one [`Store::stage_memory`]
    /// wrote, for [`Op::PutStagedMemory`]. Like that, it does not wait for commits.
    pub fn stage_keyed_image(&self, id: &ObjectKey) -> Result<KeyedImageWriter, StoreError> {
        memfile::keyed_writer(&self.memory_dir, self.store_id, id)
    }

    /// The image-file record stored for object `id`.
    fn file_record(&self, id: &ObjectKey, value: &[u8]) -> Result<FileRecord, StoreError> {
        let plain = self.unseal_at(Table::MemoryFiles, id, value)?;
        FileRecord::decode(&plain)
            .ok_or_else(|| self.corrupt_at(Table::MemoryFiles, id, "the record does not decode"))
    }

    /// Counters since open, and the commit counter.
    pub fn stats(&self) -> StoreStats {
        *self.stats_lock()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The high-water-mark file.
    pub fn high_water_path(&self) -> &Path {
        &self.hwm_path
    }
}

/// Most threads that seal the chunks of one commit.
const SEAL_THREADS: usize = 4;
/// Fewer chunks than this are sealed on the committing thread alone.
const PARALLEL_SEAL_MIN: usize = 256;
/// Chunks sealed before they are inserted (4 MiB): bounds what is held at once.
const SEAL_BATCH: usize = 1024;

type WTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

struct Tables<'txn> {
    images: WTable<'txn>,
    heads: WTable<'txn>,
    chunks: WTable<'txn>,
    lineage: WTable<'txn>,
    messages: WTable<'txn>,
    memory: WTable<'txn>,
    memory_files: WTable<'txn>,
}

/// The state of one batch being applied.
struct Writer<'s> {
    store: &'s Store,
    root: Acc,
    /// Objects known to have an image in this transaction.
    known: HashSet<ObjectKey>,
    records: u64,
    bytes: u64,
    /// The files written for this batch's `PutMemory` ops, in order.
    staged: std::vec::IntoIter<StagedMemory>,
    /// Images go to the `memory` table as records (format 2; tests only).
    format2: bool,
    /// `PutStagedMemory` ops applied.
    staged_taken: u64,
    /// Of those, keyed images.
    keyed_taken: u64,
    /// The image files this batch names.
    named: Vec<StagedMemory>,
    /// The files of the images this batch replaces (deleted once it is durable).
    replaced: Vec<String>,
}

impl Writer<'_> {
    fn require(&mut self, images: &WTable<'_>, id: &ObjectKey) -> Result<(), StoreError> {
        if self.known.contains(id) {
            return Ok(());
        }
        if images
            .get(id.as_slice())
            .map_err(|e| self.store.err(e))?
            .is_none()
        {
            return Err(StoreError::UnknownObject { id: *id });
        }
        self.known.insert(*id);
        Ok(())
    }

    /// Inserts a sealed value; returns the old value's clear prefix. Keeps the root.
    fn put(
        &mut self,
        t: &mut WTable<'_>,
        table: Table,
        key: &[u8],
        prefix: &[u8],
        plaintext: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.store;
        let value = s.sealer.seal(table, key, prefix, plaintext)?;
        let term = s.term_at(table, key, &value)?;
        self.put_sealed(t, table, key, &value, &term)
    }

    /// [`Writer::put`] of a value already sealed for `key` in `table`, with its term.
    fn put_sealed(
        &mut self,
        t: &mut WTable<'_>,
        table: Table,
        key: &[u8],
        value: &[u8],
        term: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.store;
        let old = t.insert(key, value).map_err(|e| s.err(e))?;
        let old_prefix = match old {
            None => None,
            Some(old) => {
                let old = old.value();
                self.root.sub(&s.term_at(table, key, old)?);
                Some(old.get(..table.prefix_len()).unwrap_or_default().to_vec())
            }
        };
        self.root.add(term);
        self.records += 1;
        self.bytes += value.len() as u64;
        Ok(old_prefix)
    }

    /// Removes the records of `table` with keys in `lo..=hi`, taking their terms out of the
    /// root.
    fn remove_range(
        &mut self,
        t: &mut WTable<'_>,
        table: Table,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        for entry in t.range(lo..=hi).map_err(|e| self.store.err(e))? {
            let (k, _) = entry.map_err(|e| self.store.err(e))?;
            keys.push(k.value().to_vec());
        }
        for key in keys {
            if let Some(old) = t.remove(key.as_slice()).map_err(|e| self.store.err(e))? {
                self.root
                    .sub(&self.store.term_at(table, &key, old.value())?);
            }
        }
        Ok(())
    }

    /// Makes `memory` (a durable file) the object's image: drops its chunks and any older
    /// image, and records the file.
    fn put_memory_file(
        &mut self,
        t: &mut Tables<'_>,
        id: &ObjectKey,
        memory: StagedMemory,
    ) -> Result<(), StoreError> {
        self.require(&t.images, id)?;
        let (lo, hi) = (raw::chunk_key(id, 0), raw::chunk_key(id, u32::MAX));
        self.remove_range(&mut t.chunks, Table::Chunks, &lo, &hi)?;
        self.remove_range(&mut t.memory, Table::Memory, &lo, &hi)?;
        let old = match t
            .memory_files
            .get(id.as_slice())
            .map_err(|e| self.store.err(e))?
        {
            Some(v) => Some(self.store.file_record(id, v.value())?),
            None => None,
        };
        let record = memory.record();
        if let Some(old) = old.filter(|o| o.name != record.name) {
            self.replaced.push(raw::memory_file_name(id, &old.name));
        }
        self.put(
            &mut t.memory_files,
            Table::MemoryFiles,
            id,
            &[],
            &record.encode(),
        )?;
        self.bytes += memory.len();
        self.named.push(memory);
        Ok(())
    }

    fn apply(&mut self, t: &mut Tables<'_>, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::PutImage { id, image } => {
                if self
                    .put(&mut t.images, Table::Images, id, &[], &encode_image(image))?
                    .is_some()
                {
                    return Err(StoreError::Exists { id: *id });
                }
                self.known.insert(*id);
            }
            Op::PutHead { id, head } => {
                self.require(&t.images, id)?;
                let old = self.put(
                    &mut t.heads,
                    Table::Heads,
                    id,
                    &head.seq.to_be_bytes(),
                    &head.bytes,
                )?;
                if let Some(old) = old {
                    let stored = <[u8; 8]>::try_from(old.as_slice())
                        .map(u64::from_be_bytes)
                        .map_err(|_| self.store.corrupt_at(Table::Heads, id, "no seq"))?;
                    if head.seq <= stored {
                        return Err(StoreError::SeqNotIncreasing {
                            id: *id,
                            stored,
                            given: head.seq,
                        });
                    }
                }
            }
            Op::PutChunks { id, chunks } => {
                self.require(&t.images, id)?;
                if let Some((index, bytes)) = chunks.iter().find(|(_, b)| b.len() > CHUNK_SIZE) {
                    return Err(StoreError::ChunkTooLarge {
                        id: *id,
                        index: *index,
                        len: bytes.len(),
                    });
                }
                // Sealing (the bulk of the work for many chunks) runs on a few threads, a
                // batch at a time; the sealed values go into the table in order, as one after
                // the other would.
                for batch in chunks.chunks(SEAL_BATCH) {
                    for (key, value, term) in self.store.seal_chunks(id, batch)? {
                        self.put_sealed(&mut t.chunks, Table::Chunks, &key, &value, &term)?;
                    }
                }
            }
            Op::PutMemory { id, image } if self.format2 => {
                self.require(&t.images, id)?;
                let (lo, hi) = (raw::chunk_key(id, 0), raw::chunk_key(id, u32::MAX));
                self.remove_range(&mut t.chunks, Table::Chunks, &lo, &hi)?;
                self.remove_range(&mut t.memory, Table::Memory, &lo, &hi)?;
                if t.memory_files
                    .remove(id.as_slice())
                    .map_err(|e| self.store.err(e))?
                    .is_some()
                {
                    return Err(StoreError::StagedMemory {
                        id: *id,
                        reason: "format-2 images are written only for objects without a file",
                    });
                }
                for (i, segment) in (0u32..).zip(image.chunks(MEMORY_SEGMENT)) {
                    let key = raw::chunk_key(id, i);
                    let mut value = vec![0u8; memory_value_len(segment.len())];
                    self.store
                        .sealer
                        .seal_memory_into(&key, segment, &mut value)?;
                    let term = self.store.term_at(Table::Memory, &key, &value)?;
                    self.put_sealed(&mut t.memory, Table::Memory, &key, &value, &term)?;
                }
            }
            Op::PutMemory { id, .. } => {
                let memory = self.staged.next().ok_or(StoreError::StagedMemory {
                    id: *id,
                    reason: "no file was written for it",
                })?;
                self.put_memory_file(t, id, memory)?;
            }
            Op::PutStagedMemory { id, memory } => {
                let refuse = |reason| Err(StoreError::StagedMemory { id: *id, reason });
                if memory.store_id() != &self.store.store_id {
                    return refuse("it was staged by another store");
                }
                if memory.object() != id {
                    return refuse("it was staged for another object");
                }
                if memory.is_kept() || self.named.iter().any(|m| m == memory) {
                    return refuse("a commit has taken it already");
                }
                self.put_memory_file(t, id, memory.clone())?;
                self.staged_taken += 1;
                if memory.record().is_keyed() {
                    self.keyed_taken += 1;
                }
            }
            Op::AppendLineage { id, segment, bytes } => {
                self.require(&t.images, id)?;
                let lo = raw::indexed_key(id, 0);
                let hi = raw::indexed_key(id, u64::MAX);
                let last = t
                    .lineage
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(|e| self.store.err(e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| self.store.err(e))?
                    .map(|(k, _)| {
                        raw::parse_key(Table::Lineage, k.value())
                            .and_then(|(_, i)| i)
                            .ok_or_else(|| {
                                self.store
                                    .corrupt_at(Table::Lineage, k.value(), "a bad key")
                            })
                    })
                    .transpose()?;
                // The segment after the last (none after u64::MAX).
                let expected = match last {
                    None => Some(0),
                    Some(n) => n.checked_add(1),
                };
                if expected != Some(*segment) {
                    return Err(StoreError::LineageGap {
                        id: *id,
                        expected: expected.unwrap_or(u64::MAX),
                        given: *segment,
                    });
                }
                self.put(
                    &mut t.lineage,
                    Table::Lineage,
                    &raw::indexed_key(id, *segment),
                    &[],
                    bytes,
                )?;
            }
            Op::PutMessage { id, arrival, bytes } => {
                self.require(&t.images, id)?;
                self.put(
                    &mut t.messages,
                    Table::Messages,
                    &raw::indexed_key(id, *arrival),
                    &[],
                    bytes,
                )?;
            }
            Op::DeleteMessagesThrough { id, arrival } => {
                self.require(&t.images, id)?;
                let lo = raw::indexed_key(id, 0);
                let hi = raw::indexed_key(id, *arrival);
                self.remove_range(&mut t.messages, Table::Messages, &lo, &hi)?;
            }
        }
        Ok(())
    }
}
