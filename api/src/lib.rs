//! The Sojourn host API: HTTP/JSON over TLS 1.3, the server side (routing, authentication,
//! errors) over a [`HostControl`] that the host implements, and the client the `sojourn` CLI
//! uses. This crate knows nothing of wasmtime or of how the host runs objects.

pub mod cli;
pub mod client;
pub mod config;
mod fsutil;
pub mod identity;
pub mod paths;
pub mod server;
mod tls;
pub mod types;

pub use client::{
    package_parts, package_parts_in, Client, ClientError, PackageParts, PackagePartsSender,
};
pub use config::{default_data_dir, ClientConfig, ConfigError};
pub use identity::{server_tls_config, IdentityError, LocalIdentity, ServerIdentity};
pub use server::{serve, serve_with, Credential, Role, ServeOptions};
pub use types::*;

/// A stable error code (the `code` of [`ErrorBody`]) with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request body or a parameter is malformed.
    InvalidRequest,
    /// 422: the object package does not parse or check.
    InvalidPackage,
    /// 401: no or wrong credentials.
    Unauthenticated,
    /// 403: the credentials do not allow this call.
    Forbidden,
    /// 404: no such object.
    NotFound,
    /// 409: the object is in a state that refuses this call (for example already suspended,
    /// or already deployed).
    Conflict,
    /// 429: the object's inbox is full.
    InboxFull,
    /// 413: the request body is larger than the route accepts (64 MiB for a deploy, 1 MiB
    /// otherwise).
    TooLarge,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 503: the store does not accept commits.
    Unavailable,
    /// 500: a fault of the host.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidPackage => "invalid_package",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InboxFull => "inbox_full",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status it is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidPackage => 422,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::InboxFull => 429,
            ErrorCode::TooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidPackage,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::InboxFull,
        ErrorCode::TooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code with this wire name, if it is one this version knows (a client may meet
    /// newer codes: keep the string then).
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// An error a [`HostControl`] call returns; the server answers it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// For a person.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> ErrorBody {
        ErrorBody {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
        }
    }
}

/// The order of a migration package's bytes in a request body, named by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackageOrder {
    /// As the package lies ([`paths::OCTET_STREAM`]).
    #[default]
    Layout,
    /// Each segment's tag right after the segment, no tag table
    /// ([`paths::PACKAGE_TAG_AFTER_SEGMENT`]; `sojourn_migration::package::SendOrder`).
    TagAfterSegment,
}

impl PackageOrder {
    /// The content type that names this order.
    pub fn content_type(self) -> &'static str {
        match self {
            PackageOrder::Layout => paths::OCTET_STREAM,
            PackageOrder::TagAfterSegment => paths::PACKAGE_TAG_AFTER_SEGMENT,
        }
    }

    /// The order a media type (without parameters) names; `None` for any other type.
    pub fn of_media_type(media_type: &str) -> Option<PackageOrder> {
        let m = media_type.trim();
        [PackageOrder::Layout, PackageOrder::TagAfterSegment]
            .into_iter()
            .find(|o| m.eq_ignore_ascii_case(o.content_type()))
    }
}

/// Where a migration package's bytes go while they arrive, instead of into a buffer of the
/// server's ([`HostControl::migration_package_spool`]). Called from the server's async tasks:
/// `push` must not block.
pub trait PackageSpool: Send {
    /// The next bytes of the body, in order.
    fn push(&mut self, bytes: bytes::Bytes);
    /// The spool itself, for the host that made it to take back.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// What a host offers the API. Methods may block (a send waits for its group commit, a
/// deploy instantiates the module): the server calls them on the blocking pool.
pub trait HostControl: Send + Sync + 'static {
    /// Checks, stores durably and starts an object; returns it once its creation transition
    /// is committed.
    fn deploy(&self, request: DeployRequest) -> Result<ObjectInfo, ApiError>;
    /// All resident objects, ordered by id.
    fn list(&self) -> Result<Vec<ObjectInfo>, ApiError>;
    /// One object in detail. `id` is the 32-hex id or a unique prefix of at least 4 hex
    /// characters, or a unique object name.
    fn inspect(&self, id: &str) -> Result<ObjectDetail, ApiError>;
    /// Queues a message; returns once it is durable.
    fn send(&self, id: &str, message: Vec<u8>) -> Result<SendReceipt, ApiError>;
    /// Suspends an object (it keeps its state and inbox; it does not wake).
    fn suspend(&self, id: &str, reason: Option<String>) -> Result<ObjectInfo, ApiError>;
    /// Resumes a suspended object.
    fn resume(&self, id: &str) -> Result<ObjectInfo, ApiError>;
    /// The object's whole committed lineage (the CBOR sequence `sojourn lineage verify`
    /// reads).
    fn lineage(&self, id: &str) -> Result<Vec<u8>, ApiError>;
    /// Liveness and a short summary.
    fn health(&self) -> Health;
    /// Prometheus text exposition (version 0.0.4).
    fn metrics(&self) -> String;

