//! The host daemon's core: many resident objects on a worker pool, every transition made
//! durable (with its lineage) through group commits to the sealed store, and recovery of
//! every object after a crash. [`HostCore`] implements the API's [`HostControl`]; the TLS
//! server and the CLI are in `sojourn-api`.
//!
//! Threads: one scheduler (a [`WakeQueue`] of due times), `workers` wake runners, one
//! committer (merges what the workers submit into one store transaction per round and
//! acknowledges after it is durable), one epoch ticker (time budgets).
//!
//! Durability rule: nothing leaves the host before the transition that produced it is
//! committed. A send returns after its message is durable; `ls`, `inspect`, outputs and the
//! lineage export show committed transitions only. Objects run ahead of the disk by at most
//! one group commit: a crash loses only transitions nobody was told about, and they run again
//! (with fresh time and randomness) after the restart.

pub mod config;
pub mod head;
pub mod metrics;
pub mod migrate;
pub mod run;
mod spool;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sojourn_api::{
    ApiError, DeployRequest, DrainReport, DrainRequest, ErrorCode, Health, HostControl,
    MigrateRequest, MigrationAnswer, MigrationOffer, MigrationOfferAnswer, MigrationRefusalRequest,
    MigrationReport, MigrationStatusRequest, ObjectDetail, ObjectInfo, SendReceipt,
    TransitionSummary,
};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_lineage::{LineageWriter, P256Signer, WriterConfig, WriterState};
use sojourn_policy::{Descriptor, DescriptorSource, Fields};
use sojourn_runtime::{
    InboxError, ObjectEngine, ObjectId, ObjectModule, Outcome, ResidentObject, Schedule, Status,
    TransitionRecord, WakeQueue, EPOCH_MS,
};
use sojourn_store::{
    CommitBatch, HeadRecord, ObjectImage, ObjectKey, Op, StagedMemory, Store, StoredObject,
};

use head::ObjectHead;
use metrics::Metrics;

/// Lineage writer configuration of daemon-written lineages (their header names it, so it
/// must not change between restarts of the same store).
pub const DAEMON_WRITER_CONFIG: WriterConfig = WriterConfig {
    batch_size: usize::MAX,
    epoch_max_entries: 100_000,
    epoch_max_age_ms: 3_600_000,
};

/// Transitions kept per object for `inspect`.
const RECENT: usize = 16;

/// Makes a fresh attester for each object's lineage writer.
pub type AttesterFactory = Arc<dyn Fn() -> Result<Box<dyn Attester + Send>, String> + Send + Sync>;

/// How the core produces lineage evidence.
pub struct LineageSetup {
    /// A fresh attester per object.
    pub attester: AttesterFactory,
    /// What the host appraises its own evidence against.
    pub reference: ReferenceValues,
    /// `software` or the hardware platform name (shown by `health`).
    pub label: String,
    /// Whether the evidence is software (insecure): objects whose policy requires
    /// attestation and forbids software evidence are refused.
    pub software: bool,
}

impl std::fmt::Debug for LineageSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageSetup")
            .field("label", &self.label)
            .finish()
    }
}

/// Tuning and identity of the core.
#[derive(Clone)]
pub struct CoreOptions {
    /// Wake runner threads.
    pub workers: usize,
    /// Most submissions merged into one store commit.
    pub group_commit_max: usize,
    /// The secret of the host's migration answer key (ES256): its public half goes into the
    /// evidence of every offer, and `ack`/`aborted` answers are signed with it. It must stay
    /// the same across restarts (a source may ask about an attempt after this host
    /// restarted). `None`: a fresh key (in-process tests).
    pub answer_secret: Option<[u8; 32]>,
    /// How this host names itself to destinations (its URL).
    pub self_url: String,
    /// Operator claims this host states in its offers (location, operator, ...), which object
    /// policies may require (`[policy.migration] claims`).
    pub claims: BTreeMap<String, String>,
    /// How the source reaches destinations (`None`: HTTPS, [`migrate::HttpLink`]).
    pub links: Option<migrate::LinkFactory>,
    /// Bytes of pages kept faulted in for the next arriving migration package
    /// ([`sojourn_mem::WarmPages`]; the daemon's `[migration] warm_arrival_mib`). 0: none,
    /// an arrival's pages fault in while it arrives.
    pub warm_arrival_bytes: usize,
}

impl std::fmt::Debug for CoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreOptions")
            .field("workers", &self.workers)
            .field("group_commit_max", &self.group_commit_max)
            .field("self_url", &self.self_url)
            .field("claims", &self.claims)
            .field("warm_arrival_bytes", &self.warm_arrival_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            group_commit_max: 1024,
            answer_secret: None,
            self_url: "local".to_string(),
            claims: BTreeMap::new(),
            links: None,
            warm_arrival_bytes: 0,
        }
    }
}

/// One object as the core holds it.
struct Slot {
    name: String,
    obj: ResidentObject,
    writer: LineageWriter,
    head_version: u64,
    next_arrival: u64,
    lineage_segments: u64,
    lineage_entries: u64,
    recent: VecDeque<TransitionSummary>,
    /// Quiesced for a move: not woken, sends refused.
    frozen: bool,
    /// Moved to another host (durable tombstone): never runs here again.
    transferred: Option<String>,
    /// The source's durable state of a migration attempt in progress.
    moving: Option<migrate::MoveState>,
    /// The attempts under which the object arrived here (durable `Received` records).
    arrivals: Vec<migrate::Arrival>,
    /// The protocol's source machine for this object.
    source: sojourn_migration::protocol::Source,
    /// A migration driver is working on the object (the resolver leaves it alone).
    busy: bool,
}

/// What `ls` and `inspect` show: the object as of its last *committed* transition.
#[derive(Debug, Clone)]
struct View {
    info: ObjectInfo,
    fields: Fields,
    cadence_ms: Option<u64>,
    lineage_entries: u64,
    recent: Vec<TransitionSummary>,
}

/// Work for the committer.
struct Submission {
    ops: Vec<Op>,
    /// Transitions this submission makes durable.
    transitions: u64,
    view: Option<(ObjectKey, Box<View>)>,
    /// A message for this object: its committed view shows one more queued.
    queued: Option<ObjectKey>,
    done: Option<Sender<Result<(), String>>>,
}

enum SchedMsg {
    At(ObjectKey, i64),
    Cancel(ObjectKey),
}

struct Job {
    key: ObjectKey,
    due_ms: i64,
}

