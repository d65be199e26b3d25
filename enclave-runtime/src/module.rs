//! Load-time checks and instrumentation of an object's module.
//!
//! The module must import only from `sojourn`, define exactly one 32-bit unshared memory
//! exported as `memory`, and never mutate a table. Every mutable global it defines is
//! exported as `__sojourn_global_<index>` (as Wizer does) so a snapshot can capture it. All
//! other sections are copied byte for byte.

use wasm_encoder::{ExportKind as EncKind, ExportSection, RawSection, Section};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef};

/// The import module name of the object ABI.
pub const IMPORT_MODULE: &str = "sojourn";
/// The export prefix for instrumented mutable globals.
pub const GLOBAL_EXPORT_PREFIX: &str = "__sojourn_global_";
/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Why a module cannot be an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// Not a valid WebAssembly module.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// Larger than [`MAX_MODULE_BYTES`].
    #[error("module is {0} bytes, more than the {MAX_MODULE_BYTES} accepted")]
    TooLarge(usize),
    /// Imports something outside the object ABI.
    #[error("imports `{module}::{name}`: objects may import only from module `sojourn` (no WASI, no ambient authority)")]
    ForeignImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// Memory layout outside what objects may use.
    #[error("memory: {0}")]
    Memory(String),
    /// A table-mutating instruction.
    #[error(
        "function {func} uses `{op}`: tables may not be mutated (snapshots do not carry tables)"
    )]
    MutableTable {
        /// Function index (in the module's function index space).
        func: u32,
        /// The instruction.
        op: &'static str,
    },
    /// A required export is missing or of the wrong kind.
    #[error("missing export: {0}")]
    MissingExport(String),
}

/// A checked and instrumented module, ready to compile.
#[derive(Debug, Clone)]
pub struct InstrumentedModule {
    /// The instrumented bytes (what is compiled).
    pub bytes: Vec<u8>,
    /// Indices of the defined mutable globals that were exported.
    pub mutable_globals: Vec<u32>,
    /// Whether the module exports `sojourn_on_message`.
    pub accepts_messages: bool,
    /// Whether the module exports `sojourn_init`.
    pub has_init: bool,
}

fn inv(e: impl std::fmt::Display) -> ModuleError {
    ModuleError::Invalid(e.to_string())
}

