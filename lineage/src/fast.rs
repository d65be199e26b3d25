//! The cheap integrity layer: hash chain, inclusion proofs and batch signatures, nothing else.
//!
//! [`verify_chain_and_signatures`] answers "is this the byte-exact, signed history its signers
//! wrote, in order, with nothing unsigned?" without building a CBOR value tree per entry. Its
//! cost is a few SHA-256 blocks per entry plus one ES256 verification per batch (a few hundred
//! tens of microseconds with `ring`), so batch size decides throughput: see
//! `benches/lineage.rs`. [`verify_chain_and_signatures_parallel`] spreads the signature
//! verifications over threads with the same result.
//!
//! It does **not** answer "should anyone believe those signers?": it does not appraise
//! evidence (no platform roots, no reference values, no report-data binding), does not replay
//! the state or re-validate mutations against the descriptor, and does not recompute trust
//! vectors, scores or the trust slope. [`crate::verify_lineage`] is the full check and remains
//! what the CLI uses; use this one to re-check an export already verified in full (after a
//! copy or a transfer), to index large stores, or as a first filter before the full check.
//!
//! What it does check, in order, item by item:
//! * the first item is a header (decoded with [`Item::read`]); no second header;
//! * evidence items: `id` is the SHA-256 of the evidence bytes, no duplicates, and every
//!   evidence item is referenced by some entry by the end;
//! * entries, parsed without building a CBOR value tree (a bounds-checked cursor over CBOR
//!   headers that accepts only definite-length, shortest-form headers, nothing trailing):
//!   the item is exactly `["entry", bstr, uint, uint, [bstr32...]]`, the entry is an
//!   18-element array with the types of [`LineageEntry`] (the mutation map is only checked
//!   to be well-formed: its canonical key order and its contents are the full verifier's
//!   business), its batch and index are the next ones, its object id is the header's, its
//!   seq continues from 0, its `prev` is the SHA-256 of the previous entry's exact bytes, its
//!   descriptor digest is the SHA-256 of the header's descriptor bytes, and its `evidence_id`
//!   names host-key evidence whose `public_key` hashes to its `host_key_id`, the epoch rules
//!   of the header hold (first use at `epoch_prev`, at most `epoch_max_entries` uses, age
//!   within `epoch_max_age_ms`), and its `entry_evidence`, if any, names unused entry
//!   evidence of the same time (its report data is not checked);
//! * batch items: in order, non-empty, every entry's audit path is exactly its path in the
//!   tree over the batch's leaves (equivalent to recomputing the root from each proof, short
//!   of a SHA-256 collision), one host per batch, a tagged COSE_Sign1 with ES256, its kid the
//!   entries' host key id, its payload `[object_id, batch, first_seq, count, root]`, and its
//!   signature by the public key of the evidence the batch's entries name;
//! * at the end: no entry left unsigned, at least one entry.
//!
//! A limit of the format, shared with the full check: the export has no end marker, so a
//! prefix cut right after a batch item is itself a valid, shorter lineage (compare
//! [`ChainSummary::head`] or [`ChainSummary::entries`] with what you expect). The header's
//! epoch limits are covered by every batch signature.

use std::collections::{BTreeSet, HashMap};

use crate::signer::Es256Key as VerifyingKey;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::entry::{EntryFormatError, LineageEntry, ENTRY_VERSION};
use crate::export::{batch_payload, EpochLimits, EvidencePurpose, Item};
use crate::merkle::leaf_hash;
use crate::signer::key_id;
use crate::verify::VerifyFailure;

/// What a chain-and-signatures check establishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// The object (hex).
    pub object_id: String,
    /// SHA-256 of the header's descriptor bytes (hex).
    pub descriptor_digest: String,
    /// Entries checked (all of them signed).
    pub entries: u64,
    /// Signed batches.
    pub batches: u64,
    /// Digest of the last entry: the chain head (hex).
    pub head: String,
    /// Host key ids that signed (hex).
    pub hosts: BTreeSet<String>,
}

// ---------------------------------------------------------------------------------------
// A minimal CBOR cursor.

type Parse<T> = Result<T, &'static str>;

const TRUNCATED: &str = "truncated CBOR";

