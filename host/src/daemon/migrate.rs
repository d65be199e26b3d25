//! Attested migration, wired: the protocol machines of `sojourn_migration::protocol` driven
//! over a [`PeerLink`] (HTTPS between hosts in the daemon; in process in tests), with their
//! durable states in the object's head record.
//!
//! - **Source** ([`HostCore::migrate_to`]): quiesce, persist `Offering`, offer; appraise the
//!   destination's evidence against the object's own migration policy; on success persist
//!   `Sent` *together with the `migrated-out` lineage entry* (so the lineage that travels ends
//!   with it), seal the object to the destination's HPKE key and send it; on a signed `ack`
//!   the tombstone, on a signed `aborted` resume. A source in `Sent` never resumes on its own:
//!   a background resolver asks the destination (`status`) until it decides.
//! - **Destination** (the `migration_*` handlers): a fresh HPKE key and evidence per offer
//!   (report data = the offer binding: challenge, TLS exporter, HPKE key, runtime identity and
//!   the host's answer key); open and check the package; commit the object with its
//!   `migrated-in` entry and the attempt's `Received` record in one transaction before the
//!   signed `ack`.
//!
//! Durable records: the source's `Offering`/`Sent` live in the object's head (`moving`), the
//! tombstone is `transferred`, the destination's `Received` records are the object's
//! `arrivals`. The destination keeps `Aborted` in memory only: an abort matters only while
//! the attempt's HPKE private key exists, and that key lives in memory only, so a restarted
//! destination answers any package or status of an unknown attempt with `aborted` anyway
//! (docs/migration.md, "Durable states in the host").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ciborium::Value as Cbor;
use sha2::{Digest as _, Sha256};
use sojourn_api::{
    ApiError, DrainReport, DrainRequest, DrainStay, ErrorCode, MigrateRequest, MigrationAnswer,
    MigrationOffer, MigrationOfferAnswer, MigrationRefusalRequest, MigrationReport,
    MigrationStatusRequest, MigrationStep, PackageOrder, PackageParts,
};
use sojourn_attestation::{Evidence as AttEvidence, Timestamp};
use sojourn_lineage::signer::verify_es256;
use sojourn_lineage::{LineageSigner as _, P256Signer};
use sojourn_migration::package::{
    open_opened, open_owned_keeping, seal_streaming_in, seal_with, sealed_len, snapshot_offset,
    BundleHead, KeepBytes, OpenedBundle, PackageBytes, SegmentOpener, SendOrder, HEADER_LEN,
    SEGMENT,
};
use sojourn_migration::protocol::{
    AppraisalId, Challenge, DestEffect, DestState, Destination, DestinationEnv, Evidence,
    EvidenceId, HostId, KeyId, SourceEffect, SourceState, ToDest, ToSource, TransferId,
};
use sojourn_migration::{
    appraise_destination, fresh_attempt, DestinationKey, MigrationTicket, OfferBinding,
    RuntimeIdentity,
};
use sojourn_policy::canonical;
use sojourn_runtime::{Outcome, SnapshotMemory, SnapshotWriter};
use sojourn_store::{ImageRun, KeyedImage, KeyedImageWriter, CHUNK_SIZE};

use super::spool::{OpenerFactory, Spool, SpooledImage};
use super::{internal, lock, random32, read, sched, HostCore, ObjectKey, SchedMsg};

/// The claim of the offer binding's runtime identity that carries the host's answer key
/// (SEC1 P-256 public key, hex): `ack`/`aborted` answers are signed with it.
pub const ANSWER_KEY_CLAIM: &str = "answer-key";

/// Domain separation of the signed answers.
const ANSWER_CONTEXT: &[u8] = b"sojourn/migrate/answer/v1\0";

/// Offers not followed by a package within this time expire (the destination drops the key
/// and records the attempt aborted).
const OFFER_TTL: Duration = Duration::from_secs(600);

/// How often a package is sent before the source asks `status` instead.
const PACKAGE_TRIES: u32 = 3;

/// How often the resolver asks destinations about attempts in `Sent`.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(500);

/// A destination host as the source reaches it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// `https://HOST:PORT`.
    pub url: String,
    /// PEM of the CA its certificate chains to.
    pub ca_pem: String,
    /// A token with the `peer` or `admin` role there.
    pub token: String,
}

impl std::fmt::Debug for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAddress")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl From<MigrateRequest> for PeerAddress {
    fn from(r: MigrateRequest) -> PeerAddress {
        PeerAddress {
            url: r.to,
            ca_pem: r.ca_pem,
            token: r.token,
        }
    }
}

/// The source's connection to one destination: the four host-to-host messages. An `Err` is a
/// lost message (no answer); the protocol retries or gives up as its tables say.
pub trait PeerLink: Send + Sync {
    /// The destination's URL (named in the lineage and the reports).
    fn url(&self) -> &str;
    /// Sends an offer; returns the answer and this side's TLS exporter value of the
    /// connection that carried it (the channel the evidence must be bound to).
    fn offer(&self, offer: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String>;
    /// Sends the sealed package (shared, so that a retry sends the same bytes uncopied).
    fn package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Arc<Vec<u8>>,
    ) -> Result<MigrationAnswer, String>;
    /// The order in which [`PeerLink::package_parts`] takes a package's parts. The default,
    /// [`PackageOrder::Layout`], suits a link that joins them; the daemon's HTTPS link takes
    /// each segment's tag right after the segment, so that the destination opens each
    /// segment as it arrives.
    fn package_order(&self) -> PackageOrder {
        PackageOrder::Layout
    }
    /// Sends a package that is still being sealed, part by part as the parts come (see
    /// [`sojourn_api::PackageParts`]), in [`PeerLink::package_order`]. The default waits for
    /// the whole package and sends it with [`PeerLink::package`]; the daemon's HTTPS link
    /// streams it.
    fn package_parts(
        &self,
        transfer: &str,
        key: &str,
        parts: PackageParts,
    ) -> Result<MigrationAnswer, String> {
        let whole = parts.collect_blocking()?;
        self.package(transfer, key, Arc::new(whole))
    }
    /// Asks for a decision.
    fn status(&self, transfer: &str) -> Result<MigrationAnswer, String>;
    /// Tells the destination no package will come.
    fn refusal(&self, transfer: &str, reason: &str) -> Result<(), String>;
}

/// Makes the link to a destination (HTTPS in the daemon; tests pass their own).
pub type LinkFactory = Arc<dyn Fn(&PeerAddress) -> Result<Box<dyn PeerLink>, String> + Send + Sync>;

/// The daemon's link: the API client over TLS 1.3, one connection per message.
pub struct HttpLink {
    client: sojourn_api::Client,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLink")
            .field("url", &self.client.url())
            .finish()
    }
}

impl HttpLink {
    /// A link to `peer`.
    pub fn new(peer: &PeerAddress) -> Result<HttpLink, String> {
        let client = sojourn_api::Client::new(&peer.url, &peer.ca_pem, Some(peer.token.clone()))
            .map_err(|e| e.to_string())?
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(300));
        Ok(HttpLink { client })
    }

    /// The factory the daemon uses.
    pub fn factory() -> LinkFactory {
        Arc::new(|peer: &PeerAddress| HttpLink::new(peer).map(|l| Box::new(l) as Box<dyn PeerLink>))
    }

    /// Runs one client call on a private runtime in its own thread (callers are plain
    /// threads, possibly a runtime's blocking pool, where a nested runtime may not start).
    fn run<T: Send>(
        &self,
        call: impl std::future::Future<Output = Result<T, sojourn_api::ClientError>> + Send,
    ) -> Result<T, String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("runtime: {e}"))?;
                    rt.block_on(call).map_err(|e| e.to_string())
                })
                .join()
                .unwrap_or_else(|_| Err("the link thread failed".to_string()))
        })
    }
}

impl PeerLink for HttpLink {
    fn url(&self) -> &str {
        self.client.url()
    }
    fn offer(&self, offer: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String> {
        self.run(self.client.migration_offer(offer))
    }
    fn package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Arc<Vec<u8>>,
    ) -> Result<MigrationAnswer, String> {
        self.run(self.client.migration_package_shared(transfer, key, sealed))
    }
    fn package_order(&self) -> PackageOrder {
        PackageOrder::TagAfterSegment
    }
    fn package_parts(
        &self,
        transfer: &str,
        key: &str,
        parts: PackageParts,
    ) -> Result<MigrationAnswer, String> {
        self.run(self.client.migration_package_parts(transfer, key, parts))
    }
    fn status(&self, transfer: &str) -> Result<MigrationAnswer, String> {
        self.run(self.client.migration_status(&MigrationStatusRequest {
            transfer: transfer.to_string(),
        }))
    }
    fn refusal(&self, transfer: &str, reason: &str) -> Result<(), String> {
        self.run(self.client.migration_refusal(&MigrationRefusalRequest {
            transfer: transfer.to_string(),
            reason: reason.to_string(),
        }))
    }
}

/// Cores in one process reaching each other by URL, without TLS (tests, benches): each offer
/// gets a fresh random channel value, as each TLS connection has its own exporter.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    cores: Arc<std::sync::Mutex<HashMap<String, HostCore>>>,
}

