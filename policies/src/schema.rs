//! Typed canonical fields: the schema an object carries, and the values it constrains.

use std::collections::BTreeMap;

use ciborium::Value as Cbor;

/// Largest nesting of list/map element types.
pub const MAX_TYPE_DEPTH: usize = 4;
/// Most fields a schema may declare.
pub const MAX_FIELDS: usize = 256;
/// Longest field name.
pub const MAX_NAME_LEN: usize = 64;

/// The value of one canonical field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A signed 64-bit integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// One variant of an enum, by name.
    Enum(String),
    /// A bounded list.
    List(Vec<Value>),
    /// A bounded map with text keys.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The CBOR form (enums as text).
    pub fn to_cbor(&self) -> Cbor {
        match self {
            Value::Int(i) => Cbor::Integer((*i).into()),
            Value::Bool(b) => Cbor::Bool(*b),
            Value::Str(s) | Value::Enum(s) => Cbor::Text(s.clone()),
            Value::Bytes(b) => Cbor::Bytes(b.clone()),
            Value::List(items) => Cbor::Array(items.iter().map(Value::to_cbor).collect()),
            Value::Map(m) => Cbor::Map(
                m.iter()
                    .map(|(k, v)| (Cbor::Text(k.clone()), v.to_cbor()))
                    .collect(),
            ),
        }
    }

    /// Reads a CBOR value as a value of type `ty` (shape only; bounds are checked by
    /// [`FieldType::check`]).
    pub fn from_cbor(cbor: &Cbor, ty: &FieldType) -> Result<Value, String> {
        Ok(match (ty, cbor) {
            (FieldType::Int { .. }, Cbor::Integer(i)) => Value::Int(
                i64::try_from(*i).map_err(|_| "integer does not fit in i64".to_string())?,
            ),
            (FieldType::Bool, Cbor::Bool(b)) => Value::Bool(*b),
            (FieldType::String { .. }, Cbor::Text(s)) => Value::Str(s.clone()),
            (FieldType::Bytes { .. }, Cbor::Bytes(b)) => Value::Bytes(b.clone()),
            (FieldType::Enum { .. }, Cbor::Text(s)) => Value::Enum(s.clone()),
            (FieldType::List { items, .. }, Cbor::Array(a)) => Value::List(
                a.iter()
                    .map(|c| Value::from_cbor(c, items))
                    .collect::<Result<_, _>>()?,
            ),
            (FieldType::Map { values, .. }, Cbor::Map(entries)) => {
                let mut m = BTreeMap::new();
                for (k, v) in entries {
                    let Cbor::Text(k) = k else {
                        return Err("map keys must be text".into());
                    };
                    if m.insert(k.clone(), Value::from_cbor(v, values)?).is_some() {
                        return Err(format!("duplicate map key {k:?}"));
                    }
                }
                Value::Map(m)
            }
            (ty, _) => return Err(format!("expected {}", ty.name())),
        })
    }

    /// A short human rendering, for transition output.
    pub fn render(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Enum(s) => s.clone(),
            Value::Bytes(b) => format!("0x{}", hex::encode(b)),
            Value::List(items) => {
                let inner: Vec<String> = items.iter().map(Value::render).collect();
                format!("[{}]", inner.join(", "))
            }
            Value::Map(m) => {
                let inner: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {}", v.render()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }
}

/// The type of a canonical field, with its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// Integer with an optional inclusive range.
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// Boolean.
    Bool,
    /// UTF-8 text of at most `max_len` bytes.
    String {
        /// Longest allowed length in bytes.
        max_len: u32,
    },
    /// Bytes, at most `max_len`.
    Bytes {
        /// Longest allowed length.
        max_len: u32,
    },
    /// One of the named variants.
    Enum {
        /// The variants, in declaration order.
        variants: Vec<String>,
    },
    /// A list of at most `max_items` elements of type `items`.
    List {
        /// Element type.
        items: Box<FieldType>,
        /// Most elements.
        max_items: u32,
    },
    /// A map from text keys (at most `max_key_len` bytes) to `values`.
    Map {
        /// Value type.
        values: Box<FieldType>,
        /// Most entries.
        max_entries: u32,
        /// Longest key.
        max_key_len: u32,
    },
}

