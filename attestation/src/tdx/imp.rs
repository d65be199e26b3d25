//! The TDX verifier (feature `tdx`).

use dcap_qvl::quote::Quote;
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;

use crate::bytes::Reader;
use crate::claims::{
    Appraisal, Claims, ComponentAppraisal, TcbClaims, TdxDetails, TrustClaim, TrustVector,
};
use crate::error::{ParseError, Rejection, VerifyError};
use crate::evidence::{Evidence, Platform};
use crate::reference::{check_allowed, ReferenceValues};
use crate::time::Timestamp;

/// The trust anchor: Intel SGX Root CA (DER), SHA-256 fingerprint
/// `44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3` (the same certificate
/// dcap-qvl 0.7.1 builds in).
pub(crate) const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// Verifies TDX DCAP quotes against the pinned Intel SGX Root CA.
#[derive(Debug, Clone, Default)]
pub struct TdxVerifier(());

/// What a verified TD quote says, before reference values.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedTdx {
    pub(crate) report_data: [u8; 64],
    pub(crate) status: String,
    pub(crate) claims: Claims,
}

/// Check the quote's framing, which its signatures do not cover: the authentication data
/// size must equal signature + attestation key + certification data, and anything after
/// the declared end (quote buffers are often padded) must be zero.
fn check_framing(quote: &[u8]) -> Result<(), ParseError> {
    const W: &str = "TDX quote";
    let mut r = Reader::new(quote, W);
    let version = u16::from_le_bytes(r.array::<2>()?);
    r.take(46)?; // rest of the 48-byte header
    match version {
        4 => {
            r.take(584)?;
        }
        5 => {
            let _body_type = r.array::<2>()?;
            let size = r.u32_le()?;
            r.take(size as usize)?;
        }
        v => {
            return Err(ParseError::UnsupportedVersion {
                what: W,
                version: u64::from(v),
            })
        }
    }
    let auth_size = r.u32_le()? as usize;
    let auth_start = r.position();
    r.take(128)?; // ECDSA signature + attestation key
    let cert_type = u16::from_le_bytes(r.array::<2>()?);
    let cert_size = r.u32_le()? as usize;
    let cert_data = r.take(cert_size)?;
    check_pck_chain(cert_type, cert_data)?;
    if r.position() - auth_start != auth_size {
        return Err(ParseError::InvalidField {
            what: W,
            field: "auth_data_size",
            reason: format!(
                "{auth_size} but the authentication data is {} bytes",
                r.position() - auth_start
            ),
        });
    }
    if r.take(r.remaining())?.iter().any(|b| *b != 0) {
        return Err(ParseError::InvalidField {
            what: W,
            field: "padding",
            reason: "non-zero bytes after the quote".into(),
        });
    }
    Ok(())
}

/// The PCK chain (certification data type 5, directly or inside the type-6 QE report
/// certification data) must be strict PEM and end at the pinned Intel SGX Root CA;
/// dcap-qvl's own PEM reading is lenient and does not use the chain's root.
fn check_pck_chain(cert_type: u16, data: &[u8]) -> Result<(), ParseError> {
    const W: &str = "TDX quote certification data";
    let pem = match cert_type {
        5 => data,
        6 => {
            let mut r = Reader::new(data, W);
            r.take(384 + 64)?; // QE report + its signature
            let qe_auth = usize::from(u16::from_le_bytes(r.array::<2>()?));
            r.take(qe_auth)?;
            let inner_type = u16::from_le_bytes(r.array::<2>()?);
            let inner_size = r.u32_le()? as usize;
            let inner = r.take(inner_size)?;
            r.finish()?;
            if inner_type != 5 {
                return Err(ParseError::InvalidField {
                    what: W,
                    field: "type",
                    reason: format!("{inner_type} (only a PCK chain, type 5, is supported)"),
                });
            }
            inner
        }
        other => {
            return Err(ParseError::InvalidField {
                what: W,
                field: "type",
                reason: format!("{other} (only types 5 and 6 are supported)"),
            })
        }
    };
    // Some producers NUL-terminate the PEM text.
    let end = pem.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let chain = crate::x509::certs_from_pem_bundle(pem.get(..end).unwrap_or_default())?;
    if chain.last().map(Vec::as_slice) != Some(INTEL_SGX_ROOT_CA_DER) {
        return Err(ParseError::InvalidField {
            what: W,
            field: "PCK chain",
            reason: "does not end at the Intel SGX Root CA".into(),
        });
    }
    Ok(())
}

