//! The source's appraisal of a destination, against the object's own migration policy.
//!
//! [`appraise_destination`] is the only way to a [`MigrationTicket`], and a ticket is the only
//! thing [`crate::package::seal`] seals to: an object is encrypted only for a key that
//! verified evidence, bound to this attempt's challenge and TLS channel, says an acceptable
//! runtime holds.
//!
//! Reference values come from the object's [`MigrationRules`] alone ([`reference_values`]),
//! never from the source host's configuration, and fail closed: no platform listed, no
//! destination accepted.
//!
//! Checks, in order (the first failure is the [`MigrationRefusal`]):
//!
//! 1. `allowed` — `migration_not_allowed`;
//! 2. the binding's challenge and channel are this attempt's — `wrong_challenge`,
//!    `wrong_channel` (replayed or relayed evidence stops here, or at 4);
//! 3. the evidence's platform is listed (software also needs `allow_software`) —
//!    `platform_not_allowed`, `software_not_allowed`;
//! 4. the evidence verifies with report data [`OfferBinding::report_data`] against the
//!    reference values — `evidence` (with the verifier's reason), or the reference-value
//!    verdicts `platform_not_allowed`, `software_not_allowed`, `debug`, `measurement`, `tcb`;
//! 5. the HPKE public key is an X25519 key — `bad_key`;
//! 6. `min_runtime_version` — `runtime_too_old`;
//! 7. required `claims` — `claim_missing`;
//! 8. `trust = "no-fall"`: the destination's score ≥ the source's — `trust_would_fall`.
//!
//! Scores are those of docs/trust-slope.md (worst tier of the rolled-up trust vector:
//! affirming 100, warning 50, otherwise 0), computed here exactly as
//! `sojourn_lineage::writer::score(&trust_codes(..))` does; this crate does not depend on the
//! lineage crate (which pulls in the wasm runtime) for one `match`.

use std::fmt;

use hpke::Deserializable;
use sojourn_attestation::{
    verify_evidence, Appraisal, Evidence, Platform, ReferenceValues, Rejection, SnpTcb, Tier,
    Timestamp, VerifyError,
};
use sojourn_policy::trust::{SCORE_AFFIRMING, SCORE_NONE, SCORE_WARNING};
use sojourn_policy::{MigrationPlatform, MigrationRules, MigrationTrust};

use crate::binding::OfferBinding;

pub(crate) type HpkeKem = hpke::kem::X25519HkdfSha256;
pub(crate) type HpkePublicKey = <HpkeKem as hpke::Kem>::PublicKey;