impl FieldType {
    /// The type's name as written in `object.toml`.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Int { .. } => "int",
            FieldType::Bool => "bool",
            FieldType::String { .. } => "string",
            FieldType::Bytes { .. } => "bytes",
            FieldType::Enum { .. } => "enum",
            FieldType::List { .. } => "list",
            FieldType::Map { .. } => "map",
        }
    }

    /// Checks that `value` has this type and lies within its bounds.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (FieldType::Int { min, max }, Value::Int(i)) => {
                if let Some(min) = min {
                    if i < min {
                        return Err(format!("{i} is below the minimum {min}"));
                    }
                }
                if let Some(max) = max {
                    if i > max {
                        return Err(format!("{i} is above the maximum {max}"));
                    }
                }
                Ok(())
            }
            (FieldType::Bool, Value::Bool(_)) => Ok(()),
            (FieldType::String { max_len }, Value::Str(s)) => check_len(s.len(), *max_len),
            (FieldType::Bytes { max_len }, Value::Bytes(b)) => check_len(b.len(), *max_len),
            (FieldType::Enum { variants }, Value::Enum(v)) => {
                if variants.iter().any(|x| x == v) {
                    Ok(())
                } else {
                    Err(format!(
                        "{v:?} is not one of the variants [{}]",
                        variants.join(", ")
                    ))
                }
            }
            (FieldType::List { items, max_items }, Value::List(list)) => {
                if list.len() > *max_items as usize {
                    return Err(format!(
                        "{} items, more than the maximum {max_items}",
                        list.len()
                    ));
                }
                for (i, item) in list.iter().enumerate() {
                    items.check(item).map_err(|e| format!("item {i}: {e}"))?;
                }
                Ok(())
            }
            (
                FieldType::Map {
                    values,
                    max_entries,
                    max_key_len,
                },
                Value::Map(map),
            ) => {
                if map.len() > *max_entries as usize {
                    return Err(format!(
                        "{} entries, more than the maximum {max_entries}",
                        map.len()
                    ));
                }
                for (k, v) in map {
                    if k.len() > *max_key_len as usize {
                        return Err(format!(
                            "key {k:?} is longer than the maximum {max_key_len}"
                        ));
                    }
                    values.check(v).map_err(|e| format!("key {k:?}: {e}"))?;
                }
                Ok(())
            }
            (ty, v) => Err(format!("expected {}, got {}", ty.name(), kind_of(v))),
        }
    }

    /// Whether `new` is an allowed successor of `old` for a monotonic field.
    pub fn monotonic_ok(&self, old: &Value, new: &Value) -> bool {
        match (old, new) {
            (Value::Int(a), Value::Int(b)) => b >= a,
            (Value::List(a), Value::List(b)) => b.len() >= a.len() && b.starts_with(a),
            (Value::Map(a), Value::Map(b)) => a.iter().all(|(k, v)| b.get(k) == Some(v)),
            _ => false,
        }
    }

    /// Whether this type can carry the `monotonic` flag.
    pub fn supports_monotonic(&self) -> bool {
        matches!(
            self,
            FieldType::Int { .. } | FieldType::List { .. } | FieldType::Map { .. }
        )
    }
}

fn check_len(len: usize, max: u32) -> Result<(), String> {
    if len > max as usize {
        Err(format!("length {len} is above the maximum {max}"))
    } else {
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "int",
        Value::Bool(_) => "bool",
        Value::Str(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Enum(_) => "enum",
        Value::List(_) => "list",
        Value::Map(_) => "map",
    }
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// Type and bounds.
    pub ty: FieldType,
    /// Value at creation.
    pub default: Value,
    /// Keeps its initial value for ever.
    pub immutable: bool,
    /// Only grows (ints never decrease, lists append-only, maps never lose or change keys).
    pub monotonic: bool,
    /// A change must be backed by attestation evidence bound to the entry (enforced by the
    /// lineage layer; carried here).
    pub attestation_required: bool,
}

/// The canonical fields of an object, by name.
pub type Fields = BTreeMap<String, Value>;

/// The schema: every field an object has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Fields by name.
    pub fields: BTreeMap<String, FieldSpec>,
}

impl Schema {
    /// The state at creation: every field at its default.
    pub fn initial_state(&self) -> Fields {
        self.fields
            .iter()
            .map(|(k, f)| (k.clone(), f.default.clone()))
            .collect()
    }
}

/// The canonical CBOR of a set of fields (a map from name to value).
pub fn fields_to_cbor(fields: &Fields) -> Cbor {
    Cbor::Map(
        fields
            .iter()
            .map(|(k, v)| (Cbor::Text(k.clone()), v.to_cbor()))
            .collect(),
    )
}

