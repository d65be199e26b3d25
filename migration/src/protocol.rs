//! The attested-migration protocol core: the source and destination state machines.
//!
//! Pure: messages and hook results in, [`SourceEffect`]s and [`DestEffect`]s out. No I/O, no
//! clock, no randomness, no cryptography: the host picks transfer ids and challenges, moves the
//! messages over TLS 1.3, produces and appraises evidence, seals and opens the package, and
//! makes [`SourceEffect::Persist`] / [`DestEffect::Persist`] durable. Evidence, keys and
//! appraisals appear here only as digests; the binding, appraisal and package modules own the
//! bytes. docs/migration.md is the specification; this module implements it.
//!
//! # The rules the host MUST follow
//!
//! 1. **Effects run in order, and each `Persist` is durable before the next effect runs**
//!    (persist-before-send): a message that follows a `Persist` may only leave the host once
//!    that state survives a crash, and `StartRunning` follows the `Persist` that allows it.
//!    A `Persist` and its `lineage` record are one atomic store commit.
//! 2. **On restart, rebuild from exactly what was persisted** ([`Source::on_restart`],
//!    [`Destination::on_restart`]) and run the effects they return. Nothing else survives.
//! 3. **Fresh ids**: every migration attempt gets a new random [`TransferId`] and a new random
//!    [`Challenge`]; an id is never reused, not even for a retry of the same object.
//! 4. Messages may be lost, duplicated, reordered and delayed; the machines need nothing of the
//!    transport but that a message, when delivered, is the one that was sent (TLS).
//!
//! # Who decides
//!
//! Before the package is sent, the source decides alone (it may give up and resume: nothing
//! sealed has left). Once the source has persisted [`SourceState::Sent`], the destination
//! decides: the source waits until the destination answers [`ToSource::Ack`] (it received the
//! object and runs it) or [`ToSource::Aborted`] (it durably recorded that it never will), and
//! never resumes on a timeout. See [`owner_invariants`] for what "exactly one owner" means.

use std::collections::BTreeMap;
use std::fmt;

/// Version of this protocol; the wire encoding carries it, and a peer speaking another version
/// is refused before any state changes.
pub const PROTOCOL_VERSION: u32 = 1;

fn hex_prefix(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(f, "{name}(")?;
    for b in bytes.iter().take(4) {
        write!(f, "{b:02x}")?;
    }
    if bytes.len() > 4 {
        write!(f, "..")?;
    }
    write!(f, ")")
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                hex_prefix(f, stringify!($name), &self.0)
            }
        }
    };
}

id_type!(
    /// One migration attempt of one object. Random, chosen by the source, never reused: a
    /// retry after an abort or a refusal is a new attempt with a new id.
    TransferId,
    16
);
id_type!(
    /// The source's fresh random challenge for one attempt; the destination's evidence commits
    /// to it in its report data.
    Challenge,
    32
);
id_type!(
    /// Digest of the destination's fresh HPKE public key for one attempt (the package is sealed
    /// to that key; its private half lives only in the destination's memory).
    KeyId,
    32
);
id_type!(
    /// Digest of the destination's evidence bytes for one attempt.
    EvidenceId,
    32
);
id_type!(
    /// Digest of the appraisal the source made of the destination's evidence (kept by the
    /// source's host; named by the `migrate-out` lineage entry).
    AppraisalId,
    32
);
id_type!(
    /// The destination host, as the source's host identifies it (digest of its host key).
    HostId,
    32
);

/// The destination's answer to an offer, as far as the protocol needs it. The evidence bytes
/// (report, certificates, the binding of challenge, TLS exporter, HPKE key and runtime
/// identity) travel next to this and are checked by the `appraise` function the host passes to
/// [`Source::on_message`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Evidence {
    /// The attempt this answers.
    pub transfer: TransferId,
    /// The challenge of the offer it answers (echoed; the report data commits to it).
    pub challenge: Challenge,
    /// The HPKE public key the package is to be sealed to.
    pub key: KeyId,
    /// The evidence itself.
    pub evidence: EvidenceId,
}

