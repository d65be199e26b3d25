//! Execution-state capture at a tick boundary, and restore into a fresh instance.
//!
//! Byte format (version 2; version 1 is still read), see docs/snapshot-format.md:
//!
//! ```text
//! "SJSNAP" | version: u16 BE | body: deterministic CBOR map | SHA-256(magic..body): 32 bytes
//! ```
//!
//! The checksum detects truncation and corruption; it is not a seal (sealing at rest and in
//! transit belongs to the host and migration layers).

use std::collections::VecDeque;

use ciborium::Value as Cbor;
use sha2::{Digest as _, Sha256};
use sojourn_policy::canonical;
use sojourn_policy::schema::{fields_from_cbor, fields_to_cbor};
use sojourn_policy::Descriptor;
use wasmtime::{Val, ValType};

use crate::engine::{ObjectEngine, ObjectModule};
use crate::object::{ResidentObject, Schedule, Status};
use crate::record::{Digest, ObjectId};
use crate::RuntimeError;

/// Magic prefix.
pub const MAGIC: &[u8; 6] = b"SJSNAP";
/// The format version this build writes: memory as one run of pages, page-aligned
/// ([`SnapshotWriter::align_pages_at`]).
pub const VERSION: u16 = 2;
/// The version before, still read: memory as `[index, bytes]` pairs.
pub const VERSION_PAIRS: u16 = 1;
/// Version 2's padding before the memory's pages is shorter than this.
const PAD_MAX: usize = 2 * CHUNK;
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
    #[error(
        "snapshot format version {0} is not supported (this build reads versions \
         {VERSION_PAIRS} and {VERSION})"
    )]
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

/// Where snapshot bytes go: the buffer, or a running checksum of the same bytes.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// One top-level value of the snapshot map.
enum Value {
    Encoded(Vec<u8>),
    Module,
    Memory,
}

/// A snapshot of an object, planned (its small entries encoded, its non-zero memory chunks
/// found) and ready to be written: [`ResidentObject::snapshot_writer`]. It borrows the object,
/// which therefore cannot change before the bytes are written.
pub struct SnapshotWriter<'a> {
    entries: Vec<(Vec<u8>, Value)>,
    /// The non-zero chunks as runs of consecutive ones: (first index, count), ascending,
    /// never adjacent.
    runs: Vec<(usize, usize)>,
    module: &'a [u8],
    memory: &'a [u8],
    /// Zero bytes before the memory's pages (version 2), placing them on a page boundary.
    pad: usize,
    len: usize,
}

impl std::fmt::Debug for SnapshotWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("len", &self.len)
            .field("nonzero_chunks", &self.chunk_count())
            .field("pad", &self.pad)
            .finish_non_exhaustive()
    }
}

/// Snapshots at least this long are checksummed on a second thread while they are written
/// or restored (1 MiB).
const PARALLEL_CHECKSUM_MIN: usize = 1 << 20;

impl SnapshotWriter<'_> {
    /// The snapshot's exact length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Lays the memory's pages out for a snapshot whose first byte will lie at `at` (or any
    /// offset congruent to it modulo [`CHUNK`]) in page-aligned memory: the pages' bytes then
    /// start on a page boundary there, so that a destination can map them into the restored
    /// instance where they lie ([`ResidentObject::restore_moving`]) instead of moving each
    /// chunk first. Only the zero padding before them changes, and with it [`Self::len`]
    /// (by less than 8 KiB); the state is the same. A writer starts laid out for `at = 0`,
    /// which is also what [`ResidentObject::full_state_digest`] hashes.
    pub fn align_pages_at(&mut self, at: usize) {
        self.lay_out(at);
    }

    /// Non-zero chunks.
    fn chunk_count(&self) -> usize {
        self.runs.iter().map(|(_, n)| n).sum()
    }

    /// The encoded runs: `[[first, count], …]`.
    fn runs_len(&self) -> usize {
        head_len(self.runs.len() as u64)
            + self
                .runs
                .iter()
                .map(|&(first, n)| 1 + head_len(first as u64) + head_len(n as u64))
                .sum::<usize>()
    }

    /// Sets the padding and the length for a snapshot starting at `at` (modulo [`CHUNK`]).
    fn lay_out(&mut self, at: usize) {
        let pages = self.chunk_count() * CHUNK;
        let pages_head = head_len(pages as u64);
        let mut before = MAGIC.len() + 2 + head_len(self.entries.len() as u64);
        let mut after = 0;
        let mut seen = false;
        for (k, v) in &self.entries {
            let n = k.len()
                + match v {
                    Value::Encoded(b) => b.len(),
                    Value::Module => head_len(self.module.len() as u64) + self.module.len(),
                    Value::Memory => {
                        seen = true;
                        before += k.len() + head_len(3) + self.runs_len();
                        continue;
                    }
                };
            if seen {
                after += n;
            } else {
                before += n;
            }
        }
        self.pad = if pages == 0 {
            0
        } else {
            pad_before(at % CHUNK + before, pages_head)
        };
        self.len = before + head_len(self.pad as u64) + self.pad + pages_head + pages + after + 32;
    }

    /// Never: a snapshot has at least its header and checksum.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the snapshot to `out` (reserving exactly its length). A large snapshot's
    /// checksum is computed on a second thread from the same sources while this one copies
    /// them into `out`.
    pub fn write_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        self.write_to(&mut |bytes: &[u8]| out.extend_from_slice(bytes));
    }

    /// Passes the snapshot, in order and in pieces, to `put` (for a writer that does not keep
    /// it in one buffer, such as a package sealed part by part). A large snapshot's checksum
    /// is computed on a second thread from the same sources meanwhile; it is the last piece.
    pub fn write_to(&self, put: &mut dyn FnMut(&[u8])) {
        struct Pieces<'a, 'b>(&'a mut (dyn FnMut(&[u8]) + 'b));
        impl Sink for Pieces<'_, '_> {
            fn put(&mut self, bytes: &[u8]) {
                (self.0)(bytes);
            }
        }
        /// Both: small snapshots are hashed as they are passed on.
        struct Tee<'a, 'b>(Sha256, Pieces<'a, 'b>);
        impl Sink for Tee<'_, '_> {
            fn put(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
                self.1.put(bytes);
            }
        }
        let parallel = self.len >= PARALLEL_CHECKSUM_MIN;
        let sum: Option<[u8; 32]> = std::thread::scope(|scope| {
            let hasher = parallel
                .then(|| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, || {
                            let mut h = Sha256::new();
                            self.emit(&mut h);
                            h.finalize()
                        })
                        .ok()
                })
                .flatten();
            let hasher = hasher?;
            self.emit(&mut Pieces(&mut *put));
            // A hashing thread cannot panic; should it stop, the sum is computed here.
            Some(hasher.join().map_or_else(|_| self.checksum(), Into::into))
        });
        let sum = sum.unwrap_or_else(|| {
            // Small, or no second thread: hashed as the pieces are passed on.
            let mut tee = Tee(Sha256::new(), Pieces(&mut *put));
            self.emit(&mut tee);
            tee.0.finalize().into()
        });
        put(&sum);
    }

    /// [`SnapshotWriter::write_to`] for a container that authenticates every byte it carries
    /// (a migration package, sealed with AES-GCM): the checksum is not computed and its 32
    /// bytes are zero. Such a snapshot is for [`ResidentObject::restore_authenticated`] (and
    /// [`crate::SnapshotMemory`]) at the other end of that container; [`ResidentObject::restore`]
    /// refuses it as corrupted. For 64 MiB this saves a SHA-256 pass over the whole memory.
    pub fn write_unchecked_to(&self, put: &mut dyn FnMut(&[u8])) {
        struct Pieces<'a, 'b>(&'a mut (dyn FnMut(&[u8]) + 'b));
        impl Sink for Pieces<'_, '_> {
            fn put(&mut self, bytes: &[u8]) {
                (self.0)(bytes);
            }
        }
        self.emit(&mut Pieces(&mut *put));
        put(&[0; 32]);
    }

    /// The checksum alone (the snapshot's last 32 bytes), without writing the snapshot.
    pub fn checksum(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        self.emit(&mut h);
        h.finalize().into()
    }

    /// Every byte of the snapshot but its checksum, in order, to `sink`.
    fn emit(&self, sink: &mut impl Sink) {
        sink.put(MAGIC);
        sink.put(&VERSION.to_be_bytes());
        put_head(sink, MAJOR_MAP, self.entries.len());
        for (k, v) in &self.entries {
            sink.put(k);
            match v {
                Value::Encoded(b) => sink.put(b),
                Value::Module => {
                    put_head(sink, MAJOR_BYTES, self.module.len());
                    sink.put(self.module);
                }
                Value::Memory => {
                    // [runs, pad, pages]
                    put_head(sink, MAJOR_ARRAY, 3);
                    put_head(sink, MAJOR_ARRAY, self.runs.len());
                    for &(first, n) in &self.runs {
                        sink.put(&[0x82]); // array of 2
                        put_head(sink, MAJOR_UINT, first);
                        put_head(sink, MAJOR_UINT, n);
                    }
                    put_head(sink, MAJOR_BYTES, self.pad);
                    let mut pad = self.pad;
                    while pad > 0 {
                        let n = pad.min(CHUNK);
                        sink.put(ZERO_CHUNK.get(..n).unwrap_or_default());
                        pad -= n;
                    }
                    put_head(sink, MAJOR_BYTES, self.chunk_count() * CHUNK);
                    for &(first, n) in &self.runs {
                        // Whole chunks of the memory (its length is a multiple of 64 KiB).
                        sink.put(
                            self.memory
                                .get(first * CHUNK..(first + n) * CHUNK)
                                .unwrap_or_default(),
                        );
                    }
                }
            }
        }
    }
}

