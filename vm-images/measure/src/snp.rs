//! The SEV-SNP launch digest (MEASUREMENT) of a guest started by a VMM from an OVMF image,
//! optionally with direct kernel boot (QEMU `-kernel/-initrd/-append` with
//! `kernel-hashes=on`). Same computation as `sev-snp-measure --mode snp` (IBM, PyPI):
//!
//! 1. every page of the firmware image, mapped to end at 4 GiB, as a NORMAL page;
//! 2. each SEV metadata section in order: SEC_MEM as ZERO pages (UNMEASURED on GCE),
//!    SECRETS, CPUID (after all others on EC2), SNP_KERNEL_HASHES as a NORMAL page holding
//!    the SHA-256 table of cmdline/initrd/kernel (ZERO pages without a kernel), SVSM_CAA
//!    as ZERO pages;
//! 3. one VMSA page per vCPU (BSP at 0xfffffff0, APs at the firmware's SEV-ES reset EIP).
//!
//! Each page updates the digest with SHA-384 over the 0x70-byte PAGE_INFO structure (SNP
//! ABI spec, PAGE_INFO): previous digest ‖ page contents digest ‖ length ‖ type ‖ IMI ‖
//! VMPL permissions ‖ GPA.

use sha2::{Digest, Sha256, Sha384};

use crate::bytes::put;
use crate::error::MeasureError;
use crate::ovmf::{guid, Guid, Ovmf, SectionType};

/// A SHA-384 launch digest.
pub type LaunchDigest = [u8; 48];

const PAGE: usize = 4096;

/// Which VMM launches the guest: they differ in initial register state and page types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum VmmType {
    /// QEMU/KVM (bare-metal or self-hosted SNP).
    Qemu,
    /// Google Compute Engine.
    Gce,
    /// Amazon EC2.
    Ec2,
}

impl std::str::FromStr for VmmType {
    type Err = MeasureError;
    fn from_str(s: &str) -> Result<Self, MeasureError> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Ok(Self::Qemu),
            "gce" => Ok(Self::Gce),
            "ec2" => Ok(Self::Ec2),
            _ => Err(MeasureError::Input(format!(
                "unknown VMM type {s:?} (qemu, gce, ec2)"
            ))),
        }
    }
}

/// The CPUID signature (Fn0000_0001_EAX) for family/model/stepping.
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU's built-in EPYC CPU models and their signatures (as sev-snp-measure lists them).
pub const VCPU_TYPES: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The signature of a named vCPU type.
pub fn vcpu_sig_for(name: &str) -> Result<u32, MeasureError> {
    VCPU_TYPES
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, f, m, s)| cpu_sig(*f, *m, *s))
        .ok_or_else(|| {
            let known: Vec<&str> = VCPU_TYPES.iter().map(|t| t.0).collect();
            MeasureError::Input(format!(
                "unknown vCPU type {name:?}; known: {}",
                known.join(", ")
            ))
        })
}

/// Inputs of an SNP launch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnpLaunch<'a> {
    /// The firmware image (OVMF built with SEV metadata; `OVMF.amdsev.fd` for direct boot).
    pub ovmf: &'a [u8],
    /// Direct boot: the kernel (bzImage / the UKI's `.linux`), hashed as passed to QEMU.
    pub kernel: Option<&'a [u8]>,
    /// Direct boot: the initrd (empty if none).
    pub initrd: Option<&'a [u8]>,
    /// Direct boot: the command line as given to `-append` (a NUL is appended).
    pub cmdline: Option<&'a str>,
    /// Number of vCPUs (one VMSA each).
    pub vcpus: u32,
    /// CPUID signature of the vCPU type.
    pub vcpu_sig: u32,
    /// SEV_FEATURES of the VMSAs (sev-snp-measure default 0x1: SNPActive).
    pub guest_features: u64,
    /// The VMM.
    pub vmm: VmmType,
}

impl<'a> SnpLaunch<'a> {
    /// A QEMU launch of `ovmf` with `vcpus` vCPUs of signature `vcpu_sig`, SEV_FEATURES 0x1,
    /// no direct boot.
    pub fn new(ovmf: &'a [u8], vcpus: u32, vcpu_sig: u32) -> Self {
        Self {
            ovmf,
            kernel: None,
            initrd: None,
            cmdline: None,
            vcpus,
            vcpu_sig,
            guest_features: 1,
            vmm: VmmType::Qemu,
        }
    }

    /// Direct boot of a kernel with an initrd and command line.
    pub fn direct_boot(
        mut self,
        kernel: &'a [u8],
        initrd: Option<&'a [u8]>,
        cmdline: &'a str,
    ) -> Self {
        self.kernel = Some(kernel);
        self.initrd = initrd;
        self.cmdline = Some(cmdline);
        self
    }

    /// Set the VMM type.
    pub fn vmm(mut self, vmm: VmmType) -> Self {
        self.vmm = vmm;
        self
    }

