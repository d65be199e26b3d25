//! The on-disk layout: file names, table definitions and key encodings.
//!
//! Public for tests and tools that inspect or (in tests) tamper with the file directly;
//! not part of the stable API. Every table maps `&[u8]` keys to `&[u8]` sealed values.

pub use redb;
use redb::TableDefinition;

use crate::error::Table;
use crate::ObjectKey;

/// The store file in the data directory.
pub const STORE_FILE: &str = "store.redb";
/// The high-water-mark file next to it.
pub const HWM_FILE: &str = "store.hwm";

/// A table of sealed values.
pub type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Images, keyed by object id.
pub const IMAGES: Def = TableDefinition::new("images");
/// Heads, keyed by object id.
pub const HEADS: Def = TableDefinition::new("heads");
/// Chunks, keyed by object id ‖ chunk index (u32 BE).
pub const CHUNKS: Def = TableDefinition::new("chunks");
/// Lineage segments, keyed by object id ‖ segment number (u64 BE).
pub const LINEAGE: Def = TableDefinition::new("lineage");
/// Pending messages, keyed by object id ‖ arrival number (u64 BE).
pub const MESSAGES: Def = TableDefinition::new("messages");
/// Memory-image segments, keyed by object id ‖ segment number (u32 BE).
pub const MEMORY: Def = TableDefinition::new("memory");
/// Memory-image file records, keyed by object id.
pub const MEMORY_FILES: Def = TableDefinition::new("memory_files");
/// The directory, next to the store file, of the memory-image files.
pub const MEMORY_DIR: &str = "memory";
/// The meta record, under [`META_KEY`].
pub const META: Def = TableDefinition::new("meta");
/// The key of the meta record.
pub const META_KEY: &[u8] = b"meta";

/// The object tables, in the order `open` verifies them (images first).
pub const OBJECT_TABLES: [Table; 7] = [
    Table::Images,
    Table::Heads,
    Table::Chunks,
    Table::Lineage,
    Table::Messages,
    Table::Memory,
    Table::MemoryFiles,
];

/// The definition of `table`.
pub const fn definition(table: Table) -> Def {
    match table {
        Table::Images => IMAGES,
        Table::Heads => HEADS,
        Table::Chunks => CHUNKS,
        Table::Lineage => LINEAGE,
        Table::Messages => MESSAGES,
        Table::Memory => MEMORY,
        Table::MemoryFiles => MEMORY_FILES,
        Table::Meta => META,
    }
}

/// Key of an image or head.
pub fn object_key(id: &ObjectKey) -> [u8; 16] {
    *id
}

/// Key of a chunk or a memory-image segment.
pub fn chunk_key(id: &ObjectKey, index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Key of a lineage segment or pending message.
pub fn indexed_key(id: &ObjectKey, index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(id);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The file name of a memory image: object id and the image's random name, in hex.
pub fn memory_file_name(id: &ObjectKey, name: &[u8; 16]) -> String {
    format!("{}-{}.img", hex::encode(id), hex::encode(name))
}

/// Splits a key of `table` into object id and index; `None` if it has the wrong length.
pub fn parse_key(table: Table, key: &[u8]) -> Option<(ObjectKey, Option<u64>)> {
    if table == Table::Meta || key.len() != 16 + table.index_len() {
        return None;
    }
    let (id, index) = key.split_at(16);
    let id: ObjectKey = id.try_into().ok()?;
    let index = match index.len() {
        0 => None,
        4 => Some(u64::from(u32::from_be_bytes(index.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(index.try_into().ok()?)),
        _ => return None,
    };
    Some((id, index))
}
