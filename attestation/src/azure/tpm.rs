//! vTPM quotes in the az-cvm-vtpm layout (bincode of `Quote`):
//!
//! * u64-LE length + signature (raw RSASSA-PKCS1-v1_5 SHA-256 signature by the AK);
//! * u64-LE length + message (marshalled `TPMS_ATTEST`, big-endian);
//! * u64-LE count + count × 32-byte SHA-256 PCR values (the selected PCRs, ascending).
//!
//! `TPMS_ATTEST`: magic `0xff544347`, type `0x8018` (quote), qualifiedSigner (TPM2B),
//! extraData (TPM2B, the nonce), clockInfo (17 bytes), firmwareVersion (u64), then
//! `TPMS_QUOTE_INFO`: pcrSelect (`TPML_PCR_SELECTION`) and pcrDigest (TPM2B).

use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use sha2::Digest;

use super::hcl::RsaPublicKey;
use crate::bytes::Reader;
use crate::error::{ParseError, VerifyError};

const TPM_GENERATED: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_SHA256: u16 = 0x000B;
const MAX_PCRS: u64 = 24;
const MAX_BLOB: u64 = 16 * 1024;

/// A vTPM quote: signature, `TPMS_ATTEST` message and the quoted PCR values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TpmQuote {
    /// The raw RSA signature.
    pub signature: Vec<u8>,
    /// The marshalled `TPMS_ATTEST`, exactly as signed.
    pub message: Vec<u8>,
    /// The SHA-256 PCR values, in selection order.
    pub pcrs: Vec<[u8; 32]>,
}

/// The fields of a `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attest {
    /// `extraData`: the caller's nonce.
    pub extra_data: Vec<u8>,
    /// The selected SHA-256 PCR indices, ascending.
    pub pcr_indices: Vec<u8>,
    /// `pcrDigest`.
    pub pcr_digest: Vec<u8>,
    /// `firmwareVersion`.
    pub firmware_version: u64,
}

/// Encode in the az-cvm-vtpm layout (used to normalise trustee's JSON evidence).
pub(crate) fn encode_quote(signature: &[u8], message: &[u8], pcrs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + signature.len() + message.len() + 32 * pcrs.len());
    out.extend((signature.len() as u64).to_le_bytes());
    out.extend(signature);
    out.extend((message.len() as u64).to_le_bytes());
    out.extend(message);
    out.extend((pcrs.len() as u64).to_le_bytes());
    for p in pcrs {
        out.extend(p);
    }
    out
}

fn blob<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], ParseError> {
    let n = r.u64_le()?;
    if n > MAX_BLOB {
        return Err(ParseError::InvalidField {
            what: "TPM quote",
            field,
            reason: format!("{n} bytes is implausibly large"),
        });
    }
    r.take(n as usize)
}

/// Parse the az-cvm-vtpm quote layout. Trailing bytes are an error.
pub fn parse_quote(bytes: &[u8]) -> Result<TpmQuote, ParseError> {
    let mut r = Reader::new(bytes, "TPM quote");
    let signature = blob(&mut r, "signature")?.to_vec();
    let message = blob(&mut r, "message")?.to_vec();
    let count = r.u64_le()?;
    if count > MAX_PCRS {
        return Err(ParseError::InvalidField {
            what: "TPM quote",
            field: "pcrs",
            reason: format!("{count} PCR values (at most {MAX_PCRS})"),
        });
    }
    let mut pcrs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        pcrs.push(r.array::<32>()?);
    }
    r.finish()?;
    Ok(TpmQuote {
        signature,
        message,
        pcrs,
    })
}

fn tpm2b<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], ParseError> {
    let n = r.u16_be()?;
    r.take(usize::from(n))
}

/// Parse a marshalled `TPMS_ATTEST` of type quote with one SHA-256 PCR bank.
pub fn parse_attest(msg: &[u8]) -> Result<Attest, ParseError> {
    const W: &str = "TPMS_ATTEST";
    let mut r = Reader::new(msg, W);
    if r.u32_be()? != TPM_GENERATED {
        return Err(ParseError::BadMagic { what: W });
    }
    let ty = r.u16_be()?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(ParseError::InvalidField {
            what: W,
            field: "type",
            reason: format!("{ty:#06x} is not a quote"),
        });
    }
    let _qualified_signer = tpm2b(&mut r)?;
    let extra_data = tpm2b(&mut r)?.to_vec();
    let _clock_info = r.take(17)?;
    let firmware_version = r.u64_be()?;
    let banks = r.u32_be()?;
    if banks != 1 {
        return Err(ParseError::InvalidField {
            what: W,
            field: "pcrSelect.count",
            reason: format!("{banks} banks (exactly one SHA-256 bank supported)"),
        });
    }
    let alg = r.u16_be()?;
    if alg != TPM_ALG_SHA256 {
        return Err(ParseError::InvalidField {
            what: W,
            field: "pcrSelect.hash",
            reason: format!("{alg:#06x} is not SHA-256"),
        });
    }
    let size = r.u8()?;
    if size > 4 {
        return Err(ParseError::InvalidField {
            what: W,
            field: "pcrSelect.sizeofSelect",
            reason: format!("{size} > 4"),
        });
    }
    let bitmap = r.take(usize::from(size))?;
    let mut pcr_indices = Vec::new();
    for (byte_idx, b) in bitmap.iter().enumerate() {
        for bit in 0..8u8 {
            if b & (1 << bit) != 0 {
                // byte_idx < 4, so the index is < 32.
                pcr_indices.push((byte_idx as u8) * 8 + bit);
            }
        }
    }
    let pcr_digest = tpm2b(&mut r)?.to_vec();
    r.finish()?;
    Ok(Attest {
        extra_data,
        pcr_indices,
        pcr_digest,
        firmware_version,
    })
}

/// A quote whose signature, nonce and PCR digest checked out (only this crate builds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub(crate) pcrs: Vec<(u8, [u8; 32])>,
}

impl VerifiedQuote {
    /// The quoted PCRs: (index, SHA-256 value), ascending.
    pub fn pcrs(&self) -> &[(u8, [u8; 32])] {
        &self.pcrs
    }
}

/// Verify a quote: RSA signature by `ak` over the exact message, `extraData == nonce`,
/// SHA-256 over the PCR values == `pcrDigest`. On its own this proves nothing about the
/// machine: the key must come from a verified HCL report (the Azure verifiers do that).
pub fn verify_quote(
    quote: &[u8],
    ak: &RsaPublicKey,
    nonce: &[u8],
) -> Result<VerifiedQuote, VerifyError> {
    let q = parse_quote(quote)?;
    let attest = parse_attest(&q.message)?;
    RsaPublicKeyComponents {
        n: ak.n.as_slice(),
        e: ak.e.as_slice(),
    }
    .verify(&RSA_PKCS1_2048_8192_SHA256, &q.message, &q.signature)
    .map_err(|_| VerifyError::Signature("TPM quote"))?;
    if attest.extra_data != nonce {
        return Err(VerifyError::ReportDataMismatch);
    }
    if attest.pcr_indices.len() != q.pcrs.len() {
        return Err(VerifyError::Binding(
            "number of PCR values differs from the quote's selection",
        ));
    }
    let mut h = sha2::Sha256::new();
    for p in &q.pcrs {
        h.update(p);
    }
    if h.finalize().as_slice() != attest.pcr_digest.as_slice() {
        return Err(VerifyError::Binding(
            "PCR values do not hash to the quote's pcrDigest",
        ));
    }
    Ok(VerifiedQuote {
        pcrs: attest.pcr_indices.into_iter().zip(q.pcrs).collect(),
    })
}
