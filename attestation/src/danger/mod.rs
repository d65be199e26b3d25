//! Insecure attestation paths, named as such. Nothing here is chosen automatically: the
//! host uses it only when its configuration says so, and default reference values refuse
//! what it produces.

pub mod software;