/// Checks `wasm` against the object ABI's module rules and instruments it.
pub fn instrument(wasm: &[u8]) -> Result<InstrumentedModule, ModuleError> {
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge(wasm.len()));
    }
    // Full validation first, so that everything below sees a well-formed module.
    let mut validator = wasmparser::Validator::new();
    validator.validate_all(wasm).map_err(inv)?;

    let mut imported_globals = 0u32;
    let mut imported_funcs = 0u32;
    let mut memories = 0u32;
    let mut mutable_globals = Vec::new();
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    let mut func_index = 0u32;
    // Raw sections in order; the export section is rebuilt and placed where it belongs.
    let mut sections: Vec<(u8, Vec<u8>)> = Vec::new();

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(inv)?;
        match &payload {
            Payload::ImportSection(reader) => {
                for imp in reader.clone().into_imports() {
                    let imp = imp.map_err(inv)?;
                    if imp.module != IMPORT_MODULE {
                        return Err(ModuleError::ForeignImport {
                            module: imp.module.to_string(),
                            name: imp.name.to_string(),
                        });
                    }
                    match imp.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => imported_funcs += 1,
                        TypeRef::Global(_) => imported_globals += 1,
                        TypeRef::Memory(_) => {
                            return Err(ModuleError::Memory(
                                "the memory must be defined by the module, not imported".into(),
                            ))
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for mem in reader.clone() {
                    let mem = mem.map_err(inv)?;
                    if mem.memory64 || mem.shared {
                        return Err(ModuleError::Memory(
                            "only 32-bit, unshared memory is supported".into(),
                        ));
                    }
                    memories += 1;
                }
            }
            Payload::GlobalSection(reader) => {
                for (i, g) in reader.clone().into_iter().enumerate() {
                    let g = g.map_err(inv)?;
                    if g.ty.mutable {
                        let idx = imported_globals
                            + u32::try_from(i).map_err(|_| inv("too many globals"))?;
                        mutable_globals.push(idx);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for e in reader.clone() {
                    let e = e.map_err(inv)?;
                    if e.name.starts_with(GLOBAL_EXPORT_PREFIX) {
                        return Err(inv(format!("export name `{}` is reserved", e.name)));
                    }
                    exports.push((e.name.to_string(), e.kind, e.index));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(inv)?;
                while !ops.eof() {
                    let op = match ops.read().map_err(inv)? {
                        Operator::TableSet { .. } => Some("table.set"),
                        Operator::TableGrow { .. } => Some("table.grow"),
                        Operator::TableFill { .. } => Some("table.fill"),
                        Operator::TableCopy { .. } => Some("table.copy"),
                        Operator::TableInit { .. } => Some("table.init"),
                        Operator::ElemDrop { .. } => Some("elem.drop"),
                        _ => None,
                    };
                    if let Some(op) = op {
                        return Err(ModuleError::MutableTable {
                            func: imported_funcs + func_index,
                            op,
                        });
                    }
                }
                func_index += 1;
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            let body = wasm.get(range).ok_or_else(|| inv("section out of range"))?;
            sections.push((id, body.to_vec()));
        }
    }

    if memories != 1 {
        return Err(ModuleError::Memory(format!(
            "exactly one memory is required, found {memories}"
        )));
    }
    let has =
        |name: &str, kind: ExternalKind| exports.iter().any(|(n, k, _)| n == name && *k == kind);
    if !has("memory", ExternalKind::Memory) {
        return Err(ModuleError::MissingExport(
            "`memory` (the object's linear memory)".into(),
        ));
    }
    if !has("sojourn_tick", ExternalKind::Func) {
        return Err(ModuleError::MissingExport("function `sojourn_tick`".into()));
    }

    let mut export_section = ExportSection::new();
    for (name, kind, index) in &exports {
        let k = match kind {
            ExternalKind::Func | ExternalKind::FuncExact => EncKind::Func,
            ExternalKind::Table => EncKind::Table,
            ExternalKind::Memory => EncKind::Memory,
            ExternalKind::Global => EncKind::Global,
            ExternalKind::Tag => EncKind::Tag,
        };
        export_section.export(name, k, *index);
    }
    for g in &mutable_globals {
        export_section.export(&format!("{GLOBAL_EXPORT_PREFIX}{g}"), EncKind::Global, *g);
    }

    // Re-assemble: every section verbatim, the export section replaced (or inserted after the
    // global section, before start/element/code: its place in the section order).
    const EXPORT_ID: u8 = 7;
    let order = |id: u8| -> u8 {
        // Section ordering per the spec (custom sections keep their place).
        match id {
            1 => 1,   // type
            2 => 2,   // import
            3 => 3,   // function
            4 => 4,   // table
            5 => 5,   // memory
            13 => 6,  // tag
            6 => 7,   // global
            7 => 8,   // export
            8 => 9,   // start
            9 => 10,  // element
            12 => 11, // data count
            10 => 12, // code
            11 => 13, // data
            _ => 0,
        }
    };
    let mut out = Vec::with_capacity(wasm.len() + 64);
    out.extend_from_slice(wasm.get(..8).ok_or_else(|| inv("short header"))?);
    let mut placed = false;
    for (id, body) in &sections {
        if *id == EXPORT_ID {
            export_section.append_to(&mut out);
            placed = true;
            continue;
        }
        if !placed && *id != 0 && order(*id) > order(EXPORT_ID) {
            export_section.append_to(&mut out);
            placed = true;
        }
        RawSection {
            id: *id,
            data: body,
        }
        .append_to(&mut out);
    }
    if !placed {
        export_section.append_to(&mut out);
    }
    wasmparser::Validator::new()
        .validate_all(&out)
        .map_err(|e| inv(format!("instrumentation produced an invalid module: {e}")))?;
    Ok(InstrumentedModule {
        bytes: out,
        mutable_globals,
        accepts_messages: has("sojourn_on_message", ExternalKind::Func),
        has_init: has("sojourn_init", ExternalKind::Func),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_mutable_globals_and_keeps_the_rest() {
        let wasm = wat::parse_str(
            r#"(module
                (global $g (mut i32) (i32.const 7))
                (global $c i64 (i64.const 1))
                (global $h (mut i64) (i64.const 9))
                (memory (export "memory") 1)
                (func (export "sojourn_tick") (param i64) (result i64) (i64.const -1)))"#,
        )
        .unwrap();
        let m = instrument(&wasm).unwrap();
        assert_eq!(m.mutable_globals, vec![0, 2]);
        assert!(!m.accepts_messages);
        let names: Vec<String> = Parser::new(0)
            .parse_all(&m.bytes)
            .filter_map(|p| match p.unwrap() {
                Payload::ExportSection(r) => Some(
                    r.into_iter()
                        .map(|e| e.unwrap().name.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            names,
            vec![
                "memory",
                "sojourn_tick",
                "__sojourn_global_0",
                "__sojourn_global_2"
            ]
        );
    }

    #[test]
    fn refuses_what_objects_may_not_do() {
        let cases = [
            (
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1) (func (export "sojourn_tick") (param i64) (result i64) (i64.const 0)))"#,
                "wasi_snapshot_preview1::fd_write",
            ),
            (
                r#"(module (func (export "sojourn_tick") (param i64) (result i64) (i64.const 0)))"#,
                "exactly one memory",
            ),
            (
                r#"(module (memory 1) (func (export "sojourn_tick") (param i64) (result i64) (i64.const 0)))"#,
                "`memory`",
            ),
            (r#"(module (memory (export "memory") 1))"#, "sojourn_tick"),
            (
                r#"(module (memory (export "memory") 1) (table 1 funcref)
                   (func (export "sojourn_tick") (param i64) (result i64)
                     (table.set 0 (i32.const 0) (ref.null func)) (i64.const 0)))"#,
                "table.set",
            ),
        ];
        for (src, needle) in cases {
            let err = instrument(&wat::parse_str(src).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(matches!(
            instrument(b"\0asm\x01\0\0\0\x05"),
            Err(ModuleError::Invalid(_))
        ));
        assert!(matches!(
            instrument(b"garbage"),
            Err(ModuleError::Invalid(_))
        ));
    }
}