impl ResidentObject {
    /// Serialises the whole object (memory, mutable globals, fields, inbox, schedule, status,
    /// descriptor and module) into one versioned snapshot. Call it between entries.
    ///
    /// Written straight into one buffer of the exact size: the small entries are encoded
    /// canonically one by one, module and memory chunks are copied once from where they are
    /// (no value tree holds them). The bytes are those of the canonical encoding of the whole
    /// map (the keys' encodings sorted bytewise).
    pub fn snapshot(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let w = self.snapshot_writer()?;
        let mut out = Vec::new();
        w.write_into(&mut out);
        Ok(out)
    }

    /// Plans the snapshot [`ResidentObject::snapshot`] writes, so that its length is known
    /// before it is written (into a buffer that holds more than the snapshot, such as a
    /// migration package).
    pub fn snapshot_writer(&mut self) -> Result<SnapshotWriter<'_>, SnapshotError> {
        let body_err = |e: canonical::CanonicalError| SnapshotError::Body(e.to_string());
        let mut entries: Vec<(Vec<u8>, Value)> = Vec::with_capacity(12);
        for (k, v) in self.exec_entries()? {
            entries.push((
                canonical::encode(&k).map_err(body_err)?,
                Value::Encoded(canonical::encode(&v).map_err(body_err)?),
            ));
        }
        let mut descriptor = Vec::with_capacity(self.descriptor_bytes.len() + 9);
        put_head(&mut descriptor, MAJOR_BYTES, self.descriptor_bytes.len());
        descriptor.extend_from_slice(&self.descriptor_bytes);
        entries.push((
            canonical::encode(&t("descriptor")).map_err(body_err)?,
            Value::Encoded(descriptor),
        ));
        entries.push((
            canonical::encode(&t("module")).map_err(body_err)?,
            Value::Module,
        ));
        entries.push((
            canonical::encode(&t("memory_chunks")).map_err(body_err)?,
            Value::Memory,
        ));
        entries.sort_by(|a, b| a.0.cmp(&b.0));

