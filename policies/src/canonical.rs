//! Deterministic CBOR (RFC 8949 §4.2.1) over `ciborium::Value`.
//!
//! ciborium already writes integers and lengths in their shortest form and never uses
//! indefinite lengths for a `Value`; what it does not do is order map keys. [`encode`] sorts
//! every map by the bytewise order of its keys' encodings, and [`decode`] accepts only input
//! that re-encodes to exactly the same bytes, so a digest over canonical bytes is stable.

use ciborium::Value;
use sha2::{Digest, Sha256};

/// A CBOR input that is not valid canonical CBOR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CanonicalError {
    /// The bytes are not well-formed CBOR (or nest too deeply).
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// Bytes follow the single top-level item.
    #[error("{0} trailing byte(s) after the CBOR item")]
    Trailing(usize),
    /// Well-formed, but not in deterministic encoding (key order, lengths, floats, tags).
    #[error("CBOR is not in deterministic (RFC 8949 §4.2.1) encoding")]
    NotCanonical,
    /// A value could not be encoded (a map key that cannot be serialised, for example).
    #[error("CBOR encoding failed: {0}")]
    Encode(String),
}

/// Sorts every map in `value` (recursively) into deterministic key order.
pub fn canonicalize(value: &mut Value) -> Result<(), CanonicalError> {
    match value {
        Value::Array(items) => {
            for item in items.iter_mut() {
                canonicalize(item)?;
            }
        }
        Value::Map(entries) => {
            let mut keyed = Vec::with_capacity(entries.len());
            for (mut k, mut v) in std::mem::take(entries) {
                canonicalize(&mut k)?;
                canonicalize(&mut v)?;
                keyed.push((raw_encode(&k)?, k, v));
            }
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            *entries = keyed.into_iter().map(|(_, k, v)| (k, v)).collect();
        }
        Value::Tag(_, inner) => canonicalize(inner)?,
        _ => {}
    }
    Ok(())
}

fn raw_encode(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| CanonicalError::Encode(e.to_string()))?;
    Ok(out)
}

/// Encodes `value` deterministically (maps sorted; shortest lengths).
pub fn encode(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut v = value.clone();
    canonicalize(&mut v)?;
    raw_encode(&v)
}

/// Decodes one canonical CBOR item that spans all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, CanonicalError> {
    let mut reader = bytes;
    let value: Value =
        ciborium::from_reader(&mut reader).map_err(|e| CanonicalError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(CanonicalError::Trailing(reader.len()));
    }
    if encode(&value)? != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_sorted_by_encoded_key() {
        // "b" (0x61 0x62) sorts before "aa" (0x62 0x61 0x61): shorter encodings first.
        let v = Value::Map(vec![
            (Value::Text("aa".into()), Value::Integer(1.into())),
            (Value::Text("b".into()), Value::Integer(2.into())),
        ]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes, vec![0xa2, 0x61, b'b', 0x02, 0x62, b'a', b'a', 0x01]);
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn non_canonical_and_trailing_input_is_refused() {
        // {"aa":1,"b":2} in the wrong order.
        let wrong = vec![0xa2, 0x62, b'a', b'a', 0x01, 0x61, b'b', 0x02];
        assert_eq!(decode(&wrong), Err(CanonicalError::NotCanonical));
        // 1 encoded in two bytes (0x18 0x01) is not the shortest form.
        assert_eq!(decode(&[0x18, 0x01]), Err(CanonicalError::NotCanonical));
        assert_eq!(decode(&[0x01, 0x02]), Err(CanonicalError::Trailing(1)));
        assert!(matches!(
            decode(&[0xa2, 0x61]),
            Err(CanonicalError::Malformed(_))
        ));
    }
}
