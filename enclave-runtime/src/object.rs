//! A resident object: one long-lived wasmtime store and instance, its canonical fields, inbox
//! and schedule. Every entry is a transaction validated against the object's own descriptor.

use std::collections::VecDeque;
use std::sync::Arc;

use sojourn_policy::{Descriptor, EntryPoint, Fields, Rollback, TrustView, Violation};
use wasmtime::{Global, Store, Trap, TypedFunc, Val};

use crate::abi::{linker, GuestFault, HostState, Txn};
use crate::engine::{ObjectEngine, ObjectModule, EPOCH_MS};
use crate::module::GLOBAL_EXPORT_PREFIX;
use crate::record::{Decision, Digest, EntryInputs, ObjectId, Outcome, TransitionRecord};
use crate::RuntimeError;

/// When the object runs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// At this time (ms since the epoch).
    WakeAt(i64),
    /// When a message arrives.
    AwaitMessage,
}

/// Whether the object runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Runs on its schedule.
    Active,
    /// Stopped after a fault (or by an operator); inspectable, resumable.
    Suspended {
        /// Why.
        reason: String,
    },
}

/// A message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The object exports no `sojourn_on_message`.
    #[error("the object accepts no messages (it exports no sojourn_on_message)")]
    NotAccepted,
    /// Larger than `cycle.max_message_bytes`.
    #[error("message of {len} bytes exceeds the object's limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The inbox holds `cycle.inbox_capacity` messages already.
    #[error("the object's inbox is full ({capacity} messages)")]
    Full {
        /// The capacity.
        capacity: u32,
    },
}

/// An image of linear memory to compare with: the pre-entry image kept for `rollback =
/// "memory"`, and the image as last checkpointed. Entries and checkpoints compare memory with
/// it chunk by chunk and copy only the chunks that differ, so untouched pages cost a
/// comparison, never a copy.
///
/// The image may be shared (a whole-memory checkpoint hands the same bytes to the store):
/// it is copied on the first write only while the other holder still has it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryShadow {
    image: Arc<Vec<u8>>,
}

/// Comparison granularity of [`MemoryShadow`].
const CHUNK: usize = 4096;

impl MemoryShadow {
    pub(crate) fn capture(mem: &[u8]) -> MemoryShadow {
        let mut image = sojourn_mem::with_capacity(mem.len());
        image.extend_from_slice(mem);
        MemoryShadow {
            image: Arc::new(image),
        }
    }

    /// A shadow of exactly `image`, shared with its other holder.
    pub(crate) fn shared(image: Arc<Vec<u8>>) -> MemoryShadow {
        MemoryShadow { image }
    }

    /// Brings the image up to date with `mem`, calling `changed(index, chunk)` for every
    /// chunk of the old image's length that differed.
    fn update(&mut self, mem: &[u8], mut changed: impl FnMut(usize, &[u8])) {
        let common = self.image.len().min(mem.len());
        let mut at = 0;
        while at < common {
            let end = (at + CHUNK).min(common);
            let (Some(old), Some(new)) = (self.image.get(at..end), mem.get(at..end)) else {
                break;
            };
            if old != new {
                // Copies the image first if it is still shared.
                if let Some(dst) = Arc::make_mut(&mut self.image).get_mut(at..end) {
                    dst.copy_from_slice(new);
                }
                changed(at / CHUNK, new);
            }
            at = end;
        }
    }

    /// After an accepted entry: bring the image up to date. Returns the dirty chunk count.
    pub(crate) fn sync(&mut self, mem: &[u8]) -> usize {
        let mut dirty = 0;
        self.update(mem, |_, _| dirty += 1);
        if mem.len() > self.image.len() {
            let grown = mem.get(self.image.len()..).unwrap_or_default();
            Arc::make_mut(&mut self.image).extend_from_slice(grown);
        }
        dirty
    }

