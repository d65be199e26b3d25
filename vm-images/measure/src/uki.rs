//! Unified kernel images (systemd-stub + kernel + initrd + command line in one PE) and the
//! measured-boot event sequence they produce.
//!
//! The modelled boot (firmware boots the UKI as the default boot option, no shim, no
//! systemd-boot, Secure Boot off; see docs/vm-images.md):
//!
//! | # | PCR | by | event |
//! |---|---|---|---|
//! | 1 | 4 | firmware, ReadyToBoot | `EV_EFI_ACTION` "Calling EFI Application from Boot Option" |
//! | 2 | 0–6 | firmware, ReadyToBoot | `EV_SEPARATOR` 0x00000000 (PCR 7's comes with the Secure Boot policy) |
//! | 3 | 5 | firmware, first load from the disk | `EV_EFI_GPT_EVENT` (only with a disk image) |
//! | 4 | 4 | firmware, LoadImage(UKI) | `EV_EFI_BOOT_SERVICES_APPLICATION`: Authenticode of the UKI |
//! | 5 | 11 | systemd-stub | per measured section in the stub's order: the name with its NUL, then the contents (`VirtualSize` bytes) |
//! | 6 | 4 | firmware, LoadImage(.linux) by the stub | `EV_EFI_BOOT_SERVICES_APPLICATION`: Authenticode of the kernel |
//! | 7 | 9 | Linux EFI stub | `EV_EVENT_TAG` "LOADED_IMAGE::LoadOptions" (the command line as the stub passes it, UTF-16), then "Linux initrd" (the initrd contents) |
//! | 8 | 5 | firmware, ExitBootServices | `EV_EFI_ACTION` "Exit Boot Services Invocation", "… Returned with Success" |
//!
//! On TDX the firmware's events go to RTMRs through the CC mapping; systemd-stub measures
//! through EFI_CC_MEASUREMENT_PROTOCOL only from systemd 256 on, and the Linux EFI stub
//! from Linux 6.8 on, so with older stubs those events reach the TPM PCRs only.

use sha2::{Sha256, Sha384};

use crate::error::MeasureError;
use crate::pe::PeImage;
use crate::tcg::{
    Event, EventType, CALLING_EFI_APPLICATION, EXIT_BOOT_SERVICES_INVOCATION,
    EXIT_BOOT_SERVICES_RETURNED, RETURNING_FROM_EFI_APPLICATION,
};

/// The stub version assumed when the UKI's `.sdmagic` does not name one.
pub const DEFAULT_STUB_VERSION: u32 = 252;

/// The sections a systemd-stub of `version` measures into PCR 11, in its order
/// (`unified_sections[]` in src/boot/efi/uki.c; `.pcrsig` is never measured).
pub fn measured_sections(version: u32) -> Vec<&'static str> {
    let mut s = vec![".linux", ".osrel", ".cmdline", ".initrd"];
    if version >= 256 {
        s.push(".ucode");
    }
    s.extend([".splash", ".dtb"]);
    if version >= 254 {
        s.push(".uname");
    }
    if version >= 255 {
        s.push(".sbat");
    }
    s.push(".pcrpkey");
    if version >= 257 {
        s.extend([".profile", ".dtbauto", ".hwids", ".efifw"]);
    }
    s
}

/// Whether a systemd-stub of `version` also measures through EFI_CC_MEASUREMENT_PROTOCOL
/// (systemd PR #30996, first released in 256).
pub fn stub_measures_cc(version: u32) -> bool {
    version >= 256
}

/// A parsed UKI.
#[derive(Debug, Clone)]
pub struct Uki<'a> {
    data: &'a [u8],
    pe: PeImage<'a>,
    stub_version: Option<u32>,
}