/// Parse the quote far enough to extract TD claims (no verification).
pub(crate) fn td_claims(quote: &[u8]) -> Result<([u8; 64], Claims), VerifyError> {
    check_framing(quote)?;
    let q = Quote::parse(quote).map_err(|e| ParseError::Foreign {
        what: "TDX quote",
        reason: format!("{e:#}"),
    })?;
    let td = q.report.as_td10().ok_or(ParseError::InvalidField {
        what: "TDX quote",
        field: "body",
        reason: "not a TD report (SGX enclave quote?)".into(),
    })?;
    let mut c = Claims::new(Platform::Tdx, td.report_data.to_vec());
    c.measure("tdx.mrtd", &td.mr_td);
    c.measure("tdx.rtmr0", &td.rt_mr0);
    c.measure("tdx.rtmr1", &td.rt_mr1);
    c.measure("tdx.rtmr2", &td.rt_mr2);
    c.measure("tdx.rtmr3", &td.rt_mr3);
    c.measure("tdx.mrseam", &td.mr_seam);
    c.host_data = Some(td.mr_config_id.to_vec());
    c.debug = td.td_attributes.first().is_some_and(|b| b & 1 != 0);
    c.tcb.tee_tcb_svn = Some(td.tee_tcb_svn.to_vec());
    if let Ok(fmspc) = dcap_qvl::intel::quote_fmspc(&q) {
        c.chip_family = Some(format!("fmspc:{}", hex::encode(fmspc)));
    }
    c.signing_key = Some("PCK".into());
    c.tdx = Some(TdxDetails {
        quote_version: q.header.version,
        td_attributes: td.td_attributes.to_vec(),
        xfam: td.xfam.to_vec(),
        mr_owner: td.mr_owner.to_vec(),
        mr_owner_config: td.mr_owner_config.to_vec(),
        tee_tcb_svn2: q.report.as_td15().map(|t| t.tee_tcb_svn2.to_vec()),
    });
    Ok((td.report_data, c))
}

pub(crate) fn pick_collateral<'a>(quote: &[u8], candidates: &'a [Vec<u8>]) -> Option<&'a Vec<u8>> {
    let q = Quote::parse(quote).ok()?;
    let fmspc = hex::encode(dcap_qvl::intel::quote_fmspc(&q).ok()?);
    candidates.iter().find(|c| {
        serde_json::from_slice::<QuoteCollateralV3>(c)
            .ok()
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c.tcb_info).ok())
            .and_then(|t| {
                t.get("fmspc")
                    .and_then(|f| f.as_str())
                    .map(str::to_ascii_lowercase)
            })
            == Some(fmspc.clone())
    })
}

fn classify(e: &dyn std::fmt::Display) -> VerifyError {
    let reason = format!("{e:#}");
    let lower = reason.to_ascii_lowercase();
    if lower.contains("no matching tcb level") {
        VerifyError::TcbLevelNotFound
    } else if lower.contains("expired")
        || lower.contains("not yet valid")
        || lower.contains("crl")
        || lower.contains("revoked")
        || lower.contains("collateral")
        || lower.contains("tcbinfo")
        || lower.contains("qe identity")
        || lower.contains("fmspc")
    {
        VerifyError::Collateral { reason }
    } else {
        VerifyError::Quote { reason }
    }
}

impl TdxVerifier {
    /// A verifier anchored at the pinned Intel SGX Root CA.
    pub fn new() -> Result<Self, VerifyError> {
        Ok(Self(()))
    }

    /// Parse `QuoteCollateralV3` JSON (pre-parse it once for hot paths).
    pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, VerifyError> {
        serde_json::from_slice(json).map_err(|e| {
            ParseError::Foreign {
                what: "TDX collateral",
                reason: e.to_string(),
            }
            .into()
        })
    }

    /// Full cryptographic verification of a quote with parsed collateral.
    pub(crate) fn verify_quote(
        &self,
        quote: &[u8],
        collateral: &QuoteCollateralV3,
        now: Timestamp,
    ) -> Result<VerifiedTdx, VerifyError> {
        // Parse first so malformed input gets a parse error, not a verification error.
        let (report_data, mut claims) = td_claims(quote)?;
        let verified = QuoteVerifier::new(INTEL_SGX_ROOT_CA_DER.to_vec())
            .allow_debug(true)
            .verify(quote, collateral, now.unix_secs())
            .map_err(|e| classify(&e))?;
        let td = verified
            .report
            .as_td10()
            .ok_or(VerifyError::Binding("verified quote is not a TD report"))?;
        if td.report_data != report_data {
            return Err(VerifyError::Binding(
                "dcap-qvl's report differs from the parsed one",
            ));
        }
        claims.tcb = TcbClaims {
            status: Some(verified.status.clone()),
            advisory_ids: verified.advisory_ids.clone(),
            ..claims.tcb
        };
        claims.chip_id = Some(verified.ppid.clone());
        Ok(VerifiedTdx {
            report_data,
            status: verified.status,
            claims,
        })
    }

