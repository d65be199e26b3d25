//! The one error type of the store.
//!
//! Variants fall in three groups, kept apart on purpose:
//! - **the caller's mistake** in a batch ([`StoreError::Exists`], [`StoreError::UnknownObject`],
//!   [`StoreError::SeqNotIncreasing`], [`StoreError::LineageGap`],
//!   [`StoreError::ChunkTooLarge`], [`StoreError::MemoryTooLarge`],
//!   [`StoreError::StagedMemory`]): the batch is not written, the store stays usable;
//! - **what the disk says** ([`StoreError::Corrupt`], [`StoreError::ForeignOrWrongKey`],
//!   [`StoreError::RolledBack`], [`StoreError::HighWaterMissing`],
//!   [`StoreError::HighWaterInvalid`], [`StoreError::StoreMissing`],
//!   [`StoreError::UnsupportedVersion`]): `Store::open` refuses and changes nothing;
//! - **the environment** ([`StoreError::Io`], [`StoreError::Database`], [`StoreError::Locked`],
//!   [`StoreError::KeyUnavailable`], the key-file errors, [`StoreError::Random`]).

use std::fmt;
use std::path::PathBuf;

use crate::ObjectKey;

/// The tables of the store, as named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// Object images (name, descriptor, module), one per object.
    Images,
    /// Head records, one per object.
    Heads,
    /// 4 KiB memory chunks, by chunk index.
    Chunks,
    /// Lineage segments, by segment number.
    Lineage,
    /// Pending messages, by arrival number.
    Messages,
    /// Memory images: an object's whole memory as of its last image write, in segments of
    /// [`crate::MEMORY_SEGMENT`] bytes by segment number (format version 2).
    Memory,
    /// Memory images kept in files of their own (format version 3), one record per object:
    /// the file's name, the memory's length and each segment's salt and tag.
    MemoryFiles,
    /// The store's own sealed meta record (format version, store id, commit counter, root).
    Meta,
}

impl Table {
    /// The byte that stands for the table in associated data and accumulator terms.
    pub(crate) const fn tag(self) -> u8 {
        match self {
            Table::Images => 1,
            Table::Heads => 2,
            Table::Chunks => 3,
            Table::Lineage => 4,
            Table::Messages => 5,
            Table::Memory => 6,
            Table::MemoryFiles => 7,
            Table::Meta => 0xff,
        }
    }

