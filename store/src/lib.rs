//! `sojourn-store`: the embedded ACID store of `sojourn host`, sealed at rest.
//!
//! **Layout.** One redb file, `store.redb`, in the data directory, with tables of sealed
//! values keyed by the 16-byte object id (and a big-endian index): `images` (name,
//! descriptor, module; written once), `heads` (the host's opaque head record with its seq),
//! `memory_files` (which file in the `memory/` directory holds the object's whole linear
//! memory as of its last image write, with each segment's salt and tag; see the `memfile`
//! module), `memory` (the same image as ~1 MiB records, as format 2 wrote it; read, no
//! longer written), `chunks` (4 KiB chunks of linear memory by chunk index, written since
//! that image and read over it), `lineage` (append-only segments 0, 1, 2, …) and `messages`
//! (pending messages by arrival number), plus a sealed `meta` record (format version, store
//! id, commit counter, accumulator root). An object's memory is its image with its chunks
//! laid over it; [`Op::PutMemory`] writes a new image file and drops the chunks (what a
//! first checkpoint or an arriving object writes); [`Store::stage_memory`] writes one ahead
//! of its commit ([`Op::PutStagedMemory`]), and [`Store::stage_keyed_image`] keeps a file
//! that someone else sealed as the image (a [`KeyedImage`]: an arrived migration package,
//! whose key the image's sealed record holds). Next to it,
//! `store.hwm` holds the high-water mark. [`Store::commit`] writes a whole [`CommitBatch`] in
//! one redb write transaction with `Durability::Immediate` (redb's default one-phase
//! commit: a torn or forged commit that redb accepted would still fail the root check
//! below): it returns after fsync, or writes nothing. `store.hwm` is also the process lock
//! (flock); a child forked while the store is open holds it until it execs.
//!
//! **The seal.** HKDF-SHA256 turns the 32-byte [`SealingKey`] into an encryption key and a
//! MAC key. Every value is `prefix ‖ nonce (24, random) ‖ XChaCha20-Poly1305 ciphertext ‖
//! tag`, with associated data `"sojourn/store/v1" ‖ table tag ‖ object id ‖ index (BE) ‖
//! prefix`; the clear prefix is the head's seq (heads) or the format version (meta). A
//! record therefore cannot be moved to another object, table or key, and a head cannot
//! claim another seq. Memory-image segments are sealed with AES-256-GCM instead (same layout
//! and associated data; the 24 random bytes are a salt from which HMAC derives the segment's
//! own key, used once): ~1 MiB records, where AES-NI is several times faster.
//!
//! **The accumulator.** What AEAD cannot see is a record replaced by an *older* sealed
//! version of itself, deleted, or copied back in. The meta record holds a multiset hash
//! (MSet-Add-Hash, Clarke et al. 2003): the sum mod 2^256 of HMAC(mac key, table ‖ key ‖
//! nonce ‖ tag) over all live records, updated in the same transaction as the records.
//! [`Store::open`] unseals every record, recomputes the sum and refuses on any difference.
//! Whole-store rollback is caught by `store.hwm`: two MAC'ed slots written alternately and
//! fdatasync'ed after each commit; a store whose commit counter is below the mark is
//! refused ([`StoreError::RolledBack`]). A missing `store.hwm` next to an existing store is
//! refused too; only a brand-new store (no store file, or one with no record) gets a new one.
//!
//! **Threat model.** Against an attacker who can read, alter, delete, copy and roll back
//! files while the daemon is stopped (the image files in `memory/` too: each is pinned, salt
//! and tag of every segment, by its sealed record; a keyed image by the key its record
//! keeps, under which every segment's tag must verify), the store gives confidentiality of every value (not
//! of keys — object ids, chunk indexes, arrival numbers —, value lengths or head seqs) and
//! detection of any change at the next `open`, which then refuses with a typed error and
//! changes nothing (it verifies through an in-memory overlay, including redb's own integrity
//! check and crash recovery; only when all checks pass does it open the file for writing,
//! which redb does by writing its header). Not covered: a rollback of `store.redb` and
//! `store.hwm` *together* to an earlier consistent pair — that needs a platform monotonic
//! counter (issue 6: a vTPM NV counter) — nor changes made while the daemon runs (they are
//! caught by the per-record AEAD on read and by the root at the next open), nor denial of
//! service. The key sources: [`SoftwareKeyFile`] (insecure; a stolen disk is protected only
//! if the key file lives elsewhere), [`SnpDerivedKey`] (feature `snp`: MSG_KEY_REQ, mixing
//! in the launch measurement and guest policy, rooted in the VCEK or, for a VM that
//! migrates whole, the VMRK). On TDX there is no firmware sealing key: the key is to be
//! released by a key broker after attestation — not implemented here.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

mod acc;
mod error;
mod hwm;
mod key;
mod memfile;
mod overlay;
#[doc(hidden)]
pub mod raw;
mod seal;
mod store;

pub use error::{RecordRef, StoreError, Table};
pub use key::{SealingKey, SealingKeySource, SnpDerivedKey, SnpRootKey, SoftwareKeyFile};
pub use memfile::{
    direct_io_supported, ImageRun, KeyedImage, KeyedImageWriter, StagedMemory, DIRECT_ALIGN,
};
pub use store::Store;

/// A 16-byte object id.
pub type ObjectKey = [u8; 16];

/// The largest memory chunk, in bytes.
pub const CHUNK_SIZE: usize = 4096;