    /// Brings the image up to date and hands every chunk that differs (chunks beyond the old
    /// image count as zero) to `dirty` with its index.
    pub(crate) fn sync_into(&mut self, mem: &[u8], dirty: &mut Vec<(u32, Vec<u8>)>) {
        let old_len = self.image.len().min(mem.len());
        self.update(mem, |i, c| dirty.push((i as u32, c.to_vec())));
        if mem.len() > self.image.len() {
            let grown = mem.get(old_len..).unwrap_or_default();
            for (j, c) in grown.chunks(CHUNK).enumerate() {
                if c.iter().any(|b| *b != 0) {
                    dirty.push(((old_len / CHUNK + j) as u32, c.to_vec()));
                }
            }
            Arc::make_mut(&mut self.image).extend_from_slice(grown);
        }
    }

    /// After a rejected entry: put memory back. Pages grown during the entry cannot be
    /// un-grown; they are zeroed. Returns the dirty chunk count.
    pub(crate) fn restore(&self, mem: &mut [u8]) -> usize {
        let mut dirty = 0;
        let (head, tail) = mem.split_at_mut(self.image.len().min(mem.len()));
        for (dst, src) in head.chunks_mut(CHUNK).zip(self.image.chunks(CHUNK)) {
            if dst != src {
                dst.copy_from_slice(src);
                dirty += 1;
            }
        }
        tail.fill(0);
        dirty
    }
}

/// How a checkpoint finds what changed in memory since the previous one.
#[derive(Debug)]
pub(crate) enum Persisted {
    /// A copy of memory as last checkpointed, compared chunk by chunk.
    Copy(MemoryShadow),
    /// The kernel's record of the pages written since ([`sojourn_mem::WriteTracker`]): no
    /// copy, no comparison. `len` is the memory's length at the last checkpoint.
    Tracked {
        tracker: sojourn_mem::WriteTracker,
        len: usize,
    },
}

/// The raw result of calling into the guest.
struct EntryRun {
    ret: Result<i64, String>,
    txn: Txn,
    fuel_used: u64,
    before: Digest,
}

/// A memory-resident object.
pub struct ResidentObject {
    pub(crate) id: ObjectId,
    pub(crate) module: ObjectModule,
    pub(crate) descriptor: Arc<Descriptor>,
    pub(crate) descriptor_bytes: Vec<u8>,
    pub(crate) descriptor_digest: Digest,
    pub(crate) store: Store<HostState>,
    tick_fn: TypedFunc<i64, i64>,
    msg_fn: Option<TypedFunc<i32, i32>>,
    init_fn: Option<TypedFunc<i64, i64>>,
    pub(crate) globals: Vec<(u32, Global)>,
    pub(crate) seq: u64,
    pub(crate) inbox: VecDeque<Vec<u8>>,
    pub(crate) schedule: Schedule,
    pub(crate) status: Status,
    shadow: Option<MemoryShadow>,
    /// What the next checkpoint finds the changed chunks with (incremental persistence):
    /// `None` until the first checkpoint.
    pub(crate) persisted: Option<Persisted>,
    /// Whether guest code has run since `persisted` was last brought up to date. Only guest
    /// code (an entry, through [`ResidentObject::call`]) writes or grows memory once the
    /// object exists, so while this is false memory equals `persisted` and a checkpoint need
    /// not compare them (64 MiB: ~5 ms each time).
    pub(crate) ran_since_checkpoint: bool,
    /// Whether checkpoints may track writes instead of keeping a copy (the engine's setting).
    pub(crate) write_tracking: bool,
    /// The buffer that [`ResidentObject::checkpoint_stored_memory`] (or
    /// [`ResidentObject::restore_checkpoint`], with an empty one) deferred the copy of memory
    /// into: while it is here, `persisted` is owed and memory is exactly what was stored.
    /// Settled before any entry runs and before any checkpoint. It may hold what it held
    /// before (a decrypted migration package), so it is zeroed if dropped unused.
    pub(crate) deferred_capture: Option<zeroize::Zeroizing<Vec<u8>>>,
    globals_image: Vec<Val>,
    /// The trust of the lineage this object carries, kept up to date by the lineage layer;
    /// `None` when no attested lineage is attached (trust rules then fail closed).
    trust: Option<TrustView>,
}

impl std::fmt::Debug for ResidentObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentObject")
            .field("id", &self.id)
            .field("name", &self.descriptor.name)
            .field("seq", &self.seq)
            .field("status", &self.status)
            .field("schedule", &self.schedule)
            .finish()
    }
}