impl std::fmt::Debug for LocalNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNetwork").finish_non_exhaustive()
    }
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    /// Makes `core` reachable as `url` (replacing an earlier core there, e.g. after a
    /// restart).
    pub fn register(&self, url: &str, core: &HostCore) {
        lock(&self.cores).insert(url.to_string(), core.clone());
    }

    /// Takes `url` off the network (its messages are lost).
    pub fn unregister(&self, url: &str) {
        lock(&self.cores).remove(url);
    }

    /// The link to `url`.
    pub fn link(&self, url: &str) -> LocalLink {
        LocalLink {
            net: self.clone(),
            url: url.to_string(),
        }
    }

    /// A [`LinkFactory`] over this network (for [`super::CoreOptions::links`]).
    pub fn factory(&self) -> LinkFactory {
        let net = self.clone();
        Arc::new(move |p: &PeerAddress| Ok(Box::new(net.link(&p.url)) as Box<dyn PeerLink>))
    }

    /// A peer address for `url` on this network (no CA or token needed).
    pub fn address(url: &str) -> PeerAddress {
        PeerAddress {
            url: url.to_string(),
            ca_pem: String::new(),
            token: String::new(),
        }
    }
}

/// One destination on a [`LocalNetwork`].
#[derive(Debug, Clone)]
pub struct LocalLink {
    net: LocalNetwork,
    url: String,
}

impl LocalLink {
    fn core(&self) -> Result<HostCore, String> {
        lock(&self.net.cores)
            .get(&self.url)
            .cloned()
            .ok_or_else(|| format!("{}: no such host (down)", self.url))
    }
}

impl PeerLink for LocalLink {
    fn url(&self) -> &str {
        &self.url
    }
    fn offer(&self, offer: &MigrationOffer) -> Result<(MigrationOfferAnswer, [u8; 32]), String> {
        let channel = random32()?;
        let a = self
            .core()?
            .on_offer(offer.clone(), channel)
            .map_err(|e| e.to_string())?;
        Ok((a, channel))
    }
    fn package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Arc<Vec<u8>>,
    ) -> Result<MigrationAnswer, String> {
        let sealed = Arc::try_unwrap(sealed).unwrap_or_else(|shared| shared.as_ref().clone());
        self.core()?
            .on_package(transfer, key, sealed.into(), None, None)
            .map_err(|e| e.to_string())
    }
    fn status(&self, transfer: &str) -> Result<MigrationAnswer, String> {
        self.core()?
            .on_status(MigrationStatusRequest {
                transfer: transfer.to_string(),
            })
            .map_err(|e| e.to_string())
    }
    fn refusal(&self, transfer: &str, reason: &str) -> Result<(), String> {
        self.core()?
            .on_refusal(MigrationRefusalRequest {
                transfer: transfer.to_string(),
                reason: reason.to_string(),
            })
            .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Durable records

/// The source's persisted state of an attempt in progress (in the object's head).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MoveState {
    /// Quiesced; offer sent; nothing sealed has left.
    Offering {
        transfer: TransferId,
        challenge: Challenge,
        dest: HostId,
        peer: PeerAddress,
    },
    /// The package may have left: only the destination's signed answer ends this.
    Sent {
        transfer: TransferId,
        dest: HostId,
        key: KeyId,
        appraisal: AppraisalId,
        peer: PeerAddress,
        /// The destination's answer key (SEC1), from its attested binding.
        answer_key: Vec<u8>,
    },
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_string())
}

impl MoveState {
    pub(crate) fn transfer(&self) -> TransferId {
        match self {
            MoveState::Offering { transfer, .. } | MoveState::Sent { transfer, .. } => *transfer,
        }
    }

    pub(crate) fn peer(&self) -> &PeerAddress {
        match self {
            MoveState::Offering { peer, .. } | MoveState::Sent { peer, .. } => peer,
        }
    }

    pub(crate) fn source_state(&self) -> SourceState {
        match self {
            MoveState::Offering {
                transfer,
                challenge,
                dest,
                ..
            } => SourceState::Offering {
                transfer: *transfer,
                challenge: *challenge,
                dest: *dest,
            },
            MoveState::Sent {
                transfer,
                dest,
                key,
                appraisal,
                ..
            } => SourceState::Sent {
                transfer: *transfer,
                dest: *dest,
                key: *key,
                appraisal: *appraisal,
            },
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let peer = self.peer();
        let mut m = vec![
            (text("transfer"), Cbor::Bytes(self.transfer().0.to_vec())),
            (text("url"), text(&peer.url)),
            (text("ca"), text(&peer.ca_pem)),
            (text("token"), text(&peer.token)),
        ];
        match self {
            MoveState::Offering {
                challenge, dest, ..
            } => {
                m.push((text("state"), text("offering")));
                m.push((text("challenge"), Cbor::Bytes(challenge.0.to_vec())));
                m.push((text("dest"), Cbor::Bytes(dest.0.to_vec())));
            }
            MoveState::Sent {
                dest,
                key,
                appraisal,
                answer_key,
                ..
            } => {
                m.push((text("state"), text("sent")));
                m.push((text("dest"), Cbor::Bytes(dest.0.to_vec())));
                m.push((text("key"), Cbor::Bytes(key.0.to_vec())));
                m.push((text("appraisal"), Cbor::Bytes(appraisal.0.to_vec())));
                m.push((text("answer_key"), Cbor::Bytes(answer_key.clone())));
            }
        }
        canonical::encode(&Cbor::Map(m)).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<MoveState, String> {
        let v = canonical::decode(bytes).map_err(|e| format!("migration state: {e}"))?;
        let Cbor::Map(m) = v else {
            return Err("migration state: not a map".into());
        };
        let get = |k: &str| {
            m.iter()
                .find(|(key, _)| matches!(key, Cbor::Text(s) if s == k))
                .map(|(_, v)| v)
                .ok_or_else(|| format!("migration state: `{k}` missing"))
        };
        let txt = |k: &str| match get(k)? {
            Cbor::Text(s) => Ok(s.clone()),
            _ => Err(format!("migration state: `{k}` is not text")),
        };
        let raw = |k: &str| match get(k)? {
            Cbor::Bytes(b) => Ok(b.clone()),
            _ => Err(format!("migration state: `{k}` is not bytes")),
        };
        fn fixed<const N: usize>(b: Vec<u8>, k: &str) -> Result<[u8; N], String> {
            <[u8; N]>::try_from(b.as_slice())
                .map_err(|_| format!("migration state: `{k}` has the wrong length"))
        }
        let transfer = TransferId(fixed(raw("transfer")?, "transfer")?);
        let peer = PeerAddress {
            url: txt("url")?,
            ca_pem: txt("ca")?,
            token: txt("token")?,
        };
        let dest = HostId(fixed(raw("dest")?, "dest")?);
        match txt("state")?.as_str() {
            "offering" => Ok(MoveState::Offering {
                transfer,
                challenge: Challenge(fixed(raw("challenge")?, "challenge")?),
                dest,
                peer,
            }),
            "sent" => Ok(MoveState::Sent {
                transfer,
                dest,
                key: KeyId(fixed(raw("key")?, "key")?),
                appraisal: AppraisalId(fixed(raw("appraisal")?, "appraisal")?),
                peer,
                answer_key: raw("answer_key")?,
            }),
            other => Err(format!("migration state: unknown state {other:?}")),
        }
    }
}

/// A destination's durable `Received` record: the attempt under which an object arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub(crate) transfer: TransferId,
    pub(crate) key: KeyId,
    pub(crate) evidence: EvidenceId,
}

const ARRIVAL_LEN: usize = 16 + 32 + 32;

impl Arrival {
    pub(crate) fn encode_all(all: &[Arrival]) -> Vec<u8> {
        let mut out = Vec::with_capacity(all.len() * ARRIVAL_LEN);
        for a in all {
            out.extend_from_slice(&a.transfer.0);
            out.extend_from_slice(&a.key.0);
            out.extend_from_slice(&a.evidence.0);
        }
        out
    }

