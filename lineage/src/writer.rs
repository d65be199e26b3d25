//! Appending to a lineage: each transition record becomes an entry chained to the previous
//! one, bound to the host's evidence for the current epoch, and signed in Merkle batches.
//! No I/O: time comes in with each call, output accumulates as export bytes to drain.

use ciborium::Value as Cbor;
use sha2::{Digest as _, Sha256};
use sojourn_attestation::{
    verify_evidence, Appraisal, Attester, ReferenceValues, Tier, Timestamp, TrustVector,
};
use sojourn_policy::{canonical, schema::fields_to_cbor, Descriptor, TrustView};
use sojourn_runtime::{Outcome, TransitionRecord};

use crate::entry::{entry_report_data, host_key_report_data, LineageEntry};
use crate::export::{batch_payload, EpochLimits, EvidencePurpose, Item};
use crate::merkle::{leaf_hash, root_and_proofs};
use crate::signer::{key_id, LineageSigner};
use crate::LineageError;

/// How a writer batches and refreshes evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Entries per signed batch (the last batch may be shorter: see [`LineageWriter::flush`]).
    pub batch_size: usize,
    /// New evidence after this many entries.
    pub epoch_max_entries: u64,
    /// New evidence after this long (ms).
    pub epoch_max_age_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_size: 256,
            epoch_max_entries: 100_000,
            epoch_max_age_ms: 3_600_000,
        }
    }
}

struct Epoch {
    evidence_id: [u8; 32],
    issued_at_ms: i64,
    entries: u64,
    trust_vector: [u8; 8],
    score: u8,
}

/// Tier code of a claim: 0 none, 1 affirming, 2 warning, 3 contraindicated.
pub fn tier_code(t: Tier) -> u8 {
    match t {
        Tier::Affirming => 1,
        Tier::Warning => 2,
        Tier::Contraindicated => 3,
        _ => 0,
    }
}

/// The eight claims of a trust vector as tier codes, in [`crate::entry::TRUST_CLAIMS`] order.
pub fn trust_codes(v: &TrustVector) -> [u8; 8] {
    let c =
        |x: &Option<sojourn_attestation::TrustClaim>| x.as_ref().map_or(0, |c| tier_code(c.tier));
    [
        c(&v.instance_identity),
        c(&v.configuration),
        c(&v.executables),
        c(&v.file_system),
        c(&v.hardware),
        c(&v.runtime_opaque),
        c(&v.storage_opaque),
        c(&v.sourced_data),
    ]
}

/// The score of an appraisal (docs/trust-slope.md): the worst assessed claim decides.
pub fn score(codes: &[u8; 8]) -> u8 {
    use sojourn_policy::trust::{SCORE_AFFIRMING, SCORE_NONE, SCORE_WARNING};
    match codes.iter().max().copied().unwrap_or(0) {
        3 => SCORE_NONE,
        2 => SCORE_WARNING,
        1 => SCORE_AFFIRMING,
        _ => SCORE_NONE,
    }
}

/// Freshness of an epoch's evidence: it commits to the object and the chain head, so it
/// cannot have been produced before that point of the lineage.
pub fn epoch_freshness(object_id: &[u8; 16], epoch_prev: &[u8; 32], issued_at_ms: i64) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"sojourn/epoch/v1")
        .chain_update(object_id)
        .chain_update(epoch_prev)
        .chain_update(issued_at_ms.to_be_bytes())
        .finalize()
        .into()
}

/// Digest of a record's inputs (time, randomness seed and amount, message digest).
pub fn inputs_digest(rec: &TransitionRecord) -> [u8; 32] {
    let i = &rec.inputs;
    let v = Cbor::Array(vec![
        Cbor::Integer(i.now_ms.into()),
        Cbor::Bytes(i.random_seed.0.to_vec()),
        Cbor::Integer(i.random_bytes.into()),
        i.message_digest
            .map_or(Cbor::Null, |d| Cbor::Bytes(d.0.to_vec())),
    ]);
    Sha256::digest(canonical::encode(&v).unwrap_or_default()).into()
}

fn appraise(
    evidence: &sojourn_attestation::Evidence,
    report_data: &[u8; 64],
    reference: &ReferenceValues,
    now_ms: i64,
) -> Result<Appraisal, LineageError> {
    let at = Timestamp::from_unix_secs(u64::try_from(now_ms / 1000).unwrap_or(0));
    verify_evidence(evidence, report_data, reference, at)
        .map_err(|e| LineageError::OwnEvidence(e.to_string()))
}

