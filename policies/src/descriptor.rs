//! The object descriptor: parsed from `object.toml`, encoded canonically, enforced on every
//! transition.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ciborium::Value as Cbor;
use serde::Deserialize;

use crate::canonical::{self, CanonicalError};
use crate::expr::Expr;
use crate::migration::{self, RawMigration};
use crate::schema::{
    FieldSpec, FieldType, Fields, Schema, Value, MAX_FIELDS, MAX_NAME_LEN, MAX_TYPE_DEPTH,
};
use crate::trust::{FieldTrustRule, TrustPolicy, TrustView, MAX_WINDOW};

/// Version of the descriptor's canonical encoding.
pub const DESCRIPTOR_FORMAT: u64 = 1;

/// A descriptor that could not be read. Names the file, the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {expected}")]
pub struct DescriptorError {
    /// The file (or source) the descriptor came from.
    pub file: String,
    /// Dotted path of the offending field (or a position for syntax errors).
    pub field: String,
    /// What was expected there.
    pub expected: String,
}

/// An entry point of an object: the unit of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryPoint {
    /// `sojourn_init`, once at creation.
    Init,
    /// `sojourn_tick`, on the object's own schedule.
    Tick,
    /// `sojourn_on_message`, for a queued message.
    Message,
    /// Not a guest entry: a migration event the host records (the object left, arrived, or a
    /// move was refused). No field may be written; it cannot be named in `policy.writers`.
    Migration,
}

impl EntryPoint {
    /// The name used in `policy.writers`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryPoint::Init => "init",
            EntryPoint::Tick => "tick",
            EntryPoint::Message => "message",
            EntryPoint::Migration => "migration",
        }
    }
    fn parse(s: &str) -> Option<EntryPoint> {
        match s {
            "init" => Some(EntryPoint::Init),
            "tick" => Some(EntryPoint::Tick),
            "message" => Some(EntryPoint::Message),
            _ => None,
        }
    }
}

impl fmt::Display for EntryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The evaluation cycle the object is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// A tick decision below this is raised to it.
    pub min_interval_ms: u64,
    /// A longer sleep, or sleep-until-message, is lowered to this.
    pub max_interval_ms: Option<u64>,
    /// Most queued messages.
    pub inbox_capacity: u32,
    /// Largest message.
    pub max_message_bytes: u32,
}

/// What happens to linear memory when an entry is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// Only the canonical fields are protected; memory keeps what the entry did.
    Fields,
    /// Memory and mutable globals are restored to their pre-entry image too.
    Memory,
}

/// Resource limits per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wasm fuel per entry.
    pub fuel_per_entry: u64,
    /// Wall-clock backstop per entry.
    pub time_per_entry_ms: u64,
    /// Memory cap, in 64 KiB pages.
    pub memory_pages_max: u32,
    /// Budgets are fuel-only so that runs replay bit for bit.
    pub replayable: bool,
    /// Memory rollback on rejection.
    pub rollback: Rollback,
}

/// A named invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invariant {
    /// Its name (used in rejection reasons).
    pub name: String,
    /// Its source text.
    pub source: String,
    expr: Expr,
}

/// Attestation requirements (filled in by the attestation issue).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttestationRequirements {
    /// Whether the host must present evidence at all.
    pub required: bool,
    /// Whether software (insecure) evidence is acceptable. Default: no.
    pub allow_software: bool,
}

pub use crate::migration::MigrationRules;

/// The policy the object carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Fields each entry point may write.
    pub writers: BTreeMap<EntryPoint, BTreeSet<String>>,
    /// Invariants that must hold after every accepted entry.
    pub invariants: Vec<Invariant>,
    /// Attestation requirements.
    pub attestation: AttestationRequirements,
    /// Migration rules.
    pub migration: MigrationRules,
    /// Trust-slope rules.
    pub trust: TrustPolicy,
}

/// Why a transition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The entry wrote a field the schema does not declare.
    #[error("field `{field}` does not exist")]
    UnknownField {
        /// The name written.
        field: String,
    },
    /// The policy does not let this entry point write the field.
    #[error("{entry} may not write field `{field}`")]
    NotWritable {
        /// The field.
        field: String,
        /// The entry point.
        entry: EntryPoint,
    },
    /// The value does not fit the field's type or bounds.
    #[error("field `{field}`: {reason}")]
    Schema {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An immutable field would change.
    #[error("field `{field}` is immutable")]
    Immutable {
        /// The field.
        field: String,
    },
    /// A monotonic field would shrink.
    #[error("field `{field}` is monotonic and may not go from {from} to {to}")]
    NotMonotonic {
        /// The field.
        field: String,
        /// Its current value.
        from: String,
        /// The value written.
        to: String,
    },
    /// An invariant is false after the entry.
    #[error("invariant `{name}` ({source_text}) does not hold")]
    InvariantFailed {
        /// The invariant's name.
        name: String,
        /// Its source.
        source_text: String,
    },
    /// The lineage's trust does not allow this write.
    #[error("trust: {0}")]
    Trust(String),
    /// An invariant could not be evaluated (overflow, division by zero): it fails.
    #[error("invariant `{name}` could not be evaluated: {reason}")]
    InvariantError {
        /// The invariant's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// An object's descriptor: identity, cycle, limits, schema and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Object name.
    pub name: String,
    /// Author's version.
    pub version: u32,
    /// SHA-256 of the module.
    pub module_sha256: [u8; 32],
    /// Evaluation cycle.
    pub cycle: Cycle,
    /// Resource limits.
    pub limits: Limits,
    /// The schema.
    pub schema: Schema,
    /// The policy.
    pub policy: Policy,
}

/// A parsed `object.toml` whose module has not been read yet.
#[derive(Debug, Clone)]
pub struct DescriptorSource {
    /// The module path, relative to the descriptor's directory.
    pub module_path: String,
    file: String,
    raw: RawDescriptor,
}

impl DescriptorSource {
    /// Parses `object.toml` text; `file` is used in error messages.
    pub fn parse_toml(file: &str, text: &str) -> Result<DescriptorSource, DescriptorError> {
        let raw: RawDescriptor = toml::from_str(text).map_err(|e| {
            let field = match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or_default();
                    let line = before.matches('\n').count() + 1;
                    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
                    match key_path_at(text, line) {
                        Some(path) => format!("{path} (line {line}, column {col})"),
                        None => format!("line {line}, column {col}"),
                    }
                }
                None => "(document)".to_string(),
            };
            DescriptorError {
                file: file.to_string(),
                field,
                expected: e.message().trim().to_string(),
            }
        })?;
        Ok(DescriptorSource {
            module_path: raw.object.module.clone(),
            file: file.to_string(),
            raw,
        })
    }

    /// Completes the descriptor with the module's bytes (their digest is bound into it).
    pub fn with_module(&self, module: &[u8]) -> Result<Descriptor, DescriptorError> {
        build(&self.file, &self.raw, canonical::sha256(module))
    }
}

