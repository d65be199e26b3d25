//! The export format: a CBOR sequence (RFC 8742) of items, each a CBOR array whose first
//! element names its type. See docs/lineage-format.md.

use ciborium::Value as Cbor;
use sojourn_policy::canonical;

/// Version of the export format.
pub const EXPORT_VERSION: u64 = 1;
/// The first item's tag.
pub const HEADER_TAG: &str = "sojourn-lineage";

/// Purpose of an evidence record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidencePurpose {
    /// Binds a host's lineage key for an epoch.
    HostKey,
    /// Binds one entry (attestation-required field changes).
    Entry,
}

impl EvidencePurpose {
    fn as_str(self) -> &'static str {
        match self {
            EvidencePurpose::HostKey => "host-key",
            EvidencePurpose::Entry => "entry",
        }
    }
}

/// One item of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// First item: what the lineage is of and how it was written.
    Header {
        /// The object.
        object_id: [u8; 16],
        /// The canonical descriptor at genesis.
        descriptor: Vec<u8>,
        /// Most entries per evidence epoch.
        epoch_max_entries: u64,
        /// Longest epoch, ms.
        epoch_max_age_ms: u64,
    },
    /// Attestation evidence referenced by entries.
    Evidence {
        /// SHA-256 of `evidence`.
        id: [u8; 32],
        /// `sojourn_attestation::Evidence::to_bytes`.
        evidence: Vec<u8>,
        /// Why it was produced.
        purpose: EvidencePurpose,
        /// The host key it binds (host-key evidence; empty otherwise).
        public_key: Vec<u8>,
        /// The chain head when the epoch began (host-key evidence; zeros otherwise).
        epoch_prev: [u8; 32],
        /// When it was produced (ms since the epoch).
        issued_at_ms: i64,
    },
    /// An entry with its inclusion proof in batch `batch`.
    Entry {
        /// The entry's canonical encoding.
        bytes: Vec<u8>,
        /// Batch number.
        batch: u64,
        /// Leaf index in the batch.
        index: u64,
        /// Audit path.
        path: Vec<[u8; 32]>,
    },
    /// A batch signature: COSE_Sign1 over the batch's Merkle root.
    Batch {
        /// Batch number.
        batch: u64,
        /// The COSE_Sign1 (tagged) bytes.
        cose: Vec<u8>,
    },
}

/// A malformed item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ItemError(pub String);

fn b(x: &[u8]) -> Cbor {
    Cbor::Bytes(x.to_vec())
}
fn u(x: u64) -> Cbor {
    Cbor::Integer(x.into())
}
fn t(x: &str) -> Cbor {
    Cbor::Text(x.to_string())
}