/// Messages from the source host to the destination host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToDest {
    /// "Prove you may take this object": a fresh challenge for one attempt.
    Offer {
        /// The attempt.
        transfer: TransferId,
        /// Fresh random challenge.
        challenge: Challenge,
    },
    /// The object, sealed to `key` (the sealed bytes travel next to this message).
    Package {
        /// The attempt.
        transfer: TransferId,
        /// The destination key the package is sealed to.
        key: KeyId,
    },
    /// "Decide now": answer `Ack` if you received this attempt, otherwise record it aborted and
    /// answer `Aborted`.
    Status {
        /// The attempt.
        transfer: TransferId,
    },
    /// The source will not send a package for this attempt (appraisal failed, gave up, or
    /// restarted before sending). Informational: it lets the destination drop its key early.
    Refusal {
        /// The attempt.
        transfer: TransferId,
        /// Why (for the destination's log; the source's lineage holds the same reason).
        reason: String,
    },
}

/// Messages from the destination host to the source host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToSource {
    /// The answer to an offer.
    Evidence(Evidence),
    /// "I hold this attempt's object durably and run it" (the host signs it; an ack whose
    /// signature does not verify is dropped before it reaches [`Source::on_message`]).
    Ack {
        /// The attempt.
        transfer: TransferId,
    },
    /// "I have durably recorded that I will never accept this attempt". Sent only after that
    /// record is durable; it is what lets a source in [`SourceState::Sent`] resume. Covers
    /// "not offered", "refused" and "expired": the reason says which.
    Aborted {
        /// The attempt.
        transfer: TransferId,
        /// Why.
        reason: String,
    },
}

impl ToDest {
    /// The attempt the message belongs to.
    pub fn transfer(&self) -> TransferId {
        match self {
            ToDest::Offer { transfer, .. }
            | ToDest::Package { transfer, .. }
            | ToDest::Status { transfer }
            | ToDest::Refusal { transfer, .. } => *transfer,
        }
    }
}

impl ToSource {
    /// The attempt the message belongs to.
    pub fn transfer(&self) -> TransferId {
        match self {
            ToSource::Evidence(e) => e.transfer,
            ToSource::Ack { transfer } | ToSource::Aborted { transfer, .. } => *transfer,
        }
    }
}

/// A lineage record a step asks for; committed atomically with the `Persist` that carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineageRecord {
    /// Source: the object left, to `dest`, whose evidence was appraised as `appraisal`.
    MigrateOut {
        /// The attempt.
        transfer: TransferId,
        /// The destination.
        dest: HostId,
        /// The source's appraisal of the destination's evidence.
        appraisal: AppraisalId,
    },
    /// Destination: the object arrived under this attempt, bound to the destination's own
    /// evidence for it.
    MigrateIn {
        /// The attempt.
        transfer: TransferId,
        /// The destination's evidence for this attempt.
        evidence: EvidenceId,
    },
    /// Source: the destination's evidence did not satisfy the object's migration policy (or
    /// did not answer the challenge); the object resumed here.
    MigrationRefused {
        /// The attempt.
        transfer: TransferId,
        /// The destination.
        dest: HostId,
        /// Why the appraisal failed.
        reason: String,
    },
    /// Source: the attempt ended without a transfer (gave up before sending, restarted before
    /// sending, or the destination answered `Aborted`); the object resumed here.
    MigrationAborted {
        /// The attempt.
        transfer: TransferId,
        /// The destination.
        dest: HostId,
        /// Why.
        reason: String,
    },
}

