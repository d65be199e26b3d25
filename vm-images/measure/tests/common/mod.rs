//! Test helpers: deterministic bytes and a minimal PE32+ builder (for UKIs built in tests).
#![allow(dead_code)]

use sha2::{Digest, Sha256};

/// `n` deterministic bytes from a label (SHA-256 in counter mode).
pub fn stream(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&Sha256::digest(format!("{label}:{i}")));
        i += 1;
    }
    out.truncate(n);
    out
}

fn align(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// A PE32+ EFI application with the given sections (raw data file-aligned to 0x200,
/// VirtualSize = data length), an optional certificate table appended at the end, and
/// optional trailing bytes between the last section and the certificate table.
pub fn build_pe(sections: &[(&str, Vec<u8>)], trailing: &[u8], cert: Option<&[u8]>) -> Vec<u8> {
    let opt_size = 240usize;
    let table = 0x58 + opt_size;
    let headers = align(table + 40 * sections.len(), 0x200);
    let mut out = vec![0u8; headers];
    out[0..2].copy_from_slice(b"MZ");
    out[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    out[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    out[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    out[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    out[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
    out[coff + 18..coff + 20].copy_from_slice(&0x0206u16.to_le_bytes());
    let opt = 0x58;
    out[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    out[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
    out[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
    out[opt + 60..opt + 64].copy_from_slice(&(headers as u32).to_le_bytes());
    out[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // CheckSum (ignored by Authenticode)
    out[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
    out[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    let mut va = 0x1000usize;
    for (i, (name, data)) in sections.iter().enumerate() {
        let raw_ptr = out.len();
        let raw_size = align(data.len(), 0x200);
        out.extend_from_slice(data);
        out.resize(raw_ptr + raw_size, 0);
        let s = table + 40 * i;
        let mut n = [0u8; 8];
        n[..name.len()].copy_from_slice(name.as_bytes());
        out[s..s + 8].copy_from_slice(&n);
        out[s + 8..s + 12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        out[s + 12..s + 16].copy_from_slice(&(va as u32).to_le_bytes());
        out[s + 16..s + 20].copy_from_slice(&(raw_size as u32).to_le_bytes());
        out[s + 20..s + 24].copy_from_slice(&(raw_ptr as u32).to_le_bytes());
        out[s + 36..s + 40].copy_from_slice(&0x4000_0040u32.to_le_bytes());
        va = align(va + data.len().max(1), 0x1000);
    }
    out[opt + 56..opt + 60].copy_from_slice(&(va as u32).to_le_bytes()); // SizeOfImage
    out.extend_from_slice(trailing);
    if let Some(c) = cert {
        let off = align(out.len(), 8);
        out.resize(off, 0);
        out.extend_from_slice(c);
        let d = opt + 112 + 4 * 8;
        out[d..d + 4].copy_from_slice(&(off as u32).to_le_bytes());
        out[d + 4..d + 8].copy_from_slice(&(c.len() as u32).to_le_bytes());
    }
    out
}

/// The contents of the test UKI's sections, in the order objcopy/ukify lay them out.
pub struct UkiParts {
    pub osrel: Vec<u8>,
    pub cmdline: Vec<u8>,
    pub linux: Vec<u8>,
    pub initrd: Vec<u8>,
    pub sdmagic: Vec<u8>,
}

/// A small deterministic UKI: a fake stub `.text`, `.sdmagic` naming systemd-stub 252,
/// `.osrel`, `.cmdline`, `.linux` (itself a PE), `.initrd`.
pub fn test_uki_parts() -> UkiParts {
    let linux = build_pe(
        &[
            (".text", stream("sojourn test kernel text", 9000)),
            (".data", stream("kdata", 700)),
        ],
        &[],
        None,
    );
    UkiParts {
        osrel: b"PRETTY_NAME=\"Sojourn test\"\nID=sojourn\nVERSION_ID=0.1.0\n".to_vec(),
        cmdline: b"console=ttyS0 root=/dev/mapper/root ro\n".to_vec(),
        linux,
        initrd: stream("sojourn test initrd", 30001),
        sdmagic: b"#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####\0".to_vec(),
    }
}

pub fn test_uki() -> (Vec<u8>, UkiParts) {
    let p = test_uki_parts();
    let uki = build_pe(
        &[
            (".text", stream("sojourn test stub text", 3000)),
            (".sdmagic", p.sdmagic.clone()),
            (".osrel", p.osrel.clone()),
            (".cmdline", p.cmdline.clone()),
            (".linux", p.linux.clone()),
            (".initrd", p.initrd.clone()),
        ],
        &[],
        None,
    );
    (uki, p)
}
