//! The evidence container: a typed, versioned, stable encoding of what a CVM says.
//!
//! Encoding: JSON (UTF-8), one object, fields in a fixed order, byte strings in standard
//! base64 with padding. JSON rather than CBOR because evidence files are read by people
//! and tools (`jq`, `base64 -d`) when an attestation fails, the Azure and dcap-qvl
//! formats it wraps are JSON already, and a few KiB of base64 overhead is irrelevant
//! next to the signature checks. Unknown fields and unknown versions are errors.
//!
//! ```json
//! {"sojourn-evidence": 1, "platform": "snp", "report": "<base64>",
//!  "certs": ["<base64 DER>", ...], "collateral": null, "tpm_quote": null, "td_quote": null}
//! ```

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bytes::{field, Reader};
use crate::error::{ParseError, VerifyError};

/// The version of the container encoding this crate writes and reads.
pub const EVIDENCE_FORMAT_VERSION: u32 = 1;

/// A kind of trusted execution environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Platform {
    /// AMD SEV-SNP with the raw report data ours (bare metal, GCP).
    #[serde(rename = "snp")]
    Snp,
    /// Intel TDX with the raw report data ours (bare metal, GCP).
    #[serde(rename = "tdx")]
    Tdx,
    /// Azure SEV-SNP CVM: HCL report + vTPM quote.
    #[serde(rename = "az-snp")]
    AzureSnpVtpm,
    /// Azure TDX CVM: HCL report + TD quote + vTPM quote.
    #[serde(rename = "az-tdx")]
    AzureTdxVtpm,
    /// The software TEE (insecure; see [`crate::danger::software`]).
    #[serde(rename = "software")]
    Software,
}

impl Platform {
    /// Every platform, in a fixed order.
    pub const ALL: [Platform; 5] = [
        Platform::Snp,
        Platform::Tdx,
        Platform::AzureSnpVtpm,
        Platform::AzureTdxVtpm,
        Platform::Software,
    ];

    /// The short name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
            Platform::AzureSnpVtpm => "az-snp",
            Platform::AzureTdxVtpm => "az-tdx",
            Platform::Software => "software",
        }
    }

    /// Parse a short name (`snp`, `tdx`, `az-snp`, `az-tdx`, `software`).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a confidential VM says about itself, with what is needed to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evidence {
    /// The platform that produced it.
    pub platform: Platform,
    /// The primary report: SNP attestation report (1184 bytes), TDX DCAP quote, Azure HCL
    /// report, or software report.
    pub report: Vec<u8>,
    /// DER certificates that travel with the report (SNP: VCEK/VLEK, optionally ASK or
    /// ASVK; the AMD root is pinned in the verifier and never taken from here).
    pub certs: Vec<Vec<u8>>,
    /// TDX: dcap-qvl `QuoteCollateralV3` JSON (TCB info, QE identity, CRLs).
    pub collateral: Option<Vec<u8>>,
    /// Azure: the vTPM quote (az-cvm-vtpm layout: signature, TPMS_ATTEST, PCR values).
    pub tpm_quote: Option<Vec<u8>>,
    /// Azure TDX: the TD quote that roots the HCL report's TDREPORT.
    pub td_quote: Option<Vec<u8>>,
}

/// The container could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// Not a valid container (bad JSON, unknown field, bad base64).
    #[error("evidence container: {0}")]
    Decode(String),
    /// A container version this crate does not read.
    #[error(
        "evidence container version {0} unsupported (this build reads {EVIDENCE_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u64),
    /// The bytes are no evidence format this crate recognises.
    #[error("unrecognised evidence format (use --platform to say which)")]
    Unrecognised,
    /// The bytes are evidence of another platform than the one asked for.
    #[error("evidence is {found}, not {expected}")]
    PlatformMismatch {
        /// The platform asked for.
        expected: Platform,
        /// The platform of the bytes.
        found: Platform,
    },
    /// A part of the wrapped evidence is malformed.
    #[error(transparent)]
    Malformed(#[from] ParseError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "sojourn-evidence")]
    version: u64,
    platform: Platform,
    report: B64,
    #[serde(default)]
    certs: Vec<B64>,
    #[serde(default)]
    collateral: Option<B64>,
    #[serde(default)]
    tpm_quote: Option<B64>,
    #[serde(default)]
    td_quote: Option<B64>,
}