impl<'a> Uki<'a> {
    /// Parse a UKI: a PE image with a `.linux` section that is itself a PE image.
    pub fn parse(data: &'a [u8]) -> Result<Self, MeasureError> {
        let pe = PeImage::parse(data)?;
        let linux = pe
            .section(".linux")
            .ok_or_else(|| MeasureError::Uki("no .linux section".into()))?;
        PeImage::parse(&pe.section_data(linux))
            .map_err(|e| MeasureError::Uki(format!(".linux is not a PE image: {e}")))?;
        if pe.section(".profile").is_some() {
            return Err(MeasureError::Uki(
                "multi-profile UKIs (.profile sections) are not modelled".into(),
            ));
        }
        let stub_version = pe.section(".sdmagic").and_then(|s| {
            let text = pe.section_data(s);
            parse_stub_version(&String::from_utf8_lossy(&text))
        });
        Ok(Self {
            data,
            pe,
            stub_version,
        })
    }

    /// The file bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The PE view.
    pub fn pe(&self) -> &PeImage<'a> {
        &self.pe
    }

    /// The systemd-stub major version from `.sdmagic`
    /// (`#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####`), if present.
    pub fn stub_version(&self) -> Option<u32> {
        self.stub_version
    }

    /// A section's in-memory contents.
    pub fn section(&self, name: &str) -> Option<Vec<u8>> {
        self.pe.section(name).map(|s| self.pe.section_data(s))
    }

    /// The kernel (`.linux`).
    pub fn linux(&self) -> Vec<u8> {
        self.section(".linux").unwrap_or_default()
    }

    /// The initrd (`.initrd`), if any.
    pub fn initrd(&self) -> Option<Vec<u8>> {
        self.section(".initrd")
    }

    /// The command line (`.cmdline`) up to the first NUL, trailing whitespace removed: the
    /// string to pass to QEMU's `-append` for the same boot.
    pub fn cmdline(&self) -> Option<String> {
        self.section(".cmdline").map(|c| {
            let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(c.get(..end).unwrap_or_default())
                .trim_end()
                .to_string()
        })
    }

    /// The kernel's load options as systemd-stub passes them: the `.cmdline` up to its first
    /// NUL, control characters turned into spaces, trailing whitespace removed, widened to
    /// UTF-16LE with a terminating NUL (what the Linux EFI stub measures into PCR 9).
    pub fn stub_load_options(&self) -> Vec<u8> {
        let raw = self.section(".cmdline").unwrap_or_default();
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        let mangled: Vec<u8> = raw
            .get(..end)
            .unwrap_or_default()
            .iter()
            .map(|b| if *b < 0x20 || *b == 0x7f { b' ' } else { *b })
            .collect();
        let len = mangled
            .iter()
            .rposition(|b| *b != b' ')
            .map_or(0, |p| p + 1);
        let mut out = Vec::with_capacity(2 * len + 2);
        for b in mangled.get(..len).unwrap_or_default() {
            out.extend_from_slice(&u16::from(*b).to_le_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// The PCR 11 events systemd-stub `version` makes for this UKI (name with NUL, then
    /// contents, for each present, non-empty measured section).
    pub fn pcr11_events(&self, version: u32) -> Vec<Event> {
        let cc = stub_measures_cc(version);
        let mut out = Vec::new();
        for name in measured_sections(version) {
            let Some(data) = self.section(name) else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            out.push(Event::of_data(11, EventType::Ipl, format!("{name} (name)"), &n).cc(cc));
            out.push(
                Event::of_data(11, EventType::Ipl, format!("{name} (contents)"), &data).cc(cc),
            );
        }
        out
    }

    /// The modelled boot's whole event sequence (table in the module docs).
    pub fn boot_events(&self, model: &BootModel) -> Result<Vec<Event>, MeasureError> {
        let version = model
            .stub_version
            .or(self.stub_version)
            .unwrap_or(DEFAULT_STUB_VERSION);
        let mut ev = vec![Event::action(4, CALLING_EFI_APPLICATION)];
        ev.extend((0..=6).map(Event::separator));
        for _ in 0..model.failed_boot_attempts {
            ev.push(Event::action(4, RETURNING_FROM_EFI_APPLICATION));
            ev.push(Event::action(4, CALLING_EFI_APPLICATION));
        }
        if let Some(gpt) = &model.gpt_event_data {
            ev.push(Event::of_data(5, EventType::GptEvent, "GPT", gpt));
        }
        ev.push(Event::with_digests(
            4,
            EventType::BootServicesApplication,
            "UKI (Authenticode)",
            self.pe.authenticode::<Sha256>()?,
            self.pe.authenticode::<Sha384>()?,
        ));
        ev.extend(self.pcr11_events(version));
        let linux = self.linux();
        let kernel = PeImage::parse(&linux)?;
        ev.push(Event::with_digests(
            4,
            EventType::BootServicesApplication,
            "kernel .linux (Authenticode, LoadImage by the stub)",
            kernel.authenticode::<Sha256>()?,
            kernel.authenticode::<Sha384>()?,
        ));
        if model.kernel_measures_load_options {
            ev.push(
                Event::of_data(
                    9,
                    EventType::EventTag,
                    "LOADED_IMAGE::LoadOptions (by the kernel's EFI stub)",
                    &self.stub_load_options(),
                )
                .cc(model.kernel_measures_cc),
            );
        }
        if model.kernel_measures_initrd {
            if let Some(initrd) = self.initrd().filter(|i| !i.is_empty()) {
                ev.push(
                    Event::of_data(
                        9,
                        EventType::Ipl,
                        "Linux initrd (by the kernel's EFI stub)",
                        &initrd,
                    )
                    .cc(model.kernel_measures_cc),
                );
            }
        }
        ev.push(Event::action(5, EXIT_BOOT_SERVICES_INVOCATION));
        ev.push(Event::action(5, EXIT_BOOT_SERVICES_RETURNED));
        Ok(ev)
    }
}

/// Choices of the modelled boot that the UKI alone does not determine.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BootModel {
    /// Override the stub version read from `.sdmagic`.
    pub stub_version: Option<u32>,
    /// `EV_EFI_GPT_EVENT` data of the boot disk ([`crate::tcg::gpt_event_data`]).
    pub gpt_event_data: Option<Vec<u8>>,
    /// The kernel's EFI stub measures the initrd into PCR 9 (Linux ≥ 5.17).
    pub kernel_measures_initrd: bool,
    /// … and, before it, its load options (the command line; Linux ≥ 6.6, and Debian's
    /// 6.1.0-50 which has it backported; observed under OVMF + swtpm).
    pub kernel_measures_load_options: bool,
    /// Boot options the firmware tried and returned from before the UKI: each adds
    /// "Returning from EFI Application from Boot Option" and "Calling …" to PCR 4.
    pub failed_boot_attempts: u32,
    /// … and through the CC protocol too (Linux ≥ 6.8).
    pub kernel_measures_cc: bool,
}

impl BootModel {
    /// The Debian 12 image's boot: stub from `.sdmagic`; the kernel (6.1.0-50) measures its
    /// load options and the initrd into PCR 9 through TCG2 only; the UKI is the first boot
    /// option tried.
    pub fn debian12() -> Self {
        Self {
            kernel_measures_initrd: true,
            kernel_measures_load_options: true,
            ..Self::default()
        }
    }

    /// Add the GPT event of the boot disk.
    pub fn with_gpt(mut self, data: Vec<u8>) -> Self {
        self.gpt_event_data = Some(data);
        self
    }

    /// Boot options tried (and returned from) before the UKI.
    pub fn with_failed_boot_attempts(mut self, n: u32) -> Self {
        self.failed_boot_attempts = n;
        self
    }

    /// Override the stub version.
    pub fn with_stub_version(mut self, v: u32) -> Self {
        self.stub_version = Some(v);
        self
    }
}

fn parse_stub_version(text: &str) -> Option<u32> {
    let rest = text.split("systemd-stub ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
