//! Azure SNP CVM verifier (feature `azure-snp-vtpm`).

use super::common::{appraise_vtpm, open_hcl, verify_vtpm};
use super::hcl::HwReportType;
use crate::claims::{Appraisal, ComponentAppraisal, TrustClaim, TrustVector};
use crate::error::VerifyError;
use crate::evidence::{Evidence, Platform};
use crate::reference::ReferenceValues;
use crate::snp::{appraise_snp, SnpVerifier};
use crate::time::Timestamp;

/// Verifies Azure SEV-SNP CVM evidence: HCL report (with its SNP report and VCEK) plus the
/// vTPM quote. The expected report data is the vTPM quote nonce (1 to 64 bytes).
#[derive(Debug, Clone)]
pub struct AzureSnpVerifier {
    snp: SnpVerifier,
}

impl AzureSnpVerifier {
    /// Build with the pinned AMD roots.
    pub fn new() -> Result<Self, VerifyError> {
        Ok(Self {
            snp: SnpVerifier::new()?,
        })
    }
}

impl crate::Verifier for AzureSnpVerifier {
    fn platform(&self) -> Platform {
        Platform::AzureSnpVtpm
    }

    fn verify(
        &self,
        evidence: &Evidence,
        nonce: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError> {
        let hcl = open_hcl(evidence, Platform::AzureSnpVtpm, HwReportType::Snp, nonce)?;
        let mut v = self
            .snp
            .verify_report(hcl.hw_report, &evidence.certs, now)?;
        if v.report_data != hcl.expected_report_data()? {
            return Err(VerifyError::Binding(
                "SNP REPORT_DATA is not the hash of the HCL runtime data",
            ));
        }
        let mut claims = v.claims.clone();
        claims.platform = Platform::AzureSnpVtpm;
        let q = verify_vtpm(&hcl, evidence.tpm_quote.as_deref(), nonce, &mut claims)?;
        reference.check_platform(Platform::AzureSnpVtpm)?;
        let snp_tv = appraise_snp(&v, reference)?;
        let vtpm_tv = appraise_vtpm(&q, &claims, reference)?;
        v.claims = claims;
        let hcl_tv = TrustVector {
            configuration: TrustClaim::affirming("runtime data hash equals SNP REPORT_DATA"),
            ..TrustVector::default()
        };
        Ok(Appraisal::new(
            v.claims,
            vec![
                ComponentAppraisal::new("snp-report", snp_tv),
                ComponentAppraisal::new("hcl-report", hcl_tv),
                ComponentAppraisal::new("vtpm-quote", vtpm_tv),
            ],
            now,
        ))
    }
}