impl LineageRecord {
    /// The lineage entry kind (`migrate-out` or `migrate-in`).
    pub fn kind(&self) -> &'static str {
        match self {
            LineageRecord::MigrateIn { .. } => "migrate-in",
            LineageRecord::MigrateOut { .. }
            | LineageRecord::MigrationRefused { .. }
            | LineageRecord::MigrationAborted { .. } => "migrate-out",
        }
    }

    /// The lineage entry outcome (`accepted`, `refused` or `aborted`).
    pub fn outcome(&self) -> &'static str {
        match self {
            LineageRecord::MigrateIn { .. } | LineageRecord::MigrateOut { .. } => "accepted",
            LineageRecord::MigrationRefused { .. } => "refused",
            LineageRecord::MigrationAborted { .. } => "aborted",
        }
    }

    /// The reason, for a refused or aborted attempt.
    pub fn reason(&self) -> Option<&str> {
        match self {
            LineageRecord::MigrationRefused { reason, .. }
            | LineageRecord::MigrationAborted { reason, .. } => Some(reason),
            LineageRecord::MigrateIn { .. } | LineageRecord::MigrateOut { .. } => None,
        }
    }
}

/// Reasons the protocol itself gives (the hooks give their own).
pub mod reason {
    /// The evidence echoed another challenge than the offer's.
    pub const CHALLENGE_MISMATCH: &str = "evidence does not answer this offer's challenge";
    /// The source's deadline for evidence passed.
    pub const NO_EVIDENCE: &str = "no evidence before the deadline";
    /// The source's host cancelled the attempt before sending the package.
    pub const CANCELLED: &str = "cancelled before the package was sent";
    /// The source restarted while offering.
    pub const SOURCE_RESTARTED: &str = "source restarted before sending the package";
    /// The destination got a package or status for an attempt it has no offer for.
    pub const NOT_OFFERED: &str = "no offer for this transfer at the destination";
    /// The package was sealed to another key than this offer's.
    pub const WRONG_KEY: &str = "package sealed to another key than this offer's";
    /// The source asked for the outcome before the package arrived.
    pub const NOT_RECEIVED: &str = "package not received when the source asked";
    /// The destination's offer expired before the package arrived.
    pub const OFFER_EXPIRED: &str = "offer expired at the destination";
    /// The attester answered another offer than the one asked.
    pub const ATTESTER_MISMATCH: &str = "attester answered another offer";
}

// ---------------------------------------------------------------------------------------------
// Source

/// The source's state for one object. Every value is persisted (it is what
/// [`Source::on_restart`] takes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceState {
    /// The object runs here; no attempt in progress.
    Running,
    /// Quiesced at a tick boundary, offer sent, waiting for evidence. Nothing sealed has left:
    /// the source may still resume on its own.
    Offering {
        /// The attempt.
        transfer: TransferId,
        /// The challenge sent.
        challenge: Challenge,
        /// The destination.
        dest: HostId,
    },
    /// The package (sealed to `key`) may have left. The object does not run here, and the
    /// source does not resume on its own: only `Ack` or `Aborted` from the destination ends
    /// this state.
    Sent {
        /// The attempt.
        transfer: TransferId,
        /// The destination.
        dest: HostId,
        /// The destination key the package is sealed to.
        key: KeyId,
        /// The appraisal that allowed it.
        appraisal: AppraisalId,
    },
    /// Tombstone: the destination holds the object; this host refuses to run it again.
    Transferred {
        /// The attempt that moved it.
        transfer: TransferId,
        /// Where it went.
        dest: HostId,
        /// The appraisal that allowed it.
        appraisal: AppraisalId,
    },
}

/// What the source's host must do, in order (see the module rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceEffect {
    /// Stop the object at a tick boundary (before the `Persist` that follows, which holds its
    /// quiesced image).
    StopRunning,
    /// Make `state` (and `lineage`, in the same commit) durable before the next effect.
    Persist {
        /// The new state.
        state: SourceState,
        /// A lineage entry for the object, committed with it.
        lineage: Option<LineageRecord>,
    },
    /// Send to the destination. For `Package`, attach the object sealed to `key` (sealed once
    /// and kept, or sealed again from the frozen image: the object does not change while
    /// `Sent`).
    Send(ToDest),
    /// Resume the object here.
    StartRunning,
}

