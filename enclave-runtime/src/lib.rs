//! `sojourn-runtime`: memory-resident WebAssembly objects.
//!
//! - [`ObjectEngine`] compiles modules under a deterministic wasmtime configuration.
//! - [`ResidentObject`] keeps one store and instance alive between entries; every entry
//!   (init, tick, message) is a transaction over the object's canonical fields, validated
//!   against the descriptor it carries, and yields a [`TransitionRecord`].
//! - [`snapshot`] captures an object at a tick boundary and restores it into a fresh engine.
//! - [`WakeQueue`] is the scheduling core: it tells the host which object is due when.
//!
//! No I/O: time, randomness seeds and bytes are passed in by the host.
#![forbid(unsafe_code)]

pub mod abi;
pub mod checkpoint;
pub mod engine;
pub mod function_host;
pub mod module;
pub mod object;
pub mod record;
pub mod schedule;
pub mod snapshot;
mod snapshot_memory;

pub use checkpoint::Checkpoint;
pub use engine::{ObjectEngine, ObjectModule, EPOCH_MS};
pub use module::ModuleError;
pub use object::{InboxError, ResidentObject, Schedule, Status};
pub use record::{Decision, Digest, EntryInputs, ObjectId, Outcome, TransitionRecord};
pub use schedule::WakeQueue;
pub use snapshot::{SnapshotError, SnapshotWriter};
pub use snapshot_memory::SnapshotMemory;

/// Errors of the runtime (as opposed to faults of an object, which are transitions).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine could not be built.
    #[error("engine: {0}")]
    Engine(String),
    /// The module is not a valid object module.
    #[error("module: {0}")]
    Module(#[from] ModuleError),
    /// The descriptor names another module.
    #[error("the descriptor names module sha256 {expected}, but the module is {found}")]
    DescriptorMismatch {
        /// Digest the descriptor names.
        expected: String,
        /// Digest of the module given.
        found: String,
    },
    /// Instantiation failed (imports, start function, initial memory above the cap...).
    #[error("instantiation: {0}")]
    Instantiate(String),
    /// A snapshot could not be restored.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}
