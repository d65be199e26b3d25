//! Typed errors. Every malformed input (truncated PE, garbage firmware, bad metadata) ends
//! here; nothing in this crate panics on input bytes.

/// Why a measurement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// A PE/COFF image is malformed or truncated.
    #[error("PE image: {0}")]
    Pe(String),
    /// The firmware image (OVMF) is malformed: footer table, SEV metadata.
    #[error("firmware image: {0}")]
    Ovmf(String),
    /// The firmware lacks what the requested measurement needs.
    #[error("firmware image: {0}")]
    OvmfUnsupported(String),
    /// A UKI lacks a section the computation needs, or has one it cannot model.
    #[error("UKI: {0}")]
    Uki(String),
    /// A GPT disk image is malformed.
    #[error("GPT: {0}")]
    Gpt(String),
    /// A caller-supplied parameter is out of range (vCPU count, type, …).
    #[error("invalid input: {0}")]
    Input(String),
}

pub(crate) fn pe(msg: impl Into<String>) -> MeasureError {
    MeasureError::Pe(msg.into())
}

pub(crate) fn ovmf(msg: impl Into<String>) -> MeasureError {
    MeasureError::Ovmf(msg.into())
}