/// Why a destination is not acceptable. [`MigrationRefusal::code`] is stable (logs, API,
/// metrics); the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationRefusal {
    /// The object's policy does not allow it to move (`allowed = false`).
    #[error("the object's policy does not allow migration")]
    MigrationNotAllowed,
    /// The binding answers another challenge than this attempt's (stale or replayed
    /// evidence).
    #[error("the destination's evidence answers another challenge than this attempt's")]
    WrongChallenge,
    /// The binding names another TLS channel than this connection's (relayed evidence).
    #[error("the destination's evidence is bound to another TLS channel than this connection")]
    WrongChannel,
    /// The destination's platform is not among the policy's platforms.
    #[error("destination platform {platform} is not among the policy's platforms ({allowed})")]
    PlatformNotAllowed {
        /// The evidence's platform.
        platform: String,
        /// The policy's platforms (`none` when it lists none: nothing is accepted).
        allowed: String,
    },
    /// Software evidence, and the policy does not accept it.
    #[error("software (insecure) evidence, and the policy does not allow software destinations")]
    SoftwareNotAllowed,
    /// The destination guest is debuggable and the policy forbids that.
    #[error("the destination guest is debuggable, and the policy forbids debug")]
    Debug,
    /// The destination's launch measurement is not among the policy's.
    #[error("destination measurement {name} = {value} is not among the policy's measurements")]
    Measurement {
        /// Claim name (`snp.measurement`, `tdx.mrtd`, `software.measurement`).
        name: String,
        /// Hex value.
        value: String,
    },
    /// The destination's TCB is below the policy's minimum (or its TDX status not accepted).
    #[error("destination TCB: {0}")]
    Tcb(String),
    /// The evidence did not verify (signature, chain, collateral, report data …).
    #[error("destination evidence: {0}")]
    Evidence(#[source] VerifyError),
    /// The bound HPKE public key is not an X25519 public key.
    #[error("the destination's HPKE public key is not a 32-byte X25519 key")]
    BadKey,
    /// The destination runtime is older than `min_runtime_version` (or its version is not
    /// a version).
    #[error("destination runtime version {found:?} is below the policy's minimum {minimum}")]
    RuntimeTooOld {
        /// The policy's minimum.
        minimum: String,
        /// The version the destination states.
        found: String,
    },
    /// A required claim is absent from the destination's runtime identity, or differs.
    #[error("destination claim {name:?} is {found:?}, the policy requires {required:?}")]
    ClaimMissing {
        /// Claim name.
        name: String,
        /// Required value.
        required: String,
        /// What the destination states (`None`: absent).
        found: Option<String>,
    },
    /// The destination would score below the source (`trust = "no-fall"`).
    #[error("trust would fall from {source_score} to {destination_score} (policy: no-fall)")]
    TrustWouldFall {
        /// The source's last score.
        source_score: u8,
        /// The destination appraisal's score.
        destination_score: u8,
    },
}

impl MigrationRefusal {
    /// A stable, machine-readable code: `migration_not_allowed`, `wrong_challenge`,
    /// `wrong_channel`, `platform_not_allowed`, `software_not_allowed`, `debug`,
    /// `measurement`, `tcb`, `evidence`, `bad_key`, `runtime_too_old`, `claim_missing`,
    /// `trust_would_fall`.
    pub fn code(&self) -> &'static str {
        match self {
            MigrationRefusal::MigrationNotAllowed => "migration_not_allowed",
            MigrationRefusal::WrongChallenge => "wrong_challenge",
            MigrationRefusal::WrongChannel => "wrong_channel",
            MigrationRefusal::PlatformNotAllowed { .. } => "platform_not_allowed",
            MigrationRefusal::SoftwareNotAllowed => "software_not_allowed",
            MigrationRefusal::Debug => "debug",
            MigrationRefusal::Measurement { .. } => "measurement",
            MigrationRefusal::Tcb(_) => "tcb",
            MigrationRefusal::Evidence(_) => "evidence",
            MigrationRefusal::BadKey => "bad_key",
            MigrationRefusal::RuntimeTooOld { .. } => "runtime_too_old",
            MigrationRefusal::ClaimMissing { .. } => "claim_missing",
            MigrationRefusal::TrustWouldFall { .. } => "trust_would_fall",
        }
    }
}

impl From<VerifyError> for MigrationRefusal {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Rejected(r) => match r {
                Rejection::PlatformNotAllowed(p) => MigrationRefusal::PlatformNotAllowed {
                    platform: p.to_string(),
                    allowed: "see policy".into(),
                },
                Rejection::SoftwareNotAllowed => MigrationRefusal::SoftwareNotAllowed,
                Rejection::DebugNotAllowed => MigrationRefusal::Debug,
                Rejection::MeasurementNotAllowed { name, value } => {
                    MigrationRefusal::Measurement { name, value }
                }
                r @ (Rejection::TcbBelowMinimum { .. } | Rejection::TcbStatusNotAccepted(_)) => {
                    MigrationRefusal::Tcb(r.to_string())
                }
                other => MigrationRefusal::Evidence(VerifyError::Rejected(other)),
            },
            other => MigrationRefusal::Evidence(other),
        }
    }
}

