//! Measured-boot events and the registers they extend: TPM PCRs (SHA-256 bank) and the TDX
//! run-time measurement registers (SHA-384) under the UEFI confidential-computing mapping.
//!
//! Extend: `PCR_new = H(PCR_old ‖ digest)`, starting from zeros. The CC measurement
//! protocol (UEFI 2.10, EFI_CC_MEASUREMENT_PROTOCOL; EDK II TdTcg2Dxe `MapPcrToMrIndex`)
//! maps TPM PCR indices to CC MR indices: PCR 0 → MR 0 (MRTD, not extendable at run
//! time), PCR 1 and 7 → MR 1 (RTMR[0]), PCR 2–6 → MR 2 (RTMR[1]), PCR 8–15 → MR 3
//! (RTMR[2]); RTMR[3] is left to the OS.

use sha2::{Digest, Sha256, Sha384};

use crate::bytes::{slice, u32_at, u64_at};
use crate::error::MeasureError;

/// `EV_EFI_ACTION` text measured into PCR 4 before the first boot option starts.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// `EV_EFI_ACTION` text measured into PCR 4 when a boot option returned and the next is tried.
pub const RETURNING_FROM_EFI_APPLICATION: &str = "Returning from EFI Application from Boot Option";
/// `EV_EFI_ACTION` texts measured into PCR 5 around ExitBootServices().
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
/// See [`EXIT_BOOT_SERVICES_INVOCATION`].
pub const EXIT_BOOT_SERVICES_RETURNED: &str = "Exit Boot Services Returned with Success";

/// TCG event types used here (TCG PC Client PFP spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum EventType {
    /// 0x4 EV_SEPARATOR.
    Separator,
    /// 0x80000007 EV_EFI_ACTION.
    EfiAction,
    /// 0x80000003 EV_EFI_BOOT_SERVICES_APPLICATION (Authenticode digest of a PE image).
    BootServicesApplication,
    /// 0x80000006 EV_EFI_GPT_EVENT.
    GptEvent,
    /// 0xD EV_IPL: systemd-stub's measurements (section name, section contents).
    Ipl,
    /// 0x6 EV_EVENT_TAG: the Linux EFI stub's measurements (load options, initrd).
    EventTag,
}

/// One measurement with its digest in both banks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Event {
    /// TPM PCR index.
    pub pcr: u8,
    /// Event type.
    pub event_type: EventType,
    /// What was measured, for people.
    pub description: String,
    /// SHA-256 digest (PCR bank).
    #[serde(with = "hex_bytes")]
    pub sha256: Vec<u8>,
    /// SHA-384 digest (RTMR bank).
    #[serde(with = "hex_bytes")]
    pub sha384: Vec<u8>,
    /// Extended into the TPM (PCR `pcr`).
    pub tpm: bool,
    /// Extended through the CC measurement protocol (the RTMR the PCR maps to on TDX).
    pub cc: bool,
}

impl Event {
    /// An event whose digests are the hashes of `data`.
    pub fn of_data(
        pcr: u8,
        event_type: EventType,
        description: impl Into<String>,
        data: &[u8],
    ) -> Self {
        Self {
            pcr,
            event_type,
            description: description.into(),
            sha256: Sha256::digest(data).to_vec(),
            sha384: Sha384::digest(data).to_vec(),
            tpm: true,
            cc: true,
        }
    }

    /// Whether the measuring agent also uses the CC measurement protocol.
    pub fn cc(mut self, cc: bool) -> Self {
        self.cc = cc;
        self
    }

    /// An event with precomputed digests (Authenticode).
    pub fn with_digests(
        pcr: u8,
        event_type: EventType,
        description: impl Into<String>,
        sha256: Vec<u8>,
        sha384: Vec<u8>,
    ) -> Self {
        Self {
            pcr,
            event_type,
            description: description.into(),
            sha256,
            sha384,
            tpm: true,
            cc: true,
        }
    }

    /// `EV_SEPARATOR` with the 4-byte value 0 (no error).
    pub fn separator(pcr: u8) -> Self {
        Self::of_data(pcr, EventType::Separator, "separator", &[0, 0, 0, 0])
    }