/// SHA-256 of the canonical encoding of `fields`: the state digest of transition records.
/// This is on every entry's path, so it encodes directly (no intermediate CBOR tree); a test
/// checks it against the generic canonical encoder.
pub fn state_digest(fields: &Fields) -> [u8; 32] {
    let mut buf = Vec::with_capacity(64 + fields.len() * 16);
    encode_fields_canonical(fields, &mut buf);
    crate::canonical::sha256(&buf)
}

fn header(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Text keys in deterministic order: the encoded form sorts shorter strings first, then
/// bytewise (RFC 8949 §4.2.1).
fn sorted_keys<V>(m: &BTreeMap<String, V>) -> Vec<(&String, &V)> {
    let mut keys: Vec<_> = m.iter().collect();
    keys.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
    keys
}

fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) if *i >= 0 => header(0, *i as u64, out),
        Value::Int(i) => header(1, !(*i as u64), out),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Str(s) | Value::Enum(s) => {
            header(3, s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            header(2, b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            header(4, items.len() as u64, out);
            for i in items {
                encode_value(i, out);
            }
        }
        Value::Map(m) => {
            header(5, m.len() as u64, out);
            for (k, v) in sorted_keys(m) {
                header(3, k.len() as u64, out);
                out.extend_from_slice(k.as_bytes());
                encode_value(v, out);
            }
        }
    }
}

/// Appends the deterministic CBOR of `fields` (a map from name to value) to `out`.
pub fn encode_fields_canonical(fields: &Fields, out: &mut Vec<u8>) {
    header(5, fields.len() as u64, out);
    for (k, v) in sorted_keys(fields) {
        header(3, k.len() as u64, out);
        out.extend_from_slice(k.as_bytes());
        encode_value(v, out);
    }
}

/// Field names in deterministic-CBOR key order, computed once per object so that the per-entry
/// digest ([`state_digest_ordered`]) sorts nothing.
pub fn canonical_key_order<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = names.cloned().collect();
    v.sort_by(|a, b| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
    v
}

/// [`state_digest`] with a precomputed key order (from [`canonical_key_order`] over exactly
/// the keys of `fields`) and a reusable buffer: no allocation on the hot path. Falls back to
/// [`state_digest`] if `order` does not cover `fields`.
pub fn state_digest_ordered(order: &[String], fields: &Fields, buf: &mut Vec<u8>) -> [u8; 32] {
    if order.len() != fields.len() {
        return state_digest(fields);
    }
    buf.clear();
    header(5, fields.len() as u64, buf);
    for k in order {
        let Some(v) = fields.get(k) else {
            return state_digest(fields);
        };
        header(3, k.len() as u64, buf);
        buf.extend_from_slice(k.as_bytes());
        encode_value(v, buf);
    }
    crate::canonical::sha256(buf)
}

/// Decodes fields from CBOR against a schema (each field present, typed and within bounds).
pub fn fields_from_cbor(cbor: &Cbor, schema: &Schema) -> Result<Fields, String> {
    let Cbor::Map(entries) = cbor else {
        return Err("fields must be a CBOR map".into());
    };
    let mut out = Fields::new();
    for (k, v) in entries {
        let Cbor::Text(name) = k else {
            return Err("field names must be text".into());
        };
        let spec = schema
            .fields
            .get(name)
            .ok_or_else(|| format!("unknown field {name:?}"))?;
        let value = Value::from_cbor(v, &spec.ty).map_err(|e| format!("field {name}: {e}"))?;
        spec.ty
            .check(&value)
            .map_err(|e| format!("field {name}: {e}"))?;
        out.insert(name.clone(), value);
    }
    if out.len() != schema.fields.len() {
        return Err("fields are missing".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            "[a-z]{0,30}".prop_map(Value::Str),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                prop::collection::btree_map("[a-z]{0,30}", inner, 0..6).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn direct_encoding_matches_the_canonical_encoder(
            fields in prop::collection::btree_map("[a-z_]{1,40}", value(), 0..8)
        ) {
            let mut direct = Vec::new();
            encode_fields_canonical(&fields, &mut direct);
            let generic = crate::canonical::encode(&fields_to_cbor(&fields)).unwrap();
            prop_assert_eq!(&direct, &generic);
            let order = canonical_key_order(fields.keys());
            let mut buf = Vec::new();
            prop_assert_eq!(
                state_digest_ordered(&order, &fields, &mut buf),
                crate::canonical::sha256(&generic)
            );
        }
    }
}
