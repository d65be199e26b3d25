//! Drives resident objects on their own schedules: the object decides when it runs next; the
//! runner only keeps the appointment. Each wake runs on the blocking pool, so a slow or hostile
//! object (bounded by its fuel and time budget) never holds up another's schedule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use sojourn_lineage::LineageWriter;
use sojourn_runtime::{
    ObjectEngine, ObjectId, ResidentObject, Schedule, Status, TransitionRecord, WakeQueue, EPOCH_MS,
};
use tokio::task::JoinSet;

use crate::package::ObjectPackage;

/// Where time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Wall-clock time; wakes really wait.
    Real,
    /// Simulated time starting at the given ms: the runner jumps to each next wake. Runs are
    /// reproducible (randomness seeds are derived from the object and the time).
    Virtual(i64),
}

/// One transition, as the runner saw it.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// Index of the object in the runner.
    pub object: usize,
    /// Its name.
    pub name: String,
    /// ms since the run started (runner's clock).
    pub at_ms: i64,
    /// How late the wake started against the time the object asked for.
    pub lateness_ms: i64,
    /// The transition.
    pub record: TransitionRecord,
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub enum StopWhen {
    /// After this much (real or virtual) time.
    Elapsed(Duration),
    /// After every object has ticked this many times (or can no longer tick).
    Ticks(u64),
}

/// A resident object as the host keeps it: the object and, when attached, its lineage.
#[derive(Debug)]
pub struct Hosted {
    /// The object.
    pub object: ResidentObject,
    /// Its lineage writer, if one is attached.
    pub lineage: Option<LineageWriter>,
}

impl Hosted {
    /// One wake; each transition is appended to the lineage before the next entry runs, and
    /// the object's trust view follows the lineage. If an append fails the object is
    /// suspended: a transition that cannot be recorded must not be followed by another.
    pub fn wake(&mut self, now_ms: i64, seed: [u8; 32]) -> Vec<TransitionRecord> {
        let Some(writer) = self.lineage.as_mut() else {
            return self.object.wake(now_ms, seed);
        };
        let mut failure = None;
        let recs = self.object.wake_with(now_ms, seed, &mut |rec, trust| {
            if failure.is_some() {
                return;
            }
            match writer.append(rec, now_ms) {
                Ok(()) => *trust = Some(writer.trust().clone()),
                Err(e) => failure = Some(e.to_string()),
            }
        });
        if let Some(e) = failure {
            self.object.suspend(format!("lineage append failed: {e}"));
        }
        recs
    }
}

struct Slot {
    name: String,
    obj: Arc<Mutex<Hosted>>,
    ticks: u64,
}

/// Runs several resident objects side by side.
pub struct Runner {
    engine: ObjectEngine,
    clock: ClockMode,
    started: Instant,
    start_ms: i64,
    slots: Vec<Slot>,
    queue: WakeQueue<usize>,
    /// Scripted messages: (time offset ms, object, message).
    script: BTreeMap<(i64, u64), (usize, Vec<u8>)>,
    script_seq: u64,
    virtual_elapsed: i64,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("objects", &self.slots.len())
            .finish()
    }
}

