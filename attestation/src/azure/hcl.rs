//! The Azure HCL report (vTPM NV index 0x01400001), little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | header: `"HCLA"`, version, report_size, request_type, status, 3 × reserved (u32) |
//! | 32 | 1184 | hardware report: SNP report, or 1024-byte TDREPORT zero-padded |
//! | 1216 | 20 | IGVM request data: data_size, version, report_type (2 SNP, 4 TDX), hash_type (1 SHA-256, 2 SHA-384, 3 SHA-512), variable_data_size |
//! | 1236 | variable_data_size | runtime data (JSON: `keys`, `vm-configuration`, `user-data`) |
//!
//! The file may be zero-padded after `report_size` bytes.

use sha2::Digest;

use crate::bytes::{field, slice, Reader};
use crate::error::ParseError;

const WHAT: &str = "HCL report";
const HW_OFFSET: usize = 32;
const HW_LEN: usize = 1184;
const IGVM_OFFSET: usize = HW_OFFSET + HW_LEN;
const VAR_OFFSET: usize = IGVM_OFFSET + 20;
/// The TDREPORT inside the hardware report slot.
const TDREPORT_LEN: usize = 1024;
/// Bound on the runtime data, far above the ~1.2 KiB seen in practice.
const MAX_VAR_DATA: usize = 64 * 1024;

/// The hardware report type in the IGVM request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HwReportType {
    /// An SEV-SNP attestation report.
    Snp,
    /// A TDX TDREPORT.
    Tdx,
}

/// A parsed HCL report, borrowing the input.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HclReport<'a> {
    /// Header version.
    pub version: u32,
    /// Size of the meaningful part (header through runtime data).
    pub report_size: u32,
    /// Request type.
    pub request_type: u32,
    /// Status.
    pub status: u32,
    /// The hardware report type.
    pub report_type: HwReportType,
    /// IGVM report-data hash type (1 SHA-256, 2 SHA-384, 3 SHA-512).
    pub hash_type: u32,
    /// The hardware report: 1184 bytes for SNP, the 1024-byte TDREPORT for TDX.
    pub hw_report: &'a [u8],
    /// The runtime data (JSON), exactly as hashed into the hardware report data.
    pub runtime_data: &'a [u8],
}

/// The hardware report type of an HCL report, without parsing the rest.
pub(crate) fn report_type(bytes: &[u8]) -> Result<HwReportType, ParseError> {
    Ok(parse(bytes)?.report_type)
}

/// Parse an HCL report.
pub fn parse(bytes: &[u8]) -> Result<HclReport<'_>, ParseError> {
    let mut r = Reader::new(bytes, WHAT);
    if r.take(4)? != b"HCLA" {
        return Err(ParseError::BadMagic { what: WHAT });
    }
    let version = r.u32_le()?;
    if !(1..=2).contains(&version) {
        return Err(ParseError::UnsupportedVersion {
            what: WHAT,
            version: u64::from(version),
        });
    }
    let report_size = r.u32_le()?;
    let request_type = r.u32_le()?;
    let status = r.u32_le()?;
    let mut igvm = Reader::new(slice(bytes, IGVM_OFFSET, 20, WHAT)?, WHAT);
    let data_size = igvm.u32_le()?;
    let igvm_version = igvm.u32_le()?;
    if igvm_version != 1 {
        return Err(ParseError::UnsupportedVersion {
            what: "HCL IGVM request data",
            version: u64::from(igvm_version),
        });
    }
    let report_type = match igvm.u32_le()? {
        2 => HwReportType::Snp,
        4 => HwReportType::Tdx,
        other => {
            return Err(ParseError::InvalidField {
                what: WHAT,
                field: "report_type",
                reason: format!("{other} (expected 2 = SNP or 4 = TDX)"),
            })
        }
    };
    let hash_type = igvm.u32_le()?;
    let var_size = igvm.u32_le()? as usize;
    if var_size > MAX_VAR_DATA {
        return Err(ParseError::InvalidField {
            what: WHAT,
            field: "variable_data_size",
            reason: format!("{var_size} bytes is implausibly large"),
        });
    }
    if data_size as usize != 20 + var_size {
        return Err(ParseError::InvalidField {
            what: WHAT,
            field: "data_size",
            reason: format!("{data_size} != 20 + variable_data_size {var_size}"),
        });
    }
    if report_size as usize != VAR_OFFSET + var_size {
        return Err(ParseError::InvalidField {
            what: WHAT,
            field: "report_size",
            reason: format!("{report_size} != {}", VAR_OFFSET + var_size),
        });
    }
    let runtime_data = slice(bytes, VAR_OFFSET, var_size, WHAT)?;
    // Whatever follows report_size is unsigned padding: it must be zero.
    if bytes
        .get(VAR_OFFSET + var_size..)
        .is_some_and(|pad| pad.iter().any(|b| *b != 0))
    {
        return Err(ParseError::InvalidField {
            what: WHAT,
            field: "padding",
            reason: "non-zero bytes after report_size".into(),
        });
    }
    let hw_len = match report_type {
        HwReportType::Snp => HW_LEN,
        HwReportType::Tdx => TDREPORT_LEN,
    };
    let hw_report = slice(bytes, HW_OFFSET, hw_len, WHAT)?;
    Ok(HclReport {
        version,
        report_size,
        request_type,
        status,
        report_type,
        hash_type,
        hw_report,
        runtime_data,
    })
}

