//! Object packages on disk: a directory with `object.toml` and the module it names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sojourn_policy::{Descriptor, DescriptorSource};

/// An object package read from disk (or embedded in the binary).
#[derive(Debug, Clone)]
pub struct ObjectPackage {
    /// Where it came from (for messages).
    pub origin: String,
    /// The parsed descriptor, bound to the module's digest.
    pub descriptor: Descriptor,
    /// The module bytes.
    pub module: Vec<u8>,
}

impl ObjectPackage {
    /// Reads `<dir>/object.toml` and the module it names.
    pub fn load(dir: &Path) -> Result<ObjectPackage> {
        let toml_path = dir.join("object.toml");
        let text = std::fs::read_to_string(&toml_path)
            .with_context(|| format!("cannot read {}", toml_path.display()))?;
        let src = DescriptorSource::parse_toml(&toml_path.display().to_string(), &text)?;
        let rel = Path::new(&src.module_path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!(
                "{}: object.module: a path inside the object directory, found {:?}",
                toml_path.display(),
                src.module_path
            );
        }
        let module_path: PathBuf = dir.join(rel);
        let module = std::fs::read(&module_path).with_context(|| {
            format!(
                "{}: object.module: cannot read {}",
                toml_path.display(),
                module_path.display()
            )
        })?;
        let descriptor = src.with_module(&module)?;
        Ok(ObjectPackage {
            origin: dir.display().to_string(),
            descriptor,
            module,
        })
    }

    /// A package from embedded bytes.
    pub fn embedded(name: &str, toml: &str, module: &[u8]) -> Result<ObjectPackage> {
        let descriptor = sojourn_policy::parse_descriptor(
            &format!("(embedded) {name}/object.toml"),
            toml,
            module,
        )?;
        Ok(ObjectPackage {
            origin: format!("(embedded) {name}"),
            descriptor,
            module: module.to_vec(),
        })
    }
}

/// The sample objects built into the binary, for `sojourn demo`.
pub fn embedded_examples() -> Result<Vec<ObjectPackage>> {
    Ok(vec![
        ObjectPackage::embedded(
            "counter",
            include_str!("../../examples/counter/object.toml"),
            include_bytes!("../../examples/counter/counter.wasm"),
        )?,
        ObjectPackage::embedded(
            "thermostat",
            include_str!("../../examples/thermostat/object.toml"),
            include_bytes!("../../examples/thermostat/thermostat.wasm"),
        )?,
        ObjectPackage::embedded(
            "escrow",
            include_str!("../../examples/escrow/object.toml"),
            include_bytes!("../../examples/escrow/escrow.wasm"),
        )?,
    ])
}

/// A deliberately hostile object (an endless loop) for the demo's containment story.
pub fn runaway_example() -> Result<ObjectPackage> {
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "sojourn_tick") (param i64) (result i64) (loop $l (br $l)) (i64.const 0)))"#;
    // Hand-assembled binary of the module above (no WAT parser in the binary).
    let _ = wat;
    let wasm: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x06, 0x01, 0x60, 0x01, 0x7e, 0x01, 0x7e, // type: (i64) -> i64
        0x03, 0x02, 0x01, 0x00, // function 0 : type 0
        0x05, 0x03, 0x01, 0x00, 0x01, // memory min 1
        0x07, 0x19, 0x02, // exports (2)
        0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, //
        0x0c, b's', b'o', b'j', b'o', b'u', b'r', b'n', b'_', b't', b'i', b'c', b'k', 0x00, 0x00,
        0x0a, 0x0b, 0x01, 0x09, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x42, 0x00, 0x0b, // code
    ];
    ObjectPackage::embedded(
        "runaway",
        "[object]\nname = \"runaway\"\nversion = 1\nmodule = \"runaway.wasm\"\n\
         [limits]\nfuel_per_entry = 5000000\nmemory_pages_max = 1\n[schema.fields]\n",
        wasm,
    )
}