    /// The redb table name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Images => "images",
            Table::Heads => "heads",
            Table::Chunks => "chunks",
            Table::Lineage => "lineage",
            Table::Messages => "messages",
            Table::Memory => "memory",
            Table::MemoryFiles => "memory_files",
            Table::Meta => "meta",
        }
    }

    /// Length of the record key after the 16-byte object id (big-endian index), if any.
    pub(crate) const fn index_len(self) -> usize {
        match self {
            Table::Images | Table::Heads | Table::MemoryFiles | Table::Meta => 0,
            Table::Chunks | Table::Memory => 4,
            Table::Lineage | Table::Messages => 8,
        }
    }

    /// Length of the clear prefix of a sealed value (bound by the AEAD tag as associated data).
    pub(crate) const fn prefix_len(self) -> usize {
        match self {
            // The head's seq.
            Table::Heads => 8,
            // The format version.
            Table::Meta => 4,
            _ => 0,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which record an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRef {
    /// The table the record is in.
    pub table: Table,
    /// The object the record belongs to (`None` for the meta record or an unparsable key).
    pub object: Option<ObjectKey>,
    /// The chunk index, segment number or arrival number, for tables keyed by one.
    pub index: Option<u64>,
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table `{}`", self.table)?;
        if let Some(object) = &self.object {
            write!(f, ", object {}", hex::encode(object))?;
        }
        if let Some(index) = self.index {
            write!(f, ", key {index}")?;
        }
        Ok(())
    }
}

fn record_suffix(record: &Option<RecordRef>) -> String {
    match record {
        Some(r) => format!(" ({r})"),
        None => String::new(),
    }
}

/// Everything that can go wrong in the store. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("I/O error on {path}: {source}; check the disk, free space and permissions")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The store file is not a readable store: not a redb file, damaged, a record that does
    /// not unseal, or a set of records that does not match the sealed root (a record rolled
    /// back, deleted or copied in). Nothing was changed.
    #[error(
        "store {path} is corrupt: {detail}{}; nothing was changed: restore the store \
         from a backup or migrate the objects from another host",
        record_suffix(record)
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The record at fault, when one is.
        record: Option<RecordRef>,
        /// What was found.
        detail: String,
    },

    /// The meta record does not unseal with this key. Nothing was changed.
    #[error(
        "store {path} was sealed with a different key: a foreign store or the wrong key \
         file; nothing was changed: use the key this store was created with"
    )]
    ForeignOrWrongKey {
        /// The store file.
        path: PathBuf,
    },

    /// The store's commit counter is below the high-water mark: the store file was replaced
    /// by an older copy. Nothing was changed.
    #[error(
        "store rolled back: its commit counter is {store_counter} but store.hwm records \
         {high_water} durable commits; nothing was changed: restore the latest store.redb \
         (do not delete store.hwm to get past this)"
    )]
    RolledBack {
        /// The commit counter in the store's meta record.
        store_counter: u64,
        /// The highest commit counter the high-water-mark file vouches for.
        high_water: u64,
    },

    /// The store exists but its high-water-mark file does not.
    #[error(
        "{path} is missing next to an existing store: rollback protection cannot be \
         checked; nothing was changed: restore store.hwm (it is never recreated for an \
         existing store)"
    )]
    HighWaterMissing {
        /// The missing file.
        path: PathBuf,
    },

    /// No slot of the high-water-mark file verifies with this key and store.
    #[error(
        "{path} does not verify with this key for this store (damaged, or from another \
         store); nothing was changed: restore the matching store.hwm"
    )]
    HighWaterInvalid {
        /// The high-water-mark file.
        path: PathBuf,
    },

    /// The store file is missing (or empty) but the high-water-mark file records commits.
    #[error(
        "the store file {path} is missing or empty, but store.hwm records {high_water} \
         commits; nothing was created: restore store.redb, or move store.hwm away to \
         start a new, empty store"
    )]
    StoreMissing {
        /// The store file.
        path: PathBuf,
        /// The commits the high-water-mark file vouches for.
        high_water: u64,
    },

    /// The store was written by a newer (or unknown) format version.
    #[error(
        "store format version {found} is not supported (this build reads version \
         {supported}); nothing was changed: run a newer sojourn"
    )]
    UnsupportedVersion {
        /// The version in the store.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },

    /// Another process (or another `Store` in this process) has the store open.
    #[error("store {path} is in use by another process; stop it first")]
    Locked {
        /// The locked file.
        path: PathBuf,
    },

    /// The database engine failed at run time.
    #[error("database error on {path}: {source}; check the disk, then reopen the store")]
    Database {
        /// The store file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::Error,
    },

    /// The sealing key cannot be obtained from its source.
    #[error("sealing key unavailable: {0}")]
    KeyUnavailable(String),

    /// The software key file has permission bits for group or others (0600 or stricter is
    /// required).
    #[error(
        "key file {path} has mode {mode:o}, open to group or others; run \
         `chmod 600 {path}`"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The software key file is not 64 hex characters (and an optional newline).
    #[error(
        "key file {path} is malformed: {detail}; it must hold exactly 64 hex characters \
         and an optional newline: restore it (a new key cannot open the existing store)"
    )]
    KeyFileMalformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}; check the system's entropy source")]
    Random(String),

    /// `PutImage` for an object that already has an image. The batch was not written.
    #[error("object {} already has an image; images are written once", hex::encode(.id))]
    Exists {
        /// The object.
        id: ObjectKey,
    },

    /// An op other than `PutImage` for an object without an image. The batch was not written.
    #[error("object {} is unknown: put its image first", hex::encode(.id))]
    UnknownObject {
        /// The object.
        id: ObjectKey,
    },

    /// `PutHead` with a seq not above the stored head's. The batch was not written.
    #[error(
        "head seq {given} for object {} is not above the stored seq {stored}; the host \
         must never write an older head",
        hex::encode(.id)
    )]
    SeqNotIncreasing {
        /// The object.
        id: ObjectKey,
        /// The stored head's seq.
        stored: u64,
        /// The seq in the batch.
        given: u64,
    },

    /// `AppendLineage` with a segment number other than the next one. The batch was not
    /// written.
    #[error(
        "lineage segment {given} for object {} is not the next one ({expected})",
        hex::encode(.id)
    )]
    LineageGap {
        /// The object.
        id: ObjectKey,
        /// The next segment number.
        expected: u64,
        /// The segment number in the batch.
        given: u64,
    },

    /// A memory chunk larger than 4096 bytes. The batch was not written.
    #[error(
        "chunk {index} of object {} is {len} bytes; chunks are at most 4096 bytes",
        hex::encode(.id)
    )]
    ChunkTooLarge {
        /// The object.
        id: ObjectKey,
        /// The chunk index.
        index: u32,
        /// Its length.
        len: usize,
    },
    /// A memory image with more segments than a `u32` numbers.
    #[error(
        "the memory image of object {} is too large ({len} bytes)",
        hex::encode(.id)
    )]
    MemoryTooLarge {
        /// The object.
        id: ObjectKey,
        /// Its length.
        len: usize,
    },
    /// A staged memory image that this commit cannot take: staged by another store, for
    /// another object, already committed, or whose source ended before its length.
    #[error("the staged memory image of object {} cannot be used: {reason}", hex::encode(.id))]
    StagedMemory {
        /// The object.
        id: ObjectKey,
        /// Why.
        reason: &'static str,
    },
}
