//! The migration policy an object carries (`[policy.migration]`): whether it may move, and
//! to which destinations. The migration layer (`sojourn-migration`) turns these rules into
//! attestation reference values and checks the destination's attested runtime identity
//! against them; this module only parses, validates and encodes them. Format and semantics:
//! docs/object-descriptor.md, "Migration policy".
//!
//! Names and limits mirror `sojourn-attestation`'s reference values (platform names, the
//! SEV-SNP TCB components, the TDX TCB statuses) so that every rule written here is one the
//! verifier can enforce; the migration crate cross-checks the two lists in its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ciborium::Value as Cbor;
use serde::Deserialize;

use crate::descriptor::{as_map, get, known_keys, opt_bool, opt_text, opt_u64, Ctx, DecodeErr};
use crate::DescriptorError;

/// Length of a launch measurement (SEV-SNP MEASUREMENT, TDX MRTD, software measurement).
pub const MEASUREMENT_LEN: usize = 48;
/// Most required destination claims.
pub const MAX_CLAIMS: usize = 32;
/// Longest claim name.
pub const MAX_CLAIM_NAME_LEN: usize = 64;
/// Longest claim value, in bytes.
pub const MAX_CLAIM_VALUE_LEN: usize = 256;

/// TDX TCB statuses (as dcap-qvl reports them and `ReferenceValues` accepts them).
pub const TDX_TCB_STATUSES: [&str; 9] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
];

/// A destination platform, by the short name `sojourn-attestation` uses for it. Ordered by
/// name, which is the order of the canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrationPlatform {
    /// `az-snp`: Azure SEV-SNP confidential VM (HCL report + vTPM quote).
    AzSnp,
    /// `az-tdx`: Azure TDX confidential VM (HCL report + TD quote + vTPM quote).
    AzTdx,
    /// `snp`: AMD SEV-SNP with raw report data (bare metal, GCP).
    Snp,
    /// `software`: the insecure software TEE. Needs `allow_software = true` as well.
    Software,
    /// `tdx`: Intel TDX with raw report data (bare metal, GCP).
    Tdx,
}

impl MigrationPlatform {
    /// Every platform, in name order.
    pub const ALL: [MigrationPlatform; 5] = [
        MigrationPlatform::AzSnp,
        MigrationPlatform::AzTdx,
        MigrationPlatform::Snp,
        MigrationPlatform::Software,
        MigrationPlatform::Tdx,
    ];

    /// The short name (`snp`, `tdx`, `az-snp`, `az-tdx`, `software`).
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPlatform::AzSnp => "az-snp",
            MigrationPlatform::AzTdx => "az-tdx",
            MigrationPlatform::Snp => "snp",
            MigrationPlatform::Software => "software",
            MigrationPlatform::Tdx => "tdx",
        }
    }

    /// Parses a short name.
    pub fn from_name(s: &str) -> Option<MigrationPlatform> {
        MigrationPlatform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for MigrationPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a move may do to the object's trust score (docs/trust-slope.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationTrust {
    /// `"any"` (default): the destination's score is recorded, not compared.
    #[default]
    Any,
    /// `"no-fall"`: the destination's appraisal must score at least the source's last score.
    NoFall,
}

impl MigrationTrust {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationTrust::Any => "any",
            MigrationTrust::NoFall => "no-fall",
        }
    }
}

/// Minimum SEV-SNP TCB (REPORTED_TCB, per component), as `ReferenceValues` checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpMinTcb {
    /// FMC SPL (Turin and later); checked only when both sides have it.
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

/// TDX TCB rule: the TCB statuses (from the collateral) a destination may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxTcbRule {
    /// Accepted statuses, from [`TDX_TCB_STATUSES`].
    pub accepted_tcb_status: BTreeSet<String>,
}

/// The TCB floor a destination must meet. Absent parts keep the verifier's defaults (SNP: no
/// minimum; TDX: `UpToDate` only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MinTcb {
    /// SEV-SNP (and Azure SEV-SNP) minimum.
    pub snp: Option<SnpMinTcb>,
    /// TDX (and Azure TDX) statuses.
    pub tdx: Option<TdxTcbRule>,
}

impl MinTcb {
    /// Whether no TCB rule is set.
    pub fn is_empty(&self) -> bool {
        self.snp.is_none() && self.tdx.is_none()
    }
}

/// A runtime version floor, `MAJOR.MINOR.PATCH` (semantic versioning precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuntimeVersion {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

