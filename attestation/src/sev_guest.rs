//! Evidence production on SEV-SNP guests through `/dev/sev-guest` (feature `sev-guest`).
//!
//! The fallback for SNP guests whose kernel has the `sev-guest` driver but not
//! configfs-tsm (before Linux 6.7, e.g. older GCP images). [`crate::hardware_attester`]
//! picks it only when configfs-tsm is absent (or compiled out) and the device exists; it
//! is never a substitute for missing hardware, and nothing here ever falls back to the
//! software TEE.
//!
//! The ioctls (`SNP_GET_EXT_REPORT`, with the kernel's certificate-buffer resize retry)
//! are issued by virtee `sev` (`sev::firmware::guest::Firmware::get_ext_report`): this
//! crate keeps `#![forbid(unsafe_code)]`. The extended report is requested so the VCEK or
//! VLEK (and ASK/ASVK, ARK) the host provisioned in the GHCB certificate table travel with
//! the evidence — no KDS fetch on the hot path (LESSONS #2). If the host provisioned no
//! certificates the evidence carries none, and the verifier needs the VEK from its local
//! certificate directory.

use crate::error::{AttestError, ParseError};
use crate::evidence::{Evidence, Platform};
use sev::firmware::host::CertTableEntry;

/// The SEV-SNP guest device.
pub const DEVICE: &str = crate::SEV_GUEST_DEVICE;

/// The highest VMPL the SNP firmware knows.
pub const MAX_VMPL: u32 = 3;

/// Produces SEV-SNP evidence (report + certificate table) through `/dev/sev-guest`.
///
/// Holds the device open; requests are serialised (the kernel serialises them anyway).
#[derive(Debug)]
pub struct SevGuestAttester {
    vmpl: u32,
    #[cfg(target_os = "linux")]
    fw: std::sync::Mutex<sev::firmware::guest::Firmware>,
}

impl SevGuestAttester {
    /// Open `/dev/sev-guest`; reports are requested at VMPL 0.
    pub fn open() -> Result<Self, AttestError> {
        Self::open_at_vmpl(0)
    }

    /// Open `/dev/sev-guest`; reports are requested at `vmpl` (0..=3; the firmware refuses
    /// a VMPL below the one the guest runs at, e.g. under an SVSM).
    pub fn open_at_vmpl(vmpl: u32) -> Result<Self, AttestError> {
        if vmpl > MAX_VMPL {
            return Err(AttestError::InvalidVmpl(vmpl));
        }
        #[cfg(target_os = "linux")]
        {
            let fw = sev::firmware::guest::Firmware::open().map_err(|source| AttestError::Io {
                path: DEVICE.into(),
                source,
            })?;
            Ok(Self {
                vmpl,
                fw: std::sync::Mutex::new(fw),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(AttestError::Io {
                path: DEVICE.into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "/dev/sev-guest exists only on Linux",
                ),
            })
        }
    }

    /// The VMPL reports are requested at.
    pub fn vmpl(&self) -> u32 {
        self.vmpl
    }
}

/// The certificates of `sev`'s parsed certificate table, by the same rule as
/// configfs-tsm's `auxblob`: every entry that parses as X.509 is kept unchanged (CRL and
/// unknown entries are dropped), GUIDs are not trusted, more than 16 certificates is
/// malformed.
pub(crate) fn certs_from_cert_table(
    entries: &[CertTableEntry],
) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut certs = Vec::new();
    for e in entries {
        crate::cert_table::collect(&mut certs, e.data(), "SNP certificate table")?;
    }
    Ok(certs)
}

