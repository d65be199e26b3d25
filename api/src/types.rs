//! The JSON shapes of the host API, shared by the server and the client.
//!
//! Every type here is part of the wire contract described in docs/api.md: add fields
//! compatibly (optional, with `#[serde(default)]`), never rename or repurpose one.

use serde::{Deserialize, Serialize};

/// An object package as uploaded by `sojourn deploy`: the `object.toml` text and the module
/// it names (base64, standard alphabet, padded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The text of `object.toml`.
    pub object_toml: String,
    /// The module bytes, base64.
    pub module_base64: String,
}

/// One object as `ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object id, 32 lowercase hex characters.
    pub id: String,
    /// `object.name` from its descriptor.
    pub name: String,
    /// Descriptor digest (hex): the content address of schema, policy and module.
    pub descriptor_digest: String,
    /// Sequence number of the next transition (= committed transitions so far).
    pub seq: u64,
    /// `active` or `suspended`.
    pub status: String,
    /// Why the object is suspended, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_reason: Option<String>,
    /// Next wake in Unix milliseconds, or `None` when the object waits for a message.
    #[serde(default)]
    pub next_wake_ms: Option<i64>,
    /// Messages queued for it.
    pub inbox: u64,
    /// Hex state digest after the last committed transition.
    pub state_digest: String,
}

/// One committed transition, as `inspect` lists the most recent ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransitionSummary {
    /// Its sequence number.
    pub seq: u64,
    /// `init`, `tick` or `message`.
    pub entry: String,
    /// `accepted`, `rejected`, `faulted` or `noop`.
    pub outcome: String,
    /// Why it was rejected or faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The object's clock for this transition (Unix ms).
    pub at_ms: i64,
    /// Hex state digest after it.
    pub state_after: String,
    /// What the object emitted (each as UTF-8 if it is, otherwise hex prefixed `0x`).
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// `inspect`: everything `ls` says plus state and schedule detail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectDetail {
    /// The summary.
    #[serde(flatten)]
    pub info: ObjectInfo,
    /// The canonical state, field by field (JSON rendering of the schema values).
    pub state: serde_json::Value,
    /// The object's cadence as its descriptor sets it (ms), if any.
    #[serde(default)]
    pub cadence_ms: Option<u64>,
    /// Lineage entries committed.
    pub lineage_entries: u64,
    /// The last transitions (newest last), at most 16.
    pub recent: Vec<TransitionSummary>,
}

/// `send`: a message, as UTF-8 text or base64 bytes (exactly one of the two).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The message as text.
    #[serde(default)]
    pub text: Option<String>,
    /// The message as base64 bytes.
    #[serde(default)]
    pub base64: Option<String>,
}

/// The answer to a send: the message is durable when this is returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendReceipt {
    /// The object.
    pub id: String,
    /// The message's arrival number at that object (starts at 1, never reused).
    pub arrival: u64,
    /// Messages queued for the object after this one arrived.
    pub inbox: u64,
}

/// `suspend`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why (recorded).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `ok` when the host runs and its store accepts commits.
    pub status: String,
    /// Host software version.
    pub version: String,
    /// Attestation mode (`software` is insecure and says so).
    pub attestation: String,
    /// Resident objects.
    pub objects: u64,
    /// Seconds since start.
    pub uptime_s: u64,
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine-readable code (see [`crate::ErrorCode`]).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// `GET /v1/objects`: every resident object, ordered by id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectList {
    /// The objects.
    pub objects: Vec<ObjectInfo>,
}