/// A bounds-checked cursor over CBOR headers. Only definite lengths and shortest-form
/// arguments are accepted (the deterministic encoding of RFC 8949 §4.2.1).
#[derive(Debug, Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn take(&mut self, n: u64) -> Parse<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| TRUNCATED)?;
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Parse<u8> {
        let b = self.peek().ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    /// Major type and argument. Not for floats (major 7 with a 2-, 4- or 8-byte argument).
    fn head(&mut self) -> Parse<(u8, u64)> {
        let ib = self.byte()?;
        let major = ib >> 5;
        let (len, min) = match ib & 0x1f {
            ai @ 0..=23 => return Ok((major, u64::from(ai))),
            24 => (1, 24),
            25 => (2, 1 << 8),
            26 => (4, 1 << 16),
            27 => (8, 1 << 32),
            _ => return Err("indefinite-length or reserved CBOR header"),
        };
        let v = self
            .take(len)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if v < min {
            return Err("CBOR header not in shortest form");
        }
        Ok((major, v))
    }

    fn expect(&mut self, major: u8, what: &'static str) -> Parse<u64> {
        match self.head()? {
            (m, v) if m == major => Ok(v),
            _ => Err(what),
        }
    }

    fn uint(&mut self) -> Parse<u64> {
        self.expect(0, "not an unsigned integer")
    }

    fn int(&mut self) -> Parse<i64> {
        match self.head()? {
            (0, v) => i64::try_from(v).map_err(|_| "not an i64"),
            (1, v) => i64::try_from(v).map(|v| -1 - v).map_err(|_| "not an i64"),
            _ => Err("not an integer"),
        }
    }

    fn bytes(&mut self) -> Parse<&'a [u8]> {
        let n = self.expect(2, "not a byte string")?;
        self.take(n)
    }

    fn fixed<const N: usize>(&mut self) -> Parse<[u8; N]> {
        self.bytes()?
            .try_into()
            .map_err(|_| "byte string of the wrong length")
    }

    fn text(&mut self) -> Parse<&'a str> {
        let n = self.expect(3, "not a text string")?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "text is not UTF-8")
    }

    fn array(&mut self) -> Parse<u64> {
        self.expect(4, "not an array")
    }

    /// Consumes a `null` if there is one.
    fn null(&mut self) -> bool {
        if self.peek() == Some(0xf6) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips one well-formed data item (iteratively: no recursion, whatever the nesting).
    fn skip(&mut self) -> Parse<()> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let ib = self.peek().ok_or(TRUNCATED)?;
            if ib >> 5 == 7 {
                self.pos += 1;
                match ib & 0x1f {
                    0..=23 => {}
                    24 => {
                        if self.byte()? < 32 {
                            return Err("CBOR simple value not in shortest form");
                        }
                    }
                    25 => drop(self.take(2)?),
                    26 => drop(self.take(4)?),
                    27 => drop(self.take(8)?),
                    _ => return Err("indefinite-length or reserved CBOR header"),
                }
                continue;
            }
            let (major, v) = self.head()?;
            match major {
                0 | 1 => {}
                2 => drop(self.take(v)?),
                3 => drop(std::str::from_utf8(self.take(v)?).map_err(|_| "text is not UTF-8")?),
                4 => pending = pending.checked_add(v).ok_or(TRUNCATED)?,
                5 => {
                    pending = v
                        .checked_mul(2)
                        .and_then(|n| pending.checked_add(n))
                        .ok_or(TRUNCATED)?
                }
                _ => pending = pending.checked_add(1).ok_or(TRUNCATED)?, // a tag: its content
            }
            // Every pending item takes at least one byte.
            if pending > self.remaining() as u64 {
                return Err(TRUNCATED);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Entries without a value tree.

/// A lineage entry parsed in place: the same fields as [`LineageEntry`], borrowing its text
/// and mutation from the entry bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The object.
    pub object_id: [u8; 16],
    /// Position in the lineage.
    pub seq: u64,
    /// Digest of the previous entry.
    pub prev: [u8; 32],
    /// The entry point.
    pub kind: &'a str,
    /// How it ended.
    pub outcome: &'a str,
    /// Why it was rejected or faulted.
    pub reason: Option<&'a str>,
    /// Digest of the recorded inputs.
    pub inputs_digest: [u8; 32],
    /// State digest before.
    pub state_before: [u8; 32],
    /// State digest after.
    pub state_after: [u8; 32],
    /// The mutation map's bytes (well-formed CBOR map; canonical order not checked here).
    pub mutation: &'a [u8],
    /// Digest of the descriptor in force.
    pub descriptor_digest: [u8; 32],
    /// Key id of the host that signed it.
    pub host_key_id: [u8; 32],
    /// The evidence that binds that key.
    pub evidence_id: [u8; 32],
    /// Tier codes.
    pub trust_vector: [u8; 8],
    /// Trust score.
    pub score: u8,
    /// Entry-bound evidence.
    pub entry_evidence: Option<[u8; 32]>,
    /// When the host appended it (ms since the epoch).
    pub timestamp_ms: i64,
}

fn fe(field: &'static str) -> impl Fn(&'static str) -> EntryFormatError {
    move |reason| EntryFormatError {
        field,
        reason: reason.to_string(),
    }
}

/// One use of host-key evidence by an entry, as both verifiers track it.
#[derive(Debug)]
pub struct EpochUse<'u> {
    /// What the evidence is for.
    pub purpose: EvidencePurpose,
    /// Key id of the public key it binds.
    pub key_id: [u8; 32],
    /// Chain head when its epoch began.
    pub epoch_prev: [u8; 32],
    /// When it was produced.
    pub issued_at_ms: i64,
    /// Entries that used it so far (incremented here).
    pub uses: &'u mut u64,
}