impl Item {
    /// Appends the item's canonical encoding to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let v = match self {
            Item::Header {
                object_id,
                descriptor,
                epoch_max_entries,
                epoch_max_age_ms,
            } => Cbor::Array(vec![
                t(HEADER_TAG),
                u(EXPORT_VERSION),
                b(object_id),
                b(descriptor),
                u(*epoch_max_entries),
                u(*epoch_max_age_ms),
            ]),
            Item::Evidence {
                id,
                evidence,
                purpose,
                public_key,
                epoch_prev,
                issued_at_ms,
            } => Cbor::Array(vec![
                t("evidence"),
                b(id),
                b(evidence),
                t(purpose.as_str()),
                b(public_key),
                b(epoch_prev),
                Cbor::Integer((*issued_at_ms).into()),
            ]),
            Item::Entry {
                bytes,
                batch,
                index,
                path,
            } => Cbor::Array(vec![
                t("entry"),
                b(bytes),
                u(*batch),
                u(*index),
                Cbor::Array(path.iter().map(|p| b(p)).collect()),
            ]),
            Item::Batch { batch, cose } => Cbor::Array(vec![t("batch"), u(*batch), b(cose)]),
        };
        // Items hold only byte strings, text and integers: encoding cannot fail.
        if let Ok(bytes) = canonical::encode(&v) {
            out.extend_from_slice(&bytes);
        }
    }

    /// Reads the next item from `input`, advancing it. `Ok(None)` at the end.
    pub fn read(input: &mut &[u8]) -> Result<Option<Item>, ItemError> {
        if input.is_empty() {
            return Ok(None);
        }
        let before = *input;
        let v: Cbor = ciborium::from_reader(&mut *input)
            .map_err(|e| ItemError(format!("malformed CBOR item: {e}")))?;
        let used = before.len() - input.len();
        let raw = before.get(..used).unwrap_or_default();
        if canonical::encode(&v).ok().as_deref() != Some(raw) {
            return Err(ItemError("item is not in deterministic CBOR".into()));
        }
        let Cbor::Array(a) = v else {
            return Err(ItemError("item is not an array".into()));
        };
        let bad = |what: &str| ItemError(format!("malformed {what} item"));
        let item = match a.as_slice() {
            [Cbor::Text(tag), Cbor::Integer(v), Cbor::Bytes(oid), Cbor::Bytes(d), Cbor::Integer(me), Cbor::Integer(ma)]
                if tag == HEADER_TAG =>
            {
                if u64::try_from(*v).ok() != Some(EXPORT_VERSION) {
                    return Err(ItemError(format!(
                        "export format version {v:?} is not supported (expected {EXPORT_VERSION})"
                    )));
                }
                Item::Header {
                    object_id: oid.as_slice().try_into().map_err(|_| bad("header"))?,
                    descriptor: d.clone(),
                    epoch_max_entries: u64::try_from(*me).map_err(|_| bad("header"))?,
                    epoch_max_age_ms: u64::try_from(*ma).map_err(|_| bad("header"))?,
                }
            }
            [Cbor::Text(tag), Cbor::Bytes(id), Cbor::Bytes(ev), Cbor::Text(p), Cbor::Bytes(pk), Cbor::Bytes(ep), Cbor::Integer(at)]
                if tag == "evidence" =>
            {
                Item::Evidence {
                    id: id.as_slice().try_into().map_err(|_| bad("evidence"))?,
                    evidence: ev.clone(),
                    purpose: match p.as_str() {
                        "host-key" => EvidencePurpose::HostKey,
                        "entry" => EvidencePurpose::Entry,
                        _ => return Err(bad("evidence")),
                    },
                    public_key: pk.clone(),
                    epoch_prev: ep.as_slice().try_into().map_err(|_| bad("evidence"))?,
                    issued_at_ms: i64::try_from(*at).map_err(|_| bad("evidence"))?,
                }
            }
            [Cbor::Text(tag), Cbor::Bytes(e), Cbor::Integer(batch), Cbor::Integer(idx), Cbor::Array(path)]
                if tag == "entry" =>
            {
                let mut p = Vec::with_capacity(path.len());
                for x in path {
                    match x {
                        Cbor::Bytes(h) => {
                            p.push(h.as_slice().try_into().map_err(|_| bad("entry"))?)
                        }
                        _ => return Err(bad("entry")),
                    }
                }
                Item::Entry {
                    bytes: e.clone(),
                    batch: u64::try_from(*batch).map_err(|_| bad("entry"))?,
                    index: u64::try_from(*idx).map_err(|_| bad("entry"))?,
                    path: p,
                }
            }
            [Cbor::Text(tag), Cbor::Integer(batch), Cbor::Bytes(c)] if tag == "batch" => {
                Item::Batch {
                    batch: u64::try_from(*batch).map_err(|_| bad("batch"))?,
                    cose: c.clone(),
                }
            }
            _ => return Err(ItemError("unknown item type".into())),
        };
        Ok(Some(item))
    }
}

/// The epoch limits of the header, which every batch signature also covers (so they cannot
/// be raised after the fact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochLimits {
    /// Most entries per evidence epoch.
    pub max_entries: u64,
    /// Longest epoch, ms.
    pub max_age_ms: u64,
}

/// The payload a batch signature covers: canonical CBOR
/// `[object_id, batch, first_seq, count, root, epoch_max_entries, epoch_max_age_ms]`.
pub fn batch_payload(
    object_id: &[u8; 16],
    batch: u64,
    first_seq: u64,
    count: u64,
    root: &[u8; 32],
    epoch: EpochLimits,
) -> Vec<u8> {
    canonical::encode(&Cbor::Array(vec![
        b(object_id),
        u(batch),
        u(first_seq),
        u(count),
        b(root),
        u(epoch.max_entries),
        u(epoch.max_age_ms),
    ]))
    .unwrap_or_default()
}
