#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The API over real TLS and HTTP: the real server (on 127.0.0.1:0, with a generated local
//! identity) in front of an in-memory `HostControl`, driven by the real `Client` and CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sojourn_api::cli::{self, ConnectArgs};
use sojourn_api::client::Method;
use sojourn_api::{
    paths, serve, serve_with, ApiError, Client, ClientConfig, ClientError, ConfigError, Credential,
    DeployRequest, DrainReport, DrainRequest, DrainStay, ErrorCode, Health, HostControl,
    IdentityError, LocalIdentity, MigrateRequest, MigrationAnswer, MigrationOffer,
    MigrationOfferAnswer, MigrationRefusalRequest, MigrationReport, MigrationStatusRequest,
    MigrationStep, ObjectDetail, ObjectInfo, Role, SendReceipt, SendRequest, ServeOptions,
    ServerIdentity, TransitionSummary,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// An in-memory host: enough behaviour to exercise every route and error mapping.

const INBOX_CAPACITY: u64 = 3;

struct FakeObject {
    info: ObjectInfo,
    messages: Vec<Vec<u8>>,
    arrivals: u64,
}

/// A migration call as the fake host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MigrationCall {
    Migrate(String, MigrateRequest),
    Drain(DrainRequest),
    Offer(MigrationOffer, [u8; 32]),
    Package {
        transfer: String,
        key: String,
        bytes: usize,
        digest: [u8; 32],
        order: sojourn_api::PackageOrder,
    },
    Status(MigrationStatusRequest),
    Refusal(MigrationRefusalRequest),
}

struct FakeHost {
    objects: Mutex<BTreeMap<String, FakeObject>>,
    started: Instant,
    migration_calls: Mutex<Vec<MigrationCall>>,
}

/// How long the fake host's `migrate` of the object `slow` takes.
const SLOW_MIGRATION: Duration = Duration::from_millis(2500);

impl FakeHost {
    fn new() -> FakeHost {
        FakeHost {
            objects: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            migration_calls: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, call: MigrationCall) {
        self.migration_calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<MigrationCall> {
        self.migration_calls.lock().unwrap().clone()
    }

    fn find<'a>(
        objects: &'a mut BTreeMap<String, FakeObject>,
        id: &str,
    ) -> Result<&'a mut FakeObject, ApiError> {
        let matches: Vec<String> = objects
            .values()
            .filter(|o| {
                o.info.id == id || (id.len() >= 4 && o.info.id.starts_with(id)) || o.info.name == id
            })
            .map(|o| o.info.id.clone())
            .collect();
        match matches.as_slice() {
            [one] => Ok(objects.get_mut(one).unwrap()),
            [] => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no object {id:?}"),
            )),
            _ => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{id:?} is ambiguous"),
            )),
        }
    }
}

/// The fake host's report: the outcome is chosen by the object id (`refuse-me`, `abort-me`,
/// `pending-me`; anything else is transferred).
fn fake_report(id: &str, destination: &str) -> MigrationReport {
    let outcome = match id {
        "refuse-me" => "refused",
        "abort-me" => "aborted",
        "pending-me" => "pending",
        _ => "transferred",
    };
    MigrationReport {
        object: "0123456789abcdef0123456789abcdef".into(),
        name: id.into(),
        transfer: "ab".repeat(16),
        destination: destination.into(),
        outcome: outcome.into(),
        reason: (outcome != "transferred").then(|| format!("fake {outcome}")),
        refusal_code: (outcome == "refused").then(|| "measurement".to_string()),
        appraisal: Some("software evidence (insecure), accepted by policy".into()),
        seq: 42,
        package_bytes: if outcome == "transferred" { 12_595 } else { 0 },
        downtime_micros: 35_250,
        steps: vec![
            MigrationStep {
                name: "quiesce".into(),
                micros: 300,
            },
            MigrationStep {
                name: "transfer".into(),
                micros: 12_000,
            },
        ],
    }
}

fn lineage_bytes(id: &str) -> Vec<u8> {
    let mut v = vec![0xd9, 0xd9, 0xf7];
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(&[0x00, 0xff, 0x80]);
    v
}

