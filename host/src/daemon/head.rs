//! What the daemon persists per object besides memory chunks: the runtime's execution
//! checkpoint, the lineage writer's position and the inbox bookkeeping, as one record
//! (canonical CBOR) written with every committed transition.

use ciborium::Value as Cbor;
use sojourn_policy::canonical;

/// The head record of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// `ResidentObject::checkpoint` execution state.
    pub exec: Vec<u8>,
    /// `LineageWriter::state`, encoded.
    pub writer: Vec<u8>,
    /// The arrival number the next message gets.
    pub next_arrival: u64,
    /// Messages with arrival numbers up to this are inside `exec` (queued or consumed).
    pub included_arrival: u64,
    /// Lineage entries written.
    pub lineage_entries: u64,
    /// Set when the object has moved to another host (a tombstone: it never runs here again).
    pub transferred: Option<String>,
    /// The source side's migration state while an attempt is in progress (`Offering` or
    /// `Sent`, encoded by `migrate::MoveState`): the object does not run while it is set.
    pub moving: Option<Vec<u8>>,
    /// Every migration attempt under which this object arrived here (the destination's
    /// durable `Received` records: 80 bytes each, see `migrate::Arrival`).
    pub arrivals: Vec<u8>,
}

const VERSION: u64 = 1;

fn t(s: &str) -> Cbor {
    Cbor::Text(s.into())
}

impl ObjectHead {
    /// Canonical CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = vec![
            (t("v"), Cbor::Integer(VERSION.into())),
            (t("exec"), Cbor::Bytes(self.exec.clone())),
            (t("writer"), Cbor::Bytes(self.writer.clone())),
            (t("next_arrival"), Cbor::Integer(self.next_arrival.into())),
            (
                t("included_arrival"),
                Cbor::Integer(self.included_arrival.into()),
            ),
            (
                t("lineage_entries"),
                Cbor::Integer(self.lineage_entries.into()),
            ),
        ];
        if let Some(to) = &self.transferred {
            entries.push((t("transferred"), t(to)));
        }
        if let Some(m) = &self.moving {
            entries.push((t("moving"), Cbor::Bytes(m.clone())));
        }
        if !self.arrivals.is_empty() {
            entries.push((t("arrivals"), Cbor::Bytes(self.arrivals.clone())));
        }
        canonical::encode(&Cbor::Map(entries)).unwrap_or_default()
    }

    /// Reads [`ObjectHead::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<ObjectHead, String> {
        let v = canonical::decode(bytes).map_err(|e| format!("object head: {e}"))?;
        let Cbor::Map(m) = v else {
            return Err("object head: not a map".into());
        };
        let get = |k: &str| {
            m.iter()
                .find(|(key, _)| matches!(key, Cbor::Text(s) if s == k))
                .map(|(_, v)| v)
                .ok_or_else(|| format!("object head: `{k}` missing"))
        };
        let uint = |k: &str| match get(k)? {
            Cbor::Integer(i) => u64::try_from(*i).map_err(|_| format!("object head: `{k}`")),
            _ => Err(format!("object head: `{k}` is not an integer")),
        };
        let bytes = |k: &str| match get(k)? {
            Cbor::Bytes(b) => Ok(b.clone()),
            _ => Err(format!("object head: `{k}` is not bytes")),
        };
        let v = uint("v")?;
        if v != VERSION {
            return Err(format!(
                "object head version {v}: this build reads version {VERSION}"
            ));
        }
        Ok(ObjectHead {
            exec: bytes("exec")?,
            writer: bytes("writer")?,
            next_arrival: uint("next_arrival")?,
            included_arrival: uint("included_arrival")?,
            lineage_entries: uint("lineage_entries")?,
            transferred: match get("transferred") {
                Ok(Cbor::Text(to)) => Some(to.clone()),
                Ok(_) => return Err("object head: `transferred` is not text".into()),
                Err(_) => None,
            },
            moving: match get("moving") {
                Ok(Cbor::Bytes(m)) => Some(m.clone()),
                Ok(_) => return Err("object head: `moving` is not bytes".into()),
                Err(_) => None,
            },
            arrivals: match get("arrivals") {
                Ok(Cbor::Bytes(a)) => a.clone(),
                Ok(_) => return Err("object head: `arrivals` is not bytes".into()),
                Err(_) => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = ObjectHead {
            exec: vec![1, 2, 3],
            writer: vec![4; 60],
            next_arrival: 9,
            included_arrival: 8,
            lineage_entries: 77,
            transferred: None,
            moving: None,
            arrivals: Vec::new(),
        };
        let b = h.encode();
        assert_eq!(ObjectHead::decode(&b).unwrap(), h);
        assert!(ObjectHead::decode(&b[..b.len() - 1]).is_err());
        assert!(ObjectHead::decode(b"").is_err());
        let gone = ObjectHead {
            transferred: Some("https://b.example".into()),
            ..h
        };
        assert_eq!(ObjectHead::decode(&gone.encode()).unwrap(), gone);
        let moving = ObjectHead {
            moving: Some(vec![7; 40]),
            arrivals: vec![3; 160],
            ..gone
        };
        assert_eq!(ObjectHead::decode(&moving.encode()).unwrap(), moving);
    }
}