    /// Set SEV_FEATURES.
    pub fn guest_features(mut self, f: u64) -> Self {
        self.guest_features = f;
        self
    }

    /// Compute the launch digest.
    pub fn digest(&self) -> Result<LaunchDigest, MeasureError> {
        if self.vcpus == 0 || self.vcpus > 512 {
            return Err(MeasureError::Input(format!(
                "vCPU count {} (1..=512)",
                self.vcpus
            )));
        }
        let fw = Ovmf::parse(self.ovmf)?;
        if !self.ovmf.len().is_multiple_of(PAGE) {
            return Err(MeasureError::Ovmf(format!(
                "image size {} is not a multiple of 4096",
                self.ovmf.len()
            )));
        }
        let mut g = Gctx::default();
        g.normal_pages(fw.gpa()?, self.ovmf);
        let hashes = self
            .kernel
            .map(|k| SevHashes::new(k, self.initrd, self.cmdline));
        if hashes.is_some()
            && !fw
                .metadata()
                .iter()
                .any(|s| s.kind == SectionType::SnpKernelHashes)
        {
            return Err(MeasureError::OvmfUnsupported(
                "kernel given but the SEV metadata has no SNP_KERNEL_HASHES section (use an \
                 OVMF built from OvmfPkg/AmdSev, e.g. OVMF.amdsev.fd)"
                    .into(),
            ));
        }
        for s in fw.metadata() {
            let (gpa, size) = (u64::from(s.gpa), u64::from(s.size));
            if !size.is_multiple_of(PAGE as u64) {
                return Err(MeasureError::Ovmf(format!(
                    "metadata section size {size:#x} not page-aligned"
                )));
            }
            match s.kind {
                SectionType::SnpSecMem if self.vmm == VmmType::Gce => {
                    g.typed_pages(0x04, gpa, size)
                }
                SectionType::SnpSecMem | SectionType::SvsmCaa => g.typed_pages(0x03, gpa, size),
                SectionType::SnpSecrets => g.update(0x05, gpa, &[0; 48]),
                SectionType::Cpuid if self.vmm != VmmType::Ec2 => g.update(0x06, gpa, &[0; 48]),
                SectionType::Cpuid => {}
                SectionType::SnpKernelHashes => match &hashes {
                    Some(h) => {
                        if size != PAGE as u64 {
                            return Err(MeasureError::Ovmf(format!(
                                "SNP_KERNEL_HASHES section is {size:#x} bytes, not one page"
                            )));
                        }
                        let off = (fw.sev_hashes_table_gpa()? & 0xfff) as usize;
                        g.normal_pages(gpa, &h.page(off)?);
                    }
                    None => g.typed_pages(0x03, gpa, size),
                },
            }
        }
        if self.vmm == VmmType::Ec2 {
            for s in fw
                .metadata()
                .iter()
                .filter(|s| s.kind == SectionType::Cpuid)
            {
                g.update(0x06, u64::from(s.gpa), &[0; 48]);
            }
        }
        let bsp = vmsa(0xffff_fff0, self.guest_features, self.vcpu_sig, self.vmm);
        let ap = if self.vcpus > 1 {
            let eip = fw.sev_es_reset_eip()?;
            if eip == 0 {
                return Err(MeasureError::OvmfUnsupported(
                    "SEV-ES reset EIP is 0 (no AP entry)".into(),
                ));
            }
            Some(vmsa(eip, self.guest_features, self.vcpu_sig, self.vmm))
        } else {
            // sev-snp-measure reads the reset block even for one vCPU; so do we.
            fw.sev_es_reset_eip()?;
            None
        };
        g.vmsa(&bsp);
        if let Some(ap) = &ap {
            for _ in 1..self.vcpus {
                g.vmsa(ap);
            }
        }
        Ok(g.ld)
    }
}

/// The guest context: the running launch digest.
#[derive(Debug, Clone)]
struct Gctx {
    ld: LaunchDigest,
}

impl Default for Gctx {
    fn default() -> Self {
        Self { ld: [0; 48] }
    }
}

impl Gctx {
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        put(&mut info, 0, &self.ld);
        put(&mut info, 48, contents);
        put(&mut info, 96, &0x70u16.to_le_bytes());
        put(&mut info, 98, &[page_type]);
        // 99: IMI page = 0; 100..104: VMPL3/2/1 permissions and reserved = 0.
        put(&mut info, 104, &gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE).enumerate() {
            self.update(0x01, gpa + (i * PAGE) as u64, &Sha384::digest(page).into());
        }
    }

    fn typed_pages(&mut self, page_type: u8, gpa: u64, len: u64) {
        let mut off = 0;
        while off < len {
            self.update(page_type, gpa + off, &[0; 48]);
            off += PAGE as u64;
        }
    }

    fn vmsa(&mut self, page: &[u8; PAGE]) {
        // The VMSA is recorded at GPA (u64)-1, page-aligned, bits above 51 cleared.
        self.update(0x02, 0xFFFF_FFFF_F000, &Sha384::digest(page).into());
    }
}