    /// `EV_EFI_ACTION` with an ASCII text (measured without NUL).
    pub fn action(pcr: u8, text: &str) -> Self {
        Self::of_data(pcr, EventType::EfiAction, text, text.as_bytes())
    }
}

/// Extend one register value with one digest: `H(old ‖ digest)`.
pub fn extend<D: Digest>(old: &[u8], digest: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update(old);
    h.update(digest);
    h.finalize().to_vec()
}

/// The SHA-256 value of PCR `index` after `events` (zeros if none touch it).
pub fn pcr_sha256(events: &[Event], index: u8) -> [u8; 32] {
    let mut v = vec![0u8; 32];
    for e in events.iter().filter(|e| e.tpm && e.pcr == index) {
        v = extend::<Sha256>(&v, &e.sha256);
    }
    v.try_into().unwrap_or([0; 32])
}

/// The CC measurement-register index a TPM PCR maps to (UEFI CC mapping); `None` for PCRs
/// the firmware does not map (16 and above).
pub fn cc_mr_index(pcr: u8) -> Option<u8> {
    match pcr {
        0 => Some(0),
        1 | 7 => Some(1),
        2..=6 => Some(2),
        8..=15 => Some(3),
        _ => None,
    }
}

/// The RTMR index (0..=2) a PCR's events extend on TDX; `None` for PCR 0 (MRTD) and ≥ 16.
pub fn rtmr_for_pcr(pcr: u8) -> Option<u8> {
    cc_mr_index(pcr).and_then(|mr| mr.checked_sub(1))
}

/// The SHA-384 value of RTMR `index` (0..=3) after `events`, each routed by its PCR.
pub fn rtmr(events: &[Event], index: u8) -> [u8; 48] {
    let mut v = vec![0u8; 48];
    for e in events
        .iter()
        .filter(|e| e.cc && rtmr_for_pcr(e.pcr) == Some(index))
    {
        v = extend::<Sha384>(&v, &e.sha384);
    }
    v.try_into().unwrap_or([0; 48])
}

/// The `EV_EFI_GPT_EVENT` data EDK II measures into PCR 5 when it loads an image from a GPT
/// disk (`Tcg2MeasureGptTable`): the primary header (`HeaderSize` bytes), the number of
/// used entries (u64), then each used entry (`SizeOfPartitionEntry` bytes) in table order.
pub fn gpt_event_data(disk: &[u8], sector: usize) -> Result<Vec<u8>, MeasureError> {
    let gpt = |m: &str| MeasureError::Gpt(m.into());
    let hdr_off = sector;
    if slice(disk, hdr_off, 8) != Some(b"EFI PART") {
        return Err(gpt("no GPT header at LBA 1"));
    }
    let header_size = u32_at(disk, hdr_off + 12).ok_or_else(|| gpt("header truncated"))? as usize;
    if !(92..=sector).contains(&header_size) {
        return Err(gpt("HeaderSize out of range"));
    }
    let header = slice(disk, hdr_off, header_size).ok_or_else(|| gpt("header truncated"))?;
    let entries_lba = u64_at(disk, hdr_off + 72).ok_or_else(|| gpt("header truncated"))?;
    let count = u32_at(disk, hdr_off + 80).ok_or_else(|| gpt("header truncated"))? as usize;
    let esize = u32_at(disk, hdr_off + 84).ok_or_else(|| gpt("header truncated"))? as usize;
    if esize < 128 || count > 4096 {
        return Err(gpt("partition entry size/count out of range"));
    }
    let start = usize::try_from(entries_lba)
        .ok()
        .and_then(|l| l.checked_mul(sector))
        .ok_or_else(|| gpt("entry LBA out of range"))?;
    let mut used = Vec::new();
    for i in 0..count {
        let e =
            slice(disk, start + i * esize, esize).ok_or_else(|| gpt("entry array truncated"))?;
        if e.get(..16).is_some_and(|t| t.iter().any(|b| *b != 0)) {
            used.push(e);
        }
    }
    let mut out = header.to_vec();
    out.extend_from_slice(&(used.len() as u64).to_le_bytes());
    for e in used {
        out.extend_from_slice(e);
    }
    Ok(out)
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}