fn semver_number(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

impl RuntimeVersion {
    /// Parses exactly `MAJOR.MINOR.PATCH` (decimal, no leading zeros, no suffix): the form a
    /// policy writes.
    pub fn parse(s: &str) -> Option<RuntimeVersion> {
        let mut parts = s.split('.');
        let v = RuntimeVersion {
            major: semver_number(parts.next()?)?,
            minor: semver_number(parts.next()?)?,
            patch: semver_number(parts.next()?)?,
        };
        parts.next().is_none().then_some(v)
    }

    /// Parses a version a runtime reports: `MAJOR.MINOR.PATCH`, optionally followed by
    /// `-pre-release` and/or `+build`. Returns the core and whether it is a pre-release.
    pub fn parse_reported(s: &str) -> Option<(RuntimeVersion, bool)> {
        let core_and_pre = s.split_once('+').map_or(s, |(c, _)| c);
        let (core, pre) = match core_and_pre.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (core_and_pre, None),
        };
        if pre.is_some_and(|p| {
            p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }) {
            return None;
        }
        Some((RuntimeVersion::parse(core)?, pre.is_some()))
    }

    /// Whether a runtime reporting `reported` is at least this version. A pre-release of
    /// this very version is below it (semver precedence); an unparsable version is not
    /// admitted.
    pub fn admits(&self, reported: &str) -> bool {
        match RuntimeVersion::parse_reported(reported) {
            Some((v, pre)) => v > *self || (v == *self && !pre),
            None => false,
        }
    }
}

