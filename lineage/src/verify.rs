//! Offline verification of an exported lineage: nothing is trusted but the evidence's roots
//! (AMD, Intel, or an explicitly allowed software key) and the reference values.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ciborium::Value as Cbor;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sojourn_attestation::{verify_evidence, Evidence, ReferenceValues, Timestamp};
use sojourn_policy::{canonical, state_digest, Descriptor, EntryPoint, Fields, TrustView, Value};

use crate::entry::{entry_report_data, host_key_report_data};
use crate::export::{batch_payload, EpochLimits, EvidencePurpose, Item};
use crate::fast::{
    check_batch_signature, check_epoch_use, next_item, ChainPosition, EntryRef, EpochUse, ItemRef,
    OpenBatch,
};
use crate::signer::{key_id, verify_es256};
use crate::writer::{epoch_freshness, score, trust_codes};

/// What to verify against.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Reference values for every piece of evidence. `None`: the object's own policy decides
    /// (software evidence only if `policy.attestation.allow_software`).
    pub reference: Option<ReferenceValues>,
    /// Time at which evidence must be valid. `None`: the time it was produced.
    pub at: Option<Timestamp>,
}

/// The first thing wrong with a lineage, precisely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("item {item}{}: {field}: {reason}", seq.map(|s| format!(" (entry {s})")).unwrap_or_default())]
pub struct VerifyFailure {
    /// Index of the item in the export (0 = header).
    pub item: usize,
    /// The entry's sequence number, when the failure is about an entry.
    pub seq: Option<u64>,
    /// The field or check.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// What a verified lineage says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageSummary {
    /// The object.
    pub object_id: String,
    /// The descriptor in force.
    pub descriptor_digest: String,
    /// Entries verified.
    pub entries: u64,
    /// Signed batches.
    pub batches: u64,
    /// Entries by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Host key ids that signed.
    pub hosts: BTreeSet<String>,
    /// Platforms of the evidence.
    pub platforms: BTreeSet<String>,
    /// Trust over time: (seq, score, weighted mean) at each change of score and at the end.
    pub trust: Vec<(u64, u8, u8)>,
    /// Final state digest.
    pub final_state: String,
}

struct EvidenceRec {
    purpose: EvidencePurpose,
    evidence: Vec<u8>,
    key_id: [u8; 32],
    public_key: Vec<u8>,
    epoch_prev: [u8; 32],
    issued_at_ms: i64,
    // Filled on first use.
    appraised: Option<([u8; 8], String)>,
    uses: u64,
}

