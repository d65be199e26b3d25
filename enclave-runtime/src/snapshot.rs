//! Execution-state capture at a tick boundary, and restore into a fresh instance.
//!
//! Byte format (version 1), see docs/snapshot-format.md:
//!
//! ```text
//! "SJSNAP" | version: u16 BE | body: deterministic CBOR map | SHA-256(magic..body): 32 bytes
//! ```
//!
//! The checksum detects truncation and corruption; it is not a seal (sealing at rest and in
//! transit belongs to the host and migration layers).

use std::collections::VecDeque;

use ciborium::Value as Cbor;
use sojourn_policy::canonical;
use sojourn_policy::schema::{fields_from_cbor, fields_to_cbor};
use sojourn_policy::Descriptor;
use wasmtime::{Val, ValType};

use crate::engine::ObjectEngine;
use crate::object::{ResidentObject, Schedule, Status};
use crate::record::{Digest, ObjectId};
use crate::RuntimeError;

/// Magic prefix.
pub const MAGIC: &[u8; 6] = b"SJSNAP";
/// Current format version.
pub const VERSION: u16 = 1;
/// Memory is stored as the non-zero chunks of this size.
pub const CHUNK: usize = 4096;

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Shorter than a header and checksum, or not starting with the magic.
    #[error("not a Sojourn snapshot (bad magic or shorter than {0} bytes)")]
    NotASnapshot(usize),
    /// A version this build does not read.
    #[error("snapshot format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u16),
    /// The checksum does not match: truncated or corrupted.
    #[error("snapshot checksum mismatch: the snapshot is truncated or corrupted")]
    Checksum,
    /// The body is not canonical CBOR.
    #[error("snapshot body: {0}")]
    Body(String),
    /// A field of the body is missing or wrong.
    #[error("snapshot field `{field}`: {reason}")]
    Field {
        /// The body key.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The state cannot be captured (for example a mutable reference-typed global).
    #[error("cannot capture: {0}")]
    Capture(String),
}

pub(crate) fn field_err(field: &'static str, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Field {
        field,
        reason: reason.into(),
    }
}

fn t(s: &str) -> Cbor {
    Cbor::Text(s.to_string())
}