        let module = self.module.original_bytes();
        let memory: &[u8] = match self.store.data().memory {
            Some(mem) => mem.data(&self.store),
            None => &[],
        };
        // Non-zero chunks, as runs of consecutive ones: a comparison with a zero chunk
        // (memcmp) stops at the first non-zero byte. A linear memory is a whole number of
        // 64 KiB pages, so every chunk is whole.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (i, c) in memory.chunks_exact(CHUNK).enumerate() {
            if c == ZERO_CHUNK {
                continue;
            }
            match runs.last_mut() {
                Some((first, n)) if *first + *n == i => *n += 1,
                _ => runs.push((i, 1)),
            }
        }
        let mut writer = SnapshotWriter {
            entries,
            runs,
            module,
            memory,
            pad: 0,
            len: 0,
        };
        writer.lay_out(0);
        Ok(writer)
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
        Ok(Digest(self.snapshot_writer()?.checksum()))
    }

    /// Restores a snapshot into a fresh instance on `engine`.
    ///
    /// A snapshot in the shape this build writes is read in one pass that borrows the memory
    /// chunks from `snapshot` (checking the canonical form as it goes); anything else takes
    /// the general path (a full canonical decode), which refuses what is not canonical with
    /// the same errors as always.
    ///
    /// A large snapshot's checksum is computed on a second thread while the body is read and
    /// laid into the new instance; the instance is returned only if the checksum matches
    /// (a mismatch is [`SnapshotError::Checksum`], whatever the body held).
    pub fn restore(engine: &ObjectEngine, snapshot: &[u8]) -> Result<ResidentObject, RuntimeError> {
        let (signed, sum, body, version) = split(snapshot)?;
        if snapshot.len() < PARALLEL_CHECKSUM_MIN {
            if canonical::sha256(signed) != sum {
                return Err(SnapshotError::Checksum.into());
            }
            return Self::restore_body(engine, body, version);
        }
        std::thread::scope(|scope| {
            let check = scope.spawn(|| canonical::sha256(signed) == sum);
            let restored = Self::restore_body(engine, body, version);
            match check.join() {
                Ok(true) => restored,
                Ok(false) => Err(SnapshotError::Checksum.into()),
                Err(_) => Err(SnapshotError::Body("the checksum thread stopped".into()).into()),
            }
        })
    }

    /// [`ResidentObject::restore`] of a snapshot whose integrity the caller has already
    /// established by stronger means than its checksum: it was authenticated end to end (an
    /// AEAD-sealed migration package, opened with every tag checked), so the bytes are exactly
    /// those the sealer's [`ResidentObject::snapshot_writer`] wrote. The checksum is not
    /// read (for 64 MiB, a SHA-256 pass as long as the restore itself), so the sealer need
    /// not compute it either ([`SnapshotWriter::write_unchecked_to`] leaves it zero);
    /// everything else is checked as in `restore`: header, version, canonical body, fields
    /// against the schema, memory within the limits.
    ///
    /// Not for bytes that were only stored or carried without authentication: use
    /// [`ResidentObject::restore`] for those.
    pub fn restore_authenticated(
        engine: &ObjectEngine,
        snapshot: &[u8],
    ) -> Result<ResidentObject, RuntimeError> {
        Self::restore_authenticated_with(engine, snapshot, &|wasm| engine.compile(wasm))
    }

    /// [`ResidentObject::restore_authenticated`], with the snapshot's module compiled by
    /// `compile` instead of by `engine` each time: a host hands its cache of compiled modules
    /// (by the module's digest), so that objects of a module it already runs arrive without
    /// compiling it again. `compile` must return the module compiled from exactly the bytes
    /// it is given (on `engine`); the descriptor's module digest is checked against them as
    /// in `restore`.
    pub fn restore_authenticated_with(
        engine: &ObjectEngine,
        snapshot: &[u8],
        compile: &dyn Fn(&[u8]) -> Result<ObjectModule, RuntimeError>,
    ) -> Result<ResidentObject, RuntimeError> {
        let (_, _, body, version) = split(snapshot)?;
        Self::restore_body_with(engine, body, version, compile, None)
    }

    /// [`ResidentObject::restore_authenticated_with`] of the snapshot at `at` in `pages` (a
    /// migration package received into anonymous pages of the host's own and opened there),
    /// with the memory's pages moved out of `pages` into the new instance instead of copied
    /// into fresh pages.
    ///
    /// Every run of at least [`MOVED_RUN_MIN`] consecutive chunks is moved, inside `pages`,
    /// to a page boundary near where it lies (by less than a page plus the run's chunk
    /// headers), and its pages are then moved to its place in the instance's memory
    /// ([`sojourn_mem::AnonPages::move_into`]): no page of it is copied or faulted in again.
    /// Shorter runs are copied, as a restore copies every chunk.
    ///
    /// This is only worth it where checkpoints track writes instead of keeping a copy of
    /// memory (else the copy would need fresh pages later): where the engine or the kernel
    /// does not, and where nothing can be moved (no run long enough, an engine whose
    /// allocator is not known to allocate on demand, a snapshot in another shape than this
    /// build writes), the memory is copied as in `restore_authenticated_with`.
    ///
    /// **`pages` from `at.start` on are overwritten**, so everything the caller needs from
    /// there must be read first; what lies before `at` is untouched. Returns the object and
    /// how many bytes of its memory were moved rather than copied.
    pub fn restore_moving(
        engine: &ObjectEngine,
        pages: &mut sojourn_mem::AnonPages,
        at: std::ops::Range<usize>,
        compile: &dyn Fn(&[u8]) -> Result<ObjectModule, RuntimeError>,
    ) -> Result<(ResidentObject, usize), RuntimeError> {
        let base = pages.as_ptr() as usize;
        let mut unlaid = None;
        let mut obj = {
            let snapshot = pages
                .get(at.clone())
                .ok_or(SnapshotError::NotASnapshot(0))?;
            let (_, _, body, version) = split(snapshot)?;
            Self::restore_body_with(engine, body, version, compile, Some(&mut unlaid))?
        };
        if let Some(unlaid) = unlaid {
            // The chunks' addresses, as offsets in `pages`.
            let chunks: Vec<(usize, usize)> = unlaid
                .chunks
                .iter()
                .map(|&(offset, addr)| (offset, addr.wrapping_sub(base)))
                .collect();
            let moved = obj.lay_moving(engine, pages, at.start, unlaid.written, &chunks)?;
            obj.reset_shadow();
            return Ok((obj, moved));
        }
        Ok((obj, 0))
    }

    /// Lays the memory [`ResidentObject::restore_moving`] left unlaid: `chunks` are (offset
    /// in memory, offset in `pages`), ascending in both, each [`CHUNK`] bytes (as the restore
    /// placed them: checked, inside the memory, from the snapshot's bytes at or after
    /// `floor`). Returns how many bytes of memory were moved rather than copied.
    fn lay_moving(
        &mut self,
        engine: &ObjectEngine,
        pages: &mut sojourn_mem::AnonPages,
        floor: usize,
        written: usize,
        chunks: &[(usize, usize)],
    ) -> Result<usize, RuntimeError> {
        let mem = self
            .store
            .data()
            .memory
            .ok_or_else(|| field_err("memory_pages", "object has no memory"))?;
        let page = sojourn_mem::PAGE;
        let inside = chunks.iter().all(|&(_, at)| {
            at >= floor && at.checked_add(CHUNK).is_some_and(|end| end <= pages.len())
        });
        // The runs to move: (first chunk, chunk count, offset in `pages` they move to).
        // Their new places ascend and do not overlap, and none lies before `floor`.
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        let worth = engine.write_tracking && sojourn_mem::write_tracking_available();
        if engine.memories_on_demand && worth && CHUNK == page && inside {
            let mut next_free = floor.next_multiple_of(page);
            let mut first = 0;
            while first < chunks.len() {
                let count = chunks
                    .get(first..)
                    .unwrap_or_default()
                    .iter()
                    .zip(0..)
                    .take_while(|((offset, _), k)| {
                        chunks
                            .get(first)
                            .is_some_and(|(o, _)| *offset == o + k * CHUNK)
                    })
                    .count()
                    .max(1);
                if let Some(&(_, at)) = chunks.get(first) {
                    let to = (at - at % page).max(next_free);
                    let len = count * CHUNK;
                    if count >= MOVED_RUN_MIN && to + len <= pages.len() {
                        runs.push((first, count, to));
                        next_free = to + len;
                    }
                }
                first += count;
            }
        }
        // First the chunks that do not move, from where they lie (nothing has moved yet),
        // with what instantiation wrote cleared as a restore clears it.
        let mut is_moved = vec![false; chunks.len()];
        for &(first, count, _) in &runs {
            if let Some(flags) = is_moved.get_mut(first..first + count) {
                flags.fill(true);
            }
        }
        let copied: Vec<(usize, &[u8])> = chunks
            .iter()
            .zip(&is_moved)
            .filter(|(_, m)| !**m)
            .map(|(&(offset, at), _)| (offset, pages.get(at..at + CHUNK).unwrap_or_default()))
            .collect();
        {
            let data = mem.data_mut(&mut self.store);
            let written = written.min(data.len());
            if runs.is_empty() {
                lay_chunks(data, written, &copied)?;
                return Ok(0);
            }
            lay_chunks(data, 0, &copied)?;
            // What instantiation wrote is cleared where no chunk lands: not where a copied
            // chunk was laid, nor where a run's pages will be moved (clearing those would only
            // fault them in to be replaced).
            let mut covered: Vec<(usize, usize)> = copied
                .iter()
                .map(|(offset, _)| (*offset, offset + CHUNK))
                .chain(runs.iter().filter_map(|&(first, count, _)| {
                    chunks
                        .get(first)
                        .map(|(offset, _)| (*offset, offset + count * CHUNK))
                }))
                .collect();
            covered.sort_unstable();
            let mut from = 0;
            for (start, end) in covered.into_iter().chain([(written, written)]) {
                if let Some(gap) = data.get_mut(from.min(written)..start.min(written)) {
                    gap.fill(0);
                }
                from = from.max(end);
            }
        }
        // Then the runs move. Places and sources both ascend without overlapping, so a
        // chunk moving towards the front never overwrites a later chunk's bytes, nor one
        // moving back an earlier chunk's: those towards the front go first to last, those
        // towards the back last to first.
        let moves: Vec<(usize, usize)> = runs
            .iter()
            .flat_map(|&(first, count, to)| {
                chunks
                    .get(first..first + count)
                    .unwrap_or_default()
                    .iter()
                    .zip(0..)
                    .map(move |(&(_, at), k)| (at, to + k * CHUNK))
            })
            .collect();
        let buf: &mut [u8] = pages;
        for &(from, to) in moves.iter().filter(|(from, to)| to < from) {
            buf.copy_within(from..from + CHUNK, to);
        }
        for &(from, to) in moves.iter().rev().filter(|(from, to)| to > from) {
            buf.copy_within(from..from + CHUNK, to);
        }
        // Each run's pages moved to its place in memory; a run that cannot be is copied
        // from its new place.
        let mut moved = 0;
        for &(first, count, to) in &runs {
            let Some(&(offset, _)) = chunks.get(first) else {
                continue;
            };
            let len = count * CHUNK;
            match pages.move_into(to, &mem, &mut self.store, offset..offset + len) {
                Ok(()) => moved += len,
                Err(_) => {
                    let data = mem.data_mut(&mut self.store);
                    if let (Some(dst), Some(src)) =
                        (data.get_mut(offset..offset + len), pages.get(to..to + len))
                    {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Restores from a snapshot body whose checksum is (being) checked by the caller.
    fn restore_body(
        engine: &ObjectEngine,
        body: &[u8],
        version: u16,
    ) -> Result<ResidentObject, RuntimeError> {
        Self::restore_body_with(engine, body, version, &|wasm| engine.compile(wasm), None)
    }

    fn restore_body_with(
        engine: &ObjectEngine,
        body: &[u8],
        version: u16,
        compile: &dyn Fn(&[u8]) -> Result<ObjectModule, RuntimeError>,
        unlaid: Option<&mut Option<Unlaid>>,
    ) -> Result<ResidentObject, RuntimeError> {
        if let Some((entries, chunks)) = read_body_fast(body, version) {
            let m = MapView(&entries);
            let descriptor = Descriptor::decode(m.bytes("descriptor")?)
                .map_err(|e| field_err("descriptor", e.to_string()))?;
            let module = compile(m.bytes("module")?)?;
            return restore_parts(engine, &module, descriptor, &m, chunks.into_iter(), unlaid);
        }
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
        let module = compile(m.bytes("module")?)?;
        let pairs = decoded_chunks(version, m.get("memory_chunks")?)?;
        // Decoded chunks are not in the snapshot's bytes: they are laid here, and nothing is
        // left unlaid for the caller.
        restore_parts(engine, &module, descriptor, &m, pairs.into_iter(), None)
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
/// Nesting deeper than this (in a small entry) sends a snapshot to the general path.
const FAST_MAX_DEPTH: usize = 32;
static ZERO_CHUNK: [u8; CHUNK] = [0; CHUNK];

/// Runs of consecutive chunks at least this long (64 KiB) are mapped in with one call before
/// they are copied in (`sojourn_mem::populate`), at most this much (2 MiB) at a time.
const POPULATE_MIN: usize = 64 << 10;
const POPULATE_RUN: usize = 2 << 20;

/// Runs of consecutive chunks at least this long (16 chunks, 64 KiB) are moved into memory
/// by [`ResidentObject::restore_moving`]; shorter ones are copied (a mapping per short run
/// would cost more than the copy, and the kernel limits a process's mappings).
pub const MOVED_RUN_MIN: usize = 16;

/// Memories at least this large (8 MiB) are laid out by two threads.
const PARALLEL_LAYOUT_MIN: usize = 8 << 20;

/// Lays `chunks` (ascending offsets, each a whole [`CHUNK`] inside `data`) into `data`, and
/// zeroes what instantiation may have written (below `written`) that no chunk covers; pages
/// above `written` that no chunk covers stay untouched. A large memory is laid out in two
/// halves on two threads: most of the time goes to first touches of the new instance's
/// memory (page faults), which then run side by side.
fn lay_chunks(
    data: &mut [u8],
    written: usize,
    chunks: &[(usize, &[u8])],
) -> Result<(), SnapshotError> {
    if data.len() < PARALLEL_LAYOUT_MIN || chunks.len() < 2 {
        lay_range(data, 0, written, chunks);
        return Ok(());
    }
    let mid = data.len() / 2 / CHUNK * CHUNK;
    let split = chunks.partition_point(|(start, _)| *start < mid);
    let (low, high) = data.split_at_mut(mid);
    let (low_chunks, high_chunks) = chunks.split_at(split);
    let high = std::sync::Mutex::new(high);
    let lay_high = || match high.lock() {
        Ok(mut h) => {
            lay_range(&mut h, mid, written, high_chunks);
            true
        }
        Err(_) => false,
    };
    std::thread::scope(|scope| {
        let upper = std::thread::Builder::new().spawn_scoped(scope, lay_high);
        lay_range(low, 0, written, low_chunks);
        // No second thread to be had: this one lays out the upper half too.
        let done = match upper {
            Ok(upper) => upper.join().unwrap_or(false),
            Err(_) => lay_high(),
        };
        if done {
            Ok(())
        } else {
            Err(SnapshotError::Body(
                "the thread laying out memory stopped".into(),
            ))
        }
    })
}

/// [`lay_chunks`] for the part of memory that starts at offset `base`.
fn lay_range(data: &mut [u8], base: usize, written: usize, chunks: &[(usize, &[u8])]) {
    let written = written.saturating_sub(base).min(data.len());
    let mut clear_from = 0usize;
    let mut populated_to = 0usize;
    for (i, &(start, bytes)) in chunks.iter().enumerate() {
        let Some(at) = start.checked_sub(base) else {
            continue;
        };
        if at >= populated_to {
            // The run of consecutive chunks from here (at most POPULATE_RUN bytes) is mapped
            // in with one call instead of a fault per page; short runs take their faults.
            let run = chunks
                .get(i..)
                .unwrap_or_default()
                .iter()
                .zip(0..POPULATE_RUN / CHUNK)
                .take_while(|((s, _), k)| Some(*s) == start.checked_add(k * CHUNK))
                .count();
            let end = at.saturating_add(run * CHUNK).min(data.len());
            if run * CHUNK >= POPULATE_MIN {
                if let Some(fresh) = data.get_mut(at..end) {
                    sojourn_mem::populate(fresh);
                }
            }
            populated_to = end;
        }
        if let Some(dst) = data.get_mut(at..at.saturating_add(CHUNK)) {
            if dst.len() == bytes.len() {
                dst.copy_from_slice(bytes);
            }
        }
        if let Some(gap) = data.get_mut(clear_from..at.min(written)) {
            gap.fill(0);
        }
        clear_from = at.saturating_add(CHUNK);
    }
    if let Some(rest) = data.get_mut(clear_from..written) {
        rest.fill(0);
    }
}

/// Checks a snapshot's memory chunks against a memory of `len` bytes and places them at their
/// byte offsets: indexes strictly ascending, each chunk exactly [`CHUNK`] bytes and inside the
/// memory. The one rule for restoring (`restore_parts`) and for reading a snapshot's memory
/// without restoring it (`SnapshotMemory`).
pub(crate) fn place_chunks<B: AsRef<[u8]>>(
    len: usize,
    chunks: impl Iterator<Item = (u64, B)>,
) -> Result<Vec<(usize, B)>, SnapshotError> {
    let mut placed = Vec::with_capacity(chunks.size_hint().0);
    let mut last: Option<u64> = None;
    for (idx, bytes) in chunks {
        if last.is_some_and(|l| idx <= l) || bytes.as_ref().len() != CHUNK {
            return Err(field_err(
                "memory_chunks",
                "chunks out of order or mis-sized",
            ));
        }
        last = Some(idx);
        let start = usize::try_from(idx)
            .ok()
            .and_then(|i| i.checked_mul(CHUNK))
            .ok_or_else(|| field_err("memory_chunks", "index overflow"))?;
        if start.checked_add(CHUNK).is_none_or(|end| end > len) {
            return Err(field_err("memory_chunks", "chunk beyond memory"));
        }
        placed.push((start, bytes));
    }
    Ok(placed)
}

/// The length of the zero padding (a byte string) whose head starts at `at` and which is
/// followed by a head of `pages_head` bytes, such that what follows that head starts on a
/// [`CHUNK`] boundary: the shortest, less than [`PAD_MAX`]. (The padding's own head is 1, 2
/// or 3 bytes long depending on its length; where no length below [`CHUNK`] fits its head,
/// one a chunk longer does.)
fn pad_before(at: usize, pages_head: usize) -> usize {
    let to_boundary = |h: usize| (CHUNK - (at + h + pages_head) % CHUNK) % CHUNK;
    (1..=3)
        .map(|h| (h, to_boundary(h)))
        .find(|&(h, p)| head_len(p as u64) == h)
        .map_or(to_boundary(3) + CHUNK, |(_, p)| p)
}

/// Length of a CBOR head in shortest form.
fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends a CBOR head in shortest form (as ciborium writes it).
fn put_head(out: &mut impl Sink, major: u8, n: impl TryInto<u64>) {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    let m = major << 5;
    match head_len(n) {
        1 => out.put(&[m | n as u8]),
        2 => out.put(&[m | 24, n as u8]),
        3 => {
            out.put(&[m | 25]);
            out.put(&(n as u16).to_be_bytes());
        }
        5 => {
            out.put(&[m | 26]);
            out.put(&(n as u32).to_be_bytes());
        }
        _ => {
            out.put(&[m | 27]);
            out.put(&n.to_be_bytes());
        }
    }
}

/// A CBOR head at `*pos`: (major type, argument, whether in shortest form). `None` for an
/// indefinite length, a reserved value or a truncated head.
fn read_head(body: &[u8], pos: &mut usize) -> Option<(u8, u64, bool)> {
    let b = *body.get(*pos)?;
    *pos += 1;
    let (major, ai) = (b >> 5, b & 31);
    let (len, min) = match ai {
        0..=23 => return Some((major, u64::from(ai), true)),
        24 => (1, 24),
        25 => (2, 0x100),
        26 => (4, 0x1_0000),
        27 => (8, 0x1_0000_0000),
        _ => return None,
    };
    let bytes = body.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    let n = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Some((major, n, n >= min))
}

/// Skips one well-formed definite-length item at `*pos` (no canonical check: the caller
/// decodes the item canonically). `None` if malformed, indefinite or too deep.
fn skip_item(body: &[u8], pos: &mut usize, depth: usize) -> Option<()> {
    if depth > FAST_MAX_DEPTH {
        return None;
    }
    let (major, n, _) = read_head(body, pos)?;
    match major {
        2 | 3 => {
            let end = pos.checked_add(usize::try_from(n).ok()?)?;
            if end > body.len() {
                return None;
            }
            *pos = end;
        }
        4 | 5 => {
            let items = if major == 5 { n.checked_mul(2)? } else { n };
            for _ in 0..items {
                skip_item(body, pos, depth + 1)?;
            }
        }
        6 => skip_item(body, pos, depth + 1)?,
        _ => {}
    }
    Some(())
}

/// An array of `[uint, second]` pairs at `*pos`, every head in shortest form, `second` read
/// by `read_second`. `None` for anything else.
fn read_pairs<'a, T>(
    body: &'a [u8],
    pos: &mut usize,
    read_second: impl Fn(&'a [u8], &mut usize) -> Option<T>,
) -> Option<Vec<(u64, T)>> {
    let (major, n, shortest) = read_head(body, pos)?;
    if major != MAJOR_ARRAY || !shortest {
        return None;
    }
    // Each pair takes at least 3 bytes: never reserve for more than the input can hold.
    let n = usize::try_from(n).ok()?;
    if n > body.len().saturating_sub(*pos) / 3 {
        return None;
    }
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        if *body.get(*pos)? != 0x82 {
            return None;
        }
        *pos += 1;
        let first = read_uint(body, pos)?;
        pairs.push((first, read_second(body, pos)?));
    }
    Some(pairs)
}

/// An unsigned integer at `*pos` with its head in shortest form.
fn read_uint(body: &[u8], pos: &mut usize) -> Option<u64> {
    let (major, n, shortest) = read_head(body, pos)?;
    (major == MAJOR_UINT && shortest).then_some(n)
}

/// The memory chunks array at `*pos` (version 1), borrowed: `[[index, bytes], …]` with every
/// head in shortest form. `None` for anything else.
fn read_chunks<'a>(body: &'a [u8], pos: &mut usize) -> Option<Vec<(u64, &'a [u8])>> {
    read_pairs(body, pos, read_bytes)
}

/// A byte string at `*pos` with its head in shortest form.
fn read_bytes<'a>(body: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let (major, len, shortest) = read_head(body, pos)?;
    if major != MAJOR_BYTES || !shortest {
        return None;
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let bytes = body.get(*pos..end)?;
    *pos = end;
    Some(bytes)
}

/// Version 2's memory at `*pos`, borrowed: `[[[first, count], …], pad, pages]` with every
/// head in shortest form and the rules of [`chunks_of_runs`]. `None` for anything else.
fn read_pages<'a>(body: &'a [u8], pos: &mut usize) -> Option<Vec<(u64, &'a [u8])>> {
    let (major, n, shortest) = read_head(body, pos)?;
    if major != MAJOR_ARRAY || n != 3 || !shortest {
        return None;
    }
    let runs = read_pairs(body, pos, read_uint)?;
    let pad = read_bytes(body, pos)?;
    let pages = read_bytes(body, pos)?;
    chunks_of_runs(&runs, pad, pages).ok()
}

/// Version 2's memory as chunks (index, [`CHUNK`] bytes of `pages`), ascending: `runs` are
/// (first index, count), ascending and neither empty, overlapping nor adjacent (each as long
/// as it can be); `pad` is fewer than [`PAD_MAX`] zero bytes; `pages` holds exactly the
/// runs' chunks, in order. Whether the chunks lie inside the memory is checked where they
/// are placed ([`place_chunks`]).
pub(crate) fn chunks_of_runs<'a>(
    runs: &[(u64, u64)],
    pad: &[u8],
    pages: &'a [u8],
) -> Result<Vec<(u64, &'a [u8])>, SnapshotError> {
    let bad = |reason: &str| field_err("memory_chunks", reason);
    if pad.len() >= PAD_MAX || pad.iter().any(|&b| b != 0) {
        return Err(bad("the padding is not fewer than 8192 zero bytes"));
    }
    let mut total: u64 = 0;
    let mut next: Option<u64> = None;
    for &(first, count) in runs {
        if count == 0 || next.is_some_and(|n| first <= n) {
            return Err(bad("runs empty, out of order, overlapping or adjacent"));
        }
        next = Some(
            first
                .checked_add(count)
                .ok_or_else(|| bad("index overflow"))?,
        );
        total = total
            .checked_add(count)
            .ok_or_else(|| bad("index overflow"))?;
    }
    if !pages.len().is_multiple_of(CHUNK) || u64::try_from(pages.len() / CHUNK).ok() != Some(total)
    {
        return Err(bad("the pages are not the runs' chunks"));
    }
    let mut chunks = pages.chunks_exact(CHUNK);
    let mut out = Vec::with_capacity(pages.len() / CHUNK);
    for &(first, count) in runs {
        for index in first..first + count {
            out.extend(chunks.next().map(|c| (index, c)));
        }
    }
    Ok(out)
}

/// A decoded `memory_chunks` value as chunks (index, bytes), in the shape of `version`:
/// `[[index, bytes], …]` (version 1) or `[runs, pad, pages]` (version 2). Each chunk's size,
/// order and place are checked where it is placed ([`place_chunks`]).
pub(crate) fn decoded_chunks(
    version: u16,
    value: &Cbor,
) -> Result<Vec<(u64, &[u8])>, SnapshotError> {
    let shape = |what: &str| field_err("memory_chunks", format!("expected {what}"));
    if version == VERSION_PAIRS {
        let Cbor::Array(chunks) = value else {
            return Err(shape("an array"));
        };
        return chunks
            .iter()
            .map(|c| match c {
                Cbor::Array(pair) => match pair.as_slice() {
                    [Cbor::Integer(i), Cbor::Bytes(b)] => Ok((
                        u64::try_from(*i).map_err(|_| field_err("memory_chunks", "bad index"))?,
                        b.as_slice(),
                    )),
                    _ => Err(shape("[index, bytes]")),
                },
                _ => Err(shape("[index, bytes]")),
            })
            .collect();
    }
    let Cbor::Array(parts) = value else {
        return Err(shape("[runs, pad, pages]"));
    };
    let [Cbor::Array(runs), Cbor::Bytes(pad), Cbor::Bytes(pages)] = parts.as_slice() else {
        return Err(shape("[runs, pad, pages]"));
    };
    let runs = runs
        .iter()
        .map(|r| match r {
            Cbor::Array(pair) => match pair.as_slice() {
                [Cbor::Integer(first), Cbor::Integer(count)] => Ok((
                    u64::try_from(*first).map_err(|_| field_err("memory_chunks", "bad index"))?,
                    u64::try_from(*count).map_err(|_| field_err("memory_chunks", "bad count"))?,
                )),
                _ => Err(shape("[first, count]")),
            },
            _ => Err(shape("[first, count]")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    chunks_of_runs(&runs, pad, pages)
}

/// The snapshot body read in one pass, if it has exactly the shape this build writes: a map
/// of 12 text keys in strictly ascending canonical order, each small value canonical on its
/// own, and `memory_chunks` in the shape of `version` with every head in shortest form
/// (version 1: an array of `[uint, bytes]` pairs; version 2: `[runs, pad, pages]`). Such a
/// body is canonical as a whole. Returns the entries other than `memory_chunks` and the
/// chunks (borrowed); `None` sends the body to the general path.
#[allow(clippy::type_complexity)]
pub(crate) fn read_body_fast(
    body: &[u8],
    version: u16,
) -> Option<(Vec<(Cbor, Cbor)>, Vec<(u64, &[u8])>)> {
    if *body.first()? != (MAJOR_MAP << 5) | 12 {
        return None;
    }
    let mut pos = 1;
    let mut entries = Vec::with_capacity(11);
    let mut chunks = None;
    let mut previous: &[u8] = &[];
    for _ in 0..12 {
        let start = pos;
        skip_item(body, &mut pos, 1)?;
        let key = body.get(start..pos)?;
        if key <= previous {
            return None;
        }
        previous = key;
        let Ok(Cbor::Text(name)) = canonical::decode(key) else {
            return None;
        };
        if name == "memory_chunks" {
            chunks = Some(if version == VERSION_PAIRS {
                read_chunks(body, &mut pos)?
            } else {
                read_pages(body, &mut pos)?
            });
        } else {
            let start = pos;
            skip_item(body, &mut pos, 1)?;
            let value = canonical::decode(body.get(start..pos)?).ok()?;
            entries.push((Cbor::Text(name), value));
        }
    }
    if pos != body.len() {
        return None;
    }
    Some((entries, chunks?))
}

/// Memory a restore checked and placed but left for its caller to lay
/// ([`restore_parts`] with `unlaid`).
pub(crate) struct Unlaid {
    /// What instantiation may have written (bytes from the start).
    written: usize,
    /// (offset in memory, address of the chunk's bytes), ascending.
    chunks: Vec<(usize, usize)>,
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
///
/// With `unlaid`, the chunks are checked and placed but not laid: where they are is left
/// there for the caller, which must lay them before anything else uses the object (and then
/// take the rollback shadow, [`ResidentObject::reset_shadow`]): see
/// [`ResidentObject::restore_moving`].
pub(crate) fn restore_parts<'c>(
    engine: &ObjectEngine,
    module: &crate::ObjectModule,
    descriptor: Descriptor,
    m: &MapView<'_>,
    chunks: impl Iterator<Item = (u64, &'c [u8])>,
    unlaid: Option<&mut Option<Unlaid>>,
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
    // Only the memory instantiation had can hold what it wrote: grown pages are zero. Of
    // that, only what no chunk overwrites is cleared (untouched pages stay untouched).
    let written = usize::try_from(have)
        .ok()
        .and_then(|p| p.checked_mul(65536))
        .unwrap_or(usize::MAX);
    let data = mem.data_mut(&mut obj.store);
    // The grown part is a mapping of its own, not yet advised (see `instantiate`).
    sojourn_mem::advise(data);
    let written = written.min(data.len());
    // Checked first, then laid out (in parallel halves when large).
    let placed = place_chunks(data.len(), chunks)?;
    let deferred = unlaid.is_some();
    match unlaid {
        None => lay_chunks(data, written, &placed)?,
        Some(out) => {
            *out = Some(Unlaid {
                written,
                chunks: placed
                    .iter()
                    .map(|(at, bytes)| (*at, bytes.as_ptr() as usize))
                    .collect(),
            })
        }
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
    if !deferred {
        obj.reset_shadow();
    }
    Ok(obj)
}

/// A snapshot's parts: the checksummed bytes, the checksum, the body, the format version.
type Parts<'a> = (&'a [u8], [u8; 32], &'a [u8], u16);

/// Checks magic and version; returns the parts.
pub(crate) fn split(snapshot: &[u8]) -> Result<Parts<'_>, SnapshotError> {
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
    if version != VERSION && version != VERSION_PAIRS {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let sum: [u8; 32] = sum
        .try_into()
        .map_err(|_| SnapshotError::NotASnapshot(min))?;
    let body = signed
        .get(MAGIC.len() + 2..)
        .ok_or(SnapshotError::NotASnapshot(min))?;
    Ok((signed, sum, body, version))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn body(chunks: Vec<Cbor>) -> Cbor {
        body_with(Cbor::Array(chunks))
    }

    /// A version 2 body: `memory_chunks` = `[runs, pad, pages]`.
    fn body_v2(runs: &[(u64, u64)], pad: usize, fill: u8) -> Cbor {
        let count: u64 = runs.iter().map(|r| r.1).sum();
        body_with(Cbor::Array(vec![
            Cbor::Array(
                runs.iter()
                    .map(|&(f, n)| {
                        Cbor::Array(vec![Cbor::Integer(f.into()), Cbor::Integer(n.into())])
                    })
                    .collect(),
            ),
            Cbor::Bytes(vec![0; pad]),
            Cbor::Bytes(vec![fill; count as usize * CHUNK]),
        ]))
    }

    fn body_with(memory: Cbor) -> Cbor {
        let mut entries = vec![
            (t("object_id"), Cbor::Bytes(vec![7; 16])),
            (t("seq"), Cbor::Integer(300.into())),
            (
                t("fields"),
                Cbor::Map(vec![(t("b"), Cbor::Integer(1.into())), (t("a"), t("x"))]),
            ),
            (t("memory_pages"), Cbor::Integer(2.into())),
            (
                t("globals"),
                Cbor::Array(vec![Cbor::Array(vec![
                    Cbor::Integer(0.into()),
                    t("i64"),
                    Cbor::Integer(5.into()),
                ])]),
            ),
            (t("inbox"), Cbor::Array(vec![Cbor::Bytes(b"m".to_vec())])),
            (t("schedule"), t("await_message")),
            (t("status"), t("active")),
            (t("last_rejection"), Cbor::Null),
            (t("descriptor"), Cbor::Bytes(vec![1, 2, 3])),
            (t("module"), Cbor::Bytes(vec![0; 300])),
        ];
        entries.push((t("memory_chunks"), memory));
        Cbor::Map(entries)
    }

    /// Laying chunks out in two halves gives the bytes one pass gives: chunks in place,
    /// what instantiation wrote (below `written`) and no chunk covers zeroed, the rest
    /// untouched; whichever side of the middle the chunks, gaps and `written` fall on.
    #[test]
    fn parallel_layout_is_the_sequential_layout() {
        let len = 16 << 20;
        let mid = len / 2;
        let payload: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; CHUNK]).collect();
        let layouts: Vec<Vec<usize>> = vec![
            vec![0, CHUNK, mid - CHUNK, mid, mid + 5 * CHUNK, len - CHUNK],
            vec![mid - CHUNK, mid],
            vec![3 * CHUNK, 40 * CHUNK],
            vec![mid + CHUNK, len - 2 * CHUNK],
            vec![0, len - CHUNK],
        ];
        for starts in layouts {
            for written in [0, 64 * 1024, mid + 2 * CHUNK, len] {
                let chunks: Vec<(usize, &[u8])> = starts
                    .iter()
                    .zip(payload.iter().cycle())
                    .map(|(&s, p)| (s, p.as_slice()))
                    .collect();
                let mut two = vec![0xAAu8; len];
                lay_chunks(&mut two, written, &chunks).unwrap();
                let mut one = vec![0xAAu8; len];
                lay_range(&mut one, 0, written, &chunks);
                assert!(two == one, "{starts:?} written {written}");
                for &(s, p) in &chunks {
                    assert_eq!(&one[s..s + CHUNK], p);
                }
                let covered = |at: usize| chunks.iter().any(|&(s, _)| (s..s + CHUNK).contains(&at));
                for at in (0..len).step_by(CHUNK / 2) {
                    if !covered(at) {
                        let want = if at < written { 0 } else { 0xAA };
                        assert_eq!(one[at], want, "{starts:?} written {written} at {at}");
                    }
                }
            }
        }
    }

    fn chunk(i: u64, fill: u8) -> Cbor {
        Cbor::Array(vec![
            Cbor::Integer(i.into()),
            Cbor::Bytes(vec![fill; CHUNK]),
        ])
    }

    #[test]
    fn fast_reader_agrees_with_the_general_decode() {
        let bytes =
            canonical::encode(&body(vec![chunk(0, 1), chunk(30, 2), chunk(1000, 3)])).unwrap();
        let (entries, chunks) = read_body_fast(&bytes, VERSION_PAIRS).expect("fast path");
        let Cbor::Map(all) = canonical::decode(&bytes).unwrap() else {
            panic!("not a map")
        };
        let expected: Vec<(Cbor, Cbor)> = all
            .iter()
            .filter(|(k, _)| k != &t("memory_chunks"))
            .cloned()
            .collect();
        assert_eq!(entries, expected);
        let got: Vec<(u64, Vec<u8>)> = chunks.iter().map(|(i, b)| (*i, b.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (0, vec![1; CHUNK]),
                (30, vec![2; CHUNK]),
                (1000, vec![3; CHUNK])
            ]
        );
    }

    #[test]
    fn fast_reader_declines_what_is_not_plainly_canonical() {
        let good = canonical::encode(&body(vec![chunk(5, 1)])).unwrap();
        assert!(read_body_fast(&good, VERSION_PAIRS).is_some());
        // Every truncation and every single-byte change outside chunk payloads either stays
        // canonical (then the general decode agrees) or is declined.
        for len in 0..good.len() {
            assert!(
                read_body_fast(&good[..len], VERSION_PAIRS).is_none(),
                "truncated at {len}"
            );
        }
        // The body ends with `memory_chunks` then `"last_rejection": null` (16 bytes).
        let end = good.len() - 16;
        assert_eq!(good[end..end + 2], [0x6e, b'l']);
        let payload = end - CHUNK..end;
        for i in (0..good.len()).filter(|i| !payload.contains(i)) {
            for flip in [0x01u8, 0x10, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                if read_body_fast(&bad, VERSION_PAIRS).is_some() {
                    assert!(
                        canonical::decode(&bad).is_ok(),
                        "accepted non-canonical at {i}"
                    );
                }
            }
        }
        // The chunk index in a longer form than needed.
        let at = end - CHUNK - 3 - 1; // 0x82 | index (5) | 0x59 0x10 0x00 | payload
        assert_eq!(&good[at - 1..at + 1], &[0x82, 0x05]);
        let mut long = good.clone();
        long.splice(at..at + 1, [0x18, 0x05]);
        assert!(read_body_fast(&long, VERSION_PAIRS).is_none());
        assert!(canonical::decode(&long).is_err());
        // Keys out of order.
        let mut w = Vec::new();
        ciborium::into_writer(&body(vec![chunk(5, 1)]), &mut w).unwrap();
        assert!(read_body_fast(&w, VERSION_PAIRS).is_none());
        assert!(canonical::decode(&w).is_err());
        // A huge declared chunk count does not reserve memory.
        assert_eq!(good[at - 2], 0x81);
        let mut huge = good[..at - 2].to_vec();
        huge.extend([0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        huge.extend_from_slice(&good[at - 1..]);
        assert!(read_body_fast(&huge, VERSION_PAIRS).is_none());
    }

    #[test]
    fn the_padding_puts_the_pages_on_a_page_boundary() {
        for pages_head in [1, 2, 3, 5, 9] {
            for at in 0..2 * CHUNK {
                let p = pad_before(at, pages_head);
                assert!(p < PAD_MAX, "{at} {pages_head}: {p}");
                let content = at + head_len(p as u64) + p + pages_head;
                assert_eq!(content % CHUNK, 0, "{at} {pages_head}: {p}");
                // The shortest that does.
                assert!(
                    (0..p)
                        .all(|q| !(at + head_len(q as u64) + q + pages_head).is_multiple_of(CHUNK)),
                    "{at} {pages_head}: {p} is not the shortest"
                );
            }
        }
    }

    #[test]
    fn version_2_fast_reader_agrees_with_the_general_decode() {
        let runs = [(0, 2), (30, 1), (1000, 3)];
        let bytes = canonical::encode(&body_v2(&runs, 100, 9)).unwrap();
        let (entries, chunks) = read_body_fast(&bytes, VERSION).expect("fast path");
        let Cbor::Map(all) = canonical::decode(&bytes).unwrap() else {
            panic!("not a map")
        };
        let memory = &all
            .iter()
            .find(|(k, _)| k == &t("memory_chunks"))
            .unwrap()
            .1;
        let general = decoded_chunks(VERSION, memory).unwrap();
        assert_eq!(entries.len(), 11);
        let indexes: Vec<u64> = chunks.iter().map(|c| c.0).collect();
        assert_eq!(indexes, [0, 1, 30, 1000, 1001, 1002]);
        assert_eq!(chunks, general);
        assert!(chunks.iter().all(|(_, b)| *b == [9; CHUNK]));
        // Borrowed from the body, one after another.
        let first = chunks[0].1.as_ptr() as usize - bytes.as_ptr() as usize;
        for (k, (_, b)) in chunks.iter().enumerate() {
            assert_eq!(
                b.as_ptr() as usize - bytes.as_ptr() as usize,
                first + k * CHUNK
            );
        }
        // A version 1 reader does not take it, nor a version 2 reader a version 1 body.
        assert!(read_body_fast(&bytes, VERSION_PAIRS).is_none());
        let v1 = canonical::encode(&body(vec![chunk(5, 1)])).unwrap();
        assert!(read_body_fast(&v1, VERSION).is_none());
    }

    #[test]
    fn version_2_memory_rules() {
        let pages = |n: usize| vec![1u8; n * CHUNK];
        let ok = |runs: &[(u64, u64)], pad: usize, n: usize| {
            chunks_of_runs(runs, &vec![0; pad], &pages(n)).map(|c| c.len())
        };
        assert_eq!(ok(&[], 0, 0), Ok(0));
        assert_eq!(ok(&[(0, 1), (2, 2)], 8191, 3), Ok(3));
        for (what, runs, pad, n) in [
            ("empty run", vec![(0, 0)], 0, 0),
            ("adjacent", vec![(0, 1), (1, 1)], 0, 2),
            ("overlapping", vec![(0, 2), (1, 2)], 0, 4),
            ("descending", vec![(5, 1), (1, 1)], 0, 2),
            ("too few pages", vec![(0, 2)], 0, 1),
            ("too many pages", vec![(0, 2)], 0, 3),
            ("pad too long", vec![(0, 1)], 8192, 1),
            ("index overflow", vec![(u64::MAX, 2)], 0, 2),
            ("count overflow", vec![(0, 1), (2, u64::MAX)], 0, 1),
        ] {
            assert!(ok(&runs, pad, n).is_err(), "{what}");
        }
        assert!(
            chunks_of_runs(&[(0, 1)], &[0, 1], &pages(1)).is_err(),
            "pad not zero"
        );
        assert!(
            chunks_of_runs(&[(0, 1)], &[], &[1; CHUNK + 1]).is_err(),
            "ragged pages"
        );
    }

    #[test]
    fn version_2_fast_reader_declines_what_is_not_plainly_canonical() {
        let good = canonical::encode(&body_v2(&[(5, 1), (9, 2)], 3, 1)).unwrap();
        assert!(read_body_fast(&good, VERSION).is_some());
        for len in 0..good.len() {
            assert!(
                read_body_fast(&good[..len], VERSION).is_none(),
                "truncated at {len}"
            );
        }
        // The body ends with the pages, then `"last_rejection": null` (16 bytes).
        let end = good.len() - 16;
        let payload = end - 3 * CHUNK..end;
        for i in (0..good.len()).filter(|i| !payload.contains(i)) {
            for flip in [0x01u8, 0x10, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                if let Some((_, chunks)) = read_body_fast(&bad, VERSION) {
                    assert!(
                        canonical::decode(&bad).is_ok(),
                        "accepted non-canonical at {i}"
                    );
                    assert!(!chunks.is_empty());
                }
            }
        }
        // A huge declared run count does not reserve memory: `[runs, pad, pages]` is
        // 0x83, then the runs' array head.
        let at = good
            .windows(3)
            .position(|w| w == [0x83, 0x82, 0x82])
            .expect("the memory's head")
            + 1;
        let mut huge = good[..at].to_vec();
        huge.extend([0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        huge.extend_from_slice(&good[at + 1..]);
        assert!(read_body_fast(&huge, VERSION).is_none());
    }
}