/// Evidence from what `SNP_GET_EXT_REPORT` returned, checked against the request: the
/// report is exactly 1184 bytes, binds exactly `report_data` and is at `vmpl`.
pub(crate) fn evidence_from_ext_report(
    report: Vec<u8>,
    table: Option<&[CertTableEntry]>,
    report_data: &[u8; 64],
    vmpl: u32,
) -> Result<Evidence, AttestError> {
    const W: &str = "SNP report";
    if report.len() != crate::snp::REPORT_LEN {
        return Err(ParseError::Length {
            what: W,
            expected: crate::snp::REPORT_LEN,
            found: report.len(),
        }
        .into());
    }
    let certs = certs_from_cert_table(table.unwrap_or_default())?;
    let ev = Evidence::new(Platform::Snp, report).with_certs(certs);
    if ev.claimed_report_data()? != report_data {
        return Err(AttestError::Kernel(format!(
            "{DEVICE} returned a report that does not carry the requested report data"
        )));
    }
    let got = u32::from_le_bytes(crate::bytes::field::<4>(&ev.report, 0x30, W)?);
    if got != vmpl {
        return Err(AttestError::Kernel(format!(
            "{DEVICE} returned a report at VMPL {got}, requested {vmpl}"
        )));
    }
    Ok(ev)
}

