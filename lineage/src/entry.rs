//! Lineage entries and their byte format (deterministic CBOR arrays; see
//! docs/lineage-format.md).

use ciborium::Value as Cbor;
use sha2::{Digest as _, Sha256};
use sojourn_policy::canonical;

/// Version of the entry encoding.
pub const ENTRY_VERSION: u64 = 1;

/// The eight AR4SI claims, in this order, each as a tier code (0 none, 1 affirming,
/// 2 warning, 3 contraindicated).
pub const TRUST_CLAIMS: [&str; 8] = [
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
];

/// One entry of an object's lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageEntry {
    /// The object.
    pub object_id: [u8; 16],
    /// Position in the lineage, from 0.
    pub seq: u64,
    /// Digest of the previous entry (zeros for entry 0).
    pub prev: [u8; 32],
    /// The entry point (`init`, `tick`, `message`, later `migrate-in`/`migrate-out`).
    pub kind: String,
    /// How it ended (`accepted`, `rejected`, `deferred`, `refused`, `faulted`).
    pub outcome: String,
    /// Why it was rejected or faulted.
    pub reason: Option<String>,
    /// Digest of the recorded inputs (time, randomness seed and use, message digest).
    pub inputs_digest: [u8; 32],
    /// State digest before.
    pub state_before: [u8; 32],
    /// State digest after.
    pub state_after: [u8; 32],
    /// The mutation set: canonical CBOR map of the writes (applied only if accepted).
    pub mutation: Vec<u8>,
    /// Digest of the descriptor (schema and policy) in force.
    pub descriptor_digest: [u8; 32],
    /// Key id of the host that signed it.
    pub host_key_id: [u8; 32],
    /// The evidence that binds that key (its epoch).
    pub evidence_id: [u8; 32],
    /// The appraisal of that evidence: tier codes in [`TRUST_CLAIMS`] order.
    pub trust_vector: [u8; 8],
    /// The entry's trust score (0..=100) from that appraisal.
    pub score: u8,
    /// Evidence whose report data commits to this entry itself (entries that change an
    /// attestation-required field).
    pub entry_evidence: Option<[u8; 32]>,
    /// When the host appended it (ms since the epoch).
    pub timestamp_ms: i64,
}

/// A malformed entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry field `{field}`: {reason}")]
pub struct EntryFormatError {
    /// Which field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn fe(field: &'static str, reason: impl Into<String>) -> EntryFormatError {
    EntryFormatError {
        field,
        reason: reason.into(),
    }
}

fn b(x: &[u8]) -> Cbor {
    Cbor::Bytes(x.to_vec())
}