    /// Verify `evidence` with already-parsed collateral (the bench and hot paths).
    pub fn verify_with_collateral(
        &self,
        evidence: &Evidence,
        collateral: &QuoteCollateralV3,
        expected_report_data: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError> {
        evidence.expect_platform(Platform::Tdx)?;
        crate::evidence::check_report_data_len(expected_report_data)?;
        let v = self.verify_quote(&evidence.report, collateral, now)?;
        if v.report_data.as_slice() != expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        reference.check_platform(Platform::Tdx)?;
        let tv = appraise_tdx(&v, reference)?;
        Ok(Appraisal::new(
            v.claims,
            vec![ComponentAppraisal::new("td-quote", tv)],
            now,
        ))
    }
}

/// Appraise verified TD claims against reference values.
pub(crate) fn appraise_tdx(
    v: &VerifiedTdx,
    rv: &ReferenceValues,
) -> Result<TrustVector, Rejection> {
    let c = &v.claims;
    let t = &rv.tdx;
    if !t.accepted_tcb_status.contains(&v.status) {
        return Err(Rejection::TcbStatusNotAccepted(v.status.clone()));
    }
    rv.check_debug(c)?;
    let mrtd = c.measurement("tdx.mrtd").unwrap_or_default();
    let mut pinned = check_allowed(&t.allowed_mrtd, "tdx.mrtd", mrtd)?;
    for (i, list) in t.allowed_rtmr.iter().enumerate() {
        let name = format!("tdx.rtmr{i}");
        let value = c.measurement(&name).unwrap_or_default();
        pinned &= check_allowed(list, &name, value)? || list.is_none();
    }
    if let (Some(list), Some(cfg)) = (&t.allowed_mrconfigid, &c.host_data) {
        if !list.iter().any(|v| v == cfg) {
            return Err(Rejection::HostDataNotAllowed(hex::encode(cfg)));
        }
    }
    Ok(TrustVector {
        instance_identity: TrustClaim::affirming("PCK chain to the Intel SGX Root CA, QE verified"),
        configuration: if c.debug {
            TrustClaim::warning("debug TD allowed by reference values")
        } else {
            TrustClaim::affirming("TD attributes: no debug")
        },
        executables: if pinned {
            TrustClaim::affirming("MRTD in the allow-list")
        } else {
            TrustClaim::warning("MRTD not pinned by reference values")
        },
        hardware: if v.status == "UpToDate" {
            TrustClaim::affirming("genuine Intel TDX, TCB UpToDate")
        } else {
            TrustClaim::warning(format!("genuine Intel TDX, TCB {}", v.status))
        },
        runtime_opaque: TrustClaim::affirming("TDX encrypted and integrity-protected memory"),
        ..TrustVector::default()
    })
}

impl crate::Verifier for TdxVerifier {
    fn platform(&self) -> Platform {
        Platform::Tdx
    }

    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError> {
        let json = evidence
            .collateral
            .as_deref()
            .ok_or(VerifyError::MissingEndorsement("TDX collateral"))?;
        let collateral = Self::parse_collateral(json)?;
        self.verify_with_collateral(evidence, &collateral, expected_report_data, reference, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_root_fingerprint() {
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(INTEL_SGX_ROOT_CA_DER)),
            "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
        );
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The Azure TD quote (no collateral): parse-only fields from the vectors README.
    #[test]
    fn azure_td_quote_parses_as_documented() {
        let quote = include_bytes!("../../tests/vectors/azure/tdx_td_quote.bin");
        let (rd, c) = td_claims(quote).unwrap();
        assert_eq!(rd.to_vec(), h("9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e5938390000000000000000000000000000000000000000000000000000000000000000"));
        assert_eq!(c.chip_family.as_deref(), Some("fmspc:00806f050000"));
        assert_eq!(
            c.tcb.tee_tcb_svn,
            Some(h("02010600000000000000000000000000"))
        );
        assert_eq!(c.measurement("tdx.mrtd").unwrap(), h("024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b"));
        assert_eq!(c.measurement("tdx.mrseam").unwrap(), h("360304d34a16aace0a18e09ad2d07d2b9fd3c174378e5bf108388079827f89ff62acc5f8c473dd40706324834e202946"));
        assert_eq!(c.measurement("tdx.rtmr0").unwrap(), vec![0; 48]);
        let d = c.tdx.unwrap();
        assert_eq!(
            (d.quote_version, d.td_attributes, d.xfam),
            (4, vec![0; 8], h("e718060000000000"))
        );
        assert!(!c.debug);
    }

    #[test]
    fn debug_td_is_rejected_by_default_reference_values() {
        let quote = include_bytes!("../../tests/vectors/tdx/v4_debug_quote.bin");
        let (rd, claims) = td_claims(quote).unwrap();
        assert!(claims.debug);
        assert_eq!(rd.to_vec(), h("7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"));
        assert_eq!(claims.chip_family.as_deref(), Some("fmspc:50806f000000"));
        assert_eq!(claims.measurement("tdx.mrtd").unwrap(), h("705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"));
        assert_eq!(claims.measurement("tdx.rtmr1").unwrap(), h("559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596"));
        let d = claims.tdx.as_ref().unwrap();
        assert_eq!(
            (d.td_attributes.clone(), d.xfam.clone()),
            (h("0100001000000000"), h("e742060000000000"))
        );
        let v = VerifiedTdx {
            report_data: [0; 64],
            status: "UpToDate".into(),
            claims,
        };
        assert_eq!(
            appraise_tdx(&v, &ReferenceValues::default()),
            Err(Rejection::DebugNotAllowed)
        );
        let rv = ReferenceValues {
            allow_debug: true,
            ..ReferenceValues::default()
        };
        let tv = appraise_tdx(&v, &rv).unwrap();
        assert_eq!(tv.configuration.unwrap().tier, crate::Tier::Warning);
    }
}