/// The epoch checks both verifiers make: host-key evidence, for this key, first used at the
/// chain head it was produced for, within the epoch's entry count and age.
pub fn check_epoch_use(
    entry: &EntryRef<'_>,
    ev: &mut EpochUse<'_>,
    limits: EpochLimits,
) -> Result<(), (&'static str, String)> {
    if ev.purpose != EvidencePurpose::HostKey {
        return Err((
            "evidence_id",
            "names entry evidence, not host-key evidence".into(),
        ));
    }
    if ev.key_id != entry.host_key_id {
        return Err(("host_key_id", "the evidence binds a different key".into()));
    }
    if *ev.uses == 0 && entry.prev != ev.epoch_prev {
        return Err((
            "evidence_id",
            "evidence was produced for another point of the lineage (stale or replayed)".into(),
        ));
    }
    *ev.uses += 1;
    if *ev.uses > limits.max_entries {
        return Err((
            "evidence_id",
            format!(
                "epoch exceeded {} entries without fresh evidence",
                limits.max_entries
            ),
        ));
    }
    let age = entry.timestamp_ms.saturating_sub(ev.issued_at_ms);
    if age < 0 || age.unsigned_abs() > limits.max_age_ms {
        return Err((
            "timestamp_ms",
            format!(
                "{age} ms after its evidence; the epoch allows 0..={}",
                limits.max_age_ms
            ),
        ));
    }
    Ok(())
}

/// Where an entry must sit: what the previous items established.
#[derive(Debug)]
pub struct ChainPosition<'p> {
    /// Batch number the item claims.
    pub batch: u64,
    /// Leaf index the item claims.
    pub index: u64,
    /// The open batch.
    pub expected_batch: u64,
    /// Entries already in the open batch.
    pub expected_index: u64,
    /// The lineage's object.
    pub object_id: &'p [u8; 16],
    /// The next sequence number.
    pub next_seq: u64,
    /// Digest of the previous entry.
    pub prev: &'p [u8; 32],
    /// Digest of the header's descriptor.
    pub descriptor_digest: &'p [u8; 32],
}

impl EntryRef<'_> {
    /// The link checks both verifiers make, in this order: placement in the open batch,
    /// object, sequence, previous digest, descriptor. Returns the failing field and why.
    pub fn check_link(&self, at: &ChainPosition<'_>) -> Result<(), (&'static str, String)> {
        if at.batch != at.expected_batch || at.index != at.expected_index {
            return Err((
                "batch",
                format!(
                    "entry placed at batch {} index {}, expected batch {} index {}",
                    at.batch, at.index, at.expected_batch, at.expected_index
                ),
            ));
        }
        if &self.object_id != at.object_id {
            return Err((
                "object_id",
                format!(
                    "belongs to object {}, not {}",
                    hex::encode(self.object_id),
                    hex::encode(at.object_id)
                ),
            ));
        }
        if self.seq != at.next_seq {
            return Err((
                "seq",
                format!(
                    "expected {}: an entry is missing, duplicated, reordered or forked",
                    at.next_seq
                ),
            ));
        }
        if &self.prev != at.prev {
            return Err((
                "prev",
                "does not match the digest of the previous entry (chain broken)".into(),
            ));
        }
        if &self.descriptor_digest != at.descriptor_digest {
            return Err((
                "descriptor_digest",
                "not the descriptor the lineage carries".into(),
            ));
        }
        Ok(())
    }
}

