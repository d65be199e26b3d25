//! A minimal, bounds-checked PE/COFF reader: headers, section table, section contents as
//! loaded in memory, and the Authenticode image digest the firmware measures.
//!
//! The Authenticode digest follows EDK II's `HashPeImage` (DxeTpm2MeasureBootLib /
//! Tcg2MeasurePeImage), which is what OVMF, TDVF and Hyper-V UEFI extend into PCR 4 /
//! RTMR[1] for an `EV_EFI_BOOT_SERVICES_APPLICATION`:
//!
//! 1. the headers up to the optional header's `CheckSum` field;
//! 2. skip `CheckSum` (4 bytes); the headers up to the certificate-table data directory
//!    entry (index 4), skip it (8 bytes), the rest up to `SizeOfHeaders` (without a
//!    certificate directory: everything after `CheckSum` up to `SizeOfHeaders`);
//! 3. every section with raw data, in ascending `PointerToRawData` order,
//!    `SizeOfRawData` bytes each;
//! 4. any bytes after `SizeOfHeaders + Σ SizeOfRawData` up to the end of the file minus the
//!    certificate table size.

use sha2::Digest;

use crate::bytes::{slice, u16_at, u32_at};
use crate::error::{pe, MeasureError};

/// Upper bound on how far a section's `VirtualSize` may exceed its raw data: the loader
/// zero-fills the difference; a larger gap is treated as malformed (it would only make us
/// hash gigabytes of zeros on hostile input).
pub const MAX_ZERO_FILL: u64 = 64 * 1024 * 1024;

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Section {
    /// The name bytes up to the first NUL (at most 8).
    pub name: String,
    /// `VirtualSize`: bytes in memory (the stub measures this many).
    pub virtual_size: u32,
    /// `VirtualAddress` (RVA).
    pub virtual_address: u32,
    /// `SizeOfRawData`.
    pub raw_size: u32,
    /// `PointerToRawData`.
    pub raw_ptr: u32,
}

/// A parsed PE image (borrowing the file bytes).
#[derive(Debug, Clone)]
pub struct PeImage<'a> {
    data: &'a [u8],
    checksum_off: usize,
    cert_dir_off: Option<usize>,
    cert_size: usize,
    size_of_headers: usize,
    sections: Vec<Section>,
    machine: u16,
}