/// Best-effort dotted path of the key on 1-based `line` of a TOML document: the last table
/// header above it plus the key assigned on that line (`schema.fields.owner.default`). Used
/// only to name the field in syntax and type errors; `None` when the line has no key.
fn key_path_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if i + 1 == line {
            if t.starts_with('[') {
                return Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            }
            let key = t.split('=').next()?.trim();
            if key.is_empty() || key.starts_with('#') || !t.contains('=') {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
        if t.starts_with('[') {
            let end = t.find(']').unwrap_or(t.len());
            table = t
                .get(..end)
                .unwrap_or_default()
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
    }
    None
}

/// Parses `object.toml` text and binds the module bytes in one step.
pub fn parse_descriptor(
    file: &str,
    text: &str,
    module: &[u8],
) -> Result<Descriptor, DescriptorError> {
    DescriptorSource::parse_toml(file, text)?.with_module(module)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    object: RawObject,
    #[serde(default)]
    cycle: RawCycle,
    limits: RawLimits,
    schema: RawSchema,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    name: String,
    version: u32,
    module: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCycle {
    min_interval_ms: Option<u64>,
    max_interval_ms: Option<u64>,
    inbox_capacity: Option<u32>,
    max_message_bytes: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel_per_entry: u64,
    time_per_entry_ms: Option<u64>,
    memory_pages_max: u32,
    replayable: Option<bool>,
    rollback: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    fields: BTreeMap<String, RawField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    ty: String,
    min: Option<i64>,
    max: Option<i64>,
    max_len: Option<u32>,
    variants: Option<Vec<String>>,
    items: Option<Box<RawField>>,
    values: Option<Box<RawField>>,
    max_items: Option<u32>,
    max_entries: Option<u32>,
    max_key_len: Option<u32>,
    default: Option<toml::Value>,
    immutable: Option<bool>,
    monotonic: Option<bool>,
    attestation_required: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    writers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    invariants: Vec<RawInvariant>,
    #[serde(default)]
    attestation: RawAttestation,
    #[serde(default)]
    migration: RawMigration,
    #[serde(default)]
    trust: RawTrust,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    read_only_below: Option<u8>,
    no_fall_on_migration: Option<bool>,
    #[serde(default)]
    rules: Vec<RawTrustRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustRule {
    field: String,
    window: u32,
    min_score: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvariant {
    name: String,
    expr: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    required: Option<bool>,
    allow_software: Option<bool>,
}

pub(crate) struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn err(
        &self,
        field: impl Into<String>,
        expected: impl Into<String>,
    ) -> DescriptorError {
        DescriptorError {
            file: self.file.to_string(),
            field: field.into(),
            expected: expected.into(),
        }
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn build(
    file: &str,
    raw: &RawDescriptor,
    module_sha256: [u8; 32],
) -> Result<Descriptor, DescriptorError> {
    let cx = Ctx { file };
    if !valid_name(&raw.object.name, 64) {
        return Err(cx.err("object.name", "1 to 64 characters of [a-z0-9_-]"));
    }
    let c = &raw.cycle;
    let cycle = Cycle {
        min_interval_ms: c.min_interval_ms.unwrap_or(1),
        max_interval_ms: c.max_interval_ms,
        inbox_capacity: c.inbox_capacity.unwrap_or(64),
        max_message_bytes: c.max_message_bytes.unwrap_or(4096),
    };
    if let Some(max) = cycle.max_interval_ms {
        if max < cycle.min_interval_ms {
            return Err(cx.err("cycle.max_interval_ms", "at least cycle.min_interval_ms"));
        }
    }
    if cycle.inbox_capacity > 65536 {
        return Err(cx.err("cycle.inbox_capacity", "at most 65536"));
    }
    if cycle.max_message_bytes > 1 << 20 {
        return Err(cx.err("cycle.max_message_bytes", "at most 1048576 (1 MiB)"));
    }
    let l = &raw.limits;
    let rollback = match l.rollback.as_deref() {
        None | Some("fields") => Rollback::Fields,
        Some("memory") => Rollback::Memory,
        Some(other) => {
            return Err(cx.err(
                "limits.rollback",
                format!("\"fields\" or \"memory\", found {other:?}"),
            ))
        }
    };
    let limits = Limits {
        fuel_per_entry: l.fuel_per_entry,
        time_per_entry_ms: l.time_per_entry_ms.unwrap_or(1000),
        memory_pages_max: l.memory_pages_max,
        replayable: l.replayable.unwrap_or(true),
        rollback,
    };
    if limits.fuel_per_entry == 0 {
        return Err(cx.err("limits.fuel_per_entry", "a positive fuel budget"));
    }
    if limits.time_per_entry_ms == 0 || limits.time_per_entry_ms > 60_000 {
        return Err(cx.err("limits.time_per_entry_ms", "1 to 60000"));
    }
    if !(1..=65536).contains(&limits.memory_pages_max) {
        return Err(cx.err("limits.memory_pages_max", "1 to 65536 pages of 64 KiB"));
    }

    if raw.schema.fields.len() > MAX_FIELDS {
        return Err(cx.err("schema.fields", format!("at most {MAX_FIELDS} fields")));
    }
    let mut schema = Schema::default();
    for (name, f) in &raw.schema.fields {
        let path = format!("schema.fields.{name}");
        if !valid_name(name, MAX_NAME_LEN) {
            return Err(cx.err(&path, "a field name of 1 to 64 characters of [a-z0-9_-]"));
        }
        if name == "prev" || name == "len" || name == "true" || name == "false" {
            return Err(cx.err(
                &path,
                "a name that is not reserved (prev, len, true, false)",
            ));
        }
        let ty = field_type(&cx, &path, f, 0)?;
        let default_raw = f
            .default
            .as_ref()
            .ok_or_else(|| cx.err(format!("{path}.default"), "a default value"))?;
        let default = toml_value(&cx, &format!("{path}.default"), default_raw, &ty)?;
        ty.check(&default)
            .map_err(|e| cx.err(format!("{path}.default"), format!("a valid value: {e}")))?;
        let monotonic = f.monotonic.unwrap_or(false);
        if monotonic && !ty.supports_monotonic() {
            return Err(cx.err(
                format!("{path}.monotonic"),
                "monotonic only on int, list or map fields",
            ));
        }
        let immutable = f.immutable.unwrap_or(false);
        if immutable && monotonic {
            return Err(cx.err(&path, "either immutable or monotonic, not both"));
        }
        schema.fields.insert(
            name.clone(),
            FieldSpec {
                ty,
                default,
                immutable,
                monotonic,
                attestation_required: f.attestation_required.unwrap_or(false),
            },
        );
    }

    let mut writers = BTreeMap::new();
    for (entry, fields) in &raw.policy.writers {
        let path = format!("policy.writers.{entry}");
        let ep = EntryPoint::parse(entry)
            .ok_or_else(|| cx.err(&path, "an entry point: init, tick or message"))?;
        let mut set = BTreeSet::new();
        for f in fields {
            if !schema.fields.contains_key(f) {
                return Err(cx.err(&path, format!("declared field names; `{f}` is not one")));
            }
            set.insert(f.clone());
        }
        writers.insert(ep, set);
    }
    let mut invariants = Vec::new();
    let mut names = BTreeSet::new();
    for (i, inv) in raw.policy.invariants.iter().enumerate() {
        let path = format!("policy.invariants[{i}]");
        if !valid_name(&inv.name, 64) || !names.insert(inv.name.clone()) {
            return Err(cx.err(format!("{path}.name"), "a unique name of [a-z0-9_-]"));
        }
        let expr = Expr::parse(&inv.expr, &schema)
            .map_err(|e| cx.err(format!("{path}.expr"), format!("a valid expression: {e}")))?;
        invariants.push(Invariant {
            name: inv.name.clone(),
            source: inv.expr.clone(),
            expr,
        });
    }
    let policy = Policy {
        writers,
        invariants,
        attestation: AttestationRequirements {
            required: raw.policy.attestation.required.unwrap_or(false),
            allow_software: raw.policy.attestation.allow_software.unwrap_or(false),
        },
        migration: migration::build(
            &cx,
            &raw.policy.migration,
            raw.policy.trust.no_fall_on_migration,
        )?,
        trust: trust_policy(&cx, &raw.policy.trust, &schema)?,
    };
    let d = Descriptor {
        name: raw.object.name.clone(),
        version: raw.object.version,
        module_sha256,
        cycle,
        limits,
        schema,
        policy,
    };
    // The defaults are the initial state: they must satisfy the invariants too.
    let init = d.schema.initial_state();
    for inv in &d.policy.invariants {
        if inv.expr.eval(&init, &init) != Ok(true) {
            return Err(cx.err(
                format!("policy.invariants.{}", inv.name),
                "an invariant that holds for the default values",
            ));
        }
    }
    Ok(d)
}

fn trust_policy(
    cx: &Ctx<'_>,
    raw: &RawTrust,
    schema: &Schema,
) -> Result<TrustPolicy, DescriptorError> {
    if raw.read_only_below.is_some_and(|t| t > 100) {
        return Err(cx.err("policy.trust.read_only_below", "a score from 0 to 100"));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let path = format!("policy.trust.rules[{i}]");
        if !schema.fields.contains_key(&r.field) {
            return Err(cx.err(
                format!("{path}.field"),
                format!("a declared field; `{}` is not one", r.field),
            ));
        }
        if r.window == 0 || r.window as usize > MAX_WINDOW {
            return Err(cx.err(
                format!("{path}.window"),
                format!("1 to {MAX_WINDOW} entries"),
            ));
        }
        if r.min_score > 100 {
            return Err(cx.err(format!("{path}.min_score"), "a score from 0 to 100"));
        }
        rules.push(FieldTrustRule {
            field: r.field.clone(),
            window: r.window,
            min_score: r.min_score,
        });
    }
    Ok(TrustPolicy {
        read_only_below: raw.read_only_below,
        rules,
    })
}

fn field_type(
    cx: &Ctx<'_>,
    path: &str,
    f: &RawField,
    depth: usize,
) -> Result<FieldType, DescriptorError> {
    if depth > MAX_TYPE_DEPTH {
        return Err(cx.err(path, format!("types nested at most {MAX_TYPE_DEPTH} deep")));
    }
    // Which keys each type accepts; anything else set is an error.
    let allowed: &[&str] = match f.ty.as_str() {
        "int" => &["min", "max"],
        "bool" => &[],
        "string" | "bytes" => &["max_len"],
        "enum" => &["variants"],
        "list" => &["items", "max_items"],
        "map" => &["values", "max_entries", "max_key_len"],
        other => {
            return Err(cx.err(
                format!("{path}.type"),
                format!("one of int, bool, string, bytes, enum, list, map; found {other:?}"),
            ))
        }
    };
    let present = [
        ("min", f.min.is_some()),
        ("max", f.max.is_some()),
        ("max_len", f.max_len.is_some()),
        ("variants", f.variants.is_some()),
        ("items", f.items.is_some()),
        ("values", f.values.is_some()),
        ("max_items", f.max_items.is_some()),
        ("max_entries", f.max_entries.is_some()),
        ("max_key_len", f.max_key_len.is_some()),
    ];
    for (key, set) in present {
        if set && !allowed.contains(&key) {
            return Err(cx.err(
                format!("{path}.{key}"),
                format!("no `{key}` on a field of type {}", f.ty),
            ));
        }
    }
    if depth > 0
        && (f.default.is_some()
            || f.immutable.is_some()
            || f.monotonic.is_some()
            || f.attestation_required.is_some())
    {
        return Err(cx.err(path, "an element type without default or flags"));
    }
    let need = |v: Option<u32>, key: &str| {
        v.ok_or_else(|| {
            cx.err(
                format!("{path}.{key}"),
                "a maximum (required for this type)",
            )
        })
    };
    Ok(match f.ty.as_str() {
        "int" => {
            if let (Some(a), Some(b)) = (f.min, f.max) {
                if a > b {
                    return Err(cx.err(format!("{path}.max"), "max at least min"));
                }
            }
            FieldType::Int {
                min: f.min,
                max: f.max,
            }
        }
        "bool" => FieldType::Bool,
        "string" => FieldType::String {
            max_len: need(f.max_len, "max_len")?,
        },
        "bytes" => FieldType::Bytes {
            max_len: need(f.max_len, "max_len")?,
        },
        "enum" => {
            let variants = f.variants.clone().unwrap_or_default();
            let unique: BTreeSet<&String> = variants.iter().collect();
            if variants.is_empty()
                || unique.len() != variants.len()
                || !variants.iter().all(|v| valid_name(v, 64))
            {
                return Err(cx.err(
                    format!("{path}.variants"),
                    "a non-empty list of unique names of [a-z0-9_-]",
                ));
            }
            FieldType::Enum { variants }
        }
        "list" => {
            let items = f
                .items
                .as_ref()
                .ok_or_else(|| cx.err(format!("{path}.items"), "an element type"))?;
            FieldType::List {
                items: Box::new(field_type(cx, &format!("{path}.items"), items, depth + 1)?),
                max_items: need(f.max_items, "max_items")?,
            }
        }
        _ => {
            let values = f
                .values
                .as_ref()
                .ok_or_else(|| cx.err(format!("{path}.values"), "a value type"))?;
            FieldType::Map {
                values: Box::new(field_type(
                    cx,
                    &format!("{path}.values"),
                    values,
                    depth + 1,
                )?),
                max_entries: need(f.max_entries, "max_entries")?,
                max_key_len: f.max_key_len.unwrap_or(64),
            }
        }
    })
}

fn toml_value(
    cx: &Ctx<'_>,
    path: &str,
    v: &toml::Value,
    ty: &FieldType,
) -> Result<Value, DescriptorError> {
    let wrong = || cx.err(path, format!("a value of type {}", ty.name()));
    Ok(match (ty, v) {
        (FieldType::Int { .. }, toml::Value::Integer(i)) => Value::Int(*i),
        (FieldType::Bool, toml::Value::Boolean(b)) => Value::Bool(*b),
        (FieldType::String { .. }, toml::Value::String(s)) => Value::Str(s.clone()),
        (FieldType::Enum { .. }, toml::Value::String(s)) => Value::Enum(s.clone()),
        (FieldType::Bytes { .. }, toml::Value::String(s)) => {
            Value::Bytes(hex::decode(s).map_err(|_| cx.err(path, "bytes as a hex string"))?)
        }
        (FieldType::List { items, .. }, toml::Value::Array(a)) => Value::List(
            a.iter()
                .enumerate()
                .map(|(i, x)| toml_value(cx, &format!("{path}[{i}]"), x, items))
                .collect::<Result<_, _>>()?,
        ),
        (FieldType::Map { values, .. }, toml::Value::Table(t)) => Value::Map(
            t.iter()
                .map(|(k, x)| {
                    Ok((
                        k.clone(),
                        toml_value(cx, &format!("{path}.{k}"), x, values)?,
                    ))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(wrong()),
    })
}

// ---- canonical CBOR -------------------------------------------------------------------------

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_string())
}
fn uint(n: u64) -> Cbor {
    Cbor::Integer(n.into())
}
fn map(entries: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn type_to_cbor(ty: &FieldType) -> Cbor {
    let mut e = vec![("type", text(ty.name()))];
    match ty {
        FieldType::Int { min, max } => {
            if let Some(m) = min {
                e.push(("min", Cbor::Integer((*m).into())));
            }
            if let Some(m) = max {
                e.push(("max", Cbor::Integer((*m).into())));
            }
        }
        FieldType::Bool => {}
        FieldType::String { max_len } | FieldType::Bytes { max_len } => {
            e.push(("max_len", uint((*max_len).into())))
        }
        FieldType::Enum { variants } => e.push((
            "variants",
            Cbor::Array(variants.iter().map(|v| text(v)).collect()),
        )),
        FieldType::List { items, max_items } => {
            e.push(("items", type_to_cbor(items)));
            e.push(("max_items", uint((*max_items).into())));
        }
        FieldType::Map {
            values,
            max_entries,
            max_key_len,
        } => {
            e.push(("values", type_to_cbor(values)));
            e.push(("max_entries", uint((*max_entries).into())));
            e.push(("max_key_len", uint((*max_key_len).into())));
        }
    }
    map(e)
}

/// `policy.trust`. `no_fall_on_migration` is the migration rules' `trust` (format 1 has always
/// encoded it here; see [`MigrationRules::trust`]).
fn trust_to_cbor(t: &TrustPolicy, no_fall_on_migration: bool) -> Cbor {
    let mut e = vec![
        ("no_fall_on_migration", Cbor::Bool(no_fall_on_migration)),
        (
            "rules",
            Cbor::Array(
                t.rules
                    .iter()
                    .map(|r| {
                        map(vec![
                            ("field", text(&r.field)),
                            ("window", uint(r.window.into())),
                            ("min_score", uint(r.min_score.into())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ];
    if let Some(t) = t.read_only_below {
        e.push(("read_only_below", uint(t.into())));
    }
    map(e)
}

impl Descriptor {
    /// The descriptor as a CBOR value (maps not yet sorted; see [`Descriptor::encode`]).
    pub fn to_cbor(&self) -> Cbor {
        let fields = Cbor::Map(
            self.schema
                .fields
                .iter()
                .map(|(name, f)| {
                    let mut spec = match type_to_cbor(&f.ty) {
                        Cbor::Map(m) => m,
                        _ => Vec::new(),
                    };
                    spec.push((text("default"), f.default.to_cbor()));
                    spec.push((text("immutable"), Cbor::Bool(f.immutable)));
                    spec.push((text("monotonic"), Cbor::Bool(f.monotonic)));
                    spec.push((
                        text("attestation_required"),
                        Cbor::Bool(f.attestation_required),
                    ));
                    (text(name), Cbor::Map(spec))
                })
                .collect(),
        );
        let writers = Cbor::Map(
            self.policy
                .writers
                .iter()
                .map(|(ep, set)| {
                    (
                        text(ep.as_str()),
                        Cbor::Array(set.iter().map(|f| text(f)).collect()),
                    )
                })
                .collect(),
        );
        let invariants = Cbor::Array(
            self.policy
                .invariants
                .iter()
                .map(|i| map(vec![("name", text(&i.name)), ("expr", text(&i.source))]))
                .collect(),
        );
        let mut cycle = vec![
            ("min_interval_ms", uint(self.cycle.min_interval_ms)),
            ("inbox_capacity", uint(self.cycle.inbox_capacity.into())),
            (
                "max_message_bytes",
                uint(self.cycle.max_message_bytes.into()),
            ),
        ];
        if let Some(m) = self.cycle.max_interval_ms {
            cycle.push(("max_interval_ms", uint(m)));
        }
        map(vec![
            ("format", uint(DESCRIPTOR_FORMAT)),
            (
                "object",
                map(vec![
                    ("name", text(&self.name)),
                    ("version", uint(self.version.into())),
                    ("module_sha256", Cbor::Bytes(self.module_sha256.to_vec())),
                ]),
            ),
            ("cycle", map(cycle)),
            (
                "limits",
                map(vec![
                    ("fuel_per_entry", uint(self.limits.fuel_per_entry)),
                    ("time_per_entry_ms", uint(self.limits.time_per_entry_ms)),
                    (
                        "memory_pages_max",
                        uint(self.limits.memory_pages_max.into()),
                    ),
                    ("replayable", Cbor::Bool(self.limits.replayable)),
                    (
                        "rollback",
                        text(match self.limits.rollback {
                            Rollback::Fields => "fields",
                            Rollback::Memory => "memory",
                        }),
                    ),
                ]),
            ),
            ("schema", map(vec![("fields", fields)])),
            (
                "policy",
                map(vec![
                    ("writers", writers),
                    ("invariants", invariants),
                    (
                        "attestation",
                        map(vec![
                            ("required", Cbor::Bool(self.policy.attestation.required)),
                            (
                                "allow_software",
                                Cbor::Bool(self.policy.attestation.allow_software),
                            ),
                        ]),
                    ),
                    ("migration", migration::to_cbor(&self.policy.migration)),
                    (
                        "trust",
                        trust_to_cbor(
                            &self.policy.trust,
                            self.policy.migration.trust == migration::MigrationTrust::NoFall,
                        ),
                    ),
                ]),
            ),
        ])
    }

    /// The canonical (deterministic CBOR) encoding: the descriptor as it travels.
    pub fn encode(&self) -> Vec<u8> {
        // A descriptor holds only text keys, integers, booleans, text and bytes: encoding
        // cannot fail.
        canonical::encode(&self.to_cbor()).unwrap_or_default()
    }

    /// SHA-256 of [`Descriptor::encode`]: the content address of the object's image.
    pub fn digest(&self) -> [u8; 32] {
        canonical::sha256(&self.encode())
    }

    /// Decodes a canonical encoding (as carried in a snapshot or a migration), re-validating
    /// everything the TOML path validates.
    pub fn decode(bytes: &[u8]) -> Result<Descriptor, DescriptorError> {
        let value = canonical::decode(bytes).map_err(|e: CanonicalError| DescriptorError {
            file: "(encoded descriptor)".into(),
            field: "(document)".into(),
            expected: format!("canonical CBOR: {e}"),
        })?;
        let (raw, module_sha256) =
            raw_from_cbor(&value).map_err(|(field, expected)| DescriptorError {
                file: "(encoded descriptor)".into(),
                field,
                expected,
            })?;
        let d = build("(encoded descriptor)", &raw, module_sha256)?;
        if d.encode() != bytes {
            return Err(DescriptorError {
                file: "(encoded descriptor)".into(),
                field: "(document)".into(),
                expected: "an encoding that round-trips exactly (defaults spelled out)".into(),
            });
        }
        Ok(d)
    }

    /// The field spec of `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.schema.fields.get(name)
    }

    /// The state at creation.
    pub fn initial_state(&self) -> Fields {
        self.schema.initial_state()
    }

    /// Validates the writes of one entry against schema and policy. On success returns the
    /// state after the entry; on failure nothing is applied and the first violation (in field
    /// order, then invariant order) is returned.
    pub fn check_transition(
        &self,
        entry: EntryPoint,
        before: &Fields,
        writes: &Fields,
    ) -> Result<Fields, Violation> {
        self.check_writes(entry, before, writes)?;
        let mut after = before.clone();
        for (name, value) in writes {
            after.insert(name.clone(), value.clone());
        }
        self.check_invariants(&after, before)?;
        Ok(after)
    }

    /// The per-field half of [`Descriptor::check_transition`]: the field exists, the entry may
    /// write it, the value fits its type and bounds, and `immutable`/`monotonic` hold.
    pub fn check_writes(
        &self,
        entry: EntryPoint,
        before: &Fields,
        writes: &Fields,
    ) -> Result<(), Violation> {
        let allowed = self.policy.writers.get(&entry);
        for (name, value) in writes {
            let spec = self
                .schema
                .fields
                .get(name)
                .ok_or_else(|| Violation::UnknownField {
                    field: name.clone(),
                })?;
            if !allowed.is_some_and(|s| s.contains(name)) {
                return Err(Violation::NotWritable {
                    field: name.clone(),
                    entry,
                });
            }
            spec.ty.check(value).map_err(|reason| Violation::Schema {
                field: name.clone(),
                reason,
            })?;
            let old = before.get(name).unwrap_or(&spec.default);
            if spec.immutable && old != value {
                return Err(Violation::Immutable {
                    field: name.clone(),
                });
            }
            if spec.monotonic && !spec.ty.monotonic_ok(old, value) {
                return Err(Violation::NotMonotonic {
                    field: name.clone(),
                    from: old.render(),
                    to: value.render(),
                });
            }
        }
        Ok(())
    }

    /// The trust-slope rules for a non-empty set of writes, given the trust of the lineage
    /// before this entry (`None`: no attested lineage is attached, which fails closed for any
    /// rule that applies).
    pub fn check_trust(&self, writes: &Fields, trust: Option<&TrustView>) -> Result<(), Violation> {
        let t = &self.policy.trust;
        if writes.is_empty() || !t.gates_writes() {
            return Ok(());
        }
        if let Some(threshold) = t.read_only_below {
            match trust.and_then(TrustView::ewma) {
                Some(e) if e >= threshold => {}
                Some(e) => {
                    return Err(Violation::Trust(format!(
                        "the object is read-only: trust {e} is below {threshold}"
                    )))
                }
                None => {
                    return Err(Violation::Trust(
                        "the object is read-only without an attested lineage".into(),
                    ))
                }
            }
        }
        for r in &t.rules {
            if !writes.contains_key(&r.field) {
                continue;
            }
            match trust.and_then(|v| v.window_min(r.window as usize)) {
                Some(m) if m >= r.min_score => {}
                Some(m) => {
                    return Err(Violation::Trust(format!(
                        "field `{}` needs the last {} entries at trust >= {}, lowest is {m}",
                        r.field, r.window, r.min_score
                    )))
                }
                None => {
                    return Err(Violation::Trust(format!(
                        "field `{}` needs {} attested entries before it may change",
                        r.field, r.window
                    )))
                }
            }
        }
        Ok(())
    }

    /// The cross-field half of [`Descriptor::check_transition`]: every invariant holds over
    /// the state `after` the entry, with `prev.` reading `before`.
    pub fn check_invariants(&self, after: &Fields, before: &Fields) -> Result<(), Violation> {
        for inv in &self.policy.invariants {
            match inv.expr.eval(after, before) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Violation::InvariantFailed {
                        name: inv.name.clone(),
                        source_text: inv.source.clone(),
                    })
                }
                Err(reason) => {
                    return Err(Violation::InvariantError {
                        name: inv.name.clone(),
                        reason,
                    })
                }
            }
        }
        Ok(())
    }
}

pub(crate) type DecodeErr = (String, String);

pub(crate) fn get<'a>(m: &'a [(Cbor, Cbor)], key: &str) -> Option<&'a Cbor> {
    m.iter()
        .find(|(k, _)| matches!(k, Cbor::Text(t) if t == key))
        .map(|(_, v)| v)
}

pub(crate) fn as_map<'a>(v: Option<&'a Cbor>, path: &str) -> Result<&'a [(Cbor, Cbor)], DecodeErr> {
    match v {
        Some(Cbor::Map(m)) => Ok(m),
        _ => Err((path.into(), "a map".into())),
    }
}

pub(crate) fn known_keys(m: &[(Cbor, Cbor)], path: &str, keys: &[&str]) -> Result<(), DecodeErr> {
    for (k, _) in m {
        match k {
            Cbor::Text(t) if keys.contains(&t.as_str()) => {}
            _ => return Err((format!("{path}.{k:?}"), "no unknown keys".into())),
        }
    }
    Ok(())
}

pub(crate) fn opt_u64(m: &[(Cbor, Cbor)], key: &str, path: &str) -> Result<Option<u64>, DecodeErr> {
    match get(m, key) {
        None => Ok(None),
        Some(Cbor::Integer(i)) => u64::try_from(*i)
            .map(Some)
            .map_err(|_| (format!("{path}.{key}"), "an unsigned integer".into())),
        Some(_) => Err((format!("{path}.{key}"), "an unsigned integer".into())),
    }
}
fn opt_u32(m: &[(Cbor, Cbor)], key: &str, path: &str) -> Result<Option<u32>, DecodeErr> {
    opt_u64(m, key, path)?
        .map(|v| u32::try_from(v).map_err(|_| (format!("{path}.{key}"), "a u32".into())))
        .transpose()
}
fn opt_i64(m: &[(Cbor, Cbor)], key: &str, path: &str) -> Result<Option<i64>, DecodeErr> {
    match get(m, key) {
        None => Ok(None),
        Some(Cbor::Integer(i)) => i64::try_from(*i)
            .map(Some)
            .map_err(|_| (format!("{path}.{key}"), "an i64".into())),
        Some(_) => Err((format!("{path}.{key}"), "an integer".into())),
    }
}
pub(crate) fn opt_bool(
    m: &[(Cbor, Cbor)],
    key: &str,
    path: &str,
) -> Result<Option<bool>, DecodeErr> {
    match get(m, key) {
        None => Ok(None),
        Some(Cbor::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err((format!("{path}.{key}"), "a boolean".into())),
    }
}
pub(crate) fn opt_text(
    m: &[(Cbor, Cbor)],
    key: &str,
    path: &str,
) -> Result<Option<String>, DecodeErr> {
    match get(m, key) {
        None => Ok(None),
        Some(Cbor::Text(t)) => Ok(Some(t.clone())),
        Some(_) => Err((format!("{path}.{key}"), "text".into())),
    }
}
fn req<T>(v: Option<T>, path: &str) -> Result<T, DecodeErr> {
    v.ok_or_else(|| (path.into(), "a value (missing)".into()))
}
fn text_list(v: Option<&Cbor>, path: &str) -> Result<Option<Vec<String>>, DecodeErr> {
    match v {
        None => Ok(None),
        Some(Cbor::Array(a)) => a
            .iter()
            .map(|x| match x {
                Cbor::Text(t) => Ok(t.clone()),
                _ => Err((path.to_string(), "a list of text".to_string())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err((path.into(), "a list of text".into())),
    }
}

fn raw_field_from_cbor(v: &Cbor, path: &str, top: bool) -> Result<RawField, DecodeErr> {
    let m = as_map(Some(v), path)?;
    let mut keys = vec![
        "type",
        "min",
        "max",
        "max_len",
        "variants",
        "items",
        "values",
        "max_items",
        "max_entries",
        "max_key_len",
    ];
    if top {
        keys.extend(["default", "immutable", "monotonic", "attestation_required"]);
    }
    known_keys(m, path, &keys)?;
    let sub = |key: &str| -> Result<Option<Box<RawField>>, DecodeErr> {
        get(m, key)
            .map(|x| raw_field_from_cbor(x, &format!("{path}.{key}"), false).map(Box::new))
            .transpose()
    };
    Ok(RawField {
        ty: req(opt_text(m, "type", path)?, &format!("{path}.type"))?,
        min: opt_i64(m, "min", path)?,
        max: opt_i64(m, "max", path)?,
        max_len: opt_u32(m, "max_len", path)?,
        variants: text_list(get(m, "variants"), &format!("{path}.variants"))?,
        items: sub("items")?,
        values: sub("values")?,
        max_items: opt_u32(m, "max_items", path)?,
        max_entries: opt_u32(m, "max_entries", path)?,
        max_key_len: opt_u32(m, "max_key_len", path)?,
        default: get(m, "default")
            .map(cbor_to_toml)
            .transpose()
            .map_err(|e| (format!("{path}.default"), e))?,
        immutable: opt_bool(m, "immutable", path)?,
        monotonic: opt_bool(m, "monotonic", path)?,
        attestation_required: opt_bool(m, "attestation_required", path)?,
    })
}

/// Defaults travel as CBOR; the builder takes them in TOML's shape (bytes as hex).
fn cbor_to_toml(v: &Cbor) -> Result<toml::Value, String> {
    Ok(match v {
        Cbor::Integer(i) => {
            toml::Value::Integer(i64::try_from(*i).map_err(|_| "an i64".to_string())?)
        }
        Cbor::Bool(b) => toml::Value::Boolean(*b),
        Cbor::Text(t) => toml::Value::String(t.clone()),
        Cbor::Bytes(b) => toml::Value::String(hex::encode(b)),
        Cbor::Array(a) => toml::Value::Array(a.iter().map(cbor_to_toml).collect::<Result<_, _>>()?),
        Cbor::Map(m) => {
            let mut t = toml::map::Map::new();
            for (k, x) in m {
                let Cbor::Text(k) = k else {
                    return Err("text map keys".into());
                };
                t.insert(k.clone(), cbor_to_toml(x)?);
            }
            toml::Value::Table(t)
        }
        _ => return Err("a plain value".into()),
    })
}

fn raw_trust_from_cbor(v: Option<&Cbor>) -> Result<RawTrust, DecodeErr> {
    let t = as_map(v, "policy.trust")?;
    known_keys(
        t,
        "policy.trust",
        &["read_only_below", "no_fall_on_migration", "rules"],
    )?;
    let read_only_below = opt_u64(t, "read_only_below", "policy.trust")?
        .map(|v| {
            u8::try_from(v).map_err(|_| {
                (
                    "policy.trust.read_only_below".to_string(),
                    "0..=100".to_string(),
                )
            })
        })
        .transpose()?;
    let mut rules = Vec::new();
    match get(t, "rules") {
        Some(Cbor::Array(a)) => {
            for (i, r) in a.iter().enumerate() {
                let path = format!("policy.trust.rules[{i}]");
                let m = as_map(Some(r), &path)?;
                known_keys(m, &path, &["field", "window", "min_score"])?;
                rules.push(RawTrustRule {
                    field: req(opt_text(m, "field", &path)?, &path)?,
                    window: req(opt_u32(m, "window", &path)?, &path)?,
                    min_score: u8::try_from(req(opt_u64(m, "min_score", &path)?, &path)?)
                        .map_err(|_| (path.clone(), "0..=100".to_string()))?,
                });
            }
        }
        _ => return Err(("policy.trust.rules".into(), "a list".into())),
    }
    Ok(RawTrust {
        read_only_below,
        no_fall_on_migration: opt_bool(t, "no_fall_on_migration", "policy.trust")?,
        rules,
    })
}

fn raw_from_cbor(v: &Cbor) -> Result<(RawDescriptor, [u8; 32]), DecodeErr> {
    let top = as_map(Some(v), "(document)")?;
    known_keys(
        top,
        "",
        &["format", "object", "cycle", "limits", "schema", "policy"],
    )?;
    if opt_u64(top, "format", "")? != Some(DESCRIPTOR_FORMAT) {
        return Err((
            "format".into(),
            format!("format version {DESCRIPTOR_FORMAT}"),
        ));
    }
    let o = as_map(get(top, "object"), "object")?;
    known_keys(o, "object", &["name", "version", "module_sha256"])?;
    let module_sha256: [u8; 32] = match get(o, "module_sha256") {
        Some(Cbor::Bytes(b)) => b
            .as_slice()
            .try_into()
            .map_err(|_| ("object.module_sha256".to_string(), "32 bytes".to_string()))?,
        _ => return Err(("object.module_sha256".into(), "32 bytes".into())),
    };
    let c = as_map(get(top, "cycle"), "cycle")?;
    known_keys(
        c,
        "cycle",
        &[
            "min_interval_ms",
            "max_interval_ms",
            "inbox_capacity",
            "max_message_bytes",
        ],
    )?;
    let l = as_map(get(top, "limits"), "limits")?;
    known_keys(
        l,
        "limits",
        &[
            "fuel_per_entry",
            "time_per_entry_ms",
            "memory_pages_max",
            "replayable",
            "rollback",
        ],
    )?;
    let s = as_map(get(top, "schema"), "schema")?;
    known_keys(s, "schema", &["fields"])?;
    let mut fields = BTreeMap::new();
    for (k, f) in as_map(get(s, "fields"), "schema.fields")? {
        let Cbor::Text(name) = k else {
            return Err(("schema.fields".into(), "text field names".into()));
        };
        fields.insert(
            name.clone(),
            raw_field_from_cbor(f, &format!("schema.fields.{name}"), true)?,
        );
    }
    let p = as_map(get(top, "policy"), "policy")?;
    known_keys(
        p,
        "policy",
        &["writers", "invariants", "attestation", "migration", "trust"],
    )?;
    let mut writers = BTreeMap::new();
    for (k, list) in as_map(get(p, "writers"), "policy.writers")? {
        let Cbor::Text(ep) = k else {
            return Err(("policy.writers".into(), "text keys".into()));
        };
        let path = format!("policy.writers.{ep}");
        writers.insert(ep.clone(), req(text_list(Some(list), &path)?, &path)?);
    }
    let mut invariants = Vec::new();
    match get(p, "invariants") {
        Some(Cbor::Array(a)) => {
            for (i, inv) in a.iter().enumerate() {
                let path = format!("policy.invariants[{i}]");
                let m = as_map(Some(inv), &path)?;
                known_keys(m, &path, &["name", "expr"])?;
                invariants.push(RawInvariant {
                    name: req(opt_text(m, "name", &path)?, &path)?,
                    expr: req(opt_text(m, "expr", &path)?, &path)?,
                });
            }
        }
        _ => return Err(("policy.invariants".into(), "a list".into())),
    }
    let a = as_map(get(p, "attestation"), "policy.attestation")?;
    known_keys(a, "policy.attestation", &["required", "allow_software"])?;
    let migration = migration::raw_from_cbor(get(p, "migration"))?;
    let raw = RawDescriptor {
        object: RawObject {
            name: req(opt_text(o, "name", "object")?, "object.name")?,
            version: req(opt_u32(o, "version", "object")?, "object.version")?,
            module: String::new(),
        },
        cycle: RawCycle {
            min_interval_ms: opt_u64(c, "min_interval_ms", "cycle")?,
            max_interval_ms: opt_u64(c, "max_interval_ms", "cycle")?,
            inbox_capacity: opt_u32(c, "inbox_capacity", "cycle")?,
            max_message_bytes: opt_u32(c, "max_message_bytes", "cycle")?,
        },
        limits: RawLimits {
            fuel_per_entry: req(
                opt_u64(l, "fuel_per_entry", "limits")?,
                "limits.fuel_per_entry",
            )?,
            time_per_entry_ms: opt_u64(l, "time_per_entry_ms", "limits")?,
            memory_pages_max: req(
                opt_u32(l, "memory_pages_max", "limits")?,
                "limits.memory_pages_max",
            )?,
            replayable: opt_bool(l, "replayable", "limits")?,
            rollback: opt_text(l, "rollback", "limits")?,
        },
        schema: RawSchema { fields },
        policy: RawPolicy {
            writers,
            invariants,
            attestation: RawAttestation {
                required: opt_bool(a, "required", "policy.attestation")?,
                allow_software: opt_bool(a, "allow_software", "policy.attestation")?,
            },
            migration,
            trust: raw_trust_from_cbor(get(p, "trust"))?,
        },
    };
    Ok((raw, module_sha256))
}
