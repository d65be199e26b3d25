//! The vTPM half shared by the Azure SNP and TDX verifiers.

use super::hcl::{self, jwk_rsa_key, HclReport, HwReportType};
use super::tpm::{verify_quote, VerifiedQuote};
use crate::claims::{Claims, TrustClaim, TrustVector};
use crate::error::{ParseError, Rejection, VerifyError};
use crate::evidence::{Evidence, Platform};
use crate::reference::ReferenceValues;

/// TPM2B_DATA for extraData holds at most 64 bytes (a SHA-512 digest).
pub(crate) fn check_nonce(nonce: &[u8]) -> Result<(), VerifyError> {
    if nonce.is_empty() || nonce.len() > 64 {
        return Err(VerifyError::ReportDataLength {
            expected: "1..=64 (the vTPM quote nonce)".into(),
            found: nonce.len(),
        });
    }
    Ok(())
}

/// The prologue both Azure verifiers share: the evidence is for `platform`, the nonce has a
/// usable length, and the HCL report parses and wraps a hardware report of type `want`.
pub(crate) fn open_hcl<'e>(
    evidence: &'e Evidence,
    platform: Platform,
    want: HwReportType,
    nonce: &[u8],
) -> Result<HclReport<'e>, VerifyError> {
    evidence.expect_platform(platform)?;
    check_nonce(nonce)?;
    let hcl = hcl::parse(&evidence.report)?;
    if hcl.report_type != want {
        return Err(ParseError::InvalidField {
            what: "HCL report",
            field: "report_type",
            reason: match want {
                HwReportType::Snp => "TDX report in SNP evidence".into(),
                HwReportType::Tdx => "SNP report in TDX evidence".into(),
            },
        }
        .into());
    }
    Ok(hcl)
}

/// Verify the vTPM quote with the HCL report's attestation key and bind the nonce; add
/// the PCRs and the VM configuration to the claims.
pub(crate) fn verify_vtpm(
    hcl: &HclReport<'_>,
    tpm_quote: Option<&[u8]>,
    nonce: &[u8],
    claims: &mut Claims,
) -> Result<VerifiedQuote, VerifyError> {
    let runtime = hcl.runtime_json()?;
    let ak = jwk_rsa_key(&runtime, "HCLAkPub")?;
    let quote = tpm_quote.ok_or(VerifyError::MissingEndorsement("vTPM quote"))?;
    let q = verify_quote(quote, &ak, nonce)?;
    for (i, v) in &q.pcrs {
        claims.measure(format!("pcr{i}"), v);
    }
    claims.vm_configuration = runtime.get("vm-configuration").cloned();
    claims.report_data = nonce.to_vec();
    Ok(q)
}

/// Appraise the vTPM component: PCRs against `vtpm.pcrs`, secure boot.
pub(crate) fn appraise_vtpm(
    q: &VerifiedQuote,
    claims: &Claims,
    rv: &ReferenceValues,
) -> Result<TrustVector, Rejection> {
    for (idx, want) in &rv.vtpm.pcrs {
        let got = q
            .pcrs
            .iter()
            .find(|(i, _)| i == idx)
            .map(|(_, v)| v.as_slice());
        if got != Some(want.as_slice()) {
            return Err(Rejection::MeasurementNotAllowed {
                name: format!("pcr{idx}"),
                value: got.map(hex::encode).unwrap_or_else(|| "absent".into()),
            });
        }
    }
    let secure_boot = claims
        .vm_configuration
        .as_ref()
        .and_then(|c| c.get("secure-boot"))
        .and_then(|v| v.as_bool())
        == Some(true);
    Ok(TrustVector {
        instance_identity: TrustClaim::affirming(
            "vTPM attestation key rooted in the HCL report's hardware-signed runtime data",
        ),
        configuration: if secure_boot {
            TrustClaim::affirming("secure boot on")
        } else {
            TrustClaim::warning("secure boot not reported on")
        },
        executables: if rv.vtpm.pcrs.is_empty() {
            TrustClaim::warning("PCRs not pinned by reference values")
        } else {
            TrustClaim::affirming("pinned PCRs match")
        },
        ..TrustVector::default()
    })
}
