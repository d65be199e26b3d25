//! The host side of the object ABI (docs/object-abi.md): the `sojourn` imports and the
//! per-entry transaction they stage writes into.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sojourn_policy::{Descriptor, EntryPoint, FieldType, Fields, Value, Violation};
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use crate::module::IMPORT_MODULE;
use crate::record::Digest;

/// Longest field name a guest may pass.
const MAX_NAME: usize = 64;
/// Most random bytes per `random` call and per entry.
const MAX_RANDOM_CALL: usize = 256;
const MAX_RANDOM_ENTRY: u32 = 1024;
/// Most emitted messages and log lines per entry, and the longest log line kept.
const MAX_EMITS: usize = 64;
const MAX_LOGS: usize = 32;
const MAX_LOG_LINE: usize = 512;
/// Largest CBOR value a guest may write.
const MAX_CBOR: usize = 64 * 1024;

/// A fault caused by the guest (bad pointer, unknown field, limit exceeded). It becomes a trap.
#[derive(Debug)]
pub(crate) struct GuestFault(pub String);

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for GuestFault {}

fn fault(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(GuestFault(msg.into()))
}

/// The transaction of one entry.
#[derive(Debug)]
pub(crate) struct Txn {
    pub entry: EntryPoint,
    pub now_ms: i64,
    pub seq: u64,
    pub seed: [u8; 32],
    pub random_drawn: u32,
    pub message: Option<Vec<u8>>,
    pub writes: Fields,
    pub write_error: Option<Violation>,
    pub emitted: Vec<Vec<u8>>,
    pub logs: Vec<String>,
    pub logs_dropped: usize,
}

impl Txn {
    pub fn new(
        entry: EntryPoint,
        now_ms: i64,
        seq: u64,
        seed: [u8; 32],
        message: Option<Vec<u8>>,
    ) -> Txn {
        Txn {
            entry,
            now_ms,
            seq,
            seed,
            random_drawn: 0,
            message,
            writes: Fields::new(),
            write_error: None,
            emitted: Vec::new(),
            logs: Vec::new(),
            logs_dropped: 0,
        }
    }
}

/// Expands a wake's seed into entry `seq`'s random stream: block `i` is
/// SHA-256(seed ‖ seq ‖ i) (little-endian u64s). Nothing is hashed unless the entry draws.
pub(crate) fn random_bytes(seed: &[u8; 32], seq: u64, offset: u32, out: &mut [u8]) {
    let mut pos = offset as usize;
    let mut filled = 0;
    while filled < out.len() {
        let block = (pos / 32) as u64;
        let digest: [u8; 32] = Sha256::new()
            .chain_update(seed)
            .chain_update(seq.to_le_bytes())
            .chain_update(block.to_le_bytes())
            .finalize()
            .into();
        let from = pos % 32;
        let n = (32 - from).min(out.len() - filled);
        if let (Some(dst), Some(src)) =
            (out.get_mut(filled..filled + n), digest.get(from..from + n))
        {
            dst.copy_from_slice(src);
        }
        filled += n;
        pos += n;
    }
}

/// Per-object state visible to the imports.
#[derive(Debug)]
pub struct HostState {
    pub(crate) descriptor: Arc<Descriptor>,
    pub(crate) fields: Fields,
    pub(crate) fields_digest: Digest,
    pub(crate) txn: Option<Txn>,
    /// The previous entry's rejection reason, visible to the current entry.
    pub(crate) last_rejection: Option<String>,
    pub(crate) memory: Option<Memory>,
    pub(crate) mem_cap_bytes: usize,
    /// Field names in canonical order and a scratch buffer, for the per-entry state digest.
    key_order: Vec<String>,
    digest_buf: Vec<u8>,
}

impl HostState {
    pub(crate) fn new(descriptor: Arc<Descriptor>, fields: Fields) -> HostState {
        let fields_digest = Digest(sojourn_policy::state_digest(&fields));
        let mem_cap_bytes = (descriptor.limits.memory_pages_max as usize) * 65536;
        let key_order =
            sojourn_policy::schema::canonical_key_order(descriptor.schema.fields.keys());
        HostState {
            key_order,
            digest_buf: Vec::new(),
            descriptor,
            fields,
            fields_digest,
            txn: None,
            last_rejection: None,
            memory: None,
            mem_cap_bytes,
        }
    }