    pub(crate) fn decode_all(bytes: &[u8]) -> Result<Vec<Arrival>, String> {
        if !bytes.len().is_multiple_of(ARRIVAL_LEN) {
            return Err("object head: `arrivals` has the wrong length".into());
        }
        bytes
            .chunks_exact(ARRIVAL_LEN)
            .map(|c| {
                let (t, rest) = c.split_at(16);
                let (k, e) = rest.split_at(32);
                Ok(Arrival {
                    transfer: TransferId(t.try_into().map_err(|_| "arrival")?),
                    key: KeyId(k.try_into().map_err(|_| "arrival")?),
                    evidence: EvidenceId(e.try_into().map_err(|_| "arrival")?),
                })
            })
            .collect::<Result<Vec<_>, &str>>()
            .map_err(str::to_string)
    }
}

// ---------------------------------------------------------------------------------------------
// Signed answers

fn answer_bytes(transfer: &TransferId, outcome: &str, reason: Option<&str>) -> Vec<u8> {
    let mut m = ANSWER_CONTEXT.to_vec();
    m.extend_from_slice(&transfer.0);
    m.extend_from_slice(outcome.as_bytes());
    m.push(0);
    m.extend_from_slice(reason.unwrap_or("").as_bytes());
    m
}

fn sign_answer(signer: &P256Signer, msg: &ToSource) -> Option<MigrationAnswer> {
    let (transfer, outcome, reason) = match msg {
        ToSource::Ack { transfer } => (*transfer, "ack", None),
        ToSource::Aborted { transfer, reason } => (*transfer, "aborted", Some(reason.clone())),
        ToSource::Evidence(_) => return None,
    };
    let sig = signer.sign(&answer_bytes(&transfer, outcome, reason.as_deref()));
    Some(MigrationAnswer {
        transfer: hex::encode(transfer.0),
        outcome: outcome.to_string(),
        reason,
        signature_base64: base64::engine::general_purpose::STANDARD.encode(sig),
    })
}

/// Checks a destination's answer against its attested answer key; `None` if it is not a
/// valid answer for `transfer` (a forged or garbled answer is treated as lost).
fn verified_answer(
    answer: &MigrationAnswer,
    transfer: &TransferId,
    answer_key: &[u8],
) -> Option<ToSource> {
    if answer.transfer != hex::encode(transfer.0) {
        return None;
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(answer.signature_base64.as_bytes())
        .ok()?;
    let msg = answer_bytes(transfer, &answer.outcome, answer.reason.as_deref());
    verify_es256(answer_key, &msg, &sig).ok()?;
    match answer.outcome.as_str() {
        "ack" if answer.reason.is_none() => Some(ToSource::Ack {
            transfer: *transfer,
        }),
        "aborted" => Some(ToSource::Aborted {
            transfer: *transfer,
            reason: answer.reason.clone().unwrap_or_default(),
        }),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], ApiError> {
    hex::decode(s.trim())
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{what}: expected {} hex characters", N * 2),
            )
        })
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The identity of the policy-enforcing build the destination's evidence commits to: a digest
/// of this runtime's name, version and protocol version. The executable itself is covered by
/// the platform's measurement of the image it runs in (vm-images/, reference values), which
/// the object's policy pins.
fn engine_digest() -> [u8; 32] {
    sha256(
        format!(
            "sojourn-runtime/{}/migration-protocol-{}",
            env!("CARGO_PKG_VERSION"),
            sojourn_migration::protocol::PROTOCOL_VERSION
        )
        .as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Destination side

struct Offer {
    /// Shared with the spool of the package's request, which opens its segments as they
    /// arrive ([`HostCore::package_spool`]).
    key: Arc<DestinationKey>,
    binding: OfferBinding,
    evidence: Vec<u8>,
    at: Instant,
}

/// The destination's machine and the attempts it holds keys for.
#[derive(Default)]
pub(crate) struct DestSide {
    machine: Destination,
    offers: HashMap<TransferId, Offer>,
}

impl DestSide {
    /// Rebuilt after a restart from the durable `Received` records (the arrivals of every
    /// object here); `Offered` attempts died with the process.
    pub(crate) fn restored(arrivals: impl IntoIterator<Item = Arrival>) -> DestSide {
        let persisted: BTreeMap<TransferId, DestState> = arrivals
            .into_iter()
            .map(|a| {
                (
                    a.transfer,
                    DestState::Received {
                        key: a.key,
                        evidence: a.evidence,
                    },
                )
            })
            .collect();
        // StartRunning for each Received: those objects are already restored and scheduled
        // by their own (source) state.
        let (machine, _start) = Destination::on_restart(persisted);
        DestSide {
            machine,
            offers: HashMap::new(),
        }
    }
}

/// What the destination's machine needs from the host for one message.
struct Env<'a> {
    core: &'a HostCore,
    offers: &'a mut HashMap<TransferId, Offer>,
    object: Option<[u8; 16]>,
    channel: Option<[u8; 32]>,
    source: &'a str,
    sealed: Option<PackageBytes>,
    /// The package's image file, written while it arrived (HTTP arrivals).
    spooled: Option<SpooledImage>,
    /// The package's segments, opened as they arrived (an HTTP arrival in the order with
    /// each tag after its segment), or why they did not open.
    opened: Option<Result<SegmentOpener, String>>,
    prepared: Option<super::Prepared>,
}

/// A package as it reached the destination, for [`HostCore::dest_step`].
struct ArrivedPackage {
    sealed: PackageBytes,
    /// Its image file, written while it arrived (HTTP arrivals).
    spooled: Option<SpooledImage>,
    /// Its segments, opened as they arrived, or why they did not open.
    opened: Option<Result<SegmentOpener, String>>,
}

/// Where an arrival's package is kept as its memory image: a file written while it arrived
/// (an HTTP arrival, see [`super::spool`]), or one written here as it is opened.
enum Kept {
    Spooled(SpooledImage),
    Writer(KeyedImageWriter),
}

/// The keyed image of an opened package: its key and the segments' associated data, and where
/// each of the snapshot's memory chunks is in the bundle, as runs of evenly spaced chunks.
/// `None` if a chunk is not in the bundle's bytes (a snapshot read the general way).
/// `pad`: bytes before the package in the file.
fn keyed_image(
    bundle: &OpenedBundle,
    memory: &SnapshotMemory<'_>,
    pad: usize,
) -> Option<KeyedImage> {
    const CHUNK: u64 = CHUNK_SIZE as u64;
    let plain = bundle.plaintext();
    let base = plain.as_ptr().addr();
    let mut runs: Vec<ImageRun> = Vec::new();
    for (at, bytes) in memory.chunks_in_snapshot()? {
        let offset = bytes.as_ptr().addr().checked_sub(base)?;
        if bytes.len() != CHUNK_SIZE || offset.checked_add(bytes.len())? > plain.len() {
            return None;
        }
        let (offset, at) = (offset as u64, at as u64);
        if let Some(r) = runs.last_mut() {
            let follows = at == r.memory + u64::from(r.count) * CHUNK && r.count < u32::MAX;
            if follows && r.count == 1 && offset >= r.plain + CHUNK {
                r.stride = offset - r.plain;
                r.count = 2;
                continue;
            }
            if follows && r.count > 1 && offset == r.plain + u64::from(r.count) * r.stride {
                r.count += 1;
                continue;
            }
        }
        runs.push(ImageRun {
            plain: offset,
            stride: CHUNK,
            memory: at,
            count: 1,
        });
    }
    let opening = bundle.opening();
    Some(KeyedImage {
        key: opening.key.clone(),
        aad: opening.aad.clone(),
        skip: (pad + HEADER_LEN) as u64,
        plaintext_len: opening.plaintext_len as u64,
        segment: SEGMENT as u32,
        runs,
    })
}

impl DestinationEnv for Env<'_> {
    fn attest(&mut self, transfer: TransferId, challenge: &Challenge) -> Result<Evidence, String> {
        let (Some(object), Some(channel)) = (self.object, self.channel) else {
            return Err("no offer context".into());
        };
        self.core.check_running().map_err(|e| e.message)?;
        if self.core.holds_live(&object) {
            return Err("this host already runs that object".into());
        }
        let key = DestinationKey::generate().map_err(|e| e.to_string())?;
        let mut claims = self.core.inner.claims.clone();
        claims.insert(
            ANSWER_KEY_CLAIM.to_string(),
            hex::encode(self.core.inner.answer.public_key()),
        );
        let binding = OfferBinding {
            transfer,
            object_id: object,
            challenge: *challenge,
            channel,
            hpke_public_key: key.public_bytes(),
            runtime: RuntimeIdentity {
                name: "sojourn".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                policy_engine: engine_digest(),
                claims,
            },
        };
        let attester = (self.core.inner.lineage.attester)()?;
        let evidence = attester
            .attest(&binding.report_data())
            .map_err(|e| format!("attestation: {e}"))?
            .to_bytes();
        let answer = Evidence {
            transfer,
            challenge: *challenge,
            key: KeyId(binding.key_id()),
            evidence: EvidenceId(sha256(&evidence)),
        };
        self.offers.insert(
            transfer,
            Offer {
                key: Arc::new(key),
                binding,
                evidence,
                at: Instant::now(),
            },
        );
        Ok(answer)
    }

    fn accept(&mut self, transfer: TransferId, key: &KeyId) -> Result<(), String> {
        let offer = self
            .offers
            .get(&transfer)
            .ok_or("no key for this attempt")?;
        if KeyId(offer.binding.key_id()) != *key {
            return Err(sojourn_migration::protocol::reason::WRONG_KEY.into());
        }
        // Opened where it arrived: no copy of the package or of the snapshot in it. The
        // package as it arrived becomes the object's durable memory image (a keyed image,
        // opened with the package key the store keeps sealed), with no copy and no second
        // encryption of it: written to the store while it arrived (an HTTP arrival, see
        // `spool`), or here, each segment just before it is decrypted in place.
        let sealed = self.sealed.take().ok_or("no package")?;
        let store = &self.core.inner.store;
        let spooled = self.spooled.take();
        let writer = match spooled {
            Some(_) => None,
            None => store.stage_keyed_image(&offer.binding.object_id).ok(),
        };
        let keep = |at: u64, bytes: &[u8]| {
            if let Some(w) = &writer {
                // A failed write fails the image at `finish`; the commit then writes one.
                let _ = w.write_at(at, bytes);
            }
        };
        let keep: Option<&KeepBytes<'_>> = match writer {
            Some(_) => Some(&keep),
            None => None,
        };
        let bundle = match self.opened.take() {
            // Decrypted as it arrived: every segment authenticated then.
            Some(Ok(opener)) => open_opened(&offer.binding, sealed, opener),
            Some(Err(e)) => {
                // Segments before the one that did not open were decrypted.
                let mut sealed = sealed;
                sealed.zeroize();
                return Err(format!("package: {e}"));
            }
            None => open_owned_keeping(&offer.key, &offer.binding, sealed, keep),
        }
        .map_err(|e| format!("package: {e}"))?;
        if bundle.object_id() != offer.binding.object_id {
            return Err("the package holds another object than the one offered".into());
        }
        let detail = format!(
            "from {} (transfer {}, evidence {})",
            self.source,
            hex::encode(transfer.0),
            hex::encode(sha256(&offer.evidence).get(..8).unwrap_or_default())
        );
        // The kept package is made durable as the object's memory image (not yet committed)
        // on a second thread while this one restores the object; where it could not be kept,
        // that thread seals and writes the memory from the snapshot's bytes instead. The
        // arrival's commit then only records the file; if that thread cannot start or fails
        // (a snapshot it cannot read, which the restore refuses too), the commit writes the
        // image itself.
        let object = bundle.object_id();
        let kept = match (spooled, writer) {
            (Some(s), _) => Some(Kept::Spooled(s)),
            (None, Some(w)) => Some(Kept::Writer(w)),
            (None, None) => None,
        };
        // A package received into pages of the host's own with its image file written: the
        // object's memory pages are moved out of them (no copy, no fresh pages). The restore
        // overwrites them from the snapshot on, so what the image and the arrival need of the
        // bundle is read first: where the memory's chunks are, and the lineage.
        let (bundle, kept, detail) = match kept {
            Some(Kept::Spooled(image)) => match self.accept_pages(bundle, image, detail)? {
                Ok(prepared) => {
                    self.prepared = Some(prepared);
                    return Ok(());
                }
                Err((bundle, image, detail)) => (bundle, Some(Kept::Spooled(image)), detail),
            },
            other => (bundle, other, detail),
        };
        self.accept_copying(bundle, kept, object, detail)
    }
}

