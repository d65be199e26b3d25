//! The server: routing, bearer-token authentication, JSON errors, served over TLS 1.3.
//!
//! Every answer that is not a success is an [`ErrorBody`] with the status of its
//! [`ErrorCode`], including unknown routes (404), wrong methods (405), malformed or wrongly
//! typed bodies (400) and bodies over the route's limit (413). [`HostControl`] methods run on
//! the blocking pool. See docs/api.md.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, MatchedPath, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::paths;
use crate::{
    ApiError, DeployRequest, DrainRequest, ErrorBody, ErrorCode, HostControl, MigrateRequest,
    MigrationOffer, MigrationRefusalRequest, MigrationStatusRequest, ObjectList, PackageOrder,
    PackageSpool, SendRequest, SuspendRequest, MIGRATION_EXPORTER_LABEL,
};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// `list`, `inspect`, `lineage`, `health`, `metrics`: nothing that changes an object.
    Read,
    /// Another host, for the host-to-host migration routes only (`/v1/migration/...`): offer,
    /// package, status, refusal. Nothing else (not even reads).
    Peer,
}

impl Role {
    fn allows(self, needed: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Read => needed == Role::Read,
            Role::Peer => needed == Role::Peer,
        }
    }

    /// `admin`, `read` or `peer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
            Role::Peer => "peer",
        }
    }

    /// The role with this wire name (`admin`, `read` or `peer`).
    pub fn from_wire(name: &str) -> Option<Role> {
        [Role::Admin, Role::Read, Role::Peer]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// A bearer token the server accepts, with a name (for logs) and a role.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Shown in logs, never the token.
    pub name: String,
    /// The bearer token: 16 to 512 visible ASCII characters, no spaces.
    pub token: String,
    /// What it may do.
    pub role: Role,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("token", &"(redacted)")
            .field("role", &self.role)
            .finish()
    }
}

impl Credential {
    /// A credential with a fresh random token (32 bytes from the OS, hex: 64 characters).
    pub fn generate(name: impl Into<String>, role: Role) -> std::io::Result<Credential> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Credential {
            name: name.into(),
            token: hex::encode(bytes),
            role,
        })
    }
}

/// Connection handling limits of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers (also the idle time allowed
    /// between requests on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown is signalled, how long requests in flight may take before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// [`serve_with`] with [`ServeOptions::default`].
///
/// How a host wires it (local identity, one admin token, `client.toml` for the CLI):
///
/// ```no_run
/// use std::sync::Arc;
/// use sojourn_api::{ClientConfig, Credential, HostControl, LocalIdentity, Role};
///
/// async fn run_api(
///     control: Arc<dyn HostControl>,
///     shutdown: tokio::sync::oneshot::Receiver<()>,
/// ) -> anyhow::Result<()> {
///     let data_dir = sojourn_api::default_data_dir()?;
///     let identity = LocalIdentity::load_or_create(&data_dir)?;
///     let admin = Credential::generate("local-admin", Role::Admin)?;
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
///     ClientConfig {
///         url: format!("https://127.0.0.1:{}", listener.local_addr()?.port()),
///         ca_pem: identity.ca_pem().to_string(),
///         token: admin.token.clone(),
///     }
///     .write_private(&data_dir.join(sojourn_api::config::CLIENT_CONFIG_FILE))?;
///     let tls = identity.server_tls_config()?;
///     sojourn_api::serve(listener, tls, control, vec![admin], async move {
///         let _ = shutdown.await;
///     })
///     .await?;
///     Ok(())
/// }
/// ```
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    control: Arc<dyn HostControl>,
    credentials: Vec<Credential>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        tls,
        control,
        credentials,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish (at most `options.shutdown_grace`) and returns.
