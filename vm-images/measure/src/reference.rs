//! Writing a reference-values file in the format `sojourn attest verify --reference-values`
//! reads (docs/attestation.md, `sojourn_attestation::ReferenceValues`).
//!
//! One file per kind of deployment, because the `[snp]` and `[tdx]` tables also apply to
//! the hardware report inside Azure evidence: a bare-SNP launch measurement of this image
//! would reject Azure's paravisor measurement, so `snp` and `az-snp` (likewise `tdx` and
//! `az-tdx`) cannot share a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::MeasureError;

/// What to pin for which platforms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferenceSpec {
    /// `allowed_platforms`: any of `snp`, `tdx`, `az-snp`, `az-tdx`.
    pub platforms: Vec<String>,
    /// `[snp] allowed_measurements` (48-byte hex).
    pub snp_measurements: Vec<String>,
    /// `[tdx] allowed_mrtd` (48-byte hex; the firmware's, from its vendor).
    pub tdx_mrtd: Vec<String>,
    /// `[tdx] allowed_rtmrN` by N.
    pub tdx_rtmrs: BTreeMap<u8, String>,
    /// `[vtpm] pcrs` (32-byte hex, SHA-256 bank).
    pub vtpm_pcrs: BTreeMap<u8, String>,
}

const PLATFORMS: [&str; 4] = ["snp", "tdx", "az-snp", "az-tdx"];

impl ReferenceSpec {
    /// Check the combination and render TOML, with `comment` lines on top.
    pub fn to_toml(&self, comment: &[String]) -> Result<String, MeasureError> {
        let bad = |m: &str| Err(MeasureError::Input(m.to_string()));
        if self.platforms.is_empty() {
            return bad("no platform selected");
        }
        for p in &self.platforms {
            if !PLATFORMS.contains(&p.as_str()) {
                return Err(MeasureError::Input(format!(
                    "platform {p:?} (one of {})",
                    PLATFORMS.join(", ")
                )));
            }
        }
        let has = |p: &str| self.platforms.iter().any(|x| x == p);
        if has("snp") && has("az-snp") && !self.snp_measurements.is_empty() {
            return bad("snp and az-snp need separate files: [snp] pins also apply to Azure's paravisor report");
        }
        if has("tdx") && has("az-tdx") && (!self.tdx_rtmrs.is_empty() || !self.tdx_mrtd.is_empty())
        {
            return bad("tdx and az-tdx need separate files: [tdx] pins also apply to Azure's TD");
        }
        if has("snp") && self.snp_measurements.is_empty() {
            return bad("snp selected but no launch measurement computed (give --ovmf and a kernel or --uki)");
        }
        if (has("az-snp") || has("az-tdx")) && self.vtpm_pcrs.is_empty() {
            return bad("az-snp/az-tdx selected but no PCR computed (give --uki)");
        }
        if has("tdx") && self.tdx_rtmrs.is_empty() && self.tdx_mrtd.is_empty() {
            return bad("tdx selected but no RTMR/MRTD to pin");
        }
        let mut s = String::new();
        for c in comment {
            let _ = writeln!(s, "# {c}");
        }
        let list = |v: &[String]| {
            v.iter()
                .map(|x| format!("\"{x}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "version = 1");
        let _ = writeln!(s, "allowed_platforms = [{}]", list(&self.platforms));
        let _ = writeln!(s, "allow_software = false");
        let _ = writeln!(s, "allow_debug = false");
        let _ = writeln!(s, "allow_migration_agent = false");
        if has("snp") && !self.snp_measurements.is_empty() {
            let _ = writeln!(s, "\n[snp]");
            let _ = writeln!(
                s,
                "allowed_measurements = [{}]",
                list(&self.snp_measurements)
            );
            let _ = writeln!(s, "max_vmpl = 0");
        }
        if has("tdx") {
            let _ = writeln!(s, "\n[tdx]");
            if !self.tdx_mrtd.is_empty() {
                let _ = writeln!(s, "allowed_mrtd = [{}]", list(&self.tdx_mrtd));
            }
            for (i, v) in &self.tdx_rtmrs {
                let _ = writeln!(s, "allowed_rtmr{i} = [\"{v}\"]");
            }
        }
        if (has("az-snp") || has("az-tdx")) && !self.vtpm_pcrs.is_empty() {
            let _ = writeln!(s, "\n[vtpm]");
            let pcrs: Vec<String> = self
                .vtpm_pcrs
                .iter()
                .map(|(i, v)| format!("\"{i}\" = \"{v}\""))
                .collect();
            let _ = writeln!(s, "pcrs = {{ {} }}", pcrs.join(", "));
        }
        Ok(s)
    }
}