impl<'a> PeImage<'a> {
    /// Parse and validate: DOS and PE signatures, COFF and optional headers (PE32 or PE32+),
    /// the section table and every section's raw data inside the file.
    pub fn parse(data: &'a [u8]) -> Result<Self, MeasureError> {
        if slice(data, 0, 2) != Some(b"MZ") {
            return Err(pe("no MZ signature"));
        }
        let lfanew = u32_at(data, 0x3c).ok_or_else(|| pe("truncated DOS header"))? as usize;
        if slice(data, lfanew, 4) != Some(b"PE\0\0") {
            return Err(pe("no PE signature at e_lfanew"));
        }
        let coff = lfanew
            .checked_add(4)
            .ok_or_else(|| pe("e_lfanew overflow"))?;
        let machine = u16_at(data, coff).ok_or_else(|| pe("truncated COFF header"))?;
        let nsections = u16_at(data, coff + 2).ok_or_else(|| pe("truncated COFF header"))?;
        let opt_size = u16_at(data, coff + 16).ok_or_else(|| pe("truncated COFF header"))? as usize;
        let opt = coff + 20;
        let magic = u16_at(data, opt).ok_or_else(|| pe("truncated optional header"))?;
        // Offsets inside the optional header that differ between PE32 and PE32+.
        let (nrva_off, dirs_off) = match magic {
            0x10b => (92usize, 96usize),
            0x20b => (108, 112),
            other => return Err(pe(format!("unknown optional header magic {other:#x}"))),
        };
        if opt_size < nrva_off + 4 {
            return Err(pe("optional header too small"));
        }
        if slice(data, opt, opt_size).is_none() {
            return Err(pe("truncated optional header"));
        }
        let size_of_headers =
            u32_at(data, opt + 60).ok_or_else(|| pe("truncated optional header"))? as usize;
        let checksum_off = opt + 64;
        let nrva = u32_at(data, opt + nrva_off).ok_or_else(|| pe("truncated optional header"))?;
        // Data directory 4 = certificate table, present only if NumberOfRvaAndSizes > 4.
        let (cert_dir_off, cert_size) = if nrva > 4 {
            let off = opt + dirs_off + 4 * 8;
            if off + 8 > opt + opt_size {
                return Err(pe("certificate directory outside the optional header"));
            }
            let cert_ptr = u32_at(data, off).ok_or_else(|| pe("truncated data directory"))?;
            let size = u32_at(data, off + 4).ok_or_else(|| pe("truncated data directory"))?;
            if size > 0 {
                let end = u64::from(cert_ptr) + u64::from(size);
                if end > data.len() as u64 {
                    return Err(pe("certificate table outside the file"));
                }
            }
            (Some(off), size as usize)
        } else {
            (None, 0)
        };
        if size_of_headers > data.len() {
            return Err(pe("SizeOfHeaders beyond the end of the file"));
        }
        let hashed_header_end = cert_dir_off.map_or(checksum_off + 4, |c| c + 8);
        if hashed_header_end > size_of_headers {
            return Err(pe("SizeOfHeaders does not cover the optional header"));
        }
        let table = opt + opt_size;
        let mut sections = Vec::with_capacity(usize::from(nsections).min(96));
        for i in 0..usize::from(nsections) {
            let s = slice(data, table + 40 * i, 40).ok_or_else(|| pe("truncated section table"))?;
            let name_raw = slice(s, 0, 8).ok_or_else(|| pe("truncated section table"))?;
            let name_len = name_raw.iter().position(|b| *b == 0).unwrap_or(8);
            let name =
                String::from_utf8_lossy(name_raw.get(..name_len).unwrap_or_default()).into_owned();
            let field = |o| u32_at(s, o).ok_or_else(|| pe("truncated section table"));
            let sec = Section {
                name,
                virtual_size: field(8)?,
                virtual_address: field(12)?,
                raw_size: field(16)?,
                raw_ptr: field(20)?,
            };
            if sec.raw_size > 0
                && u64::from(sec.raw_ptr) + u64::from(sec.raw_size) > data.len() as u64
            {
                return Err(pe(format!(
                    "section {:?} runs past the end of the file",
                    sec.name
                )));
            }
            if u64::from(sec.virtual_size) > u64::from(sec.raw_size) + MAX_ZERO_FILL {
                return Err(pe(format!(
                    "section {:?}: VirtualSize {} exceeds its raw data by more than {} bytes",
                    sec.name, sec.virtual_size, MAX_ZERO_FILL
                )));
            }
            sections.push(sec);
        }
        Ok(Self {
            data,
            checksum_off,
            cert_dir_off,
            cert_size,
            size_of_headers,
            sections,
            machine,
        })
    }

    /// COFF `Machine` (0x8664 for x86-64).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// The section table, in file order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A section's contents as the loader maps them: `VirtualSize` bytes, the raw data
    /// first, zero-filled beyond `SizeOfRawData` (this is what systemd-stub measures and
    /// what it hands to the kernel).
    pub fn section_data(&self, s: &Section) -> Vec<u8> {
        let vsize = s.virtual_size as usize;
        let take = vsize.min(s.raw_size as usize);
        let mut out = slice(self.data, s.raw_ptr as usize, take)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        out.resize(vsize, 0);
        out
    }

    /// The Authenticode digest of the image with hash `D` (SHA-256 for PCRs, SHA-384 for
    /// RTMRs), as EDK II computes it for measured boot.
    pub fn authenticode<D: Digest>(&self) -> Result<Vec<u8>, MeasureError> {
        let mut h = D::new();
        let d = self.data;
        let part = |a: usize, b: usize| d.get(a..b).ok_or_else(|| pe("header range"));
        h.update(part(0, self.checksum_off)?);
        match self.cert_dir_off {
            Some(c) => {
                h.update(part(self.checksum_off + 4, c)?);
                h.update(part(c + 8, self.size_of_headers)?);
            }
            None => h.update(part(self.checksum_off + 4, self.size_of_headers)?),
        }
        let mut sorted: Vec<&Section> = self.sections.iter().filter(|s| s.raw_size > 0).collect();
        sorted.sort_by_key(|s| s.raw_ptr);
        let mut sum = self.size_of_headers as u64;
        for s in sorted {
            let bytes = slice(d, s.raw_ptr as usize, s.raw_size as usize)
                .ok_or_else(|| pe("section range"))?;
            h.update(bytes);
            sum += u64::from(s.raw_size);
        }
        let len = d.len() as u64;
        if len > sum + self.cert_size as u64 {
            let end = (len - self.cert_size as u64) as usize;
            h.update(part(sum as usize, end)?);
        }
        Ok(h.finalize().to_vec())
    }
}
