//! `sojourn-policy`: what an object carries and the host enforces on every transition.
//!
//! - [`Descriptor`]: the object's image metadata, parsed from `object.toml`
//!   ([`parse_descriptor`]), encoded as deterministic CBOR ([`Descriptor::encode`]) and
//!   content-addressed ([`Descriptor::digest`]).
//! - [`Schema`] and [`Value`]: typed canonical fields.
//! - [`Descriptor::check_transition`]: schema-bound mutation; a [`Violation`] leaves state
//!   untouched.
//! - [`MigrationRules`]: where the object may move (`[policy.migration]`); enforced by
//!   `sojourn-migration`.
//!
//! This crate does no I/O: callers pass file contents in.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod descriptor;
pub mod expr;
pub mod migration;
pub mod schema;
pub mod trust;

pub use descriptor::{
    parse_descriptor, AttestationRequirements, Cycle, Descriptor, DescriptorError,
    DescriptorSource, EntryPoint, Invariant, Limits, MigrationRules, Policy, Rollback, Violation,
};
pub use migration::{
    MigrationPlatform, MigrationTrust, MinTcb, RuntimeVersion, SnpMinTcb, TdxTcbRule,
};
pub use schema::{state_digest, FieldSpec, FieldType, Fields, Schema, Value};
pub use trust::{FieldTrustRule, TrustPolicy, TrustView};