struct Inner {
    engine: ObjectEngine,
    store: Arc<Store>,
    lineage: LineageSetup,
    signer_secret: [u8; 32],
    modules: Mutex<HashMap<[u8; 32], ObjectModule>>,
    slots: RwLock<BTreeMap<ObjectKey, Arc<Mutex<Slot>>>>,
    views: RwLock<BTreeMap<ObjectKey, View>>,
    commit_tx: Mutex<Option<Sender<Submission>>>,
    sched_tx: Mutex<Option<Sender<SchedMsg>>>,
    metrics: Metrics,
    failed: Mutex<Option<String>>,
    stopping: AtomicBool,
    started: Instant,
    dest: Mutex<migrate::DestSide>,
    answer: P256Signer,
    links: migrate::LinkFactory,
    self_url: String,
    claims: BTreeMap<String, String>,
    /// The buffer the next arriving package is received into, faulted in ahead.
    warm_arrival: Option<sojourn_mem::WarmPages>,
    /// The blocks arriving packages go to the disk through (see `spool`), kept between
    /// arrivals.
    spool_blocks: spool::BlockPool,
}

/// The daemon's core. Cheap to clone (shared).
#[derive(Clone)]
pub struct HostCore {
    inner: Arc<Inner>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for HostCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCore")
            .field("objects", &read(&self.inner.slots).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("randomness: {e}"))?;
    Ok(b)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// A message rendered for people: UTF-8 if it is, else `0x` hex.
fn render_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("0x{}", hex::encode(b)),
    }
}

/// A schema value as JSON: bytes as `0x` hex, enums as their variant name.
fn value_json(v: &sojourn_policy::Value) -> serde_json::Value {
    use sojourn_policy::Value;
    match v {
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::Str(s) | Value::Enum(s) => serde_json::Value::from(s.as_str()),
        Value::Bytes(b) => serde_json::Value::from(format!("0x{}", hex::encode(b))),
        Value::List(l) => serde_json::Value::Array(l.iter().map(value_json).collect()),
        Value::Map(m) => fields_json(m),
    }
}

