#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The migration protocol: unit tests of each rule, an exhaustive bounded model check of one
//! object between one source and one destination (safety in every reachable state, and
//! completion from every reachable state once losses and crashes stop), the same checker run
//! against deliberately broken machines, and random deep walks.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use proptest::prelude::*;
use sojourn_migration::protocol::*;

const DEST: HostId = HostId([0xd5; 32]);
const APPRAISAL: AppraisalId = AppraisalId([0xaa; 32]);

fn tid(i: u8) -> TransferId {
    TransferId([i + 1; 16])
}

fn chal(i: u8) -> Challenge {
    Challenge([0xc0 + i; 32])
}

fn key(k: u8) -> KeyId {
    KeyId([k; 32])
}

// ---------------------------------------------------------------------------------------------
// Unit tests

/// A destination environment that hands out keys 1, 2, ... and counts its calls.
#[derive(Default)]
struct CountingEnv {
    attests: u8,
    accepts: u8,
    attest_fails: bool,
    accept_fails: bool,
}

impl DestinationEnv for CountingEnv {
    fn attest(&mut self, transfer: TransferId, challenge: &Challenge) -> Result<Evidence, String> {
        if self.attest_fails {
            return Err("no attester".to_owned());
        }
        self.attests += 1;
        Ok(Evidence {
            transfer,
            challenge: *challenge,
            key: key(self.attests),
            evidence: EvidenceId([self.attests; 32]),
        })
    }

    fn accept(&mut self, _transfer: TransferId, _key: &KeyId) -> Result<(), String> {
        if self.accept_fails {
            return Err("lineage does not verify".to_owned());
        }
        self.accepts += 1;
        Ok(())
    }
}

fn offer(i: u8) -> ToDest {
    ToDest::Offer {
        transfer: tid(i),
        challenge: chal(i),
    }
}

fn aborted_persist(effects: &[DestEffect], t: TransferId) -> bool {
    effects.iter().any(|e| {
        matches!(e, DestEffect::Persist { transfer, state: DestState::Aborted { .. }, .. } if *transfer == t)
    })
}

fn sends_aborted(effects: &[DestEffect], t: TransferId) -> bool {
    effects.iter().any(
        |e| matches!(e, DestEffect::Send(ToSource::Aborted { transfer, .. }) if *transfer == t),
    )
}

fn ok_appraisal(_: &Evidence) -> Result<AppraisalId, String> {
    Ok(APPRAISAL)
}

#[test]
fn happy_path_effects_in_persist_before_send_order() {
    let mut src = Source::new();
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();

    let e = src.on_start(tid(0), chal(0), DEST).unwrap();
    assert_eq!(
        e,
        vec![
            SourceEffect::StopRunning,
            SourceEffect::Persist {
                state: SourceState::Offering {
                    transfer: tid(0),
                    challenge: chal(0),
                    dest: DEST
                },
                lineage: None
            },
            SourceEffect::Send(offer(0)),
        ]
    );

    let e = dst.on_message(offer(0), &mut env);
    let [DestEffect::Send(ToSource::Evidence(ev))] = e.as_slice() else {
        panic!("offer answered with {e:?}")
    };
    // `Offered` is not persisted.
    assert!(matches!(dst.state(tid(0)), Some(DestState::Offered { .. })));

    let e = src.on_message(ToSource::Evidence(ev.clone()), ok_appraisal);
    let sent = SourceState::Sent {
        transfer: tid(0),
        dest: DEST,
        key: ev.key,
        appraisal: APPRAISAL,
    };
    let package = ToDest::Package {
        transfer: tid(0),
        key: ev.key,
    };
    assert_eq!(
        e,
        vec![
            SourceEffect::Persist {
                state: sent.clone(),
                lineage: None
            },
            SourceEffect::Send(package.clone()),
        ]
    );

    let e = dst.on_message(package, &mut env);
    let received = DestState::Received {
        key: ev.key,
        evidence: ev.evidence,
    };
    assert_eq!(
        e,
        vec![
            DestEffect::Persist {
                transfer: tid(0),
                state: received,
                lineage: Some(LineageRecord::MigrateIn {
                    transfer: tid(0),
                    evidence: ev.evidence
                }),
            },
            DestEffect::Send(ToSource::Ack { transfer: tid(0) }),
            DestEffect::StartRunning { transfer: tid(0) },
        ]
    );

    let e = src.on_message(ToSource::Ack { transfer: tid(0) }, |_| {
        panic!("no appraisal for an ack")
    });
    let tomb = SourceState::Transferred {
        transfer: tid(0),
        dest: DEST,
        appraisal: APPRAISAL,
    };
    let out = LineageRecord::MigrateOut {
        transfer: tid(0),
        dest: DEST,
        appraisal: APPRAISAL,
    };
    assert_eq!(out.kind(), "migrate-out");
    assert_eq!(
        e,
        vec![SourceEffect::Persist {
            state: tomb.clone(),
            lineage: Some(out)
        }]
    );
    // The tombstone refuses a new attempt and never restarts the object.
    assert!(src.on_start(tid(1), chal(1), DEST).is_err());
    assert_eq!(Source::on_restart(tomb).1, vec![]);
}

