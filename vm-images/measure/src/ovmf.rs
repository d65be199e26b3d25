//! OVMF firmware image: the GUIDed footer table at the end of the reset vector and the SEV
//! metadata (`ASEV`) it points to. Same parsing rules as `sev-snp-measure` (ovmf.py), with
//! bounds checks where Python would raise or slice silently.

use std::collections::BTreeMap;

use crate::bytes::{slice, u16_at, u32_at};
use crate::error::{ovmf, MeasureError};

/// A GUID in its on-disk (mixed-endian, "bytes_le") form.
pub type Guid = [u8; 16];

/// Build a GUID's on-disk form from its textual fields.
pub const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// 96b582de-1fb2-45f7-baea-a366c55a082d
pub const OVMF_TABLE_FOOTER_GUID: Guid = guid(
    0x96b582de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// 7255371f-3a3b-4b04-927b-1da6efa8d454: GPA (u32) and size of the kernel-hashes table.
pub const SEV_HASH_TABLE_RV_GUID: Guid = guid(
    0x7255371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// 00f771de-1a7e-4fcb-890e-68c77e2fb44e: the AP reset EIP (u32).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = guid(
    0x00f771de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// dc886566-984a-4798-a75e-5585a7bf67cc: offset from the end of the `ASEV` header (u32).
pub const OVMF_SEV_METADATA_GUID: Guid = guid(
    0xdc886566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

/// A footer-table entry header: u16 size then the GUID.
const ENTRY_HEADER: usize = 18;
/// The table ends this many bytes before the end of the image.
const FOOTER_GAP: usize = 32;
/// Most items an `ASEV` header may declare (OVMF has ~6; bounds hostile counts).
const MAX_METADATA_ITEMS: u32 = 1024;

/// Section types of the OVMF SEV metadata (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SectionType {
    /// Pre-validated memory (zero pages; unmeasured on GCE).
    SnpSecMem,
    /// The SNP secrets page.
    SnpSecrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling-area page.
    SvsmCaa,
    /// The page holding the kernel/initrd/cmdline hashes table (direct boot).
    SnpKernelHashes,
}

impl SectionType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::SnpSecMem,
            2 => Self::SnpSecrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::SnpKernelHashes,
            _ => return None,
        })
    }
}

/// One `ASEV` metadata item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetadataSection {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What it is.
    pub kind: SectionType,
}

/// A parsed OVMF image.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    table: BTreeMap<Guid, &'a [u8]>,
    metadata: Vec<MetadataSection>,
}

impl<'a> Ovmf<'a> {
    /// Parse the footer table and the SEV metadata. An image without the footer GUID
    /// parses with an empty table (as in sev-snp-measure); everything malformed is an error.
    pub fn parse(data: &'a [u8]) -> Result<Self, MeasureError> {
        let mut table = BTreeMap::new();
        let size = data.len();
        let footer_start = size.checked_sub(FOOTER_GAP + ENTRY_HEADER).ok_or_else(|| {
            ovmf(format!(
                "image of {size} bytes is too small for a footer table"
            ))
        })?;
        let footer_guid = slice(data, footer_start + 2, 16);
        if footer_guid == Some(&OVMF_TABLE_FOOTER_GUID[..]) {
            let footer_size =
                usize::from(u16_at(data, footer_start).ok_or_else(|| ovmf("footer truncated"))?);
            if let Some(table_size) = footer_size.checked_sub(ENTRY_HEADER) {
                let start = footer_start
                    .checked_sub(table_size)
                    .ok_or_else(|| ovmf("footer table larger than the image"))?;
                let mut rest =
                    slice(data, start, table_size).ok_or_else(|| ovmf("footer table"))?;
                while rest.len() >= ENTRY_HEADER {
                    let hdr = rest.len() - ENTRY_HEADER;
                    let esize = usize::from(u16_at(rest, hdr).ok_or_else(|| ovmf("entry"))?);
                    let g: Guid = slice(rest, hdr + 2, 16)
                        .and_then(|g| g.try_into().ok())
                        .ok_or_else(|| ovmf("entry GUID"))?;
                    if esize < ENTRY_HEADER {
                        return Err(ovmf(format!(
                            "footer table entry size {esize} < {ENTRY_HEADER}"
                        )));
                    }
                    let begin = rest
                        .len()
                        .checked_sub(esize)
                        .ok_or_else(|| ovmf("footer table entry larger than the table"))?;
                    let entry = rest.get(begin..hdr).ok_or_else(|| ovmf("entry data"))?;
                    table.insert(g, entry);
                    rest = rest.get(..begin).ok_or_else(|| ovmf("entry"))?;
                }
            }
        }
        let metadata = match table.get(&OVMF_SEV_METADATA_GUID) {
            None => Vec::new(),
            Some(entry) => parse_metadata(data, entry)?,
        };
        Ok(Self {
            data,
            table,
            metadata,
        })
    }

