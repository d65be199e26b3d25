//! The client: one TLS 1.3 connection per call, trusting only the configured CA.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

pub use hyper::Method;

use crate::config::ClientConfig;
use crate::{
    paths, tls, DeployRequest, DrainReport, DrainRequest, ErrorBody, Health, MigrateRequest,
    MigrationAnswer, MigrationOffer, MigrationOfferAnswer, MigrationRefusalRequest,
    MigrationReport, MigrationStatusRequest, ObjectDetail, ObjectInfo, ObjectList, PackageOrder,
    SendReceipt, SendRequest, SuspendRequest, MIGRATION_EXPORTER_LABEL,
};

/// Largest response body the client accepts (a lineage can be long).
pub const MAX_RESPONSE: usize = 1024 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host answered with an error ([`ErrorBody`]).
    #[error("{}: {}", body.code, body.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The code and message the host sent.
        body: ErrorBody,
    },
    /// Nothing listens at the URL.
    #[error(
        "no Sojourn host is running at {url} (connection refused); start one with `sojourn host`"
    )]
    NotRunning {
        /// The URL.
        url: String,
    },
    /// The host's certificate does not chain to the configured CA.
    #[error(
        "the host at {url} presented a certificate that the configured CA does not trust \
         ({detail}): this CA is not the host's; use the client.toml the host wrote into its \
         data directory, or pass the host's CA with --ca"
    )]
    CaMismatch {
        /// The URL.
        url: String,
        /// What the certificate check said.
        detail: String,
    },
    /// Another TLS failure (protocol version, certificate name or dates, ...).
    #[error("TLS with {url} failed: {detail}")]
    Tls {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The connection failed otherwise.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The host did not answer in time.
    #[error("{url}: timed out while {during}")]
    Timeout {
        /// The URL.
        url: String,
        /// What the client was waiting for.
        during: &'static str,
    },
    /// The URL is not `https://HOST[:PORT]`.
    #[error("invalid host URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA PEM is not usable.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    /// The request could not be built (for example a body that does not serialize).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The host's answer is not what the API specifies.
    #[error("{url}: unexpected answer: {detail}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was unexpected.
        detail: String,
    },
}

impl ClientError {
    /// The host's error code, if the host answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status, if the host answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer as received.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A parsed `https://HOST[:PORT]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or IP address (no brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `HOST:PORT` as sent in the Host header.
    pub(crate) authority: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
        let bad = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: hyper::Uri = url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(_) => return Err(bad("the scheme must be https")),
            None => return Err(bad("expected https://HOST:PORT")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("expected https://HOST:PORT with no path"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(443);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            host,
            port,
            authority,
        })
    }
}

/// Bytes shared with the caller, as a body ([`Bytes::from_owner`] needs `AsRef<[u8]>`).
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A request body and its media type.
struct RequestBody {
    bytes: BodyBytes,
    content_type: &'static str,
}

/// The bytes of a request: all at hand, or parts still to come.
enum BodyBytes {
    Whole(Bytes),
    Parts(PackageParts),
}

impl RequestBody {
    fn json(bytes: Vec<u8>) -> RequestBody {
        RequestBody {
            bytes: BodyBytes::Whole(Bytes::from(bytes)),
            content_type: "application/json",
        }
    }
}

/// A migration package whose parts are still being sealed
/// (`sojourn_migration::package::seal_streaming`): the client sends each part as it comes, under
/// the length announced up front ([`package_parts`]).
pub struct PackageParts {
    remaining: u64,
    order: PackageOrder,
    rx: tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
}

impl fmt::Debug for PackageParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageParts")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// Where the sealer puts the parts of a [`PackageParts`] (not `Clone`: dropping it is what
/// ends the body).
#[derive(Debug)]
pub struct PackagePartsSender(tokio::sync::mpsc::UnboundedSender<Arc<Vec<u8>>>);

impl PackagePartsSender {
    /// Passes the next part on (never blocks). False if the body is no longer being sent;
    /// the caller may go on sealing (to send the whole package again).
    pub fn send(&self, part: Arc<Vec<u8>>) -> bool {
        self.0.send(part).is_ok()
    }
}

fn package_too_large(len: u64) -> String {
    format!(
        "the sealed package is {len} bytes; a host accepts at most {}",
        paths::PACKAGE_BODY_LIMIT
    )
}