fn fields_json(f: &Fields) -> serde_json::Value {
    serde_json::Value::Object(f.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn summary(rec: &TransitionRecord) -> TransitionSummary {
    let (outcome, reason) = (
        rec.outcome.label().to_string(),
        rec.outcome.detail().map(str::to_string),
    );
    TransitionSummary {
        seq: rec.seq,
        entry: rec.entry.as_str().to_string(),
        outcome,
        reason,
        at_ms: rec.inputs.now_ms,
        state_after: hex::encode(rec.state_after.0),
        outputs: rec.emitted.iter().map(|m| render_bytes(m)).collect(),
    }
}

impl Slot {
    /// The ops that make the object's current state durable (head, dirty chunks, new
    /// lineage bytes, consumed messages) and the view to publish once they are.
    fn persist(&mut self, id: ObjectKey) -> Result<(Vec<Op>, View), String> {
        self.persist_with_buffer(id, Vec::new(), None)
    }

    /// [`Slot::persist`], with a spare buffer for a whole checkpoint's copy of memory
    /// (`ResidentObject::checkpoint_with_buffer`), and, for an object that has just arrived,
    /// the image of its memory already staged in the store: if it has the memory's length,
    /// the checkpoint records it (`Op::PutStagedMemory`) instead of copying memory, and the
    /// copy later checkpoints compare with is deferred
    /// (`ResidentObject::checkpoint_stored_memory`; see [`HostCore::commit_arrival`]).
    fn persist_with_buffer(
        &mut self,
        id: ObjectKey,
        buffer: Vec<u8>,
        staged: Option<StagedMemory>,
    ) -> Result<(Vec<Op>, View), String> {
        self.writer.flush().map_err(|e| format!("lineage: {e}"))?;
        let segment = self.writer.drain_output();
        let state = self
            .writer
            .state()
            .ok_or("lineage writer has unsigned entries after a flush")?;
        let staged =
            staged.filter(|m| self.obj.has_memory() && m.len() == self.obj.memory_size() as u64);
        let cp = match staged {
            Some(_) => self.obj.checkpoint_stored_memory(buffer),
            None => self.obj.checkpoint_with_buffer(buffer),
        }
        .map_err(|e| format!("checkpoint: {e}"))?;
        self.head_version += 1;
        let included = self.next_arrival.saturating_sub(1);
        let head = ObjectHead {
            exec: cp.exec,
            writer: state.encode(),
            next_arrival: self.next_arrival,
            included_arrival: included,
            lineage_entries: self.lineage_entries,
            transferred: self.transferred.clone(),
            moving: self.moving.as_ref().map(migrate::MoveState::encode),
            arrivals: migrate::Arrival::encode_all(&self.arrivals),
        };
        let mut ops = vec![Op::PutHead {
            id,
            head: HeadRecord {
                seq: self.head_version,
                bytes: head.encode(),
            },
        }];
        if let Some(image) = cp.memory {
            ops.push(Op::PutMemory { id, image });
        }
        if let Some(memory) = staged {
            ops.push(Op::PutStagedMemory { id, memory });
        }
        if !cp.dirty.is_empty() {
            ops.push(Op::PutChunks {
                id,
                chunks: cp.dirty,
            });
        }
        if !segment.is_empty() {
            ops.push(Op::AppendLineage {
                id,
                segment: self.lineage_segments,
                bytes: segment,
            });
            self.lineage_segments += 1;
        }
        if included > 0 {
            ops.push(Op::DeleteMessagesThrough {
                id,
                arrival: included,
            });
        }
        Ok((ops, self.view(id)))
    }

    /// Records a migration event as the object's next transition and appends it to the
    /// lineage.
    fn record_migration(&mut self, outcome: Outcome, metrics: &Metrics) -> Result<(), ApiError> {
        let rec = self
            .obj
            .record_migration(outcome, wall_ms())
            .ok_or_else(|| internal("not a migration outcome"))?;
        self.writer
            .append(&rec, rec.inputs.now_ms)
            .map_err(|e| internal(format!("lineage: {e}")))?;
        self.note(std::slice::from_ref(&rec), 1, metrics);
        Ok(())
    }

    /// Whether this host may run the object at all (not moving, not moved away).
    fn runs(&self) -> bool {
        !self.frozen && self.transferred.is_none()
    }

    fn refuse_if_away(&self) -> Result<(), ApiError> {
        match (&self.transferred, self.frozen) {
            (Some(to), _) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the object moved to {to}; send it there"),
            )),
            (None, true) => Err(ApiError::new(
                ErrorCode::Conflict,
                "the object is moving to another host; retry shortly",
            )),
            (None, false) => Ok(()),
        }
    }

    fn view(&self, id: ObjectKey) -> View {
        let (status, suspended_reason) = match (&self.transferred, self.obj.status()) {
            (Some(to), _) => ("transferred".to_string(), Some(format!("moved to {to}"))),
            (None, _) if self.frozen => ("moving".to_string(), None),
            (None, Status::Active) => ("active".to_string(), None),
            (None, Status::Suspended { reason }) => ("suspended".to_string(), Some(reason.clone())),
        };
        let next_wake_ms = match (self.obj.status(), self.obj.schedule()) {
            (Status::Active, Schedule::WakeAt(at)) if self.runs() => Some(at),
            _ => None,
        };
        View {
            info: ObjectInfo {
                id: hex::encode(id),
                name: self.name.clone(),
                descriptor_digest: hex::encode(self.obj.descriptor_digest().0),
                seq: self.obj.seq(),
                status,
                suspended_reason,
                next_wake_ms,
                inbox: self.obj.inbox_len() as u64,
                state_digest: hex::encode(self.obj.state_digest().0),
            },
            fields: self.obj.fields().clone(),
            cadence_ms: Some(self.obj.descriptor().cycle.min_interval_ms),
            lineage_entries: self.lineage_entries,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    /// One wake: every transition is appended to the lineage before the next runs; a failed
    /// append suspends the object (a transition that cannot be recorded is not followed by
    /// another).
    fn wake(&mut self, now_ms: i64, seed: [u8; 32], metrics: &Metrics) -> Vec<TransitionRecord> {
        let writer = &mut self.writer;
        let mut failure = None;
        let mut appended = 0u64;
        let recs = self.obj.wake_with(now_ms, seed, &mut |rec, trust| {
            if failure.is_some() {
                return;
            }
            match writer.append(rec, now_ms) {
                Ok(()) => {
                    appended += 1;
                    *trust = Some(writer.trust().clone());
                }
                Err(e) => failure = Some(e.to_string()),
            }
        });
        if let Some(e) = failure {
            self.obj.suspend(format!("lineage append failed: {e}"));
        }
        self.note(&recs, appended, metrics);
        recs
    }

    fn note(&mut self, recs: &[TransitionRecord], appended: u64, metrics: &Metrics) {
        for rec in recs {
            metrics.transitions.fetch_add(1, Ordering::Relaxed);
            if rec.entry == sojourn_policy::EntryPoint::Tick {
                metrics.ticks.fetch_add(1, Ordering::Relaxed);
            }
            match rec.outcome {
                Outcome::Rejected { .. } => {
                    metrics.rejections.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Faulted { .. } => {
                    metrics.faults.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(summary(rec));
        }
        self.lineage_entries += appended;
        metrics
            .lineage_appends
            .fetch_add(appended, Ordering::Relaxed);
    }
}

impl HostCore {
    /// Opens the store's objects and starts the threads. Every stored object is restored
    /// from its last committed transition, with its schedule and inbox, before anything runs.
    pub fn start(
        store: Store,
        lineage: LineageSetup,
        options: CoreOptions,
    ) -> Result<HostCore, String> {
        let engine = ObjectEngine::new().map_err(|e| e.to_string())?;
        let signer_secret = loop {
            let s = random32()?;
            if P256Signer::from_secret(&s).is_some() {
                break s;
            }
        };
        let answer_secret = match options.answer_secret {
            Some(s) => s,
            None => loop {
                let s = random32()?;
                if P256Signer::from_secret(&s).is_some() {
                    break s;
                }
            },
        };
        let answer = P256Signer::from_secret(&answer_secret)
            .ok_or("the migration answer key is not a valid P-256 secret")?;
        let (commit_tx, commit_rx) = mpsc::channel();
        let (sched_tx, sched_rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            engine,
            store: Arc::new(store),
            lineage,
            signer_secret,
            modules: Mutex::new(HashMap::new()),
            slots: RwLock::new(BTreeMap::new()),
            views: RwLock::new(BTreeMap::new()),
            commit_tx: Mutex::new(Some(commit_tx)),
            sched_tx: Mutex::new(Some(sched_tx)),
            metrics: Metrics::default(),
            failed: Mutex::new(None),
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            dest: Mutex::new(migrate::DestSide::default()),
            answer,
            links: options
                .links
                .clone()
                .unwrap_or_else(migrate::HttpLink::factory),
            self_url: options.self_url.clone(),
            claims: options.claims.clone(),
            warm_arrival: sojourn_mem::WarmPages::new(options.warm_arrival_bytes),
            spool_blocks: spool::BlockPool::default(),
        });
        let stored = inner.store.load_all().map_err(|e| e.to_string())?;
        let mut due = Vec::new();
        for so in stored {
            let id = so.id;
            let (slot, at) =
                restore(&inner, so).map_err(|e| format!("object {}: {e}", hex::encode(id)))?;
            let view = slot.view(id);
            write(&inner.views).insert(id, view);
            write(&inner.slots).insert(id, Arc::new(Mutex::new(slot)));
            if let Some(at) = at {
                due.push((id, at));
            }
        }
        inner
            .metrics
            .objects
            .store(read(&inner.slots).len() as u64, Ordering::Relaxed);
        *lock(&inner.dest) = migrate::DestSide::restored(
            read(&inner.slots)
                .values()
                .flat_map(|s| lock(s).arrivals.clone())
                .collect::<Vec<_>>(),
        );

        let mut threads = Vec::new();
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        {
            let inner = inner.clone();
            let max = options.group_commit_max.max(1);
            threads.push(spawn("sojourn-commit", move || {
                committer(&inner, &commit_rx, max)
            })?);
        }
        {
            let inner = inner.clone();
            threads.push(spawn("sojourn-sched", move || {
                scheduler(&inner, &sched_rx, &job_tx, due)
            })?);
        }
        for i in 0..options.workers.max(1) {
            let inner = inner.clone();
            let rx = job_rx.clone();
            threads.push(spawn(&format!("sojourn-worker-{i}"), move || {
                worker(&inner, &rx)
            })?);
        }
        {
            let inner = inner.clone();
            threads.push(spawn("sojourn-epoch", move || {
                while !inner.stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(EPOCH_MS));
                    inner.engine.tick_epoch();
                }
            })?);
        }
        {
            let core = HostCore {
                inner: inner.clone(),
                threads: Arc::new(Mutex::new(Vec::new())),
            };
            threads.push(spawn("sojourn-resolve", move || {
                core.recover_moves();
                while !core.inner.stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(migrate::RESOLVE_EVERY);
                    core.resolve_sent();
                }
            })?);
        }
        Ok(HostCore {
            inner,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    /// Waits up to `timeout` for the pages kept for the next arriving package
    /// (`warm_arrival_bytes`) to be faulted in; returns whether they are. False at once for
    /// a host that keeps none.
    pub fn wait_warm_arrival_pages(&self, timeout: Duration) -> bool {
        self.inner
            .warm_arrival
            .as_ref()
            .is_some_and(|w| w.wait_ready(timeout))
    }

    /// The host's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store (for its statistics).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Stops scheduling, lets in-flight wakes finish, commits what they produced and joins
    /// the threads. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // Dropping the senders ends the scheduler (which ends the workers) and then the
        // committer, after it has drained its queue.
        lock(&self.inner.sched_tx).take();
        let threads: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        let mut rest = Vec::new();
        for t in threads {
            if t.thread().name() == Some("sojourn-commit") {
                rest.push(t);
            } else {
                let _ = t.join();
            }
        }
        lock(&self.inner.commit_tx).take();
        for t in rest {
            let _ = t.join();
        }
    }

    fn check_running(&self) -> Result<(), ApiError> {
        if let Some(why) = lock(&self.inner.failed).as_ref() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("the host's store failed and it stopped running objects: {why}"),
            ));
        }
        if self.inner.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the host is shutting down",
            ));
        }
        Ok(())
    }

    /// Finds an object by full id, unique id prefix (≥ 4 hex characters) or unique name.
    fn resolve(&self, id: &str) -> Result<ObjectKey, ApiError> {
        let views = read(&self.inner.views);
        let want = id.trim().to_ascii_lowercase();
        if let Ok(bytes) = hex::decode(&want) {
            if let Ok(key) = <[u8; 16]>::try_from(bytes.as_slice()) {
                if views.contains_key(&key) {
                    return Ok(key);
                }
            }
        }
        let mut hits: Vec<ObjectKey> = Vec::new();
        if want.len() >= 4 && want.chars().all(|c| c.is_ascii_hexdigit()) {
            hits = views
                .iter()
                .filter(|(_, v)| v.info.id.starts_with(&want))
                .map(|(k, _)| *k)
                .collect();
        }
        if hits.is_empty() {
            hits = views
                .iter()
                .filter(|(_, v)| v.info.name == id.trim())
                .map(|(k, _)| *k)
                .collect();
        }
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no object {id:?} on this host (`sojourn ls` lists them)"),
            )),
            many => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{id:?} is ambiguous: it matches {} objects; give more of the id",
                    many.len()
                ),
            )),
        }
    }

    fn slot(&self, key: &ObjectKey) -> Result<Arc<Mutex<Slot>>, ApiError> {
        read(&self.inner.slots)
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))
    }

    /// Submits `ops` and waits until they are durable.
    fn submit_wait(&self, sub: Submission) -> Result<(), ApiError> {
        let (tx, rx) = mpsc::channel();
        let sub = Submission {
            done: Some(tx),
            ..sub
        };
        submit(&self.inner, sub).map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("not committed: {e}"),
            )),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the host stopped before the commit",
            )),
        }
    }

    /// Makes the object's current state durable and waits for the commit; returns what `ls`
    /// shows from then on. Call it holding the object's lock.
    fn commit_slot(
        &self,
        key: ObjectKey,
        s: &mut Slot,
        transitions: u64,
    ) -> Result<ObjectInfo, ApiError> {
        let (ops, view) = s.persist(key).map_err(internal)?;
        let info = view.info.clone();
        self.submit_wait(Submission {
            ops,
            transitions,
            view: Some((key, Box::new(view))),
            queued: None,
            done: None,
        })?;
        Ok(info)
    }

    /// Makes a committed object resident and schedules it.
    fn install(&self, key: ObjectKey, slot: Slot) {
        let due = due_at(&slot.obj);
        let n = {
            let mut slots = write(&self.inner.slots);
            slots.insert(key, Arc::new(Mutex::new(slot)));
            slots.len()
        };
        self.inner
            .metrics
            .objects
            .store(n as u64, Ordering::Relaxed);
        if let Some(at) = due {
            sched(&self.inner, SchedMsg::At(key, at));
        }
    }

    fn module(&self, wasm: &[u8]) -> Result<ObjectModule, ApiError> {
        module(&self.inner, wasm).map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e))
    }

    fn schedule_from(&self, key: ObjectKey, obj: &ResidentObject) {
        schedule_from(&self.inner, key, obj);
    }

    fn set_status(&self, id: &str, suspend: Option<String>) -> Result<ObjectInfo, ApiError> {
        self.check_running()?;
        let key = self.resolve(id)?;
        let slot = self.slot(&key)?;
        let mut s = lock(&slot);
        s.refuse_if_away()?;
        match (&suspend, s.obj.status()) {
            (Some(_), Status::Suspended { .. }) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the object is already suspended",
                ))
            }
            (None, Status::Active) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the object is not suspended",
                ))
            }
            _ => {}
        }
        match suspend {
            Some(reason) => s.obj.suspend(reason),
            None => s.obj.resume(wall_ms()),
        }
        let info = self.commit_slot(key, &mut s, 0)?;
        match s.obj.status() {
            Status::Active => self.schedule_from(key, &s.obj),
            Status::Suspended { .. } => sched(&self.inner, SchedMsg::Cancel(key)),
        }
        Ok(info)
    }
}

