//! Azure TDX CVM verifier (feature `azure-tdx-vtpm`).
//!
//! The HCL report's TDREPORT is MACed, not signed, so it is rooted through the TD quote:
//! the quote is verified with dcap-qvl and its TD body must equal the TDREPORT's fields.

use super::common::{appraise_vtpm, open_hcl, verify_vtpm};
use super::hcl::{td_report_fields, HwReportType, TdReportFields};
use crate::claims::{Appraisal, Claims, ComponentAppraisal, TrustClaim, TrustVector};
use crate::error::VerifyError;
use crate::evidence::{Evidence, Platform};
use crate::reference::ReferenceValues;
use crate::tdx::{appraise_tdx, TdxVerifier};
use crate::time::Timestamp;

/// Whether TD claims (from the verified TD quote) describe the same TD as the TDREPORT.
fn td_matches(c: &Claims, report_data: &[u8; 64], td: &TdReportFields) -> bool {
    *report_data == td.report_data
        && c.measurement("tdx.mrtd") == Some(&td.mr_td[..])
        && c.measurement("tdx.rtmr0") == Some(&td.rtmr[0][..])
        && c.measurement("tdx.rtmr1") == Some(&td.rtmr[1][..])
        && c.measurement("tdx.rtmr2") == Some(&td.rtmr[2][..])
        && c.measurement("tdx.rtmr3") == Some(&td.rtmr[3][..])
        && c.measurement("tdx.mrseam") == Some(&td.mr_seam[..])
        && c.host_data.as_deref() == Some(&td.mr_config_id[..])
        && c.tcb.tee_tcb_svn.as_deref() == Some(&td.tee_tcb_svn[..])
        && c.tdx
            .as_ref()
            .is_some_and(|d| d.td_attributes == td.td_attributes && d.xfam == td.xfam)
}

/// Verifies Azure TDX CVM evidence: HCL report, TD quote (+ collateral), vTPM quote.
#[derive(Debug, Clone)]
pub struct AzureTdxVerifier {
    tdx: TdxVerifier,
}

impl AzureTdxVerifier {
    /// Build with the Intel root built into dcap-qvl.
    pub fn new() -> Result<Self, VerifyError> {
        Ok(Self {
            tdx: TdxVerifier::new()?,
        })
    }
}

impl crate::Verifier for AzureTdxVerifier {
    fn platform(&self) -> Platform {
        Platform::AzureTdxVtpm
    }

    fn verify(
        &self,
        evidence: &Evidence,
        nonce: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError> {
        let hcl = open_hcl(evidence, Platform::AzureTdxVtpm, HwReportType::Tdx, nonce)?;
        let td = td_report_fields(hcl.hw_report)?;
        if td.report_data != hcl.expected_report_data()? {
            return Err(VerifyError::Binding(
                "TDREPORT REPORT_DATA is not the hash of the HCL runtime data",
            ));
        }
        let td_quote = evidence
            .td_quote
            .as_deref()
            .ok_or(VerifyError::MissingEndorsement("TD quote"))?;
        let json = evidence
            .collateral
            .as_deref()
            .ok_or(VerifyError::MissingEndorsement("TDX collateral"))?;
        let collateral = TdxVerifier::parse_collateral(json)?;
        let mut v = self.tdx.verify_quote(td_quote, &collateral, now)?;
        // The verified quote must describe the same TD as the TDREPORT.
        let same = td_matches(&v.claims, &v.report_data, &td);
        if !same {
            return Err(VerifyError::Binding(
                "TD quote and HCL TDREPORT describe different TDs",
            ));
        }
        let mut claims = v.claims.clone();
        claims.platform = Platform::AzureTdxVtpm;
        let q = verify_vtpm(&hcl, evidence.tpm_quote.as_deref(), nonce, &mut claims)?;
        reference.check_platform(Platform::AzureTdxVtpm)?;
        let tdx_tv = appraise_tdx(&v, reference)?;
        let vtpm_tv = appraise_vtpm(&q, &claims, reference)?;
        v.claims = claims;
        let hcl_tv = TrustVector {
            configuration: TrustClaim::affirming(
                "runtime data hash equals TDREPORT REPORT_DATA; TD quote matches TDREPORT",
            ),
            ..TrustVector::default()
        };
        Ok(Appraisal::new(
            v.claims,
            vec![
                ComponentAppraisal::new("td-quote", tdx_tv),
                ComponentAppraisal::new("hcl-report", hcl_tv),
                ComponentAppraisal::new("vtpm-quote", vtpm_tv),
            ],
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::hcl;

    /// The sample TD quote and the sample HCL report's TDREPORT describe the same TD (the
    /// binding the verifier enforces after dcap-qvl); a changed RTMR or nonce breaks it.
    #[test]
    fn td_quote_matches_hcl_tdreport() {
        let hcl_bytes = include_bytes!("../../tests/vectors/azure/tdx_hcl_report.bin");
        let quote = include_bytes!("../../tests/vectors/azure/tdx_td_quote.bin");
        let hcl = hcl::parse(hcl_bytes).unwrap();
        let td = td_report_fields(hcl.hw_report).unwrap();
        assert_eq!(td.report_data, hcl.expected_report_data().unwrap());
        let (rd, claims) = crate::tdx::td_claims(quote).unwrap();
        assert!(td_matches(&claims, &rd, &td));
        let mut other = td.clone();
        other.rtmr[2][0] ^= 1;
        assert!(!td_matches(&claims, &rd, &other));
        let mut rd2 = rd;
        rd2[40] ^= 1;
        assert!(!td_matches(&claims, &rd2, &td));
        // The snp-flavoured HCL report is not a TDREPORT.
        let snp = include_bytes!("../../tests/vectors/azure/snp_hcl_report.bin");
        assert!(td_report_fields(hcl::parse(snp).unwrap().hw_report).is_err());
    }
}