///
/// Each connection is TLS (with `tls`, normally from [`crate::server_tls_config`]) carrying
/// HTTP/1.1. A failed or slow handshake, or a failed accept, is logged and the server goes
/// on. Fails at once (`InvalidInput`) if a credential's token is malformed or two
/// credentials share a token.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    control: Arc<dyn HostControl>,
    credentials: Vec<Credential>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(control, &credentials)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let local = listener.local_addr()?;
    tracing::info!(%local, "sojourn API listening (TLS 1.3)");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let max = options.max_connections.max(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < max => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        router.clone(),
                        options.clone(),
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown grace period over; dropping connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    tracing::info!(%local, "sojourn API stopped");
    Ok(())
}

/// The peer of a request's connection, for logs.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// The TLS exporter value of a request's connection ([`MIGRATION_EXPORTER_LABEL`], 32 bytes,
/// no context): the channel binding a migration offer's evidence commits to. Present on every
/// request of a connection whose exporter could be computed.
#[derive(Clone, Copy)]
struct ChannelBinding([u8; 32]);

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelBinding(..)")
    }
}

/// The exporter of a server-side TLS session, if it can be computed (always, for an
/// established TLS 1.3 session).
fn channel_binding(conn: &rustls::ServerConnection, peer: SocketAddr) -> Option<ChannelBinding> {
    match conn.export_keying_material([0u8; 32], MIGRATION_EXPORTER_LABEL, None) {
        Ok(value) => Some(ChannelBinding(value)),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot compute the TLS exporter of a connection");
            None
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let binding = channel_binding(stream.get_ref().1, peer);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(PeerAddr(peer));
        if let Some(binding) = binding {
            req.extensions_mut().insert(binding);
        }
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

struct AppState {
    control: Arc<dyn HostControl>,
    credentials: Vec<StoredCredential>,
}

/// A credential as the server keeps it: the token only as its SHA-256.
struct StoredCredential {
    name: String,
    role: Role,
    digest: [u8; 32],
}

fn router(control: Arc<dyn HostControl>, credentials: &[Credential]) -> std::io::Result<Router> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let mut stored: Vec<StoredCredential> = Vec::with_capacity(credentials.len());
    for c in credentials {
        let ok =
            (16..=512).contains(&c.token.len()) && c.token.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(invalid(format!(
                "credential {:?}: a token is 16 to 512 visible ASCII characters without spaces",
                c.name
            )));
        }
        let digest: [u8; 32] = Sha256::digest(c.token.as_bytes()).into();
        if stored.iter().any(|s| s.digest == digest) {
            return Err(invalid(format!(
                "credential {:?}: its token is also another credential's",
                c.name
            )));
        }
        stored.push(StoredCredential {
            name: c.name.clone(),
            role: c.role,
            digest,
        });
    }
    let state = Arc::new(AppState {
        control,
        credentials: stored,
    });
    Ok(Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
        .route(paths::OBJECTS, get(list).post(deploy))
        .route(paths::OBJECT, get(inspect))
        .route(paths::MESSAGES, post(send))
        .route(paths::SUSPEND, post(suspend))
        .route(paths::RESUME, post(resume))
        .route(paths::LINEAGE, get(lineage))
        .route(paths::MIGRATE, post(migrate))
        .route(paths::DRAIN, post(drain_objects))
        .route(paths::MIGRATION_OFFER, post(migration_offer))
        .route(paths::MIGRATION_PACKAGE, post(migration_package))
        .route(paths::MIGRATION_STATUS, post(migration_status))
        .route(paths::MIGRATION_REFUSAL, post(migration_refusal))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(axum::middleware::map_response(no_store))
        .with_state(state))
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json(status, &ErrorBody::from(&self));
        if self.code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sojourn\""),
            );
        }
        response
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                r#"{"code":"internal","message":"cannot serialize the response"}"#,
            )
                .into_response()
        }
    }
}

/// The role a handler needs, as a type (so it is part of the handler's signature).
trait Needs: Send + Sync + 'static {
    const ROLE: Role;
}

