//! `sojourn-migration`: moving an object to another host, whole, only to a host that proves by
//! attestation that it honours the object's policy. See docs/migration.md.
//!
//! - [`protocol`]: the source and destination state machines (pure: messages in, messages and
//!   durable state changes out) and the argument why no fork and no loss can happen.
//! - [`binding`]: the [`OfferBinding`] the destination's evidence commits to (attempt, object,
//!   challenge, TLS channel, HPKE key, runtime identity) and its report data.
//! - [`appraise`]: [`appraise_destination`], the destination's evidence against the object's
//!   own `[policy.migration]`; the only maker of a [`MigrationTicket`].
//! - [`package`]: the object sealed with HPKE (RFC 9180) to a ticket's key ([`seal`]) and
//!   opened by the destination ([`open`]).
//!
//! No I/O: the host persists states, moves messages over TLS, and passes in time. The one
//! exception is randomness for keys and seals, drawn from the OS (`getrandom`) and failing
//! with an error, never a panic.
#![forbid(unsafe_code)]

pub mod appraise;
pub mod binding;
pub mod package;
pub mod protocol;

pub use appraise::{
    appraise_destination, reference_values, trust_score, MigrationRefusal, MigrationTicket,
};
pub use binding::{
    fresh_attempt, BindingError, OfferBinding, RandomnessError, RuntimeIdentity,
    TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN,
};
pub use package::{open, seal, DestinationKey, ObjectBundle, PackageError, SealedObject};
