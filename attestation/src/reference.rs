//! Reference values: what a verifier expects. Authored in TOML; bogus values fail closed.
//!
//! ```toml
//! version = 1
//! allowed_platforms = ["snp", "tdx", "az-snp", "az-tdx"]
//! allow_software = false        # "software" must also be listed above to accept it
//! allow_debug = false
//! allow_migration_agent = false
//! allow_smt = true
//!
//! [snp]
//! allowed_measurements = ["7a1e5c26…"]      # 48-byte hex; absent = not pinned
//! allowed_host_data = ["00…"]              # 32-byte hex
//! allowed_chip_families = ["Milan", "Genoa", "Turin"]
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! max_vmpl = 0
//! allowed_id_key_digests = ["…"]           # 48-byte hex
//! min_guest_svn = 1
//!
//! [tdx]
//! allowed_mrtd = ["91eb2b44…"]
//! allowed_rtmr0 = ["…"]                    # also allowed_rtmr1..3, allowed_mrconfigid
//! accepted_tcb_status = ["UpToDate", "SWHardeningNeeded"]
//!
//! [vtpm]
//! pcrs = { "7" = "…32-byte hex…" }         # exact values required
//!
//! [software]
//! allowed_keys = ["…32-byte Ed25519 public key hex…"]
//! allowed_measurements = ["…"]
//! ```
//!
//! A list that is present must be non-empty and every entry must be hex of the right
//! length; unknown keys, a missing `version` or an empty `allowed_platforms` are errors.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::claims::{Claims, SnpTcb};
use crate::error::Rejection;
use crate::evidence::Platform;

