//! Evidence production inside a CVM through Linux configfs-tsm (feature `configfs-tsm`).
//!
//! The kernel interface (Documentation/ABI/testing/configfs-tsm): `mkdir` an entry under
//! `/sys/kernel/config/tsm/report/`, write 64 bytes to `inblob`, read `outblob` (the SNP
//! report or TDX quote) and `auxblob` (SNP: the GHCB certificate table with VCEK/VLEK, ASK,
//! ARK), check that `generation` did not change while reading (another writer), `rmdir`
//! the entry. `provider` says which TEE (`sev_guest`, `tdx_guest`). Plain file I/O: no
//! ioctl, no `unsafe`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bytes::Reader;
use crate::error::{AttestError, ParseError};
use crate::evidence::{Evidence, Platform};

/// Where the kernel mounts the report interface.
pub const DEFAULT_ROOT: &str = crate::CONFIGFS_TSM_ROOT;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Produces SNP or TDX evidence through configfs-tsm.
#[derive(Debug, Clone)]
pub struct ConfigfsTsmAttester {
    root: PathBuf,
    platform: Platform,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AttestError + '_ {
    move |source| AttestError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn entry_name() -> String {
    format!(
        "sojourn-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn provider_platform(dir: &Path) -> Result<Platform, AttestError> {
    let p = dir.join("provider");
    let provider = std::fs::read_to_string(&p).map_err(io(&p))?;
    match provider.trim() {
        "sev_guest" => Ok(Platform::Snp),
        "tdx_guest" => Ok(Platform::Tdx),
        other => Err(AttestError::Kernel(format!(
            "unsupported configfs-tsm provider {other:?}"
        ))),
    }
}

fn generation(dir: &Path) -> Result<u64, AttestError> {
    let p = dir.join("generation");
    let g = std::fs::read_to_string(&p).map_err(io(&p))?;
    g.trim()
        .parse()
        .map_err(|_| AttestError::Kernel(format!("bad generation {g:?}")))
}

impl ConfigfsTsmAttester {
    /// Open the interface under `root` and learn the provider (creates and removes one
    /// probe entry).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, AttestError> {
        let root = root.into();
        let dir = root.join(entry_name());
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        let platform = provider_platform(&dir);
        let _ = std::fs::remove_dir(&dir);
        Ok(Self {
            root,
            platform: platform?,
        })
    }
}

/// Produce evidence in an existing entry directory (the kernel creates its files on
/// `mkdir`; tests lay them out by hand).
pub(crate) fn attest_in_entry(dir: &Path, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
    let platform = provider_platform(dir)?;
    let inblob = dir.join("inblob");
    std::fs::write(&inblob, report_data).map_err(io(&inblob))?;
    let gen_before = generation(dir)?;
    let out = dir.join("outblob");
    let outblob = std::fs::read(&out).map_err(io(&out))?;
    let aux = dir.join("auxblob");
    let auxblob = match std::fs::read(&aux) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&aux)(e)),
    };
    if generation(dir)? != gen_before {
        return Err(AttestError::Kernel(
            "entry was rewritten while reading (generation changed)".into(),
        ));
    }
    let mut ev = Evidence::new(platform, outblob);
    if platform == Platform::Snp {
        if let Some(aux) = auxblob.as_deref().filter(|a| !a.is_empty()) {
            ev = ev.with_certs(parse_cert_table(aux)?);
        }
    }
    if ev.claimed_report_data()? != report_data {
        return Err(AttestError::Kernel(
            "outblob does not carry the report data written to inblob".into(),
        ));
    }
    Ok(ev)
}

/// The SNP certificate table: entries of (GUID, offset u32, length u32), ended by an
/// all-zero entry; offsets are from the start of the table. Every entry that parses as an
/// X.509 certificate is returned as DER (GUIDs are not trusted: the verifier classifies
/// certificates by their subject and checks them against pinned roots). The same rule as
/// the `/dev/sev-guest` attester applies to `sev`'s parsed table.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    const W: &str = "SNP certificate table";
    let mut r = Reader::new(table, W);
    let mut certs = Vec::new();
    loop {
        let guid = r.array::<16>()?;
        let offset = r.u32_le()? as usize;
        let len = r.u32_le()? as usize;
        if guid == [0; 16] && offset == 0 && len == 0 {
            break;
        }
        let data = crate::bytes::slice(table, offset, len, W)?;
        crate::cert_table::collect(&mut certs, data, W)?;
    }
    Ok(certs)
}