/// Misuse of [`Source::on_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// An attempt is already in progress, or the object already left.
    NotRunning {
        /// The current state.
        state: SourceState,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NotRunning { state } => {
                write!(f, "cannot start a migration: the object is {state:?}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Deliberate protocol flaws, for showing that the model checker finds forks. Never used
/// outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceFlaw {
    /// Resume on a timeout in `Sent` (the classic fork).
    ResumeOnSentTimeout,
    /// Do nothing on a timeout in `Sent` (stuck once the package or its answer is lost).
    NoRetryInSent,
}

/// The source side of the protocol for one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    state: SourceState,
    flaw: Option<SourceFlaw>,
}

impl Default for Source {
    fn default() -> Self {
        Self::new()
    }
}

impl Source {
    /// A source whose object runs here.
    pub fn new() -> Self {
        Source {
            state: SourceState::Running,
            flaw: None,
        }
    }

    /// Test only: the same machine with a deliberate flaw.
    #[doc(hidden)]
    pub fn with_flaw_for_tests(mut self, flaw: Option<SourceFlaw>) -> Self {
        self.flaw = flaw;
        self
    }

    /// The current state (equal to the last persisted one once the step's effects ran).
    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// Begin an attempt: quiesce, persist `Offering`, send the offer. `transfer` and
    /// `challenge` must be fresh random values.
    pub fn on_start(
        &mut self,
        transfer: TransferId,
        challenge: Challenge,
        dest: HostId,
    ) -> Result<Vec<SourceEffect>, StartError> {
        if self.state != SourceState::Running {
            return Err(StartError::NotRunning {
                state: self.state.clone(),
            });
        }
        self.state = SourceState::Offering {
            transfer,
            challenge,
            dest,
        };
        Ok(vec![
            SourceEffect::StopRunning,
            SourceEffect::Persist {
                state: self.state.clone(),
                lineage: None,
            },
            SourceEffect::Send(ToDest::Offer {
                transfer,
                challenge,
            }),
        ])
    }

    /// A message from the destination. `appraise` checks the evidence (its binding to the
    /// challenge, the TLS exporter, the key and the runtime identity, and the object's
    /// migration policy) and returns the appraisal's digest or the reason for refusing; it is
    /// called only for evidence answering the current offer. Messages of other attempts and
    /// duplicates are ignored.
    pub fn on_message(
        &mut self,
        msg: ToSource,
        appraise: impl FnOnce(&Evidence) -> Result<AppraisalId, String>,
    ) -> Vec<SourceEffect> {
        match (&self.state, msg) {
            (
                SourceState::Offering {
                    transfer,
                    challenge,
                    dest,
                },
                ToSource::Evidence(ev),
            ) if ev.transfer == *transfer => {
                let (transfer, dest) = (*transfer, *dest);
                let verdict = if ev.challenge != *challenge {
                    Err(reason::CHALLENGE_MISMATCH.to_owned())
                } else {
                    appraise(&ev)
                };
                match verdict {
                    Ok(appraisal) => {
                        self.state = SourceState::Sent {
                            transfer,
                            dest,
                            key: ev.key,
                            appraisal,
                        };
                        vec![
                            SourceEffect::Persist {
                                state: self.state.clone(),
                                lineage: None,
                            },
                            SourceEffect::Send(ToDest::Package {
                                transfer,
                                key: ev.key,
                            }),
                        ]
                    }
                    Err(reason) => self.resume(
                        LineageRecord::MigrationRefused {
                            transfer,
                            dest,
                            reason: reason.clone(),
                        },
                        Some(ToDest::Refusal { transfer, reason }),
                    ),
                }
            }
            (
                SourceState::Offering { transfer, dest, .. },
                ToSource::Aborted {
                    transfer: t,
                    reason,
                },
            ) if t == *transfer => {
                let (transfer, dest) = (*transfer, *dest);
                self.resume(
                    LineageRecord::MigrationAborted {
                        transfer,
                        dest,
                        reason,
                    },
                    None,
                )
            }
            (
                SourceState::Sent {
                    transfer,
                    dest,
                    appraisal,
                    ..
                },
                ToSource::Ack { transfer: t },
            ) if t == *transfer => {
                let (transfer, dest, appraisal) = (*transfer, *dest, *appraisal);
                self.state = SourceState::Transferred {
                    transfer,
                    dest,
                    appraisal,
                };
                vec![SourceEffect::Persist {
                    state: self.state.clone(),
                    lineage: Some(LineageRecord::MigrateOut {
                        transfer,
                        dest,
                        appraisal,
                    }),
                }]
            }
            (
                SourceState::Sent { transfer, dest, .. },
                ToSource::Aborted {
                    transfer: t,
                    reason,
                },
            ) if t == *transfer => {
                let (transfer, dest) = (*transfer, *dest);
                self.resume(
                    LineageRecord::MigrationAborted {
                        transfer,
                        dest,
                        reason,
                    },
                    None,
                )
            }
            // Other attempts, duplicates, evidence after the decision, an Ack when not Sent.
            _ => Vec::new(),
        }
    }

    /// The host's retry timer fired. `Offering`: give up (nothing sealed has left) and resume.
    /// `Sent`: send the same package again; never resume.
    pub fn on_timeout(&mut self) -> Vec<SourceEffect> {
        match &self.state {
            SourceState::Offering { transfer, dest, .. } => {
                self.give_up(*transfer, *dest, reason::NO_EVIDENCE)
            }
            SourceState::Sent {
                transfer,
                dest,
                key,
                ..
            } => {
                if self.flaw == Some(SourceFlaw::NoRetryInSent) {
                    return Vec::new();
                }
                if self.flaw == Some(SourceFlaw::ResumeOnSentTimeout) {
                    let (transfer, dest) = (*transfer, *dest);
                    return self.resume(
                        LineageRecord::MigrationAborted {
                            transfer,
                            dest,
                            reason: "flaw: resumed on timeout".to_owned(),
                        },
                        None,
                    );
                }
                vec![SourceEffect::Send(ToDest::Package {
                    transfer: *transfer,
                    key: *key,
                })]
            }
            SourceState::Running | SourceState::Transferred { .. } => Vec::new(),
        }
    }

    /// The host wants the attempt over (operator, drain deadline). `Offering`: give up and
    /// resume. `Sent`: ask the destination to decide (`Status`); the source still waits for
    /// its answer.
    pub fn cancel(&mut self) -> Vec<SourceEffect> {
        match &self.state {
            SourceState::Offering { transfer, dest, .. } => {
                self.give_up(*transfer, *dest, reason::CANCELLED)
            }
            SourceState::Sent { transfer, .. } => vec![SourceEffect::Send(ToDest::Status {
                transfer: *transfer,
            })],
            SourceState::Running | SourceState::Transferred { .. } => Vec::new(),
        }
    }

    /// Rebuild after a crash from the last persisted state. `Offering` resumes (nothing sealed
    /// had left); `Sent` keeps waiting and sends the package again; `Transferred` stays a
    /// tombstone.
    pub fn on_restart(persisted: SourceState) -> (Self, Vec<SourceEffect>) {
        let mut source = Source {
            state: persisted,
            flaw: None,
        };
        let effects = match &source.state {
            SourceState::Running => vec![SourceEffect::StartRunning],
            SourceState::Offering { transfer, dest, .. } => {
                let (transfer, dest) = (*transfer, *dest);
                source.give_up(transfer, dest, reason::SOURCE_RESTARTED)
            }
            SourceState::Sent { transfer, key, .. } => vec![SourceEffect::Send(ToDest::Package {
                transfer: *transfer,
                key: *key,
            })],
            SourceState::Transferred { .. } => Vec::new(),
        };
        (source, effects)
    }

    fn give_up(&mut self, transfer: TransferId, dest: HostId, why: &str) -> Vec<SourceEffect> {
        self.resume(
            LineageRecord::MigrationAborted {
                transfer,
                dest,
                reason: why.to_owned(),
            },
            Some(ToDest::Refusal {
                transfer,
                reason: why.to_owned(),
            }),
        )
    }

    fn resume(&mut self, lineage: LineageRecord, tell: Option<ToDest>) -> Vec<SourceEffect> {
        self.state = SourceState::Running;
        let mut effects = vec![SourceEffect::Persist {
            state: SourceState::Running,
            lineage: Some(lineage),
        }];
        effects.extend(tell.map(SourceEffect::Send));
        effects.push(SourceEffect::StartRunning);
        effects
    }
}

// ---------------------------------------------------------------------------------------------
// Destination

/// The destination's state for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DestState {
    /// Evidence sent, HPKE private key held in memory. Never persisted: a destination that
    /// restarts has lost the key, so a package sealed to it could not be opened anyway; the
    /// attempt then aborts when the package or a status question arrives.
    Offered {
        /// The offer's challenge.
        challenge: Challenge,
        /// The evidence sent (sent again, unchanged, for a duplicate offer).
        evidence: Evidence,
    },
    /// Durable: the object of this attempt is stored here and runs here. Final.
    Received {
        /// The key it was sealed to.
        key: KeyId,
        /// The destination's evidence the `migrate-in` entry is bound to.
        evidence: EvidenceId,
    },
    /// Durable: this attempt will never be accepted here. Final.
    Aborted {
        /// Why.
        reason: String,
    },
}