/// A destination that passed [`appraise_destination`]: the only thing a package is sealed
/// to. Built only by this module.
pub struct MigrationTicket {
    binding: OfferBinding,
    appraisal: Appraisal,
    score: u8,
    measurement: Option<String>,
    summary: String,
    key: HpkePublicKey,
}

impl fmt::Debug for MigrationTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrationTicket")
            .field("binding", &self.binding)
            .field("platform", &self.platform())
            .field("measurement", &self.measurement)
            .field("trust_score", &self.score)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl MigrationTicket {
    /// The binding the evidence commits to (attempt, object, challenge, channel, key,
    /// runtime identity).
    pub fn binding(&self) -> &OfferBinding {
        &self.binding
    }

    /// The full appraisal (claims, trust vector per component): what the source's lineage
    /// records for the move.
    pub fn appraisal(&self) -> &Appraisal {
        &self.appraisal
    }

    /// The destination's platform.
    pub fn platform(&self) -> Platform {
        self.appraisal.claims().platform
    }

    /// The destination's primary launch measurement, hex.
    pub fn measurement_hex(&self) -> Option<&str> {
        self.measurement.as_deref()
    }

    /// The destination appraisal's trust score (0, 50 or 100; docs/trust-slope.md).
    pub fn trust_score(&self) -> u8 {
        self.score
    }

    /// One line for logs and the CLI.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The destination's HPKE public key (32 bytes).
    pub fn destination_key(&self) -> &[u8] {
        &self.binding.hpke_public_key
    }

    pub(crate) fn hpke_key(&self) -> &HpkePublicKey {
        &self.key
    }
}

/// The score of an appraisal: the worst tier of its rolled-up trust vector (docs/trust-slope.md;
/// the same value `sojourn-lineage` records for an epoch).
pub fn trust_score(appraisal: &Appraisal) -> u8 {
    match appraisal.status() {
        Tier::Affirming => SCORE_AFFIRMING,
        Tier::Warning => SCORE_WARNING,
        _ => SCORE_NONE,
    }
}

fn attestation_platform(p: MigrationPlatform) -> Option<Platform> {
    Platform::from_name(p.as_str())
}

/// Reference values built from the migration rules alone. Fail closed: platforms the rules do
/// not list are not allowed (none listed: none allowed), software only when both listed and
/// allowed. Measurements pin SEV-SNP `MEASUREMENT`, TDX `MRTD` and the software measurement;
/// `min_tcb` sets the SEV-SNP minimum and the accepted TDX TCB statuses; everything else keeps
/// [`ReferenceValues::default`] (chip families, `allow_smt`, no migration agent, TDX
/// `UpToDate` only).
pub fn reference_values(rules: &MigrationRules) -> ReferenceValues {
    let mut rv = ReferenceValues::default();
    rv.allowed_platforms = rules
        .platforms
        .iter()
        .filter_map(|p| attestation_platform(*p))
        .collect();
    rv.allow_software =
        rules.allow_software && rules.platforms.contains(&MigrationPlatform::Software);
    rv.allow_debug = rules.allow_debug;
    if !rules.measurements.is_empty() {
        let list: Vec<Vec<u8>> = rules.measurements.iter().map(|m| m.to_vec()).collect();
        rv.snp.allowed_measurements = Some(list.clone());
        rv.tdx.allowed_mrtd = Some(list.clone());
        rv.software.allowed_measurements = Some(list);
    }
    if let Some(t) = rules.min_tcb.snp {
        rv.snp.min_tcb = Some(SnpTcb::new(t.fmc, t.bootloader, t.tee, t.snp, t.microcode));
    }
    if let Some(t) = &rules.min_tcb.tdx {
        rv.tdx.accepted_tcb_status = t.accepted_tcb_status.iter().cloned().collect();
    }
    rv
}