impl ResidentObject {
    /// Serialises the whole object (memory, mutable globals, fields, inbox, schedule, status,
    /// descriptor and module) into one versioned snapshot. Call it between entries.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let mut chunks = Vec::new();
        if let Some(mem) = self.store.data().memory {
            for (i, c) in mem.data(&self.store).chunks(CHUNK).enumerate() {
                if c.iter().any(|b| *b != 0) {
                    chunks.push(Cbor::Array(vec![
                        Cbor::Integer((i as u64).into()),
                        Cbor::Bytes(c.to_vec()),
                    ]));
                }
            }
        }
        let mut body = self.exec_entries()?;
        body.push((t("descriptor"), Cbor::Bytes(self.descriptor_bytes.clone())));
        body.push((
            t("module"),
            Cbor::Bytes(self.module.original_bytes().to_vec()),
        ));
        body.push((t("memory_chunks"), Cbor::Array(chunks)));
        let body =
            canonical::encode(&Cbor::Map(body)).map_err(|e| SnapshotError::Body(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&body);
        let sum = canonical::sha256(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// The execution state without memory contents, module and descriptor: object id, seq,
    /// fields, memory size, mutable globals, inbox, schedule, status, last rejection.
    pub(crate) fn exec_entries(&mut self) -> Result<Vec<(Cbor, Cbor)>, SnapshotError> {
        let pages = self
            .store
            .data()
            .memory
            .map_or(0, |m| (m.data_size(&self.store) / 65536) as u64);
        let values = self.read_globals();
        let mut globals = Vec::new();
        for ((idx, _), v) in self.globals.iter().zip(values) {
            let (ty, val) = match v {
                Val::I32(x) => ("i32", Cbor::Integer(u64::from(x as u32).into())),
                Val::I64(x) => ("i64", Cbor::Integer((x as u64).into())),
                Val::F32(bits) => ("f32", Cbor::Integer(u64::from(bits).into())),
                Val::F64(bits) => ("f64", Cbor::Integer(bits.into())),
                Val::V128(x) => ("v128", Cbor::Bytes(x.as_u128().to_le_bytes().to_vec())),
                _ => {
                    return Err(SnapshotError::Capture(format!(
                        "mutable global {idx} holds a reference"
                    )))
                }
            };
            globals.push(Cbor::Array(vec![Cbor::Integer((*idx).into()), t(ty), val]));
        }
        let schedule = match self.schedule {
            Schedule::WakeAt(at) => Cbor::Map(vec![(t("wake_at"), Cbor::Integer(at.into()))]),
            Schedule::AwaitMessage => t("await_message"),
        };
        let status = match &self.status {
            Status::Active => t("active"),
            Status::Suspended { reason } => Cbor::Map(vec![(t("suspended"), t(reason))]),
        };
        Ok(vec![
            (t("object_id"), Cbor::Bytes(self.id.0.to_vec())),
            (t("seq"), Cbor::Integer(self.seq.into())),
            (t("fields"), fields_to_cbor(&self.store.data().fields)),
            (t("memory_pages"), Cbor::Integer(pages.into())),
            (t("globals"), Cbor::Array(globals)),
            (
                t("inbox"),
                Cbor::Array(self.inbox.iter().map(|m| Cbor::Bytes(m.clone())).collect()),
            ),
            (t("schedule"), schedule),
            (t("status"), status),
            (
                t("last_rejection"),
                self.store
                    .data()
                    .last_rejection
                    .as_ref()
                    .map_or(Cbor::Null, |r| t(r)),
            ),
        ])
    }

    /// Digest of the whole execution state (the snapshot's checksum): two objects with the
    /// same digest continue identically.
    pub fn full_state_digest(&mut self) -> Result<Digest, SnapshotError> {
        let snap = self.snapshot()?;
        let tail = snap
            .get(snap.len().saturating_sub(32)..)
            .ok_or(SnapshotError::Checksum)?;
        let mut d = [0u8; 32];
        d.copy_from_slice(tail);
        Ok(Digest(d))
    }

    /// Restores a snapshot into a fresh instance on `engine`.
    pub fn restore(engine: &ObjectEngine, snapshot: &[u8]) -> Result<ResidentObject, RuntimeError> {
        let body = open(snapshot)?;
        let root = canonical::decode(body).map_err(|e| SnapshotError::Body(e.to_string()))?;
        let Cbor::Map(entries) = &root else {
            return Err(SnapshotError::Body("not a map".into()).into());
        };
        if entries.len() != 12 {
            return Err(SnapshotError::Body(format!("{} keys, expected 12", entries.len())).into());
        }
        let m = MapView(entries);
        let descriptor = Descriptor::decode(m.bytes("descriptor")?)
            .map_err(|e| field_err("descriptor", e.to_string()))?;
        let module = engine.compile(m.bytes("module")?)?;
        let Cbor::Array(chunks) = m.get("memory_chunks")? else {
            return Err(field_err("memory_chunks", "expected an array").into());
        };
        let mut pairs = Vec::with_capacity(chunks.len());
        for c in chunks {
            match c {
                Cbor::Array(pair) => match pair.as_slice() {
                    [Cbor::Integer(i), Cbor::Bytes(b)] => pairs.push((
                        u64::try_from(*i).map_err(|_| field_err("memory_chunks", "bad index"))?,
                        b.as_slice(),
                    )),
                    _ => return Err(field_err("memory_chunks", "expected [index, bytes]").into()),
                },
                _ => return Err(field_err("memory_chunks", "expected [index, bytes]").into()),
            }
        }
        restore_parts(engine, &module, descriptor, &m, pairs.into_iter())
    }
}

/// Read access to a decoded CBOR map with text keys.
pub(crate) struct MapView<'a>(pub(crate) &'a [(Cbor, Cbor)]);

impl MapView<'_> {
    pub(crate) fn get(&self, k: &'static str) -> Result<&Cbor, SnapshotError> {
        self.0
            .iter()
            .find(|(key, _)| matches!(key, Cbor::Text(s) if s == k))
            .map(|(_, v)| v)
            .ok_or_else(|| field_err(k, "missing"))
    }
    pub(crate) fn bytes(&self, k: &'static str) -> Result<&[u8], SnapshotError> {
        match self.get(k)? {
            Cbor::Bytes(b) => Ok(b.as_slice()),
            _ => Err(field_err(k, "expected bytes")),
        }
    }
    pub(crate) fn uint(&self, k: &'static str) -> Result<u64, SnapshotError> {
        match self.get(k)? {
            Cbor::Integer(i) => u64::try_from(*i).map_err(|_| field_err(k, "expected u64")),
            _ => Err(field_err(k, "expected an integer")),
        }
    }
}