struct B64(Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// Report data for raw SNP, TDX and software reports is exactly 64 bytes: a length mismatch
/// is caller misuse, never padded or truncated.
pub(crate) fn check_report_data_len(expected_report_data: &[u8]) -> Result<(), VerifyError> {
    if expected_report_data.len() != 64 {
        return Err(VerifyError::ReportDataLength {
            expected: "64".into(),
            found: expected_report_data.len(),
        });
    }
    Ok(())
}

impl Evidence {
    /// The guard every verifier starts with: the evidence is for its platform.
    pub(crate) fn expect_platform(&self, expected: Platform) -> Result<(), VerifyError> {
        if self.platform != expected {
            return Err(VerifyError::PlatformMismatch {
                expected,
                found: self.platform,
            });
        }
        Ok(())
    }

    /// Evidence with only a report; add endorsements with the `with_*` methods.
    pub fn new(platform: Platform, report: Vec<u8>) -> Self {
        Self {
            platform,
            report,
            certs: Vec::new(),
            collateral: None,
            tpm_quote: None,
            td_quote: None,
        }
    }

    /// Add DER certificates.
    pub fn with_certs(mut self, certs: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.certs.extend(certs);
        self
    }

    /// Set the TDX collateral (dcap-qvl `QuoteCollateralV3` JSON).
    pub fn with_collateral(mut self, collateral: Vec<u8>) -> Self {
        self.collateral = Some(collateral);
        self
    }

    /// Set the Azure vTPM quote.
    pub fn with_tpm_quote(mut self, quote: Vec<u8>) -> Self {
        self.tpm_quote = Some(quote);
        self
    }

    /// Set the Azure TD quote.
    pub fn with_td_quote(mut self, quote: Vec<u8>) -> Self {
        self.td_quote = Some(quote);
        self
    }

    /// The report data the evidence *claims* to bind, read without any verification: the
    /// SNP/TDX/software report data (64 bytes) or the Azure vTPM quote's nonce. For tools
    /// that must verify evidence whose nonce they do not know; such a verification proves
    /// nothing about freshness.
    pub fn claimed_report_data(&self) -> Result<Vec<u8>, ParseError> {
        match self.platform {
            Platform::Snp => {
                Ok(crate::bytes::slice(&self.report, 0x50, 64, "SNP report")?.to_vec())
            }
            Platform::Software => {
                Ok(crate::bytes::slice(&self.report, 96, 64, "software report")?.to_vec())
            }
            Platform::Tdx => {
                let version = u16::from_le_bytes(field::<2>(&self.report, 0, "TDX quote")?);
                let body = if version == 5 { 48 + 6 } else { 48 };
                Ok(crate::bytes::slice(&self.report, body + 520, 64, "TDX quote")?.to_vec())
            }
            Platform::AzureSnpVtpm | Platform::AzureTdxVtpm => {
                let q = self.tpm_quote.as_deref().ok_or(ParseError::InvalidField {
                    what: "evidence",
                    field: "tpm_quote",
                    reason: "missing".into(),
                })?;
                let q = crate::azure::tpm::parse_quote(q)?;
                Ok(crate::azure::tpm::parse_attest(&q.message)?.extra_data)
            }
        }
    }

    /// The stable container encoding (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            version: u64::from(EVIDENCE_FORMAT_VERSION),
            platform: self.platform,
            report: B64(self.report.clone()),
            certs: self.certs.iter().cloned().map(B64).collect(),
            collateral: self.collateral.clone().map(B64),
            tpm_quote: self.tpm_quote.clone().map(B64),
            td_quote: self.td_quote.clone().map(B64),
        };
        // Serialising a struct of strings and vectors to a Vec cannot fail.
        serde_json::to_vec_pretty(&wire).unwrap_or_default()
    }

    /// Decode the container encoding. Unknown versions and unknown fields fail.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EvidenceError> {
        // Read the version first so a newer container says so instead of failing on a
        // field this build does not know.
        let probe: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Decode(e.to_string()))?;
        match probe.get("sojourn-evidence").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(EVIDENCE_FORMAT_VERSION) => {}
            Some(v) => return Err(EvidenceError::UnsupportedVersion(v)),
            None => {
                return Err(EvidenceError::Decode(
                    "missing \"sojourn-evidence\" version".into(),
                ))
            }
        }
        let w: Wire =
            serde_json::from_value(probe).map_err(|e| EvidenceError::Decode(e.to_string()))?;
        Ok(Self {
            platform: w.platform,
            report: w.report.0,
            certs: w.certs.into_iter().map(|c| c.0).collect(),
            collateral: w.collateral.map(|c| c.0),
            tpm_quote: w.tpm_quote.map(|c| c.0),
            td_quote: w.td_quote.map(|c| c.0),
        })
    }

    /// Accept any evidence format this crate knows: the container, trustee's Azure
    /// `az-snp-vtpm` evidence JSON (v1/v2), or a bare report (SNP report, TDX quote,
    /// HCL report, software report). `platform` (`None` = auto-detect) must agree with
    /// the bytes when they say what they are. Endorsements for bare reports are added by
    /// the caller ([`Evidence::with_certs`] etc.).
    pub fn from_any_bytes(bytes: &[u8], platform: Option<Platform>) -> Result<Self, EvidenceError> {
        let detected = detect_platform(bytes);
        let ev = if is_json(bytes) {
            if is_container(bytes) {
                Self::from_bytes(bytes)?
            } else {
                Self::from_trustee_azure_json(bytes)?
            }
        } else {
            let p = match (platform, detected) {
                (Some(p), _) => p,
                (None, Some(d)) => d,
                (None, None) => return Err(EvidenceError::Unrecognised),
            };
            Self::new(p, bytes.to_vec())
        };
        match (platform, detected) {
            (Some(want), _) if want != ev.platform => Err(EvidenceError::PlatformMismatch {
                expected: want,
                found: ev.platform,
            }),
            (Some(want), Some(found)) if want != found && bytes.first() != Some(&b'{') => {
                Err(EvidenceError::PlatformMismatch {
                    expected: want,
                    found,
                })
            }
            _ => Ok(ev),
        }
    }

    /// trustee's `az-snp-vtpm` evidence JSON: `hcl_report` (base64url), `tpm_quote`
    /// (`{signature, message, pcrs}` hex), `vcek` (base64url DER).
    fn from_trustee_azure_json(bytes: &[u8]) -> Result<Self, EvidenceError> {
        #[derive(Deserialize)]
        struct Quote {
            signature: String,
            message: String,
            pcrs: Vec<String>,
        }
        #[derive(Deserialize)]
        struct AzJson {
            #[serde(default)]
            #[allow(dead_code)]
            version: Option<serde_json::Value>,
            hcl_report: String,
            tpm_quote: Quote,
            #[serde(default)]
            vcek: Option<String>,
        }
        let j: AzJson =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Decode(e.to_string()))?;
        let b64u = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('=').as_bytes())
                .map_err(|e| EvidenceError::Decode(e.to_string()))
        };
        let hx = |s: &str| hex::decode(s).map_err(|e| EvidenceError::Decode(e.to_string()));
        let hcl = b64u(&j.hcl_report)?;
        let sig = hx(&j.tpm_quote.signature)?;
        let msg = hx(&j.tpm_quote.message)?;
        let mut pcrs = Vec::with_capacity(j.tpm_quote.pcrs.len());
        for p in &j.tpm_quote.pcrs {
            let v = hx(p)?;
            if v.len() != 32 {
                return Err(EvidenceError::Decode("PCR value is not 32 bytes".into()));
            }
            pcrs.push(v);
        }
        let quote = crate::azure::tpm::encode_quote(&sig, &msg, &pcrs);
        let platform = match crate::azure::hcl::report_type(&hcl)? {
            crate::azure::hcl::HwReportType::Snp => Platform::AzureSnpVtpm,
            crate::azure::hcl::HwReportType::Tdx => Platform::AzureTdxVtpm,
        };
        let mut ev = Self::new(platform, hcl).with_tpm_quote(quote);
        if let Some(v) = j.vcek {
            ev.certs.push(b64u(&v)?);
        }
        Ok(ev)
    }
}