impl crate::Attester for ConfigfsTsmAttester {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let dir = self.root.join(entry_name());
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        let r = attest_in_entry(&dir, report_data);
        let _ = std::fs::remove_dir(&dir);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::{ReferenceValues, Timestamp, Verifier};

    fn vector(rel: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/vectors/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// A report entry laid out as the kernel lays it out.
    fn entry(provider: &str, outblob: &[u8], auxblob: Option<&[u8]>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sojourn-tsm-test-{}", entry_name()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("provider"), format!("{provider}\n")).unwrap();
        std::fs::write(dir.join("generation"), "1\n").unwrap();
        std::fs::write(dir.join("inblob"), b"").unwrap();
        std::fs::write(dir.join("outblob"), outblob).unwrap();
        if let Some(a) = auxblob {
            std::fs::write(dir.join("auxblob"), a).unwrap();
        }
        dir
    }

    fn cert_table(certs: &[Vec<u8>]) -> Vec<u8> {
        let header = 24 * (certs.len() + 1);
        let mut table = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            table.extend([i as u8 + 1; 16]);
            table.extend(((header + data.len()) as u32).to_le_bytes());
            table.extend((c.len() as u32).to_le_bytes());
            data.extend(c);
        }
        table.extend([0u8; 24]);
        table.extend(data);
        table
    }

    #[cfg(feature = "snp")]
    #[test]
    fn snp_entry_produces_verifiable_evidence() {
        let report = vector("snp/milan_a_report.bin");
        let vcek = vector("snp/milan_a_vcek.der");
        let dir = entry(
            "sev_guest",
            &report,
            Some(&cert_table(std::slice::from_ref(&vcek))),
        );
        let mut rd = [0u8; 64];
        rd.copy_from_slice(&report[0x50..0x90]);
        let ev = attest_in_entry(&dir, &rd).unwrap();
        assert_eq!(std::fs::read(dir.join("inblob")).unwrap(), rd);
        assert_eq!(ev.platform, Platform::Snp);
        assert_eq!(ev.certs, vec![vcek]);
        let a = crate::snp::SnpVerifier::new()
            .unwrap()
            .verify(
                &ev,
                &rd,
                &ReferenceValues::default(),
                Timestamp::from_unix_secs(1_748_736_000),
            )
            .unwrap();
        assert_eq!(a.claims().platform, Platform::Snp);
        // The kernel returning a report over other data is caught.
        assert!(matches!(
            attest_in_entry(&dir, &[0; 64]),
            Err(AttestError::Kernel(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(feature = "tdx")]
    #[test]
    fn tdx_entry_produces_verifiable_evidence() {
        let quote = vector("tdx/v4_a_quote.bin");
        let dir = entry("tdx_guest", &quote, None);
        let mut rd = [0u8; 64];
        rd.copy_from_slice(&quote[48 + 520..48 + 584]);
        let ev = attest_in_entry(&dir, &rd)
            .unwrap()
            .with_collateral(vector("tdx/v4_a_collateral.json"));
        assert_eq!(ev.platform, Platform::Tdx);
        crate::tdx::TdxVerifier::new()
            .unwrap()
            .verify(
                &ev,
                &rd,
                &ReferenceValues::default(),
                Timestamp::from_unix_secs(1_751_328_000),
            )
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_provider_and_empty_root_are_errors() {
        let dir = entry("sgx_guest", b"", None);
        assert!(matches!(
            attest_in_entry(&dir, &[0; 64]),
            Err(AttestError::Kernel(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        // A plain directory is not configfs: mkdir works but no provider file appears.
        let root = std::env::temp_dir().join(format!("sojourn-tsm-root-{}", entry_name()));
        std::fs::create_dir_all(&root).unwrap();
        assert!(matches!(
            ConfigfsTsmAttester::open(&root),
            Err(AttestError::Io { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cert_table_truncation_never_panics() {
        let t = cert_table(&[vector("snp/milan_a_vcek.der")]);
        for len in 0..t.len() {
            let _ = parse_cert_table(&t[..len]);
        }
        assert_eq!(parse_cert_table(&t).unwrap().len(), 1);
    }
}