impl<'a> EntryRef<'a> {
    /// Parses an entry's encoding: an 18-element array, shortest-form definite-length headers
    /// throughout, the types and ranges [`LineageEntry::decode`] accepts, nothing trailing.
    /// Unlike [`LineageEntry::decode`], the mutation map is only checked to be well-formed
    /// CBOR (decode it with `sojourn_policy::canonical::decode` for the canonical check).
    pub fn parse(bytes: &'a [u8]) -> Result<EntryRef<'a>, EntryFormatError> {
        let mut c = Cursor::new(bytes);
        let n = c.array().map_err(fe("(entry)"))?;
        if n != 18 {
            return Err(EntryFormatError {
                field: "(entry)",
                reason: format!("{n} elements, expected 18"),
            });
        }
        if c.uint().map_err(fe("version"))? != ENTRY_VERSION {
            return Err(fe("version")("entry format 1 expected"));
        }
        let object_id = c.fixed().map_err(fe("object_id"))?;
        let seq = c.uint().map_err(fe("seq"))?;
        let prev = c.fixed().map_err(fe("prev"))?;
        let kind = c.text().map_err(fe("kind"))?;
        let outcome = c.text().map_err(fe("outcome"))?;
        let reason = if c.null() {
            None
        } else {
            Some(c.text().map_err(fe("reason"))?)
        };
        let inputs_digest = c.fixed().map_err(fe("inputs_digest"))?;
        let state_before = c.fixed().map_err(fe("state_before"))?;
        let state_after = c.fixed().map_err(fe("state_after"))?;
        let start = c.pos;
        if c.peek().map(|b| b >> 5) != Some(5) {
            return Err(fe("mutation")("a map"));
        }
        c.skip().map_err(fe("mutation"))?;
        let mutation = bytes
            .get(start..c.pos)
            .ok_or(TRUNCATED)
            .map_err(fe("mutation"))?;
        let descriptor_digest = c.fixed().map_err(fe("descriptor_digest"))?;
        let host_key_id = c.fixed().map_err(fe("host_key_id"))?;
        let evidence_id = c.fixed().map_err(fe("evidence_id"))?;
        if c.array().map_err(fe("trust_vector"))? != 8 {
            return Err(fe("trust_vector")("8 tier codes"));
        }
        let mut trust_vector = [0u8; 8];
        for t in &mut trust_vector {
            *t = c
                .uint()
                .ok()
                .and_then(|t| u8::try_from(t).ok())
                .filter(|t| *t <= 3)
                .ok_or("tier codes 0..=3")
                .map_err(fe("trust_vector"))?;
        }
        let score = c
            .uint()
            .ok()
            .and_then(|s| u8::try_from(s).ok())
            .filter(|s| *s <= 100)
            .ok_or("0..=100")
            .map_err(fe("score"))?;
        let entry_evidence = if c.null() {
            None
        } else {
            Some(c.fixed().map_err(fe("entry_evidence"))?)
        };
        let timestamp_ms = c.int().map_err(fe("timestamp_ms"))?;
        if c.remaining() != 0 {
            return Err(fe("(entry)")("trailing bytes after the entry"));
        }
        Ok(EntryRef {
            object_id,
            seq,
            prev,
            kind,
            outcome,
            reason,
            inputs_digest,
            state_before,
            state_after,
            mutation,
            descriptor_digest,
            host_key_id,
            evidence_id,
            trust_vector,
            score,
            entry_evidence,
            timestamp_ms,
        })
    }

    /// The owned entry.
    pub fn to_entry(&self) -> LineageEntry {
        LineageEntry {
            object_id: self.object_id,
            seq: self.seq,
            prev: self.prev,
            kind: self.kind.to_string(),
            outcome: self.outcome.to_string(),
            reason: self.reason.map(str::to_string),
            inputs_digest: self.inputs_digest,
            state_before: self.state_before,
            state_after: self.state_after,
            mutation: self.mutation.to_vec(),
            descriptor_digest: self.descriptor_digest,
            host_key_id: self.host_key_id,
            evidence_id: self.evidence_id,
            trust_vector: self.trust_vector,
            score: self.score,
            entry_evidence: self.entry_evidence,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Items.

/// `[` (5 elements) `"entry"`: how every entry item starts.
const ENTRY_PREFIX: [u8; 7] = [0x85, 0x65, b'e', b'n', b't', b'r', b'y'];
/// Header of a 32-byte byte string.
const BSTR32: [u8; 2] = [0x58, 0x20];

/// An entry item, borrowed from the export.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryItem<'a> {
    pub bytes: &'a [u8],
    pub batch: u64,
    pub index: u64,
    /// The audit path elements, each `58 20` + 32 bytes (checked).
    path: &'a [u8],
}

impl EntryItem<'_> {
    pub fn path(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.path
            .chunks_exact(34)
            .filter_map(|c| c.get(2..).and_then(|h| <[u8; 32]>::try_from(h).ok()))
    }
}

/// An item of the export: entries borrowed and parsed in place, the rest via [`Item::read`].
#[derive(Debug)]
pub(crate) enum ItemRef<'a> {
    Entry(EntryItem<'a>),
    Other(Item),
}

fn read_entry_item(input: &[u8]) -> Parse<(EntryItem<'_>, usize)> {
    let mut c = Cursor {
        buf: input,
        pos: ENTRY_PREFIX.len(),
    };
    let bytes = c.bytes()?;
    let batch = c.uint()?;
    let index = c.uint()?;
    let n = c.array()?;
    let path = c.take(n.checked_mul(34).ok_or(TRUNCATED)?)?;
    if !path.chunks_exact(34).all(|e| e.starts_with(&BSTR32)) {
        return Err("audit path elements must be 32-byte strings");
    }
    Ok((
        EntryItem {
            bytes,
            batch,
            index,
            path,
        },
        c.pos,
    ))
}

/// Reads the next item, advancing `input`. `Ok(None)` at the end.
pub(crate) fn next_item<'a>(input: &mut &'a [u8]) -> Result<Option<ItemRef<'a>>, String> {
    if input.is_empty() {
        return Ok(None);
    }
    if input.starts_with(&ENTRY_PREFIX) {
        let (item, used) =
            read_entry_item(input).map_err(|r| format!("malformed entry item: {r}"))?;
        *input = input.get(used..).unwrap_or_default();
        return Ok(Some(ItemRef::Entry(item)));
    }
    match Item::read(input) {
        // Its canonical encoding starts with ENTRY_PREFIX: it cannot get here.
        Ok(Some(Item::Entry { .. })) => Err("entry item not in deterministic CBOR".into()),
        Ok(i) => Ok(i.map(ItemRef::Other)),
        Err(e) => Err(e.0),
    }
}