/// Needs a read or admin token.
struct ReadRole;
impl Needs for ReadRole {
    const ROLE: Role = Role::Read;
}

/// Needs an admin token.
struct AdminRole;
impl Needs for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// Needs a peer or admin token.
struct PeerRole;
impl Needs for PeerRole {
    const ROLE: Role = Role::Peer;
}

/// The connection's [`ChannelBinding`], as an extractor: `500 internal` "no channel binding"
/// when the connection has none. Put it after the [`Caller`], so that authentication answers
/// first.
struct Channel([u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for Channel {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<ChannelBinding>() {
            Some(binding) => Ok(Channel(binding.0)),
            None => {
                tracing::error!(
                    "a migration offer arrived on a connection without a channel binding"
                );
                Err(ApiError::new(ErrorCode::Internal, "no channel binding"))
            }
        }
    }
}

/// An authenticated caller allowed to call the route. As an extractor it runs before the
/// body is read, so an unauthenticated client cannot make the server buffer a body.
struct Caller<R: Needs> {
    /// The credential's name (for the audit log).
    name: String,
    /// The peer address.
    peer: String,
    _role: PhantomData<R>,
}

impl<R: Needs> FromRequestParts<Arc<AppState>> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .map(|p| p.0.to_string())
            .unwrap_or_else(|| "?".to_string());
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string());
        let method = parts.method.clone();
        let refuse = |code: ErrorCode, reason: &str, who: Option<&str>| {
            tracing::warn!(
                %peer,
                %method,
                %route,
                credential = who.unwrap_or("-"),
                reason,
                "request refused"
            );
            ApiError::new(code, reason)
        };
        let token = match bearer(&parts.headers) {
            Ok(t) => t,
            Err(reason) => return Err(refuse(ErrorCode::Unauthenticated, reason, None)),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every credential, in constant time each, without stopping early.
        let mut found: Option<&StoredCredential> = None;
        for c in &state.credentials {
            if bool::from(c.digest.ct_eq(&digest)) {
                found = Some(c);
            }
        }
        let Some(credential) = found else {
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "the bearer token is not valid",
                None,
            ));
        };
        if !credential.role.allows(R::ROLE) {
            let reason = format!(
                "credential {:?} has role {}; this call needs {}",
                credential.name,
                credential.role.as_str(),
                R::ROLE.as_str()
            );
            return Err(refuse(
                ErrorCode::Forbidden,
                &reason,
                Some(&credential.name),
            ));
        }
        Ok(Caller {
            name: credential.name.clone(),
            peer,
            _role: PhantomData,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or("missing Authorization: Bearer <token> header")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not visible ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("the Authorization header is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme is not Bearer");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("the bearer token is empty");
    }
    Ok(token)
}

/// Runs a [`HostControl`] call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => {
            if let Err(e) = &result {
                if e.code == ErrorCode::Internal || e.code == ErrorCode::Unavailable {
                    tracing::error!(code = e.code.as_str(), message = %e.message, "host call failed");
                }
            }
            result
        }
        Err(e) => {
            tracing::error!(error = %e, "host call panicked or was cancelled");
            Err(ApiError::new(
                ErrorCode::Internal,
                "the host failed while handling this request",
            ))
        }
    }
}

/// Largest object id, prefix or name the server passes on.
const MAX_ID_LEN: usize = 256;

fn object_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("bad object id in the path: {}", e.body_text()),
        )
    })?;
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("an object id is 1 to {MAX_ID_LEN} printable characters"),
        ));
    }
    Ok(id)
}

/// Largest migration id (transfer or key id) in a path the server passes on.
const MAX_MIGRATION_ID_LEN: usize = 128;

/// The `{transfer}` and `{key}` of the package route: each 1 to 128 hex digits.
fn transfer_and_key(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((transfer, key)) = path.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("bad transfer or key id in the path: {}", e.body_text()),
        )
    })?;
    for (what, value) in [("transfer", &transfer), ("key", &key)] {
        let ok = !value.is_empty()
            && value.len() <= MAX_MIGRATION_ID_LEN
            && value.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a {what} id is 1 to {MAX_MIGRATION_ID_LEN} hex digits"),
            ));
        }
    }
    Ok((transfer, key))
}