    /// The whole image.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Its guest physical address when mapped to end at 4 GiB.
    pub fn gpa(&self) -> Result<u64, MeasureError> {
        (1u64 << 32)
            .checked_sub(self.data.len() as u64)
            .ok_or_else(|| ovmf("image larger than 4 GiB"))
    }

    /// Raw data of a footer-table entry.
    pub fn table_entry(&self, g: &Guid) -> Option<&'a [u8]> {
        self.table.get(g).copied()
    }

    /// The SEV metadata items, in image order.
    pub fn metadata(&self) -> &[MetadataSection] {
        &self.metadata
    }

    /// The AP reset EIP from the SEV-ES reset block.
    pub fn sev_es_reset_eip(&self) -> Result<u32, MeasureError> {
        self.table_u32(&SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")
    }

    /// The GPA of the kernel-hashes table.
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, MeasureError> {
        self.table_u32(&SEV_HASH_TABLE_RV_GUID, "SEV hashes table")
    }

    fn table_u32(&self, g: &Guid, what: &str) -> Result<u32, MeasureError> {
        let e = self.table_entry(g).ok_or_else(|| {
            MeasureError::OvmfUnsupported(format!("no {what} entry in the footer table"))
        })?;
        u32_at(e, 0).ok_or_else(|| ovmf(format!("{what} entry shorter than 4 bytes")))
    }
}

fn parse_metadata(data: &[u8], entry: &[u8]) -> Result<Vec<MetadataSection>, MeasureError> {
    let off = u32_at(entry, 0).ok_or_else(|| ovmf("SEV metadata entry shorter than 4 bytes"))?;
    let start = data
        .len()
        .checked_sub(off as usize)
        .ok_or_else(|| ovmf("SEV metadata offset beyond the image"))?;
    if slice(data, start, 4) != Some(b"ASEV") {
        return Err(ovmf("wrong SEV metadata signature"));
    }
    let hsize = u32_at(data, start + 4).ok_or_else(|| ovmf("SEV metadata header truncated"))?;
    let version = u32_at(data, start + 8).ok_or_else(|| ovmf("SEV metadata header truncated"))?;
    let n = u32_at(data, start + 12).ok_or_else(|| ovmf("SEV metadata header truncated"))?;
    if version != 1 {
        return Err(ovmf(format!("SEV metadata version {version} (expected 1)")));
    }
    if n > MAX_METADATA_ITEMS {
        return Err(ovmf(format!("SEV metadata declares {n} items")));
    }
    let items = (hsize as usize)
        .checked_sub(16)
        .and_then(|len| slice(data, start + 16, len))
        .ok_or_else(|| ovmf("SEV metadata items outside the image"))?;
    let mut out = Vec::new();
    for i in 0..n as usize {
        let item = slice(items, 12 * i, 12).ok_or_else(|| ovmf("SEV metadata item truncated"))?;
        let f = |o| u32_at(item, o).ok_or_else(|| ovmf("SEV metadata item truncated"));
        let t = f(8)?;
        let kind = SectionType::from_u32(t)
            .ok_or_else(|| ovmf(format!("unknown SEV metadata section type {t:#x}")))?;
        out.push(MetadataSection {
            gpa: f(0)?,
            size: f(4)?,
            kind,
        });
    }
    Ok(out)
}