/// What the destination's host must do, in order (see the module rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DestEffect {
    /// Make the attempt's new state (and `lineage`, in the same commit) durable before the next
    /// effect. For `Received`, the commit holds the opened object.
    Persist {
        /// The attempt.
        transfer: TransferId,
        /// Its new state (`Received` or `Aborted`; `Offered` is never persisted).
        state: DestState,
        /// A lineage entry for the object, committed with it.
        lineage: Option<LineageRecord>,
    },
    /// Send to the source.
    Send(ToSource),
    /// Start running the object received under this attempt.
    StartRunning {
        /// The attempt.
        transfer: TransferId,
    },
}

/// What the destination's host provides: attestation and package checking.
pub trait DestinationEnv {
    /// Make a fresh HPKE key pair for `transfer` (private half in memory only) and evidence
    /// whose report data commits to `challenge`, the TLS exporter, the public key and the
    /// runtime identity. An error refuses the offer (the attempt is recorded aborted).
    fn attest(&mut self, transfer: TransferId, challenge: &Challenge) -> Result<Evidence, String>;

    /// Open the package of `transfer` (sealed to `key`) and verify the object's lineage and
    /// policy; on success the host holds the opened object for the `Persist` that follows. An
    /// error aborts the attempt.
    fn accept(&mut self, transfer: TransferId, key: &KeyId) -> Result<(), String>;
}

