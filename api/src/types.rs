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

// ---------------------------------------------------------------------------------------------
// Migration (docs/migration.md). Ids travel as lowercase hex: a transfer id is 32 hex
// characters, a challenge 64, an object id 32, a key id 64.

/// `POST /v1/objects/{id}/migrate` (admin, on the source host): move the object to the
/// destination host named here. The source host connects to the destination itself, with
/// these credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination host, `https://HOST:PORT`.
    pub to: String,
    /// PEM of the CA the destination's TLS certificate chains to.
    pub ca_pem: String,
    /// A token of the destination with the `admin` or `peer` role.
    pub token: String,
}

/// One timed step of a migration, as the source host saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationStep {
    /// `quiesce`, `attestation`, `appraisal`, `seal`, `transfer`, `commit`, ...
    pub name: String,
    /// How long it took, in microseconds.
    pub micros: u64,
}

/// What a migration attempt came to, as the source host reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationReport {
    /// The object (32 hex).
    pub object: String,
    /// The object's name.
    pub name: String,
    /// The attempt (32 hex).
    pub transfer: String,
    /// The destination URL.
    pub destination: String,
    /// `transferred` (the destination holds and runs it; this host keeps a tombstone),
    /// `refused` (the destination's evidence did not satisfy the object's policy; it runs
    /// here again), `aborted` (the attempt ended without a transfer; it runs here again) or
    /// `pending` (the package may have left and the destination has not answered: the object
    /// does not run here, and the host keeps asking the destination until it decides).
    pub outcome: String,
    /// Why, for `refused`, `aborted` and `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stable refusal code, for `refused` (`measurement`, `debug`, `tcb`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_code: Option<String>,
    /// The appraisal of the destination's evidence, in one line (when there was evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal: Option<String>,
    /// The object's sequence number when it stopped here.
    pub seq: u64,
    /// Bytes of the sealed package (0 if none was sent).
    pub package_bytes: u64,
    /// From the quiesce to the destination's acknowledgement, in microseconds: how long the
    /// object ran nowhere.
    pub downtime_micros: u64,
    /// The steps, in order.
    pub steps: Vec<MigrationStep>,
}

/// `POST /v1/drain` (admin): move every object this host runs to one of these destinations
/// (the first, for each object, whose evidence its policy accepts), in parallel, within the
/// deadline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// The destinations, in order of preference.
    pub to: Vec<MigrateRequest>,
    /// Deadline in seconds (default 60).
    #[serde(default)]
    pub deadline_s: Option<u64>,
}

/// One object a drain could not move, and why (per destination tried).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainStay {
    /// The object (32 hex).
    pub object: String,
    /// Its name.
    pub name: String,
    /// One reason per destination tried, `URL: reason`.
    pub reasons: Vec<String>,
}

/// What a drain did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainReport {
    /// The objects moved, with their reports.
    pub moved: Vec<MigrationReport>,
    /// The objects that stay here (sealed in the store; not moved).
    pub stayed: Vec<DrainStay>,
    /// The objects whose package left but whose destination has not decided yet (they run
    /// nowhere until it does; the host keeps asking).
    pub pending: Vec<MigrationReport>,
}

/// Host to host, `POST /v1/migration/offer` (peer): "prove you may take this object". The
/// answer's evidence commits to the TLS exporter of the connection that carried this request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrationOffer {
    /// Protocol version (1).
    pub version: u32,
    /// The attempt (32 hex).
    pub transfer: String,
    /// The object (32 hex).
    pub object: String,
    /// The source's fresh challenge (64 hex).
    pub challenge: String,
    /// The source host, as it names itself (its URL), for the destination's records.
    pub source: String,
}

/// A destination's answer to an offer: evidence, or a signed `aborted`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationOfferAnswer {
    /// The offer binding (canonical CBOR, base64) the evidence's report data commits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_base64: Option<String>,
    /// The evidence (base64 of its encoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_base64: Option<String>,
    /// Present instead when the destination refused the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<MigrationAnswer>,
}

/// A destination's decision on an attempt: `ack` (it holds the object durably and runs it)
/// or `aborted` (it has durably recorded that it will never accept this attempt), signed with
/// the answer key its evidence for the attempt committed to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationAnswer {
    /// The attempt (32 hex).
    pub transfer: String,
    /// `ack` or `aborted`.
    pub outcome: String,
    /// Why, for `aborted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ES256 signature (base64, fixed 64 bytes) over the answer's signed bytes.
    pub signature_base64: String,
}

/// Host to host, `POST /v1/migration/status` (peer): "decide now".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrationStatusRequest {
    /// The attempt (32 hex).
    pub transfer: String,
}

/// Host to host, `POST /v1/migration/refusal` (peer): the source will not send a package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrationRefusalRequest {
    /// The attempt (32 hex).
    pub transfer: String,
    /// Why.
    pub reason: String,
}