impl HostControl for FakeHost {
    fn deploy(&self, request: DeployRequest) -> Result<ObjectInfo, ApiError> {
        let module = base64::engine::general_purpose::STANDARD
            .decode(&request.module_base64)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let descriptor =
            sojourn_policy::parse_descriptor("object.toml", &request.object_toml, &module)
                .map_err(|e| ApiError::new(ErrorCode::InvalidPackage, e.to_string()))?;
        let digest = hex::encode(descriptor.digest());
        let id = hex::encode(&Sha256::digest(digest.as_bytes())[..16]);
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{} is already deployed as {id}", descriptor.name),
            ));
        }
        let info = ObjectInfo {
            id: id.clone(),
            name: descriptor.name,
            descriptor_digest: digest,
            seq: 1,
            status: "active".into(),
            suspended_reason: None,
            next_wake_ms: Some(4_000_000_000_000),
            inbox: 0,
            state_digest: "00".repeat(32),
        };
        objects.insert(
            id,
            FakeObject {
                info: info.clone(),
                messages: Vec::new(),
                arrivals: 0,
            },
        );
        Ok(info)
    }

    fn list(&self) -> Result<Vec<ObjectInfo>, ApiError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .values()
            .map(|o| o.info.clone())
            .collect())
    }

    fn inspect(&self, id: &str) -> Result<ObjectDetail, ApiError> {
        let mut objects = self.objects.lock().unwrap();
        let o = Self::find(&mut objects, id)?;
        Ok(ObjectDetail {
            info: o.info.clone(),
            state: serde_json::json!({ "count": o.messages.len() }),
            cadence_ms: Some(100),
            lineage_entries: o.info.seq,
            recent: vec![TransitionSummary {
                seq: 0,
                entry: "init".into(),
                outcome: "accepted".into(),
                reason: None,
                at_ms: 1,
                state_after: o.info.state_digest.clone(),
                outputs: vec!["hello".into()],
            }],
        })
    }

    fn send(&self, id: &str, message: Vec<u8>) -> Result<SendReceipt, ApiError> {
        let mut objects = self.objects.lock().unwrap();
        let o = Self::find(&mut objects, id)?;
        if o.info.inbox >= INBOX_CAPACITY {
            return Err(ApiError::new(ErrorCode::InboxFull, "the inbox is full"));
        }
        o.arrivals += 1;
        o.info.inbox += 1;
        o.messages.push(message);
        Ok(SendReceipt {
            id: o.info.id.clone(),
            arrival: o.arrivals,
            inbox: o.info.inbox,
        })
    }

    fn suspend(&self, id: &str, reason: Option<String>) -> Result<ObjectInfo, ApiError> {
        let mut objects = self.objects.lock().unwrap();
        let o = Self::find(&mut objects, id)?;
        if o.info.status == "suspended" {
            return Err(ApiError::new(ErrorCode::Conflict, "already suspended"));
        }
        o.info.status = "suspended".into();
        o.info.suspended_reason = reason;
        Ok(o.info.clone())
    }

    fn resume(&self, id: &str) -> Result<ObjectInfo, ApiError> {
        let mut objects = self.objects.lock().unwrap();
        let o = Self::find(&mut objects, id)?;
        if o.info.status != "suspended" {
            return Err(ApiError::new(ErrorCode::Conflict, "not suspended"));
        }
        o.info.status = "active".into();
        o.info.suspended_reason = None;
        Ok(o.info.clone())
    }

    fn lineage(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let mut objects = self.objects.lock().unwrap();
        let o = Self::find(&mut objects, id)?;
        Ok(lineage_bytes(&o.info.id))
    }

    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            version: "test".into(),
            attestation: "software".into(),
            objects: self.objects.lock().unwrap().len() as u64,
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    fn metrics(&self) -> String {
        format!(
            "# TYPE sojourn_objects gauge\nsojourn_objects {}\n",
            self.objects.lock().unwrap().len()
        )
    }

    fn migrate(&self, id: &str, request: MigrateRequest) -> Result<MigrationReport, ApiError> {
        if id == "slow" {
            std::thread::sleep(SLOW_MIGRATION);
        }
        if id == "missing" {
            return Err(ApiError::new(ErrorCode::NotFound, "no object \"missing\""));
        }
        let report = fake_report(id, &request.to);
        self.record(MigrationCall::Migrate(id.to_string(), request));
        Ok(report)
    }

    fn drain(&self, request: DrainRequest) -> Result<DrainReport, ApiError> {
        let first = request.to.first().map(|d| d.to.clone()).unwrap_or_default();
        let stays = request.deadline_s == Some(0);
        self.record(MigrationCall::Drain(request));
        Ok(DrainReport {
            moved: vec![fake_report("counter", &first)],
            stayed: if stays {
                vec![DrainStay {
                    object: "aa".repeat(16),
                    name: "ledger".into(),
                    reasons: vec![format!("{first}: deadline over")],
                }]
            } else {
                vec![]
            },
            pending: vec![],
        })
    }

    /// Echoes the channel binding in `binding_base64`.
    fn migration_offer(
        &self,
        offer: MigrationOffer,
        channel: [u8; 32],
    ) -> Result<MigrationOfferAnswer, ApiError> {
        self.record(MigrationCall::Offer(offer, channel));
        Ok(MigrationOfferAnswer {
            binding_base64: Some(base64::engine::general_purpose::STANDARD.encode(channel)),
            evidence_base64: Some("ZXZpZGVuY2U=".into()),
            aborted: None,
        })
    }

    fn migration_package(
        &self,
        transfer: &str,
        key: &str,
        sealed: Vec<u8>,
        order: sojourn_api::PackageOrder,
    ) -> Result<MigrationAnswer, ApiError> {
        self.record(MigrationCall::Package {
            transfer: transfer.into(),
            key: key.into(),
            bytes: sealed.len(),
            digest: Sha256::digest(&sealed).into(),
            order,
        });
        Ok(MigrationAnswer {
            transfer: transfer.into(),
            outcome: "ack".into(),
            reason: None,
            signature_base64: "c2ln".into(),
        })
    }

    fn migration_status(
        &self,
        request: MigrationStatusRequest,
    ) -> Result<MigrationAnswer, ApiError> {
        let transfer = request.transfer.clone();
        self.record(MigrationCall::Status(request));
        Ok(MigrationAnswer {
            transfer,
            outcome: "aborted".into(),
            reason: Some("no package arrived".into()),
            signature_base64: "c2ln".into(),
        })
    }

    fn migration_refusal(&self, request: MigrationRefusalRequest) -> Result<(), ApiError> {
        self.record(MigrationCall::Refusal(request));
        Ok(())
    }
}

/// A host that implements only the required methods (no migration).
struct NoMigrationHost;

impl HostControl for NoMigrationHost {
    fn deploy(&self, _: DeployRequest) -> Result<ObjectInfo, ApiError> {
        Err(ApiError::new(ErrorCode::Internal, "unused"))
    }
    fn list(&self) -> Result<Vec<ObjectInfo>, ApiError> {
        Ok(vec![])
    }
    fn inspect(&self, id: &str) -> Result<ObjectDetail, ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {id:?}"),
        ))
    }
    fn send(&self, id: &str, _: Vec<u8>) -> Result<SendReceipt, ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {id:?}"),
        ))
    }
    fn suspend(&self, id: &str, _: Option<String>) -> Result<ObjectInfo, ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {id:?}"),
        ))
    }
    fn resume(&self, id: &str) -> Result<ObjectInfo, ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {id:?}"),
        ))
    }
    fn lineage(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {id:?}"),
        ))
    }
    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            version: "test".into(),
            attestation: "software".into(),
            objects: 0,
            uptime_s: 0,
        }
    }
    fn metrics(&self) -> String {
        String::new()
    }
}

// ---------------------------------------------------------------------------------------
// A running server.