#[test]
fn refusal_path_records_the_reason_sends_only_the_refusal_and_resumes() {
    let mut src = Source::new();
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    src.on_start(tid(0), chal(0), DEST).unwrap();
    let e = dst.on_message(offer(0), &mut env);
    let [DestEffect::Send(ToSource::Evidence(ev))] = e.as_slice() else {
        panic!("{e:?}")
    };
    let e = src.on_message(ToSource::Evidence(ev.clone()), |_| {
        Err("runtime svn 3 below the policy minimum 4".to_owned())
    });
    let why = "runtime svn 3 below the policy minimum 4".to_owned();
    assert_eq!(
        e,
        vec![
            SourceEffect::Persist {
                state: SourceState::Running,
                lineage: Some(LineageRecord::MigrationRefused {
                    transfer: tid(0),
                    dest: DEST,
                    reason: why.clone()
                }),
            },
            SourceEffect::Send(ToDest::Refusal {
                transfer: tid(0),
                reason: why.clone()
            }),
            SourceEffect::StartRunning,
        ]
    );
    // The destination records the abort (durably, so a stray package is refused) and says
    // nothing back.
    let e = dst.on_message(
        ToDest::Refusal {
            transfer: tid(0),
            reason: why.clone(),
        },
        &mut env,
    );
    assert_eq!(
        e,
        vec![DestEffect::Persist {
            transfer: tid(0),
            state: DestState::Aborted { reason: why },
            lineage: None
        }]
    );
}

#[test]
fn evidence_for_another_challenge_is_refused_without_appraisal() {
    let mut src = Source::new();
    src.on_start(tid(0), chal(0), DEST).unwrap();
    let ev = Evidence {
        transfer: tid(0),
        challenge: chal(9),
        key: key(1),
        evidence: EvidenceId([1; 32]),
    };
    let e = src.on_message(ToSource::Evidence(ev), |_| panic!("appraised"));
    assert!(e.contains(&SourceEffect::StartRunning));
    assert_eq!(src.state(), &SourceState::Running);
}

#[test]
fn duplicate_offer_sends_the_same_evidence_and_attests_once() {
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    let first = dst.on_message(offer(0), &mut env);
    let second = dst.on_message(offer(0), &mut env);
    assert_eq!(first, second);
    assert_eq!(env.attests, 1);
    // The same id with another challenge is not an offer we answer.
    let other = dst.on_message(
        ToDest::Offer {
            transfer: tid(0),
            challenge: chal(7),
        },
        &mut env,
    );
    assert!(other.is_empty());
}

#[test]
fn duplicate_package_gets_the_same_ack_and_persists_once() {
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    dst.on_message(offer(0), &mut env);
    let package = ToDest::Package {
        transfer: tid(0),
        key: key(1),
    };
    let first = dst.on_message(package.clone(), &mut env);
    assert_eq!(first.len(), 3);
    let again = dst.on_message(package.clone(), &mut env);
    assert_eq!(
        again,
        vec![DestEffect::Send(ToSource::Ack { transfer: tid(0) })]
    );
    assert_eq!(env.accepts, 1);
    // Also after a restart, and a status question gets the same answer.
    let (mut dst, effects) = Destination::on_restart(dst.transfers().clone());
    assert_eq!(effects, vec![DestEffect::StartRunning { transfer: tid(0) }]);
    assert_eq!(dst.on_message(package, &mut env), again);
    assert_eq!(
        dst.on_message(ToDest::Status { transfer: tid(0) }, &mut env),
        again
    );
    // A stale refusal or offer does not demote a received attempt.
    assert!(dst
        .on_message(
            ToDest::Refusal {
                transfer: tid(0),
                reason: "x".into()
            },
            &mut env
        )
        .is_empty());
    assert!(dst.on_message(offer(0), &mut env).is_empty());
    assert!(matches!(
        dst.state(tid(0)),
        Some(DestState::Received { .. })
    ));
}

#[test]
fn late_package_after_abort_is_refused_forever() {
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    dst.on_message(offer(0), &mut env);
    let e = dst.on_message(ToDest::Status { transfer: tid(0) }, &mut env);
    assert!(aborted_persist(&e, tid(0)) && sends_aborted(&e, tid(0)));
    let package = ToDest::Package {
        transfer: tid(0),
        key: key(1),
    };
    let e = dst.on_message(package.clone(), &mut env);
    assert!(sends_aborted(&e, tid(0)));
    assert!(!e.iter().any(|e| matches!(e, DestEffect::Persist { .. })));
    assert_eq!(env.accepts, 0);
    // After a restart too, and a duplicate offer does not reopen it.
    let (mut dst, effects) = Destination::on_restart(dst.transfers().clone());
    assert!(effects.is_empty());
    assert!(sends_aborted(&dst.on_message(package, &mut env), tid(0)));
    assert!(sends_aborted(&dst.on_message(offer(0), &mut env), tid(0)));
    assert_eq!(env.attests, 1);
}

#[test]
fn status_for_unknown_transfer_records_abort_durably() {
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    let e = dst.on_message(ToDest::Status { transfer: tid(3) }, &mut env);
    assert_eq!(
        e,
        vec![
            DestEffect::Persist {
                transfer: tid(3),
                state: DestState::Aborted {
                    reason: reason::NOT_OFFERED.to_owned()
                },
                lineage: None
            },
            DestEffect::Send(ToSource::Aborted {
                transfer: tid(3),
                reason: reason::NOT_OFFERED.to_owned()
            }),
        ]
    );
    // A package for an attempt never offered is refused the same way.
    let e = dst.on_message(
        ToDest::Package {
            transfer: tid(4),
            key: key(9),
        },
        &mut env,
    );
    assert!(aborted_persist(&e, tid(4)) && sends_aborted(&e, tid(4)));
}

#[test]
fn destination_restart_forgets_offers_so_their_packages_abort() {
    let mut dst = Destination::new();
    let mut env = CountingEnv::default();
    dst.on_message(offer(0), &mut env);
    // `Offered` was never persisted: the restarted destination starts from nothing.
    let (mut dst, _) = Destination::on_restart(BTreeMap::new());
    let e = dst.on_message(
        ToDest::Package {
            transfer: tid(0),
            key: key(1),
        },
        &mut env,
    );
    assert!(aborted_persist(&e, tid(0)) && sends_aborted(&e, tid(0)));
    // A duplicate offer arriving after a restart makes a new key; a package sealed to the old
    // key then aborts instead of being opened.
    let (mut dst, _) = Destination::on_restart(BTreeMap::new());
    dst.on_message(offer(0), &mut env);
    let e = dst.on_message(
        ToDest::Package {
            transfer: tid(0),
            key: key(1),
        },
        &mut env,
    );
    assert!(sends_aborted(&e, tid(0)));
    assert!(
        matches!(dst.state(tid(0)), Some(DestState::Aborted { reason }) if reason == reason::WRONG_KEY)
    );
}