impl HclReport<'_> {
    /// The 64 bytes the hardware report data must hold: hash(runtime data) zero-padded.
    pub fn expected_report_data(&self) -> Result<[u8; 64], ParseError> {
        let mut out = [0u8; 64];
        let digest: Vec<u8> = match self.hash_type {
            1 => sha2::Sha256::digest(self.runtime_data).to_vec(),
            2 => sha2::Sha384::digest(self.runtime_data).to_vec(),
            3 => sha2::Sha512::digest(self.runtime_data).to_vec(),
            other => {
                return Err(ParseError::InvalidField {
                    what: WHAT,
                    field: "report_data_hash_type",
                    reason: format!("{other} unknown"),
                })
            }
        };
        for (o, d) in out.iter_mut().zip(digest.iter()) {
            *o = *d;
        }
        Ok(out)
    }

    /// The runtime data as JSON.
    pub fn runtime_json(&self) -> Result<serde_json::Value, ParseError> {
        serde_json::from_slice(self.runtime_data).map_err(|e| ParseError::Foreign {
            what: "HCL runtime data",
            reason: e.to_string(),
        })
    }
}

/// The TDINFO and REPORTMACSTRUCT fields of a TDREPORT that a TD quote must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TdReportFields {
    pub(crate) report_data: [u8; 64],
    pub(crate) tee_tcb_svn: [u8; 16],
    pub(crate) mr_seam: [u8; 48],
    pub(crate) td_attributes: [u8; 8],
    pub(crate) xfam: [u8; 8],
    pub(crate) mr_td: [u8; 48],
    pub(crate) mr_config_id: [u8; 48],
    pub(crate) rtmr: [[u8; 48]; 4],
}

/// Parse the fields of a 1024-byte TDREPORT.
pub(crate) fn td_report_fields(td: &[u8]) -> Result<TdReportFields, ParseError> {
    const W: &str = "TDREPORT";
    if td.len() != TDREPORT_LEN {
        return Err(ParseError::Length {
            what: W,
            expected: TDREPORT_LEN,
            found: td.len(),
        });
    }
    Ok(TdReportFields {
        report_data: field(td, 128, W)?,
        tee_tcb_svn: field(td, 264, W)?,
        mr_seam: field(td, 280, W)?,
        td_attributes: field(td, 512, W)?,
        xfam: field(td, 520, W)?,
        mr_td: field(td, 528, W)?,
        mr_config_id: field(td, 576, W)?,
        rtmr: [
            field(td, 720, W)?,
            field(td, 768, W)?,
            field(td, 816, W)?,
            field(td, 864, W)?,
        ],
    })
}

/// The RSA attestation key (`HCLAkPub`) from the runtime data: big-endian modulus and
/// exponent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RsaPublicKey {
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Public exponent, big-endian.
    pub e: Vec<u8>,
}

/// Extract the JWK with this `kid` (RSA only) from the runtime JSON.
pub fn jwk_rsa_key(runtime: &serde_json::Value, kid: &str) -> Result<RsaPublicKey, ParseError> {
    use base64::Engine as _;
    const W: &str = "HCL runtime data";
    let keys = runtime
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(ParseError::InvalidField {
            what: W,
            field: "keys",
            reason: "missing".into(),
        })?;
    let key = keys
        .iter()
        .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid))
        .ok_or_else(|| ParseError::InvalidField {
            what: W,
            field: "keys",
            reason: format!("no key {kid}"),
        })?;
    if key.get("kty").and_then(|v| v.as_str()) != Some("RSA") {
        return Err(ParseError::InvalidField {
            what: W,
            field: "kty",
            reason: "attestation key is not RSA".into(),
        });
    }
    let b64 = |name: &'static str| -> Result<Vec<u8>, ParseError> {
        let s = key
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or(ParseError::InvalidField {
                what: W,
                field: name,
                reason: "missing".into(),
            })?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('=').as_bytes())
            .map_err(|e| ParseError::InvalidField {
                what: W,
                field: name,
                reason: e.to_string(),
            })
    };
    Ok(RsaPublicKey {
        n: b64("n")?,
        e: b64("e")?,
    })
}