struct Harness {
    url: String,
    ca_pem: String,
    ca_file: PathBuf,
    admin: Credential,
    read: Credential,
    peer: Credential,
    /// The host behind the server (unused when the server runs another `HostControl`).
    fake: Arc<FakeHost>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let identity = LocalIdentity::load_or_create(dir.path()).unwrap();
        Harness::start_with(dir, identity.server(), identity.ca_pem().to_string()).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        server: &ServerIdentity,
        ca_pem: String,
    ) -> Harness {
        let fake = Arc::new(FakeHost::new());
        Harness::launch(
            dir,
            server,
            ca_pem,
            fake.clone(),
            fake,
            ServeOptions::default(),
        )
        .await
    }

    /// A server with a fresh identity in front of `control`, with `options`.
    async fn start_control(control: Arc<dyn HostControl>, options: ServeOptions) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let identity = LocalIdentity::load_or_create(dir.path()).unwrap();
        let ca = identity.ca_pem().to_string();
        let fake = Arc::new(FakeHost::new());
        Harness::launch(dir, identity.server(), ca, fake, control, options).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        server: &ServerIdentity,
        ca_pem: String,
        fake: Arc<FakeHost>,
        control: Arc<dyn HostControl>,
        options: ServeOptions,
    ) -> Harness {
        let tls = sojourn_api::server_tls_config(server).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let admin = Credential::generate("admin", Role::Admin).unwrap();
        let read = Credential::generate("dashboard", Role::Read).unwrap();
        let peer = Credential::generate("host-b", Role::Peer).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            tls,
            control,
            vec![admin.clone(), read.clone(), peer.clone()],
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        let ca_file = dir.path().join("ca-for-cli.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        Harness {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem,
            ca_file,
            admin,
            read,
            peer,
            fake,
            stop: Some(stop),
            task,
            dir,
        }
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, &self.ca_pem, token.map(str::to_string)).unwrap()
    }

    fn admin(&self) -> Client {
        self.client(Some(&self.admin.token))
    }

    fn reader(&self) -> Client {
        self.client(Some(&self.read.token))
    }

    fn peer(&self) -> Client {
        self.client(Some(&self.peer.token))
    }

    /// A client file for this host with its peer token, as another host's operator has it.
    fn peer_client_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        ClientConfig {
            url: self.url.clone(),
            ca_pem: self.ca_pem.clone(),
            token: self.peer.token.clone(),
        }
        .write_private(&path)
        .unwrap();
        path
    }

    fn connect_args(&self) -> ConnectArgs {
        ConnectArgs {
            host: Some(self.url.clone()),
            token: Some(self.admin.token.clone()),
            ca: Some(self.ca_file.clone()),
            json: false,
        }
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn counter_request() -> DeployRequest {
    let dir = examples().join("counter");
    DeployRequest {
        object_toml: std::fs::read_to_string(dir.join("object.toml")).unwrap(),
        module_base64: base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("counter.wasm")).unwrap()),
    }
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api { status, body }) => (status, body.code, body.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn health_needs_no_token() {
    let h = Harness::start().await;
    let health = h.client(None).health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.attestation, "software");
    assert_eq!(health.objects, 0);
}

#[tokio::test]
async fn every_route_round_trips() {
    let h = Harness::start().await;
    let c = h.admin();

    let info = c.deploy(&counter_request()).await.unwrap();
    assert_eq!(info.name, "counter");
    assert_eq!(info.id.len(), 32);
    assert_eq!(info.status, "active");
    // Deploying the same package again: the host's conflict, as 409.
    let (status, code, _) = api_error(c.deploy(&counter_request()).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));

    let list = c.list().await.unwrap();
    assert_eq!(list, vec![info.clone()]);

    // By id, by prefix, by name.
    for key in [info.id.as_str(), &info.id[..6], "counter"] {
        let detail = c.inspect(key).await.unwrap();
        assert_eq!(detail.info, info);
        assert_eq!(detail.cadence_ms, Some(100));
        assert_eq!(detail.recent.len(), 1);
    }
    let (status, code, message) = api_error(c.inspect("nope-nope").await);
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert!(message.contains("nope-nope"), "{message}");

    let r1 = c.send_text(&info.id, "hello").await.unwrap();
    assert_eq!((r1.arrival, r1.inbox), (1, 1));
    let r2 = c.send_bytes("counter", &[0, 159, 255]).await.unwrap();
    assert_eq!((r2.arrival, r2.inbox), (2, 2));
    let r3 = c.send_text("counter", "").await.unwrap();
    assert_eq!(r3.arrival, 3);
    let (status, code, _) = api_error(c.send_text("counter", "one too many").await);
    assert_eq!((status, code.as_str()), (429, "inbox_full"));
    let detail = c.inspect("counter").await.unwrap();
    assert_eq!(detail.state, serde_json::json!({ "count": 3 }));

    let suspended = c.suspend("counter", Some("maintenance")).await.unwrap();
    assert_eq!(suspended.status, "suspended");
    assert_eq!(suspended.suspended_reason.as_deref(), Some("maintenance"));
    let (status, code, _) = api_error(c.suspend("counter", None).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let resumed = c.resume("counter").await.unwrap();
    assert_eq!(resumed.status, "active");
    assert_eq!(resumed.suspended_reason, None);

    // Suspend with an empty body (no reason) is accepted.
    let raw = c
        .call(
            Method::POST,
            &paths::object_path(paths::SUSPEND, &info.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200);

    let lineage = c.lineage("counter").await.unwrap();
    assert_eq!(lineage, lineage_bytes(&info.id));
    let raw = c
        .call(
            Method::GET,
            &paths::object_path(paths::LINEAGE, &info.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.content_type.as_deref(), Some("application/cbor-seq"));

    let metrics = c.metrics().await.unwrap();
    assert!(metrics.contains("sojourn_objects 1"), "{metrics}");
    let raw = c.call(Method::GET, paths::METRICS, None).await.unwrap();
    assert!(raw
        .content_type
        .as_deref()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));

    let raw = c
        .call(
            Method::POST,
            paths::OBJECTS,
            Some(serde_json::to_vec(&counter_request()).unwrap()),
        )
        .await;
    assert_eq!(api_error(raw).0, 409);
    let raw = c.call(Method::GET, paths::OBJECTS, None).await.unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type.as_deref(), Some("application/json"));
    let created = h
        .admin()
        .call(Method::GET, paths::HEALTH, None)
        .await
        .unwrap();
    let health: Health = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(health.objects, 1);
}