/// The on-disk format version this build writes. Version 2 added the `memory` table; a
/// version-1 store (which has none) is read as one with no memory images and becomes version
/// 3 at its next commit. Version 3 writes memory images as files (`memory_files` and the
/// `memory/` directory); the version-2 images in `memory` are still read, until the object's
/// next image replaces them. Version 4 adds keyed images (`memfile::KeyedImage`): an image
/// file the store did not seal, opened by a key its sealed record holds (what an arrived
/// object's memory is until its next image); a build that reads version 3 would not know
/// that record, so it refuses the store as newer instead.
pub const FORMAT_VERSION: u32 = 4;

/// The oldest on-disk format version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The largest memory-image segment, in bytes: 255 chunks, so that one sealed segment (plus
/// redb's leaf overhead) fits a 1 MiB page instead of taking a 2 MiB one.
pub const MEMORY_SEGMENT: usize = 255 * CHUNK_SIZE;

/// An object as stored: everything but its lineage bytes (see [`Store::lineage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The object id.
    pub id: ObjectKey,
    /// Its image, written once at deploy.
    pub image: ObjectImage,
    /// Its latest head record, if one was written.
    pub head: Option<HeadRecord>,
    /// Its memory image (empty if none was written): the memory as of the last
    /// [`Op::PutMemory`].
    pub memory: Vec<u8>,
    /// Its memory chunks by chunk index, written since the image and laid over it.
    pub chunks: BTreeMap<u32, Vec<u8>>,
    /// How many lineage segments it has (numbered `0..lineage_segments`).
    pub lineage_segments: u64,
    /// Its pending messages, by arrival number ascending.
    pub pending: Vec<(u64, Vec<u8>)>,
}

/// What an object is deployed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectImage {
    /// The object's name.
    pub name: String,
    /// The descriptor bytes.
    pub descriptor: Vec<u8>,
    /// The module bytes.
    pub module: Vec<u8>,
}

/// The host's head record of an object: opaque bytes with a sequence number that only
/// increases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRecord {
    /// The sequence number.
    pub seq: u64,
    /// The record (execution checkpoint and lineage writer state, as the host encodes them).
    pub bytes: Vec<u8>,
}

/// Ops written together, in order, in one durable transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitBatch {
    /// The ops.
    pub ops: Vec<Op>,
}

/// One change in a [`CommitBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writes an object's image. Refused with [`StoreError::Exists`] if it has one.
    PutImage {
        /// The object.
        id: ObjectKey,
        /// Its image.
        image: ObjectImage,
    },
    /// Replaces the object's head. Its seq must be above the stored one
    /// ([`StoreError::SeqNotIncreasing`]).
    PutHead {
        /// The object.
        id: ObjectKey,
        /// The new head.
        head: HeadRecord,
    },
    /// Writes memory chunks (each at most [`CHUNK_SIZE`] bytes), replacing those at the
    /// same indexes.
    PutChunks {
        /// The object.
        id: ObjectKey,
        /// `(chunk index, bytes)`.
        chunks: Vec<(u32, Vec<u8>)>,
    },
    /// Replaces the object's whole memory: stores `image` as its memory image (a file of
    /// its own, written and made durable before the transaction) and deletes every memory
    /// chunk and older image it had.
    PutMemory {
        /// The object.
        id: ObjectKey,
        /// The whole memory (shared: the runtime keeps the same bytes as its image of what
        /// was stored, so a large memory is not copied again for the store).
        image: std::sync::Arc<Vec<u8>>,
    },
    /// [`Op::PutMemory`] of an image already written by [`Store::stage_memory`] (for this
    /// object, in this store, not yet committed): the transaction only records it.
    PutStagedMemory {
        /// The object.
        id: ObjectKey,
        /// The staged image.
        memory: StagedMemory,
    },
    /// Appends lineage segment `segment`, which must be the next number
    /// ([`StoreError::LineageGap`]).
    AppendLineage {
        /// The object.
        id: ObjectKey,
        /// The segment number: the number of segments stored so far.
        segment: u64,
        /// The segment.
        bytes: Vec<u8>,
    },
    /// Stores a pending message (replacing one with the same arrival number).
    PutMessage {
        /// The object.
        id: ObjectKey,
        /// Its arrival number.
        arrival: u64,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Deletes the object's pending messages with arrival number `<= arrival`.
    DeleteMessagesThrough {
        /// The object.
        id: ObjectKey,
        /// The last arrival number to delete.
        arrival: u64,
    },
}

impl Op {
    /// The object the op is about.
    pub fn object(&self) -> &ObjectKey {
        match self {
            Op::PutImage { id, .. }
            | Op::PutHead { id, .. }
            | Op::PutChunks { id, .. }
            | Op::PutMemory { id, .. }
            | Op::PutStagedMemory { id, .. }
            | Op::AppendLineage { id, .. }
            | Op::PutMessage { id, .. }
            | Op::DeleteMessagesThrough { id, .. } => id,
        }
    }
}

/// What a durable commit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The store's commit counter after this commit.
    pub commit_counter: u64,
}

/// Counters since the store was opened (and the commit counter of the store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Commits since open.
    pub commits: u64,
    /// Records inserted since open (deletions not counted).
    pub records_written: u64,
    /// Sealed bytes inserted since open.
    pub bytes_written: u64,
    /// The store's commit counter (durable commits since the store was created).
    pub commit_counter: u64,
    /// Commits whose high-water-mark write failed after the commit itself was durable
    /// (rollback protection lagged until a later write succeeded).
    pub high_water_failures: u64,
    /// Memory images committed that were staged ahead of their commit
    /// ([`Op::PutStagedMemory`]).
    pub staged_images: u64,
    /// Of those, keyed images ([`Store::stage_keyed_image`]).
    pub keyed_images: u64,
}
