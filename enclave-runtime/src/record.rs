//! Transition records: what every entry of an object did. The lineage layer
//! (`sojourn-lineage`) turns each into a signed, chained entry; here they are plain data.

use std::fmt;

use serde::Serialize;
use sojourn_policy::{EntryPoint, Fields, Value};

/// A SHA-256 digest (rendered as hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}
impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An object's identity, fixed at creation and kept across snapshots and moves.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub [u8; 16]);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}
impl Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// What the object decided about its next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// Wake at this time (ms since the epoch), after clamping to the policy's cadence.
    WakeAt {
        /// Absolute wake time.
        at_ms: i64,
        /// The delay the object asked for, if the cadence changed it.
        requested_ms: Option<i64>,
    },
    /// Sleep until a message arrives.
    AwaitMessage,
}

/// How an entry ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The writes passed schema and policy and were applied.
    Accepted,
    /// The writes violated schema or policy: none applied.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The object deferred the message: it stays queued; the entry's writes were discarded.
    Deferred,
    /// The object refused the message: it is dropped; the entry's writes were discarded.
    Refused,
    /// The entry trapped, ran out of fuel or time, or grew memory past its cap. Nothing
    /// applied and the object is suspended.
    Faulted {
        /// Why.
        reason: String,
    },
    /// Migration event: the object was handed to another host (recorded at the source).
    MigratedOut {
        /// Where it went and the appraisal that allowed it.
        detail: String,
    },
    /// Migration event: the object arrived from another host (recorded at the destination).
    MigratedIn {
        /// Where it came from.
        detail: String,
    },
    /// Migration event: a move was refused (the destination's evidence failed the object's
    /// policy, or the transfer was aborted); the object stays.
    MigrationRefused {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// A short label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Deferred => "deferred",
            Outcome::Refused => "refused",
            Outcome::Faulted { .. } => "faulted",
            Outcome::MigratedOut { .. } => "migrated-out",
            Outcome::MigratedIn { .. } => "migrated-in",
            Outcome::MigrationRefused { .. } => "migration-refused",
        }
    }

    /// The reason or detail it carries, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Rejected { reason }
            | Outcome::Faulted { reason }
            | Outcome::MigrationRefused { reason } => Some(reason),
            Outcome::MigratedOut { detail } | Outcome::MigratedIn { detail } => Some(detail),
            _ => None,
        }
    }

    /// Whether this is a migration event.
    pub fn is_migration(&self) -> bool {
        matches!(
            self,
            Outcome::MigratedOut { .. }
                | Outcome::MigratedIn { .. }
                | Outcome::MigrationRefused { .. }
        )
    }
}

/// The inputs an entry observed, recorded so that it can be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryInputs {
    /// The entry's time (what `now` returned and what `sojourn_tick` got).
    pub now_ms: i64,
    /// Seed of the wake this entry ran in; `random` expands it with the entry's `seq`
    /// (SHA-256(seed ‖ seq ‖ block)), so the record replays exactly.
    pub random_seed: Digest,
    /// How many random bytes the entry drew.
    pub random_bytes: u32,
    /// SHA-256 of the message offered (message entries only).
    pub message_digest: Option<Digest>,
}

/// One transition of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionRecord {
    /// The object.
    pub object_id: ObjectId,
    /// Sequence number, from 0 at creation, one per entry.
    pub seq: u64,
    /// The entry point.
    #[serde(serialize_with = "ser_entry")]
    pub entry: EntryPoint,
    /// Recorded inputs.
    pub inputs: EntryInputs,
    /// Digest of the canonical fields before the entry.
    pub state_before: Digest,
    /// Digest of the canonical fields after it (equal to `state_before` unless accepted).
    pub state_after: Digest,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The writes the entry staged (applied only if accepted).
    #[serde(serialize_with = "ser_fields")]
    pub writes: Fields,
    /// Messages emitted (left the object only if accepted).
    #[serde(serialize_with = "ser_messages")]
    pub emitted: Vec<Vec<u8>>,
    /// Log lines.
    pub logs: Vec<String>,
    /// The schedule decision (init and tick entries).
    pub decision: Option<Decision>,
    /// Fuel the entry consumed.
    pub fuel_used: u64,
    /// Digest of the descriptor (schema and policy) in force.
    pub descriptor_digest: Digest,
}

fn ser_entry<S: serde::Serializer>(e: &EntryPoint, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(e.as_str())
}
fn ser_fields<S: serde::Serializer>(f: &Fields, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(f.len()))?;
    for (k, v) in f {
        m.serialize_entry(k, &v.render())?;
    }
    m.end()
}
fn ser_messages<S: serde::Serializer>(msgs: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut q = s.serialize_seq(Some(msgs.len()))?;
    for m in msgs {
        q.serialize_element(&String::from_utf8_lossy(m))?;
    }
    q.end()
}

impl TransitionRecord {
    /// One human-readable line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "#{:<4} {:<7} {:<8}",
            self.seq,
            self.entry.as_str(),
            self.outcome.label()
        );
        match &self.outcome {
            Outcome::Rejected { reason } | Outcome::Faulted { reason } => {
                s.push_str(&format!(" ({reason})"));
            }
            _ => {}
        }
        if !self.writes.is_empty() {
            let w: Vec<String> = self
                .writes
                .iter()
                .map(|(k, v): (&String, &Value)| format!("{k}={}", v.render()))
                .collect();
            s.push_str(&format!(" writes[{}]", w.join(" ")));
        }
        match self.decision {
            Some(Decision::WakeAt {
                at_ms,
                requested_ms,
            }) => {
                s.push_str(&format!(" next+{}ms", at_ms - self.inputs.now_ms));
                if let Some(r) = requested_ms {
                    s.push_str(&format!(" (asked {r}ms)"));
                }
            }
            Some(Decision::AwaitMessage) => s.push_str(" next=on-message"),
            None => {}
        }
        let digest = self.state_after.to_string();
        s.push_str(&format!(" state={}", digest.get(..12).unwrap_or_default()));
        s
    }
}