impl Env<'_> {
    /// The arrival of a package opened in pages of its own, whose image file the spool
    /// wrote: the object's memory pages are moved out of them
    /// (`ResidentObject::restore_moving`). Gives the bundle back (`Err` inside) where that
    /// cannot be done: a package on the heap, or a snapshot whose memory's chunks the keyed
    /// image cannot name. The pages are unmapped when this returns, not zeroed: the kernel
    /// zeroes pages before it gives them to anyone again.
    #[allow(clippy::type_complexity)]
    fn accept_pages(
        &mut self,
        mut bundle: OpenedBundle,
        image: SpooledImage,
        detail: String,
    ) -> Result<Result<super::Prepared, (OpenedBundle, SpooledImage, String)>, String> {
        if !bundle.in_pages() {
            return Ok(Err((bundle, image, detail)));
        }
        let read = SnapshotMemory::parse(bundle.snapshot())
            .map_err(|e| e.to_string())
            .map(|memory| (memory.len(), keyed_image(&bundle, &memory, image.pad)));
        let (len, keyed) = match read {
            Ok((len, Some(keyed))) => (len, keyed),
            // Refused by the restore, or not nameable: the copying arrival decides.
            _ => return Ok(Err((bundle, image, detail))),
        };
        let lineage = bundle.lineage().to_vec();
        let Some((mut pages, at)) = bundle.take_pages() else {
            return Ok(Err((bundle, image, detail)));
        };
        // The image file is made durable on a second thread while this one restores.
        let (prepared, staged) = std::thread::scope(|scope| {
            let stager = std::thread::Builder::new()
                .name("sojourn-stage".into())
                .spawn_scoped(scope, move || {
                    image
                        .writer
                        .finish(len as u64, keyed)
                        .map_err(|e| e.to_string())
                });
            let prepared = self.core.prepare_arrival(
                super::ArrivalSnapshot::Pages(&mut pages, at),
                &lineage,
                detail,
            );
            let staged = stager.ok().and_then(|h| h.join().ok()).and_then(Result::ok);
            (prepared, staged)
        });
        let mut prepared = prepared.map_err(|e| e.message)?;
        if prepared.moved > 0 {
            self.core
                .inner
                .metrics
                .arrivals_moved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(staged) = staged {
            // The image file is durable, no record names it yet.
            crash_point("dest-staged");
            prepared.use_staged(staged);
        }
        Ok(Ok(prepared))
    }

    /// The arrival of an opened package whose memory is copied into the restored object.
    fn accept_copying(
        &mut self,
        bundle: OpenedBundle,
        kept: Option<Kept>,
        object: [u8; 16],
        detail: String,
    ) -> Result<(), String> {
        let store = &self.core.inner.store;
        // Set when the object is refused: the image stops being written (a memory larger
        // than the object's descriptor allows is refused by the restore at once).
        let refused = std::sync::atomic::AtomicBool::new(false);
        let (prepared, staged) = std::thread::scope(|scope| {
            let (bundle, refused) = (&bundle, &refused);
            // The snapshot's memory is read there too (where its chunks are in the package),
            // beside the restore, which reads the snapshot for itself.
            let stager = std::thread::Builder::new()
                .name("sojourn-stage".into())
                .spawn_scoped(scope, move || {
                    let memory =
                        SnapshotMemory::parse(bundle.snapshot()).map_err(|e| e.to_string())?;
                    let len = memory.len();
                    let keyed = kept.and_then(|k| {
                        let pad = match &k {
                            Kept::Spooled(s) => s.pad,
                            Kept::Writer(_) => 0,
                        };
                        Some((k, keyed_image(bundle, &memory, pad)?))
                    });
                    match keyed {
                        Some((Kept::Writer(writer), image)) => {
                            writer.finish(len as u64, image).map_err(|e| e.to_string())
                        }
                        Some((Kept::Spooled(s), image)) => s
                            .writer
                            .finish(len as u64, image)
                            .map_err(|e| e.to_string()),
                        None => store
                            .stage_memory(&object, len, &mut |at, out| {
                                !refused.load(std::sync::atomic::Ordering::Relaxed)
                                    && memory.copy_into(at, out)
                            })
                            .map_err(|e| e.to_string()),
                    }
                });
            let prepared = self.core.prepare_arrival(
                super::ArrivalSnapshot::Bytes(bundle.snapshot()),
                bundle.lineage(),
                detail,
            );
            if prepared.is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let staged = stager.ok().and_then(|h| h.join().ok()).and_then(Result::ok);
            (prepared, staged)
        });
        let mut prepared = prepared.map_err(|e| e.message)?;
        if let Some(staged) = staged {
            // The image file is durable, no record names it yet.
            crash_point("dest-staged");
            prepared.use_staged(staged);
        }
        prepared.reuse_buffer(bundle.into_buffer());
        self.prepared = Some(prepared);
        Ok(())
    }
}

impl HostCore {
    /// Whether this host holds `object` and may run it (not a tombstone).
    fn holds_live(&self, object: &ObjectKey) -> bool {
        read(&self.inner.slots)
            .get(object)
            .is_some_and(|s| lock(s).transferred.is_none())
    }