/// Longest a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);
const DRAIN_CAP: usize = 16 * 1024 * 1024;
/// Most bytes reserved up front for a body from its declared length (it grows past this as
/// the bytes actually arrive).
const PREALLOCATE_CAP: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!(
            "the request body is larger than this route accepts ({} KiB)",
            limit / 1024
        ),
    )
}

/// Reads the body, refusing more than `limit` bytes. Before refusing it reads and discards a
/// bounded amount more, so that the client (still sending) sees the 413 instead of a reset.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    read_body_reserving(headers, body, limit, PREALLOCATE_CAP).await
}

/// The length a request declares (`Content-Length`), if it declares one.
fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// [`read_body`], reserving up to `reserve_cap` bytes up front from the declared length (the
/// package route reserves a whole declared package, at most its limit, so that a large body
/// is never regrown and copied as it arrives).
async fn read_body_reserving(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    reserve_cap: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = declared_len(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(too_large(limit));
    }
    let capacity = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit)
        .min(reserve_cap);
    // A large body (a migration package) fills fresh memory: on huge pages where the kernel
    // has them, a few dozen page faults instead of one per 4 KiB.
    let mut buf = sojourn_mem::with_capacity(capacity);
    // Its pages are faulted in on another thread while the first frames arrive, so this one
    // (which also decrypts the connection) copies into memory already mapped.
    sojourn_mem::prefault_in_background(buf.spare_capacity_mut());
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    while let Some(data) = next_frame(&mut body, deadline).await? {
        if buf.len().saturating_add(data.len()) > limit {
            drain(body).await;
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Hands every piece of a body of exactly `declared` bytes, in order, to `spool` as it
/// arrives, keeping none of it here. Returns the byte count; refuses a body that is longer or
/// shorter than it declared.
async fn read_body_to_spool(
    mut body: Body,
    declared: u64,
    spool: &mut dyn PackageSpool,
) -> Result<u64, ApiError> {
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut got = 0u64;
    while let Some(data) = next_frame(&mut body, deadline).await? {
        got = got.saturating_add(data.len() as u64);
        if got > declared {
            drain(body).await;
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the request body is longer than the {declared} bytes it declared"),
            ));
        }
        spool.push(data);
    }
    if got != declared {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the request body ended after {got} of the {declared} bytes it declared"),
        ));
    }
    Ok(got)
}

/// The next data frame of `body` (trailers are skipped), `None` at its end.
async fn next_frame(
    body: &mut Body,
    deadline: tokio::time::Instant,
) -> Result<Option<bytes::Bytes>, ApiError> {
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        };
        let Some(frame) = next else {
            return Ok(None);
        };
        let frame = frame.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > DRAIN_CAP {
                    break;
                }
            }
        }
    })
    .await;
}

/// Reads and parses a JSON body. An empty body counts as `{}` when `empty_ok`.
async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    if bytes.is_empty() && empty_ok {
        return serde_json::from_slice(b"{}").map_err(|e| {
            ApiError::new(ErrorCode::Internal, format!("empty request default: {e}"))
        });
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("malformed request body: {e}"),
        )
    })
}

async fn health(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let control = state.control.clone();
    let health = blocking(move || Ok(control.health())).await?;
    Ok(json(StatusCode::OK, &health))
}

async fn metrics(
    _caller: Caller<ReadRole>,
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let control = state.control.clone();
    let text = blocking(move || Ok(control.metrics())).await?;
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(paths::PROMETHEUS_TEXT),
        )],
        text,
    )
        .into_response())
}