/// An object that arrived, checked and ready to commit (see [`HostCore::prepare_arrival`]).
pub(crate) struct Prepared {
    key: ObjectKey,
    slot: Slot,
    lineage: Vec<u8>,
    /// Lineage bytes this host already stores for the object (a returning object): the
    /// arriving lineage extends them, and only the rest is appended.
    stored_lineage: usize,
    /// The package buffer the object was restored from, reused for its first checkpoint's
    /// copy of memory (its pages are mapped already; it is overwritten, after the commit if
    /// the image was staged, else before it).
    buffer: Vec<u8>,
    /// The object's memory image, written to the store while it was restored (see
    /// `migrate`'s `accept`): its first checkpoint commits this file instead of writing one.
    /// Bytes of the object's memory moved out of the package's pages rather than copied.
    pub(crate) moved: usize,
    staged: Option<StagedMemory>,
}

impl Prepared {
    /// Hands over the package buffer the object was restored from (see `buffer`).
    pub(crate) fn reuse_buffer(&mut self, buffer: Vec<u8>) {
        self.buffer = buffer;
    }

    /// Hands over the object's memory image, staged in the store from the snapshot it was
    /// restored from: the same bytes as its memory now (nothing has run in it since).
    pub(crate) fn use_staged(&mut self, staged: StagedMemory) {
        self.staged = Some(staged);
    }
}