/// A package of `len` bytes to be sent in parts: the sender's end for the sealer, the body's
/// for [`Client::migration_package_parts`]. If the sender is dropped before `len` bytes were
/// sent, the request fails (the host sees a body that ended early and discards it).
pub fn package_parts(len: u64) -> (PackagePartsSender, PackageParts) {
    package_parts_in(len, PackageOrder::Layout)
}

/// [`package_parts`] of a package whose parts come in `order` (sent under the content type
/// that names it).
pub fn package_parts_in(len: u64, order: PackageOrder) -> (PackagePartsSender, PackageParts) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        PackagePartsSender(tx),
        PackageParts {
            remaining: len,
            order,
            rx,
        },
    )
}

impl PackageParts {
    /// Waits for every part and joins them (for a link that sends whole packages). Blocks:
    /// call it from a plain thread, not from async code. An error if the sender went away
    /// before the announced length.
    pub fn collect_blocking(mut self) -> Result<Vec<u8>, String> {
        if self.order != PackageOrder::Layout {
            return Err(
                "the package's parts are not in its layout: they can only be streamed".into(),
            );
        }
        let announced = self.remaining;
        if announced > paths::PACKAGE_BODY_LIMIT as u64 {
            return Err(package_too_large(announced));
        }
        let mut out = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(part) = self.rx.blocking_recv() {
            if (out.len() + part.len()) as u64 > announced {
                return Err(format!(
                    "the package is longer than the {announced} bytes announced"
                ));
            }
            out.extend_from_slice(&part);
        }
        if out.len() as u64 != announced {
            return Err(format!(
                "the package ended after {} of {announced} bytes",
                out.len()
            ));
        }
        Ok(out)
    }
}

impl hyper::body::Body for PackageParts {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        loop {
            return match self.rx.poll_recv(cx) {
                Poll::Ready(Some(part)) if part.is_empty() => continue,
                Poll::Ready(Some(part)) => {
                    let Some(rest) = self.remaining.checked_sub(part.len() as u64) else {
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the package is longer than announced",
                        ))));
                    };
                    self.remaining = rest;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_owner(
                        SharedBytes(part),
                    )))))
                }
                Poll::Ready(None) if self.remaining == 0 => Poll::Ready(None),
                Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "the package ended {} bytes early",
                    self.remaining
                ))))),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// A client of one host. Cheap to clone; each call opens its own connection (the CLI makes
/// one call per command).
///
/// Every call is bounded by the request timeout (default 300 s, see
/// [`Client::with_timeouts`]). [`Client::migrate`] and [`Client::drain`] return only when the
/// host has finished, which may take minutes: give them a longer timeout (the CLI uses 15
/// minutes). A timed-out call does not stop the host's work.
#[derive(Clone)]
pub struct Client {
    url: String,
    target: Target,
    server_name: ServerName<'static>,
    token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .finish()
    }
}

impl Client {
    /// A client of the host at `url` (`https://HOST[:PORT]`) that trusts only the CA
    /// certificates in `ca_pem`, speaks only TLS 1.3, and sends `token` (if any) as a bearer
    /// token.
    pub fn new(url: &str, ca_pem: &str, token: Option<String>) -> Result<Client, ClientError> {
        let target = Target::parse(url)?;
        let server_name =
            ServerName::try_from(target.host.clone()).map_err(|e| ClientError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let tls = tls::client_config(ca_pem).map_err(ClientError::InvalidCa)?;
        Ok(Client {
            url: url.trim().trim_end_matches('/').to_string(),
            target,
            server_name,
            token: token.filter(|t| !t.is_empty()),
            tls,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
        })
    }

    /// A client for a [`ClientConfig`].
    pub fn from_config(config: &ClientConfig) -> Result<Client, ClientError> {
        Client::new(&config.url, &config.ca_pem, Some(config.token.clone()))
    }

    /// Sets how long connecting (TCP, then TLS) and a whole call may take (defaults 10 s and
    /// 300 s).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Client {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// The host URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET /v1/health` (needs no token).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get_json(paths::HEALTH).await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let raw = self.call(Method::GET, paths::METRICS, None).await?;
        String::from_utf8(raw.body.to_vec()).map_err(|_| self.protocol("metrics are not UTF-8"))
    }