#[test]
fn failing_hooks_abort_durably() {
    let mut dst = Destination::new();
    let mut env = CountingEnv {
        attest_fails: true,
        ..CountingEnv::default()
    };
    let e = dst.on_message(offer(0), &mut env);
    assert!(aborted_persist(&e, tid(0)) && sends_aborted(&e, tid(0)));
    env.attest_fails = false;
    env.accept_fails = true;
    dst.on_message(offer(1), &mut env);
    let e = dst.on_message(
        ToDest::Package {
            transfer: tid(1),
            key: key(1),
        },
        &mut env,
    );
    assert!(aborted_persist(&e, tid(1)) && sends_aborted(&e, tid(1)));
    assert!(!e
        .iter()
        .any(|e| matches!(e, DestEffect::StartRunning { .. })));
}

#[test]
fn source_in_sent_never_resumes_on_its_own() {
    let mut src = Source::new();
    src.on_start(tid(0), chal(0), DEST).unwrap();
    let ev = Evidence {
        transfer: tid(0),
        challenge: chal(0),
        key: key(1),
        evidence: EvidenceId([1; 32]),
    };
    src.on_message(ToSource::Evidence(ev.clone()), ok_appraisal);
    let package = ToDest::Package {
        transfer: tid(0),
        key: key(1),
    };
    for _ in 0..3 {
        assert_eq!(src.on_timeout(), vec![SourceEffect::Send(package.clone())]);
    }
    assert_eq!(
        src.cancel(),
        vec![SourceEffect::Send(ToDest::Status { transfer: tid(0) })]
    );
    // Duplicate evidence and another attempt's answers change nothing.
    assert!(src
        .on_message(ToSource::Evidence(ev), ok_appraisal)
        .is_empty());
    assert!(src
        .on_message(ToSource::Ack { transfer: tid(5) }, ok_appraisal)
        .is_empty());
    assert!(src
        .on_message(
            ToSource::Aborted {
                transfer: tid(5),
                reason: "x".into()
            },
            ok_appraisal
        )
        .is_empty());
    let (again, effects) = Source::on_restart(src.state().clone());
    assert_eq!(effects, vec![SourceEffect::Send(package)]);
    assert!(matches!(again.state(), SourceState::Sent { .. }));
    // Only the destination's durable abort lets it resume, and the lineage says so.
    let e = src.on_message(
        ToSource::Aborted {
            transfer: tid(0),
            reason: reason::NOT_RECEIVED.into(),
        },
        ok_appraisal,
    );
    assert_eq!(
        e,
        vec![
            SourceEffect::Persist {
                state: SourceState::Running,
                lineage: Some(LineageRecord::MigrationAborted {
                    transfer: tid(0),
                    dest: DEST,
                    reason: reason::NOT_RECEIVED.into()
                })
            },
            SourceEffect::StartRunning
        ]
    );
}

#[test]
fn source_restarting_while_offering_resumes_and_tells_the_destination() {
    let offering = SourceState::Offering {
        transfer: tid(0),
        challenge: chal(0),
        dest: DEST,
    };
    let (src, effects) = Source::on_restart(offering);
    assert_eq!(src.state(), &SourceState::Running);
    assert_eq!(
        effects,
        vec![
            SourceEffect::Persist {
                state: SourceState::Running,
                lineage: Some(LineageRecord::MigrationAborted {
                    transfer: tid(0),
                    dest: DEST,
                    reason: reason::SOURCE_RESTARTED.into()
                })
            },
            SourceEffect::Send(ToDest::Refusal {
                transfer: tid(0),
                reason: reason::SOURCE_RESTARTED.into()
            }),
            SourceEffect::StartRunning,
        ]
    );
    let (_, effects) = Source::on_restart(SourceState::Running);
    assert_eq!(effects, vec![SourceEffect::StartRunning]);
}

// ---------------------------------------------------------------------------------------------
// The model
//
// One object, one source, one destination. A world is both machines (in memory), what each
// side has persisted, who runs the object, and the network.
//
// Safety search: the network is the set of every message ever sent, and any of them may be
// delivered at any time, any number of times, in any order. Over a channel that loses,
// duplicates, reorders and delays messages that is exactly what can happen: a lost message is
// one never delivered, a duplicate one delivered twice (removing messages from the set could
// only cut behaviours, never add one). Crashes hit either side, idle or after any prefix of a
// step's effects (so between a `Persist` and the `Send` after it, or between a `Send` and a
// `Persist` a flawed machine puts after it), within a budget; the restart runs `on_restart` on
// what was persisted, and its own effects may be cut short by another crash. Hooks (appraisal,
// attestation, package check) may fail.
//
// Completion search: from every world the safety search reached, with the network emptied
// (every message in flight lost; the hardest case, since the scheduler may leave any message
// undelivered) and no more crashes or losses, the scheduler picks deliveries and source
// timeouts and the environment picks hook results; a settled world (exactly one side runs the
// object, the source is `Running` or `Transferred`) must be reachable whatever the environment
// picks (the attractor of the settled worlds in that game must hold every start).