/// Where an arriving object's snapshot is, for [`HostCore::prepare_arrival`].
pub(crate) enum ArrivalSnapshot<'a> {
    /// In bytes that stay as they are: the memory is copied out of them.
    Bytes(&'a [u8]),
    /// At the range in anonymous pages of the host's own: the object's memory pages are
    /// moved out of them (`ResidentObject::restore_moving`), which overwrites them from the
    /// range's start on.
    Pages(&'a mut sojourn_mem::AnonPages, std::ops::Range<usize>),
}

/// The destination side's object mechanics, which `migrate` drives.
impl HostCore {
    /// Checks an object that moved here: its policy against this host, its lineage under
    /// the object's own policy, that the lineage ends exactly at the snapshot, and (for an
    /// object that left this host before) that it continues what this host stored; continues
    /// the lineage with a `migrated-in` entry bound to this host's evidence. Nothing is
    /// stored yet.
    pub(crate) fn prepare_arrival(
        &self,
        snapshot: ArrivalSnapshot<'_>,
        lineage: &[u8],
        detail: String,
    ) -> Result<Prepared, ApiError> {
        self.check_running()?;
        let bad = |m: String| ApiError::new(ErrorCode::InvalidPackage, m);
        // The snapshot was opened from the package, every AEAD tag checked: its checksum
        // adds nothing to that and is not recomputed.
        // A module this host already compiled is reused; one it compiles now is cached only
        // once the object is committed (a refused arrival leaves nothing behind).
        let compile = |wasm: &[u8]| cached_module(&self.inner, wasm);
        let (mut obj, moved) = match snapshot {
            ArrivalSnapshot::Bytes(bytes) => {
                ResidentObject::restore_authenticated_with(&self.inner.engine, bytes, &compile)
                    .map(|obj| (obj, 0))
            }
            ArrivalSnapshot::Pages(pages, at) => {
                ResidentObject::restore_moving(&self.inner.engine, pages, at, &compile)
            }
        }
        .map_err(|e| bad(format!("snapshot: {e}")))?;
        let key = obj.id().0;
        let descriptor = obj.descriptor().clone();
        check_policy(&self.inner, &descriptor)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e))?;
        let (stored_lineage, previous) = match read(&self.inner.slots).get(&key) {
            None => (0, None),
            Some(old) => {
                let old = lock(old);
                if old.transferred.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        "this host already runs that object",
                    ));
                }
                let stored = self
                    .inner
                    .store
                    .lineage(&key)
                    .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
                if !lineage.starts_with(&stored) {
                    return Err(bad(
                        "the object left this host before, but its lineage does not continue \
                         what this host stored: a fork"
                            .into(),
                    ));
                }
                (
                    stored.len(),
                    Some((
                        old.head_version,
                        old.lineage_segments,
                        old.arrivals.clone(),
                        old.next_arrival,
                    )),
                )
            }
        };
        let summary = sojourn_lineage::verify_lineage(
            lineage,
            &sojourn_lineage::VerifyOptions {
                reference: None,
                at: None,
            },
        )
        .map_err(|e| {
            bad(format!(
                "the object's lineage does not verify under its policy: {e}"
            ))
        })?;
        if summary.object_id != hex::encode(key)
            || summary.final_state != hex::encode(obj.state_digest().0)
            || summary.entries != obj.seq()
        {
            return Err(bad("the lineage does not end where the snapshot is".into()));
        }
        let state = WriterState::from_export(lineage).map_err(|e| bad(e.to_string()))?;
        let mut writer = LineageWriter::resume(
            key,
            &descriptor,
            new_signer(&self.inner).map_err(internal)?,
            (self.inner.lineage.attester)().map_err(internal)?,
            self.inner.lineage.reference.clone(),
            DAEMON_WRITER_CONFIG,
            &state,
        )
        .map_err(|e| bad(e.to_string()))?;
        obj.set_trust(Some(writer.trust().clone()));
        let rec = obj
            .record_migration(Outcome::MigratedIn { detail }, wall_ms())
            .ok_or_else(|| internal("migration record"))?;
        writer
            .append(&rec, rec.inputs.now_ms)
            .map_err(|e| internal(format!("lineage: {e}")))?;
        obj.set_trust(Some(writer.trust().clone()));
        let (head_version, lineage_segments, arrivals, next_arrival) =
            previous.unwrap_or((0, 0, Vec::new(), 1));
        let mut slot = Slot {
            name: descriptor.name.clone(),
            obj,
            writer,
            head_version,
            next_arrival,
            lineage_segments: lineage_segments + 1,
            lineage_entries: summary.entries,
            recent: VecDeque::new(),
            frozen: false,
            transferred: None,
            moving: None,
            arrivals,
            source: sojourn_migration::protocol::Source::new(),
            busy: false,
        };
        slot.note(std::slice::from_ref(&rec), 1, &self.inner.metrics);
        Ok(Prepared {
            key,
            slot,
            lineage: lineage.to_vec(),
            stored_lineage,
            buffer: Vec::new(),
            staged: None,
            moved,
        })
    }

    /// Stores an arrived object durably, with its `Received` record, and runs it.
    pub(crate) fn commit_arrival(
        &self,
        prepared: Prepared,
        arrival: Option<migrate::Arrival>,
    ) -> Result<ObjectInfo, ApiError> {
        let Prepared {
            key,
            mut slot,
            lineage,
            stored_lineage,
            buffer,
            staged,
            moved: _,
        } = prepared;
        slot.arrivals.extend(arrival);
        let returning = stored_lineage > 0;
        let first_segment = slot.lineage_segments - 1;
        // The first checkpoint's whole memory is already in the store, staged: the commit
        // only records it, and the copy of memory that the next checkpoint compares with is
        // taken when the object next runs or checkpoints, not before the arrival is answered.
        let (mut ops, view) = slot
            .persist_with_buffer(key, buffer, staged)
            .map_err(internal)?;
        let mut front = Vec::new();
        if !returning {
            front.push(Op::PutImage {
                id: key,
                image: ObjectImage {
                    name: slot.name.clone(),
                    descriptor: slot.obj.descriptor().encode(),
                    module: slot.obj.module_bytes().to_vec(),
                },
            });
        }
        front.push(Op::AppendLineage {
            id: key,
            segment: first_segment,
            bytes: lineage.get(stored_lineage..).unwrap_or_default().to_vec(),
        });
        ops.splice(0..0, front);
        // The arrived object's first checkpoint is whole (`Op::PutMemory`, the object was
        // restored from its snapshot): a returning object's older memory image and chunks
        // are replaced, none shows through.
        let info = view.info.clone();
        self.submit_wait(Submission {
            ops,
            transitions: 1,
            view: Some((key, Box::new(view))),
            queued: None,
            done: None,
        })?;
        keep_module(&self.inner, slot.obj.module());
        self.install(key, slot);
        Ok(info)
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

fn submit(inner: &Inner, sub: Submission) -> Result<(), String> {
    match lock(&inner.commit_tx).as_ref() {
        Some(tx) => tx
            .send(sub)
            .map_err(|_| "the committer has stopped".to_string()),
        None => Err("the host is shutting down".into()),
    }
}

fn sched(inner: &Inner, msg: SchedMsg) {
    if let Some(tx) = lock(&inner.sched_tx).as_ref() {
        let _ = tx.send(msg);
    }
}

fn schedule_from(inner: &Inner, key: ObjectKey, obj: &ResidentObject) {
    if obj.status() != &Status::Active {
        return;
    }
    match obj.schedule() {
        Schedule::WakeAt(at) => sched(inner, SchedMsg::At(key, at)),
        Schedule::AwaitMessage if obj.inbox_len() > 0 => sched(inner, SchedMsg::At(key, wall_ms())),
        Schedule::AwaitMessage => {}
    }
}

/// When an object that runs here is next due: its chosen wake time, or now if it sleeps until
/// a message and one is queued.
fn due_at(obj: &ResidentObject) -> Option<i64> {
    match (obj.status(), obj.schedule()) {
        (Status::Active, Schedule::WakeAt(at)) => Some(at),
        (Status::Active, Schedule::AwaitMessage) if obj.inbox_len() > 0 => Some(wall_ms()),
        _ => None,
    }
}

fn module(inner: &Inner, wasm: &[u8]) -> Result<ObjectModule, String> {
    let m = cached_module(inner, wasm).map_err(|e| e.to_string())?;
    keep_module(inner, &m);
    Ok(m)
}

/// The module compiled from `wasm`: from the cache (by digest) if this host compiled it
/// before, else compiled now without being cached (see [`keep_module`]).
fn cached_module(
    inner: &Inner,
    wasm: &[u8],
) -> Result<ObjectModule, sojourn_runtime::RuntimeError> {
    let digest = sojourn_policy::canonical::sha256(wasm);
    if let Some(m) = lock(&inner.modules).get(&digest) {
        return Ok(m.clone());
    }
    let m = inner.engine.compile(wasm)?;
    inner
        .metrics
        .modules_compiled
        .fetch_add(1, Ordering::Relaxed);
    Ok(m)
}

/// Caches a module an object of this host runs, for the next deploy, load or arrival of it.
fn keep_module(inner: &Inner, m: &ObjectModule) {
    let digest = sojourn_policy::canonical::sha256(m.original_bytes());
    lock(&inner.modules)
        .entry(digest)
        .or_insert_with(|| m.clone());
}

fn new_signer(inner: &Inner) -> Result<Box<P256Signer>, String> {
    P256Signer::from_secret(&inner.signer_secret)
        .map(Box::new)
        .ok_or_else(|| "host lineage key".to_string())
}

fn check_policy(inner: &Inner, d: &Descriptor) -> Result<(), String> {
    let a = &d.policy.attestation;
    if inner.lineage.software && a.required && !a.allow_software {
        return Err(format!(
            "object {:?} requires attestation and does not accept software evidence, but this \
             host runs in software attestation mode (insecure); run it on an SNP or TDX host",
            d.name
        ));
    }
    Ok(())
}

/// Rebuilds a stored object. Returns the slot and when it is due (if it is).
fn restore(inner: &Inner, so: StoredObject) -> Result<(Slot, Option<i64>), String> {
    let descriptor = Descriptor::decode(&so.image.descriptor).map_err(|e| e.to_string())?;
    check_policy(inner, &descriptor)?;
    let module = module(inner, &so.image.module)?;
    let head = so
        .head
        .ok_or("no head record (the deploy never committed)")?;
    let h = ObjectHead::decode(&head.bytes)?;
    let mut obj = ResidentObject::restore_checkpoint(
        &inner.engine,
        &module,
        &so.image.descriptor,
        &h.exec,
        &so.memory,
        &so.chunks,
    )
    .map_err(|e| e.to_string())?;
    if obj.id().0 != so.id {
        return Err("the checkpoint names another object".into());
    }
    let mut next_arrival = h.next_arrival;
    for (arrival, bytes) in so.pending {
        if arrival <= h.included_arrival {
            continue;
        }
        obj.enqueue(bytes)
            .map_err(|e| format!("message {arrival} cannot be queued again: {e}"))?;
        next_arrival = next_arrival.max(arrival + 1);
    }
    let state = WriterState::decode(&h.writer).map_err(|e| e.to_string())?;
    let writer = LineageWriter::resume(
        so.id,
        &descriptor,
        new_signer(inner)?,
        (inner.lineage.attester)()?,
        inner.lineage.reference.clone(),
        DAEMON_WRITER_CONFIG,
        &state,
    )
    .map_err(|e| e.to_string())?;
    obj.set_trust(Some(writer.trust().clone()));
    let moving = h
        .moving
        .as_deref()
        .map(migrate::MoveState::decode)
        .transpose()?;
    let arrivals = migrate::Arrival::decode_all(&h.arrivals)?;
    let source = match &moving {
        // Sent: only the destination's answer ends it (the resolver asks).
        Some(m @ migrate::MoveState::Sent { .. }) => {
            sojourn_migration::protocol::Source::on_restart(m.source_state()).0
        }
        // Offering ends at once after the restart (`recover_moves`), back to Running.
        _ => sojourn_migration::protocol::Source::new(),
    };
    let due = if h.transferred.is_some() || moving.is_some() {
        None
    } else {
        due_at(&obj)
    };
    Ok((
        Slot {
            name: descriptor.name.clone(),
            obj,
            writer,
            head_version: head.seq,
            next_arrival,
            lineage_segments: so.lineage_segments,
            lineage_entries: h.lineage_entries,
            recent: VecDeque::new(),
            frozen: moving.is_some(),
            transferred: h.transferred.clone(),
            moving,
            arrivals,
            source,
            busy: false,
        },
        due,
    ))
}

fn committer(inner: &Inner, rx: &Receiver<Submission>, max: usize) {
    while let Ok(first) = rx.recv() {
        let mut subs = vec![first];
        while subs.len() < max {
            match rx.try_recv() {
                Ok(s) => subs.push(s),
                Err(_) => break,
            }
        }
        let failed = lock(&inner.failed).clone();
        let result = match failed {
            Some(why) => Err(why),
            None => {
                let batch = CommitBatch {
                    ops: subs.iter_mut().flat_map(|s| s.ops.drain(..)).collect(),
                };
                inner.store.commit(&batch).map(|_| ()).map_err(|e| {
                    inner
                        .metrics
                        .commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let why = e.to_string();
                    // Fail-stop: memory is now ahead of the disk; running on would
                    // acknowledge what cannot be made durable.
                    *lock(&inner.failed) = Some(why.clone());
                    eprintln!("sojourn host: store commit failed, objects stop: {why}");
                    why
                })
            }
        };
        if result.is_ok() {
            inner.metrics.commits.fetch_add(1, Ordering::Relaxed);
            let n: u64 = subs.iter().map(|s| s.transitions).sum();
            inner
                .metrics
                .durable_transitions
                .fetch_add(n, Ordering::Relaxed);
            let mut views = write(&inner.views);
            for s in &mut subs {
                if let Some((key, view)) = s.view.take() {
                    // Submissions of one object arrive in order: a later view wins.
                    views.insert(key, *view);
                }
                if let Some(v) = s.queued.and_then(|key| views.get_mut(&key)) {
                    v.info.inbox += 1;
                }
            }
        }
        for s in subs {
            if let Some(done) = s.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn scheduler(
    inner: &Inner,
    rx: &Receiver<SchedMsg>,
    jobs: &Sender<Job>,
    initial: Vec<(ObjectKey, i64)>,
) {
    let mut q: WakeQueue<ObjectKey> = WakeQueue::new();
    for (k, at) in initial {
        q.schedule(k, at);
    }
    loop {
        if inner.stopping.load(Ordering::Relaxed) || lock(&inner.failed).is_some() {
            return;
        }
        let now = wall_ms();
        while let Some((key, due_ms)) = q.pop_due(now) {
            if jobs.send(Job { key, due_ms }).is_err() {
                return;
            }
        }
        let wait = q
            .next_at()
            .map_or(50, |at| at.saturating_sub(wall_ms()).clamp(0, 50));
        match rx.recv_timeout(Duration::from_millis(u64::try_from(wait).unwrap_or(50))) {
            Ok(SchedMsg::At(k, at)) => q.schedule(k, at),
            Ok(SchedMsg::Cancel(k)) => q.cancel(&k),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Take everything queued before dispatching again.
        while let Ok(m) = rx.try_recv() {
            match m {
                SchedMsg::At(k, at) => q.schedule(k, at),
                SchedMsg::Cancel(k) => q.cancel(&k),
            }
        }
    }
}

fn worker(inner: &Inner, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        if lock(&inner.failed).is_some() {
            continue;
        }
        let Some(slot) = read(&inner.slots).get(&job.key).cloned() else {
            continue;
        };
        let mut s = lock(&slot);
        if !s.runs() {
            // Moving or moved away: the move (or its abort) reschedules it.
            continue;
        }
        let now = wall_ms();
        let runnable = s.obj.status() == &Status::Active
            && s.runs()
            && match s.obj.schedule() {
                Schedule::WakeAt(at) => at <= now,
                Schedule::AwaitMessage => s.obj.inbox_len() > 0,
            };
        if !runnable {
            schedule_from(inner, job.key, &s.obj);
            continue;
        }
        let late_us = now.saturating_sub(job.due_ms).max(0) as u64 * 1000;
        inner.metrics.observe_lateness(late_us);
        let seed = match random32() {
            Ok(s) => s,
            Err(e) => {
                s.obj.suspend(e);
                [0; 32]
            }
        };
        let recs = s.wake(now, seed, &inner.metrics);
        let persisted = s.persist(job.key);
        match persisted {
            Ok((ops, view)) => {
                let sub = Submission {
                    ops,
                    transitions: recs.len() as u64,
                    view: Some((job.key, Box::new(view))),
                    queued: None,
                    done: None,
                };
                // Submitted under the object's lock: its submissions reach the committer
                // in order.
                if submit(inner, sub).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Cannot be persisted: stop the object rather than run ahead of the disk.
                s.obj.suspend(format!("cannot persist: {e}"));
                eprintln!(
                    "sojourn host: object {} suspended: cannot persist: {e}",
                    hex::encode(job.key)
                );
            }
        }
        schedule_from(inner, job.key, &s.obj);
    }
}

impl HostControl for HostCore {
    fn deploy(&self, request: DeployRequest) -> Result<ObjectInfo, ApiError> {
        self.check_running()?;
        let wasm = base64::engine::general_purpose::STANDARD
            .decode(request.module_base64.as_bytes())
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("module_base64: not base64: {e}"),
                )
            })?;
        let src = DescriptorSource::parse_toml("object.toml", &request.object_toml)
            .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e.to_string()))?;
        let descriptor = src
            .with_module(&wasm)
            .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e.to_string()))?;
        check_policy(&self.inner, &descriptor)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e))?;
        let module = self.module(&wasm)?;
        let key: ObjectKey = {
            let r = random32().map_err(internal)?;
            let mut k = [0u8; 16];
            k.copy_from_slice(&r[..16]);
            k
        };
        let now = wall_ms();
        let seed = random32().map_err(internal)?;
        let (mut obj, init) = ResidentObject::create(
            &self.inner.engine,
            &module,
            descriptor.clone(),
            ObjectId(key),
            now,
            seed,
        )
        .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e.to_string()))?;
        let mut writer = LineageWriter::new(
            key,
            &descriptor,
            new_signer(&self.inner).map_err(internal)?,
            (self.inner.lineage.attester)().map_err(internal)?,
            self.inner.lineage.reference.clone(),
            DAEMON_WRITER_CONFIG,
        );
        writer
            .append(&init, now)
            .map_err(|e| internal(format!("lineage: {e}")))?;
        obj.set_trust(Some(writer.trust().clone()));
        let mut slot = Slot {
            name: descriptor.name.clone(),
            obj,
            writer,
            head_version: 0,
            next_arrival: 1,
            lineage_segments: 0,
            lineage_entries: 0,
            recent: VecDeque::new(),
            frozen: false,
            transferred: None,
            moving: None,
            arrivals: Vec::new(),
            source: sojourn_migration::protocol::Source::new(),
            busy: false,
        };
        slot.note(std::slice::from_ref(&init), 1, &self.inner.metrics);
        let (mut ops, view) = slot.persist(key).map_err(internal)?;
        ops.insert(
            0,
            Op::PutImage {
                id: key,
                image: ObjectImage {
                    name: descriptor.name.clone(),
                    descriptor: descriptor.encode(),
                    module: wasm,
                },
            },
        );
        let info = view.info.clone();
        self.submit_wait(Submission {
            ops,
            transitions: 1,
            view: Some((key, Box::new(view))),
            queued: None,
            done: None,
        })?;
        self.install(key, slot);
        Ok(info)
    }

    fn list(&self) -> Result<Vec<ObjectInfo>, ApiError> {
        Ok(read(&self.inner.views)
            .values()
            .map(|v| v.info.clone())
            .collect())
    }

    fn inspect(&self, id: &str) -> Result<ObjectDetail, ApiError> {
        let key = self.resolve(id)?;
        let views = read(&self.inner.views);
        let v = views
            .get(&key)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))?;
        Ok(ObjectDetail {
            info: v.info.clone(),
            state: fields_json(&v.fields),
            cadence_ms: v.cadence_ms,
            lineage_entries: v.lineage_entries,
            recent: v.recent.clone(),
        })
    }

    fn send(&self, id: &str, message: Vec<u8>) -> Result<SendReceipt, ApiError> {
        self.check_running()?;
        let key = self.resolve(id)?;
        let slot = self.slot(&key)?;
        let (arrival, inbox, rx) = {
            let mut s = lock(&slot);
            s.refuse_if_away()?;
            let wake_now = s.obj.enqueue(message.clone()).map_err(|e| match e {
                InboxError::Full { .. } => ApiError::new(ErrorCode::InboxFull, e.to_string()),
                InboxError::NotAccepted => ApiError::new(ErrorCode::Conflict, e.to_string()),
                other => ApiError::new(ErrorCode::InvalidRequest, other.to_string()),
            })?;
            let arrival = s.next_arrival;
            s.next_arrival += 1;
            let (tx, rx) = mpsc::channel();
            submit(
                &self.inner,
                Submission {
                    ops: vec![Op::PutMessage {
                        id: key,
                        arrival,
                        bytes: message,
                    }],
                    transitions: 0,
                    view: None,
                    queued: Some(key),
                    done: Some(tx),
                },
            )
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
            if wake_now {
                sched(&self.inner, SchedMsg::At(key, wall_ms()));
            }
            (arrival, s.obj.inbox_len() as u64, rx)
        };
        match rx.recv() {
            Ok(Ok(())) => {
                self.inner.metrics.messages.fetch_add(1, Ordering::Relaxed);
                Ok(SendReceipt {
                    id: hex::encode(key),
                    arrival,
                    inbox,
                })
            }
            Ok(Err(e)) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("message not stored: {e}"),
            )),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the host stopped before the message was stored",
            )),
        }
    }

    fn suspend(&self, id: &str, reason: Option<String>) -> Result<ObjectInfo, ApiError> {
        let reason = reason.unwrap_or_else(|| "suspended by an operator".to_string());
        self.set_status(id, Some(format!("operator: {reason}")))
    }

    fn resume(&self, id: &str) -> Result<ObjectInfo, ApiError> {
        self.set_status(id, None)
    }

    fn lineage(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let key = self.resolve(id)?;
        self.inner
            .store
            .lineage(&key)
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))
    }

    fn health(&self) -> Health {
        let status = match lock(&self.inner.failed).as_ref() {
            Some(_) => "failed",
            None if self.inner.stopping.load(Ordering::Relaxed) => "stopping",
            None => "ok",
        };
        Health {
            status: status.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            attestation: if self.inner.lineage.software {
                "software (INSECURE)".to_string()
            } else {
                self.inner.lineage.label.clone()
            },
            objects: read(&self.inner.slots).len() as u64,
            uptime_s: self.inner.started.elapsed().as_secs(),
        }
    }

    fn metrics(&self) -> String {
        let st = self.inner.store.stats();
        self.inner.metrics.render(&[
            (
                "sojourn_store_bytes_written",
                "Bytes written to the store since start.",
                st.bytes_written as f64,
            ),
            (
                "sojourn_uptime_seconds",
                "Seconds since the host started.",
                self.inner.started.elapsed().as_secs_f64(),
            ),
        ])
    }

    fn migrate(&self, id: &str, request: MigrateRequest) -> Result<MigrationReport, ApiError> {
        let peer = migrate::PeerAddress::from(request);
        let link = (self.inner.links)(&peer)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("destination: {e}")))?;
        self.migrate_to(id, peer, link.as_ref())
    }

    fn drain(&self, request: DrainRequest) -> Result<DrainReport, ApiError> {
        self.drain_to(request)
    }

    fn migration_offer(
        &self,
        offer: MigrationOffer,
        channel: [u8; 32],
    ) -> Result<MigrationOfferAnswer, ApiError> {
        self.on_offer(offer, channel)
    }

    fn migration_package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Vec<u8>,
        order: sojourn_api::PackageOrder,
    ) -> Result<MigrationAnswer, ApiError> {
        let sealed = match order {
            sojourn_api::PackageOrder::Layout => sealed,
            // Taken whole (no spool): put back in its layout, then opened as any package.
            sojourn_api::PackageOrder::TagAfterSegment => {
                sojourn_migration::package::TagAfterSegment::to_layout(&sealed)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e.to_string()))?
            }
        };
        self.on_package(transfer, key, sealed.into(), None, None)
    }

    fn migration_package_spool(
        &self,
        transfer: &str,
        key: &str,
        len: u64,
        order: sojourn_api::PackageOrder,
    ) -> Option<Box<dyn sojourn_api::PackageSpool>> {
        self.package_spool(transfer, key, len, order)
            .map(|s| Box::new(s) as Box<dyn sojourn_api::PackageSpool>)
    }

    fn migration_package_spooled(
        &self,
        transfer: &str,
        key: &str,
        spool: Box<dyn sojourn_api::PackageSpool>,
    ) -> Result<MigrationAnswer, ApiError> {
        let spool = spool
            .into_any()
            .downcast::<spool::Spool>()
            .map_err(|_| internal("a spool of another kind"))?;
        self.on_spooled_package(transfer, key, *spool)
    }

    fn migration_status(
        &self,
        request: MigrationStatusRequest,
    ) -> Result<MigrationAnswer, ApiError> {
        self.on_status(request)
    }

    fn migration_refusal(&self, request: MigrationRefusalRequest) -> Result<(), ApiError> {
        self.on_refusal(request)
    }
}
