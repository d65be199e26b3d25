//! The deterministic wasmtime engine objects run on, and compiled object modules.

use std::sync::Arc;

use wasmtime::{Config, Engine, Module};

use crate::module::{instrument, InstrumentedModule, ModuleError};
use crate::RuntimeError;

/// How often (ms) the host is expected to call [`ObjectEngine::tick_epoch`]. The wall-clock
/// backstop of an entry is `time_per_entry_ms / EPOCH_MS` epochs.
pub const EPOCH_MS: u64 = 5;

/// A wasmtime engine configured for deterministic, contained objects.
#[derive(Clone)]
pub struct ObjectEngine {
    engine: Engine,
    /// Whether checkpoints find written memory with the kernel's write tracking where it
    /// has it (`sojourn_mem::WriteTracker`), instead of a copy of memory to compare with.
    pub(crate) write_tracking: bool,
    /// Whether memories are allocated on demand (wasmtime's default allocator, which unmaps
    /// a memory when it is dropped): only then may a restore move pages into a memory
    /// (`ResidentObject::restore_moving`). Known for [`ObjectEngine::new`]; a caller's config
    /// may choose another allocator.
    pub(crate) memories_on_demand: bool,
}

impl std::fmt::Debug for ObjectEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectEngine")
    }
}

/// The engine configuration every object runs under (exposed so benchmarks compare like with
/// like).
pub fn deterministic_config() -> Config {
    // Threads and shared memory are not compiled in (no `threads` feature), so they are off.
    let mut c = Config::new();
    c.consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .max_wasm_stack(512 * 1024);
    c
}

impl ObjectEngine {
    /// The same engine, its objects' checkpoints comparing memory with a copy even where the
    /// kernel could track writes (for tests of that path, and hosts that want it).
    pub fn without_write_tracking(mut self) -> ObjectEngine {
        self.write_tracking = false;
        self
    }

    /// A new engine with [`deterministic_config`].
    pub fn new() -> Result<ObjectEngine, RuntimeError> {
        let mut engine = Self::with_config(deterministic_config())?;
        engine.memories_on_demand = true;
        Ok(engine)
    }

    /// A new engine from a config (which must keep fuel and epoch interruption on).
    pub fn with_config(config: Config) -> Result<ObjectEngine, RuntimeError> {
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(ObjectEngine {
            engine,
            write_tracking: true,
            memories_on_demand: false,
        })
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    /// Advances the epoch: the host calls this every [`EPOCH_MS`] from a timer thread.
    pub fn tick_epoch(&self) {
        self.engine.increment_epoch();
    }

    /// Checks, instruments and compiles an object's module.
    pub fn compile(&self, wasm: &[u8]) -> Result<ObjectModule, RuntimeError> {
        let inst = instrument(wasm)?;
        let module = Module::new(&self.engine, &inst.bytes)
            .map_err(|e| RuntimeError::Module(ModuleError::Invalid(e.to_string())))?;
        Ok(ObjectModule {
            inner: Arc::new(Compiled {
                module,
                original: wasm.to_vec(),
                info: inst,
            }),
        })
    }
}

struct Compiled {
    module: Module,
    original: Vec<u8>,
    info: InstrumentedModule,
}

/// A compiled, instrumented object module (cheap to clone).
#[derive(Clone)]
pub struct ObjectModule {
    inner: Arc<Compiled>,
}

impl std::fmt::Debug for ObjectModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectModule")
            .field("bytes", &self.inner.original.len())
            .finish()
    }
}

impl ObjectModule {
    /// The compiled module.
    pub fn module(&self) -> &Module {
        &self.inner.module
    }
    /// The module as the author shipped it (what the descriptor's digest covers).
    pub fn original_bytes(&self) -> &[u8] {
        &self.inner.original
    }
    /// What instrumentation found.
    pub fn info(&self) -> &InstrumentedModule {
        &self.inner.info
    }
}