#[derive(Clone, Copy, Debug)]
struct Config {
    /// Migration attempts the source may start (each with a fresh id).
    attempts: u8,
    /// Crashes (of either side, at any point of any step) in one run.
    crashes: u8,
    /// Appraisal, attestation and package checks may fail.
    hook_failures: bool,
    /// The source's host may cancel (sends `Status` when `Sent`).
    cancel: bool,
    /// The destination's offer timer may fire.
    dest_timeouts: bool,
    /// Treat a `Send` or `StartRunning` before a `Persist` in one step as a violation.
    lint_order: bool,
    /// Check completion from every reachable state.
    liveness: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Safety,
    Completion,
}

#[derive(Clone, Copy, Debug, Default)]
struct Flaws {
    source: Option<SourceFlaw>,
    dest: Option<DestFlaw>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    ToDest(ToDest),
    ToSource(ToSource),
}

/// One object, one source, one destination, the network and the bounds used so far.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    src: Source,
    src_disk: SourceState,
    src_runs: bool,
    dst: Destination,
    /// Shared between worlds until one changes (`Rc::make_mut`): cloning worlds is most of
    /// the search's time.
    dst_disk: Rc<BTreeMap<TransferId, DestState>>,
    dst_runs: Option<TransferId>,
    net: Rc<BTreeSet<Msg>>,
    attempts: u8,
    crashes: u8,
    keys: u8,
}

impl World {
    fn initial(flaws: Flaws) -> Self {
        World {
            src: Source::new().with_flaw_for_tests(flaws.source),
            src_disk: SourceState::Running,
            src_runs: true,
            dst: Destination::new().with_flaw_for_tests(flaws.dest),
            dst_disk: Rc::default(),
            dst_runs: None,
            net: Rc::default(),
            attempts: 0,
            crashes: 0,
            keys: 0,
        }
    }

    /// Exactly one side runs the object and the source is done with attempts.
    fn settled(&self) -> bool {
        (self.src_runs != self.dst_runs.is_some())
            && matches!(
                self.src.state(),
                SourceState::Running | SourceState::Transferred { .. }
            )
    }
}

#[derive(Clone, Debug)]
enum Label {
    Start(TransferId),
    Deliver {
        msg: Msg,
        hooks_fail: bool,
    },
    SourceTimeout,
    SourceCancel,
    DestTimeout(TransferId),
    Crash(&'static str),
    CrashMidStep {
        step: Box<Label>,
        side: &'static str,
        after_effects: usize,
    },
}

impl Label {
    /// Actions after which a settled world must stay settled.
    fn keeps_settled(&self) -> bool {
        !matches!(
            self,
            Label::Start(_) | Label::Crash(_) | Label::CrashMidStep { .. }
        )
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Start(t) => write!(f, "source starts attempt {t:?}"),
            Label::Deliver { msg, hooks_fail } => {
                let to = match msg {
                    Msg::ToDest(m) => format!("destination <- {m:?}"),
                    Msg::ToSource(m) => format!("source <- {m:?}"),
                };
                let fails = if *hooks_fail { " (hook fails)" } else { "" };
                write!(f, "deliver {to}{fails}")
            }
            Label::SourceTimeout => write!(f, "source timeout"),
            Label::SourceCancel => write!(f, "source cancel"),
            Label::DestTimeout(t) => write!(f, "destination offer timeout {t:?}"),
            Label::Crash(side) => write!(f, "{side} crashes and restarts"),
            Label::CrashMidStep {
                step,
                side,
                after_effects,
            } => write!(
                f,
                "{step}, but the {side} crashes after {after_effects} effect(s) and restarts"
            ),
        }
    }
}

type Outcome = (World, Vec<String>);

struct Action {
    label: Label,
    /// One per choice of the environment (hook results) or per crash point.
    outcomes: Vec<Outcome>,
}

struct ModelEnv<'a> {
    keys: &'a mut u8,
    attest_ok: bool,
    accept_ok: bool,
    called: bool,
}

impl DestinationEnv for ModelEnv<'_> {
    fn attest(&mut self, transfer: TransferId, challenge: &Challenge) -> Result<Evidence, String> {
        self.called = true;
        if !self.attest_ok {
            return Err("attestation unavailable".to_owned());
        }
        *self.keys += 1;
        Ok(Evidence {
            transfer,
            challenge: *challenge,
            key: key(*self.keys),
            evidence: EvidenceId([*self.keys; 32]),
        })
    }

    fn accept(&mut self, _transfer: TransferId, _key: &KeyId) -> Result<(), String> {
        self.called = true;
        if self.accept_ok {
            Ok(())
        } else {
            Err("lineage or policy check failed".to_owned())
        }
    }
}

fn check(w: &World, v: &mut Vec<String>) {
    if let Err(e) = owner_invariants(w.src.state(), w.src_runs, w.dst.transfers(), w.dst_runs) {
        v.push(format!("in memory: {e}"));
    }
    if let Err(e) = owner_invariants(&w.src_disk, false, &w.dst_disk, None) {
        v.push(format!("on disk: {e}"));
    }
}

/// Persist-before-send: within one step, no `Persist` follows a `Send` or a `StartRunning`.
fn order_lint<E>(
    effects: &[E],
    is_persist: impl Fn(&E) -> bool,
    is_output: impl Fn(&E) -> bool,
    v: &mut Vec<String>,
) {
    if let Some(first_out) = effects.iter().position(is_output) {
        if effects.iter().skip(first_out).any(is_persist) {
            v.push("a step sends or starts before it persists".to_owned());
        }
    }
}

fn send(w: &mut World, msg: Msg) {
    if !w.net.contains(&msg) {
        Rc::make_mut(&mut w.net).insert(msg);
    }
}