    /// Runs one message through the destination machine and executes its effects in order:
    /// a `Persist` of `Received` commits the object (with its `migrated-in` entry and the
    /// arrival record) before anything after it runs.
    fn dest_step(
        &self,
        msg: ToDest,
        object: Option<[u8; 16]>,
        channel: Option<[u8; 32]>,
        source: &str,
        package: Option<ArrivedPackage>,
    ) -> Result<Vec<ToSource>, ApiError> {
        let mut side = lock(&self.inner.dest);
        let side = &mut *side;
        // Expire old offers (their keys go; the attempt is aborted).
        let expired: Vec<TransferId> = side
            .offers
            .iter()
            .filter(|(_, o)| o.at.elapsed() > OFFER_TTL)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            side.offers.remove(&t);
            let _ = side.machine.on_timeout(t);
        }
        let mut env = Env {
            core: self,
            offers: &mut side.offers,
            object,
            channel,
            source,
            sealed: None,
            spooled: None,
            opened: None,
            prepared: None,
        };
        if let Some(p) = package {
            env.sealed = Some(p.sealed);
            env.spooled = p.spooled;
            env.opened = p.opened;
        }
        let effects = side.machine.on_message(msg, &mut env);
        let mut prepared = env.prepared.take();
        let mut out = Vec::new();
        for effect in effects {
            match effect {
                DestEffect::Persist {
                    transfer: t,
                    state: DestState::Received { key, evidence },
                    ..
                } => {
                    let Some(p) = prepared.take() else {
                        side.forget(t);
                        return Err(internal("received without a prepared object"));
                    };
                    let arrival = Arrival {
                        transfer: t,
                        key,
                        evidence,
                    };
                    if let Err(e) = self.commit_arrival(p, Some(arrival)) {
                        // Not durable: as if this host had restarted (the key goes, the
                        // attempt will be answered `aborted`).
                        side.forget(t);
                        return Err(e);
                    }
                    crash_point("dest-received");
                    side.offers.remove(&t);
                }
                DestEffect::Persist { transfer: t, .. } => {
                    // `Aborted`: held in memory; the attempt's key goes with it.
                    side.offers.remove(&t);
                }
                DestEffect::Send(m) => out.push(m),
                DestEffect::StartRunning { .. } => {} // commit_arrival scheduled it
            }
        }
        Ok(out)
    }

    fn answer_of(
        &self,
        out: Vec<ToSource>,
        transfer: TransferId,
    ) -> Result<MigrationAnswer, ApiError> {
        out.iter()
            .find(|m| m.transfer() == transfer)
            .and_then(|m| sign_answer(&self.inner.answer, m))
            .ok_or_else(|| internal("the destination had no answer"))
    }

    pub(crate) fn on_offer(
        &self,
        offer: MigrationOffer,
        channel: [u8; 32],
    ) -> Result<MigrationOfferAnswer, ApiError> {
        if offer.version != sojourn_migration::protocol::PROTOCOL_VERSION {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "migration protocol version {} is not supported (this host speaks {})",
                    offer.version,
                    sojourn_migration::protocol::PROTOCOL_VERSION
                ),
            ));
        }
        let transfer = TransferId(parse_hex(&offer.transfer, "transfer")?);
        let challenge = Challenge(parse_hex(&offer.challenge, "challenge")?);
        let object: [u8; 16] = parse_hex(&offer.object, "object")?;
        let out = self.dest_step(
            ToDest::Offer {
                transfer,
                challenge,
            },
            Some(object),
            Some(channel),
            &offer.source,
            None,
        )?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        for m in &out {
            match m {
                ToSource::Evidence(e) if e.transfer == transfer => {
                    crash_point("dest-offered");
                    let side = lock(&self.inner.dest);
                    let o = side
                        .offers
                        .get(&transfer)
                        .ok_or_else(|| internal("evidence without an offer"))?;
                    return Ok(MigrationOfferAnswer {
                        binding_base64: Some(b64(&o.binding.to_bytes())),
                        evidence_base64: Some(b64(&o.evidence)),
                        aborted: None,
                    });
                }
                ToSource::Aborted { .. } => {
                    return Ok(MigrationOfferAnswer {
                        binding_base64: None,
                        evidence_base64: None,
                        aborted: sign_answer(&self.inner.answer, m),
                    })
                }
                _ => {}
            }
        }
        // A duplicate offer with another challenge, or one for a decided attempt.
        Err(ApiError::new(
            ErrorCode::Conflict,
            "this attempt does not take that offer",
        ))
    }

    /// A spool for the package of `len` bytes of `transfer` sealed to `key`, coming in
    /// `order`, if this host has that offer open (see [`super::spool`]); `None` when there is
    /// no such offer or no file or thread could be started: the server then reads the
    /// package, and the arrival writes it as it opens it. A package whose tags follow their
    /// segments is opened segment by segment as it arrives, with the offer's key.
    pub(crate) fn package_spool(
        &self,
        transfer: &str,
        key: &str,
        len: u64,
        order: PackageOrder,
    ) -> Option<Spool> {
        let transfer = TransferId(parse_hex(transfer, "transfer").ok()?);
        let key = KeyId(parse_hex(key, "key").ok()?);
        let (object, opener) = {
            let side = lock(&self.inner.dest);
            let offer = side.offers.get(&transfer)?;
            if KeyId(offer.binding.key_id()) != key {
                return None;
            }
            let (dest_key, binding) = (Arc::clone(&offer.key), offer.binding.clone());
            let opener: Option<OpenerFactory> = match order {
                PackageOrder::Layout => None,
                PackageOrder::TagAfterSegment => Some(Box::new(move |header: &[u8]| {
                    SegmentOpener::new(&dest_key, &binding, header)
                })),
            };
            (offer.binding.object_id, opener)
        };
        let len = usize::try_from(len).ok()?;
        let writer = self.inner.store.stage_keyed_image(&object).ok()?;
        Spool::start(
            writer,
            len,
            self.inner.warm_arrival.clone(),
            order,
            opener,
            self.inner.spool_blocks.clone(),
        )
    }

    /// [`HostCore::on_package`] of a package a [`Spool`] took.
    pub(crate) fn on_spooled_package(
        &self,
        transfer: &str,
        key: &str,
        spool: Spool,
    ) -> Result<MigrationAnswer, ApiError> {
        let spooled = spool
            .finish()
            .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e))?;
        self.inner
            .metrics
            .package_bytes_warm
            .fetch_add(spooled.warm as u64, std::sync::atomic::Ordering::Relaxed);
        let image = match spooled.image {
            Ok(image) => {
                let m = &self.inner.metrics;
                m.packages_spooled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                m.package_bytes_direct.fetch_add(
                    image.writer.written_direct(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                Some(image)
            }
            Err(e) => {
                eprintln!(
                    "sojourn host: transfer {transfer}: the package's image file was not \
                     written ({e}); the arrival writes its memory image itself"
                );
                None
            }
        };
        let opened = spooled.opened.map(|o| o.map_err(|e| e.to_string()));
        if matches!(&opened, Some(Ok(o)) if o.is_done()) {
            self.inner
                .metrics
                .packages_opened_arriving
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.on_package(transfer, key, spooled.package, image, opened)
    }

    pub(crate) fn on_package(
        &self,
        transfer: &str,
        key: &str,
        sealed: PackageBytes,
        spooled: Option<SpooledImage>,
        opened: Option<Result<SegmentOpener, String>>,
    ) -> Result<MigrationAnswer, ApiError> {
        let transfer = TransferId(parse_hex(transfer, "transfer")?);
        let key = KeyId(parse_hex(key, "key")?);
        let out = self.dest_step(
            ToDest::Package { transfer, key },
            None,
            None,
            "source",
            Some(ArrivedPackage {
                sealed,
                spooled,
                opened,
            }),
        )?;
        self.answer_of(out, transfer)
    }

    pub(crate) fn on_status(
        &self,
        req: MigrationStatusRequest,
    ) -> Result<MigrationAnswer, ApiError> {
        let transfer = TransferId(parse_hex(&req.transfer, "transfer")?);
        let out = self.dest_step(ToDest::Status { transfer }, None, None, "source", None)?;
        self.answer_of(out, transfer)
    }

    pub(crate) fn on_refusal(&self, req: MigrationRefusalRequest) -> Result<(), ApiError> {
        let transfer = TransferId(parse_hex(&req.transfer, "transfer")?);
        self.dest_step(
            ToDest::Refusal {
                transfer,
                reason: req.reason,
            },
            None,
            None,
            "source",
            None,
        )
        .map(|_| ())
    }
}

impl DestSide {
    /// After a `Received` that could not be made durable: as if this host had restarted
    /// (every offer's key goes; durable records stay), without `t`.
    fn forget(&mut self, t: TransferId) {
        let mut kept = self.machine.transfers().clone();
        kept.remove(&t);
        kept.retain(|_, s| !matches!(s, DestState::Offered { .. }));
        self.offers.clear();
        self.machine = Destination::on_restart(kept).0;
    }
}

// ---------------------------------------------------------------------------------------------
// Source side

/// A package sent while it was sealed: its length and the sending's answer.
struct SentPackage {
    len: u64,
    answer: Result<MigrationAnswer, String>,
}

/// Parts sealed but not yet sent, at most this many (segments of 1 MiB): the sealer waits for
/// the sender to be done with the oldest and seals the next segment into its buffer, so a
/// large package is sealed in a few buffers that stay mapped instead of in fresh memory.
const PARTS_IN_FLIGHT: usize = 8;
/// How long the sealer waits for a part to be sent before it takes a new buffer instead.
const PART_WAIT: Duration = Duration::from_secs(2);

/// The buffers of the parts in flight, oldest first (see [`PARTS_IN_FLIGHT`]).
struct PartBuffers {
    in_flight: std::collections::VecDeque<Arc<Vec<u8>>>,
}

impl PartBuffers {
    /// An empty buffer of at least `capacity`: the oldest part's once the sender has let go
    /// of it (waiting while all [`PARTS_IN_FLIGHT`] are out), else a new one.
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let deadline = Instant::now() + PART_WAIT;
        loop {
            if self
                .in_flight
                .front()
                .is_some_and(|p| Arc::strong_count(p) == 1)
            {
                if let Some(Ok(mut v)) = self.in_flight.pop_front().map(Arc::try_unwrap) {
                    if v.capacity() >= capacity {
                        v.clear();
                        return v;
                    }
                }
                continue;
            }
            if self.in_flight.len() < PARTS_IN_FLIGHT || Instant::now() >= deadline {
                return Vec::with_capacity(capacity);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Measures the steps of one attempt.
struct Steps {
    steps: Vec<MigrationStep>,
    last: Instant,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            steps: Vec::new(),
            last: Instant::now(),
        }
    }
    fn done(&mut self, name: &str) {
        let now = Instant::now();
        self.steps.push(MigrationStep {
            name: name.to_string(),
            micros: u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX),
        });
        self.last = now;
    }
}

/// What an attempt came to.
enum Decision {
    Transferred,
    Refused { reason: String, code: String },
    Aborted { reason: String },
    Pending { reason: String },
}

impl HostCore {
    /// Moves an object to the destination behind `link` (docs/migration.md): returns once the
    /// attempt is decided, or `pending` if the package may have left and the destination has
    /// not answered (the resolver then keeps asking; the object runs nowhere meanwhile).
    pub fn migrate_to(
        &self,
        id: &str,
        peer: PeerAddress,
        link: &dyn PeerLink,
    ) -> Result<MigrationReport, ApiError> {
        self.check_running()?;
        let key = self.resolve(id)?;
        let slot = self.slot(&key)?;
        let (transfer, challenge) = fresh_attempt().map_err(internal)?;
        let dest = HostId(sha256(peer.url.as_bytes()));
        let mut steps = Steps::new();
        let started = Instant::now();

        // Quiesce at a tick boundary; persist `Offering`.
        let (name, seq, rules, source_trust) = {
            let mut s = lock(&slot);
            s.refuse_if_away()?;
            if s.moving.is_some() || s.busy {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "a migration of this object is already in progress",
                ));
            }
            let rules = s.obj.descriptor().policy.migration.clone();
            if !rules.allowed {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "the object's policy does not allow migration ([policy.migration] allowed)",
                ));
            }
            let effects = s
                .source
                .on_start(transfer, challenge, dest)
                .map_err(|e| ApiError::new(ErrorCode::Conflict, format!("{e:?}")))?;
            for e in effects {
                match e {
                    SourceEffect::StopRunning => {
                        s.frozen = true;
                        sched(&self.inner, SchedMsg::Cancel(key));
                    }
                    SourceEffect::Persist { .. } => {
                        s.moving = Some(MoveState::Offering {
                            transfer,
                            challenge,
                            dest,
                            peer: peer.clone(),
                        });
                        s.busy = true;
                        if let Err(e) = self.commit_slot(key, &mut s, 0) {
                            s.moving = None;
                            s.busy = false;
                            s.frozen = false;
                            s.source = sojourn_migration::protocol::Source::new();
                            self.schedule_from(key, &s.obj);
                            return Err(e);
                        }
                    }
                    SourceEffect::Send(_) | SourceEffect::StartRunning => {}
                }
            }
            let trust = s.writer.trust().window_min(1);
            (s.name.clone(), s.obj.seq(), rules, trust)
        };
        steps.done("quiesce");
        crash_point("source-offering");

        let result = (|| -> Result<MigrationReport, ApiError> {
            // Offer → evidence.
            let offer = MigrationOffer {
                version: sojourn_migration::protocol::PROTOCOL_VERSION,
                transfer: hex::encode(transfer.0),
                object: hex::encode(key),
                challenge: hex::encode(challenge.0),
                source: self.inner.self_url.clone(),
            };
            let answer = link.offer(&offer);
            steps.done("attestation");
            let mut ticket = None;
            let mut refusal_code = None;
            let mut appraisal_line = None;
            let mut package_bytes = 0u64;
            let mut effects = {
                let mut s = lock(&slot);
                match answer {
                    Err(e) => {
                        let mut fx = s.source.on_timeout();
                        rename_reason(&mut fx, &format!("no evidence: {e}"));
                        fx
                    }
                    Ok((a, _)) if a.aborted.is_some() => {
                        let reason = a
                            .aborted
                            .and_then(|x| x.reason)
                            .unwrap_or_else(|| "refused by the destination".into());
                        s.source
                            .on_message(ToSource::Aborted { transfer, reason }, |_| {
                                Err(String::new())
                            })
                    }
                    Ok((a, channel)) => {
                        let decoded = decode_evidence(&a);
                        let ev = match &decoded {
                            Ok((binding, _, bytes)) => Evidence {
                                transfer,
                                challenge: binding.challenge,
                                key: KeyId(binding.key_id()),
                                evidence: EvidenceId(sha256(bytes)),
                            },
                            Err(_) => Evidence {
                                transfer,
                                challenge,
                                key: KeyId([0; 32]),
                                evidence: EvidenceId([0; 32]),
                            },
                        };
                        s.source.on_message(ToSource::Evidence(ev), |_| {
                            let (binding, evidence, _) = decoded.as_ref().map_err(|e| {
                                refusal_code = Some("malformed".to_string());
                                e.clone()
                            })?;
                            match appraise_destination(
                                &rules,
                                evidence,
                                binding,
                                &challenge,
                                &channel,
                                source_trust,
                                Timestamp::now(),
                            ) {
                                Ok(t) => {
                                    let id = AppraisalId(sha256(t.summary().as_bytes()));
                                    appraisal_line = Some(t.summary().to_string());
                                    ticket = Some(t);
                                    Ok(id)
                                }
                                Err(r) => {
                                    refusal_code = Some(r.code().to_string());
                                    Err(format!("{} ({})", r, r.code()))
                                }
                            }
                        })
                    }
                }
            };
            steps.done("appraisal");

            // Execute: either Persist(Sent)+Package, or Persist(Running)+Refusal+StartRunning.
            let mut decision = None;
            let mut answer_key = Vec::new();
            loop {
                let mut next = Vec::new();
                for e in effects {
                    match e {
                        SourceEffect::StopRunning => {}
                        SourceEffect::Persist {
                            state:
                                SourceState::Sent {
                                    key: kid,
                                    appraisal,
                                    ..
                                },
                            ..
                        } => {
                            let t = ticket
                                .as_ref()
                                .ok_or_else(|| internal("sent without a ticket"))?;
                            answer_key = t
                                .binding()
                                .runtime
                                .claims
                                .get(ANSWER_KEY_CLAIM)
                                .and_then(|h| hex::decode(h).ok())
                                .unwrap_or_default();
                            let detail = format!(
                                "to {} (transfer {}): {}",
                                peer.url,
                                hex::encode(transfer.0),
                                t.summary()
                            );
                            let state = MoveState::Sent {
                                transfer,
                                dest,
                                key: kid,
                                appraisal,
                                peer: peer.clone(),
                                answer_key: answer_key.clone(),
                            };
                            self.persist_sent(&key, state, detail)?;
                        }
                        SourceEffect::Persist {
                            state: SourceState::Transferred { .. },
                            ..
                        } => {
                            self.finish_transferred(&key, &peer.url)?;
                            steps.done("commit");
                            decision = Some(Decision::Transferred);
                        }
                        SourceEffect::Persist {
                            state: SourceState::Running,
                            lineage,
                        } => {
                            let (refused, reason) = self.resume_after(&key, lineage.as_ref())?;
                            decision = Some(if refused {
                                let code = refusal_code.clone().unwrap_or_else(|| {
                                    let mismatch =
                                        sojourn_migration::protocol::reason::CHALLENGE_MISMATCH;
                                    if reason == mismatch {
                                        "wrong_challenge".into()
                                    } else {
                                        "refused".into()
                                    }
                                });
                                Decision::Refused { reason, code }
                            } else {
                                Decision::Aborted { reason }
                            });
                        }
                        SourceEffect::Persist { .. } => {}
                        SourceEffect::Send(ToDest::Refusal { reason, .. }) => {
                            let _ = link.refusal(&hex::encode(transfer.0), &reason);
                        }
                        SourceEffect::Send(ToDest::Package { .. }) => {
                            let t = ticket
                                .as_ref()
                                .ok_or_else(|| internal("a package without a ticket"))?;
                            let (transfer_hex, key_hex) =
                                (hex::encode(transfer.0), hex::encode(ticket_key(&ticket)));
                            // The first sending overlaps the sealing; "seal" ends when the
                            // last part is sealed, "transfer" when the answer is in.
                            let SentPackage { len, answer: first } = self.seal_and_send(
                                &key,
                                t,
                                link,
                                &transfer_hex,
                                &key_hex,
                                &mut || steps.done("seal"),
                            )?;
                            package_bytes = len;
                            let mut got = first
                                .ok()
                                .and_then(|a| verified_answer(&a, &transfer, &answer_key));
                            if got.is_none() {
                                // Sent again, whole, sealed again (the object is still
                                // quiesced: the same bundle, to the same key).
                                let whole = Arc::new(self.seal_whole(&key, t)?);
                                for i in 1..PACKAGE_TRIES {
                                    std::thread::sleep(Duration::from_millis(200 << i));
                                    if let Ok(a) =
                                        link.package(&transfer_hex, &key_hex, Arc::clone(&whole))
                                    {
                                        got = verified_answer(&a, &transfer, &answer_key);
                                        if got.is_some() {
                                            break;
                                        }
                                    }
                                }
                            }
                            steps.done("transfer");
                            match got {
                                Some(m) => {
                                    crash_point("source-answered");
                                    let mut s = lock(&slot);
                                    next.extend(s.source.on_message(m, |_| Err(String::new())));
                                }
                                None => match self.ask_status(&slot, transfer, &answer_key, link) {
                                    Some(fx) => next.extend(fx),
                                    None => {
                                        decision = Some(Decision::Pending {
                                            reason: "the destination has not answered; the host \
                                                 keeps asking it"
                                                .into(),
                                        })
                                    }
                                },
                            }
                        }
                        SourceEffect::Send(_) => {}
                        SourceEffect::StartRunning => {}
                    }
                }
                if next.is_empty() {
                    break;
                }
                effects = next;
            }
            let downtime = started.elapsed();
            let (outcome, reason, code) = match decision {
                Some(Decision::Transferred) => ("transferred", None, None),
                Some(Decision::Refused { reason, code }) => ("refused", Some(reason), Some(code)),
                Some(Decision::Aborted { reason }) => ("aborted", Some(reason), None),
                Some(Decision::Pending { reason }) => ("pending", Some(reason), None),
                None => ("pending", Some("undecided".to_string()), None),
            };
            Ok(MigrationReport {
                object: hex::encode(key),
                name,
                transfer: hex::encode(transfer.0),
                destination: peer.url.clone(),
                outcome: outcome.to_string(),
                reason,
                refusal_code: code,
                appraisal: appraisal_line,
                seq,
                package_bytes,
                downtime_micros: u64::try_from(downtime.as_micros()).unwrap_or(u64::MAX),
                steps: steps.steps,
            })
        })();
        let mut s = lock(&slot);
        s.busy = false;
        let offering = matches!(s.moving, Some(MoveState::Offering { .. }));
        drop(s);
        if let (Err(e), true) = (&result, offering) {
            // Nothing sealed has left: the source decides alone, and resumes.
            let _ = self.resume_here(&key, format!("aborted: {}", e.message));
        }
        result
    }

    /// Asks the destination to decide (`status`); returns the effects of its signed answer,
    /// or `None` if it did not answer.
    fn ask_status(
        &self,
        slot: &Arc<std::sync::Mutex<super::Slot>>,
        transfer: TransferId,
        answer_key: &[u8],
        link: &dyn PeerLink,
    ) -> Option<Vec<SourceEffect>> {
        let a = link.status(&hex::encode(transfer.0)).ok()?;
        let m = verified_answer(&a, &transfer, answer_key)?;
        let mut s = lock(slot);
        Some(s.source.on_message(m, |_| Err(String::new())))
    }

    /// `Sent`, durable together with the `migrated-out` entry, before any byte of the package
    /// leaves (the object is frozen from quiesce on: nothing changes it in between).
    fn persist_sent(
        &self,
        key: &ObjectKey,
        state: MoveState,
        detail: String,
    ) -> Result<(), ApiError> {
        let slot = self.slot(key)?;
        let mut s = lock(&slot);
        s.record_migration(Outcome::MigratedOut { detail }, &self.inner.metrics)?;
        s.moving = Some(state);
        self.commit_slot(*key, &mut s, 1)?;
        crash_point("source-sent");
        Ok(())
    }

    /// The package, sealed to the ticket's destination (the snapshot and the lineage that
    /// travel, ending with the `migrated-out` entry), sent while it is sealed: the snapshot is
    /// written straight into the segments, and each part goes to `link` as soon as it is
    /// sealed, so that the transfer overlaps the snapshot, its checksum and the encryption.
    /// `sealed` is called when the sealer is done (the object's lock is released then; the
    /// link may still be sending). Returns every part (to send the package again) and the
    /// link's answer.
    fn seal_and_send(
        &self,
        key: &ObjectKey,
        ticket: &MigrationTicket,
        link: &dyn PeerLink,
        transfer: &str,
        kid: &str,
        sealed: &mut dyn FnMut(),
    ) -> Result<SentPackage, ApiError> {
        std::thread::scope(|scope| {
            let (sending, tx, len, result) = self.with_bundle(key, |head, snapshot| {
                let len = sealed_len(head, snapshot.len()).map_err(internal)?;
                let order = link.package_order();
                let (tx, parts) = sojourn_api::package_parts_in(len as u64, order);
                let sending = std::thread::Builder::new()
                    .name("sojourn-package".into())
                    .spawn_scoped(scope, move || link.package_parts(transfer, kid, parts))
                    .map_err(|e| internal(format!("cannot start the sending thread: {e}")))?;
                let buffers = std::cell::RefCell::new(PartBuffers {
                    in_flight: std::collections::VecDeque::new(),
                });
                let send_order = match order {
                    PackageOrder::Layout => SendOrder::Layout,
                    PackageOrder::TagAfterSegment => SendOrder::TagAfterSegment,
                };
                let result = seal_streaming_in(
                    send_order,
                    ticket,
                    head,
                    snapshot.len(),
                    |put| {
                        // The package authenticates every byte: no checksum (see
                        // `restore_authenticated` at the destination).
                        snapshot.write_unchecked_to(put);
                        Ok(())
                    },
                    &mut |capacity| buffers.borrow_mut().buffer(capacity),
                    &mut |part| {
                        let part = Arc::new(part);
                        // A link that stopped reading is answered below (the package is
                        // sealed again to be sent again).
                        let _ = tx.send(Arc::clone(&part));
                        buffers.borrow_mut().in_flight.push_back(part);
                    },
                );
                Ok((sending, tx, len, result))
            })?;
            // The object's lock is released: the answer is awaited without it.
            // Ends the body: early (so the destination discards it) if sealing failed.
            drop(tx);
            sealed();
            let answer = sending
                .join()
                .unwrap_or_else(|_| Err("the link thread failed".to_string()));
            result.map_err(internal)?;
            Ok(SentPackage {
                len: len as u64,
                answer,
            })
        })
    }

    /// Runs `f` with the object's bundle head and snapshot, under the object's lock (the
    /// object is quiesced: what `f` seals is the object as `Sent` recorded it).
    fn with_bundle<R>(
        &self,
        key: &ObjectKey,
        f: impl FnOnce(&BundleHead<'_>, &SnapshotWriter<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let slot = self.slot(key)?;
        let lineage = self
            .inner
            .store
            .lineage(key)
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
        let mut s = lock(&slot);
        let mut snapshot = s.obj.snapshot_writer().map_err(internal)?;
        let head = BundleHead {
            object_id: *key,
            source: &self.inner.self_url,
            lineage: &lineage,
            pending_messages: &[],
        };
        // The memory's pages on page boundaries where the package lies in page-aligned
        // memory (as a destination receives it, `spool`): there they are mapped into the
        // arriving instance as they lie (`restore_moving`) instead of moved first. Laid out
        // twice: the snapshot's offset depends on its length's CBOR head, which the
        // padding may change (if it does again, the pages are moved at the destination).
        for _ in 0..2 {
            if let Some(at) = snapshot_offset(&head, snapshot.len()) {
                snapshot.align_pages_at(at);
            }
        }
        f(&head, &snapshot)
    }

    /// The package of the object (quiesced since `Sent`) sealed again to `ticket`, whole: to
    /// send it again when the first sending got no answer.
    fn seal_whole(&self, key: &ObjectKey, ticket: &MigrationTicket) -> Result<Vec<u8>, ApiError> {
        self.with_bundle(key, |head, snapshot| {
            seal_with(ticket, head, snapshot.len(), |buf| {
                snapshot.write_unchecked_to(&mut |b: &[u8]| buf.extend_from_slice(b));
                Ok(())
            })
            .map_err(internal)
        })
    }

    /// The tombstone (after the destination's signed `ack`).
    fn finish_transferred(&self, key: &ObjectKey, to: &str) -> Result<(), ApiError> {
        let slot = self.slot(key)?;
        let mut s = lock(&slot);
        s.transferred = Some(to.to_string());
        s.moving = None;
        s.frozen = false;
        self.commit_slot(*key, &mut s, 0).map(|_| ())
    }

    /// Runs the protocol's `Persist(Running)` with its lineage record: `migration-refused`
    /// with "refused: …" (the source refused the destination) or "aborted: …" (anything else),
    /// and the object runs here again. Returns whether it was a refusal, and the reason.
    fn resume_after(
        &self,
        key: &ObjectKey,
        lineage: Option<&sojourn_migration::protocol::LineageRecord>,
    ) -> Result<(bool, String), ApiError> {
        let reason = lineage
            .and_then(|l| l.reason())
            .unwrap_or("ended")
            .to_string();
        let refused = matches!(
            lineage,
            Some(sojourn_migration::protocol::LineageRecord::MigrationRefused { .. })
        );
        let kind = if refused { "refused" } else { "aborted" };
        self.resume_here(key, format!("{kind}: {reason}"))?;
        Ok((refused, reason))
    }

    /// The attempt ended without a transfer: `migration-refused` with the reason, and the
    /// object runs here again.
    fn resume_here(&self, key: &ObjectKey, reason: String) -> Result<(), ApiError> {
        let slot = self.slot(key)?;
        let mut s = lock(&slot);
        s.record_migration(Outcome::MigrationRefused { reason }, &self.inner.metrics)?;
        s.moving = None;
        s.frozen = false;
        s.source = sojourn_migration::protocol::Source::new();
        self.commit_slot(*key, &mut s, 1)?;
        self.schedule_from(*key, &s.obj);
        Ok(())
    }

    /// After a restart: an attempt that was `Offering` ends (nothing sealed left); one that
    /// was `Sent` waits for the destination's answer (the resolver asks).
    pub(crate) fn recover_moves(&self) {
        let offering: Vec<ObjectKey> = read(&self.inner.slots)
            .iter()
            .filter(|(_, s)| matches!(lock(s).moving, Some(MoveState::Offering { .. })))
            .map(|(k, _)| *k)
            .collect();
        for key in offering {
            let peer = self.slot(&key).ok().and_then(|s| lock(&s).moving.clone());
            let reason = format!(
                "aborted: {}",
                sojourn_migration::protocol::reason::SOURCE_RESTARTED
            );
            if self.resume_here(&key, reason).is_ok() {
                if let Some(m) = peer {
                    if let Ok(link) = (self.inner.links)(m.peer()) {
                        let _ = link.refusal(
                            &hex::encode(m.transfer().0),
                            sojourn_migration::protocol::reason::SOURCE_RESTARTED,
                        );
                    }
                }
            }
        }
    }

    /// One pass of the resolver: asks the destination of every attempt in `Sent` that no
    /// driver is working on, and applies a signed answer.
    pub(crate) fn resolve_sent(&self) {
        let sent: Vec<(ObjectKey, MoveState)> = read(&self.inner.slots)
            .iter()
            .filter_map(|(k, s)| {
                let s = lock(s);
                match (&s.moving, s.busy) {
                    (Some(m @ MoveState::Sent { .. }), false) => Some((*k, m.clone())),
                    _ => None,
                }
            })
            .collect();
        for (key, m) in sent {
            let MoveState::Sent {
                transfer,
                ref answer_key,
                ref peer,
                ..
            } = m
            else {
                continue;
            };
            let Ok(slot) = self.slot(&key) else { continue };
            let Ok(link) = (self.inner.links)(peer) else {
                continue;
            };
            let Some(effects) = self.ask_status(&slot, transfer, answer_key, link.as_ref()) else {
                continue;
            };
            for e in effects {
                let _ = match e {
                    SourceEffect::Persist {
                        state: SourceState::Transferred { .. },
                        ..
                    } => self.finish_transferred(&key, &peer.url),
                    SourceEffect::Persist {
                        state: SourceState::Running,
                        lineage,
                    } => self.resume_after(&key, lineage.as_ref()).map(|_| ()),
                    _ => Ok(()),
                };
            }
        }
    }

    /// Moves every object this host runs to the first destination its policy accepts, a few
    /// at a time, within the deadline.
    pub fn drain_to(&self, request: DrainRequest) -> Result<DrainReport, ApiError> {
        self.check_running()?;
        let deadline =
            Instant::now() + Duration::from_secs(request.deadline_s.unwrap_or(60).clamp(1, 3600));
        let peers: Vec<PeerAddress> = request.to.into_iter().map(PeerAddress::from).collect();
        if peers.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "drain needs at least one destination",
            ));
        }
        let todo: Vec<(ObjectKey, String)> = read(&self.inner.slots)
            .iter()
            .filter_map(|(k, s)| {
                let s = lock(s);
                (s.transferred.is_none() && s.moving.is_none()).then(|| (*k, s.name.clone()))
            })
            .collect();
        let queue = std::sync::Mutex::new(todo.into_iter());
        let report = std::sync::Mutex::new(DrainReport {
            moved: Vec::new(),
            stayed: Vec::new(),
            pending: Vec::new(),
        });
        let links: Vec<Result<Box<dyn PeerLink>, String>> =
            peers.iter().map(|p| (self.inner.links)(p)).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| loop {
                    let next = lock(&queue).next();
                    let Some((key, name)) = next else { break };
                    let mut reasons = Vec::new();
                    let mut done = false;
                    for (peer, link) in peers.iter().zip(&links) {
                        if Instant::now() >= deadline {
                            reasons.push("the drain deadline passed".to_string());
                            break;
                        }
                        let link = match link {
                            Ok(l) => l,
                            Err(e) => {
                                reasons.push(format!("{}: {e}", peer.url));
                                continue;
                            }
                        };
                        match self.migrate_to(&hex::encode(key), peer.clone(), link.as_ref()) {
                            Ok(r) if r.outcome == "transferred" => {
                                lock(&report).moved.push(r);
                                done = true;
                                break;
                            }
                            Ok(r) if r.outcome == "pending" => {
                                lock(&report).pending.push(r);
                                done = true;
                                break;
                            }
                            Ok(r) => reasons.push(format!(
                                "{}: {} ({})",
                                peer.url,
                                r.outcome,
                                r.reason.unwrap_or_default()
                            )),
                            Err(e) => reasons.push(format!("{}: {e}", peer.url)),
                        }
                    }
                    if !done {
                        lock(&report).stayed.push(DrainStay {
                            object: hex::encode(key),
                            name,
                            reasons,
                        });
                    }
                });
            }
        });
        let mut r = report.into_inner().unwrap_or_else(|p| p.into_inner());
        r.moved.sort_by(|a, b| a.object.cmp(&b.object));
        r.stayed.sort_by(|a, b| a.object.cmp(&b.object));
        r.pending.sort_by(|a, b| a.object.cmp(&b.object));
        Ok(r)
    }
}