/// Advances the engine's epoch every [`EPOCH_MS`] so that time budgets can fire.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: ObjectEngine) -> EpochTicker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(EPOCH_MS));
                engine.tick_epoch();
            }
        });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock(obj: &Mutex<Hosted>) -> std::sync::MutexGuard<'_, Hosted> {
    // A panic while holding the lock cannot leave the object half-updated in a way the
    // runtime does not already handle per entry; keep going with the inner value.
    obj.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runner {
    /// A runner with its own engine.
    pub fn new(clock: ClockMode) -> Result<Runner> {
        let engine = ObjectEngine::new()?;
        let start_ms = match clock {
            ClockMode::Real => wall_ms(),
            ClockMode::Virtual(t) => t,
        };
        Ok(Runner {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            clock,
            started: Instant::now(),
            start_ms,
            slots: Vec::new(),
            queue: WakeQueue::new(),
            script: BTreeMap::new(),
            script_seq: 0,
            virtual_elapsed: 0,
        })
    }

    fn now_ms(&self) -> i64 {
        match self.clock {
            ClockMode::Real => wall_ms(),
            ClockMode::Virtual(_) => self.start_ms + self.virtual_elapsed,
        }
    }

    fn seed(&self, object: usize, now: i64) -> [u8; 32] {
        let mut seed = [0u8; 32];
        match self.clock {
            ClockMode::Real => {
                if getrandom::fill(&mut seed).is_err() {
                    // No OS randomness: fall back to time-derived bytes (recorded either way).
                    seed[..8].copy_from_slice(&now.to_le_bytes());
                }
            }
            ClockMode::Virtual(_) => {
                seed[..8].copy_from_slice(&(object as u64).to_le_bytes());
                seed[8..16].copy_from_slice(&now.to_le_bytes());
            }
        }
        seed
    }

    /// Creates an object from a package (its creation entry runs now) and schedules it.
    pub fn add(&mut self, pkg: &ObjectPackage) -> Result<(usize, TransitionRecord)> {
        let module = self
            .engine
            .compile(&pkg.module)
            .with_context(|| format!("{}: module", pkg.origin))?;
        let idx = self.slots.len();
        let now = self.now_ms();
        let mut id = [0u8; 16];
        match self.clock {
            ClockMode::Real => getrandom::fill(&mut id).map_err(|e| anyhow!("randomness: {e}"))?,
            ClockMode::Virtual(_) => {
                let d = pkg.descriptor.digest();
                id.copy_from_slice(&d[..16]);
                id[15] ^= idx as u8;
            }
        }
        let (obj, rec) = ResidentObject::create(
            &self.engine,
            &module,
            pkg.descriptor.clone(),
            ObjectId(id),
            now,
            self.seed(idx, now),
        )
        .with_context(|| format!("{}: creating the object", pkg.origin))?;
        if let Schedule::WakeAt(at) = obj.schedule() {
            if *obj.status() == Status::Active {
                self.queue.schedule(idx, at);
            }
        }
        self.slots.push(Slot {
            name: pkg.descriptor.name.clone(),
            obj: Arc::new(Mutex::new(Hosted {
                object: obj,
                lineage: None,
            })),
            ticks: 0,
        });
        Ok((idx, rec))
    }

    /// Attaches a lineage to object `idx`: its creation record (from [`Runner::add`]) is the
    /// first entry, and from then on every transition is appended as it happens.
    pub fn attach_lineage(
        &mut self,
        idx: usize,
        mut writer: LineageWriter,
        init: &TransitionRecord,
    ) -> Result<()> {
        let now = self.now_ms();
        let slot = self
            .slots
            .get(idx)
            .ok_or_else(|| anyhow!("no object {idx}"))?;
        writer.append(init, now)?;
        let mut h = lock(&slot.obj);
        h.object.set_trust(Some(writer.trust().clone()));
        h.lineage = Some(writer);
        Ok(())
    }

    /// Signs what is pending and returns the export bytes written since the last call.
    pub fn drain_lineage(&mut self, idx: usize) -> Result<Vec<u8>> {
        let slot = self
            .slots
            .get(idx)
            .ok_or_else(|| anyhow!("no object {idx}"))?;
        let mut h = lock(&slot.obj);
        match h.lineage.as_mut() {
            Some(w) => {
                w.flush()?;
                Ok(w.drain_output())
            }
            None => Ok(Vec::new()),
        }
    }

    /// Schedules a message to be sent to `object` at `offset_ms` after the run starts.
    pub fn send_at(&mut self, offset_ms: i64, object: usize, message: &[u8]) {
        self.script_seq += 1;
        self.script
            .insert((offset_ms, self.script_seq), (object, message.to_vec()));
    }

    /// The objects, for inspection after a run.
    pub fn objects(&self) -> impl Iterator<Item = (&str, Arc<Mutex<Hosted>>)> {
        self.slots.iter().map(|s| (s.name.as_str(), s.obj.clone()))
    }

    fn deliver(&mut self, object: usize, msg: Vec<u8>, now: i64) -> Result<(), String> {
        let slot = self.slots.get(object).ok_or("no such object")?;
        let wake = lock(&slot.obj)
            .object
            .enqueue(msg)
            .map_err(|e| e.to_string())?;
        if wake {
            self.queue.schedule(object, now);
        }
        Ok(())
    }

    /// Runs until `stop`, calling `on_event` for each transition and `on_send_error` for
    /// scripted messages an object's inbox refused.
    pub async fn run(
        &mut self,
        stop: StopWhen,
        mut on_event: impl FnMut(&RunEvent),
        mut on_send_error: impl FnMut(usize, &str),
    ) -> Result<()> {
        self.started = Instant::now();
        let run_start = self.now_ms();
        let deadline = match stop {
            StopWhen::Elapsed(d) => {
                Some(run_start.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            }
            StopWhen::Ticks(_) => None,
        };
        let mut running: JoinSet<(usize, i64, i64, Vec<TransitionRecord>)> = JoinSet::new();
        loop {
            if let StopWhen::Ticks(n) = stop {
                let done = self
                    .slots
                    .iter()
                    .all(|s| s.ticks >= n || *lock(&s.obj).object.status() != Status::Active);
                if done && running.is_empty() {
                    break;
                }
            }
            let now = self.now_ms();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            // Scripted messages that are due.
            while let Some((&(off, seq), _)) = self.script.iter().next() {
                if run_start + off > now {
                    break;
                }
                if let Some((obj, msg)) = self.script.remove(&(off, seq)) {
                    if let Err(e) = self.deliver(obj, msg, now) {
                        on_send_error(obj, &e);
                    }
                }
            }
            // Wakes that are due.
            while let Some((idx, at)) = self.queue.pop_due(now) {
                let Some(slot) = self.slots.get(idx) else {
                    continue;
                };
                let obj = slot.obj.clone();
                let seed = self.seed(idx, now);
                match self.clock {
                    ClockMode::Real => {
                        running.spawn_blocking(move || {
                            let start = wall_ms();
                            let recs = lock(&obj).wake(start, seed);
                            (idx, at, start, recs)
                        });
                    }
                    ClockMode::Virtual(_) => {
                        let recs = lock(&obj).wake(now, seed);
                        running.spawn(async move { (idx, at, now, recs) });
                    }
                }
            }
            // Wait for the next thing to happen: a wake finishing, a wake due, a message due.
            let next_script = self.script.keys().next().map(|(off, _)| run_start + off);
            let next = [self.queue.next_at(), next_script, deadline]
                .into_iter()
                .flatten()
                .min();
            if running.is_empty() && next.is_none() {
                break;
            }
            let finished = match self.clock {
                ClockMode::Real => {
                    let wait = next.map_or(Duration::from_secs(3600), |n| {
                        Duration::from_millis(u64::try_from(n - self.now_ms()).unwrap_or(0))
                    });
                    if running.is_empty() {
                        tokio::time::sleep(wait).await;
                        None
                    } else {
                        tokio::select! {
                            r = running.join_next() => r,
                            _ = tokio::time::sleep(wait) => None,
                        }
                    }
                }
                ClockMode::Virtual(_) => {
                    if running.is_empty() {
                        if let Some(n) = next {
                            self.virtual_elapsed = n - self.start_ms;
                        }
                        None
                    } else {
                        running.join_next().await
                    }
                }
            };
            if let Some(joined) = finished {
                let (idx, at, started, recs) = joined.context("a wake task failed")?;
                let Some(slot) = self.slots.get_mut(idx) else {
                    continue;
                };
                let (schedule, active) = {
                    let o = lock(&slot.obj);
                    (o.object.schedule(), *o.object.status() == Status::Active)
                };
                for record in recs {
                    if record.entry == sojourn_policy::EntryPoint::Tick {
                        slot.ticks += 1;
                    }
                    on_event(&RunEvent {
                        object: idx,
                        name: slot.name.clone(),
                        at_ms: started - run_start,
                        lateness_ms: (started - at).max(0),
                        record,
                    });
                }
                if active {
                    if let Schedule::WakeAt(t) = schedule {
                        self.queue.schedule(idx, t);
                    }
                }
            }
        }
        // Let in-flight wakes finish (each is bounded by its budget) so nothing is torn.
        while let Some(joined) = running.join_next().await {
            let (idx, at, started, recs) = joined.context("a wake task failed")?;
            if let Some(slot) = self.slots.get(idx) {
                for record in recs {
                    on_event(&RunEvent {
                        object: idx,
                        name: slot.name.clone(),
                        at_ms: started - run_start,
                        lateness_ms: (started - at).max(0),
                        record,
                    });
                }
            }
        }
        Ok(())
    }
}