fn platform_list(rules: &MigrationRules) -> String {
    if rules.platforms.is_empty() {
        return "none".into();
    }
    rules
        .platforms
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appraise the destination of one migration attempt against the object's rules.
///
/// `evidence` is the destination's, `binding` what it says the evidence commits to;
/// `expected_challenge` is the challenge the source sent for this attempt and
/// `expected_channel` the source's own TLS exporter value for the connection
/// ([`crate::binding::TLS_EXPORTER_LABEL`]). `source_trust` is the source's last trust score
/// (`None`: no attested score, nothing to fall from). `now` is the verification time.
pub fn appraise_destination(
    rules: &MigrationRules,
    evidence: &Evidence,
    binding: &OfferBinding,
    expected_challenge: &crate::binding::Challenge,
    expected_channel: &[u8; 32],
    source_trust: Option<u8>,
    now: Timestamp,
) -> Result<MigrationTicket, MigrationRefusal> {
    if !rules.allowed {
        return Err(MigrationRefusal::MigrationNotAllowed);
    }
    if binding.challenge != *expected_challenge {
        return Err(MigrationRefusal::WrongChallenge);
    }
    if binding.channel != *expected_channel {
        return Err(MigrationRefusal::WrongChannel);
    }
    let listed = rules
        .platforms
        .iter()
        .any(|p| attestation_platform(*p) == Some(evidence.platform));
    if evidence.platform == Platform::Software {
        if !listed || !rules.allow_software {
            return Err(MigrationRefusal::SoftwareNotAllowed);
        }
    } else if !listed {
        return Err(MigrationRefusal::PlatformNotAllowed {
            platform: evidence.platform.to_string(),
            allowed: platform_list(rules),
        });
    }
    let reference = reference_values(rules);
    let appraisal =
        verify_evidence(evidence, &binding.report_data(), &reference, now).map_err(|e| {
            match MigrationRefusal::from(e) {
                MigrationRefusal::PlatformNotAllowed { platform, .. } => {
                    MigrationRefusal::PlatformNotAllowed {
                        platform,
                        allowed: platform_list(rules),
                    }
                }
                other => other,
            }
        })?;
    let key = HpkePublicKey::from_bytes(&binding.hpke_public_key)
        .map_err(|_| MigrationRefusal::BadKey)?;
    if let Some(min) = rules.min_runtime_version {
        if !min.admits(&binding.runtime.version) {
            return Err(MigrationRefusal::RuntimeTooOld {
                minimum: min.to_string(),
                found: binding.runtime.version.clone(),
            });
        }
    }
    for (name, required) in &rules.claims {
        let found = binding.runtime.claims.get(name);
        if found != Some(required) {
            return Err(MigrationRefusal::ClaimMissing {
                name: name.clone(),
                required: required.clone(),
                found: found.cloned(),
            });
        }
    }
    let score = trust_score(&appraisal);
    if rules.trust == MigrationTrust::NoFall {
        let source_score = source_trust.unwrap_or(SCORE_NONE);
        if score < source_score {
            return Err(MigrationRefusal::TrustWouldFall {
                source_score,
                destination_score: score,
            });
        }
    }
    let measurement = appraisal
        .claims()
        .measurements
        .first()
        .map(|m| hex::encode(&m.value));
    let tier = match appraisal.status() {
        Tier::Affirming => "affirming",
        Tier::Warning => "warning",
        Tier::Contraindicated => "contraindicated",
        _ => "none",
    };
    let summary = format!(
        "{} destination, runtime {} {} (engine {}), measurement {}, trust {score} ({tier}){}",
        appraisal.claims().platform,
        binding.runtime.name,
        binding.runtime.version,
        hex::encode(binding.runtime.policy_engine.get(..8).unwrap_or_default()),
        measurement
            .as_deref()
            .map_or("none".to_owned(), |m| format!(
                "{}…",
                m.get(..16).unwrap_or(m)
            )),
        if appraisal.claims().platform == Platform::Software {
            ", INSECURE software TEE"
        } else {
            ""
        }
    );
    Ok(MigrationTicket {
        binding: binding.clone(),
        appraisal,
        score,
        measurement,
        summary,
        key,
    })
}
