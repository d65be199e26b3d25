//! `sojourn-lineage`: an object's history as it carries it.
//!
//! Every transition record becomes a [`LineageEntry`]: chained to the previous entry by
//! digest, bound to the attestation evidence of the host that wrote it, carrying the appraisal
//! of that evidence (and so a trust score), and signed in Merkle batches (COSE_Sign1, ES256)
//! with an inclusion proof per entry. [`LineageWriter`] appends; [`verify_lineage`] checks an
//! export offline and reports the first failure precisely. The trust slope (docs/trust-slope.md)
//! is computed the same way on both sides.
//!
//! No I/O: time, keys, attesters and bytes are passed in.
#![forbid(unsafe_code)]

pub mod entry;
pub mod export;
pub mod fast;
pub mod merkle;
pub mod signer;
pub mod verify;
pub mod writer;

pub use entry::LineageEntry;
pub use fast::{verify_chain_and_signatures, verify_chain_and_signatures_parallel, ChainSummary};
pub use signer::{LineageSigner, P256Signer};
pub use verify::{verify_lineage, LineageSummary, VerifyFailure, VerifyOptions};
pub use writer::{LineageWriter, WriterConfig, WriterState};

/// Errors while writing a lineage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineageError {
    /// A record arrived out of order (or for another object).
    #[error("record out of order: expected seq {expected}, got {found}")]
    OutOfOrder {
        /// The next sequence number.
        expected: u64,
        /// What arrived.
        found: u64,
    },
    /// The attester failed.
    #[error("attestation: {0}")]
    Attest(String),
    /// The host's own evidence does not pass its reference values (misconfiguration).
    #[error("the host's own evidence does not verify: {0}")]
    OwnEvidence(String),
    /// Encoding failed.
    #[error("encoding: {0}")]
    Format(String),
}