/// Verifies an export; on success, summarises it.
///
/// This is the full check: chain, inclusion proofs and batch signatures (what
/// [`crate::fast::verify_chain_and_signatures`] checks alone), plus the appraisal of every
/// piece of evidence, the trust vectors and scores, the replay of every mutation against the
/// descriptor and the state digests, and the trust slope.
pub fn verify_lineage(bytes: &[u8], opts: &VerifyOptions) -> Result<LineageSummary, VerifyFailure> {
    let mut input = bytes;
    let mut item_no = 0usize;
    let fail = |item: usize, seq: Option<u64>, field: &str, reason: String| VerifyFailure {
        item,
        seq,
        field: field.to_string(),
        reason,
    };
    let first = Item::read(&mut input).map_err(|e| fail(0, None, "header", e.0))?;
    let Some(Item::Header {
        object_id,
        descriptor,
        epoch_max_entries,
        epoch_max_age_ms,
    }) = first
    else {
        return Err(fail(
            0,
            None,
            "header",
            "the export does not start with a lineage header".into(),
        ));
    };
    let descriptor = Descriptor::decode(&descriptor)
        .map_err(|e| fail(0, None, "header.descriptor", e.to_string()))?;
    let descriptor_digest = descriptor.digest();
    let reference = match &opts.reference {
        Some(r) => r.clone(),
        None if descriptor.policy.attestation.allow_software => {
            ReferenceValues::default().allowing_software()
        }
        None => ReferenceValues::default(),
    };

    let mut evidence: HashMap<[u8; 32], EvidenceRec> = HashMap::new();
    let mut fields: Fields = descriptor.initial_state();
    let mut current = state_digest(&fields);
    let mut prev = [0u8; 32];
    let mut next_seq = 0u64;
    let mut batch_no = 0u64;
    let mut open = OpenBatch::default();
    // The host key id last added to `summary.hosts` (one hex string per host, not per entry).
    let mut last_host: Option<[u8; 32]> = None;
    let mut trust = TrustView::new();
    let mut summary = LineageSummary {
        object_id: hex::encode(object_id),
        descriptor_digest: hex::encode(descriptor_digest),
        entries: 0,
        batches: 0,
        outcomes: BTreeMap::new(),
        hosts: BTreeSet::new(),
        platforms: BTreeSet::new(),
        trust: Vec::new(),
        final_state: String::new(),
    };

    loop {
        item_no += 1;
        let item = match next_item(&mut input) {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(e) => return Err(fail(item_no, None, "item", e)),
        };
        match item {
            ItemRef::Other(Item::Header { .. }) => {
                return Err(fail(item_no, None, "header", "a second header".into()));
            }
            ItemRef::Other(Item::Entry { .. }) => {
                return Err(fail(
                    item_no,
                    None,
                    "item",
                    "entry item not canonical".into(),
                ));
            }
            ItemRef::Other(Item::Evidence {
                id,
                evidence: ev,
                purpose,
                public_key,
                epoch_prev,
                issued_at_ms,
            }) => {
                let real: [u8; 32] = Sha256::digest(&ev).into();
                if real != id {
                    return Err(fail(
                        item_no,
                        None,
                        "evidence.id",
                        "does not match the evidence's SHA-256".into(),
                    ));
                }
                if evidence.contains_key(&id) {
                    return Err(fail(
                        item_no,
                        None,
                        "evidence.id",
                        "duplicate evidence".into(),
                    ));
                }
                evidence.insert(
                    id,
                    EvidenceRec {
                        purpose,
                        evidence: ev,
                        key_id: key_id(&public_key),
                        public_key,
                        epoch_prev,
                        issued_at_ms,
                        appraised: None,
                        uses: 0,
                    },
                );
            }
            ItemRef::Entry(item) => {
                let (eb, batch, index) = (item.bytes, item.batch, item.index);
                // One pass over the entry's CBOR headers; the mutation map alone is decoded
                // (and its canonical encoding checked) by `decode_writes` below.
                let entry = EntryRef::parse(eb)
                    .map_err(|e| fail(item_no, Some(next_seq), e.field, e.reason))?;
                let seq = Some(entry.seq);
                let f = |field: &str, reason: String| fail(item_no, seq, field, reason);
                entry
                    .check_link(&ChainPosition {
                        batch,
                        index,
                        expected_batch: batch_no,
                        expected_index: open.len() as u64,
                        object_id: &object_id,
                        next_seq,
                        prev: &prev,
                        descriptor_digest: &descriptor_digest,
                    })
                    .map_err(|(field, reason)| f(field, reason))?;
                // The key is bound by host-key evidence of the current epoch.
                let ev = evidence.get_mut(&entry.evidence_id).ok_or_else(|| {
                    f(
                        "evidence_id",
                        "names evidence the export does not contain".into(),
                    )
                })?;
                check_epoch_use(
                    &entry,
                    &mut EpochUse {
                        purpose: ev.purpose,
                        key_id: ev.key_id,
                        epoch_prev: ev.epoch_prev,
                        issued_at_ms: ev.issued_at_ms,
                        uses: &mut ev.uses,
                    },
                    EpochLimits {
                        max_entries: epoch_max_entries,
                        max_age_ms: epoch_max_age_ms,
                    },
                )
                .map_err(|(field, reason)| f(field, reason))?;
                if ev.appraised.is_none() {
                    let parsed = Evidence::from_bytes(&ev.evidence)
                        .map_err(|e| f("evidence", e.to_string()))?;
                    let freshness = epoch_freshness(&object_id, &ev.epoch_prev, ev.issued_at_ms);
                    let rd = host_key_report_data(&ev.public_key, &freshness);
                    let at = opts.at.unwrap_or_else(|| {
                        Timestamp::from_unix_secs(
                            u64::try_from(ev.issued_at_ms / 1000).unwrap_or(0),
                        )
                    });
                    let appraisal = verify_evidence(&parsed, &rd, &reference, at).map_err(|e| {
                        f(
                            "evidence",
                            format!("host-key evidence does not verify: {e}"),
                        )
                    })?;
                    ev.appraised = Some((
                        trust_codes(appraisal.trust_vector()),
                        parsed.platform.as_str().to_string(),
                    ));
                }
                let Some((codes, platform)) = &ev.appraised else {
                    return Err(f("evidence", "not appraised".into()));
                };
                if entry.trust_vector != *codes || entry.score != score(codes) {
                    return Err(f(
                        "trust_vector",
                        "does not match the appraisal of its evidence".into(),
                    ));
                }
                if !summary.platforms.contains(platform) {
                    summary.platforms.insert(platform.clone());
                }
                if last_host != Some(entry.host_key_id) {
                    summary.hosts.insert(hex::encode(entry.host_key_id));
                    last_host = Some(entry.host_key_id);
                }

                // Re-validate the mutation and replay the canonical state.
                let writes =
                    decode_writes(entry.mutation, &descriptor).map_err(|r| f("mutation", r))?;
                if entry.state_before != current {
                    return Err(f(
                        "state_before",
                        "does not match the state the lineage reached".into(),
                    ));
                }
                let ep = match entry.kind {
                    "init" => EntryPoint::Init,
                    "tick" => EntryPoint::Tick,
                    "message" => EntryPoint::Message,
                    "migration" => EntryPoint::Migration,
                    k => return Err(f("kind", format!("unknown entry kind {k:?}"))),
                };
                let migration_outcome = matches!(
                    entry.outcome,
                    "migrated-out" | "migrated-in" | "migration-refused"
                );
                if (ep == EntryPoint::Migration) != migration_outcome {
                    return Err(f(
                        "outcome",
                        format!(
                            "outcome {:?} does not belong to a {:?} entry",
                            entry.outcome, entry.kind
                        ),
                    ));
                }
                if ep == EntryPoint::Migration && !writes.is_empty() {
                    return Err(f("mutation", "a migration event writes no field".into()));
                }
                match entry.outcome {
                    "accepted" => {
                        if !writes.is_empty() {
                            descriptor.check_trust(&writes, Some(&trust)).map_err(|v| {
                                f(
                                    "trust",
                                    format!("the trust slope forbids this mutation: {v}"),
                                )
                            })?;
                        }
                        let after =
                            descriptor
                                .check_transition(ep, &fields, &writes)
                                .map_err(|v| {
                                    f(
                                        "mutation",
                                        format!("not valid under the policy in force: {v}"),
                                    )
                                })?;
                        let d = state_digest(&after);
                        if d != entry.state_after {
                            return Err(f(
                                "state_after",
                                "does not match the state after applying the mutation".into(),
                            ));
                        }
                        fields = after;
                        current = d;
                        let attested = writes
                            .keys()
                            .any(|k| descriptor.field(k).is_some_and(|s| s.attestation_required));
                        if attested {
                            let id = entry.entry_evidence.ok_or_else(|| {
                                f("entry_evidence", "changes an attestation-required field without evidence bound to the entry".into())
                            })?;
                            let ev = evidence
                                .get_mut(&id)
                                .filter(|e| e.purpose == EvidencePurpose::Entry)
                                .ok_or_else(|| {
                                    f(
                                        "entry_evidence",
                                        "names no entry evidence in the export".into(),
                                    )
                                })?;
                            if !ev.public_key.is_empty()
                                || ev.epoch_prev != [0; 32]
                                || ev.issued_at_ms != entry.timestamp_ms
                                || ev.uses > 0
                            {
                                return Err(f("entry_evidence", "entry evidence must name no key, no epoch, the entry's own time, and serve one entry".into()));
                            }
                            ev.uses += 1;
                            let parsed = Evidence::from_bytes(&ev.evidence)
                                .map_err(|e| f("entry_evidence", e.to_string()))?;
                            let unbound = entry
                                .to_entry()
                                .unbound_digest()
                                .map_err(|e| f(e.field, e.reason))?;
                            let at = opts.at.unwrap_or_else(|| {
                                Timestamp::from_unix_secs(
                                    u64::try_from(ev.issued_at_ms / 1000).unwrap_or(0),
                                )
                            });
                            verify_evidence(&parsed, &entry_report_data(&unbound), &reference, at)
                                .map_err(|e| {
                                    f(
                                        "entry_evidence",
                                        format!("does not verify for this entry: {e}"),
                                    )
                                })?;
                        }
                    }
                    "rejected" | "deferred" | "refused" | "faulted" | "migrated-out"
                    | "migrated-in" | "migration-refused" => {
                        if entry.state_after != current {
                            return Err(f(
                                "state_after",
                                format!("a {} transition changed the state", entry.outcome),
                            ));
                        }
                    }
                    o => return Err(f("outcome", format!("unknown outcome {o:?}"))),
                }
                if summary.trust.last().map(|t| t.1) != Some(entry.score) {
                    trust.push(entry.score);
                    summary
                        .trust
                        .push((entry.seq, entry.score, trust.ewma().unwrap_or(0)));
                } else {
                    trust.push(entry.score);
                }
                match summary.outcomes.get_mut(entry.outcome) {
                    Some(n) => *n += 1,
                    None => {
                        summary.outcomes.insert(entry.outcome.to_string(), 1);
                    }
                }
                let digest: [u8; 32] = Sha256::digest(eb).into();
                open.push(
                    digest,
                    entry.seq,
                    entry.host_key_id,
                    entry.evidence_id,
                    item.path(),
                );
                prev = digest;
                next_seq += 1;
                summary.entries += 1;
            }
            ItemRef::Other(Item::Batch { batch, cose }) => {
                let f = |field: &str, reason: String| fail(item_no, None, field, reason);
                if batch != batch_no {
                    return Err(f(
                        "batch",
                        format!("batch {batch} out of order (expected {batch_no})"),
                    ));
                }
                let root = open.root_checked().map_err(|seq| {
                    fail(
                        item_no,
                        Some(seq),
                        "inclusion_proof",
                        "does not lead to the batch root".into(),
                    )
                })?;
                let Some(first) = open.entries.first() else {
                    return Err(f("batch", "signs no entries".into()));
                };
                if let Some(o) = open
                    .entries
                    .iter()
                    .find(|o| o.host_key_id != first.host_key_id)
                {
                    return Err(fail(
                        item_no,
                        Some(o.seq),
                        "host_key_id",
                        "a batch holds entries of two hosts".into(),
                    ));
                }
                let payload = batch_payload(
                    &object_id,
                    batch,
                    first.seq,
                    open.len() as u64,
                    &root,
                    EpochLimits {
                        max_entries: epoch_max_entries,
                        max_age_ms: epoch_max_age_ms,
                    },
                );
                let pk = evidence
                    .get(&first.evidence_id)
                    .map(|e| e.public_key.as_slice())
                    .unwrap_or_default();
                check_batch_signature(&cose, &first.host_key_id, &payload, |sig, data| {
                    verify_es256(pk, data, sig)
                })
                .map_err(|(field, reason)| f(field, reason))?;
                open.clear();
                batch_no += 1;
                summary.batches += 1;
            }
        }
    }
    if let Some(o) = open.entries.first() {
        return Err(fail(
            item_no,
            Some(o.seq),
            "batch",
            format!(
                "{} entries at the end are not covered by a batch signature",
                open.len()
            ),
        ));
    }
    if let Some(unused) = evidence.values().find(|e| e.uses == 0) {
        return Err(fail(
            item_no,
            None,
            "evidence",
            format!(
                "evidence issued at {} ms is referenced by no entry",
                unused.issued_at_ms
            ),
        ));
    }
    if summary.entries == 0 {
        return Err(fail(
            item_no,
            None,
            "entries",
            "the lineage has no entries".into(),
        ));
    }
    if let Some(last) = summary.trust.last().copied() {
        if last.0 + 1 != next_seq {
            summary
                .trust
                .push((next_seq - 1, last.1, trust.ewma().unwrap_or(0)));
        }
    }
    summary.final_state = hex::encode(current);
    Ok(summary)
}

fn decode_writes(mutation: &[u8], d: &Descriptor) -> Result<Fields, String> {
    let v = canonical::decode(mutation).map_err(|e| e.to_string())?;
    let Cbor::Map(m) = v else {
        return Err("not a map".into());
    };
    let mut out = Fields::new();
    for (k, v) in m {
        let Cbor::Text(name) = k else {
            return Err("field names must be text".into());
        };
        let spec = d
            .field(&name)
            .ok_or_else(|| format!("unknown field `{name}`"))?;
        let value: Value =
            Value::from_cbor(&v, &spec.ty).map_err(|e| format!("field `{name}`: {e}"))?;
        out.insert(name, value);
    }
    Ok(out)
}