/// Instantiates `module` under `descriptor` and lays back the execution state of `m` (the
/// entries [`ResidentObject::exec_entries`] writes) and the memory chunks (ascending index,
/// each exactly [`CHUNK`] bytes; absent chunks are zero).
pub(crate) fn restore_parts<'c>(
    engine: &ObjectEngine,
    module: &crate::ObjectModule,
    descriptor: Descriptor,
    m: &MapView<'_>,
    chunks: impl Iterator<Item = (u64, &'c [u8])>,
) -> Result<ResidentObject, RuntimeError> {
    let id = ObjectId(
        m.bytes("object_id")?
            .try_into()
            .map_err(|_| field_err("object_id", "expected 16 bytes"))?,
    );
    let fields = fields_from_cbor(m.get("fields")?, &descriptor.schema)
        .map_err(|e| field_err("fields", e))?;
    let pages = m.uint("memory_pages")?;
    if pages > u64::from(descriptor.limits.memory_pages_max) {
        return Err(field_err("memory_pages", "above the descriptor's memory_pages_max").into());
    }
    let mut obj = ResidentObject::instantiate(engine, module, descriptor, id, fields)?;
    obj.seq = m.uint("seq")?;

    // Memory: grow to size, clear what instantiation wrote, lay the chunks back.
    let mem = obj
        .store
        .data()
        .memory
        .ok_or_else(|| field_err("memory_pages", "object has no memory"))?;
    let have = mem.size(&obj.store);
    if pages < have {
        return Err(field_err("memory_pages", "smaller than the module's initial memory").into());
    }
    mem.grow(&mut obj.store, pages - have)
        .map_err(|e| field_err("memory_pages", e.to_string()))?;
    let data = mem.data_mut(&mut obj.store);
    data.fill(0);
    let mut last: Option<u64> = None;
    for (idx, bytes) in chunks {
        if last.is_some_and(|l| idx <= l) || bytes.len() != CHUNK {
            return Err(field_err("memory_chunks", "chunks out of order or mis-sized").into());
        }
        last = Some(idx);
        let start = usize::try_from(idx)
            .ok()
            .and_then(|i| i.checked_mul(CHUNK))
            .ok_or_else(|| field_err("memory_chunks", "index overflow"))?;
        let dst = data
            .get_mut(start..start + CHUNK)
            .ok_or_else(|| field_err("memory_chunks", "chunk beyond memory"))?;
        dst.copy_from_slice(bytes);
    }
    let Cbor::Array(globals) = m.get("globals")? else {
        return Err(field_err("globals", "expected an array").into());
    };
    if globals.len() != obj.globals.len() {
        return Err(field_err("globals", "count differs from the module's mutable globals").into());
    }
    let mut values = Vec::new();
    for (g, (idx, global)) in globals.iter().zip(obj.globals.clone()) {
        let Cbor::Array(parts) = g else {
            return Err(field_err("globals", "expected [index, type, value]").into());
        };
        let v = match parts.as_slice() {
            [Cbor::Integer(i), Cbor::Text(ty), val] if u32::try_from(*i).ok() == Some(idx) => {
                let int = || match val {
                    Cbor::Integer(x) => {
                        u64::try_from(*x).map_err(|_| field_err("globals", "bad value"))
                    }
                    _ => Err(field_err("globals", "bad value")),
                };
                match ty.as_str() {
                    "i32" => Val::I32(
                        u32::try_from(int()?).map_err(|_| field_err("globals", "bad i32"))? as i32,
                    ),
                    "i64" => Val::I64(int()? as i64),
                    "f32" => Val::F32(
                        u32::try_from(int()?).map_err(|_| field_err("globals", "bad f32"))?,
                    ),
                    "f64" => Val::F64(int()?),
                    "v128" => match val {
                        Cbor::Bytes(b) => Val::V128(
                            u128::from_le_bytes(
                                b.as_slice()
                                    .try_into()
                                    .map_err(|_| field_err("globals", "bad v128"))?,
                            )
                            .into(),
                        ),
                        _ => return Err(field_err("globals", "bad v128").into()),
                    },
                    _ => return Err(field_err("globals", "unknown type").into()),
                }
            }
            _ => return Err(field_err("globals", "index mismatch").into()),
        };
        let declared = match global.ty(&obj.store).content() {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
            ValType::V128 => "v128",
            _ => "ref",
        };
        let given = match v {
            Val::I32(_) => "i32",
            Val::I64(_) => "i64",
            Val::F32(_) => "f32",
            Val::F64(_) => "f64",
            _ => "v128",
        };
        if declared != given {
            return Err(field_err("globals", format!("global {idx} type differs")).into());
        }
        values.push(v);
    }
    obj.write_globals(&values)?;

    let Cbor::Array(inbox) = m.get("inbox")? else {
        return Err(field_err("inbox", "expected an array").into());
    };
    let cycle = obj.descriptor.cycle.clone();
    if inbox.len() > cycle.inbox_capacity as usize {
        return Err(field_err("inbox", "more messages than inbox_capacity").into());
    }
    let mut q = VecDeque::new();
    for m in inbox {
        match m {
            Cbor::Bytes(b) if b.len() <= cycle.max_message_bytes as usize => q.push_back(b.clone()),
            _ => return Err(field_err("inbox", "bad message").into()),
        }
    }
    obj.inbox = q;
    obj.schedule = match m.get("schedule")? {
        Cbor::Text(s) if s == "await_message" => Schedule::AwaitMessage,
        Cbor::Map(m) => match m.as_slice() {
            [(Cbor::Text(k), Cbor::Integer(at))] if k == "wake_at" => {
                Schedule::WakeAt(i64::try_from(*at).map_err(|_| field_err("schedule", "bad time"))?)
            }
            _ => return Err(field_err("schedule", "unknown schedule").into()),
        },
        _ => return Err(field_err("schedule", "unknown schedule").into()),
    };
    obj.status = match m.get("status")? {
        Cbor::Text(s) if s == "active" => Status::Active,
        Cbor::Map(m) => match m.as_slice() {
            [(Cbor::Text(k), Cbor::Text(r))] if k == "suspended" => {
                Status::Suspended { reason: r.clone() }
            }
            _ => return Err(field_err("status", "unknown status").into()),
        },
        _ => return Err(field_err("status", "unknown status").into()),
    };
    obj.store.data_mut().last_rejection = match m.get("last_rejection")? {
        Cbor::Null => None,
        Cbor::Text(r) => Some(r.clone()),
        _ => return Err(field_err("last_rejection", "expected text or null").into()),
    };
    obj.reset_shadow();
    Ok(obj)
}

/// Checks magic, version and checksum; returns the body.
fn open(snapshot: &[u8]) -> Result<&[u8], SnapshotError> {
    let min = MAGIC.len() + 2 + 32;
    if snapshot.len() < min || !snapshot.starts_with(MAGIC) {
        return Err(SnapshotError::NotASnapshot(min));
    }
    let (signed, sum) = snapshot.split_at(snapshot.len() - 32);
    let version = signed
        .get(MAGIC.len()..MAGIC.len() + 2)
        .map(|v| {
            u16::from_be_bytes([
                v.first().copied().unwrap_or(0),
                v.get(1).copied().unwrap_or(0),
            ])
        })
        .ok_or(SnapshotError::NotASnapshot(min))?;
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    if canonical::sha256(signed) != sum {
        return Err(SnapshotError::Checksum);
    }
    signed
        .get(MAGIC.len() + 2..)
        .ok_or(SnapshotError::NotASnapshot(min))
}
