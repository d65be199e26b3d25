//! Incremental persistence: a [`Checkpoint`] is what changed since the previous one — the
//! execution state without memory (small) and the 4 KiB memory chunks that differ. A host
//! stores the chunks by index and the latest execution state; [`ResidentObject::
//! restore_checkpoint`] rebuilds the object from them, identical to the one checkpointed
//! (same [`ResidentObject::full_state_digest`]).
//!
//! Execution-state bytes (version 1):
//!
//! ```text
//! "SJEXEC" | version: u16 BE | deterministic CBOR map (object_id, seq, fields, memory_pages,
//!                                globals, inbox, schedule, status, last_rejection)
//! ```
//! No checksum: the store that keeps them authenticates them (sealed at rest).

use std::collections::BTreeMap;

use ciborium::Value as Cbor;
use sojourn_policy::{canonical, Descriptor};

use crate::engine::{ObjectEngine, ObjectModule};
use crate::object::{MemoryShadow, ResidentObject};
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
    /// Memory chunks that changed, by index (each [`CHUNK`] bytes). The first checkpoint of
    /// an object lists every non-zero chunk.
    pub dirty: Vec<(u32, Vec<u8>)>,
}

impl ResidentObject {
    /// Takes a checkpoint between entries. Keeps a copy of memory to diff against, so the
    /// next checkpoint carries only the chunks written in between (reading memory costs a
    /// comparison; only changed chunks are copied).
    pub fn checkpoint(&mut self) -> Result<Checkpoint, SnapshotError> {
        let entries = self.exec_entries()?;
        let body = canonical::encode(&Cbor::Map(entries))
            .map_err(|e| SnapshotError::Body(e.to_string()))?;
        let mut exec = Vec::with_capacity(body.len() + 8);
        exec.extend_from_slice(EXEC_MAGIC);
        exec.extend_from_slice(&EXEC_VERSION.to_be_bytes());
        exec.extend_from_slice(&body);
        let mut dirty = Vec::new();
        if let Some(mem) = self.store.data().memory {
            let data = mem.data(&self.store);
            let shadow = self
                .persisted
                .get_or_insert_with(|| MemoryShadow::zeroed(0));
            shadow.sync_into(data, &mut dirty);
        }
        Ok(Checkpoint {
            seq: self.seq,
            exec,
            dirty,
        })
    }

    /// Every chunk of memory as it is now, zero chunks included: what overwrites an older
    /// stored image of the same object completely (an object returning to a host it left).
    pub fn all_chunks(&self) -> Vec<(u32, Vec<u8>)> {
        match self.store.data().memory {
            Some(mem) => mem
                .data(&self.store)
                .chunks(CHUNK)
                .enumerate()
                .map(|(i, c)| (i as u32, c.to_vec()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Rebuilds an object from its module, descriptor bytes, latest execution state and every
    /// stored memory chunk. The result's next checkpoint is incremental from here.
    pub fn restore_checkpoint(
        engine: &ObjectEngine,
        module: &ObjectModule,
        descriptor: &[u8],
        exec: &[u8],
        chunks: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<ResidentObject, RuntimeError> {
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
        // Stored chunks may be all zero (a page that was cleared); they are laid back as they
        // are, in index order (a BTreeMap is ordered), each exactly one chunk long.
        let mut obj = restore_parts(
            engine,
            module,
            descriptor,
            &m,
            chunks.iter().map(|(i, b)| (u64::from(*i), b.as_slice())),
        )?;
        if let Some(mem) = obj.store.data().memory {
            obj.persisted = Some(MemoryShadow::capture(mem.data(&obj.store)));
        }
        Ok(obj)
    }
}

/// The chunk size checkpoints use (re-exported for stores).
pub const CHECKPOINT_CHUNK: usize = CHUNK;