/// Where a writer stands between batches: what a host persists to continue the same lineage
/// after a restart (with [`LineageWriter::resume`]). The epoch is not kept: a resumed writer
/// opens a new epoch (new evidence bound to the chain head) before its next entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterState {
    /// Digest of the last entry.
    pub head: [u8; 32],
    /// Sequence number of the next entry.
    pub next_seq: u64,
    /// Number of the next batch.
    pub batch_no: u64,
    /// The trust view, [`TrustView::encode`]d.
    pub trust: Vec<u8>,
}

impl WriterState {
    /// Fixed-layout bytes: head (32) ‖ next_seq (u64 BE) ‖ batch_no (u64 BE) ‖ trust.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.trust.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        out.extend_from_slice(&self.batch_no.to_be_bytes());
        out.extend_from_slice(&self.trust);
        out
    }

    /// Where a writer continuing `export` (a whole lineage, every batch signed) must stand:
    /// the digest of the last entry, the next sequence number and batch number, and the trust
    /// view over every entry's score. A host that receives an object (migration) resumes its
    /// lineage from this. It only reads; verify the export first (`verify_lineage`).
    pub fn from_export(export: &[u8]) -> Result<WriterState, LineageError> {
        let mut input = export;
        let mut head = [0u8; 32];
        let mut next_seq = 0u64;
        let mut batch_no = 0u64;
        let mut trust = TrustView::new();
        let mut unsigned = 0u64;
        while let Some(item) =
            Item::read(&mut input).map_err(|e| LineageError::Format(e.to_string()))?
        {
            match item {
                Item::Entry { bytes, .. } => {
                    let e = LineageEntry::decode(&bytes)
                        .map_err(|e| LineageError::Format(e.to_string()))?;
                    if e.seq != next_seq {
                        return Err(LineageError::OutOfOrder {
                            expected: next_seq,
                            found: e.seq,
                        });
                    }
                    head = Sha256::digest(&bytes).into();
                    next_seq += 1;
                    unsigned += 1;
                    trust.push(e.score);
                }
                Item::Batch { batch, .. } => {
                    batch_no = batch + 1;
                    unsigned = 0;
                }
                _ => {}
            }
        }
        if unsigned > 0 {
            return Err(LineageError::Format(format!(
                "the export ends with {unsigned} entries outside a signed batch"
            )));
        }
        Ok(WriterState {
            head,
            next_seq,
            batch_no,
            trust: trust.encode(),
        })
    }

    /// Reads [`WriterState::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<WriterState, LineageError> {
        let bad = || LineageError::Format("lineage writer state: malformed".into());
        let head: [u8; 32] = bytes
            .get(..32)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let n = |r: std::ops::Range<usize>| -> Result<u64, LineageError> {
            Ok(u64::from_be_bytes(
                bytes
                    .get(r)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        let trust = bytes.get(48..).ok_or_else(bad)?.to_vec();
        TrustView::decode(&trust).ok_or_else(bad)?;
        Ok(WriterState {
            head,
            next_seq: n(32..40)?,
            batch_no: n(40..48)?,
            trust,
        })
    }
}

/// Writes one object's lineage.
pub struct LineageWriter {
    object_id: [u8; 16],
    descriptor: Descriptor,
    descriptor_digest: [u8; 32],
    signer: Box<dyn LineageSigner>,
    public_key: Vec<u8>,
    key_id: [u8; 32],
    attester: Box<dyn Attester + Send>,
    reference: ReferenceValues,
    cfg: WriterConfig,
    epoch: Option<Epoch>,
    prev: [u8; 32],
    next_seq: u64,
    batch_no: u64,
    pending: Vec<(Vec<u8>, [u8; 32], u64)>,
    out: Vec<u8>,
    trust: TrustView,
}

impl std::fmt::Debug for LineageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageWriter")
            .field("object_id", &hex::encode(self.object_id))
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl LineageWriter {
    /// Starts the lineage of `object_id` (its first record must be seq 0). `reference` is
    /// what the host appraises its own evidence against (the scores entries carry).
    pub fn new(
        object_id: [u8; 16],
        descriptor: &Descriptor,
        signer: Box<dyn LineageSigner>,
        attester: Box<dyn Attester + Send>,
        reference: ReferenceValues,
        cfg: WriterConfig,
    ) -> LineageWriter {
        let public_key = signer.public_key();
        let mut out = Vec::new();
        Item::Header {
            object_id,
            descriptor: descriptor.encode(),
            epoch_max_entries: cfg.epoch_max_entries,
            epoch_max_age_ms: cfg.epoch_max_age_ms,
        }
        .write(&mut out);
        LineageWriter {
            object_id,
            descriptor_digest: descriptor.digest(),
            descriptor: descriptor.clone(),
            key_id: key_id(&public_key),
            public_key,
            signer,
            attester,
            reference,
            cfg: WriterConfig {
                batch_size: cfg.batch_size.max(1),
                ..cfg
            },
            epoch: None,
            prev: [0; 32],
            next_seq: 0,
            batch_no: 0,
            pending: Vec::new(),
            out,
            trust: TrustView::new(),
        }
    }

    /// Continues a lineage from a persisted [`WriterState`] (no header is written: the
    /// output continues the export that state came from). `cfg` must be the configuration
    /// the lineage was started with (its header names the epoch limits).
    pub fn resume(
        object_id: [u8; 16],
        descriptor: &Descriptor,
        signer: Box<dyn LineageSigner>,
        attester: Box<dyn Attester + Send>,
        reference: ReferenceValues,
        cfg: WriterConfig,
        state: &WriterState,
    ) -> Result<LineageWriter, LineageError> {
        let trust = TrustView::decode(&state.trust)
            .ok_or_else(|| LineageError::Format("lineage writer state: bad trust view".into()))?;
        let mut w = LineageWriter::new(object_id, descriptor, signer, attester, reference, cfg);
        w.out.clear();
        w.prev = state.head;
        w.next_seq = state.next_seq;
        w.batch_no = state.batch_no;
        w.trust = trust;
        Ok(w)
    }

    /// Where the writer stands. Only meaningful after [`LineageWriter::flush`] (entries
    /// waiting for their batch signature are not part of it); `None` while some wait.
    pub fn state(&self) -> Option<WriterState> {
        self.pending.is_empty().then(|| WriterState {
            head: self.prev,
            next_seq: self.next_seq,
            batch_no: self.batch_no,
            trust: self.trust.encode(),
        })
    }

    /// The trust accumulated so far (hand it to the object: `ResidentObject::set_trust`).
    pub fn trust(&self) -> &TrustView {
        &self.trust
    }

    /// Digest of the last entry.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    fn ensure_epoch(&mut self, now_ms: i64) -> Result<(), LineageError> {
        let fresh = match &self.epoch {
            None => true,
            Some(e) => {
                e.entries >= self.cfg.epoch_max_entries
                    || now_ms.saturating_sub(e.issued_at_ms)
                        >= i64::try_from(self.cfg.epoch_max_age_ms).unwrap_or(i64::MAX)
                    || now_ms < e.issued_at_ms
            }
        };
        if !fresh {
            return Ok(());
        }
        let freshness = epoch_freshness(&self.object_id, &self.prev, now_ms);
        let report = host_key_report_data(&self.public_key, &freshness);
        let evidence = self
            .attester
            .attest(&report)
            .map_err(|e| LineageError::Attest(e.to_string()))?;
        let appraisal = appraise(&evidence, &report, &self.reference, now_ms)?;
        let bytes = evidence.to_bytes();
        let id: [u8; 32] = Sha256::digest(&bytes).into();
        let codes = trust_codes(appraisal.trust_vector());
        Item::Evidence {
            id,
            evidence: bytes,
            purpose: EvidencePurpose::HostKey,
            public_key: self.public_key.clone(),
            epoch_prev: self.prev,
            issued_at_ms: now_ms,
        }
        .write(&mut self.out);
        self.epoch = Some(Epoch {
            evidence_id: id,
            issued_at_ms: now_ms,
            entries: 0,
            trust_vector: codes,
            score: score(&codes),
        });
        Ok(())
    }

    /// Appends the entry for `rec` (which must be the object's next record).
    pub fn append(&mut self, rec: &TransitionRecord, now_ms: i64) -> Result<(), LineageError> {
        if rec.object_id.0 != self.object_id || rec.seq != self.next_seq {
            return Err(LineageError::OutOfOrder {
                expected: self.next_seq,
                found: rec.seq,
            });
        }
        self.ensure_epoch(now_ms)?;
        let Some(epoch) = self.epoch.as_mut() else {
            return Err(LineageError::Attest("no epoch".into()));
        };
        epoch.entries += 1;
        let (reason, outcome) = (
            rec.outcome.detail().map(str::to_string),
            rec.outcome.label(),
        );
        let mut entry = LineageEntry {
            object_id: self.object_id,
            seq: rec.seq,
            prev: self.prev,
            kind: rec.entry.as_str().to_string(),
            outcome: outcome.to_string(),
            reason,
            inputs_digest: inputs_digest(rec),
            state_before: rec.state_before.0,
            state_after: rec.state_after.0,
            mutation: canonical::encode(&fields_to_cbor(&rec.writes))
                .map_err(|e| LineageError::Format(e.to_string()))?,
            descriptor_digest: self.descriptor_digest,
            host_key_id: self.key_id,
            evidence_id: epoch.evidence_id,
            trust_vector: epoch.trust_vector,
            score: epoch.score,
            entry_evidence: None,
            timestamp_ms: now_ms,
        };
        let score = epoch.score;
        let needs_entry_evidence = rec.outcome == Outcome::Accepted
            && rec.writes.keys().any(|k| {
                self.descriptor
                    .field(k)
                    .is_some_and(|f| f.attestation_required)
            });
        if needs_entry_evidence {
            let unbound = entry
                .unbound_digest()
                .map_err(|e| LineageError::Format(e.to_string()))?;
            let report = entry_report_data(&unbound);
            let evidence = self
                .attester
                .attest(&report)
                .map_err(|e| LineageError::Attest(e.to_string()))?;
            appraise(&evidence, &report, &self.reference, now_ms)?;
            let bytes = evidence.to_bytes();
            let id: [u8; 32] = Sha256::digest(&bytes).into();
            Item::Evidence {
                id,
                evidence: bytes,
                purpose: EvidencePurpose::Entry,
                public_key: Vec::new(),
                epoch_prev: [0; 32],
                issued_at_ms: now_ms,
            }
            .write(&mut self.out);
            entry.entry_evidence = Some(id);
        }
        let bytes = entry
            .encode()
            .map_err(|e| LineageError::Format(e.to_string()))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        self.pending.push((bytes, digest, rec.seq));
        self.prev = digest;
        self.next_seq += 1;
        self.trust.push(score);
        if self.pending.len() >= self.cfg.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Signs the open batch (if any): every entry written so far becomes verifiable.
    pub fn flush(&mut self) -> Result<(), LineageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let leaves: Vec<[u8; 32]> = self.pending.iter().map(|(_, d, _)| leaf_hash(d)).collect();
        let (root, proofs) = root_and_proofs(&leaves);
        let first_seq = self.pending.first().map_or(0, |p| p.2);
        let count = self.pending.len() as u64;
        for (i, ((bytes, _, _), path)) in self.pending.drain(..).zip(proofs).enumerate() {
            Item::Entry {
                bytes,
                batch: self.batch_no,
                index: i as u64,
                path,
            }
            .write(&mut self.out);
        }
        let payload = batch_payload(
            &self.object_id,
            self.batch_no,
            first_seq,
            count,
            &root,
            EpochLimits {
                max_entries: self.cfg.epoch_max_entries,
                max_age_ms: self.cfg.epoch_max_age_ms,
            },
        );
        let protected = coset::HeaderBuilder::new()
            .algorithm(self.signer.algorithm())
            .key_id(self.key_id.to_vec())
            .build();
        let signer = &self.signer;
        let sign1 = coset::CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(&[], |m| signer.sign(m))
            .build();
        let cose = coset::TaggedCborSerializable::to_tagged_vec(sign1)
            .map_err(|e| LineageError::Format(e.to_string()))?;
        Item::Batch {
            batch: self.batch_no,
            cose,
        }
        .write(&mut self.out);
        self.batch_no += 1;
        Ok(())
    }

    /// Takes the export bytes written so far (a CBOR sequence; concatenating the drained
    /// chunks gives the whole export).
    pub fn drain_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