/// Deliberate protocol flaws, for showing that the model checker finds forks and losses. Never
/// used outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DestFlaw {
    /// Send the `Ack` before the `Received` state is persisted.
    AckBeforePersist,
    /// Answer `Aborted` to a status question without recording the abort.
    AbortNotRecorded,
}

/// The destination side of the protocol: all attempts this host was offered.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    transfers: BTreeMap<TransferId, DestState>,
    flaw: Option<DestFlaw>,
}

impl Destination {
    /// A destination that was never offered anything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Test only: the same machine with a deliberate flaw.
    #[doc(hidden)]
    pub fn with_flaw_for_tests(mut self, flaw: Option<DestFlaw>) -> Self {
        self.flaw = flaw;
        self
    }

    /// Every attempt this destination knows, with its state.
    pub fn transfers(&self) -> &BTreeMap<TransferId, DestState> {
        &self.transfers
    }

    /// One attempt's state.
    pub fn state(&self, transfer: TransferId) -> Option<&DestState> {
        self.transfers.get(&transfer)
    }

    /// A message from the source.
    pub fn on_message(&mut self, msg: ToDest, env: &mut impl DestinationEnv) -> Vec<DestEffect> {
        let transfer = msg.transfer();
        let current = self.transfers.get(&transfer).cloned();
        match (msg, current) {
            (ToDest::Offer { challenge, .. }, None) => match env.attest(transfer, &challenge) {
                Ok(evidence)
                    if evidence.transfer == transfer && evidence.challenge == challenge =>
                {
                    self.transfers.insert(
                        transfer,
                        DestState::Offered {
                            challenge,
                            evidence: evidence.clone(),
                        },
                    );
                    vec![DestEffect::Send(ToSource::Evidence(evidence))]
                }
                Ok(_) => self.abort(transfer, reason::ATTESTER_MISMATCH.to_owned(), true),
                Err(why) => self.abort(transfer, why, true),
            },
            (
                ToDest::Offer { challenge, .. },
                Some(DestState::Offered {
                    challenge: offered,
                    evidence,
                }),
            ) => {
                if challenge == offered {
                    vec![DestEffect::Send(ToSource::Evidence(evidence))]
                } else {
                    Vec::new()
                }
            }
            (ToDest::Package { key, .. }, Some(DestState::Offered { evidence, .. })) => {
                if key != evidence.key {
                    return self.abort(transfer, reason::WRONG_KEY.to_owned(), true);
                }
                match env.accept(transfer, &key) {
                    Ok(()) => {
                        let state = DestState::Received {
                            key,
                            evidence: evidence.evidence,
                        };
                        self.transfers.insert(transfer, state.clone());
                        let persist = DestEffect::Persist {
                            transfer,
                            state,
                            lineage: Some(LineageRecord::MigrateIn {
                                transfer,
                                evidence: evidence.evidence,
                            }),
                        };
                        let ack = DestEffect::Send(ToSource::Ack { transfer });
                        let start = DestEffect::StartRunning { transfer };
                        if self.flaw == Some(DestFlaw::AckBeforePersist) {
                            vec![ack, persist, start]
                        } else {
                            vec![persist, ack, start]
                        }
                    }
                    Err(why) => self.abort(transfer, why, true),
                }
            }
            (ToDest::Package { .. }, None) => {
                self.abort(transfer, reason::NOT_OFFERED.to_owned(), true)
            }
            (ToDest::Status { .. }, None) => {
                self.abort(transfer, reason::NOT_OFFERED.to_owned(), true)
            }
            (ToDest::Status { .. }, Some(DestState::Offered { .. })) => {
                if self.flaw == Some(DestFlaw::AbortNotRecorded) {
                    return vec![DestEffect::Send(ToSource::Aborted {
                        transfer,
                        reason: reason::NOT_RECEIVED.to_owned(),
                    })];
                }
                self.abort(transfer, reason::NOT_RECEIVED.to_owned(), true)
            }
            (ToDest::Refusal { reason, .. }, None | Some(DestState::Offered { .. })) => {
                self.abort(transfer, reason, false)
            }
            (ToDest::Package { .. } | ToDest::Status { .. }, Some(DestState::Received { .. })) => {
                vec![DestEffect::Send(ToSource::Ack { transfer })]
            }
            (
                ToDest::Offer { .. } | ToDest::Package { .. } | ToDest::Status { .. },
                Some(DestState::Aborted { reason }),
            ) => vec![DestEffect::Send(ToSource::Aborted { transfer, reason })],
            // A stale offer for a received attempt; a refusal after the decision.
            (ToDest::Offer { .. }, Some(DestState::Received { .. }))
            | (
                ToDest::Refusal { .. },
                Some(DestState::Received { .. } | DestState::Aborted { .. }),
            ) => Vec::new(),
        }
    }

