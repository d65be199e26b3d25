//! What an SNP guest's certificate table contributes to [`crate::Evidence::certs`], shared
//! by the two producers: configfs-tsm (`auxblob`, raw GHCB table bytes) and
//! `/dev/sev-guest` (`sev`'s parsed `CertTableEntry` list).
//!
//! Every entry that parses as an X.509 certificate is kept, unchanged; anything else (the
//! CRL entry, vendor blobs) is dropped. GUIDs are not trusted: the verifier classifies
//! certificates by their subject and checks them against pinned roots, so an ARK in the
//! table is carried but never used as a root.

use crate::error::ParseError;

/// More certificates than this in one table is malformed (VEK, ASK/ASVK, ARK and spares).
pub(crate) const MAX_CERTS: usize = 16;

/// Add one table entry's data to `certs` if it is a certificate; fail once more than
/// [`MAX_CERTS`] certificates were collected.
pub(crate) fn collect(
    certs: &mut Vec<Vec<u8>>,
    data: &[u8],
    what: &'static str,
) -> Result<(), ParseError> {
    if crate::x509::parse_cert(data).is_ok() {
        certs.push(data.to_vec());
    }
    if certs.len() > MAX_CERTS {
        return Err(ParseError::InvalidField {
            what,
            field: "entries",
            reason: format!("more than {MAX_CERTS} certificates"),
        });
    }
    Ok(())
}
