//! Incremental persistence: a [`Checkpoint`] is what changed since the previous one — the
//! execution state without memory (small) and the 4 KiB memory chunks that differ. The first
//! checkpoint of a resident object (after deploy, or after a restore from a snapshot, as when
//! an object arrives by migration) carries the whole memory instead. A host stores the last
//! whole memory, the chunks written since, laid over it by index, and the latest execution
//! state; [`ResidentObject::restore_checkpoint`] rebuilds the object from them, identical to
//! the one checkpointed (same [`ResidentObject::full_state_digest`]).
//!
//! Execution-state bytes (version 1):
//!
//! ```text
//! "SJEXEC" | version: u16 BE | deterministic CBOR map (object_id, seq, fields, memory_pages,
//!                                globals, inbox, schedule, status, last_rejection)
//! ```
//! No checksum: the store that keeps them authenticates them (sealed at rest).

use std::collections::BTreeMap;
use std::sync::Arc;

use ciborium::Value as Cbor;
use sojourn_policy::{canonical, Descriptor};

use crate::engine::{ObjectEngine, ObjectModule};
use crate::object::{MemoryShadow, Persisted, ResidentObject};
use crate::snapshot::{field_err, restore_parts, MapView, SnapshotError, CHUNK};
use crate::RuntimeError;

/// Magic prefix of execution-state bytes.
pub const EXEC_MAGIC: &[u8; 6] = b"SJEXEC";
/// Current execution-state format version.
pub const EXEC_VERSION: u16 = 1;
/// Keys of the execution-state map.
const EXEC_KEYS: usize = 9;

/// What changed since the previous checkpoint of the same object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The object's next sequence number (transitions so far).
    pub seq: u64,
    /// The whole execution state except memory contents (see the module docs).
    pub exec: Vec<u8>,
    /// The whole memory, in the first checkpoint of a resident object (then `dirty` is
    /// empty): it replaces everything stored of the object's memory.
    /// Shared with the object's own image of what was checkpointed, so the memory is
    /// copied once; hand it to the store and drop it.
    pub memory: Option<Arc<Vec<u8>>>,
    /// Memory chunks that changed since the previous checkpoint, by index (each [`CHUNK`]
    /// bytes).
    pub dirty: Vec<(u32, Vec<u8>)>,
}