#[tokio::test]
async fn deploy_answers_201_and_bad_packages_422() {
    let h = Harness::start().await;
    let c = h.admin();
    let raw = c
        .call(
            Method::POST,
            paths::OBJECTS,
            Some(serde_json::to_vec(&counter_request()).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 201);
    let mut bad = counter_request();
    bad.object_toml = bad.object_toml.replace("[limits]", "[limits]\nbogus = 1");
    let (status, code, _) = api_error(c.deploy(&bad).await);
    assert_eq!((status, code.as_str()), (422, "invalid_package"));
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let h = Harness::start().await;
    let (status, code, message) = api_error(h.client(None).list().await);
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert!(message.contains("Bearer"), "{message}");

    let wrong = "0".repeat(64);
    let (status, code, _) = api_error(h.client(Some(&wrong)).list().await);
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));

    // Refused before the body is read: an unauthenticated deploy is a 401, not a 4xx about
    // the body.
    let (status, _, _) = api_error(h.client(None).deploy(&counter_request()).await);
    assert_eq!(status, 401);
    let (status, _, _) = api_error(h.client(None).metrics().await);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn read_token_reads_but_cannot_change() {
    let h = Harness::start().await;
    let info = h.admin().deploy(&counter_request()).await.unwrap();
    let r = h.reader();
    assert_eq!(r.list().await.unwrap().len(), 1);
    r.inspect(&info.id).await.unwrap();
    r.lineage(&info.id).await.unwrap();
    r.metrics().await.unwrap();
    r.health().await.unwrap();

    let (status, code, message) = api_error(r.deploy(&counter_request()).await);
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(
        message.contains("dashboard"),
        "names the credential: {message}"
    );
    assert!(!message.contains(&h.read.token), "never the token");
    for result in [
        r.send_text(&info.id, "x").await.map(|_| ()),
        r.suspend(&info.id, None).await.map(|_| ()),
        r.resume(&info.id).await.map(|_| ()),
    ] {
        let (status, code, _) = api_error(result);
        assert_eq!((status, code.as_str()), (403, "forbidden"));
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = Harness::start().await;
    let c = h.admin();
    for path in ["/", "/v1/nope", "/v1/objects/abc/unknown", "/v2/objects"] {
        let (status, code, _) = api_error(c.call(Method::GET, path, None).await);
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    let (status, code, _) = api_error(c.call(Method::DELETE, paths::OBJECTS, None).await);
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let (status, code, _) = api_error(c.call(Method::GET, "/v1/objects/abc/suspend", None).await);
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn malformed_bodies_are_400_json() {
    let h = Harness::start().await;
    let c = h.admin();
    let info = c.deploy(&counter_request()).await.unwrap();
    let send_path = paths::object_path(paths::MESSAGES, &info.id);

    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("deploy, not JSON", paths::OBJECTS, b"{not json".to_vec()),
        (
            "deploy, wrong type",
            paths::OBJECTS,
            br#"{"object_toml": 1, "module_base64": ""}"#.to_vec(),
        ),
        (
            "deploy, unknown field",
            paths::OBJECTS,
            br#"{"object_toml": "", "module_base64": "", "x": 1}"#.to_vec(),
        ),
        ("deploy, empty", paths::OBJECTS, Vec::new()),
        (
            "send, both",
            &send_path,
            br#"{"text": "a", "base64": "YQ=="}"#.to_vec(),
        ),
        ("send, neither", &send_path, b"{}".to_vec()),
        (
            "send, bad base64",
            &send_path,
            br#"{"base64": "not base64!"}"#.to_vec(),
        ),
        ("send, truncated", &send_path, br#"{"text": "a""#.to_vec()),
    ];
    for (what, path, body) in cases {
        let (status, code, message) = api_error(c.call(Method::POST, path, Some(body)).await);
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{what}: {message}"
        );
    }
    let (_, _, message) = api_error(
        c.send(
            &info.id,
            &SendRequest {
                text: Some("a".into()),
                base64: Some("YQ==".into()),
            },
        )
        .await,
    );
    assert!(message.contains("exactly one"), "{message}");
    // Nothing was queued.
    assert_eq!(c.inspect(&info.id).await.unwrap().info.inbox, 0);
}

#[tokio::test]
async fn oversized_body_is_413_json() {
    let h = Harness::start().await;
    let c = h.admin();
    let info = c.deploy(&counter_request()).await.unwrap();
    let big = "x".repeat(paths::BODY_LIMIT + 1);
    let (status, code, message) = api_error(c.send_text(&info.id, &big).await);
    assert_eq!((status, code.as_str()), (413, "too_large"), "{message}");
    assert_eq!(c.inspect(&info.id).await.unwrap().info.inbox, 0);

    // The deploy route takes more than 1 MiB (4 MiB here).
    let mut request = counter_request();
    request.module_base64 =
        base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3 * 1024 * 1024]);
    let big = c.deploy(&request).await.unwrap();
    assert_ne!(big.id, info.id);

    // The server keeps serving.
    c.health().await.unwrap();
}