    /// `POST /v1/objects`.
    pub async fn deploy(&self, request: &DeployRequest) -> Result<ObjectInfo, ClientError> {
        self.post_json(paths::OBJECTS, request).await
    }

    /// `GET /v1/objects`.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, ClientError> {
        let list: ObjectList = self.get_json(paths::OBJECTS).await?;
        Ok(list.objects)
    }

    /// `GET /v1/objects/{id}`.
    pub async fn inspect(&self, id: &str) -> Result<ObjectDetail, ClientError> {
        self.get_json(&paths::object_path(paths::OBJECT, id)).await
    }

    /// `POST /v1/objects/{id}/messages` with a request as given (the host refuses one that
    /// does not set exactly one of `text` and `base64`).
    pub async fn send(&self, id: &str, request: &SendRequest) -> Result<SendReceipt, ClientError> {
        self.post_json(&paths::object_path(paths::MESSAGES, id), request)
            .await
    }

    /// Sends a UTF-8 text message.
    pub async fn send_text(&self, id: &str, text: &str) -> Result<SendReceipt, ClientError> {
        let request = SendRequest {
            text: Some(text.to_string()),
            base64: None,
        };
        self.send(id, &request).await
    }

    /// Sends a message of arbitrary bytes.
    pub async fn send_bytes(&self, id: &str, bytes: &[u8]) -> Result<SendReceipt, ClientError> {
        let request = SendRequest {
            text: None,
            base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        };
        self.send(id, &request).await
    }

    /// `POST /v1/objects/{id}/suspend`.
    pub async fn suspend(&self, id: &str, reason: Option<&str>) -> Result<ObjectInfo, ClientError> {
        let request = SuspendRequest {
            reason: reason.map(str::to_string),
        };
        self.post_json(&paths::object_path(paths::SUSPEND, id), &request)
            .await
    }

    /// `POST /v1/objects/{id}/resume`.
    pub async fn resume(&self, id: &str) -> Result<ObjectInfo, ClientError> {
        self.post_json(
            &paths::object_path(paths::RESUME, id),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /v1/objects/{id}/lineage`: the CBOR sequence.
    pub async fn lineage(&self, id: &str) -> Result<Vec<u8>, ClientError> {
        let raw = self
            .call(Method::GET, &paths::object_path(paths::LINEAGE, id), None)
            .await?;
        Ok(raw.body.to_vec())
    }

    /// `POST /v1/objects/{id}/migrate` (admin, to the source host): moves the object to the
    /// host `request` names. Returns when the attempt is decided (or `pending`), which may take
    /// minutes: set a request timeout that allows it with [`Client::with_timeouts`] (the CLI
    /// uses 15 minutes). If the call times out, the migration goes on at the host.
    pub async fn migrate(
        &self,
        id: &str,
        request: &MigrateRequest,
    ) -> Result<MigrationReport, ClientError> {
        self.post_json(&paths::object_path(paths::MIGRATE, id), request)
            .await
    }

    /// `POST /v1/drain` (admin, to the source host): moves every object to one of the
    /// destinations. May take minutes (about the request's deadline, longer for attempts in
    /// flight): set a request timeout that allows it with [`Client::with_timeouts`].
    pub async fn drain(&self, request: &DrainRequest) -> Result<DrainReport, ClientError> {
        self.post_json(paths::DRAIN, request).await
    }

    /// `POST /v1/migration/offer` (peer, host to host, to the destination). Returns the
    /// answer and this side's TLS exporter value of the very connection that carried the
    /// offer ([`MIGRATION_EXPORTER_LABEL`], 32 bytes, no context): the destination's evidence
    /// must commit to the same value, which proves that the evidence was produced for this
    /// connection.
    pub async fn migration_offer(
        &self,
        offer: &MigrationOffer,
    ) -> Result<(MigrationOfferAnswer, [u8; 32]), ClientError> {
        let bytes =
            serde_json::to_vec(offer).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let (raw, channel) = self
            .call_with_channel(
                Method::POST,
                paths::MIGRATION_OFFER,
                Some(RequestBody::json(bytes)),
            )
            .await?;
        let channel = channel.map_err(|e| ClientError::Tls {
            url: self.url.clone(),
            detail: format!("cannot compute the TLS exporter of the connection: {e}"),
        })?;
        Ok((self.parse(&raw)?, channel))
    }

    /// `POST /v1/migration/transfers/{transfer}/package/{key}` (peer, host to host, to the
    /// destination): the sealed package, as `application/octet-stream` (at most
    /// [`paths::PACKAGE_BODY_LIMIT`]; a larger one is refused here without connecting).
    pub async fn migration_package(
        &self,
        transfer: &str,
        key: &str,
        sealed: &[u8],
    ) -> Result<MigrationAnswer, ClientError> {
        self.migration_package_shared(transfer, key, Arc::new(sealed.to_vec()))
            .await
    }

    /// [`Client::migration_package`] over bytes the caller shares (a source retrying the
    /// same package): the body is sent from them, not copied.
    pub async fn migration_package_shared(
        &self,
        transfer: &str,
        key: &str,
        sealed: Arc<Vec<u8>>,
    ) -> Result<MigrationAnswer, ClientError> {
        let len = sealed.len() as u64;
        let bytes = BodyBytes::Whole(Bytes::from_owner(SharedBytes(sealed)));
        self.post_package(transfer, key, len, PackageOrder::Layout, bytes)
            .await
    }

    /// [`Client::migration_package`] of a package still being sealed: each part is sent as it
    /// comes (the announced length is the `Content-Length`), so that sending overlaps sealing.
    pub async fn migration_package_parts(
        &self,
        transfer: &str,
        key: &str,
        parts: PackageParts,
    ) -> Result<MigrationAnswer, ClientError> {
        let (len, order) = (parts.remaining, parts.order);
        self.post_package(transfer, key, len, order, BodyBytes::Parts(parts))
            .await
    }

    /// The package route, with a body of `len` bytes (refused here, without connecting, over
    /// [`paths::PACKAGE_BODY_LIMIT`]).
    async fn post_package(
        &self,
        transfer: &str,
        key: &str,
        len: u64,
        order: PackageOrder,
        bytes: BodyBytes,
    ) -> Result<MigrationAnswer, ClientError> {
        if len > paths::PACKAGE_BODY_LIMIT as u64 {
            return Err(ClientError::InvalidRequest(package_too_large(len)));
        }
        let body = RequestBody {
            bytes,
            content_type: order.content_type(),
        };
        let (raw, _) = self
            .call_with_channel(
                Method::POST,
                &paths::migration_package_path(transfer, key),
                Some(body),
            )
            .await?;
        self.parse(&raw)
    }

    /// `POST /v1/migration/status` (peer, host to host, to the destination): "decide now".
    pub async fn migration_status(
        &self,
        request: &MigrationStatusRequest,
    ) -> Result<MigrationAnswer, ClientError> {
        self.post_json(paths::MIGRATION_STATUS, request).await
    }

    /// `POST /v1/migration/refusal` (peer, host to host, to the destination): the source will
    /// not send a package for this attempt. The host answers `204 No Content`.
    pub async fn migration_refusal(
        &self,
        request: &MigrationRefusalRequest,
    ) -> Result<(), ClientError> {
        let bytes =
            serde_json::to_vec(request).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let raw = self
            .call(Method::POST, paths::MIGRATION_REFUSAL, Some(bytes))
            .await?;
        if raw.status != 204 {
            return Err(self.protocol(&format!("HTTP {} where 204 was expected", raw.status)));
        }
        Ok(())
    }

    /// One call as given: `body`, if any, is sent as `application/json`. An answer with a
    /// status other than 2xx becomes [`ClientError::Api`] (or [`ClientError::Protocol`] when
    /// its body is not an [`ErrorBody`]); a 2xx answer is returned as received.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let (raw, _) = self
            .call_with_channel(method, path, body.map(RequestBody::json))
            .await?;
        Ok(raw)
    }

    /// [`Client::call`] with a body of any media type, also returning the TLS exporter value
    /// of the connection (or why it could not be computed).
    async fn call_with_channel(
        &self,
        method: Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> Result<(RawResponse, Result<[u8; 32], rustls::Error>), ClientError> {
        let (raw, channel) = self.exchange(method, path, body).await?;
        if (200..300).contains(&raw.status) {
            return Ok((raw, channel));
        }
        match serde_json::from_slice::<ErrorBody>(&raw.body) {
            Ok(body) => Err(ClientError::Api {
                status: raw.status,
                body,
            }),
            Err(_) => Err(self.protocol(&format!(
                "HTTP {} without an error body: {}",
                raw.status,
                String::from_utf8_lossy(raw.body.get(..200).unwrap_or(&raw.body))
            ))),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let raw = self.call(Method::GET, path, None).await?;
        self.parse(&raw)
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let raw = self.call(Method::POST, path, Some(bytes)).await?;
        self.parse(&raw)
    }

    pub(crate) fn parse<T: DeserializeOwned>(&self, raw: &RawResponse) -> Result<T, ClientError> {
        serde_json::from_slice(&raw.body)
            .map_err(|e| self.protocol(&format!("the body does not parse: {e}")))
    }

    fn protocol(&self, detail: &str) -> ClientError {
        ClientError::Protocol {
            url: self.url.clone(),
            detail: detail.to_string(),
        }
    }

    /// One request on a fresh connection; also returns that connection's TLS exporter value
    /// ([`MIGRATION_EXPORTER_LABEL`], 32 bytes, no context), computed right after the
    /// handshake.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> Result<(RawResponse, Result<[u8; 32], rustls::Error>), ClientError> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.target.authority)
            .header(USER_AGENT, concat!("sojourn/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, body.content_type);
                match body.bytes {
                    BodyBytes::Whole(bytes) => Either::Left(Full::new(bytes)),
                    BodyBytes::Parts(parts) => Either::Right(parts),
                }
            }
            None => Either::Left(Full::new(Bytes::new())),
        };
        let request = builder
            .body(body)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;

        let stream = self.connect().await?;
        let channel =
            stream
                .get_ref()
                .1
                .export_keying_material([0u8; 32], MIGRATION_EXPORTER_LABEL, None);
        let url = self.url.clone();
        let closed = |e: hyper::Error| ClientError::Protocol {
            url: url.clone(),
            detail: format!("the connection failed: {e}"),
        };
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(closed)?;
            // Drives the connection; ends when `sender` is dropped or the host closes.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let response = sender.send_request(request).await.map_err(closed)?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    detail: format!("cannot read the answer: {e}"),
                })?
                .to_bytes();
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result.map(|raw| (raw, channel)),
            Err(_) => Err(ClientError::Timeout {
                url: self.url.clone(),
                during: "waiting for the answer",
            }),
        }
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let url = || self.url.clone();
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.target.host.as_str(), self.target.port)),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url: url(),
                    during: "connecting",
                })
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::NotRunning { url: url() })
            }
            Ok(Err(source)) => return Err(ClientError::Connect { url: url(), source }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        match tokio::time::timeout(
            self.connect_timeout,
            connector.connect(self.server_name.clone(), tcp),
        )
        .await
        {
            Err(_) => Err(ClientError::Timeout {
                url: url(),
                during: "the TLS handshake",
            }),
            Ok(Err(e)) => Err(tls_error(url(), e)),
            Ok(Ok(stream)) => Ok(stream),
        }
    }
}

fn tls_error(url: String, e: std::io::Error) -> ClientError {
    use rustls::CertificateError as C;
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
            ClientError::CaMismatch {
                url,
                detail: "unknown issuer".to_string(),
            }
        }
        Some(rustls::Error::InvalidCertificate(c)) => ClientError::Tls {
            url,
            detail: format!("the host's certificate is not acceptable: {c}"),
        },
        Some(other) => ClientError::Tls {
            url,
            detail: other.to_string(),
        },
        None => ClientError::Connect { url, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("https://127.0.0.1:7878").ok();
        assert_eq!(
            t.map(|t| (t.host, t.port)),
            Some(("127.0.0.1".into(), 7878))
        );
        let t = Target::parse("https://[::1]:9/").ok();
        assert_eq!(
            t.map(|t| (t.host, t.port, t.authority)),
            Some(("::1".into(), 9, "[::1]:9".into()))
        );
        let t = Target::parse("HTTPS://LocalHost").ok();
        assert_eq!(t.map(|t| (t.host, t.port)), Some(("localhost".into(), 443)));
        assert!(Target::parse("http://127.0.0.1:1").is_err());
        assert!(Target::parse("127.0.0.1:1").is_err());
        assert!(Target::parse("https://u:p@127.0.0.1:1").is_err());
        assert!(Target::parse("https://127.0.0.1:1/v1").is_err());
    }
}