/// Reference values could not be loaded. They never silently mean "allow all".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceValuesError {
    /// Not valid TOML, or an unknown key, or a wrong type.
    #[error("reference values: {0}")]
    Toml(String),
    /// A version this build does not read.
    #[error("reference values version {0} unsupported (expected 1)")]
    UnsupportedVersion(i64),
    /// A list is present but empty: fail closed rather than allow everything.
    #[error("reference values: {0} is present but empty")]
    EmptyList(&'static str),
    /// A value is not hex of the expected length.
    #[error("reference values: {field}: {reason}")]
    BadValue {
        /// The key.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An unknown platform or chip family name.
    #[error("reference values: unknown {kind} {name:?}")]
    UnknownName {
        /// `platform`, `chip family`, `TCB status`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Software listed without `allow_software = true`, or vice versa.
    #[error("reference values: \"software\" in allowed_platforms requires allow_software = true (and the reverse)")]
    SoftwareInconsistent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRv {
    version: i64,
    allowed_platforms: Vec<String>,
    #[serde(default)]
    allow_software: bool,
    #[serde(default)]
    allow_debug: bool,
    #[serde(default)]
    allow_migration_agent: bool,
    #[serde(default = "yes")]
    allow_smt: bool,
    #[serde(default)]
    snp: Option<RawSnp>,
    #[serde(default)]
    tdx: Option<RawTdx>,
    #[serde(default)]
    vtpm: Option<RawVtpm>,
    #[serde(default)]
    software: Option<RawSoftware>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnp {
    allowed_measurements: Option<Vec<String>>,
    allowed_host_data: Option<Vec<String>>,
    allowed_chip_families: Option<Vec<String>>,
    min_tcb: Option<RawTcb>,
    max_vmpl: Option<u32>,
    allowed_id_key_digests: Option<Vec<String>>,
    min_guest_svn: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcb {
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTdx {
    allowed_mrtd: Option<Vec<String>>,
    allowed_rtmr0: Option<Vec<String>>,
    allowed_rtmr1: Option<Vec<String>>,
    allowed_rtmr2: Option<Vec<String>>,
    allowed_rtmr3: Option<Vec<String>>,
    allowed_mrconfigid: Option<Vec<String>>,
    accepted_tcb_status: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVtpm {
    pcrs: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoftware {
    allowed_keys: Option<Vec<String>>,
    allowed_measurements: Option<Vec<String>>,
}

/// SEV-SNP expectations (also applied to the SNP report inside Azure SNP evidence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnpReferenceValues {
    /// Allowed MEASUREMENT values; `None` = not pinned (executables only "warning").
    pub allowed_measurements: Option<Vec<Vec<u8>>>,
    /// Allowed HOST_DATA values; `None` = not checked.
    pub allowed_host_data: Option<Vec<Vec<u8>>>,
    /// Allowed processor families (`Milan`, `Genoa`, `Turin`).
    pub allowed_chip_families: Vec<String>,
    /// Minimum REPORTED_TCB, per component.
    pub min_tcb: Option<SnpTcb>,
    /// Highest VMPL allowed to request the report.
    pub max_vmpl: Option<u32>,
    /// Allowed ID_KEY_DIGEST values (pins the ID-block signing key).
    pub allowed_id_key_digests: Option<Vec<Vec<u8>>>,
    /// Minimum GUEST_SVN.
    pub min_guest_svn: Option<u32>,
}

/// TDX expectations (also applied to the TD of Azure TDX evidence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TdxReferenceValues {
    /// Allowed MRTD values.
    pub allowed_mrtd: Option<Vec<Vec<u8>>>,
    /// Allowed RTMR0..3 values, per register.
    pub allowed_rtmr: [Option<Vec<Vec<u8>>>; 4],
    /// Allowed MRCONFIGID values.
    pub allowed_mrconfigid: Option<Vec<Vec<u8>>>,
    /// Acceptable TCB statuses; `UpToDate` only by default.
    pub accepted_tcb_status: Vec<String>,
}

/// Azure vTPM expectations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VtpmReferenceValues {
    /// Exact SHA-256 PCR values required, by index.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
}

/// Software TEE expectations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SoftwareReferenceValues {
    /// Allowed Ed25519 public keys; `None` = any key (instance identity "warning").
    pub allowed_keys: Option<Vec<Vec<u8>>>,
    /// Allowed measurements.
    pub allowed_measurements: Option<Vec<Vec<u8>>>,
}

/// What a verifier expects of evidence. [`ReferenceValues::default`] accepts genuine
/// hardware evidence of any supported platform with debug off and refuses software.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferenceValues {
    /// Platforms whose evidence is acceptable.
    pub allowed_platforms: Vec<Platform>,
    /// Whether software evidence is acceptable at all.
    pub allow_software: bool,
    /// Whether a debuggable guest is acceptable.
    pub allow_debug: bool,
    /// Whether an SNP migration agent is acceptable.
    pub allow_migration_agent: bool,
    /// Whether an SNP guest policy allowing SMT is acceptable.
    pub allow_smt: bool,
    /// SNP expectations.
    pub snp: SnpReferenceValues,
    /// TDX expectations.
    pub tdx: TdxReferenceValues,
    /// vTPM expectations.
    pub vtpm: VtpmReferenceValues,
    /// Software expectations.
    pub software: SoftwareReferenceValues,
}

/// Chip families known to the SNP verifier.
pub(crate) const CHIP_FAMILIES: [&str; 3] = ["Milan", "Genoa", "Turin"];
/// TDX TCB statuses dcap-qvl reports.
const TCB_STATUSES: [&str; 9] = [
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

impl Default for SnpReferenceValues {
    fn default() -> Self {
        Self {
            allowed_measurements: None,
            allowed_host_data: None,
            allowed_chip_families: CHIP_FAMILIES.iter().map(|s| (*s).to_owned()).collect(),
            min_tcb: None,
            max_vmpl: None,
            allowed_id_key_digests: None,
            min_guest_svn: None,
        }
    }
}

impl Default for TdxReferenceValues {
    fn default() -> Self {
        Self {
            allowed_mrtd: None,
            allowed_rtmr: [None, None, None, None],
            allowed_mrconfigid: None,
            accepted_tcb_status: vec!["UpToDate".to_owned()],
        }
    }
}

impl Default for ReferenceValues {
    fn default() -> Self {
        Self {
            allowed_platforms: vec![
                Platform::Snp,
                Platform::Tdx,
                Platform::AzureSnpVtpm,
                Platform::AzureTdxVtpm,
            ],
            allow_software: false,
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            snp: SnpReferenceValues::default(),
            tdx: TdxReferenceValues::default(),
            vtpm: VtpmReferenceValues::default(),
            software: SoftwareReferenceValues::default(),
        }
    }
}

fn hex_list(
    field: &'static str,
    v: Option<Vec<String>>,
    len: usize,
) -> Result<Option<Vec<Vec<u8>>>, ReferenceValuesError> {
    let Some(v) = v else { return Ok(None) };
    if v.is_empty() {
        return Err(ReferenceValuesError::EmptyList(field));
    }
    v.iter()
        .map(|s| hex_value(field, s, len))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn hex_value(field: &str, s: &str, len: usize) -> Result<Vec<u8>, ReferenceValuesError> {
    let b = hex::decode(s.trim()).map_err(|e| ReferenceValuesError::BadValue {
        field: field.to_owned(),
        reason: e.to_string(),
    })?;
    if b.len() != len {
        return Err(ReferenceValuesError::BadValue {
            field: field.to_owned(),
            reason: format!("expected {len} bytes, got {}", b.len()),
        });
    }
    Ok(b)
}

impl ReferenceValues {
    /// Load reference values from TOML (format in the module docs). Fails closed.
    pub fn from_toml_str(s: &str) -> Result<Self, ReferenceValuesError> {
        let raw: RawRv =
            toml::from_str(s).map_err(|e| ReferenceValuesError::Toml(e.to_string()))?;
        if raw.version != 1 {
            return Err(ReferenceValuesError::UnsupportedVersion(raw.version));
        }
        if raw.allowed_platforms.is_empty() {
            return Err(ReferenceValuesError::EmptyList("allowed_platforms"));
        }
        let mut allowed_platforms = Vec::new();
        for name in &raw.allowed_platforms {
            let p = Platform::from_name(name).ok_or_else(|| ReferenceValuesError::UnknownName {
                kind: "platform",
                name: name.clone(),
            })?;
            allowed_platforms.push(p);
        }
        if allowed_platforms.contains(&Platform::Software) != raw.allow_software {
            return Err(ReferenceValuesError::SoftwareInconsistent);
        }
        let mut rv = ReferenceValues {
            allowed_platforms,
            allow_software: raw.allow_software,
            allow_debug: raw.allow_debug,
            allow_migration_agent: raw.allow_migration_agent,
            allow_smt: raw.allow_smt,
            ..ReferenceValues::default()
        };
        if let Some(s) = raw.snp {
            rv.snp.allowed_measurements =
                hex_list("snp.allowed_measurements", s.allowed_measurements, 48)?;
            rv.snp.allowed_host_data = hex_list("snp.allowed_host_data", s.allowed_host_data, 32)?;
            if let Some(f) = s.allowed_chip_families {
                if f.is_empty() {
                    return Err(ReferenceValuesError::EmptyList("snp.allowed_chip_families"));
                }
                for name in &f {
                    if !CHIP_FAMILIES.contains(&name.as_str()) {
                        return Err(ReferenceValuesError::UnknownName {
                            kind: "chip family",
                            name: name.clone(),
                        });
                    }
                }
                rv.snp.allowed_chip_families = f;
            }
            rv.snp.min_tcb = s
                .min_tcb
                .map(|t| SnpTcb::new(t.fmc, t.bootloader, t.tee, t.snp, t.microcode));
            rv.snp.max_vmpl = s.max_vmpl;
            rv.snp.allowed_id_key_digests =
                hex_list("snp.allowed_id_key_digests", s.allowed_id_key_digests, 48)?;
            rv.snp.min_guest_svn = s.min_guest_svn;
        }
        if let Some(t) = raw.tdx {
            rv.tdx.allowed_mrtd = hex_list("tdx.allowed_mrtd", t.allowed_mrtd, 48)?;
            rv.tdx.allowed_rtmr = [
                hex_list("tdx.allowed_rtmr0", t.allowed_rtmr0, 48)?,
                hex_list("tdx.allowed_rtmr1", t.allowed_rtmr1, 48)?,
                hex_list("tdx.allowed_rtmr2", t.allowed_rtmr2, 48)?,
                hex_list("tdx.allowed_rtmr3", t.allowed_rtmr3, 48)?,
            ];
            rv.tdx.allowed_mrconfigid =
                hex_list("tdx.allowed_mrconfigid", t.allowed_mrconfigid, 48)?;
            if let Some(st) = t.accepted_tcb_status {
                if st.is_empty() {
                    return Err(ReferenceValuesError::EmptyList("tdx.accepted_tcb_status"));
                }
                for name in &st {
                    if !TCB_STATUSES.contains(&name.as_str()) {
                        return Err(ReferenceValuesError::UnknownName {
                            kind: "TCB status",
                            name: name.clone(),
                        });
                    }
                }
                rv.tdx.accepted_tcb_status = st;
            }
        }
        if let Some(v) = raw.vtpm {
            if v.pcrs.is_empty() {
                return Err(ReferenceValuesError::EmptyList("vtpm.pcrs"));
            }
            for (k, val) in v.pcrs {
                let idx: u8 = k.parse().ok().filter(|i| *i < 24).ok_or_else(|| {
                    ReferenceValuesError::BadValue {
                        field: format!("vtpm.pcrs.{k}"),
                        reason: "PCR index must be 0..=23".into(),
                    }
                })?;
                rv.vtpm
                    .pcrs
                    .insert(idx, hex_value(&format!("vtpm.pcrs.{k}"), &val, 32)?);
            }
        }
        if let Some(s) = raw.software {
            rv.software.allowed_keys = hex_list("software.allowed_keys", s.allowed_keys, 32)?;
            rv.software.allowed_measurements =
                hex_list("software.allowed_measurements", s.allowed_measurements, 48)?;
        }
        Ok(rv)
    }

    /// A copy that also accepts software evidence (for tests and explicit dev setups).
    pub fn allowing_software(mut self) -> Self {
        self.allow_software = true;
        if !self.allowed_platforms.contains(&Platform::Software) {
            self.allowed_platforms.push(Platform::Software);
        }
        self
    }

    /// The platform gate: software needs both the list entry and `allow_software`.
    pub(crate) fn check_platform(&self, p: Platform) -> Result<(), Rejection> {
        if p == Platform::Software && !self.allow_software {
            return Err(Rejection::SoftwareNotAllowed);
        }
        if !self.allowed_platforms.contains(&p) {
            return Err(if p == Platform::Software {
                Rejection::SoftwareNotAllowed
            } else {
                Rejection::PlatformNotAllowed(p)
            });
        }
        Ok(())
    }

    /// Debug gate.
    pub(crate) fn check_debug(&self, claims: &Claims) -> Result<(), Rejection> {
        if claims.debug && !self.allow_debug {
            return Err(Rejection::DebugNotAllowed);
        }
        Ok(())
    }
}

/// Check `value` against an optional allow-list. `Ok(true)` = pinned and matched,
/// `Ok(false)` = not pinned.
pub(crate) fn check_allowed(
    list: &Option<Vec<Vec<u8>>>,
    name: &str,
    value: &[u8],
) -> Result<bool, Rejection> {
    match list {
        None => Ok(false),
        Some(l) if l.iter().any(|v| v.as_slice() == value) => Ok(true),
        Some(_) => Err(Rejection::MeasurementNotAllowed {
            name: name.to_owned(),
            value: hex::encode(value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_junk_fail_closed() {
        assert!(ReferenceValues::from_toml_str("").is_err());
        assert!(ReferenceValues::from_toml_str("garbage = [").is_err());
        assert!(matches!(
            ReferenceValues::from_toml_str("version = 1\nallowed_platforms = []"),
            Err(ReferenceValuesError::EmptyList("allowed_platforms"))
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str(
                "version = 1\nallowed_platforms = [\"snp\"]\n[snp]\nallowed_measurements = []"
            ),
            Err(ReferenceValuesError::EmptyList(_))
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str(
                "version = 1\nallowed_platforms = [\"snp\"]\n[snp]\nallowed_measurements = [\"zz\"]"
            ),
            Err(ReferenceValuesError::BadValue { .. })
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str(
                "version = 1\nallowed_platforms = [\"snp\"]\nallow_all = true"
            ),
            Err(ReferenceValuesError::Toml(_))
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str("version = 1\nallowed_platforms = [\"software\"]"),
            Err(ReferenceValuesError::SoftwareInconsistent)
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str("version = 2\nallowed_platforms = [\"snp\"]"),
            Err(ReferenceValuesError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            ReferenceValues::from_toml_str("version = 1\nallowed_platforms = [\"sgx\"]"),
            Err(ReferenceValuesError::UnknownName { .. })
        ));
    }

    #[test]
    fn full_example_parses() {
        let rv = ReferenceValues::from_toml_str(
            r#"
version = 1
allowed_platforms = ["snp", "tdx"]
allow_debug = false
[snp]
allowed_chip_families = ["Milan"]
min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
max_vmpl = 0
[tdx]
accepted_tcb_status = ["UpToDate", "SWHardeningNeeded"]
[vtpm]
pcrs = { "7" = "0000000000000000000000000000000000000000000000000000000000000000" }
"#,
        )
        .unwrap();
        assert_eq!(rv.allowed_platforms, vec![Platform::Snp, Platform::Tdx]);
        assert_eq!(rv.snp.allowed_chip_families, vec!["Milan".to_owned()]);
        assert_eq!(rv.tdx.accepted_tcb_status.len(), 2);
        assert_eq!(rv.vtpm.pcrs.len(), 1);
        assert!(rv.check_platform(Platform::Software).is_err());
    }
}