async fn deploy(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: DeployRequest = json_body(&headers, body, paths::DEPLOY_BODY_LIMIT, false).await?;
    let control = state.control.clone();
    let info = blocking(move || control.deploy(request)).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        id = %info.id,
        name = %info.name,
        "object deployed"
    );
    Ok(json(StatusCode::CREATED, &info))
}

async fn list(
    _caller: Caller<ReadRole>,
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let control = state.control.clone();
    let objects = blocking(move || control.list()).await?;
    Ok(json(StatusCode::OK, &ObjectList { objects }))
}

async fn inspect(
    _caller: Caller<ReadRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let control = state.control.clone();
    let detail = blocking(move || control.inspect(&id)).await?;
    Ok(json(StatusCode::OK, &detail))
}

async fn send(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let request: SendRequest = json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    let message = match (request.text, request.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("base64: not standard padded base64: {e}"),
                )
            })?,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of `text` and `base64`",
            ))
        }
    };
    let control = state.control.clone();
    let receipt = blocking(move || control.send(&id, message)).await?;
    tracing::debug!(
        credential = %caller.name,
        id = %receipt.id,
        arrival = receipt.arrival,
        "message queued"
    );
    Ok(json(StatusCode::ACCEPTED, &receipt))
}

async fn suspend(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let request: SuspendRequest = json_body(&headers, body, paths::BODY_LIMIT, true).await?;
    let control = state.control.clone();
    let info = blocking(move || control.suspend(&id, request.reason)).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        id = %info.id,
        reason = info.suspended_reason.as_deref().unwrap_or("-"),
        "object suspended"
    );
    Ok(json(StatusCode::OK, &info))
}

/// `resume` takes no parameters: an empty body or `{}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {}

async fn resume(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let _: ResumeRequest = json_body(&headers, body, paths::BODY_LIMIT, true).await?;
    let control = state.control.clone();
    let info = blocking(move || control.resume(&id)).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        id = %info.id,
        "object resumed"
    );
    Ok(json(StatusCode::OK, &info))
}

async fn lineage(
    _caller: Caller<ReadRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let control = state.control.clone();
    let bytes = blocking(move || control.lineage(&id)).await?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static(paths::CBOR_SEQ))],
        bytes,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Migration. `migrate` and `drain` may run for minutes: nothing on the server side bounds a
// handler's time (the header-read timeout covers only the reading of request headers, the body
// timeout only the reading of the body); the caller bounds it with its own request timeout.

async fn migrate(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let request: MigrateRequest = json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        id = %id,
        to = %request.to,
        "migration requested"
    );
    let control = state.control.clone();
    let report = blocking(move || control.migrate(&id, request)).await?;
    tracing::info!(
        credential = %caller.name,
        id = %report.object,
        transfer = %report.transfer,
        to = %report.destination,
        outcome = %report.outcome,
        reason = report.reason.as_deref().unwrap_or("-"),
        downtime_micros = report.downtime_micros,
        "migration ended"
    );
    Ok(json(StatusCode::OK, &report))
}

async fn drain_objects(
    caller: Caller<AdminRole>,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: DrainRequest = json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    let destinations: Vec<&str> = request.to.iter().map(|d| d.to.as_str()).collect();
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        to = %destinations.join(","),
        deadline_s = request.deadline_s,
        "drain requested"
    );
    let control = state.control.clone();
    let report = blocking(move || control.drain(request)).await?;
    tracing::info!(
        credential = %caller.name,
        moved = report.moved.len(),
        pending = report.pending.len(),
        stayed = report.stayed.len(),
        "drain ended"
    );
    Ok(json(StatusCode::OK, &report))
}