impl ResidentObject {
    /// Takes a checkpoint between entries. Keeps a copy of memory to diff against, so the
    /// next checkpoint carries only the chunks written in between (reading memory costs a
    /// comparison; only changed chunks are copied). The first one carries the whole memory.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, SnapshotError> {
        self.checkpoint_with_buffer(Vec::new())
    }

    /// [`ResidentObject::checkpoint`]; a whole checkpoint copies memory into `buffer` (cleared
    /// first, and its capacity beyond the memory zeroed) instead of a new allocation. For a
    /// large buffer that is no longer needed and whose pages are already mapped, such as a
    /// migration package just restored from, this saves the page faults of a fresh one.
    pub fn checkpoint_with_buffer(&mut self, buffer: Vec<u8>) -> Result<Checkpoint, SnapshotError> {
        self.settle_checkpoint();
        let exec = self.exec_bytes()?;
        let mut dirty = Vec::new();
        let mut memory = None;
        if let Some(mem) = self.store.data().memory {
            let data = mem.data(&self.store);
            // Whether what changed is known (else the checkpoint is whole).
            let incremental = match self.persisted.as_mut() {
                // Nothing ran since the last checkpoint: memory is what it holds.
                Some(_) if !self.ran_since_checkpoint => true,
                Some(Persisted::Copy(shadow)) => {
                    shadow.sync_into(data, &mut dirty);
                    true
                }
                Some(Persisted::Tracked { tracker, len }) => {
                    match tracker.take_written(&mem, &self.store) {
                        Ok(written) => {
                            written_chunks(data, *len, &written, &mut dirty);
                            *len = data.len();
                            true
                        }
                        // Unknown what changed: a whole checkpoint.
                        Err(_) => false,
                    }
                }
                None => false,
            };
            if !incremental {
                let whole = Arc::new(memory_in(buffer, data));
                self.persisted =
                    Some(self.tracking(&mem).unwrap_or_else(|| {
                        Persisted::Copy(MemoryShadow::shared(Arc::clone(&whole)))
                    }));
                memory = Some(whole);
            }
        }
        self.ran_since_checkpoint = false;
        Ok(Checkpoint {
            seq: self.seq,
            exec,
            memory,
            dirty,
        })
    }

    /// A whole checkpoint whose memory the caller has already stored: an image of exactly
    /// the object's memory now, such as the one a migration's destination writes from the
    /// snapshot it restores the object from, before any entry has run. The checkpoint carries
    /// no memory and no chunks (the caller records its stored image as this checkpoint's
    /// whole memory), and the copy of memory that later checkpoints compare with is not
    /// taken now: it is taken into `buffer` (as in [`ResidentObject::checkpoint_with_buffer`])
    /// by [`ResidentObject::settle_checkpoint`], at the latest before the next entry runs or
    /// the next checkpoint is taken. Until then memory cannot change (only entries change
    /// it), so the copy is the memory that was stored.
    pub fn checkpoint_stored_memory(
        &mut self,
        buffer: Vec<u8>,
    ) -> Result<Checkpoint, SnapshotError> {
        // Zeroed if dropped unused (on an error, or for an object without memory).
        let buffer = zeroize::Zeroizing::new(buffer);
        let exec = self.exec_bytes()?;
        if let Some(mem) = self.store.data().memory {
            // Tracked from here, where the kernel can: no copy. Else the copy, deferred.
            self.persisted = self.tracking(&mem);
            self.deferred_capture = self.persisted.is_none().then_some(buffer);
        }
        self.ran_since_checkpoint = false;
        Ok(Checkpoint {
            seq: self.seq,
            exec,
            memory: None,
            dirty: Vec::new(),
        })
    }

    /// Takes the copy of memory that [`ResidentObject::checkpoint_stored_memory`] deferred,
    /// if it is still owed (otherwise does nothing): memory is copied into the buffer, whose
    /// capacity beyond it is zeroed. Entries and checkpoints call it first; a host may call it
    /// earlier, off the path it wants short.
    pub fn settle_checkpoint(&mut self) {
        let Some(mut owed) = self.deferred_capture.take() else {
            return;
        };
        if let Some(mem) = self.store.data().memory {
            let buffer = memory_in(std::mem::take(&mut *owed), mem.data(&self.store));
            self.persisted = Some(Persisted::Copy(MemoryShadow::shared(Arc::new(buffer))));
        }
    }

    /// Whether [`ResidentObject::checkpoint_stored_memory`]'s copy of memory is still owed.
    pub fn checkpoint_unsettled(&self) -> bool {
        self.deferred_capture.is_some()
    }

    /// Writes to `mem` tracked from now on, if the engine allows it and the kernel can.
    fn tracking(&self, mem: &wasmtime::Memory) -> Option<Persisted> {
        if !self.write_tracking {
            return None;
        }
        let tracker = sojourn_mem::WriteTracker::track(mem, &self.store).ok()?;
        let len = mem.data(&self.store).len();
        Some(Persisted::Tracked { tracker, len })
    }

    /// The execution-state bytes (module docs).
    fn exec_bytes(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let entries = self.exec_entries()?;
        let body = canonical::encode(&Cbor::Map(entries))
            .map_err(|e| SnapshotError::Body(e.to_string()))?;
        let mut exec = Vec::with_capacity(body.len() + 8);
        exec.extend_from_slice(EXEC_MAGIC);
        exec.extend_from_slice(&EXEC_VERSION.to_be_bytes());
        exec.extend_from_slice(&body);
        Ok(exec)
    }

    /// Rebuilds an object from its module, descriptor bytes, latest execution state, its last
    /// whole memory (empty if none was stored; a multiple of [`CHUNK`] bytes) and every memory
    /// chunk stored since, laid over it. The result's next checkpoint is incremental from
    /// here.
    pub fn restore_checkpoint(
        engine: &ObjectEngine,
        module: &ObjectModule,
        descriptor: &[u8],
        exec: &[u8],
        memory: &[u8],
        chunks: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<ResidentObject, RuntimeError> {
        if !memory.len().is_multiple_of(CHUNK) {
            return Err(field_err("memory", "not a whole number of chunks").into());
        }
        let head = EXEC_MAGIC.len() + 2;
        if exec.len() < head || !exec.starts_with(EXEC_MAGIC) {
            return Err(SnapshotError::NotASnapshot(head).into());
        }
        let version = u16::from_be_bytes([
            exec.get(6).copied().unwrap_or(0),
            exec.get(7).copied().unwrap_or(0),
        ]);
        if version != EXEC_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version).into());
        }
        let root = canonical::decode(exec.get(head..).unwrap_or_default())
            .map_err(|e| SnapshotError::Body(e.to_string()))?;
        let Cbor::Map(entries) = &root else {
            return Err(SnapshotError::Body("not a map".into()).into());
        };
        if entries.len() != EXEC_KEYS {
            return Err(SnapshotError::Body(format!(
                "{} keys, expected {EXEC_KEYS}",
                entries.len()
            ))
            .into());
        }
        let descriptor =
            Descriptor::decode(descriptor).map_err(|e| field_err("descriptor", e.to_string()))?;
        let m = MapView(entries);
        // The whole memory's non-zero chunks, with the stored chunks in their place. Stored
        // chunks may be all zero (a page that was cleared); they are laid back as they are,
        // in index order (a BTreeMap is ordered), each exactly one chunk long.
        let mut merged: Vec<(u64, &[u8])> = Vec::with_capacity(memory.len() / CHUNK + chunks.len());
        let mut over = chunks
            .iter()
            .map(|(i, b)| (u64::from(*i), b.as_slice()))
            .peekable();
        for (i, c) in memory.chunks(CHUNK).enumerate() {
            let i = i as u64;
            while let Some(before) = over.next_if(|(j, _)| *j < i) {
                merged.push(before);
            }
            if let Some(stored) = over.next_if(|(j, _)| *j == i) {
                merged.push(stored);
            } else if c.iter().any(|b| *b != 0) {
                merged.push((i, c));
            }
        }
        merged.extend(over);
        let mut obj = restore_parts(engine, module, descriptor, &m, merged.into_iter(), None)?;
        // Memory is what was stored: the copy the next checkpoint compares with is taken
        // before the object first runs or checkpoints (`settle_checkpoint`), not here, so
        // an object that does not run again holds no second copy of its memory.
        if let Some(mem) = obj.store.data().memory {
            obj.persisted = obj.tracking(&mem);
            if obj.persisted.is_none() {
                obj.deferred_capture = Some(zeroize::Zeroizing::new(Vec::new()));
            }
        }
        obj.ran_since_checkpoint = false;
        Ok(obj)
    }
}