fn ticket_key(ticket: &Option<sojourn_migration::MigrationTicket>) -> [u8; 32] {
    ticket.as_ref().map_or([0; 32], |t| t.binding().key_id())
}

/// Replaces the reason of the protocol's timeout record with what actually happened.
fn rename_reason(effects: &mut [SourceEffect], reason: &str) {
    use sojourn_migration::protocol::LineageRecord;
    for e in effects {
        if let SourceEffect::Persist {
            lineage: Some(LineageRecord::MigrationAborted { reason: r, .. }),
            ..
        } = e
        {
            *r = reason.to_string();
        }
    }
}

type DecodedEvidence = (OfferBinding, AttEvidence, Vec<u8>);

fn decode_evidence(a: &MigrationOfferAnswer) -> Result<DecodedEvidence, String> {
    let b64 = |s: &Option<String>, what: &str| {
        s.as_deref()
            .ok_or_else(|| format!("the answer has no {what}"))
            .and_then(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| format!("{what}: {e}"))
            })
    };
    let binding = OfferBinding::from_bytes(&b64(&a.binding_base64, "binding")?)
        .map_err(|e| format!("binding: {e}"))?;
    let bytes = b64(&a.evidence_base64, "evidence")?;
    let evidence = AttEvidence::from_bytes(&bytes).map_err(|e| format!("evidence: {e}"))?;
    Ok((binding, evidence, bytes))
}