async fn migration_offer(
    caller: Caller<PeerRole>,
    Channel(channel): Channel,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let offer: MigrationOffer = json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        transfer = %offer.transfer,
        object = %offer.object,
        source = %offer.source,
        "migration offer received"
    );
    let control = state.control.clone();
    let answer = blocking(move || control.migration_offer(offer, channel)).await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn migration_package(
    caller: Caller<PeerRole>,
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (transfer, key) = transfer_and_key(path)?;
    let order = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(PackageOrder::of_media_type);
    let Some(order) = order else {
        drain(body).await;
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the package must be sent as Content-Type: {} (or {}, each segment's tag \
                 after it)",
                paths::OCTET_STREAM,
                paths::PACKAGE_TAG_AFTER_SEGMENT
            ),
        ));
    };
    // Only an authenticated peer reaches this; the declared length is checked against the
    // limit before anything is reserved. A destination may take a declared package's bytes
    // as they arrive (to write them to disk meanwhile); else the body is read here.
    let declared = declared_len(&headers).filter(|&n| n <= paths::PACKAGE_BODY_LIMIT as u64);
    let spool = match declared {
        Some(len) => {
            let (control, t, k) = (state.control.clone(), transfer.clone(), key.clone());
            blocking(move || Ok(control.migration_package_spool(&t, &k, len, order))).await?
        }
        None => None,
    };
    let control = state.control.clone();
    let answer = match (spool, declared) {
        (Some(mut spool), Some(len)) => {
            let bytes = read_body_to_spool(body, len, spool.as_mut()).await?;
            log_package(&caller, &transfer, &key, bytes);
            blocking(move || control.migration_package_spooled(&transfer, &key, spool)).await?
        }
        _ => {
            let sealed = read_body_reserving(
                &headers,
                body,
                paths::PACKAGE_BODY_LIMIT,
                paths::PACKAGE_BODY_LIMIT,
            )
            .await?;
            log_package(&caller, &transfer, &key, sealed.len() as u64);
            blocking(move || control.migration_package(&transfer, &key, sealed, order)).await?
        }
    };
    Ok(json(StatusCode::OK, &answer))
}

fn log_package(caller: &Caller<PeerRole>, transfer: &str, key: &str, bytes: u64) {
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        transfer = %transfer,
        key = %key,
        bytes,
        "migration package received"
    );
}

async fn migration_status(
    caller: Caller<PeerRole>,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: MigrationStatusRequest =
        json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    tracing::debug!(
        credential = %caller.name,
        peer = %caller.peer,
        transfer = %request.transfer,
        "migration status asked"
    );
    let control = state.control.clone();
    let answer = blocking(move || control.migration_status(request)).await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn migration_refusal(
    caller: Caller<PeerRole>,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: MigrationRefusalRequest =
        json_body(&headers, body, paths::BODY_LIMIT, false).await?;
    tracing::info!(
        credential = %caller.name,
        peer = %caller.peer,
        transfer = %request.transfer,
        reason = %request.reason,
        "migration refused by the source"
    );
    let control = state.control.clone();
    blocking(move || control.migration_refusal(request)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Ok("abc"));
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert!(bearer(&h).is_err());
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer "),
        );
        assert!(bearer(&h).is_err());
    }

    #[test]
    fn roles() {
        assert!(Role::Admin.allows(Role::Admin));
        assert!(Role::Admin.allows(Role::Read));
        assert!(Role::Read.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Admin));
        assert!(!Role::Read.allows(Role::Peer));
        assert!(Role::Admin.allows(Role::Peer));
        assert!(Role::Peer.allows(Role::Peer));
        assert!(!Role::Peer.allows(Role::Read));
        assert!(!Role::Peer.allows(Role::Admin));
        for role in [Role::Admin, Role::Read, Role::Peer] {
            assert_eq!(Role::from_wire(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_wire("root"), None);
    }

    #[test]
    fn channel_binding_debug_hides_the_value() {
        let b = ChannelBinding([0xab; 32]);
        assert_eq!(format!("{b:?}"), "ChannelBinding(..)");
    }

    #[test]
    fn credential_debug_hides_token() {
        let c = Credential {
            name: "ci".into(),
            token: "0123456789abcdef-secret".into(),
            role: Role::Read,
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