fn apply_src(w: &mut World, effects: &[SourceEffect], v: &mut Vec<String>) {
    for e in effects {
        match e {
            SourceEffect::StopRunning => w.src_runs = false,
            SourceEffect::StartRunning => w.src_runs = true,
            SourceEffect::Send(m) => {
                send(w, Msg::ToDest(m.clone()));
            }
            SourceEffect::Persist { state, lineage } => {
                let old = &w.src_disk;
                if matches!(old, SourceState::Transferred { .. }) && old != state {
                    v.push(format!("tombstone revived: {old:?} -> {state:?}"));
                }
                let left_attempt =
                    matches!(old, SourceState::Offering { .. } | SourceState::Sent { .. })
                        && *state == SourceState::Running;
                if left_attempt
                    && !matches!(
                        lineage,
                        Some(
                            LineageRecord::MigrationAborted { .. }
                                | LineageRecord::MigrationRefused { .. }
                        )
                    )
                {
                    v.push(format!("attempt ended without a lineage record: {old:?}"));
                }
                if let SourceState::Transferred { transfer, .. } = state {
                    let named = matches!(
                        lineage,
                        Some(LineageRecord::MigrateOut { transfer: t, .. }) if t == transfer
                    );
                    if !named && old != state {
                        v.push("tombstone without migrate-out".to_owned());
                    }
                }
                w.src_disk = state.clone();
            }
        }
    }
}

fn apply_dst(w: &mut World, effects: &[DestEffect], v: &mut Vec<String>) {
    for e in effects {
        match e {
            DestEffect::StartRunning { transfer } => w.dst_runs = Some(*transfer),
            DestEffect::Send(m) => {
                send(w, Msg::ToSource(m.clone()));
            }
            DestEffect::Persist {
                transfer,
                state,
                lineage,
            } => {
                if matches!(state, DestState::Offered { .. }) {
                    v.push("an offer was persisted".to_owned());
                }
                if let Some(old) = w.dst_disk.get(transfer) {
                    if old != state {
                        v.push(format!(
                            "final record rewritten for {transfer:?}: {old:?} -> {state:?}"
                        ));
                    }
                }
                let named = matches!(
                    lineage,
                    Some(LineageRecord::MigrateIn { transfer: t, .. }) if t == transfer
                );
                if matches!(state, DestState::Received { .. }) && !named {
                    v.push("received without migrate-in".to_owned());
                }
                Rc::make_mut(&mut w.dst_disk).insert(*transfer, state.clone());
            }
        }
    }
}

/// Which side a step ran on.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Dest,
}

enum Effects {
    Source(Vec<SourceEffect>),
    Dest(Vec<DestEffect>),
}

impl Effects {
    fn len(&self) -> usize {
        match self {
            Effects::Source(e) => e.len(),
            Effects::Dest(e) => e.len(),
        }
    }

    fn side(&self) -> Side {
        match self {
            Effects::Source(_) => Side::Source,
            Effects::Dest(_) => Side::Dest,
        }
    }

    fn apply(&self, w: &mut World, upto: usize, v: &mut Vec<String>) {
        match self {
            Effects::Source(e) => apply_src(w, &e[..upto], v),
            Effects::Dest(e) => apply_dst(w, &e[..upto], v),
        }
    }

