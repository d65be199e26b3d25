//! `sojourn-measure`: what a verifier should expect from a host running a Sojourn VM image.
//!
//! - [`snp`]: the SEV-SNP launch digest of a direct-boot guest (same computation as the
//!   PyPI tool `sev-snp-measure`, cross-checked in the tests);
//! - [`pe`], [`uki`]: Authenticode digests and systemd-stub's PCR 11 measurements of a
//!   unified kernel image, and the modelled boot's event sequence;
//! - [`tcg`]: extending PCRs (SHA-256) and TDX RTMRs (SHA-384, UEFI CC mapping);
//! - [`reference`]: the reference-values file `sojourn attest verify` reads.
//!
//! Parsers take untrusted bytes and return [`MeasureError`]; nothing panics on input.
#![deny(clippy::indexing_slicing)]

mod bytes;
pub mod cli;
pub mod error;
pub mod ovmf;
pub mod pe;
pub mod reference;
pub mod snp;
pub mod tcg;
pub mod uki;

pub use error::MeasureError;