    /// The host's offer timer for `transfer` fired: an offer with no package yet is aborted
    /// (durably) and the source told.
    pub fn on_timeout(&mut self, transfer: TransferId) -> Vec<DestEffect> {
        match self.transfers.get(&transfer) {
            Some(DestState::Offered { .. }) => {
                self.abort(transfer, reason::OFFER_EXPIRED.to_owned(), true)
            }
            _ => Vec::new(),
        }
    }

    /// Rebuild after a crash from the persisted attempts (`Offered` entries, if any, are
    /// dropped: their keys are gone). Every received object starts running again.
    pub fn on_restart(persisted: BTreeMap<TransferId, DestState>) -> (Self, Vec<DestEffect>) {
        let transfers: BTreeMap<_, _> = persisted
            .into_iter()
            .filter(|(_, s)| !matches!(s, DestState::Offered { .. }))
            .collect();
        let effects = transfers
            .iter()
            .filter(|(_, s)| matches!(s, DestState::Received { .. }))
            .map(|(t, _)| DestEffect::StartRunning { transfer: *t })
            .collect();
        (
            Destination {
                transfers,
                flaw: None,
            },
            effects,
        )
    }

    fn abort(&mut self, transfer: TransferId, why: String, answer: bool) -> Vec<DestEffect> {
        let state = DestState::Aborted {
            reason: why.clone(),
        };
        self.transfers.insert(transfer, state.clone());
        let mut effects = vec![DestEffect::Persist {
            transfer,
            state,
            lineage: None,
        }];
        if answer {
            effects.push(DestEffect::Send(ToSource::Aborted {
                transfer,
                reason: why,
            }));
        }
        effects
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants

/// The ownership invariants of one object between one source and one destination, for tests
/// and model checking. `source` and `dest` are either both the in-memory states or both the
/// persisted ones; `source_runs` / `dest_runs` say who runs the object now (`dest_runs` names
/// the attempt it runs under).
///
/// Checks: at most one side runs it; the source runs it only in `Running`; the destination
/// runs it only under an attempt it `Received` (never one it `Aborted`); an attempt the
/// destination received is one the source sent and has not resumed from (no fork); and a
/// source tombstone names an attempt the destination received (no loss).
pub fn owner_invariants(
    source: &SourceState,
    source_runs: bool,
    dest: &BTreeMap<TransferId, DestState>,
    dest_runs: Option<TransferId>,
) -> Result<(), String> {
    if source_runs && dest_runs.is_some() {
        return Err("fork: both source and destination run the object".to_owned());
    }
    if source_runs && *source != SourceState::Running {
        return Err(format!("the source runs the object while {source:?}"));
    }
    if let Some(t) = dest_runs {
        match dest.get(&t) {
            Some(DestState::Received { .. }) => {}
            other => {
                return Err(format!(
                    "the destination runs {t:?} which it holds as {other:?}"
                ))
            }
        }
    }
    for (t, s) in dest {
        if matches!(s, DestState::Received { .. }) {
            let held = match source {
                SourceState::Sent { transfer, .. } | SourceState::Transferred { transfer, .. } => {
                    transfer == t
                }
                SourceState::Running | SourceState::Offering { .. } => false,
            };
            if !held {
                return Err(format!(
                    "fork: the destination received {t:?} while the source is {source:?}"
                ));
            }
        }
    }
    if let SourceState::Transferred { transfer, .. } = source {
        if !matches!(dest.get(transfer), Some(DestState::Received { .. })) {
            return Err(format!(
                "loss: the source is a tombstone for {transfer:?} but the destination holds {:?}",
                dest.get(transfer)
            ));
        }
    }
    Ok(())
}