    fn lint(&self, v: &mut Vec<String>) {
        match self {
            Effects::Source(e) => order_lint(
                e,
                |e| matches!(e, SourceEffect::Persist { .. }),
                |e| matches!(e, SourceEffect::Send(_) | SourceEffect::StartRunning),
                v,
            ),
            Effects::Dest(e) => order_lint(
                e,
                |e| matches!(e, DestEffect::Persist { .. }),
                |e| matches!(e, DestEffect::Send(_) | DestEffect::StartRunning { .. }),
                v,
            ),
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Dest => "destination",
    }
}

/// Runs a step's effects: once completely (into `full`) and, crash budget allowing, cut short
/// by a crash after each proper prefix (into `mid`, with the prefix length).
fn finish(
    w: World,
    effects: &Effects,
    v: Vec<String>,
    cfg: &Config,
    flaws: Flaws,
    full: &mut Vec<Outcome>,
    mid: &mut Vec<(usize, Outcome)>,
) {
    if w.crashes < cfg.crashes {
        for k in 1..effects.len() {
            let mut part = w.clone();
            let mut vk = v.clone();
            effects.apply(&mut part, k, &mut vk);
            let mut outs = Vec::new();
            crash(part, effects.side(), vk, cfg, flaws, &mut outs);
            mid.extend(outs.into_iter().map(|o| (k, o)));
        }
    }
    let mut v = v;
    if cfg.lint_order {
        effects.lint(&mut v);
    }
    let mut done = w;
    effects.apply(&mut done, effects.len(), &mut v);
    check(&done, &mut v);
    full.push((done, v));
}

/// Crash and restart one side: its memory is gone, its disk kept; the restart's effects run
/// (and may themselves be cut short by another crash).
fn crash(
    mut w: World,
    side: Side,
    v: Vec<String>,
    cfg: &Config,
    flaws: Flaws,
    out: &mut Vec<Outcome>,
) {
    w.crashes += 1;
    let effects = match side {
        Side::Source => {
            w.src_runs = false;
            let (src, effects) = Source::on_restart(w.src_disk.clone());
            w.src = src.with_flaw_for_tests(flaws.source);
            Effects::Source(effects)
        }
        Side::Dest => {
            w.dst_runs = None;
            let (dst, effects) = Destination::on_restart((*w.dst_disk).clone());
            w.dst = dst.with_flaw_for_tests(flaws.dest);
            Effects::Dest(effects)
        }
    };
    let mut mid = Vec::new();
    finish(w, &effects, v, cfg, flaws, out, &mut mid);
    out.extend(mid.into_iter().map(|(_, o)| o));
}

/// Adds a step as actions: the complete step (one outcome per environment choice) and one
/// action per crash point.
fn push_step(
    actions: &mut Vec<Action>,
    label: Label,
    side: Side,
    full: Vec<Outcome>,
    mid: Vec<(usize, Outcome)>,
) {
    for (k, o) in mid {
        actions.push(Action {
            label: Label::CrashMidStep {
                step: Box::new(label.clone()),
                side: side_name(side),
                after_effects: k,
            },
            outcomes: vec![o],
        });
    }
    if !full.is_empty() {
        actions.push(Action {
            label,
            outcomes: full,
        });
    }
}

/// A message that changes nothing where it arrives (a stale or duplicate one the machine
/// ignores): delivering it is a self-loop in the safety search and never needed in the
/// completion search, so it is skipped (this only saves time).
fn delivery_is_noop(w: &World, msg: &Msg) -> bool {
    match msg {
        Msg::ToSource(m) => {
            let mut src = w.src.clone();
            let appraised = Cell::new(false);
            let effects = src.on_message(m.clone(), |_| {
                appraised.set(true);
                Ok(APPRAISAL)
            });
            effects.is_empty() && !appraised.get() && src == w.src
        }
        Msg::ToDest(m) => {
            let mut dst = w.dst.clone();
            let mut keys = w.keys;
            let mut env = ModelEnv {
                keys: &mut keys,
                attest_ok: true,
                accept_ok: true,
                called: false,
            };
            let effects = dst.on_message(m.clone(), &mut env);
            effects.is_empty() && !env.called && dst == w.dst
        }
    }
}

fn actions(w: &World, cfg: &Config, flaws: Flaws, mode: Mode) -> Vec<Action> {
    let safety = mode == Mode::Safety;
    // No crashes in the completion search.
    let cfg = &Config {
        crashes: if safety { cfg.crashes } else { 0 },
        ..*cfg
    };
    let mut actions = Vec::new();

    // The source's host starts a new attempt.
    if safety && *w.src.state() == SourceState::Running && w.attempts < cfg.attempts {
        let mut n = w.clone();
        let i = n.attempts;
        n.attempts += 1;
        let effects = Effects::Source(n.src.on_start(tid(i), chal(i), DEST).unwrap());
        let (mut full, mut mid) = (Vec::new(), Vec::new());
        finish(n, &effects, Vec::new(), cfg, flaws, &mut full, &mut mid);
        push_step(&mut actions, Label::Start(tid(i)), Side::Source, full, mid);
    }

    // Deliveries; the hooks' results are the environment's choice.
    for msg in w.net.iter() {
        let (mut full, mut mid) = (Vec::new(), Vec::new());
        let mut hooks_fail = false;
        let choices: &[(bool, bool)] = if cfg.hook_failures {
            &[(true, true), (false, true), (true, false)]
        } else {
            &[(true, true)]
        };
        if delivery_is_noop(w, msg) {
            continue;
        }
        for &(ok_a, ok_b) in choices {
            let failing = !ok_a || !ok_b;
            let mut n = w.clone();
            if !safety {
                Rc::make_mut(&mut n.net).remove(msg);
            }
            let (effects, called) = match msg {
                Msg::ToSource(m) => {
                    let called = Cell::new(false);
                    let effects = n.src.on_message(m.clone(), |_| {
                        called.set(true);
                        if ok_a && ok_b {
                            Ok(APPRAISAL)
                        } else {
                            Err("policy not satisfied".to_owned())
                        }
                    });
                    (Effects::Source(effects), called.get())
                }
                Msg::ToDest(m) => {
                    let mut keys = n.keys;
                    let mut env = ModelEnv {
                        keys: &mut keys,
                        attest_ok: ok_a,
                        accept_ok: ok_b,
                        called: false,
                    };
                    let effects = n.dst.on_message(m.clone(), &mut env);
                    let called = env.called;
                    n.keys = keys;
                    (Effects::Dest(effects), called)
                }
            };
            // A failing hook that was not called, or the source's second failing choice, is
            // the same step again.
            if failing && (!called || (matches!(msg, Msg::ToSource(_)) && !ok_b)) {
                continue;
            }
            hooks_fail |= failing;
            finish(n, &effects, Vec::new(), cfg, flaws, &mut full, &mut mid);
        }
        let side = match msg {
            Msg::ToSource(_) => Side::Source,
            Msg::ToDest(_) => Side::Dest,
        };
        let label = Label::Deliver {
            msg: msg.clone(),
            hooks_fail,
        };
        push_step(&mut actions, label, side, full, mid);
    }

    // The source's timer, and (safety only: an operator's choice) its cancel.
    for label in [Label::SourceTimeout, Label::SourceCancel] {
        let timeout = matches!(label, Label::SourceTimeout);
        let cancel_allowed = safety && cfg.cancel;
        if !timeout && !cancel_allowed {
            continue;
        }
        let mut n = w.clone();
        let effects = if timeout {
            n.src.on_timeout()
        } else {
            n.src.cancel()
        };
        if effects.is_empty() {
            continue;
        }
        let (mut full, mut mid) = (Vec::new(), Vec::new());
        finish(
            n,
            &Effects::Source(effects),
            Vec::new(),
            cfg,
            flaws,
            &mut full,
            &mut mid,
        );
        push_step(&mut actions, label, Side::Source, full, mid);
    }

    // The destination's offer timers (completion must not need them).
    if safety && cfg.dest_timeouts {
        for (t, s) in w.dst.transfers() {
            if matches!(s, DestState::Offered { .. }) {
                let mut n = w.clone();
                let effects = Effects::Dest(n.dst.on_timeout(*t));
                let (mut full, mut mid) = (Vec::new(), Vec::new());
                finish(n, &effects, Vec::new(), cfg, flaws, &mut full, &mut mid);
                push_step(&mut actions, Label::DestTimeout(*t), Side::Dest, full, mid);
            }
        }
    }

    // A crash of either side between steps.
    if w.crashes < cfg.crashes {
        for side in [Side::Source, Side::Dest] {
            let mut outs = Vec::new();
            crash(w.clone(), side, Vec::new(), cfg, flaws, &mut outs);
            actions.push(Action {
                label: Label::Crash(side_name(side)),
                outcomes: outs,
            });
        }
    }
    actions
}

#[derive(Debug)]
struct Report {
    states: usize,
    transitions: usize,
    max_depth: u32,
    completion_states: usize,
    seconds: f64,
    /// Which (source state, source runs, destination runs) combinations were reached.
    coverage: BTreeSet<(&'static str, bool, bool)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reachable states, {} transitions, deepest {} steps; completion search {} states; \
             {:.1} s",
            self.states, self.transitions, self.max_depth, self.completion_states, self.seconds
        )
    }
}

