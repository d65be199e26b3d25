//! The SEV-SNP verifier (feature `snp`).

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, RSA_PSS_2048_8192_SHA384};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use x509_cert::der::Encode;
use x509_cert::Certificate;

use super::REPORT_LEN;
use crate::bytes::{field, slice};
use crate::claims::{
    Appraisal, Claims, ComponentAppraisal, SnpDetails, SnpTcb, TcbClaims, TrustClaim, TrustVector,
};
use crate::error::{ParseError, Rejection, VerifyError};
use crate::evidence::{Evidence, Platform};
use crate::reference::{check_allowed, ReferenceValues};
use crate::time::Timestamp;
use crate::x509::{
    check_validity, der_uint, extension, issuer_cn, octets_or_raw, parse_cert, subject_cn,
};

/// Bytes covered by the report signature.
const SIGNED_LEN: usize = 0x2A0;
const RSA_PSS_OID: &str = "1.2.840.113549.1.1.10";

/// A pinned AMD root (ARK) and its ASK, both checked once at construction.
#[derive(Debug, Clone)]
struct Anchor {
    family: &'static str,
    ark: Certificate,
    ask: Certificate,
}

/// Verifies SEV-SNP reports. Construct once and reuse: construction checks the pinned
/// ARK self-signatures and ARK → ASK signatures.
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    anchors: Vec<Anchor>,
}

fn chain_err(reason: impl Into<String>) -> VerifyError {
    VerifyError::CertificateChain {
        reason: reason.into(),
    }
}

fn sev_cert(c: std::io::Result<sev::certs::snp::Certificate>) -> Result<Certificate, VerifyError> {
    c.map(Into::into)
        .map_err(|e| chain_err(format!("built-in AMD certificate: {e}")))
}

/// Check that `signer` signed `signee` (RSASSA-PSS SHA-384, as AMD signs its chain).
fn verify_rsa_pss(signer: &Certificate, signee: &Certificate) -> Result<(), VerifyError> {
    if signee.signature_algorithm.oid.to_string() != RSA_PSS_OID {
        return Err(chain_err(format!(
            "{}: signature algorithm {} is not RSASSA-PSS",
            subject_cn(signee),
            signee.signature_algorithm.oid
        )));
    }
    let tbs = signee
        .tbs_certificate
        .to_der()
        .map_err(|e| chain_err(e.to_string()))?;
    let key = signer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| chain_err("signer key is not a whole number of bytes"))?;
    let sig = signee
        .signature
        .as_bytes()
        .ok_or_else(|| chain_err("signature is not a whole number of bytes"))?;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key)
        .verify(&tbs, sig)
        .map_err(|_| {
            chain_err(format!(
                "{} is not signed by {}",
                subject_cn(signee),
                subject_cn(signer)
            ))
        })
}

/// What a verified SNP report says, before reference values.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedSnp {
    pub(crate) family: &'static str,
    pub(crate) signing_key: &'static str,
    pub(crate) report_data: [u8; 64],
    pub(crate) claims: Claims,
}

impl SnpVerifier {
    /// Load and check the AMD roots built into `sev` (Milan, Genoa, Turin).
    pub fn new() -> Result<Self, VerifyError> {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let anchors = vec![
            Anchor {
                family: "Milan",
                ark: sev_cert(milan::ark())?,
                ask: sev_cert(milan::ask())?,
            },
            Anchor {
                family: "Genoa",
                ark: sev_cert(genoa::ark())?,
                ask: sev_cert(genoa::ask())?,
            },
            Anchor {
                family: "Turin",
                ark: sev_cert(turin::ark())?,
                ask: sev_cert(turin::ask())?,
            },
        ];
        for a in &anchors {
            verify_rsa_pss(&a.ark, &a.ark)?;
            verify_rsa_pss(&a.ark, &a.ask)?;
        }
        Ok(Self { anchors })
    }

    fn anchor(&self, family: &str) -> Option<&Anchor> {
        self.anchors.iter().find(|a| a.family == family)
    }