fn rustls_client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn handshake(
    h: &Harness,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let port = h.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

#[tokio::test]
async fn tls12_only_client_is_refused() {
    let h = Harness::start().await;
    let result = handshake(&h, rustls_client(&h.ca_pem, &[&rustls::version::TLS12])).await;
    let Err(error) = result else {
        panic!("a TLS 1.2-only client must not get through");
    };
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .map(|e| e.to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(
        inner.to_lowercase().contains("protocol") || inner.to_lowercase().contains("version"),
        "{inner}"
    );
    // A failed handshake does not stop the server.
    h.client(None).health().await.unwrap();
}

#[tokio::test]
async fn negotiates_tls13_and_http1() {
    let h = Harness::start().await;
    let stream = handshake(
        &h,
        rustls_client(
            &h.ca_pem,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        ),
    )
    .await
    .unwrap();
    let (_, conn) = stream.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn a_different_ca_is_refused() {
    let h = Harness::start().await;
    let other = tempfile::tempdir().unwrap();
    let other_ca = LocalIdentity::load_or_create(other.path()).unwrap();
    let client = Client::new(&h.url, other_ca.ca_pem(), None).unwrap();
    let error = client.health().await.unwrap_err();
    assert!(matches!(error, ClientError::CaMismatch { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("CA"), "{message}");
    assert!(message.contains(&h.url), "{message}");
}

#[tokio::test]
async fn nothing_listening_says_how_to_start_a_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let identity = LocalIdentity::load_or_create(dir.path()).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let error = Client::new(&url, identity.ca_pem(), None)
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::NotRunning { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("sojourn host"), "{message}");
    assert!(message.contains(&url), "{message}");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mut h = Harness::start().await;
    h.admin().health().await.unwrap();
    h.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), &mut h.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    result.unwrap();
    let error = h.client(None).health().await.unwrap_err();
    assert!(matches!(error, ClientError::NotRunning { .. }), "{error:?}");
}

#[tokio::test]
async fn malformed_credentials_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let identity = LocalIdentity::load_or_create(dir.path()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short = Credential {
        name: "short".into(),
        token: "abc".into(),
        role: Role::Admin,
    };
    let error = serve(
        listener,
        identity.server_tls_config().unwrap(),
        Arc::new(FakeHost::new()),
        vec![short],
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn client_config_is_written_0600_and_open_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/client.toml");
    let config = ClientConfig {
        url: "https://127.0.0.1:7878".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
        token: "t0ken".into(),
    };
    config.write_private(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(ClientConfig::load(&path).unwrap(), config);
    // Rewriting replaces it (still 0600), and leaves no temporary file behind.
    config.write_private(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = ClientConfig::load(&path).unwrap_err();
    assert!(
        matches!(error, ConfigError::TooOpen { mode: 0o644, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("chmod 600"), "{error}");
}

#[cfg(unix)]
#[test]
fn local_identity_is_generated_once_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalIdentity::load_or_create(dir.path()).unwrap();
    assert!(first.created());
    let tls = dir.path().join("tls");
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(mode(&tls.join("server.key")), 0o600);
    assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    // No CA key is kept.
    let mut names: Vec<String> = std::fs::read_dir(&tls)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.pem", "server.key", "server.pem"]);

    let second = LocalIdentity::load_or_create(dir.path()).unwrap();
    assert!(!second.created());
    assert_eq!(second.ca_pem(), first.ca_pem());
    assert_eq!(second.server().cert_chain(), first.server().cert_chain());

    std::fs::remove_file(tls.join("server.pem")).unwrap();
    let error = LocalIdentity::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(
            error,
            IdentityError::Incomplete {
                missing: "server.pem",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn explicit_pem_files_serve() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalIdentity::load_or_create(dir.path()).unwrap();
    let tls = dir.path().join("tls");
    let explicit =
        ServerIdentity::from_pem_files(&tls.join("server.pem"), &tls.join("server.key")).unwrap();
    let ca = local.ca_pem().to_string();
    let h = Harness::start_with(dir, &explicit, ca).await;
    h.client(None).health().await.unwrap();

    let garbage = h.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let error = ServerIdentity::from_pem_files(&garbage, &tls.join("server.key")).unwrap_err();
    assert!(matches!(error, IdentityError::Pem { .. }), "{error:?}");
}

#[tokio::test]
async fn cli_commands_drive_the_host() {
    let h = Harness::start().await;
    let args = h.connect_args();
    let ok = std::process::ExitCode::SUCCESS;

    let code = cli::deploy(cli::DeployArgs {
        dir: examples().join("counter"),
        connect: args.clone(),
    })
    .await
    .unwrap();
    assert_eq!(code, ok);
    let id = h.admin().list().await.unwrap()[0].id.clone();

    assert_eq!(
        cli::ls(cli::LsArgs {
            connect: args.clone()
        })
        .await
        .unwrap(),
        ok
    );
    cli::inspect(cli::InspectArgs {
        id: id[..6].to_string(),
        connect: args.clone(),
    })
    .await
    .unwrap();
    let json = ConnectArgs {
        json: true,
        ..args.clone()
    };
    assert_eq!(
        cli::inspect(cli::InspectArgs {
            id: "counter".into(),
            connect: json.clone()
        })
        .await
        .unwrap(),
        ok
    );
    cli::send(cli::SendArgs {
        id: "counter".into(),
        message: "AAEC".into(),
        base64: true,
        connect: args.clone(),
    })
    .await
    .unwrap();
    let error = cli::send(cli::SendArgs {
        id: "counter".into(),
        message: "not base64!".into(),
        base64: true,
        connect: args.clone(),
    })
    .await
    .unwrap_err();
    assert!(error.to_string().contains("--base64"), "{error}");
    cli::suspend(cli::SuspendArgs {
        id: id[..8].to_string(),
        reason: Some("test".into()),
        connect: args.clone(),
    })
    .await
    .unwrap();
    cli::resume(cli::ResumeArgs {
        id: id.clone(),
        connect: args.clone(),
    })
    .await
    .unwrap();
    cli::health(cli::HealthArgs {
        connect: ConnectArgs {
            token: None,
            ..args.clone()
        },
    })
    .await
    .unwrap();

    let out = h.dir.path().join("lineage.cbor");
    cli::lineage_export(cli::LineageExportArgs {
        id: "counter".into(),
        out: out.clone(),
        connect: args.clone(),
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), lineage_bytes(&id));
}

/// Sends one hand-written HTTP/1.1 request over TLS and returns the whole answer as text.
async fn raw_http(h: &Harness, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = handshake(h, rustls_client(&h.ca_pem, &[&rustls::version::TLS13]))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn raw_requests_get_json_errors_and_headers() {
    let h = Harness::start().await;
    let info = h.admin().deploy(&counter_request()).await.unwrap();

    // 401 carries a Bearer challenge; every answer says no-store.
    let answer = raw_http(
        &h,
        "GET /v1/objects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(lower.contains("www-authenticate: bearer"), "{answer}");
    assert!(lower.contains("cache-control: no-store"), "{answer}");
    assert!(lower.contains("content-type: application/json"), "{answer}");
    assert!(answer.contains(r#""code":"unauthenticated""#), "{answer}");

    // A body that is not declared as JSON is refused as JSON.
    let body = r#"{"text":"hi"}"#;
    let answer = raw_http(
        &h,
        &format!(
            "POST /v1/objects/{}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            info.id,
            h.admin.token,
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"invalid_request""#), "{answer}");
    assert!(
        answer.contains("Content-Type: application/json"),
        "{answer}"
    );

    // A chunked body over the limit (no Content-Length to judge by) is a 413 too.
    let chunk = "x".repeat(64 * 1024);
    let mut request = format!(
        "POST /v1/objects/{}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        info.id, h.admin.token
    );
    for _ in 0..(paths::BODY_LIMIT / chunk.len() + 1) {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw_http(&h, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer:.300}");

    // The Authorization scheme must be Bearer.
    let answer = raw_http(
        &h,
        &format!(
            "GET /v1/objects HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            h.admin.token
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

// ---------------------------------------------------------------------------------------
// Migration routes.

fn offer(transfer: &str) -> MigrationOffer {
    MigrationOffer {
        version: 1,
        transfer: transfer.into(),
        object: "0123456789abcdef0123456789abcdef".into(),
        challenge: "cd".repeat(32),
        source: "https://127.0.0.1:1".into(),
    }
}

fn migrate_request(h: &Harness) -> MigrateRequest {
    MigrateRequest {
        to: "https://127.0.0.1:9".into(),
        ca_pem: h.ca_pem.clone(),
        token: "destination-token-0123456789".into(),
    }
}

#[tokio::test]
async fn migration_routes_reach_the_host() {
    let h = Harness::start().await;
    let admin = h.admin();
    let peer = h.peer();

    let request = migrate_request(&h);
    let report = admin.migrate("counter", &request).await.unwrap();
    assert_eq!(report.outcome, "transferred");
    assert_eq!(report.destination, request.to);
    // The object id is one path segment, whatever it holds.
    let (status, code, _) = api_error(admin.migrate("missing", &request).await);
    assert_eq!((status, code.as_str()), (404, "not_found"));

    let drain = DrainRequest {
        to: vec![request.clone()],
        deadline_s: Some(30),
    };
    let drained = admin.drain(&drain).await.unwrap();
    assert_eq!(drained.moved.len(), 1);
    assert!(drained.stayed.is_empty() && drained.pending.is_empty());

    let transfer = "ab".repeat(16);
    let key = "cd".repeat(32);
    let (answer, _) = peer.migration_offer(&offer(&transfer)).await.unwrap();
    assert_eq!(answer.evidence_base64.as_deref(), Some("ZXZpZGVuY2U="));
    let sealed: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let ack = peer
        .migration_package(&transfer, &key, &sealed)
        .await
        .unwrap();
    assert_eq!(
        (ack.transfer.as_str(), ack.outcome.as_str()),
        (transfer.as_str(), "ack")
    );
    let status = MigrationStatusRequest {
        transfer: transfer.clone(),
    };
    let decided = peer.migration_status(&status).await.unwrap();
    assert_eq!(decided.outcome, "aborted");
    assert_eq!(decided.reason.as_deref(), Some("no package arrived"));
    let refusal = MigrationRefusalRequest {
        transfer: transfer.clone(),
        reason: "policy refused the evidence".into(),
    };
    peer.migration_refusal(&refusal).await.unwrap();
    // The refusal is a bare 204.
    let raw = peer
        .call(
            Method::POST,
            paths::MIGRATION_REFUSAL,
            Some(serde_json::to_vec(&refusal).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 204);
    assert!(raw.body.is_empty());

    let calls = h.fake.calls();
    assert_eq!(calls.len(), 7, "{calls:?}");
    assert_eq!(
        calls[0],
        MigrationCall::Migrate("counter".into(), request.clone())
    );
    assert_eq!(calls[1], MigrationCall::Drain(drain));
    assert!(matches!(&calls[2], MigrationCall::Offer(o, _) if *o == offer(&transfer)));
    assert_eq!(
        calls[3],
        MigrationCall::Package {
            transfer: transfer.clone(),
            key: key.clone(),
            bytes: sealed.len(),
            digest: Sha256::digest(&sealed).into(),
            order: sojourn_api::PackageOrder::Layout,
        }
    );
    assert_eq!(calls[4], MigrationCall::Status(status));
    assert_eq!(calls[5], MigrationCall::Refusal(refusal.clone()));
    assert_eq!(calls[6], MigrationCall::Refusal(refusal));
}

#[tokio::test]
async fn offer_channel_is_the_connections_exporter() {
    let h = Harness::start().await;
    let peer = h.peer();
    let decode = |answer: &MigrationOfferAnswer| -> [u8; 32] {
        base64::engine::general_purpose::STANDARD
            .decode(answer.binding_base64.as_deref().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let (first, ours_first) = peer
        .migration_offer(&offer(&"01".repeat(16)))
        .await
        .unwrap();
    let (second, ours_second) = peer
        .migration_offer(&offer(&"02".repeat(16)))
        .await
        .unwrap();
    // What the server handed to the host is what this side of the same connection exports.
    assert_eq!(decode(&first), ours_first);
    assert_eq!(decode(&second), ours_second);
    // Each connection has its own value.
    assert_ne!(ours_first, ours_second);
    assert_ne!(ours_first, [0u8; 32]);
    let calls = h.fake.calls();
    let channels: Vec<[u8; 32]> = calls
        .iter()
        .filter_map(|c| match c {
            MigrationCall::Offer(_, channel) => Some(*channel),
            _ => None,
        })
        .collect();
    assert_eq!(channels, [ours_first, ours_second]);
}

#[tokio::test]
async fn migration_roles() {
    let h = Harness::start().await;
    let transfer = "ab".repeat(16);
    let key = "cd".repeat(32);
    let request = migrate_request(&h);
    let drain = DrainRequest {
        to: vec![request.clone()],
        deadline_s: None,
    };
    let status = MigrationStatusRequest {
        transfer: transfer.clone(),
    };
    let refusal = MigrationRefusalRequest {
        transfer: transfer.clone(),
        reason: "no".into(),
    };

    // A read token reaches none of them.
    let r = h.reader();
    for (what, result) in [
        ("migrate", r.migrate("counter", &request).await.map(|_| ())),
        ("drain", r.drain(&drain).await.map(|_| ())),
        (
            "offer",
            r.migration_offer(&offer(&transfer)).await.map(|_| ()),
        ),
        (
            "package",
            r.migration_package(&transfer, &key, b"x").await.map(|_| ()),
        ),
        ("status", r.migration_status(&status).await.map(|_| ())),
        ("refusal", r.migration_refusal(&refusal).await),
    ] {
        let (status, code, message) = api_error(result);
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "{what}: {message}"
        );
    }

    // A peer token reaches only the host-to-host routes: not deploy, migrate, drain, nor reads.
    let p = h.peer();
    for (what, result) in [
        ("deploy", p.deploy(&counter_request()).await.map(|_| ())),
        ("migrate", p.migrate("counter", &request).await.map(|_| ())),
        ("drain", p.drain(&drain).await.map(|_| ())),
        ("list", p.list().await.map(|_| ())),
        ("metrics", p.metrics().await.map(|_| ())),
    ] {
        let (status, code, message) = api_error(result);
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "{what}: {message}"
        );
        assert!(
            message.contains("host-b") && message.contains("peer"),
            "{message}"
        );
    }
    p.migration_offer(&offer(&transfer)).await.unwrap();
    p.migration_package(&transfer, &key, b"x").await.unwrap();
    p.migration_status(&status).await.unwrap();
    p.migration_refusal(&refusal).await.unwrap();
    p.health().await.unwrap();

    // An admin token reaches everything.
    let a = h.admin();
    a.migration_offer(&offer(&transfer)).await.unwrap();
    a.migration_package(&transfer, &key, b"x").await.unwrap();
    a.migration_status(&status).await.unwrap();
    a.migration_refusal(&refusal).await.unwrap();

    // No token: 401.
    let (status, _, _) = api_error(h.client(None).migration_offer(&offer(&transfer)).await);
    assert_eq!(status, 401);
    // Only the accepted calls reached the host: 4 by the peer, 4 by the admin.
    assert_eq!(h.fake.calls().len(), 8);
}

/// A link that sends whole packages waits for every part; a package that ends early or runs
/// long is an error, not a shorter or longer package.
#[test]
fn package_parts_collect_to_exactly_the_announced_bytes() {
    let (tx, parts) = sojourn_api::package_parts(6);
    let t = std::thread::spawn(move || parts.collect_blocking());
    assert!(tx.send(Arc::new(b"abc".to_vec())));
    assert!(tx.send(Arc::new(Vec::new())));
    assert!(tx.send(Arc::new(b"def".to_vec())));
    drop(tx);
    assert_eq!(t.join().unwrap().unwrap(), b"abcdef");
    for (announced, sent) in [(6u64, 5usize), (6, 7), (0, 1)] {
        let (tx, parts) = sojourn_api::package_parts(announced);
        assert!(tx.send(Arc::new(vec![1; sent])));
        drop(tx);
        let e = parts.collect_blocking().unwrap_err();
        assert!(e.contains("bytes"), "{announced} {sent}: {e}");
    }
    let (_tx, parts) = sojourn_api::package_parts(u64::MAX);
    assert!(parts.collect_blocking().unwrap_err().contains("at most"));
}

/// A package sent in parts while it is sealed arrives whole, under the length announced up
/// front; one that ends early, or runs longer than announced, fails at the client and never
/// reaches the host.
#[tokio::test]
async fn a_package_sent_in_parts_arrives_whole_or_not_at_all() {
    let h = Harness::start().await;
    let p = h.peer();
    let transfer = "ab".repeat(16);
    let key = "cd".repeat(32);
    let pieces: Vec<Arc<Vec<u8>>> = vec![
        Arc::new(vec![1; 74]),
        Arc::new(vec![2; 1 << 20]),
        Arc::new(Vec::new()),
        Arc::new((0..70_000u32).map(|i| i as u8).collect()),
    ];
    let whole: Vec<u8> = pieces.iter().flat_map(|x| x.iter().copied()).collect();
    let (tx, parts) = sojourn_api::package_parts(whole.len() as u64);
    // The parts come while the request is already on its way.
    let sealer = std::thread::spawn({
        let pieces = pieces.clone();
        move || {
            for piece in pieces {
                std::thread::sleep(Duration::from_millis(20));
                assert!(tx.send(piece));
            }
        }
    });
    let answer = p
        .migration_package_parts(&transfer, &key, parts)
        .await
        .unwrap();
    sealer.join().unwrap();
    assert_eq!(answer.outcome, "ack");
    let digest: [u8; 32] = Sha256::digest(&whole).into();
    assert!(matches!(
        h.fake.calls().last(),
        Some(MigrationCall::Package { bytes, digest: d, order, .. })
            if *bytes == whole.len() && *d == digest && *order == sojourn_api::PackageOrder::Layout
    ));
    // In the order with each tag after its segment: its content type tells the host.
    let (tx, parts) = sojourn_api::package_parts_in(
        whole.len() as u64,
        sojourn_api::PackageOrder::TagAfterSegment,
    );
    for piece in &pieces {
        assert!(tx.send(Arc::clone(piece)));
    }
    drop(tx);
    p.migration_package_parts(&transfer, &key, parts)
        .await
        .unwrap();
    assert!(matches!(
        h.fake.calls().last(),
        Some(MigrationCall::Package { digest: d, order, .. })
            if *d == digest && *order == sojourn_api::PackageOrder::TagAfterSegment
    ));
    // Such parts cannot be joined into a package in its layout.
    let (tx, parts) = sojourn_api::package_parts_in(3, sojourn_api::PackageOrder::TagAfterSegment);
    assert!(tx.send(Arc::new(vec![1, 2, 3])));
    drop(tx);
    assert!(parts.collect_blocking().is_err());

    let calls = h.fake.calls().len();
    // Ends early: the sealer stopped (its sender dropped) after 500 of 1000 bytes.
    let (tx, parts) = sojourn_api::package_parts(1000);
    assert!(tx.send(Arc::new(vec![3; 500])));
    drop(tx);
    let e = p
        .migration_package_parts(&transfer, &key, parts)
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
    // Longer than announced.
    let (tx, parts) = sojourn_api::package_parts(10);
    assert!(tx.send(Arc::new(vec![4; 20])));
    drop(tx);
    assert!(p
        .migration_package_parts(&transfer, &key, parts)
        .await
        .is_err());
    // Over the limit: refused before connecting.
    let (_tx, parts) = sojourn_api::package_parts(paths::PACKAGE_BODY_LIMIT as u64 + 1);
    let e = p
        .migration_package_parts(&transfer, &key, parts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    assert_eq!(
        h.fake.calls().len(),
        calls,
        "nothing incomplete reached the host"
    );
}

#[tokio::test]
async fn package_body_limit_and_shape() {
    let h = Harness::start().await;
    let p = h.peer();
    let transfer = "ab".repeat(16);
    let key = "cd".repeat(32);

    // 2 MiB: over the 1 MiB of the other routes, under the package limit.
    let sealed = vec![7u8; 2 * 1024 * 1024];
    p.migration_package(&transfer, &key, &sealed).await.unwrap();
    assert!(matches!(
        h.fake.calls().last(),
        Some(MigrationCall::Package { bytes, .. }) if *bytes == sealed.len()
    ));

    // Not octet-stream: 400.
    let path = paths::migration_package_path(&transfer, &key);
    let (status, code, message) =
        api_error(p.call(Method::POST, &path, Some(b"{}".to_vec())).await);
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_request"),
        "{message}"
    );
    assert!(message.contains("octet-stream"), "{message}");

    // Ids that are not hex: 400.
    let (status, code, _) = api_error(p.migration_package("not-hex", &key, b"x").await);
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    let (status, _, _) = api_error(p.migration_package(&transfer, &"f".repeat(129), b"x").await);
    assert_eq!(status, 400);

    // Declared larger than the limit: 413 before anything is read.
    let answer = raw_http(
        &h,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            h.peer.token,
            paths::PACKAGE_BODY_LIMIT + 1
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer:.300}");
    // Only the 2 MiB package reached the host.
    assert_eq!(h.fake.calls().len(), 1);
}

#[tokio::test]
async fn a_host_without_migration_answers_405() {
    let h = Harness::start_control(Arc::new(NoMigrationHost), ServeOptions::default()).await;
    let a = h.admin();
    let transfer = "ab".repeat(16);
    let request = migrate_request(&h);
    for (what, result) in [
        ("migrate", a.migrate("counter", &request).await.map(|_| ())),
        (
            "drain",
            a.drain(&DrainRequest {
                to: vec![request.clone()],
                deadline_s: None,
            })
            .await
            .map(|_| ()),
        ),
        (
            "offer",
            a.migration_offer(&offer(&transfer)).await.map(|_| ()),
        ),
        (
            "package",
            a.migration_package(&transfer, &transfer, b"x")
                .await
                .map(|_| ()),
        ),
        (
            "status",
            a.migration_status(&MigrationStatusRequest {
                transfer: transfer.clone(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "refusal",
            a.migration_refusal(&MigrationRefusalRequest {
                transfer: transfer.clone(),
                reason: "x".into(),
            })
            .await,
        ),
    ] {
        let (status, code, message) = api_error(result);
        assert_eq!(
            (status, code.as_str()),
            (405, "method_not_allowed"),
            "{what}: {message}"
        );
    }
}

#[tokio::test]
async fn a_long_migration_outlives_the_header_timeout() {
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let fake = Arc::new(FakeHost::new());
    let h = Harness::start_control(fake.clone(), options).await;
    let started = Instant::now();
    let report = h
        .admin()
        .migrate("slow", &migrate_request(&h))
        .await
        .unwrap();
    assert!(started.elapsed() >= SLOW_MIGRATION);
    assert_eq!(report.outcome, "transferred");
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn cli_migrate_and_drain() {
    let source = Harness::start().await;
    let destination = Harness::start().await;
    let dest_file = destination.peer_client_file("destination.toml");
    let args = |object: &str, json: bool| cli::MigrateArgs {
        object: object.into(),
        from: Some(source.url.clone()),
        to: dest_file.display().to_string(),
        destination: cli::DestinationArgs::default(),
        connect: ConnectArgs {
            json,
            ..source.connect_args()
        },
    };
    let expected = MigrateRequest {
        to: destination.url.clone(),
        ca_pem: destination.ca_pem.clone(),
        token: destination.peer.token.clone(),
    };

    let code = cli::migrate(args("counter", false)).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(
        source.fake.calls(),
        [MigrationCall::Migrate("counter".into(), expected.clone())]
    );
    cli::migrate(args("counter", true)).await.unwrap();

    for (object, says) in [
        ("refuse-me", "still runs at the source"),
        ("abort-me", "still runs at the source"),
        ("pending-me", "runs on neither host"),
    ] {
        let e = cli::migrate(args(object, false)).await.unwrap_err();
        assert!(format!("{e:#}").contains(says), "{object}: {e:#}");
        // The same with --json.
        assert!(cli::migrate(args(object, true)).await.is_err());
    }
    let e = cli::migrate(args("missing", false)).await.unwrap_err();
    assert!(format!("{e:#}").contains("not_found"), "{e:#}");

    // Destination as a URL with --to-ca and --to-token.
    let mut by_url = args("counter", false);
    by_url.to = destination.url.clone();
    by_url.destination = cli::DestinationArgs {
        to_ca: Some(destination.ca_file.clone()),
        to_token: Some(destination.peer.token.clone()),
    };
    cli::migrate(by_url).await.unwrap();
    assert_eq!(
        source.fake.calls().last(),
        Some(&MigrationCall::Migrate("counter".into(), expected.clone()))
    );
    // Nothing reached the destination: the source host talks to it, not the CLI.
    assert!(destination.fake.calls().is_empty());

    let drain = |deadline_s| cli::DrainArgs {
        to: vec![dest_file.display().to_string()],
        deadline_s,
        destination: cli::DestinationArgs::default(),
        connect: source.connect_args(),
    };
    let code = cli::drain(drain(Some(30))).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(
        source.fake.calls().last(),
        Some(&MigrationCall::Drain(DrainRequest {
            to: vec![expected],
            deadline_s: Some(30),
        }))
    );
    // An object that stays: exit status 1 with a message.
    let e = cli::drain(drain(Some(0))).await.unwrap_err();
    assert!(format!("{e:#}").contains("1 object stayed"), "{e:#}");
}