    /// Source side: moves an object to another host (docs/migration.md). Returns when the
    /// attempt is decided, or `pending` when the package may have left and the destination
    /// has not answered yet.
    fn migrate(&self, id: &str, request: MigrateRequest) -> Result<MigrationReport, ApiError> {
        let _ = (id, request);
        Err(not_supported())
    }

    /// Source side: moves every object to one of the destinations (see [`DrainRequest`]).
    fn drain(&self, request: DrainRequest) -> Result<DrainReport, ApiError> {
        let _ = request;
        Err(not_supported())
    }

    /// Destination side: an offer. `channel` is this connection's TLS exporter value
    /// ([`MIGRATION_EXPORTER_LABEL`], 32 bytes, no context), which the evidence must commit to.
    fn migration_offer(
        &self,
        offer: MigrationOffer,
        channel: [u8; 32],
    ) -> Result<MigrationOfferAnswer, ApiError> {
        let _ = (offer, channel);
        Err(not_supported())
    }

    /// Destination side: the sealed package of an attempt (`key` is the hex key id it says it
    /// is sealed to), its bytes in `order`.
    fn migration_package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Vec<u8>,
        order: PackageOrder,
    ) -> Result<MigrationAnswer, ApiError> {
        let _ = (transfer, key, sealed, order);
        Err(not_supported())
    }

    /// Destination side: where the bytes of a package go as they arrive, when the host takes
    /// them itself (a destination that writes the package to disk while it arrives). Asked
    /// before the body is read, for an authenticated peer's request that declares `len`
    /// bytes (within the package limit). `None` (the default): the server reads the body
    /// into a buffer and calls [`HostControl::migration_package`]; else it pushes every byte
    /// to the spool, in order, and calls [`HostControl::migration_package_spooled`] once
    /// exactly `len` bytes have arrived (a body that ends early or runs long is refused and
    /// the spool dropped). `order` is the order the body's bytes come in.
    fn migration_package_spool(
        &self,
        transfer: &str,
        key: &str,
        len: u64,
        order: PackageOrder,
    ) -> Option<Box<dyn PackageSpool>> {
        let _ = (transfer, key, len, order);
        None
    }

    /// [`HostControl::migration_package`] of a package whose every byte went to `spool`, the
    /// one [`HostControl::migration_package_spool`] gave for this request.
    fn migration_package_spooled(
        &self,
        transfer: &str,
        key: &str,
        spool: Box<dyn PackageSpool>,
    ) -> Result<MigrationAnswer, ApiError> {
        let _ = (transfer, key, spool);
        Err(not_supported())
    }

    /// Destination side: "decide now".
    fn migration_status(
        &self,
        request: MigrationStatusRequest,
    ) -> Result<MigrationAnswer, ApiError> {
        let _ = request;
        Err(not_supported())
    }

    /// Destination side: the source will not send a package for this attempt.
    fn migration_refusal(&self, request: MigrationRefusalRequest) -> Result<(), ApiError> {
        let _ = request;
        Err(not_supported())
    }
}

/// The TLS exporter label of the migration channel binding (RFC 8446 §7.5): both ends of a
/// host-to-host connection export 32 bytes with it (no context) and the destination's evidence
/// commits to them. Equal to `sojourn_migration::TLS_EXPORTER_LABEL`.
pub const MIGRATION_EXPORTER_LABEL: &[u8] = b"EXPORTER-sojourn-migration-v1";

fn not_supported() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this host does not support migration",
    )
}