    /// Recomputes the digest of the canonical fields after they changed.
    pub(crate) fn refresh_digest(&mut self) {
        self.fields_digest = Digest(sojourn_policy::schema::state_digest_ordered(
            &self.key_order,
            &self.fields,
            &mut self.digest_buf,
        ));
    }

    fn txn(&mut self) -> wasmtime::Result<&mut Txn> {
        self.txn
            .as_mut()
            .ok_or_else(|| fault("host call outside an entry (start function?)"))
    }

    fn current(&self, name: &str) -> wasmtime::Result<&Value> {
        if let Some(v) = self.txn.as_ref().and_then(|t| t.writes.get(name)) {
            return Ok(v);
        }
        self.fields
            .get(name)
            .ok_or_else(|| fault(format!("unknown field `{name}`")))
    }

    /// Stages a write; a write that cannot be valid is remembered as the entry's violation.
    fn stage(
        &mut self,
        name: String,
        make: impl FnOnce(&FieldType) -> Result<Value, String>,
    ) -> wasmtime::Result<()> {
        let descriptor = self.descriptor.clone();
        let txn = self.txn()?;
        let result = match descriptor.field(&name).map(|s| &s.ty) {
            None => Err(Violation::UnknownField {
                field: name.clone(),
            }),
            Some(ty) => make(ty).map_err(|reason| Violation::Schema {
                field: name.clone(),
                reason,
            }),
        };
        match result {
            Ok(v) => {
                txn.writes.insert(name, v);
            }
            Err(v) => {
                txn.write_error.get_or_insert(v);
            }
        }
        Ok(())
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.mem_cap_bytes {
            return Err(fault(format!(
                "memory grow to {} pages exceeds the cap of {} pages (limits.memory_pages_max)",
                desired / 65536,
                self.mem_cap_bytes / 65536
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

fn memory(c: &Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    c.data().memory.ok_or_else(|| fault("object has no memory"))
}

fn range(ptr: i32, len: i32, size: usize) -> wasmtime::Result<std::ops::Range<usize>> {
    let p = u32::try_from(ptr).map_err(|_| fault("negative pointer"))? as usize;
    let l = u32::try_from(len).map_err(|_| fault("negative length"))? as usize;
    let end = p.checked_add(l).ok_or_else(|| fault("pointer overflow"))?;
    if end > size {
        return Err(fault(format!(
            "out-of-bounds access {p}..{end} (memory is {size} bytes)"
        )));
    }
    Ok(p..end)
}

fn read(c: &Caller<'_, HostState>, ptr: i32, len: i32, max: usize) -> wasmtime::Result<Vec<u8>> {
    if usize::try_from(len).map_or(true, |l| l > max) {
        return Err(fault(format!(
            "length {len} exceeds the limit of {max} bytes"
        )));
    }
    let mem = memory(c)?;
    let data = mem.data(c);
    let r = range(ptr, len, data.len())?;
    Ok(data.get(r).unwrap_or_default().to_vec())
}

/// The field name at `(ptr, len)`, borrowed from guest memory (no copy: the read path of every
/// tick).
fn name_in(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&str> {
    if usize::try_from(len).map_or(true, |l| l > MAX_NAME) {
        return Err(fault(format!(
            "length {len} exceeds the limit of {MAX_NAME} bytes"
        )));
    }
    let bytes = data.get(range(ptr, len, data.len())?).unwrap_or_default();
    std::str::from_utf8(bytes).map_err(|_| fault("field name is not UTF-8"))
}

fn read_name(c: &Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    String::from_utf8(read(c, ptr, len, MAX_NAME)?).map_err(|_| fault("field name is not UTF-8"))
}

/// Copies `min(bytes.len(), cap)` bytes to `out`; returns the full length.
fn write_out(
    c: &mut Caller<'_, HostState>,
    out: i32,
    cap: i32,
    bytes: &[u8],
) -> wasmtime::Result<i32> {
    let cap = usize::try_from(cap).map_err(|_| fault("negative capacity"))?;
    let n = bytes.len().min(cap);
    let mem = memory(c)?;
    let data = mem.data_mut(&mut *c);
    let r = range(
        out,
        i32::try_from(n).map_err(|_| fault("length overflow"))?,
        data.len(),
    )?;
    if let (Some(dst), Some(src)) = (data.get_mut(r), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    i32::try_from(bytes.len()).map_err(|_| fault("length overflow"))
}

fn wrong(ty: &FieldType, as_: &str) -> String {
    format!("expected {}, written as {as_}", ty.name())
}

/// Builds the linker with every `sojourn` import.
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>, wasmtime::Error> {
    let mut l = Linker::new(engine);
    let m = IMPORT_MODULE;
    l.func_wrap(
        m,
        "field_get_i64",
        |c: Caller<'_, HostState>, p: i32, n: i32| {
            let mem = memory(&c)?;
            let name = name_in(mem.data(&c), p, n)?;
            match c.data().current(name)? {
                Value::Int(i) => Ok(*i),
                _ => Err(fault(format!(
                    "field_get_i64: `{name}` is not an int field"
                ))),
            }
        },
    )?;
    l.func_wrap(
        m,
        "field_get_bool",
        |c: Caller<'_, HostState>, p: i32, n: i32| {
            let mem = memory(&c)?;
            let name = name_in(mem.data(&c), p, n)?;
            match c.data().current(name)? {
                Value::Bool(b) => Ok(i32::from(*b)),
                _ => Err(fault(format!(
                    "field_get_bool: `{name}` is not a bool field"
                ))),
            }
        },
    )?;
    l.func_wrap(
        m,
        "field_get_bytes",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, out: i32, cap: i32| {
            let name = read_name(&c, p, n)?;
            let bytes = match c.data().current(&name)? {
                Value::Str(s) | Value::Enum(s) => s.as_bytes().to_vec(),
                Value::Bytes(b) => b.clone(),
                _ => {
                    return Err(fault(format!(
                        "field_get_bytes: `{name}` is not a string, bytes or enum field"
                    )))
                }
            };
            write_out(&mut c, out, cap, &bytes)
        },
    )?;
    l.func_wrap(
        m,
        "field_get_cbor",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, out: i32, cap: i32| {
            let name = read_name(&c, p, n)?;
            let cbor = c.data().current(&name)?.to_cbor();
            let bytes = sojourn_policy::canonical::encode(&cbor)
                .map_err(|e| fault(format!("field_get_cbor: {e}")))?;
            write_out(&mut c, out, cap, &bytes)
        },
    )?;
    l.func_wrap(
        m,
        "field_set_i64",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, v: i64| {
            let name = read_name(&c, p, n)?;
            c.data_mut().stage(name, |ty| match ty {
                FieldType::Int { .. } => Ok(Value::Int(v)),
                t => Err(wrong(t, "int")),
            })
        },
    )?;
    l.func_wrap(
        m,
        "field_set_bool",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, v: i32| {
            let name = read_name(&c, p, n)?;
            c.data_mut().stage(name, |ty| match ty {
                FieldType::Bool => Ok(Value::Bool(v != 0)),
                t => Err(wrong(t, "bool")),
            })
        },
    )?;
    l.func_wrap(
        m,
        "field_set_bytes",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, ptr: i32, len: i32| {
            let name = read_name(&c, p, n)?;
            let bytes = read(&c, ptr, len, 1 << 20)?;
            c.data_mut().stage(name, |ty| match ty {
                FieldType::Bytes { .. } => Ok(Value::Bytes(bytes)),
                FieldType::String { .. } => String::from_utf8(bytes)
                    .map(Value::Str)
                    .map_err(|_| "string is not UTF-8".to_string()),
                FieldType::Enum { .. } => String::from_utf8(bytes)
                    .map(Value::Enum)
                    .map_err(|_| "enum variant is not UTF-8".to_string()),
                t => Err(wrong(t, "bytes")),
            })
        },
    )?;
    l.func_wrap(
        m,
        "field_set_cbor",
        |mut c: Caller<'_, HostState>, p: i32, n: i32, ptr: i32, len: i32| {
            let name = read_name(&c, p, n)?;
            let bytes = read(&c, ptr, len, MAX_CBOR)?;
            c.data_mut().stage(name, |ty| {
                let mut r = bytes.as_slice();
                let v: ciborium::Value =
                    ciborium::from_reader(&mut r).map_err(|e| format!("malformed CBOR: {e}"))?;
                if !r.is_empty() {
                    return Err("trailing bytes after the CBOR value".into());
                }
                Value::from_cbor(&v, ty)
            })
        },
    )?;
    l.func_wrap(m, "msg_len", |c: Caller<'_, HostState>| {
        Ok(
            match c.data().txn.as_ref().and_then(|t| t.message.as_ref()) {
                Some(msg) => i32::try_from(msg.len()).unwrap_or(i32::MAX),
                None => -1,
            },
        )
    })?;
    l.func_wrap(
        m,
        "msg_read",
        |mut c: Caller<'_, HostState>, out: i32, cap: i32| {
            let Some(msg) = c.data().txn.as_ref().and_then(|t| t.message.clone()) else {
                return Ok(-1);
            };
            write_out(&mut c, out, cap, &msg)
        },
    )?;
    l.func_wrap(
        m,
        "emit",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
            let max = c.data().descriptor.cycle.max_message_bytes as usize;
            let bytes = read(&c, ptr, len, max)?;
            let txn = c.data_mut().txn()?;
            if txn.emitted.len() >= MAX_EMITS {
                return Err(fault(format!(
                    "more than {MAX_EMITS} messages emitted in one entry"
                )));
            }
            txn.emitted.push(bytes);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "log",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            let max = usize::try_from(len).unwrap_or(0).min(MAX_LOG_LINE);
            let bytes = read(&c, ptr, i32::try_from(max).unwrap_or(0), MAX_LOG_LINE)?;
            let level = match level {
                0 => "error",
                1 => "warn",
                2 => "info",
                _ => "debug",
            };
            let line = format!("{level}: {}", String::from_utf8_lossy(&bytes));
            let txn = c.data_mut().txn()?;
            if txn.logs.len() < MAX_LOGS {
                txn.logs.push(line);
            } else {
                txn.logs_dropped += 1;
            }
            Ok(())
        },
    )?;
    l.func_wrap(m, "now", |mut c: Caller<'_, HostState>| {
        Ok(c.data_mut().txn()?.now_ms)
    })?;
    l.func_wrap(
        m,
        "random",
        |mut c: Caller<'_, HostState>, out: i32, len: i32| {
            let n = usize::try_from(len).map_err(|_| fault("negative length"))?;
            if n > MAX_RANDOM_CALL {
                return Err(fault(format!(
                    "random: at most {MAX_RANDOM_CALL} bytes per call"
                )));
            }
            let txn = c.data_mut().txn()?;
            let drawn = txn.random_drawn + n as u32;
            if drawn > MAX_RANDOM_ENTRY {
                return Err(fault(format!(
                    "random: at most {MAX_RANDOM_ENTRY} bytes per entry"
                )));
            }
            let mut buf = vec![0u8; n];
            random_bytes(&txn.seed, txn.seq, txn.random_drawn, &mut buf);
            txn.random_drawn = drawn;
            write_out(&mut c, out, len, &buf).map(|_| ())
        },
    )?;
    l.func_wrap(
        m,
        "last_rejection",
        |mut c: Caller<'_, HostState>, out: i32, cap: i32| match c.data().last_rejection.clone() {
            Some(reason) => write_out(&mut c, out, cap, reason.as_bytes()),
            None => Ok(0),
        },
    )?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_stream_is_the_same_however_it_is_drawn() {
        let seed = [5u8; 32];
        let mut whole = [0u8; 100];
        random_bytes(&seed, 3, 0, &mut whole);
        let mut parts = [0u8; 100];
        let (a, rest) = parts.split_at_mut(7);
        let (b, c) = rest.split_at_mut(40);
        random_bytes(&seed, 3, 0, a);
        random_bytes(&seed, 3, 7, b);
        random_bytes(&seed, 3, 47, c);
        assert_eq!(whole, parts);
        let mut other = [0u8; 100];
        random_bytes(&seed, 4, 0, &mut other);
        assert_ne!(whole, other, "another entry, another stream");
    }
}