impl fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Migration rules: `[policy.migration]`.
///
/// With `allowed = false` every other key is still validated, carried and encoded, but has
/// no effect: the object does not move.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationRules {
    /// Whether the object may move at all. Default: no.
    pub allowed: bool,
    /// Acceptable destination platforms. Empty: no destination is acceptable (fail closed).
    pub platforms: BTreeSet<MigrationPlatform>,
    /// Whether software evidence is acceptable; requires `software` in `platforms` (and
    /// the reverse). Default: no.
    pub allow_software: bool,
    /// Whether a debuggable destination is acceptable. Default: no.
    pub allow_debug: bool,
    /// Accepted launch measurements (48 bytes each); empty: not pinned.
    pub measurements: BTreeSet<[u8; MEASUREMENT_LEN]>,
    /// Minimum TCB.
    pub min_tcb: MinTcb,
    /// The destination runtime must be at least this version.
    pub min_runtime_version: Option<RuntimeVersion>,
    /// What a move may do to trust. The only place this rule lives in the model; TOML may
    /// also spell it `policy.trust.no_fall_on_migration`, and the canonical encoding keeps
    /// it there (format 1) so existing digests do not change.
    pub trust: MigrationTrust,
    /// Claims the destination's attested runtime identity must carry, exactly.
    pub claims: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMigration {
    allowed: Option<bool>,
    platforms: Option<Vec<String>>,
    allow_software: Option<bool>,
    allow_debug: Option<bool>,
    /// Hex strings (TOML) — the CBOR decoder re-encodes its bytes as hex.
    measurements: Option<Vec<String>>,
    min_tcb: Option<RawMinTcb>,
    min_runtime_version: Option<String>,
    trust: Option<String>,
    claims: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMinTcb {
    snp: Option<RawSnpTcb>,
    tdx: Option<RawTdxTcb>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnpTcb {
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTdxTcb {
    accepted_tcb_status: Vec<String>,
}

const P: &str = "policy.migration";

fn valid_claim_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLAIM_NAME_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

fn valid_claim_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_VALUE_LEN && !s.chars().any(char::is_control)
}

/// Checks a claim set (the policy's requirements or a runtime's attested identity) against
/// the name and size limits. `Err((name, what))` names the first offending claim.
pub fn check_claims(claims: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    if claims.len() > MAX_CLAIMS {
        return Err((String::new(), format!("at most {MAX_CLAIMS} claims")));
    }
    for (k, v) in claims {
        if !valid_claim_name(k) {
            return Err((
                k.clone(),
                format!("a claim name of 1 to {MAX_CLAIM_NAME_LEN} characters of [a-z0-9_.-]"),
            ));
        }
        if !valid_claim_value(v) {
            return Err((
                k.clone(),
                format!("a value of 1 to {MAX_CLAIM_VALUE_LEN} bytes without control characters"),
            ));
        }
    }
    Ok(())
}

/// Validates `[policy.migration]`. `legacy_no_fall` is `policy.trust.no_fall_on_migration`,
/// the older spelling of `trust = "no-fall"`.
pub(crate) fn build(
    cx: &Ctx<'_>,
    raw: &RawMigration,
    legacy_no_fall: Option<bool>,
) -> Result<MigrationRules, DescriptorError> {
    let mut platforms = BTreeSet::new();
    if let Some(list) = &raw.platforms {
        if list.is_empty() {
            return Err(cx.err(
                format!("{P}.platforms"),
                "a non-empty list of platforms (leave the key out to accept none)",
            ));
        }
        for name in list {
            let p = MigrationPlatform::from_name(name).ok_or_else(|| {
                cx.err(
                    format!("{P}.platforms"),
                    format!("platform names snp, tdx, az-snp, az-tdx or software; found {name:?}"),
                )
            })?;
            if !platforms.insert(p) {
                return Err(cx.err(
                    format!("{P}.platforms"),
                    format!("each platform once; {name:?} is repeated"),
                ));
            }
        }
    }
    let allow_software = raw.allow_software.unwrap_or(false);
    if platforms.contains(&MigrationPlatform::Software) != allow_software {
        return Err(cx.err(
            format!("{P}.allow_software"),
            "allow_software = true exactly when \"software\" is in platforms (both, or neither)",
        ));
    }
    let mut measurements = BTreeSet::new();
    if let Some(list) = &raw.measurements {
        if list.is_empty() {
            return Err(cx.err(
                format!("{P}.measurements"),
                "a non-empty list (leave the key out to accept any measurement)",
            ));
        }
        for (i, m) in list.iter().enumerate() {
            let path = format!("{P}.measurements[{i}]");
            let bytes = hex::decode(m).map_err(|_| {
                cx.err(
                    &path,
                    format!(
                        "{} hex digits ({MEASUREMENT_LEN} bytes)",
                        2 * MEASUREMENT_LEN
                    ),
                )
            })?;
            let arr: [u8; MEASUREMENT_LEN] = bytes.as_slice().try_into().map_err(|_| {
                cx.err(
                    &path,
                    format!(
                        "{} hex digits ({MEASUREMENT_LEN} bytes), found {} bytes",
                        2 * MEASUREMENT_LEN,
                        bytes.len()
                    ),
                )
            })?;
            if !measurements.insert(arr) {
                return Err(cx.err(&path, "each measurement once"));
            }
        }
    }
    let mut min_tcb = MinTcb::default();
    if let Some(t) = &raw.min_tcb {
        if t.snp.is_none() && t.tdx.is_none() {
            return Err(cx.err(
                format!("{P}.min_tcb"),
                "an `snp` and/or `tdx` table (leave the key out for no minimum)",
            ));
        }
        min_tcb.snp = t.snp.as_ref().map(|s| SnpMinTcb {
            fmc: s.fmc,
            bootloader: s.bootloader,
            tee: s.tee,
            snp: s.snp,
            microcode: s.microcode,
        });
        if let Some(x) = &t.tdx {
            let path = format!("{P}.min_tcb.tdx.accepted_tcb_status");
            if x.accepted_tcb_status.is_empty() {
                return Err(cx.err(&path, "a non-empty list of TDX TCB statuses"));
            }
            let mut set = BTreeSet::new();
            for s in &x.accepted_tcb_status {
                if !TDX_TCB_STATUSES.contains(&s.as_str()) {
                    return Err(cx.err(
                        &path,
                        format!(
                            "TDX TCB statuses ({}); found {s:?}",
                            TDX_TCB_STATUSES.join(", ")
                        ),
                    ));
                }
                if !set.insert(s.clone()) {
                    return Err(cx.err(&path, format!("each status once; {s:?} is repeated")));
                }
            }
            min_tcb.tdx = Some(TdxTcbRule {
                accepted_tcb_status: set,
            });
        }
    }
    let min_runtime_version = match &raw.min_runtime_version {
        None => None,
        Some(s) => Some(RuntimeVersion::parse(s).ok_or_else(|| {
            cx.err(
                format!("{P}.min_runtime_version"),
                format!("MAJOR.MINOR.PATCH in decimal without leading zeros (e.g. \"0.1.0\"); found {s:?}"),
            )
        })?),
    };
    let spelled = match raw.trust.as_deref() {
        None => None,
        Some("any") => Some(MigrationTrust::Any),
        Some("no-fall") => Some(MigrationTrust::NoFall),
        Some(other) => {
            return Err(cx.err(
                format!("{P}.trust"),
                format!("\"no-fall\" or \"any\"; found {other:?}"),
            ))
        }
    };
    let legacy = legacy_no_fall.map(|b| {
        if b {
            MigrationTrust::NoFall
        } else {
            MigrationTrust::Any
        }
    });
    let trust = match (spelled, legacy) {
        (Some(a), Some(b)) if a != b => {
            return Err(cx.err(
                format!("{P}.trust"),
                format!(
                    "the same rule as policy.trust.no_fall_on_migration (its older spelling), \
                     which says {:?}; set only one",
                    b.as_str()
                ),
            ))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => MigrationTrust::Any,
    };
    let claims = raw.claims.clone().unwrap_or_default();
    check_claims(&claims).map_err(|(k, what)| {
        cx.err(
            if k.is_empty() {
                format!("{P}.claims")
            } else {
                format!("{P}.claims.{k}")
            },
            what,
        )
    })?;
    Ok(MigrationRules {
        allowed: raw.allowed.unwrap_or(false),
        platforms,
        allow_software,
        allow_debug: raw.allow_debug.unwrap_or(false),
        measurements,
        min_tcb,
        min_runtime_version,
        trust,
        claims,
    })
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_string())
}
fn uint(n: u8) -> Cbor {
    Cbor::Integer(n.into())
}

/// `policy.migration` as CBOR. `allowed` is always present (as in format 1 before these
/// keys existed); every other key only when it differs from its default, so descriptors
/// that do not use them keep their encoding and digest. `trust` is encoded by the trust
/// section (`policy.trust.no_fall_on_migration`).
pub(crate) fn to_cbor(r: &MigrationRules) -> Cbor {
    let mut e = vec![(text("allowed"), Cbor::Bool(r.allowed))];
    if !r.platforms.is_empty() {
        e.push((
            text("platforms"),
            Cbor::Array(r.platforms.iter().map(|p| text(p.as_str())).collect()),
        ));
    }
    if r.allow_software {
        e.push((text("allow_software"), Cbor::Bool(true)));
    }
    if r.allow_debug {
        e.push((text("allow_debug"), Cbor::Bool(true)));
    }
    if !r.measurements.is_empty() {
        e.push((
            text("measurements"),
            Cbor::Array(
                r.measurements
                    .iter()
                    .map(|m| Cbor::Bytes(m.to_vec()))
                    .collect(),
            ),
        ));
    }
    if !r.min_tcb.is_empty() {
        let mut t = Vec::new();
        if let Some(s) = &r.min_tcb.snp {
            let mut m = vec![
                (text("bootloader"), uint(s.bootloader)),
                (text("tee"), uint(s.tee)),
                (text("snp"), uint(s.snp)),
                (text("microcode"), uint(s.microcode)),
            ];
            if let Some(f) = s.fmc {
                m.push((text("fmc"), uint(f)));
            }
            t.push((text("snp"), Cbor::Map(m)));
        }
        if let Some(x) = &r.min_tcb.tdx {
            t.push((
                text("tdx"),
                Cbor::Map(vec![(
                    text("accepted_tcb_status"),
                    Cbor::Array(x.accepted_tcb_status.iter().map(|s| text(s)).collect()),
                )]),
            ));
        }
        e.push((text("min_tcb"), Cbor::Map(t)));
    }
    if let Some(v) = r.min_runtime_version {
        e.push((text("min_runtime_version"), text(&v.to_string())));
    }
    if !r.claims.is_empty() {
        e.push((
            text("claims"),
            Cbor::Map(r.claims.iter().map(|(k, v)| (text(k), text(v))).collect()),
        ));
    }
    Cbor::Map(e)
}

fn u8_at(m: &[(Cbor, Cbor)], key: &str, path: &str) -> Result<Option<u8>, DecodeErr> {
    opt_u64(m, key, path)?
        .map(|v| u8::try_from(v).map_err(|_| (format!("{path}.{key}"), "0..=255".to_string())))
        .transpose()
}

fn texts(v: &Cbor, path: &str) -> Result<Vec<String>, DecodeErr> {
    match v {
        Cbor::Array(a) => a
            .iter()
            .map(|x| match x {
                Cbor::Text(t) => Ok(t.clone()),
                _ => Err((path.to_string(), "a list of text".to_string())),
            })
            .collect(),
        _ => Err((path.to_string(), "a list of text".to_string())),
    }
}

/// Reads `policy.migration` back into the TOML-shaped raw form, so that the encoded path is
/// validated by the very same [`build`]. Canonical form is enforced by the caller (the
/// decoded descriptor must re-encode to the exact input).
pub(crate) fn raw_from_cbor(v: Option<&Cbor>) -> Result<RawMigration, DecodeErr> {
    let m = as_map(v, P)?;
    known_keys(
        m,
        P,
        &[
            "allowed",
            "platforms",
            "allow_software",
            "allow_debug",
            "measurements",
            "min_tcb",
            "min_runtime_version",
            "claims",
        ],
    )?;
    let platforms = get(m, "platforms")
        .map(|x| texts(x, &format!("{P}.platforms")))
        .transpose()?;
    let measurements = match get(m, "measurements") {
        None => None,
        Some(Cbor::Array(a)) => Some(
            a.iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Cbor::Bytes(b) => Ok(hex::encode(b)),
                    _ => Err((
                        format!("{P}.measurements[{i}]"),
                        format!("{MEASUREMENT_LEN} bytes"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err((format!("{P}.measurements"), "a list of bytes".into())),
    };
    let min_tcb = match get(m, "min_tcb") {
        None => None,
        Some(x) => {
            let path = format!("{P}.min_tcb");
            let t = as_map(Some(x), &path)?;
            known_keys(t, &path, &["snp", "tdx"])?;
            let snp = match get(t, "snp") {
                None => None,
                Some(s) => {
                    let sp = format!("{path}.snp");
                    let s = as_map(Some(s), &sp)?;
                    known_keys(s, &sp, &["fmc", "bootloader", "tee", "snp", "microcode"])?;
                    let need = |k: &str| -> Result<u8, DecodeErr> {
                        u8_at(s, k, &sp)?
                            .ok_or_else(|| (format!("{sp}.{k}"), "a value (missing)".to_string()))
                    };
                    Some(RawSnpTcb {
                        fmc: u8_at(s, "fmc", &sp)?,
                        bootloader: need("bootloader")?,
                        tee: need("tee")?,
                        snp: need("snp")?,
                        microcode: need("microcode")?,
                    })
                }
            };
            let tdx = match get(t, "tdx") {
                None => None,
                Some(d) => {
                    let dp = format!("{path}.tdx");
                    let d = as_map(Some(d), &dp)?;
                    known_keys(d, &dp, &["accepted_tcb_status"])?;
                    let sp = format!("{dp}.accepted_tcb_status");
                    let list = get(d, "accepted_tcb_status")
                        .ok_or_else(|| (sp.clone(), "a value (missing)".to_string()))?;
                    Some(RawTdxTcb {
                        accepted_tcb_status: texts(list, &sp)?,
                    })
                }
            };
            Some(RawMinTcb { snp, tdx })
        }
    };
    let claims = match get(m, "claims") {
        None => None,
        Some(Cbor::Map(c)) => {
            let mut out = BTreeMap::new();
            for (k, v) in c {
                match (k, v) {
                    (Cbor::Text(k), Cbor::Text(v)) => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => return Err((format!("{P}.claims"), "a map of text to text".into())),
                }
            }
            Some(out)
        }
        Some(_) => return Err((format!("{P}.claims"), "a map of text to text".into())),
    };
    Ok(RawMigration {
        allowed: opt_bool(m, "allowed", P)?,
        platforms,
        allow_software: opt_bool(m, "allow_software", P)?,
        allow_debug: opt_bool(m, "allow_debug", P)?,
        measurements,
        min_tcb,
        min_runtime_version: opt_text(m, "min_runtime_version", P)?,
        trust: None,
        claims,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_compare_by_semver_precedence() {
        let min = RuntimeVersion::parse("0.2.0").unwrap();
        for (v, ok) in [
            ("0.2.0", true),
            ("0.2.1", true),
            ("0.10.0", true),
            ("1.0.0", true),
            ("0.2.0+build.7", true),
            ("0.2.0-rc.1", false),
            ("0.1.99", false),
            ("0.2", false),
            ("0.2.0.0", false),
            ("00.2.0", false),
            ("0.2.0-", false),
            ("v0.2.0", false),
            ("", false),
            ("0.3.0-rc.1", true),
        ] {
            assert_eq!(min.admits(v), ok, "{v}");
        }
        for bad in [
            "1",
            "1.2",
            "1.2.3-rc1",
            "01.2.3",
            "1.2.x",
            "1.2.3 ",
            "-1.2.3",
        ] {
            assert_eq!(RuntimeVersion::parse(bad), None, "{bad}");
        }
        assert_eq!(
            RuntimeVersion::parse("18446744073709551615.0.0")
                .unwrap()
                .to_string(),
            "18446744073709551615.0.0"
        );
        assert_eq!(RuntimeVersion::parse("18446744073709551616.0.0"), None);
    }
}