/// Fault injection for the real-process tests: `SOJOURN_CRASH_AT=<point>` makes the process
/// exit at once (like `kill -9`: no cleanup, nothing flushed beyond what was committed) when
/// it reaches that point of the protocol.
pub(crate) fn crash_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("SOJOURN_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("sojourn: SOJOURN_CRASH_AT={point}: exiting now");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_state_round_trips() {
        let peer = PeerAddress {
            url: "https://b:1".into(),
            ca_pem: "pem".into(),
            token: "t".into(),
        };
        for m in [
            MoveState::Offering {
                transfer: TransferId([1; 16]),
                challenge: Challenge([2; 32]),
                dest: HostId([3; 32]),
                peer: peer.clone(),
            },
            MoveState::Sent {
                transfer: TransferId([1; 16]),
                dest: HostId([3; 32]),
                key: KeyId([4; 32]),
                appraisal: AppraisalId([5; 32]),
                peer,
                answer_key: vec![6; 65],
            },
        ] {
            assert_eq!(MoveState::decode(&m.encode()).unwrap(), m);
        }
        assert!(MoveState::decode(b"\xa0").is_err());
        let a = [Arrival {
            transfer: TransferId([1; 16]),
            key: KeyId([2; 32]),
            evidence: EvidenceId([3; 32]),
        }];
        assert_eq!(Arrival::decode_all(&Arrival::encode_all(&a)).unwrap(), a);
        assert!(Arrival::decode_all(&[0; 79]).is_err());
    }

    #[test]
    fn the_api_exports_the_label_the_binding_commits_to() {
        assert_eq!(
            sojourn_api::MIGRATION_EXPORTER_LABEL,
            sojourn_migration::binding::TLS_EXPORTER_LABEL
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let m = MoveState::Sent {
            transfer: TransferId([1; 16]),
            dest: HostId([3; 32]),
            key: KeyId([4; 32]),
            appraisal: AppraisalId([5; 32]),
            peer: PeerAddress {
                url: "https://b:1".into(),
                ca_pem: "pem".into(),
                token: "t".into(),
            },
            answer_key: vec![6; 65],
        };
        let good = m.encode();
        for cut in 0..good.len() {
            assert!(MoveState::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] ^= (x >> 32) as u8 | 1;
            }
            let _ = MoveState::decode(&b);
            let _ = Arrival::decode_all(&b);
        }
    }

    #[test]
    fn answers_verify_only_with_the_attested_key_and_transfer() {
        let signer = P256Signer::from_secret(&[7; 32]).unwrap();
        let other = P256Signer::from_secret(&[8; 32]).unwrap();
        let t = TransferId([9; 16]);
        let ack = sign_answer(&signer, &ToSource::Ack { transfer: t }).unwrap();
        assert_eq!(
            verified_answer(&ack, &t, &signer.public_key()),
            Some(ToSource::Ack { transfer: t })
        );
        assert_eq!(verified_answer(&ack, &t, &other.public_key()), None);
        assert_eq!(
            verified_answer(&ack, &TransferId([1; 16]), &signer.public_key()),
            None
        );
        let mut forged = ack.clone();
        forged.outcome = "aborted".into();
        assert_eq!(verified_answer(&forged, &t, &signer.public_key()), None);
        let ab = sign_answer(
            &signer,
            &ToSource::Aborted {
                transfer: t,
                reason: "x".into(),
            },
        )
        .unwrap();
        let mut changed = ab.clone();
        changed.reason = Some("y".into());
        assert!(verified_answer(&ab, &t, &signer.public_key()).is_some());
        assert_eq!(verified_answer(&changed, &t, &signer.public_key()), None);
    }
}