/// The first non-whitespace byte is `{`.
fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn is_container(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("sojourn-evidence").cloned())
        .is_some()
}

/// Guess the platform from the bytes: the container's `platform`; trustee Azure JSON;
/// `HCLA` magic (Azure, SNP or TDX by the IGVM report type); a 1184-byte SNP report
/// (version 2..=5, signature algorithm 1); a DCAP quote (version 4/5, TDX TEE type
/// 0x81); the software report magic. `None` when nothing matches.
pub fn detect_platform(bytes: &[u8]) -> Option<Platform> {
    if is_json(bytes) {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        if let Some(p) = v.get("platform").and_then(|p| p.as_str()) {
            return Platform::from_name(p);
        }
        let hcl = v.get("hcl_report")?.as_str()?;
        let hcl = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hcl.trim_end_matches('=').as_bytes())
            .ok()?;
        return detect_platform(&hcl);
    }
    if bytes.starts_with(b"HCLA") {
        return match crate::azure::hcl::report_type(bytes).ok()? {
            crate::azure::hcl::HwReportType::Snp => Some(Platform::AzureSnpVtpm),
            crate::azure::hcl::HwReportType::Tdx => Some(Platform::AzureTdxVtpm),
        };
    }
    if bytes.starts_with(crate::danger::software::REPORT_MAGIC) {
        return Some(Platform::Software);
    }
    if bytes.len() == crate::snp::REPORT_LEN {
        let mut r = Reader::new(bytes, "SNP report");
        let version = r.u32_le().ok()?;
        let sig_algo = u32::from_le_bytes(field::<4>(bytes, 0x34, "SNP report").ok()?);
        if (2..=5).contains(&version) && sig_algo == 1 {
            return Some(Platform::Snp);
        }
    }
    let mut r = Reader::new(bytes, "DCAP quote");
    let version = u16::from_le_bytes(r.array::<2>().ok()?);
    let _key_type = r.array::<2>().ok()?;
    let tee_type = r.u32_le().ok()?;
    if (version == 4 || version == 5) && tee_type == 0x81 {
        return Some(Platform::Tdx);
    }
    None
}