    /// Verify a VEK chain to the pinned ARK of `family`: ARK → intermediate → VEK. The
    /// intermediate is the built-in ASK for a VCEK, or a supplied ASK/ASVK whose subject is
    /// the VEK's issuer.
    pub(crate) fn verify_chain(
        &self,
        family: &str,
        intermediates: &[Certificate],
        vek: &Certificate,
        now: Timestamp,
    ) -> Result<(), VerifyError> {
        let anchor = self
            .anchor(family)
            .ok_or_else(|| chain_err(format!("no pinned AMD root for family {family:?}")))?;
        check_validity(&anchor.ark, now)?;
        let issuer = issuer_cn(vek);
        let mut candidates: Vec<&Certificate> = Vec::new();
        if subject_cn(&anchor.ask) == issuer {
            candidates.push(&anchor.ask);
        }
        candidates.extend(intermediates.iter().filter(|c| subject_cn(c) == issuer));
        if candidates.is_empty() {
            return Err(VerifyError::MissingEndorsement(
                "AMD intermediate certificate (ASK/ASVK) for the VEK's issuer",
            ));
        }
        let mut last = chain_err("no intermediate verified");
        for ica in candidates {
            let r = verify_rsa_pss(&anchor.ark, ica)
                .and_then(|()| verify_rsa_pss(ica, vek))
                .and_then(|()| check_validity(ica, now))
                .and_then(|()| check_validity(vek, now));
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Cryptographic verification and TCB consistency of one report, without report-data
    /// or reference-value checks (shared with the Azure verifier).
    pub(crate) fn verify_report(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<VerifiedSnp, VerifyError> {
        if report.len() != REPORT_LEN {
            return Err(ParseError::Length {
                what: "SNP report",
                expected: REPORT_LEN,
                found: report.len(),
            }
            .into());
        }
        let parsed = AttestationReport::from_bytes(report).map_err(|e| ParseError::Foreign {
            what: "SNP report",
            reason: e.to_string(),
        })?;
        let sig_algo = u32::from_le_bytes(field::<4>(report, 0x34, "SNP report")?);
        if sig_algo != 1 {
            return Err(ParseError::InvalidField {
                what: "SNP report",
                field: "SIGNATURE_ALGO",
                reason: format!("{sig_algo} is not ECDSA P-384 with SHA-384"),
            }
            .into());
        }
        let key_info = u32::from_le_bytes(field::<4>(report, 0x48, "SNP report")?);
        let (signing_key, want_subject) = match (key_info >> 2) & 0b111 {
            0 => ("VCEK", "SEV-VCEK"),
            1 => ("VLEK", "SEV-VLEK"),
            other => {
                return Err(ParseError::InvalidField {
                    what: "SNP report",
                    field: "KEY_INFO.SIGNING_KEY",
                    reason: format!("{other} (no VEK signature)"),
                }
                .into())
            }
        };

        // Signature: r and s, 72 bytes little-endian each, of which only 48 are used; the
        // rest of the 0x4A0-byte report after them must be zero (it is not signed).
        let sig_area = slice(report, SIGNED_LEN, REPORT_LEN - SIGNED_LEN, "SNP report")?;
        let r_le = slice(sig_area, 0, 48, "SNP signature")?;
        let s_le = slice(sig_area, 72, 48, "SNP signature")?;
        let pad_ok = slice(sig_area, 48, 24, "SNP signature")?
            .iter()
            .all(|b| *b == 0)
            && slice(sig_area, 120, sig_area.len() - 120, "SNP signature")?
                .iter()
                .all(|b| *b == 0);
        if !pad_ok {
            return Err(VerifyError::Signature(
                "SNP report (non-zero unsigned padding)",
            ));
        }
        let mut sig = Vec::with_capacity(96);
        sig.extend(r_le.iter().rev());
        sig.extend(s_le.iter().rev());
        let signed = slice(report, 0, SIGNED_LEN, "SNP report")?;

        let chip_id = parsed.chip_id;
        let chip_id_masked = chip_id.iter().all(|b| *b == 0);
        let reported = tcb(&parsed.reported_tcb);

        // Candidate VEKs of the right kind; the intermediates are everything else.
        let parsed_certs: Vec<Certificate> = certs
            .iter()
            .map(|c| parse_cert(c))
            .collect::<Result<_, _>>()?;
        let (veks, intermediates): (Vec<&Certificate>, Vec<&Certificate>) = parsed_certs
            .iter()
            .partition(|c| subject_cn(c) == want_subject);
        let intermediates: Vec<Certificate> = intermediates.into_iter().cloned().collect();
        if veks.is_empty() {
            return Err(VerifyError::MissingEndorsement(if signing_key == "VCEK" {
                "VCEK certificate"
            } else {
                "VLEK certificate"
            }));
        }

        let mut last_err = VerifyError::Signature("SNP report");
        for vek in veks {
            let attempt = (|| {
                let issuer = issuer_cn(vek);
                let family = family_of_issuer(&issuer)
                    .ok_or_else(|| chain_err(format!("unknown VEK issuer {issuer:?}")))?;
                // Cheap identity checks first so the right VCEK is found in a cache.
                if signing_key == "VCEK" && !chip_id_masked {
                    if let Some(hwid) = extension(vek, "1.3.6.1.4.1.3704.1.4") {
                        let hwid = octets_or_raw(hwid);
                        if hwid.is_empty() || chip_id.get(..hwid.len()) != Some(hwid.as_slice()) {
                            return Err(VerifyError::TcbInconsistent(
                                "VCEK hwID differs from the report's CHIP_ID".into(),
                            ));
                        }
                    }
                }
                let key = vek
                    .tbs_certificate
                    .subject_public_key_info
                    .subject_public_key
                    .as_bytes()
                    .ok_or_else(|| chain_err("VEK key is not a whole number of bytes"))?;
                UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
                    .verify(signed, &sig)
                    .map_err(|_| VerifyError::Signature("SNP report"))?;
                self.verify_chain(family, &intermediates, vek, now)?;
                check_vek_tcb(vek, &reported)?;
                Ok(family)
            })();
            match attempt {
                Ok(family) => {
                    return self.finish(report, &parsed, family, signing_key, reported);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn finish(
        &self,
        report: &[u8],
        p: &AttestationReport,
        family: &'static str,
        signing_key: &'static str,
        reported: SnpTcb,
    ) -> Result<VerifiedSnp, VerifyError> {
        // CPUID family (v3+) must agree with the chain.
        if let (Some(fam), Some(model)) = (p.cpuid_fam_id, p.cpuid_mod_id) {
            let report_family = family_of_cpuid(fam, model);
            if report_family != Some(family) {
                return Err(VerifyError::FamilyMismatch {
                    report: report_family.map_or_else(
                        || format!("family {fam:#x} model {model:#x}"),
                        str::to_owned,
                    ),
                    chain: family.to_owned(),
                });
            }
        }
        let committed = tcb(&p.committed_tcb);
        let current = tcb(&p.current_tcb);
        tcb_le("REPORTED_TCB", &reported, "COMMITTED_TCB", &committed)?;
        tcb_le("COMMITTED_TCB", &committed, "CURRENT_TCB", &current)?;

        let policy = u64::from_le_bytes(field::<8>(report, 0x08, "SNP report")?);
        let fw = field::<3>(report, 0x1E8, "SNP report")?; // build, minor, major
        let mut claims = Claims::new(Platform::Snp, p.report_data.to_vec());
        claims.measure("snp.measurement", &p.measurement);
        claims.host_data = Some(p.host_data.to_vec());
        claims.debug = policy & (1 << 19) != 0;
        claims.migration_agent_allowed = Some(policy & (1 << 18) != 0);
        claims.smt_allowed = Some(policy & (1 << 16) != 0);
        claims.vmpl = Some(p.vmpl);
        claims.tcb = TcbClaims {
            reported: Some(reported),
            committed: Some(committed),
            current: Some(current),
            launch: Some(tcb(&p.launch_tcb)),
            firmware: Some(format!("{}.{}.{}", fw[2], fw[1], fw[0])),
            ..TcbClaims::default()
        };
        claims.chip_family = Some(family.to_owned());
        claims.chip_id = Some(p.chip_id.to_vec());
        claims.signing_key = Some(signing_key.to_owned());
        claims.snp = Some(SnpDetails {
            version: p.version,
            guest_svn: p.guest_svn,
            policy,
            family_id: p.family_id.to_vec(),
            image_id: p.image_id.to_vec(),
            id_key_digest: p.id_key_digest.to_vec(),
            author_key_digest: p.author_key_digest.to_vec(),
            cpuid: match (p.cpuid_fam_id, p.cpuid_mod_id, p.cpuid_step) {
                (Some(f), Some(m), Some(s)) => Some((f, m, s)),
                _ => None,
            },
        });
        Ok(VerifiedSnp {
            family,
            signing_key,
            report_data: p.report_data,
            claims,
        })
    }
}

fn tcb(t: &sev::firmware::host::TcbVersion) -> SnpTcb {
    SnpTcb::new(t.fmc, t.bootloader, t.tee, t.snp, t.microcode)
}

fn tcb_le(an: &str, a: &SnpTcb, bn: &str, b: &SnpTcb) -> Result<(), VerifyError> {
    for ((name, x), (_, y)) in a.components().into_iter().zip(b.components()) {
        if x > y {
            return Err(VerifyError::TcbInconsistent(format!(
                "{an}.{name} = {x} > {bn}.{name} = {y}"
            )));
        }
    }
    Ok(())
}

/// The VEK is derived from REPORTED_TCB: its SPL extensions must equal it.
fn check_vek_tcb(vek: &Certificate, reported: &SnpTcb) -> Result<(), VerifyError> {
    let mut checks: Vec<(&str, &str, u8)> = vec![
        ("bootloader", "1.3.6.1.4.1.3704.1.3.1", reported.bootloader),
        ("tee", "1.3.6.1.4.1.3704.1.3.2", reported.tee),
        ("snp", "1.3.6.1.4.1.3704.1.3.3", reported.snp),
        ("microcode", "1.3.6.1.4.1.3704.1.3.8", reported.microcode),
    ];
    if let Some(fmc) = reported.fmc {
        checks.push(("fmc", "1.3.6.1.4.1.3704.1.3.9", fmc));
    }
    for (name, oid, want) in checks {
        let got = extension(vek, oid)
            .and_then(der_uint)
            .ok_or_else(|| VerifyError::TcbInconsistent(format!("VEK lacks the {name} SPL")))?;
        if got != u64::from(want) {
            return Err(VerifyError::TcbInconsistent(format!(
                "VEK {name} SPL {got} differs from REPORTED_TCB {want}"
            )));
        }
    }
    Ok(())
}

fn family_of_issuer(cn: &str) -> Option<&'static str> {
    let f = cn
        .strip_prefix("SEV-VLEK-")
        .or_else(|| cn.strip_prefix("SEV-"))?;
    crate::reference::CHIP_FAMILIES
        .iter()
        .copied()
        .find(|k| *k == f)
}

fn family_of_cpuid(fam: u8, model: u8) -> Option<&'static str> {
    match (fam, model) {
        (0x19, 0x00..=0x0F) => Some("Milan"),
        (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some("Genoa"),
        (0x1A, 0x00..=0x11) => Some("Turin"),
        _ => None,
    }
}

/// Appraise verified SNP claims against reference values: the trust vector of the
/// `snp-report` component, or the rejection.
pub(crate) fn appraise_snp(
    v: &VerifiedSnp,
    rv: &ReferenceValues,
) -> Result<TrustVector, Rejection> {
    let c = &v.claims;
    let s = &rv.snp;
    if !s.allowed_chip_families.iter().any(|f| f == v.family) {
        return Err(Rejection::ChipFamilyNotAllowed(v.family.to_owned()));
    }
    rv.check_debug(c)?;
    if c.migration_agent_allowed == Some(true) && !rv.allow_migration_agent {
        return Err(Rejection::MigrationAgentNotAllowed);
    }
    if c.smt_allowed == Some(true) && !rv.allow_smt {
        return Err(Rejection::SmtNotAllowed);
    }
    if let (Some(min), Some(rep)) = (&s.min_tcb, &c.tcb.reported) {
        if let (Some(m), Some(r)) = (min.fmc, rep.fmc) {
            if r < m {
                return Err(Rejection::TcbBelowMinimum {
                    component: "fmc",
                    found: u64::from(r),
                    minimum: u64::from(m),
                });
            }
        }
        for ((name, m), (_, r)) in min
            .components()
            .into_iter()
            .filter(|(n, _)| *n != "fmc")
            .zip(rep.components().into_iter().filter(|(n, _)| *n != "fmc"))
        {
            if r < m {
                return Err(Rejection::TcbBelowMinimum {
                    component: name,
                    found: u64::from(r),
                    minimum: u64::from(m),
                });
            }
        }
    }
    if let (Some(max), Some(vmpl)) = (s.max_vmpl, c.vmpl) {
        if vmpl > max {
            return Err(Rejection::VmplTooHigh {
                found: vmpl,
                maximum: max,
            });
        }
    }
    if let Some(d) = &c.snp {
        if let Some(list) = &s.allowed_id_key_digests {
            if !list.contains(&d.id_key_digest) {
                return Err(Rejection::IdKeyNotAllowed(hex::encode(&d.id_key_digest)));
            }
        }
        if let Some(min) = s.min_guest_svn {
            if d.guest_svn < min {
                return Err(Rejection::GuestSvnBelowMinimum {
                    found: d.guest_svn,
                    minimum: min,
                });
            }
        }
    }
    let measurement = c.measurement("snp.measurement").unwrap_or_default();
    let pinned = check_allowed(&s.allowed_measurements, "snp.measurement", measurement)?;
    if let (Some(list), Some(hd)) = (&s.allowed_host_data, &c.host_data) {
        if !list.iter().any(|v| v == hd) {
            return Err(Rejection::HostDataNotAllowed(hex::encode(hd)));
        }
    }
    Ok(TrustVector {
        instance_identity: TrustClaim::affirming(format!(
            "{} chains to the pinned AMD ARK-{}",
            v.signing_key, v.family
        )),
        configuration: if c.debug || c.migration_agent_allowed == Some(true) {
            TrustClaim::warning("debug or migration agent allowed by reference values")
        } else {
            TrustClaim::affirming("guest policy: no debug, no migration agent")
        },
        executables: if pinned {
            TrustClaim::affirming("MEASUREMENT in the allow-list")
        } else {
            TrustClaim::warning("MEASUREMENT not pinned by reference values")
        },
        hardware: TrustClaim::affirming(match s.min_tcb {
            Some(_) => "genuine AMD SEV-SNP, TCB consistent and at or above the minimum",
            None => "genuine AMD SEV-SNP, TCB consistent (no minimum set)",
        }),
        runtime_opaque: TrustClaim::affirming("SEV-SNP encrypted and integrity-protected memory"),
        ..TrustVector::default()
    })
}

impl crate::Verifier for SnpVerifier {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8],
        reference: &ReferenceValues,
        now: Timestamp,
    ) -> Result<Appraisal, VerifyError> {
        evidence.expect_platform(Platform::Snp)?;
        crate::evidence::check_report_data_len(expected_report_data)?;
        let v = self.verify_report(&evidence.report, &evidence.certs, now)?;
        if v.report_data.as_slice() != expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        reference.check_platform(Platform::Snp)?;
        let tv = appraise_snp(&v, reference)?;
        Ok(Appraisal::new(
            v.claims,
            vec![ComponentAppraisal::new("snp-report", tv)],
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(rel: &str) -> Certificate {
        let bytes = std::fs::read(format!(
            "{}/tests/vectors/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        parse_cert(&bytes).unwrap()
    }

    fn bundle(rel: &str) -> Vec<Certificate> {
        let bytes = std::fs::read(format!(
            "{}/tests/vectors/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        crate::x509::certs_from_pem_bundle(&bytes)
            .unwrap()
            .iter()
            .map(|d| parse_cert(d).unwrap())
            .collect()
    }

    const NOW: Timestamp = Timestamp::from_unix_secs(1_748_736_000); // 2025-06-01

    #[test]
    fn turin_chain_verifies() {
        let v = SnpVerifier::new().unwrap();
        let vcek = cert("snp/turin_vcek.der");
        v.verify_chain("Turin", &[], &vcek, NOW).unwrap();
        // With the supplied ASK/ARK bundle as well.
        v.verify_chain("Turin", &bundle("snp/turin_ask_ark.pem"), &vcek, NOW)
            .unwrap();
    }

    #[test]
    fn wrong_family_chain_is_rejected() {
        let v = SnpVerifier::new().unwrap();
        let milan_vcek = cert("snp/milan_a_vcek.der");
        // A Milan VCEK against the Genoa or Turin roots, with and without their ASKs.
        for family in ["Genoa", "Turin"] {
            let e = v.verify_chain(family, &[], &milan_vcek, NOW).unwrap_err();
            assert!(matches!(e, VerifyError::MissingEndorsement(_)), "{e:?}");
        }
        let genoa = bundle("snp/amd/genoa_ask_ark_asvk.pem");
        // A Genoa ASK relabelled as the issuer cannot be found; a Milan ASK supplied for a
        // Turin VCEK does not verify under ARK-Turin.
        let turin_vcek = cert("snp/turin_vcek.der");
        let milan = bundle("snp/milan_ask_ark.pem");
        let e = v.verify_chain("Turin", &milan, &turin_vcek, NOW);
        assert!(e.is_ok(), "builtin Turin ASK still applies: {e:?}");
        let e = v
            .verify_chain("Milan", &genoa, &turin_vcek, NOW)
            .unwrap_err();
        assert!(matches!(e, VerifyError::MissingEndorsement(_)), "{e:?}");
        // The Genoa ASK under ARK-Milan: a direct signature check fails.
        let milan_ark = &v.anchor("Milan").unwrap().ark;
        assert!(verify_rsa_pss(milan_ark, &genoa[0]).is_err());
        assert!(verify_rsa_pss(&genoa[0], &milan_vcek).is_err());
    }

    #[test]
    fn cpuid_family_mapping() {
        assert_eq!(family_of_cpuid(0x19, 0x01), Some("Milan"));
        assert_eq!(family_of_cpuid(0x19, 0x11), Some("Genoa"));
        assert_eq!(family_of_cpuid(0x1A, 0x02), Some("Turin"));
        assert_eq!(family_of_cpuid(0x17, 0x31), None);
    }
}