#[derive(Debug)]
struct Counterexample {
    violation: String,
    trace: Vec<Label>,
    last: Box<World>,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "violation: {}", self.violation)?;
        for (i, l) in self.trace.iter().enumerate() {
            writeln!(f, "  {:2}. {l}", i + 1)?;
        }
        write!(f, "  state: {:#?}", self.last)
    }
}

fn trace_to(parents: &[Option<(usize, Label)>], mut i: usize) -> Vec<Label> {
    let mut trace = Vec::new();
    while let Some((p, l)) = &parents[i] {
        trace.push(l.clone());
        i = *p;
    }
    trace.reverse();
    trace
}

/// FxHash (rustc's): the worlds are hashed a few hundred thousand times in a debug build, where
/// SipHash is the slowest part of the search.
#[derive(Default)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The worlds found so far, with how each was first reached.
#[derive(Default)]
struct Graph {
    index: HashMap<World, usize, std::hash::BuildHasherDefault<Fx>>,
    worlds: Vec<World>,
    parents: Vec<Option<(usize, Label)>>,
    depth: Vec<u32>,
}

impl Graph {
    fn add(&mut self, w: World, parent: Option<(usize, Label)>) -> (usize, bool) {
        if let Some(&i) = self.index.get(&w) {
            return (i, false);
        }
        let i = self.worlds.len();
        let d = parent.as_ref().map_or(0, |(p, _)| self.depth[*p] + 1);
        self.index.insert(w.clone(), i);
        self.worlds.push(w);
        self.parents.push(parent);
        self.depth.push(d);
        (i, true)
    }
}

/// Breadth-first search over every reachable world, each checked as it is found (and every
/// settled world checked to stay settled); with `cfg.liveness`, then the completion search.
fn model_check(cfg: Config, flaws: Flaws) -> Result<Report, Box<Counterexample>> {
    let started = Instant::now();
    let mut g = Graph::default();
    g.add(World::initial(flaws), None);
    let mut queue = VecDeque::from([0usize]);
    let mut transitions = 0usize;

    while let Some(i) = queue.pop_front() {
        let w = g.worlds[i].clone();
        for action in actions(&w, &cfg, flaws, Mode::Safety) {
            for (next, violations) in action.outcomes {
                transitions += 1;
                let mut violation = violations.into_iter().next();
                if violation.is_none()
                    && w.settled()
                    && action.label.keeps_settled()
                    && !next.settled()
                {
                    violation = Some("a settled world became unsettled".to_owned());
                }
                if let Some(violation) = violation {
                    let mut trace = trace_to(&g.parents, i);
                    trace.push(action.label.clone());
                    return Err(Box::new(Counterexample {
                        violation,
                        trace,
                        last: Box::new(next),
                    }));
                }
                let (j, new) = g.add(next, Some((i, action.label.clone())));
                if new {
                    queue.push_back(j);
                }
            }
        }
    }
    let states = g.worlds.len();
    let coverage = g
        .worlds
        .iter()
        .map(|w| {
            let s = match w.src.state() {
                SourceState::Running => "Running",
                SourceState::Offering { .. } => "Offering",
                SourceState::Sent { .. } => "Sent",
                SourceState::Transferred { .. } => "Transferred",
            };
            (s, w.src_runs, w.dst_runs.is_some())
        })
        .collect();
    let max_depth = g.depth.iter().copied().max().unwrap_or(0);

    let mut completion_states = 0;
    if cfg.liveness {
        completion_states = completion(&cfg, flaws, &g)?;
    }

    Ok(Report {
        states,
        transitions,
        max_depth,
        completion_states,
        seconds: started.elapsed().as_secs_f64(),
        coverage,
    })
}

/// From every reachable world with its network emptied: the scheduler (deliveries, source
/// timeouts) can reach a settled world whatever the hooks answer. Returns the number of worlds
/// the completion game has.
fn completion(cfg: &Config, flaws: Flaws, reached: &Graph) -> Result<usize, Box<Counterexample>> {
    let mut g = Graph::default();
    // Where each start came from, for the counterexample's trace.
    let mut origin: Vec<usize> = Vec::new();
    let mut queue = VecDeque::new();
    for (i, w) in reached.worlds.iter().enumerate() {
        let mut start = w.clone();
        start.net = Rc::default();
        let (j, new) = g.add(start, None);
        if new {
            origin.push(i);
            queue.push_back(j);
        }
    }
    let starts = g.worlds.len();
    // owner[a]: the world whose action a is; remaining[a]: its outcomes not yet known good.
    let mut owner: Vec<usize> = Vec::new();
    let mut remaining: Vec<usize> = Vec::new();
    let mut rev: Vec<Vec<usize>> = Vec::new();
    while let Some(i) = queue.pop_front() {
        let w = g.worlds[i].clone();
        for action in actions(&w, cfg, flaws, Mode::Completion) {
            let mut outs = BTreeSet::new();
            for (next, _) in action.outcomes {
                let (j, new) = g.add(next, Some((i, action.label.clone())));
                if new {
                    queue.push_back(j);
                }
                outs.insert(j);
            }
            if outs.len() == 1 && outs.contains(&i) {
                continue;
            }
            let a = owner.len();
            owner.push(i);
            remaining.push(outs.len());
            for j in outs {
                if rev.len() <= j {
                    rev.resize(j + 1, Vec::new());
                }
                rev[j].push(a);
            }
        }
    }
    let n = g.worlds.len();
    rev.resize(n, Vec::new());
    let mut good: Vec<bool> = g.worlds.iter().map(World::settled).collect();
    // Each world that turns good (the settled ones first) counts down every action it is an
    // outcome of; an action with no outcome left makes its owner good.
    let mut work: Vec<usize> = (0..n).filter(|&i| good[i]).collect();
    while let Some(j) = work.pop() {
        for &a in &rev[j] {
            remaining[a] -= 1;
            if remaining[a] == 0 && !good[owner[a]] {
                good[owner[a]] = true;
                work.push(owner[a]);
            }
        }
    }
    if let Some(stuck) = (0..starts).find(|&i| !good[i]) {
        return Err(Box::new(Counterexample {
            violation: "no completion: with the network emptied and no more crashes, no \
                        sequence of deliveries and source timeouts surely reaches exactly one \
                        runner"
                .to_owned(),
            trace: trace_to(&reached.parents, origin[stuck]),
            last: Box::new(g.worlds[stuck].clone()),
        }));
    }
    Ok(n)
}