/// `buffer` overwritten with `memory`, the rest of its capacity zeroed (it may have held
/// something else, such as a decrypted migration package); grown if it is too small.
fn memory_in(mut buffer: Vec<u8>, memory: &[u8]) -> Vec<u8> {
    buffer.clear();
    sojourn_mem::reserve(&mut buffer, memory.len());
    buffer.extend_from_slice(memory);
    buffer
        .spare_capacity_mut()
        .fill(std::mem::MaybeUninit::new(0));
    buffer
}

/// The chunks of `data` in the `written` byte ranges, into `dirty`: every one below `len`
/// (the memory's length at the last checkpoint: a written chunk may have changed, even to
/// zeros), and above it only those not all zero (grown memory was zero).
fn written_chunks(
    data: &[u8],
    len: usize,
    written: &[std::ops::Range<usize>],
    dirty: &mut Vec<(u32, Vec<u8>)>,
) {
    const _: () = assert!(CHUNK == sojourn_mem::PAGE);
    for range in written {
        let mut at = range.start - range.start % CHUNK;
        while at < range.end.min(data.len()) {
            if let Some(chunk) = data.get(at..at + CHUNK) {
                if at < len || chunk.iter().any(|b| *b != 0) {
                    dirty.push(((at / CHUNK) as u32, chunk.to_vec()));
                }
            }
            at += CHUNK;
        }
    }
}

/// The chunk size checkpoints use (re-exported for stores).
pub const CHECKPOINT_CHUNK: usize = CHUNK;
