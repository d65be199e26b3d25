//! AMD SEV-SNP: attestation reports verified against the pinned AMD root keys.
//!
//! * The report (exactly 1184 bytes) is parsed with virtee `sev`.
//! * The VEK (VCEK or VLEK, as the report's KEY_INFO says) comes from the evidence or a
//!   local certificate cache; the chain ARK → ASK (or ASVK for VLEK) → VEK is checked
//!   against the ARKs built into `sev` (Milan, Genoa, Turin) — never against an ARK taken
//!   from the evidence. Validity dates are checked against the caller's `now`.
//! * The ECDSA P-384 signature is checked over the exact received bytes 0..0x2A0; the
//!   unsigned tail (signature padding and reserved bytes) must be zero.
//! * TCB: REPORTED_TCB ≤ COMMITTED_TCB ≤ CURRENT_TCB per component, the VEK's TCB
//!   extensions equal REPORTED_TCB, the VCEK's hwID equals CHIP_ID (when not masked), and
//!   a v3+ report's CPUID family matches the chain's family.

/// The size of an SEV-SNP attestation report (versions 2, 3 and 5).
pub const REPORT_LEN: usize = 1184;

#[cfg(feature = "snp")]
mod imp;
#[cfg(feature = "snp")]
pub(crate) use imp::appraise_snp;
#[cfg(feature = "snp")]
pub use imp::SnpVerifier;

#[cfg(not(feature = "snp"))]
mod disabled;
#[cfg(not(feature = "snp"))]
pub use disabled::SnpVerifier;
