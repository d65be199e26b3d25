//! Small X.509 helpers over `x509-cert`: PEM bundles, subject/issuer names, validity and
//! extension values.

use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::Certificate;

use crate::error::{ParseError, VerifyError};
use crate::time::Timestamp;

/// Split a PEM bundle (one or more `CERTIFICATE` blocks) into DER certificates, in order.
pub fn certs_from_pem_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let text = std::str::from_utf8(pem).map_err(|e| ParseError::Certificate(e.to_string()))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = rest.get(start..).unwrap_or_default();
        let end = after
            .find(END)
            .ok_or_else(|| ParseError::Certificate("unterminated PEM block".into()))?;
        let block = after.get(..end + END.len()).unwrap_or_default();
        let cert = Certificate::from_pem(block.as_bytes())
            .map_err(|e| ParseError::Certificate(e.to_string()))?;
        out.push(
            cert.to_der()
                .map_err(|e| ParseError::Certificate(e.to_string()))?,
        );
        rest = after.get(end + END.len()..).unwrap_or_default();
    }
    if out.is_empty() {
        return Err(ParseError::Certificate("no PEM certificate found".into()));
    }
    Ok(out)
}

/// A DER or PEM certificate.
pub(crate) fn parse_cert(bytes: &[u8]) -> Result<Certificate, ParseError> {
    if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes).map_err(|e| ParseError::Certificate(e.to_string()))
    } else {
        Certificate::from_der(bytes).map_err(|e| ParseError::Certificate(e.to_string()))
    }
}

/// The CN of a name, or "" when absent.
fn common_name(name: &x509_cert::name::Name) -> String {
    const CN: x509_cert::der::asn1::ObjectIdentifier =
        x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == CN {
                // DirectoryString: try the common string types.
                if let Ok(s) = atv
                    .value
                    .decode_as::<x509_cert::der::asn1::PrintableStringRef>()
                {
                    return s.to_string();
                }
                if let Ok(s) = atv.value.decode_as::<x509_cert::der::asn1::Utf8StringRef>() {
                    return s.to_string();
                }
                if let Ok(s) = atv.value.decode_as::<x509_cert::der::asn1::Ia5StringRef>() {
                    return s.to_string();
                }
            }
        }
    }
    String::new()
}

pub(crate) fn subject_cn(c: &Certificate) -> String {
    common_name(&c.tbs_certificate.subject)
}

pub(crate) fn issuer_cn(c: &Certificate) -> String {
    common_name(&c.tbs_certificate.issuer)
}

/// Check that `now` is within the certificate's validity period.
pub(crate) fn check_validity(c: &Certificate, now: Timestamp) -> Result<(), VerifyError> {
    let v = &c.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    if now.unix_secs() < nb || now.unix_secs() > na {
        return Err(VerifyError::CertificateNotValidAt {
            subject: subject_cn(c),
            not_before: nb,
            not_after: na,
            now,
        });
    }
    Ok(())
}

/// The raw `extnValue` contents of the extension with this OID.
pub(crate) fn extension<'a>(c: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    let oid = x509_cert::der::asn1::ObjectIdentifier::new(oid).ok()?;
    c.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// A DER INTEGER that fits a u64 (AMD SPL extensions).
pub(crate) fn der_uint(bytes: &[u8]) -> Option<u64> {
    let v = x509_cert::der::asn1::UintRef::from_der(bytes).ok()?;
    let b = v.as_bytes();
    if b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// Content of a DER OCTET STRING, or the bytes themselves when they are not one (AMD's
/// hwID extension has been published both ways).
pub(crate) fn octets_or_raw(bytes: &[u8]) -> Vec<u8> {
    match x509_cert::der::asn1::OctetStringRef::from_der(bytes) {
        Ok(o) => o.as_bytes().to_vec(),
        Err(_) => bytes.to_vec(),
    }
}