fn fault_reason(e: &wasmtime::Error) -> String {
    if let Some(g) = e.downcast_ref::<GuestFault>() {
        return g.0.clone();
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::OutOfFuel => "fuel budget exhausted (limits.fuel_per_entry)".into(),
            Trap::Interrupt => "time budget exceeded (limits.time_per_entry_ms)".into(),
            other => format!("trap: {other}"),
        };
    }
    e.to_string().lines().next().unwrap_or("fault").to_string()
}

impl ResidentObject {
    /// Instantiates an object and runs its creation entry (`sojourn_init`, or an empty
    /// transition if it has none). The descriptor must name this module's digest.
    pub fn create(
        engine: &ObjectEngine,
        module: &ObjectModule,
        descriptor: Descriptor,
        id: ObjectId,
        now_ms: i64,
        seed: [u8; 32],
    ) -> Result<(ResidentObject, TransitionRecord), RuntimeError> {
        let fields = descriptor.initial_state();
        let mut obj = Self::instantiate(engine, module, descriptor, id, fields)?;
        let rec = obj.run_init(now_ms, seed);
        Ok((obj, rec))
    }

    pub(crate) fn instantiate(
        engine: &ObjectEngine,
        module: &ObjectModule,
        descriptor: Descriptor,
        id: ObjectId,
        fields: Fields,
    ) -> Result<ResidentObject, RuntimeError> {
        let module_digest = sojourn_policy::canonical::sha256(module.original_bytes());
        if module_digest != descriptor.module_sha256 {
            return Err(RuntimeError::DescriptorMismatch {
                expected: hex::encode(descriptor.module_sha256),
                found: hex::encode(module_digest),
            });
        }
        let descriptor_bytes = descriptor.encode();
        let descriptor_digest = Digest(sojourn_policy::canonical::sha256(&descriptor_bytes));
        let descriptor = Arc::new(descriptor);
        let mut store = Store::new(
            engine.wasmtime(),
            HostState::new(descriptor.clone(), fields),
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        // Instantiation (data segments, start function) gets a budget too.
        store
            .set_fuel(descriptor.limits.fuel_per_entry)
            .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
        store.set_epoch_deadline(Self::deadline_epochs(&descriptor));
        store.epoch_deadline_trap();
        let linker = linker(engine.wasmtime()).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let instance = linker
            .instantiate(&mut store, module.module())
            .map_err(|e| RuntimeError::Instantiate(fault_reason(&e)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| RuntimeError::Instantiate("no `memory` export".into()))?;
        store.data_mut().memory = Some(memory);
        // Before anything touches it: a large memory is first written on huge pages.
        sojourn_mem::advise(memory.data_mut(&mut store));
        let typed = |r: Result<TypedFunc<i64, i64>, wasmtime::Error>, name: &str| {
            r.map_err(|e| RuntimeError::Instantiate(format!("export `{name}`: {e}")))
        };
        let tick_fn = typed(
            instance.get_typed_func::<i64, i64>(&mut store, "sojourn_tick"),
            "sojourn_tick",
        )?;
        let init_fn = if module.info().has_init {
            Some(typed(
                instance.get_typed_func::<i64, i64>(&mut store, "sojourn_init"),
                "sojourn_init",
            )?)
        } else {
            None
        };
        let msg_fn = if module.info().accepts_messages {
            Some(
                instance
                    .get_typed_func::<i32, i32>(&mut store, "sojourn_on_message")
                    .map_err(|e| {
                        RuntimeError::Instantiate(format!("export `sojourn_on_message`: {e}"))
                    })?,
            )
        } else {
            None
        };
        let mut globals = Vec::new();
        for idx in &module.info().mutable_globals {
            let g = instance
                .get_global(&mut store, &format!("{GLOBAL_EXPORT_PREFIX}{idx}"))
                .ok_or_else(|| RuntimeError::Instantiate(format!("global {idx} not exported")))?;
            globals.push((*idx, g));
        }
        let shadow = match descriptor.limits.rollback {
            Rollback::Memory => Some(MemoryShadow::capture(memory.data(&store))),
            Rollback::Fields => None,
        };
        Ok(ResidentObject {
            id,
            module: module.clone(),
            descriptor,
            descriptor_bytes,
            descriptor_digest,
            store,
            tick_fn,
            msg_fn,
            init_fn,
            globals,
            seq: 0,
            inbox: VecDeque::new(),
            schedule: Schedule::WakeAt(0),
            status: Status::Active,
            shadow,
            persisted: None,
            ran_since_checkpoint: true,
            write_tracking: engine.write_tracking,
            deferred_capture: None,
            globals_image: Vec::new(),
            trust: None,
        })
        .map(|mut o| {
            o.globals_image = o.read_globals();
            o
        })
    }

    /// Current values of the mutable globals, in `globals` order.
    pub(crate) fn read_globals(&mut self) -> Vec<Val> {
        let globals: Vec<Global> = self.globals.iter().map(|(_, g)| *g).collect();
        globals.iter().map(|g| g.get(&mut self.store)).collect()
    }

    /// Sets the mutable globals (values in `globals` order).
    pub(crate) fn write_globals(&mut self, values: &[Val]) -> Result<(), RuntimeError> {
        let globals: Vec<Global> = self.globals.iter().map(|(_, g)| *g).collect();
        for (g, v) in globals.iter().zip(values) {
            g.set(&mut self.store, *v)
                .map_err(|e| RuntimeError::Instantiate(format!("global: {e}")))?;
        }
        Ok(())
    }

    fn deadline_epochs(d: &Descriptor) -> u64 {
        (d.limits.time_per_entry_ms / EPOCH_MS).max(1)
    }

    /// The compiled module the object runs (cheap to clone).
    pub fn module(&self) -> &ObjectModule {
        &self.module
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }
    /// The module as its author shipped it (what the descriptor's digest names).
    pub fn module_bytes(&self) -> &[u8] {
        self.module.original_bytes()
    }
    /// The descriptor in force.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }
    /// Digest of the descriptor in force.
    pub fn descriptor_digest(&self) -> Digest {
        self.descriptor_digest
    }
    /// The canonical fields.
    pub fn fields(&self) -> &Fields {
        &self.store.data().fields
    }
    /// Digest of the canonical fields.
    pub fn state_digest(&self) -> Digest {
        self.store.data().fields_digest
    }
    /// Next sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// When it runs next.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }
    /// Whether it runs.
    pub fn status(&self) -> &Status {
        &self.status
    }
    /// Queued messages.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }
    /// Whether the next checkpoint finds written memory with the kernel's write tracking
    /// (no copy of memory is kept), rather than by comparing with a copy.
    pub fn memory_writes_tracked(&self) -> bool {
        matches!(self.persisted, Some(Persisted::Tracked { .. }))
    }

    /// Whether the object's module has a linear memory.
    pub fn has_memory(&self) -> bool {
        self.store.data().memory.is_some()
    }
    /// The current linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// The lineage trust the object's trust rules are checked against.
    pub fn trust(&self) -> Option<&TrustView> {
        self.trust.as_ref()
    }

    /// Sets the lineage trust (the lineage layer calls this after each append).
    pub fn set_trust(&mut self, trust: Option<TrustView>) {
        self.trust = trust;
    }

    /// Suspends the object (operator action).
    pub fn suspend(&mut self, reason: impl Into<String>) {
        self.status = Status::Suspended {
            reason: reason.into(),
        };
    }

    /// Resumes a suspended object; its next wake is `now_ms` unless it awaits a message.
    pub fn resume(&mut self, now_ms: i64) {
        self.status = Status::Active;
        if let Schedule::WakeAt(at) = self.schedule {
            self.schedule = Schedule::WakeAt(at.max(now_ms));
        }
    }

    /// Records a migration event as a transition of its own: no entry runs, no field changes,
    /// `seq` advances, and the lineage appends it like any other record. `None` (nothing
    /// recorded) if `outcome` is not a migration outcome.
    pub fn record_migration(&mut self, outcome: Outcome, now_ms: i64) -> Option<TransitionRecord> {
        if !outcome.is_migration() {
            return None;
        }
        let txn = Txn::new(EntryPoint::Migration, now_ms, self.seq, [0; 32], None);
        let before = self.state_digest();
        Some(self.record(txn, before, outcome, None, 0))
    }

    /// Queues a message. Returns whether the object should be woken now (it sleeps until a
    /// message arrives).
    pub fn enqueue(&mut self, message: Vec<u8>) -> Result<bool, InboxError> {
        if self.msg_fn.is_none() {
            return Err(InboxError::NotAccepted);
        }
        let cycle = &self.descriptor.cycle;
        if message.len() > cycle.max_message_bytes as usize {
            return Err(InboxError::TooLarge {
                len: message.len(),
                max: cycle.max_message_bytes,
            });
        }
        if self.inbox.len() >= cycle.inbox_capacity as usize {
            return Err(InboxError::Full {
                capacity: cycle.inbox_capacity,
            });
        }
        self.inbox.push_back(message);
        Ok(self.status == Status::Active && self.schedule == Schedule::AwaitMessage)
    }

    /// One wake: offer the queued messages in order, then tick. Returns the transitions.
    pub fn wake(&mut self, now_ms: i64, seed: [u8; 32]) -> Vec<TransitionRecord> {
        self.wake_with(now_ms, seed, &mut |_, _| {})
    }

    /// [`ResidentObject::wake`], calling `after_each` with every record as soon as it exists,
    /// before the next entry runs. The lineage layer appends the entry there and may update
    /// the trust view, so every entry is checked against the trust of exactly the entries
    /// before it (which is what a verifier recomputes).
    pub fn wake_with(
        &mut self,
        now_ms: i64,
        seed: [u8; 32],
        after_each: &mut dyn FnMut(&TransitionRecord, &mut Option<TrustView>),
    ) -> Vec<TransitionRecord> {
        let mut out = Vec::new();
        if self.status != Status::Active {
            return out;
        }
        let mut i = 0;
        let offered = self.inbox.len();
        for _ in 0..offered {
            let Some(msg) = self.inbox.get(i).cloned() else {
                break;
            };
            let (rec, keep) = self.run_message(now_ms, seed, msg);
            after_each(&rec, &mut self.trust);
            out.push(rec);
            if keep {
                i += 1;
            } else {
                self.inbox.remove(i);
            }
            if self.status != Status::Active {
                return out;
            }
        }
        let rec = self.run_tick(now_ms, seed);
        after_each(&rec, &mut self.trust);
        out.push(rec);
        out
    }

    fn run_init(&mut self, now_ms: i64, seed: [u8; 32]) -> TransitionRecord {
        match self.init_fn.clone() {
            Some(f) => {
                let run = self.call(EntryPoint::Init, now_ms, seed, None, |store| {
                    f.call(store, now_ms)
                });
                self.finish_scheduled(run, EntryPoint::Init)
            }
            None => {
                // No init export: an empty, accepted creation transition; first tick now.
                let txn = Txn::new(EntryPoint::Init, now_ms, self.seq, seed, None);
                let before = self.state_digest();
                self.schedule = Schedule::WakeAt(now_ms);
                self.record(
                    txn,
                    before,
                    Outcome::Accepted,
                    Some(Decision::WakeAt {
                        at_ms: now_ms,
                        requested_ms: None,
                    }),
                    0,
                )
            }
        }
    }

    fn run_tick(&mut self, now_ms: i64, seed: [u8; 32]) -> TransitionRecord {
        let f = self.tick_fn.clone();
        let run = self.call(EntryPoint::Tick, now_ms, seed, None, |store| {
            f.call(store, now_ms)
        });
        self.finish_scheduled(run, EntryPoint::Tick)
    }

    /// Returns the record and whether the message stays queued.
    fn run_message(
        &mut self,
        now_ms: i64,
        seed: [u8; 32],
        msg: Vec<u8>,
    ) -> (TransitionRecord, bool) {
        let Some(f) = self.msg_fn.clone() else {
            // Unreachable in practice: enqueue refuses messages without on_message.
            let txn = Txn::new(EntryPoint::Message, now_ms, self.seq, seed, Some(msg));
            let before = self.state_digest();
            return (self.record(txn, before, Outcome::Refused, None, 0), false);
        };
        let len = i32::try_from(msg.len()).unwrap_or(i32::MAX);
        let run = self.call(EntryPoint::Message, now_ms, seed, Some(msg), |store| {
            f.call(store, len).map(i64::from)
        });
        match run.ret {
            Err(ref reason) => {
                let reason = reason.clone();
                (self.fault(run, reason), true)
            }
            Ok(0) => {
                let rec = self.commit(run, None);
                (rec, false)
            }
            Ok(1) => {
                self.sync_shadow();
                let rec = self.record(run.txn, run.before, Outcome::Deferred, None, run.fuel_used);
                (rec, true)
            }
            Ok(2) => {
                self.sync_shadow();
                let rec = self.record(run.txn, run.before, Outcome::Refused, None, run.fuel_used);
                (rec, false)
            }
            Ok(other) => {
                let reason = format!(
                    "sojourn_on_message returned {other}: expected 0 (consume), 1 (defer) or 2 (reject)"
                );
                (self.fault(run, reason), true)
            }
        }
    }

    fn call(
        &mut self,
        entry: EntryPoint,
        now_ms: i64,
        seed: [u8; 32],
        msg: Option<Vec<u8>>,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<i64>,
    ) -> EntryRun {
        // Replayable objects are budgeted in fuel (the same on every host); the epoch deadline
        // is only a backstop. Others are budgeted in wall time alone.
        let fuel = if self.descriptor.limits.replayable {
            self.descriptor.limits.fuel_per_entry
        } else {
            u64::MAX
        };
        // The copy of memory a checkpoint deferred is the memory before this entry.
        self.settle_checkpoint();
        let before = self.state_digest();
        self.ran_since_checkpoint = true;
        self.store.data_mut().txn = Some(Txn::new(entry, now_ms, self.seq, seed, msg));
        let ret = match self.store.set_fuel(fuel) {
            Ok(()) => {
                self.store
                    .set_epoch_deadline(Self::deadline_epochs(&self.descriptor));
                f(&mut self.store).map_err(|e| fault_reason(&e))
            }
            Err(e) => Err(format!("fuel: {e}")),
        };
        let fuel_used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let txn = self
            .store
            .data_mut()
            .txn
            .take()
            .unwrap_or_else(|| Txn::new(entry, now_ms, self.seq, seed, None));
        EntryRun {
            ret,
            txn,
            fuel_used,
            before,
        }
    }

    /// Init and tick: the return value is a schedule decision.
    fn finish_scheduled(&mut self, run: EntryRun, entry: EntryPoint) -> TransitionRecord {
        let now = run.txn.now_ms;
        let decision = match run.ret {
            Err(ref reason) => {
                let reason = reason.clone();
                return self.fault(run, reason);
            }
            Ok(-1) => match self.descriptor.cycle.max_interval_ms {
                None => Decision::AwaitMessage,
                Some(max) => Decision::WakeAt {
                    at_ms: now.saturating_add(max as i64),
                    requested_ms: Some(-1),
                },
            },
            Ok(d) if d >= 0 => {
                let min = self.descriptor.cycle.min_interval_ms as i64;
                let max = self
                    .descriptor
                    .cycle
                    .max_interval_ms
                    .map_or(i64::MAX, |m| m as i64);
                let clamped = d.clamp(min, max.max(min));
                Decision::WakeAt {
                    at_ms: now.saturating_add(clamped),
                    requested_ms: (clamped != d).then_some(d),
                }
            }
            Ok(d) => {
                return self.fault(
                    run,
                    format!("sojourn_{entry} returned {d}: expected a delay >= 0 or -1 (sleep until a message)"),
                );
            }
        };
        self.schedule = match decision {
            Decision::WakeAt { at_ms, .. } => Schedule::WakeAt(at_ms),
            Decision::AwaitMessage => Schedule::AwaitMessage,
        };
        self.commit(run, Some(decision))
    }

    /// Validates the staged writes and applies them, or rejects the entry.
    fn commit(&mut self, run: EntryRun, decision: Option<Decision>) -> TransitionRecord {
        let txn = run.txn;
        let entry = txn.entry;
        // Validate; on success apply. Without invariants the writes apply in place (no copy of
        // the state); with invariants the post-state is built beside the old one first.
        let descriptor = self.descriptor.clone();
        let verdict: Result<(), Violation> = match &txn.write_error {
            Some(v) => Err(v.clone()),
            None if txn.writes.is_empty() => Ok(()),
            None => {
                let trust = self.trust.as_ref();
                let st = self.store.data_mut();
                descriptor
                    .check_writes(entry, &st.fields, &txn.writes)
                    .and_then(|()| descriptor.check_trust(&txn.writes, trust))
                    .and_then(|()| {
                        if descriptor.policy.invariants.is_empty() {
                            apply(&mut st.fields, &txn.writes);
                        } else {
                            let mut after = st.fields.clone();
                            apply(&mut after, &txn.writes);
                            descriptor.check_invariants(&after, &st.fields)?;
                            st.fields = after;
                        }
                        st.refresh_digest();
                        Ok(())
                    })
            }
        };
        let outcome = match verdict {
            Ok(()) => {
                self.store.data_mut().last_rejection = None;
                self.sync_shadow();
                Outcome::Accepted
            }
            Err(v) => {
                let reason = v.to_string();
                self.store.data_mut().last_rejection = Some(reason.clone());
                self.restore_shadow();
                Outcome::Rejected { reason }
            }
        };
        self.record(txn, run.before, outcome, decision, run.fuel_used)
    }

    fn fault(&mut self, run: EntryRun, reason: String) -> TransitionRecord {
        self.restore_shadow();
        self.status = Status::Suspended {
            reason: format!("fault in {}: {reason}", run.txn.entry),
        };
        self.record(
            run.txn,
            run.before,
            Outcome::Faulted { reason },
            None,
            run.fuel_used,
        )
    }

    /// Re-captures the rollback image from the current memory and globals.
    pub(crate) fn reset_shadow(&mut self) {
        if let (Some(shadow), Some(mem)) = (self.shadow.as_mut(), self.store.data().memory) {
            *shadow = MemoryShadow::capture(mem.data(&self.store));
        }
        self.globals_image = self.read_globals();
    }

    fn sync_shadow(&mut self) {
        if let (Some(shadow), Some(mem)) = (self.shadow.as_mut(), self.store.data().memory) {
            shadow.sync(mem.data(&self.store));
        }
        if self.shadow.is_some() {
            self.globals_image = self.read_globals();
        }
    }

    fn restore_shadow(&mut self) {
        let Some(shadow) = self.shadow.as_ref() else {
            return;
        };
        if let Some(mem) = self.store.data().memory {
            shadow.restore(mem.data_mut(&mut self.store));
        }
        let image = self.globals_image.clone();
        let _ = self.write_globals(&image);
    }
}

/// Applies validated writes (every written field exists: `check_writes` ran).
fn apply(fields: &mut Fields, writes: &Fields) {
    for (k, v) in writes {
        if let Some(slot) = fields.get_mut(k) {
            slot.clone_from(v);
        }
    }
}

impl ResidentObject {
    fn record(
        &mut self,
        mut txn: Txn,
        before: Digest,
        outcome: Outcome,
        decision: Option<Decision>,
        fuel_used: u64,
    ) -> TransitionRecord {
        if txn.logs_dropped > 0 {
            txn.logs
                .push(format!("({} more log lines dropped)", txn.logs_dropped));
        }
        let accepted = outcome == Outcome::Accepted;
        let rec = TransitionRecord {
            object_id: self.id,
            seq: self.seq,
            entry: txn.entry,
            inputs: EntryInputs {
                now_ms: txn.now_ms,
                random_seed: Digest(txn.seed),
                random_bytes: txn.random_drawn,
                message_digest: txn
                    .message
                    .as_ref()
                    .map(|m| Digest(sojourn_policy::canonical::sha256(m))),
            },
            state_before: before,
            state_after: self.state_digest(),
            outcome,
            writes: txn.writes,
            emitted: if accepted { txn.emitted } else { Vec::new() },
            logs: txn.logs,
            decision,
            fuel_used,
            descriptor_digest: self.descriptor_digest,
        };
        self.seq += 1;
        rec
    }
}