/// The initial VMSA (SEV-ES save area) of a vCPU, as the VMM sets it up.
pub fn vmsa(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> [u8; PAGE] {
    let mut g_pat: u64 = 0x0007_0406_0007_0406;
    let (cs_flags, ss_flags, tr_flags, rdx, mxcsr, fcw): (u16, u16, u16, u64, u32, u16) = match vmm
    {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80, 0x37f),
        VmmType::Ec2 => (
            if eip == 0xffff_fff0 { 0x9a } else { 0x9b },
            0x92,
            0x83,
            0x600,
            0,
            0,
        ),
        VmmType::Gce => {
            g_pat = 0x0007_0106;
            (0x9b, 0x93, 0x8b, 0x600, 0, 0)
        }
    };
    let mut p = [0u8; PAGE];
    let mut seg = |off: usize, selector: u16, attrib: u16, limit: u32, base: u64| {
        put(&mut p, off, &selector.to_le_bytes());
        put(&mut p, off + 2, &attrib.to_le_bytes());
        put(&mut p, off + 4, &limit.to_le_bytes());
        put(&mut p, off + 8, &base.to_le_bytes());
    };
    seg(0x00, 0, 0x93, 0xffff, 0); // es
    seg(0x10, 0xf000, cs_flags, 0xffff, u64::from(eip & 0xffff_0000)); // cs
    seg(0x20, 0, ss_flags, 0xffff, 0); // ss
    seg(0x30, 0, 0x93, 0xffff, 0); // ds
    seg(0x40, 0, 0x93, 0xffff, 0); // fs
    seg(0x50, 0, 0x93, 0xffff, 0); // gs
    seg(0x60, 0, 0, 0xffff, 0); // gdtr
    seg(0x70, 0, 0x82, 0xffff, 0); // ldtr
    seg(0x80, 0, 0, 0xffff, 0); // idtr
    seg(0x90, 0, tr_flags, 0xffff, 0); // tr
    let mut q = |off: usize, v: u64| put(&mut p, off, &v.to_le_bytes());
    q(0xd0, 0x1000); // efer: SVME
    q(0x148, 0x40); // cr4: MCE
    q(0x158, 0x10); // cr0
    q(0x160, 0x400); // dr7
    q(0x168, 0xffff_0ff0); // dr6
    q(0x170, 0x2); // rflags
    q(0x178, u64::from(eip & 0xffff)); // rip
    q(0x268, g_pat);
    q(0x310, rdx);
    q(0x3b0, sev_features);
    q(0x3e8, 0x1); // xcr0
    put(&mut p, 0x408, &mxcsr.to_le_bytes());
    put(&mut p, 0x410, &fcw.to_le_bytes());
    p
}

const SEV_HASH_TABLE_HEADER_GUID: Guid = guid(
    0x9438d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const SEV_KERNEL_ENTRY_GUID: Guid = guid(
    0x4de79437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
const SEV_INITRD_ENTRY_GUID: Guid = guid(
    0x44baf731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const SEV_CMDLINE_ENTRY_GUID: Guid = guid(
    0x97d02dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

/// The SHA-256 hashes QEMU puts in the firmware's hashes table for direct boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the kernel file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of the empty string without one).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by one NUL.
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// Hash the three inputs.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let mut c = Sha256::new();
        c.update(cmdline.unwrap_or("").as_bytes());
        c.update([0u8]);
        Self {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: c.finalize().into(),
        }
    }

    /// The table (header + cmdline, initrd, kernel entries), padded to 16 bytes.
    pub fn table(&self) -> Vec<u8> {
        const ENTRY: u16 = 16 + 2 + 32;
        const TABLE: u16 = 16 + 2 + 3 * ENTRY;
        let mut t = Vec::with_capacity(176);
        t.extend_from_slice(&SEV_HASH_TABLE_HEADER_GUID);
        t.extend_from_slice(&TABLE.to_le_bytes());
        for (g, h) in [
            (SEV_CMDLINE_ENTRY_GUID, &self.cmdline),
            (SEV_INITRD_ENTRY_GUID, &self.initrd),
            (SEV_KERNEL_ENTRY_GUID, &self.kernel),
        ] {
            t.extend_from_slice(&g);
            t.extend_from_slice(&ENTRY.to_le_bytes());
            t.extend_from_slice(h);
        }
        t.resize(t.len().div_ceil(16) * 16, 0);
        t
    }

    /// The page holding the table at `offset`.
    pub fn page(&self, offset: usize) -> Result<Vec<u8>, MeasureError> {
        let t = self.table();
        if offset + t.len() > PAGE {
            return Err(MeasureError::Ovmf(format!(
                "hashes table at page offset {offset:#x} does not fit in the page"
            )));
        }
        let mut p = vec![0u8; PAGE];
        put(&mut p, offset, &t);
        Ok(p)
    }
}