impl LineageEntry {
    fn to_cbor(&self, with_entry_evidence: bool) -> Result<Cbor, EntryFormatError> {
        let mutation =
            canonical::decode(&self.mutation).map_err(|e| fe("mutation", e.to_string()))?;
        Ok(Cbor::Array(vec![
            Cbor::Integer(ENTRY_VERSION.into()),
            b(&self.object_id),
            Cbor::Integer(self.seq.into()),
            b(&self.prev),
            Cbor::Text(self.kind.clone()),
            Cbor::Text(self.outcome.clone()),
            self.reason.clone().map_or(Cbor::Null, Cbor::Text),
            b(&self.inputs_digest),
            b(&self.state_before),
            b(&self.state_after),
            mutation,
            b(&self.descriptor_digest),
            b(&self.host_key_id),
            b(&self.evidence_id),
            Cbor::Array(
                self.trust_vector
                    .iter()
                    .map(|t| Cbor::Integer((*t).into()))
                    .collect(),
            ),
            Cbor::Integer(self.score.into()),
            match (with_entry_evidence, &self.entry_evidence) {
                (true, Some(e)) => b(e),
                _ => Cbor::Null,
            },
            Cbor::Integer(self.timestamp_ms.into()),
        ]))
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, EntryFormatError> {
        canonical::encode(&self.to_cbor(true)?).map_err(|e| fe("(entry)", e.to_string()))
    }

    /// Digest of the encoding with `entry_evidence` left out: what entry-bound evidence
    /// commits to (it cannot commit to itself).
    pub fn unbound_digest(&self) -> Result<[u8; 32], EntryFormatError> {
        let bytes =
            canonical::encode(&self.to_cbor(false)?).map_err(|e| fe("(entry)", e.to_string()))?;
        Ok(Sha256::digest(bytes).into())
    }

    /// Decodes a canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<LineageEntry, EntryFormatError> {
        let v = canonical::decode(bytes).map_err(|e| fe("(entry)", e.to_string()))?;
        let Cbor::Array(items) = v else {
            return Err(fe("(entry)", "not an array"));
        };
        let [version, object_id, seq, prev, kind, outcome, reason, inputs, before, after, mutation, descriptor, host_key, evidence, tv, score, entry_evidence, ts] =
            items.as_slice()
        else {
            return Err(fe(
                "(entry)",
                format!("{} elements, expected 18", items.len()),
            ));
        };
        if uint(version, "version")? != ENTRY_VERSION {
            return Err(fe(
                "version",
                format!("entry format {ENTRY_VERSION} expected"),
            ));
        }
        let trust_vector: [u8; 8] = match tv {
            Cbor::Array(a) if a.len() == 8 => {
                let mut out = [0u8; 8];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = u8::try_from(uint(x, "trust_vector")?)
                        .ok()
                        .filter(|t| *t <= 3)
                        .ok_or_else(|| fe("trust_vector", "tier codes 0..=3"))?;
                }
                out
            }
            _ => return Err(fe("trust_vector", "8 tier codes")),
        };
        Ok(LineageEntry {
            object_id: fixed(object_id, "object_id")?,
            seq: uint(seq, "seq")?,
            prev: fixed(prev, "prev")?,
            kind: text(kind, "kind")?,
            outcome: text(outcome, "outcome")?,
            reason: match reason {
                Cbor::Null => None,
                r => Some(text(r, "reason")?),
            },
            inputs_digest: fixed(inputs, "inputs_digest")?,
            state_before: fixed(before, "state_before")?,
            state_after: fixed(after, "state_after")?,
            mutation: match mutation {
                Cbor::Map(_) => {
                    canonical::encode(mutation).map_err(|e| fe("mutation", e.to_string()))?
                }
                _ => return Err(fe("mutation", "a map")),
            },
            descriptor_digest: fixed(descriptor, "descriptor_digest")?,
            host_key_id: fixed(host_key, "host_key_id")?,
            evidence_id: fixed(evidence, "evidence_id")?,
            trust_vector,
            score: u8::try_from(uint(score, "score")?)
                .ok()
                .filter(|s| *s <= 100)
                .ok_or_else(|| fe("score", "0..=100"))?,
            entry_evidence: match entry_evidence {
                Cbor::Null => None,
                e => Some(fixed(e, "entry_evidence")?),
            },
            timestamp_ms: match ts {
                Cbor::Integer(i) => i64::try_from(*i).map_err(|_| fe("timestamp_ms", "an i64"))?,
                _ => return Err(fe("timestamp_ms", "an integer")),
            },
        })
    }
}

fn uint(v: &Cbor, field: &'static str) -> Result<u64, EntryFormatError> {
    match v {
        Cbor::Integer(i) => u64::try_from(*i).map_err(|_| fe(field, "an unsigned integer")),
        _ => Err(fe(field, "an unsigned integer")),
    }
}
fn text(v: &Cbor, field: &'static str) -> Result<String, EntryFormatError> {
    match v {
        Cbor::Text(t) => Ok(t.clone()),
        _ => Err(fe(field, "text")),
    }
}
fn fixed<const N: usize>(v: &Cbor, field: &'static str) -> Result<[u8; N], EntryFormatError> {
    match v {
        Cbor::Bytes(x) => x
            .as_slice()
            .try_into()
            .map_err(|_| fe(field, format!("{N} bytes"))),
        _ => Err(fe(field, format!("{N} bytes"))),
    }
}

/// Report data binding a host lineage key: SHA-256("sojourn/host-key/v1" ‖ key) ‖ freshness.
pub fn host_key_report_data(public_key: &[u8], freshness: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    let h: [u8; 32] = Sha256::new()
        .chain_update(b"sojourn/host-key/v1")
        .chain_update(public_key)
        .finalize()
        .into();
    out[..32].copy_from_slice(&h);
    out[32..].copy_from_slice(freshness);
    out
}

/// Report data binding one entry: SHA-256("sojourn/entry/v1" ‖ unbound digest) ‖ zeros.
pub fn entry_report_data(unbound_digest: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    let h: [u8; 32] = Sha256::new()
        .chain_update(b"sojourn/entry/v1")
        .chain_update(unbound_digest)
        .finalize()
        .into();
    out[..32].copy_from_slice(&h);
    out
}
