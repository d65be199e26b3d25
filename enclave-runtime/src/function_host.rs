//! The baseline Sojourn is measured against: what a serverless function host does per event.
//! New store, instantiate from a pre-instantiated module on wasmtime's pooling allocator,
//! load the object's state from a key-value map, call, validate, store the state back, drop.
//! It enforces the same schema and policy as a resident object, so a benchmark compares the
//! execution models and nothing else. Used by `benches/resident_vs_per_request.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use sojourn_policy::canonical;
use sojourn_policy::schema::{fields_from_cbor, fields_to_cbor};
use sojourn_policy::{Descriptor, EntryPoint};
use wasmtime::{InstanceAllocationStrategy, InstancePre, PoolingAllocationConfig, Store};

use crate::abi::{linker, HostState, Txn};
use crate::engine::{deterministic_config, ObjectEngine, EPOCH_MS};
use crate::record::Outcome;
use crate::RuntimeError;

/// A per-request host for one object kind.
pub struct FunctionHost {
    engine: ObjectEngine,
    pre: InstancePre<HostState>,
    descriptor: Arc<Descriptor>,
}

impl std::fmt::Debug for FunctionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FunctionHost")
    }
}

impl FunctionHost {
    /// Compiles `wasm` on a pooling-allocator engine and pre-instantiates it.
    pub fn new(wasm: &[u8], descriptor: Descriptor) -> Result<FunctionHost, RuntimeError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_memories(16)
            .total_tables(16)
            .total_core_instances(16)
            .max_memory_size((descriptor.limits.memory_pages_max as usize) * 65536);
        let mut config = deterministic_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = ObjectEngine::with_config(config)?;
        let module = engine.compile(wasm)?;
        let pre = linker(engine.wasmtime())
            .and_then(|l| l.instantiate_pre(module.module()))
            .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
        Ok(FunctionHost {
            engine,
            pre,
            descriptor: Arc::new(descriptor),
        })
    }

    /// Handles one tick event for the object stored under `key` in `kv`.
    pub fn handle_tick(
        &self,
        kv: &mut HashMap<String, Vec<u8>>,
        key: &str,
        now_ms: i64,
        seed: [u8; 32],
    ) -> Result<Outcome, RuntimeError> {
        let fields = match kv.get(key) {
            Some(bytes) => {
                let v = canonical::decode(bytes)
                    .map_err(|e| RuntimeError::Instantiate(format!("stored state: {e}")))?;
                fields_from_cbor(&v, &self.descriptor.schema)
                    .map_err(|e| RuntimeError::Instantiate(format!("stored state: {e}")))?
            }
            None => self.descriptor.initial_state(),
        };
        let mut store = Store::new(
            self.engine.wasmtime(),
            HostState::new(self.descriptor.clone(), fields),
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store
            .set_fuel(self.descriptor.limits.fuel_per_entry)
            .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
        store.set_epoch_deadline((self.descriptor.limits.time_per_entry_ms / EPOCH_MS).max(1));
        store.epoch_deadline_trap();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        let tick = instance
            .get_typed_func::<i64, i64>(&mut store, "sojourn_tick")
            .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
        store.data_mut().txn = Some(Txn::new(EntryPoint::Tick, now_ms, 0, seed, None));
        if let Err(e) = tick.call(&mut store, now_ms) {
            return Ok(Outcome::Faulted {
                reason: e.to_string(),
            });
        }
        let st = store.data_mut();
        let Some(txn) = st.txn.take() else {
            return Ok(Outcome::Faulted {
                reason: "transaction lost".into(),
            });
        };
        if let Some(v) = txn.write_error {
            return Ok(Outcome::Rejected {
                reason: v.to_string(),
            });
        }
        match self
            .descriptor
            .check_transition(EntryPoint::Tick, &st.fields, &txn.writes)
        {
            Ok(after) => {
                let bytes = canonical::encode(&fields_to_cbor(&after))
                    .map_err(|e| RuntimeError::Instantiate(e.to_string()))?;
                kv.insert(key.to_string(), bytes);
                Ok(Outcome::Accepted)
            }
            Err(v) => Ok(Outcome::Rejected {
                reason: v.to_string(),
            }),
        }
    }
}