impl crate::Attester for SevGuestAttester {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    #[cfg(target_os = "linux")]
    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let (report, table) = {
            // A panic elsewhere while holding the lock leaves the device usable.
            let mut fw = self
                .fw
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Message version None = 1 (what the kernel and all SNP firmware accept).
            fw.get_ext_report(None, Some(*report_data), Some(self.vmpl))
                .map_err(|e| AttestError::Kernel(format!("SNP_GET_EXT_REPORT on {DEVICE}: {e}")))?
        };
        evidence_from_ext_report(report, table.as_deref(), report_data, self.vmpl)
    }

    #[cfg(not(target_os = "linux"))]
    fn attest(&self, _: &[u8; 64]) -> Result<Evidence, AttestError> {
        Err(AttestError::Kernel(format!(
            "{DEVICE} exists only on Linux"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::firmware::host::CertType;

    fn vector(rel: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/vectors/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// DER certificates of a PEM bundle in the vectors.
    fn pem(rel: &str) -> Vec<Vec<u8>> {
        crate::certs_from_pem_bundle(&vector(rel)).unwrap()
    }

    fn report_data(report: &[u8]) -> [u8; 64] {
        let mut rd = [0u8; 64];
        rd.copy_from_slice(&report[0x50..0x90]);
        rd
    }

    /// 2025-06-01, inside the validity of every SNP sample (as the configfs-tsm and
    /// integration tests use).
    #[cfg(feature = "snp")]
    fn now() -> crate::Timestamp {
        crate::Timestamp::from_unix_secs(1_748_736_000)
    }

    /// A Milan VCEK table as a host provisions it: VCEK, ASK, ARK, plus a CRL entry
    /// (not a certificate) that must be dropped.
    fn milan_a_table() -> (Vec<CertTableEntry>, Vec<u8>, Vec<Vec<u8>>) {
        let vcek = vector("snp/milan_a_vcek.der");
        let chain = pem("snp/milan_ask_ark.pem"); // ASK, ARK
        let table = vec![
            CertTableEntry::new(CertType::ARK, chain[1].clone()),
            CertTableEntry::new(CertType::VCEK, vcek.clone()),
            CertTableEntry::new(CertType::ASK, chain[0].clone()),
            CertTableEntry::new(CertType::CRL, b"not a certificate".to_vec()),
        ];
        (table, vcek, chain)
    }

    #[test]
    fn cert_table_keeps_certificates_drops_the_rest() {
        let (table, vcek, chain) = milan_a_table();
        let certs = certs_from_cert_table(&table).unwrap();
        assert_eq!(certs, vec![chain[1].clone(), vcek, chain[0].clone()]);
        assert!(certs_from_cert_table(&[]).unwrap().is_empty());
        // More than 16 certificates is malformed, as for configfs-tsm's auxblob.
        let many = vec![CertTableEntry::new(CertType::VCEK, vector("snp/milan_a_vcek.der")); 17];
        assert!(matches!(
            certs_from_cert_table(&many),
            Err(ParseError::InvalidField {
                field: "entries",
                ..
            })
        ));
        assert_eq!(certs_from_cert_table(&many[..16]).unwrap().len(), 16);
    }

    #[cfg(feature = "snp")]
    #[test]
    fn vcek_table_produces_verifiable_evidence() {
        use crate::{ReferenceValues, Verifier};
        let report = vector("snp/milan_a_report.bin");
        let rd = report_data(&report);
        let (table, vcek, _) = milan_a_table();
        let ev = evidence_from_ext_report(report.clone(), Some(&table), &rd, 0).unwrap();
        assert_eq!(ev.platform, Platform::Snp);
        assert_eq!(ev.report, report);
        assert!(ev.certs.contains(&vcek));
        let v = crate::snp::SnpVerifier::new().unwrap();
        let a = v
            .verify(&ev, &rd, &ReferenceValues::default(), now())
            .unwrap();
        let c = a.claims();
        assert_eq!(c.platform, Platform::Snp);
        assert_eq!(c.signing_key.as_deref(), Some("VCEK"));
        assert_eq!(c.vmpl, Some(0));
        assert_eq!(c.report_data, rd.to_vec());
        // The container round-trips what the attester produced.
        assert_eq!(Evidence::from_bytes(&ev.to_bytes()).unwrap(), ev);
        // A host that provisioned no certificates: evidence without certs, which the
        // verifier refuses until a VCEK is supplied (never fetched).
        let bare = evidence_from_ext_report(report, None, &rd, 0).unwrap();
        assert!(bare.certs.is_empty());
        assert!(matches!(
            v.verify(&bare, &rd, &ReferenceValues::default(), now()),
            Err(crate::VerifyError::MissingEndorsement(_))
        ));
    }

    #[cfg(feature = "snp")]
    #[test]
    fn vlek_table_at_vmpl_1_produces_verifiable_evidence() {
        use crate::{ReferenceValues, Verifier};
        let report = vector("snp/milan_vlek_report.bin");
        let rd = report_data(&report);
        let amd = pem("snp/amd/milan_ask_ark_asvk.pem"); // ASK, ARK, ASVK
        let table = vec![
            CertTableEntry::new(CertType::VLEK, vector("snp/milan_vlek_vlek.der")),
            CertTableEntry::new(CertType::ASK, amd[2].clone()),
            CertTableEntry::new(CertType::ARK, amd[1].clone()),
        ];
        let ev = evidence_from_ext_report(report.clone(), Some(&table), &rd, 1).unwrap();
        let a = crate::snp::SnpVerifier::new()
            .unwrap()
            .verify(&ev, &rd, &ReferenceValues::default(), now())
            .unwrap();
        assert_eq!(a.claims().signing_key.as_deref(), Some("VLEK"));
        assert_eq!(a.claims().vmpl, Some(1));
        // The report is at VMPL 1: a request for VMPL 0 answered with it is an error.
        assert!(matches!(
            evidence_from_ext_report(report, Some(&table), &rd, 0),
            Err(AttestError::Kernel(_))
        ));
    }

    #[test]
    fn mismatched_or_malformed_reports_are_errors() {
        let report = vector("snp/milan_a_report.bin");
        let rd = report_data(&report);
        let (table, _, _) = milan_a_table();
        // Other report data than requested.
        let mut other = rd;
        other[63] ^= 1;
        assert!(matches!(
            evidence_from_ext_report(report.clone(), Some(&table), &other, 0),
            Err(AttestError::Kernel(_))
        ));
        // Wrong lengths, never padded or truncated.
        for len in [0, 0x90, report.len() - 1] {
            assert!(matches!(
                evidence_from_ext_report(report[..len].to_vec(), None, &rd, 0),
                Err(AttestError::Malformed(ParseError::Length { .. }))
            ));
        }
        let mut long = report.clone();
        long.push(0);
        assert!(matches!(
            evidence_from_ext_report(long, None, &rd, 0),
            Err(AttestError::Malformed(ParseError::Length { .. }))
        ));
    }

    #[test]
    fn opening_without_the_device_is_a_typed_error() {
        assert!(matches!(
            SevGuestAttester::open_at_vmpl(4),
            Err(AttestError::InvalidVmpl(4))
        ));
        if std::path::Path::new(DEVICE).exists() {
            return; // a real SNP guest: nothing to check here
        }
        match SevGuestAttester::open() {
            Err(AttestError::Io { path, source }) => {
                assert_eq!(path, DEVICE);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