const FULL: Config = Config {
    attempts: 2,
    crashes: 2,
    hook_failures: true,
    cancel: true,
    dest_timeouts: true,
    lint_order: true,
    liveness: true,
};

#[test]
fn model_check_two_attempts_two_crashes() {
    // Two attempts (stale messages of the first meet the second), two crashes anywhere.
    let report = model_check(FULL, Flaws::default()).unwrap_or_else(|c| panic!("{c}"));
    println!("model check {FULL:?}:\n  {report}");
    assert_covers(&report);
}

/// The search got where it matters: the object ran at the source, left it, arrived and ran at
/// the destination, and came back to run at the source after a failed attempt.
fn assert_covers(report: &Report) {
    for want in [
        ("Running", true, false),
        ("Offering", false, false),
        ("Sent", false, false),
        ("Transferred", false, true),
        ("Sent", false, true),
    ] {
        assert!(
            report.coverage.contains(&want),
            "{want:?} not reached: {report:?}"
        );
    }
}

#[test]
fn model_check_one_attempt_four_crashes() {
    let cfg = Config {
        attempts: 1,
        crashes: 4,
        ..FULL
    };
    let report = model_check(cfg, Flaws::default()).unwrap_or_else(|c| panic!("{c}"));
    println!("model check {cfg:?}:\n  {report}");
    assert_covers(&report);
}

/// Small bounds for the broken variants: the checker must find each flaw's fork or loss.
const SMALL: Config = Config {
    attempts: 1,
    crashes: 1,
    hook_failures: false,
    cancel: true,
    dest_timeouts: false,
    lint_order: false,
    liveness: false,
};

fn expect_counterexample(flaws: Flaws, crashes: u8, want: &str) {
    let cfg = Config { crashes, ..SMALL };
    match model_check(cfg, flaws) {
        Ok(report) => panic!("the checker missed {flaws:?}: {report}"),
        Err(c) => {
            println!("{flaws:?} found in {} steps:\n{c}", c.trace.len());
            assert!(c.violation.contains(want), "{c}");
        }
    }
}

#[test]
fn checker_finds_the_fork_of_a_source_resuming_on_timeout() {
    expect_counterexample(
        Flaws {
            source: Some(SourceFlaw::ResumeOnSentTimeout),
            dest: None,
        },
        0,
        "fork",
    );
}

#[test]
fn checker_finds_the_loss_of_an_ack_sent_before_persist() {
    expect_counterexample(
        Flaws {
            source: None,
            dest: Some(DestFlaw::AckBeforePersist),
        },
        1,
        "loss",
    );
}

#[test]
fn checker_finds_the_fork_of_an_abort_answered_but_not_recorded() {
    expect_counterexample(
        Flaws {
            source: None,
            dest: Some(DestFlaw::AbortNotRecorded),
        },
        0,
        "fork",
    );
}

#[test]
fn checker_finds_a_source_stuck_in_sent() {
    let cfg = Config {
        liveness: true,
        ..SMALL
    };
    let flaws = Flaws {
        source: Some(SourceFlaw::NoRetryInSent),
        dest: None,
    };
    let c = model_check(cfg, flaws).unwrap_err();
    println!("{flaws:?} found:\n{c}");
    assert!(c.violation.contains("no completion"), "{c}");
}

#[test]
fn checker_lint_flags_send_before_persist() {
    let cfg = Config {
        lint_order: true,
        ..SMALL
    };
    let c = model_check(
        cfg,
        Flaws {
            source: None,
            dest: Some(DestFlaw::AckBeforePersist),
        },
    )
    .unwrap_err();
    assert!(c.violation.contains("before it persists"), "{c}");
}

// ---------------------------------------------------------------------------------------------
// Deep random walks: more attempts and crashes than the exhaustive check can afford.

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_walks_keep_one_owner(choices in proptest::collection::vec(any::<u32>(), 50..250)) {
        let cfg = Config { attempts: 5, crashes: 6, liveness: false, ..FULL };
        let mut w = World::initial(Flaws::default());
        for c in choices {
            let mut actions = actions(&w, &cfg, Flaws::default(), Mode::Safety);
            if actions.is_empty() {
                break;
            }
            let a = actions.swap_remove(c as usize % actions.len());
            let n = a.outcomes.len();
            let (next, violations) = a.outcomes.into_iter().nth((c as usize / 7) % n).unwrap();
            prop_assert!(violations.is_empty(), "{:?} after {}", violations, a.label);
            w = next;
        }
    }
}