// ---------------------------------------------------------------------------------------
// Batches.

/// An entry waiting for its batch signature.
#[derive(Debug, Clone)]
pub(crate) struct OpenEntry {
    pub digest: [u8; 32],
    pub seq: u64,
    pub host_key_id: [u8; 32],
    pub evidence_id: [u8; 32],
    path: std::ops::Range<usize>,
}

/// The entries of the batch being read, their audit paths, and scratch space for its tree.
#[derive(Debug, Default)]
pub(crate) struct OpenBatch {
    pub entries: Vec<OpenEntry>,
    paths: Vec<[u8; 32]>,
    nodes: Vec<[u8; 32]>,
    levels: Vec<(usize, usize)>,
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}

impl OpenBatch {
    pub fn push(
        &mut self,
        digest: [u8; 32],
        seq: u64,
        host_key_id: [u8; 32],
        evidence_id: [u8; 32],
        path: impl Iterator<Item = [u8; 32]>,
    ) {
        let start = self.paths.len();
        self.paths.extend(path);
        self.entries.push(OpenEntry {
            digest,
            seq,
            host_key_id,
            evidence_id,
            path: start..self.paths.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.paths.clear();
    }

    /// The Merkle root over the entries (as [`crate::merkle::root_and_proofs`] computes it),
    /// having checked that every entry's audit path is exactly its path in that tree, which
    /// is what [`crate::merkle::root_from_proof`] accepting it means (short of a SHA-256
    /// collision) at a fraction of the hashing. `Err(seq)`: that entry's path is wrong.
    pub fn root_checked(&mut self) -> Result<[u8; 32], u64> {
        self.nodes.clear();
        self.levels.clear();
        self.nodes
            .extend(self.entries.iter().map(|e| leaf_hash(&e.digest)));
        let (mut start, mut len) = (0usize, self.nodes.len());
        while len > 1 {
            self.levels.push((start, len));
            for i in (start..start + len).step_by(2) {
                let h = match (self.nodes.get(i), self.nodes.get(i + 1)) {
                    (Some(l), Some(r)) if i + 1 < start + len => node_hash(l, r),
                    (Some(one), _) => *one,
                    _ => break,
                };
                self.nodes.push(h);
            }
            start += len;
            len = len.div_ceil(2);
        }
        let root = self.nodes.get(start).copied().unwrap_or([0; 32]);
        for (k, e) in self.entries.iter().enumerate() {
            let given = self.paths.get(e.path.clone()).unwrap_or_default();
            let mut given = given.iter();
            let mut pos = k;
            for &(start, len) in &self.levels {
                let sibling = pos ^ 1;
                if sibling < len && given.next() != self.nodes.get(start + sibling) {
                    return Err(e.seq);
                }
                pos /= 2;
            }
            if given.next().is_some() {
                return Err(e.seq);
            }
        }
        Ok(root)
    }
}

/// Checks a batch's COSE_Sign1: ES256, kid, payload, then the signature with `verify`.
/// `Err((field, reason))`.
pub(crate) fn check_batch_signature(
    cose: &[u8],
    kid: &[u8; 32],
    payload: &[u8],
    verify: impl FnOnce(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), (&'static str, String)> {
    let sign1 = <coset::CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(cose)
        .map_err(|e| ("cose", format!("not a tagged COSE_Sign1: {e}")))?;
    if sign1.protected.header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            coset::iana::Algorithm::ES256,
        ))
    {
        return Err(("cose.alg", "only ES256 is accepted".into()));
    }
    if sign1.protected.header.key_id.as_slice() != kid.as_slice() {
        return Err(("cose.kid", "does not name the entries' host key".into()));
    }
    if sign1.payload.as_deref() != Some(payload) {
        return Err((
            "cose.payload",
            "does not commit to these entries (root, range or object)".into(),
        ));
    }
    sign1
        .verify_signature(&[], verify)
        .map_err(|e| ("cose.signature", e))
}

// ---------------------------------------------------------------------------------------
// The check.

struct KeyEvidence {
    purpose: EvidencePurpose,
    public_key: Vec<u8>,
    key_id: [u8; 32],
    epoch_prev: [u8; 32],
    issued_at_ms: i64,
    uses: u64,
    // Parsed on first use by a batch.
    key: Option<VerifyingKey>,
}

fn fail(item: usize, seq: Option<u64>, field: &str, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure {
        item,
        seq,
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn es256(key: Option<VerifyingKey>, data: &[u8], sig: &[u8]) -> Result<(), String> {
    let key = key.ok_or_else(|| "not a P-256 public key".to_string())?;
    key.verify(data, sig)
}

/// A batch signature left for the pool: everything else about the batch was checked inline.
struct SigJob {
    item: usize,
    key: Option<VerifyingKey>,
    tbs: Vec<u8>,
    sig: Vec<u8>,
}

#[derive(Default)]
struct PoolState {
    jobs: std::collections::VecDeque<SigJob>,
    closed: bool,
    /// (item, reason) of every signature that did not verify.
    failures: Vec<(usize, String)>,
}

/// Signature checks shared by the parsing thread and the workers.
struct Pool {
    state: std::sync::Mutex<PoolState>,
    ready: std::sync::Condvar,
    /// Lowest item whose signature failed (`usize::MAX`: none yet).
    first_failure: std::sync::atomic::AtomicUsize,
    /// Queue length above which the parsing thread verifies a signature itself.
    backlog: usize,
}

impl Pool {
    fn new(backlog: usize) -> Pool {
        Pool {
            state: std::sync::Mutex::new(PoolState::default()),
            ready: std::sync::Condvar::new(),
            first_failure: std::sync::atomic::AtomicUsize::new(usize::MAX),
            backlog,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run(&self, job: SigJob) {
        if let Err(reason) = es256(job.key, &job.tbs, &job.sig) {
            self.first_failure
                .fetch_min(job.item, std::sync::atomic::Ordering::Relaxed);
            self.lock().failures.push((job.item, reason));
        }
    }

    fn submit(&self, job: SigJob) {
        let mut st = self.lock();
        st.jobs.push_back(job);
        let own = if st.jobs.len() > self.backlog {
            st.jobs.pop_front()
        } else {
            None
        };
        drop(st);
        self.ready.notify_one();
        if let Some(job) = own {
            self.run(job);
        }
    }

    fn failed_before(&self, item: usize) -> bool {
        self.first_failure
            .load(std::sync::atomic::Ordering::Relaxed)
            <= item
    }

    /// Worker loop: verify until closed and drained.
    fn work(&self) {
        loop {
            let mut st = self.lock();
            let job = loop {
                if let Some(job) = st.jobs.pop_front() {
                    break Some(job);
                }
                if st.closed {
                    break None;
                }
                st = self
                    .ready
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            };
            drop(st);
            match job {
                Some(job) => self.run(job),
                None => return,
            }
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Checks the hash chain, the inclusion proofs and the batch signatures of an export, and
/// nothing that needs the evidence to be believed: see the [module documentation](self) for
/// exactly what is and is not checked. One thread; never panics; the first failure is
/// reported as [`crate::verify_lineage`] reports it (item index, entry seq, field, reason).
pub fn verify_chain_and_signatures(bytes: &[u8]) -> Result<ChainSummary, VerifyFailure> {
    check(bytes, None)
}

/// [`verify_chain_and_signatures`] with the batch signatures (the bulk of the work unless
/// batches are large) verified on up to `threads` threads, this one included. The result,
/// success or first failure, is exactly the single-threaded one. `threads <= 1`, or threads
/// that cannot be spawned, fall back to fewer threads.
pub fn verify_chain_and_signatures_parallel(
    bytes: &[u8],
    threads: usize,
) -> Result<ChainSummary, VerifyFailure> {
    if threads <= 1 {
        return check(bytes, None);
    }
    let pool = Pool::new(threads);
    let result = std::thread::scope(|s| {
        for _ in 1..threads {
            if std::thread::Builder::new()
                .spawn_scoped(s, || pool.work())
                .is_err()
            {
                break;
            }
        }
        let r = check(bytes, Some(&pool));
        pool.close();
        pool.work(); // help drain the queue
        r
    });
    let first_bad_signature = pool
        .lock()
        .failures
        .iter()
        .min_by_key(|(item, _)| *item)
        .cloned();
    match (result, first_bad_signature) {
        (Err(e), Some((item, _))) if e.item < item => Err(e),
        (_, Some((item, reason))) => Err(fail(item, None, "cose.signature", reason)),
        (r, None) => r,
    }
}

fn check(bytes: &[u8], pool: Option<&Pool>) -> Result<ChainSummary, VerifyFailure> {
    let mut input = bytes;
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
            "the export does not start with a lineage header",
        ));
    };
    let descriptor_digest: [u8; 32] = Sha256::digest(&descriptor).into();

    let mut evidence: Vec<KeyEvidence> = Vec::new();
    let mut by_id: HashMap<[u8; 32], usize> = HashMap::new();
    // The evidence the previous entry named (entries of an epoch share it).
    let mut last_ev: Option<([u8; 32], usize)> = None;
    let mut prev = [0u8; 32];
    let mut next_seq = 0u64;
    let mut batch_no = 0u64;
    let mut open = OpenBatch::default();
    let mut hosts: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut item_no = 0usize;

    loop {
        item_no += 1;
        let item = match next_item(&mut input) {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(e) => return Err(fail(item_no, None, "item", e)),
        };
        match item {
            ItemRef::Other(Item::Header { .. }) => {
                return Err(fail(item_no, None, "header", "a second header"));
            }
            ItemRef::Other(Item::Entry { .. }) => {
                return Err(fail(item_no, None, "item", "entry item not canonical"));
            }
            ItemRef::Other(Item::Evidence {
                id,
                evidence: ev,
                purpose,
                public_key,
                epoch_prev,
                issued_at_ms,
            }) => {
                if <[u8; 32]>::from(Sha256::digest(&ev)) != id {
                    return Err(fail(
                        item_no,
                        None,
                        "evidence.id",
                        "does not match the evidence's SHA-256",
                    ));
                }
                if by_id.insert(id, evidence.len()).is_some() {
                    return Err(fail(item_no, None, "evidence.id", "duplicate evidence"));
                }
                evidence.push(KeyEvidence {
                    purpose,
                    key_id: key_id(&public_key),
                    public_key,
                    epoch_prev,
                    issued_at_ms,
                    uses: 0,
                    key: None,
                });
            }
            ItemRef::Entry(item) => {
                let entry = EntryRef::parse(item.bytes)
                    .map_err(|e| fail(item_no, Some(next_seq), e.field, e.reason))?;
                let seq = Some(entry.seq);
                let f = |field: &str, reason: String| fail(item_no, seq, field, reason);
                entry
                    .check_link(&ChainPosition {
                        batch: item.batch,
                        index: item.index,
                        expected_batch: batch_no,
                        expected_index: open.len() as u64,
                        object_id: &object_id,
                        next_seq,
                        prev: &prev,
                        descriptor_digest: &descriptor_digest,
                    })
                    .map_err(|(field, reason)| f(field, reason))?;
                let at = match last_ev {
                    Some((id, at)) if id == entry.evidence_id => Some(at),
                    _ => by_id.get(&entry.evidence_id).copied(),
                };
                let ev = at.and_then(|at| evidence.get_mut(at)).ok_or_else(|| {
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
                last_ev = at.map(|at| (entry.evidence_id, at));
                if let Some(id) = entry.entry_evidence {
                    let ev = by_id
                        .get(&id)
                        .and_then(|at| evidence.get_mut(*at))
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
                }
                let digest: [u8; 32] = Sha256::digest(item.bytes).into();
                open.push(
                    digest,
                    entry.seq,
                    entry.host_key_id,
                    entry.evidence_id,
                    item.path(),
                );
                prev = digest;
                next_seq += 1;
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
                        "does not lead to the batch root",
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
                        "a batch holds entries of two hosts",
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
                // The entries checked that this evidence exists and binds `host_key_id`.
                let ev = by_id
                    .get(&first.evidence_id)
                    .and_then(|at| evidence.get_mut(*at));
                let key = match ev {
                    Some(KeyEvidence { key: Some(k), .. }) => Some(k.clone()),
                    Some(ev) => {
                        ev.key = VerifyingKey::from_sec1_bytes(&ev.public_key).ok();
                        ev.key.clone()
                    }
                    None => None,
                };
                check_batch_signature(
                    &cose,
                    &first.host_key_id,
                    &payload,
                    |sig, data| match pool {
                        None => es256(key, data, sig),
                        Some(pool) => {
                            pool.submit(SigJob {
                                item: item_no,
                                key,
                                tbs: data.to_vec(),
                                sig: sig.to_vec(),
                            });
                            Ok(())
                        }
                    },
                )
                .map_err(|(field, reason)| f(field, reason))?;
                if pool.is_some_and(|p| p.failed_before(item_no)) {
                    // A signature already failed: that is the first failure; stop here.
                    return Err(f("(stopped)", String::new()));
                }
                hosts.insert(first.host_key_id);
                open.clear();
                batch_no += 1;
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
    if let Some(unused) = evidence.iter().find(|e| e.uses == 0) {
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
    if next_seq == 0 {
        return Err(fail(item_no, None, "entries", "the lineage has no entries"));
    }
    Ok(ChainSummary {
        object_id: hex::encode(object_id),
        descriptor_digest: hex::encode(descriptor_digest),
        entries: next_seq,
        batches: batch_no,
        head: hex::encode(prev),
        hosts: hosts.iter().map(hex::encode).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::root_and_proofs;

    #[test]
    fn the_tree_matches_merkle_rs_and_refuses_any_other_path() {
        let mut batch = OpenBatch::default();
        for n in 1..40usize {
            let digests: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
            let leaves: Vec<[u8; 32]> = digests.iter().map(leaf_hash).collect();
            let (root, proofs) = root_and_proofs(&leaves);
            batch.clear();
            for (i, d) in digests.iter().enumerate() {
                batch.push(*d, i as u64, [0; 32], [0; 32], proofs[i].iter().copied());
            }
            assert_eq!(batch.root_checked(), Ok(root), "n={n}");
            for bad in 0..n {
                batch.clear();
                for (i, d) in digests.iter().enumerate() {
                    let mut p = proofs[i].clone();
                    if i == bad {
                        match p.first_mut() {
                            Some(h) => h[0] ^= 1,
                            None => p.push([0; 32]),
                        }
                    }
                    batch.push(*d, i as u64, [0; 32], [0; 32], p.into_iter());
                }
                assert_eq!(batch.root_checked(), Err(bad as u64), "n={n} bad={bad}");
            }
        }
    }

    #[test]
    fn the_cursor_refuses_non_shortest_and_indefinite_headers() {
        assert_eq!(
            Cursor::new(&[0x18, 0x17]).uint(),
            Err("CBOR header not in shortest form")
        );
        assert_eq!(Cursor::new(&[0x18, 0x18]).uint(), Ok(24));
        assert_eq!(
            Cursor::new(&[0x19, 0x00, 0xff]).uint(),
            Err("CBOR header not in shortest form")
        );
        assert!(Cursor::new(&[0x5f, 0x41, 0x00, 0xff]).bytes().is_err());
        assert!(Cursor::new(&[0x9f, 0xff]).skip().is_err());
        assert!(Cursor::new(&[0x1b, 0, 0, 0]).uint().is_err());
        assert_eq!(
            Cursor::new(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).int(),
            Ok(i64::MIN)
        );
        assert!(Cursor::new(&[0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0])
            .int()
            .is_err());
        // A map claiming more entries than there are bytes.
        assert!(
            Cursor::new(&[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .skip()
                .is_err()
        );
        let mut c = Cursor::new(&[0xa1, 0x61, b'a', 0x82, 0xf6, 0xc1, 0x01, 0x00]);
        assert_eq!(c.skip(), Ok(()));
        assert_eq!(c.remaining(), 1);
    }
}
