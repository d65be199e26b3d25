//! The client-side commands of the `sojourn` binary: `deploy`, `ls`, `inspect`, `send`,
//! `suspend`, `resume`, `health`, `migrate`, `drain` and `lineage export`.
//!
//! Each command is an `async fn` taking its clap arguments and returning
//! `anyhow::Result<ExitCode>`; run it inside the binary's tokio runtime. Errors name the
//! host's code and message (`not_found: no object 'x'`); the binary prints them on stderr
//! and exits 1. With `--json`, a command prints the host's JSON answer as received.
//!
//! Which host (see [`resolve`]): `--host URL` (with `--token`/`$SOJOURN_TOKEN` and
//! `--ca FILE`), else the file named by `$SOJOURN_CLIENT_CONFIG`, else
//! `<data dir>/client.toml` (see [`crate::default_data_dir`]). With `--host` but no `--ca`
//! (or no token), a client file whose URL is the same host supplies them.
//!
//! `migrate` and `drain` name other hosts too (`--from`, `--to`): each is either a host's
//! client file (`client.toml`: URL, CA, token) or an `https://` URL, whose CA and token come
//! from `--to-ca`/`--to-token`/`$SOJOURN_TO_TOKEN` or, as for `--host`, from a discovered
//! client file with the same URL.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use sojourn_policy::DescriptorSource;

use crate::client::{Method, RawResponse, Target};
use crate::config::{self, ClientConfig, ConfigError};
use crate::{
    fsutil, paths, Client, ClientError, DeployRequest, DrainReport, DrainRequest, Health,
    MigrateRequest, MigrationReport, ObjectDetail, ObjectInfo, ObjectList, SendReceipt,
    SendRequest, SuspendRequest,
};

/// Environment variable holding the destination's token for `migrate` and `drain`.
pub const ENV_TO_TOKEN: &str = "SOJOURN_TO_TOKEN";

/// The request timeout of `sojourn migrate` (a migration returns when it is decided).
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The connect timeout of `migrate` and `drain` (as for every other call).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadline of a drain when `--deadline-s` is not given (the host's default).
const DEFAULT_DRAIN_DEADLINE_S: u64 = 60;

/// How to reach the host; every client command takes these.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The host, as https://HOST:PORT [default: the URL in $SOJOURN_CLIENT_CONFIG or in
    /// DATA_DIR/client.toml].
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// Bearer token [default: $SOJOURN_TOKEN, else the client file's]. Other local users
    /// can see command lines: prefer $SOJOURN_TOKEN or the client file.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PEM file of the CA to trust for the host (its tls/ca.pem) [default: the client
    /// file's CA].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the host's JSON answer as is.
    #[arg(long)]
    pub json: bool,
}

/// `sojourn deploy DIR`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// The object directory (holding object.toml and the module it names).
    pub dir: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn ls`.
#[derive(clap::Args, Debug, Clone)]
pub struct LsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn inspect ID`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// Object id, a unique prefix of at least 4 hex characters, or a unique name.
    pub id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn send ID MESSAGE`.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Object id, unique prefix or name.
    pub id: String,
    /// The message: UTF-8 text, or base64 bytes with --base64.
    pub message: String,
    /// MESSAGE is base64 (standard alphabet, padded) of the bytes to send.
    #[arg(long)]
    pub base64: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn suspend ID`.
#[derive(clap::Args, Debug, Clone)]
pub struct SuspendArgs {
    /// Object id, unique prefix or name.
    pub id: String,
    /// Why (recorded with the object).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn resume ID`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    /// Object id, unique prefix or name.
    pub id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn health`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn lineage export ID -o FILE`.
#[derive(clap::Args, Debug, Clone)]
pub struct LineageExportArgs {
    /// Object id, unique prefix or name.
    pub id: String,
    /// Where to write the lineage (a CBOR sequence; replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How to reach a destination of `migrate` or `drain` given as a URL.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DestinationArgs {
    /// PEM file of the CA to trust for a destination given as a URL (its tls/ca.pem)
    /// [default: the CA of a discovered client file with the same URL]. Also overrides the CA
    /// of a destination given as a client file.
    #[arg(long = "to-ca", value_name = "FILE")]
    pub to_ca: Option<PathBuf>,
    /// The destination's token, role `peer` or `admin` [default: $SOJOURN_TO_TOKEN, else the
    /// destination's client file's]. Prefer $SOJOURN_TO_TOKEN: command lines are visible.
    #[arg(long = "to-token", value_name = "TOKEN")]
    pub to_token: Option<String>,
}

/// `sojourn migrate OBJECT --to HOST [--from HOST]`.
#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Object id, unique prefix or name, on the source host.
    pub object: String,
    /// The source host: a host's client file (client.toml) or https://HOST:PORT (then
    /// --token/$SOJOURN_TOKEN and --ca, or a discovered client file with that URL)
    /// [default: the host every command talks to].
    #[arg(long, value_name = "HOST", conflicts_with = "host")]
    pub from: Option<String>,
    /// The destination host: its client file (client.toml) or https://HOST:PORT (then
    /// --to-token/$SOJOURN_TO_TOKEN and --to-ca).
    #[arg(long, value_name = "HOST")]
    pub to: String,
    #[command(flatten)]
    pub destination: DestinationArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `sojourn drain --to HOST[,HOST...]`.
#[derive(clap::Args, Debug, Clone)]
pub struct DrainArgs {
    /// The destinations, in order of preference: client files or https://HOST:PORT URLs,
    /// comma-separated or repeated. Each object goes to the first whose evidence its policy
    /// accepts.
    #[arg(long, value_name = "HOST", value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Seconds the host has to move the objects [default: 60].
    #[arg(long = "deadline-s", value_name = "N")]
    pub deadline_s: Option<u64>,
    #[command(flatten)]
    pub destination: DestinationArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The client commands, for a binary that wants them all as top-level subcommands
/// (`#[command(flatten)]` into its own `Subcommand` enum). `lineage export` is not here: it
/// belongs under the binary's `lineage` group ([`LineageExportArgs`], [`lineage_export`]).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Deploy an object package to the running host: checks it locally, uploads it, and
    /// prints the new object's id.
    Deploy(DeployArgs),
    /// List the host's objects.
    Ls(LsArgs),
    /// Show one object: state, schedule and its last transitions.
    Inspect(InspectArgs),
    /// Send a message to an object; returns once it is durable.
    Send(SendArgs),
    /// Suspend an object (it keeps its state and inbox and does not wake).
    Suspend(SuspendArgs),
    /// Resume a suspended object.
    Resume(ResumeArgs),
    /// Check that the host runs and its store accepts commits.
    Health(HealthArgs),
    /// Move an object to another host that proves (by attestation) that it satisfies the
    /// object's migration policy; waits until the move is decided (up to 15 minutes).
    Migrate(MigrateArgs),
    /// Move every object of the host to other hosts (each to the first destination its
    /// policy accepts), within a deadline.
    Drain(DrainArgs),
}

/// Runs one client command.
pub async fn run(command: ClientCommand) -> Result<ExitCode> {
    match command {
        ClientCommand::Deploy(a) => deploy(a).await,
        ClientCommand::Ls(a) => ls(a).await,
        ClientCommand::Inspect(a) => inspect(a).await,
        ClientCommand::Send(a) => send(a).await,
        ClientCommand::Suspend(a) => suspend(a).await,
        ClientCommand::Resume(a) => resume(a).await,
        ClientCommand::Health(a) => health(a).await,
        ClientCommand::Migrate(a) => migrate(a).await,
        ClientCommand::Drain(a) => drain(a).await,
    }
}

/// Where and how to connect, after discovery.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    /// The host URL.
    pub url: String,
    /// The CA PEM to trust.
    pub ca_pem: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Where the settings came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .field("source", &self.source)
            .finish()
    }
}

/// Finds the host to talk to (module docs give the order).
pub fn resolve(args: &ConnectArgs) -> Result<Connection> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    resolve_with(args, &env, config::default_client_config_path())
}

fn resolve_with(
    args: &ConnectArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: Result<PathBuf, ConfigError>,
) -> Result<Connection> {
    resolve_named(args, env, default_file, "--ca")
}

/// [`resolve_with`], naming the CA flag `ca_flag` in messages.
fn resolve_named(
    args: &ConnectArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: Result<PathBuf, ConfigError>,
    ca_flag: &str,
) -> Result<Connection> {
    let token = args
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| env(config::ENV_TOKEN));
    let ca_pem = match &args.ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{ca_flag}: cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let file = match env(config::ENV_CLIENT_CONFIG) {
        Some(p) => Ok(PathBuf::from(p)),
        None => default_file,
    };
    match &args.host {
        Some(url) => {
            let wanted = Target::parse(url)?;
            let from_file = if ca_pem.is_some() && token.is_some() {
                None
            } else {
                match &file {
                    Ok(path) => load_if_present(path)?
                        .filter(|c| Target::parse(&c.url).is_ok_and(|t| t == wanted))
                        .map(|c| (c, path.clone())),
                    Err(_) => None,
                }
            };
            let source = match &from_file {
                Some((_, path)) => format!("--host, with {}", path.display()),
                None => "--host".to_string(),
            };
            let (file_ca, file_token) = match from_file {
                Some((c, _)) => (Some(c.ca_pem), Some(c.token)),
                None => (None, None),
            };
            let ca_pem = ca_pem.or(file_ca).ok_or_else(|| {
                anyhow!(
                    "no CA to trust for {url}: pass {ca_flag} FILE (the host's tls/ca.pem in its \
                     data directory), or use the client.toml the host wrote"
                )
            })?;
            Ok(Connection {
                url: url.trim().to_string(),
                ca_pem,
                token: token.or(file_token),
                source,
            })
        }
        None => {
            let path = file.context("no host given (--host) and no client file")?;
            let config = load_if_present(&path)?.ok_or_else(|| {
                anyhow!(
                    "no host configured: {} does not exist. Start a host with `sojourn host` \
                     (it writes that file), point $SOJOURN_CLIENT_CONFIG at a client file, or \
                     pass --host URL --ca FILE (token in $SOJOURN_TOKEN)",
                    path.display()
                )
            })?;
            Ok(Connection {
                url: config.url,
                ca_pem: ca_pem.unwrap_or(config.ca_pem),
                token: token.or(Some(config.token)),
                source: path.display().to_string(),
            })
        }
    }
}

/// Loads a client file; `None` if it does not exist.
fn load_if_present(path: &Path) -> Result<Option<ClientConfig>> {
    match ClientConfig::load(path) {
        Ok(c) => Ok(Some(c)),
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a `--from`/`--to` value is a URL (else it names a client file).
fn is_url(spec: &str) -> bool {
    spec.contains("://")
}

/// A connection from a client file named on the command line, with explicit overrides.
fn from_client_file(
    flag: &str,
    path: &Path,
    ca_pem: Option<String>,
    token: Option<String>,
) -> Result<Connection> {
    let config = load_if_present(path)?.ok_or_else(|| {
        anyhow!(
            "{flag} {}: no such file (give a host's client.toml or an https://HOST:PORT URL)",
            path.display()
        )
    })?;
    Ok(Connection {
        url: config.url,
        ca_pem: ca_pem.unwrap_or(config.ca_pem),
        token: token.or(Some(config.token)),
        source: path.display().to_string(),
    })
}

/// The source host of `migrate`: `--from` (a client file or a URL, with the other connect
/// arguments), else the usual discovery.
fn resolve_source(
    from: Option<&str>,
    args: &ConnectArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: Result<PathBuf, ConfigError>,
) -> Result<Connection> {
    match from {
        None => resolve_with(args, env, default_file),
        Some(url) if is_url(url) => {
            let args = ConnectArgs {
                host: Some(url.to_string()),
                ..args.clone()
            };
            resolve_with(&args, env, default_file)
        }
        Some(path) => {
            let token = args
                .token
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(|| env(config::ENV_TOKEN));
            let ca_pem = read_ca("--ca", args.ca.as_deref())?;
            from_client_file("--from", Path::new(path), ca_pem, token)
        }
    }
}

fn read_ca(flag: &str, path: Option<&Path>) -> Result<Option<String>> {
    match path {
        Some(path) => {
            Ok(Some(std::fs::read_to_string(path).with_context(|| {
                format!("{flag}: cannot read {}", path.display())
            })?))
        }
        None => Ok(None),
    }
}

/// A destination of `migrate`/`drain` (a client file or a URL) as the source host needs it.
/// Its token comes from `--to-token`, `$SOJOURN_TO_TOKEN` or its client file, never from
/// `--token`/`$SOJOURN_TOKEN` (those are the source's).
fn resolve_destination(
    spec: &str,
    args: &DestinationArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: Result<PathBuf, ConfigError>,
) -> Result<MigrateRequest> {
    let token = args
        .to_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| env(ENV_TO_TOKEN));
    let connection = if is_url(spec) {
        let connect = ConnectArgs {
            host: Some(spec.to_string()),
            token,
            ca: args.to_ca.clone(),
            json: false,
        };
        let env = |name: &str| {
            if name == config::ENV_TOKEN {
                None
            } else {
                env(name)
            }
        };
        resolve_named(&connect, &env, default_file, "--to-ca")
            .with_context(|| format!("destination {spec}"))?
    } else {
        let ca_pem = read_ca("--to-ca", args.to_ca.as_deref())?;
        from_client_file("--to", Path::new(spec), ca_pem, token)?
    };
    let token = connection.token.ok_or_else(|| {
        anyhow!(
            "no token for the destination {spec}: pass --to-token, set ${ENV_TO_TOKEN}, or give \
             the destination's client file (a token with the peer or admin role)"
        )
    })?;
    Target::parse(&connection.url).with_context(|| format!("destination {spec}"))?;
    Ok(MigrateRequest {
        to: connection.url.trim().trim_end_matches('/').to_string(),
        ca_pem: connection.ca_pem,
        token,
    })
}

/// Refuses a destination that is the source itself.
fn not_the_source(source: &Connection, destination: &MigrateRequest) -> Result<()> {
    let src = Target::parse(&source.url)?;
    if Target::parse(&destination.to).is_ok_and(|d| d == src) {
        bail!(
            "the destination {} is the source host itself",
            destination.to
        );
    }
    Ok(())
}

/// The source and the request of `sojourn migrate`.
fn plan_migrate(
    args: &MigrateArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: &dyn Fn() -> Result<PathBuf, ConfigError>,
) -> Result<(Connection, MigrateRequest)> {
    let source = resolve_source(args.from.as_deref(), &args.connect, env, default_file())?;
    let request = resolve_destination(&args.to, &args.destination, env, default_file())?;
    not_the_source(&source, &request)?;
    Ok((source, request))
}

/// The source and the request of `sojourn drain`.
fn plan_drain(
    args: &DrainArgs,
    env: &dyn Fn(&str) -> Option<String>,
    default_file: &dyn Fn() -> Result<PathBuf, ConfigError>,
) -> Result<(Connection, DrainRequest)> {
    let source = resolve_with(&args.connect, env, default_file())?;
    let mut to = Vec::with_capacity(args.to.len());
    for spec in args.to.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let request = resolve_destination(spec, &args.destination, env, default_file())?;
        not_the_source(&source, &request)?;
        to.push(request);
    }
    if to.is_empty() {
        bail!("--to: name at least one destination");
    }
    Ok((
        source,
        DrainRequest {
            to,
            deadline_s: args.deadline_s,
        },
    ))
}

/// A client for [`resolve`]'s connection.
pub fn connect(args: &ConnectArgs) -> Result<Client> {
    let c = resolve(args)?;
    Client::new(&c.url, &c.ca_pem, c.token)
        .with_context(|| format!("connection settings from {}", c.source))
}

/// Adds a hint to an error where one helps.
fn explain(e: ClientError, client: &Client) -> anyhow::Error {
    let hint = match &e {
        ClientError::Api { body, .. } if body.code == "unauthenticated" && !client.has_token() => {
            Some("no token: pass --token, set $SOJOURN_TOKEN, or use the host's client.toml")
        }
        _ => None,
    };
    match hint {
        Some(h) => anyhow!("{e}\n  hint: {h}"),
        None => anyhow!(e),
    }
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<RawResponse> {
    client
        .call(method, path, body)
        .await
        .map_err(|e| explain(e, client))
}

fn print_raw(raw: &RawResponse) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(&raw.body)?;
    if !raw.body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// An object package read from disk and checked locally.
#[derive(Debug)]
struct Package {
    object_toml: String,
    module: Vec<u8>,
    name: String,
}

/// Reads `<dir>/object.toml` and its module (which must be inside `dir`, also through
/// symlinks) and binds them, as the host will.
fn read_package(dir: &Path) -> Result<Package> {
    let toml_path = dir.join("object.toml");
    let object_toml = std::fs::read_to_string(&toml_path)
        .with_context(|| format!("cannot read {}", toml_path.display()))?;
    let source = DescriptorSource::parse_toml(&toml_path.display().to_string(), &object_toml)?;
    let rel = Path::new(&source.module_path);
    if source.module_path.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(
            "{}: object.module: a path inside the object directory, found {:?}",
            toml_path.display(),
            source.module_path
        );
    }
    let module_path = dir.join(rel);
    let real_dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let real_module = module_path.canonicalize().with_context(|| {
        format!(
            "{}: object.module: cannot read {}",
            toml_path.display(),
            module_path.display()
        )
    })?;
    if !real_module.starts_with(&real_dir) {
        bail!(
            "{}: object.module: {} leads outside the object directory (through a symlink)",
            toml_path.display(),
            module_path.display()
        );
    }
    let module = std::fs::read(&real_module).with_context(|| {
        format!(
            "{}: object.module: cannot read {}",
            toml_path.display(),
            module_path.display()
        )
    })?;
    let descriptor = source.with_module(&module)?;
    Ok(Package {
        object_toml,
        module,
        name: descriptor.name,
    })
}

/// `sojourn deploy DIR`.
pub async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    let package = read_package(&args.dir)?;
    let request = DeployRequest {
        object_toml: package.object_toml,
        module_base64: base64::engine::general_purpose::STANDARD.encode(&package.module),
    };
    let body = serde_json::to_vec(&request)?;
    if body.len() > paths::DEPLOY_BODY_LIMIT {
        bail!(
            "{}: the package is {} KiB once encoded; a host accepts at most {} KiB",
            args.dir.display(),
            body.len() / 1024,
            paths::DEPLOY_BODY_LIMIT / 1024
        );
    }
    let client = connect(&args.connect)?;
    let json = args.connect.json;
    if !json {
        eprint!(
            "uploading {} ({} KiB)… ",
            package.name,
            body.len().div_ceil(1024)
        );
        let _ = std::io::stderr().flush();
    }
    let raw = match call(&client, Method::POST, paths::OBJECTS, Some(body)).await {
        Ok(raw) => {
            if !json {
                eprintln!("done");
            }
            raw
        }
        Err(e) => {
            if !json {
                eprintln!("failed");
            }
            return Err(e);
        }
    };
    if json {
        print_raw(&raw)?;
    } else {
        let info: ObjectInfo = client.parse(&raw)?;
        println!(
            "deployed {} as {} (seq {}, {})",
            clean(&info.name),
            info.id,
            info.seq,
            clean(&info.status)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn ls`.
pub async fn ls(args: LsArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let raw = call(&client, Method::GET, paths::OBJECTS, None).await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let list: ObjectList = client.parse(&raw)?;
        print!("{}", render_ls(&list.objects, now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn inspect ID`.
pub async fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let path = paths::object_path(paths::OBJECT, &args.id);
    let raw = call(&client, Method::GET, &path, None).await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let detail: ObjectDetail = client.parse(&raw)?;
        print!("{}", render_detail(&detail, now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn send ID MESSAGE`.
pub async fn send(args: SendArgs) -> Result<ExitCode> {
    let request = if args.base64 {
        base64::engine::general_purpose::STANDARD
            .decode(args.message.trim())
            .context("--base64: MESSAGE is not standard padded base64")?;
        SendRequest {
            text: None,
            base64: Some(args.message.trim().to_string()),
        }
    } else {
        SendRequest {
            text: Some(args.message.clone()),
            base64: None,
        }
    };
    let client = connect(&args.connect)?;
    let path = paths::object_path(paths::MESSAGES, &args.id);
    let raw = call(
        &client,
        Method::POST,
        &path,
        Some(serde_json::to_vec(&request)?),
    )
    .await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let r: SendReceipt = client.parse(&raw)?;
        println!(
            "queued for {} as arrival #{} ({} waiting)",
            short(&r.id),
            r.arrival,
            plural(r.inbox, "message")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn suspend ID`.
pub async fn suspend(args: SuspendArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let request = SuspendRequest {
        reason: args.reason.clone(),
    };
    let path = paths::object_path(paths::SUSPEND, &args.id);
    let raw = call(
        &client,
        Method::POST,
        &path,
        Some(serde_json::to_vec(&request)?),
    )
    .await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let info: ObjectInfo = client.parse(&raw)?;
        let why = info
            .suspended_reason
            .as_deref()
            .map(|r| format!(": {}", clean(r)))
            .unwrap_or_default();
        println!("suspended {} ({}){why}", clean(&info.name), short(&info.id));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn resume ID`.
pub async fn resume(args: ResumeArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let path = paths::object_path(paths::RESUME, &args.id);
    let raw = call(&client, Method::POST, &path, Some(b"{}".to_vec())).await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let info: ObjectInfo = client.parse(&raw)?;
        println!(
            "resumed {} ({}), next wake {}",
            clean(&info.name),
            short(&info.id),
            next_wake(&info, now_ms())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sojourn health`.
pub async fn health(args: HealthArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let raw = call(&client, Method::GET, paths::HEALTH, None).await?;
    if args.connect.json {
        print_raw(&raw)?;
    } else {
        let h: Health = client.parse(&raw)?;
        print!("{}", render_health(&h, client.url()));
    }
    Ok(ExitCode::SUCCESS)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A client of the source host of `migrate`/`drain`, with a request timeout for a long call.
fn long_client(source: &Connection, timeout: Duration) -> Result<Client> {
    Ok(
        Client::new(&source.url, &source.ca_pem, source.token.clone())
            .with_context(|| format!("connection settings from {}", source.source))?
            .with_timeouts(CONNECT_TIMEOUT, timeout),
    )
}

/// [`call`] for a long operation: a timeout says that the host goes on.
async fn long_call(client: &Client, path: &str, body: Vec<u8>, what: &str) -> Result<RawResponse> {
    match client.call(Method::POST, path, Some(body)).await {
        Ok(raw) => Ok(raw),
        Err(e @ ClientError::Timeout { .. }) => Err(anyhow!(
            "{e}\n  the {what} goes on at the source host: look at its objects with `sojourn ls`"
        )),
        Err(e) => Err(explain(e, client)),
    }
}

/// `sojourn migrate OBJECT --to HOST`: asks the source host to move the object, waits for the
/// outcome (up to [`MIGRATE_TIMEOUT`]) and prints the report. Exit status 0 when the object
/// was transferred; an error (exit 1) when it was refused, aborted or is pending.
pub async fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let (source, request) = plan_migrate(&args, &process_env, &config::default_client_config_path)?;
    let client = long_client(&source, MIGRATE_TIMEOUT)?;
    let json = args.connect.json;
    if !json {
        eprintln!(
            "migrating {} from {} to {}…",
            clean(&args.object),
            clean(client.url()),
            clean(&request.to)
        );
    }
    let path = paths::object_path(paths::MIGRATE, &args.object);
    let raw = long_call(&client, &path, serde_json::to_vec(&request)?, "migration").await?;
    let report: MigrationReport = client.parse(&raw)?;
    if json {
        print_raw(&raw)?;
    } else {
        print!("{}", render_migration(&report));
    }
    migration_verdict(&report)
}

/// Exit status of `migrate`: success for `transferred`, else an error saying where the object
/// runs.
fn migration_verdict(r: &MigrationReport) -> Result<ExitCode> {
    let why = r
        .reason
        .as_deref()
        .map(|w| format!(": {}", clean(w)))
        .unwrap_or_default();
    match r.outcome.as_str() {
        "transferred" => Ok(ExitCode::SUCCESS),
        "refused" => {
            let code = r
                .refusal_code
                .as_deref()
                .map(|c| format!(" (refusal code {})", clean(c)))
                .unwrap_or_default();
            bail!(
                "migration refused{code}{why}\n  the destination's evidence does not satisfy the \
                 object's migration policy; the object still runs at the source host"
            )
        }
        "aborted" => bail!(
            "migration aborted{why}\n  nothing was transferred; the object still runs at the \
             source host"
        ),
        "pending" => bail!(
            "migration pending{why}\n  the package may have reached the destination, which has \
             not answered yet: the object runs on neither host until it decides. The source host \
             keeps asking it; then the object runs at the destination (ack) or again at the \
             source (aborted)"
        ),
        other => bail!(
            "the host reported an unknown migration outcome {:?}; look at the object on both \
             hosts",
            clean(other)
        ),
    }
}

/// `sojourn drain --to HOST[,HOST...]`: asks the host to move every object, waits (the
/// deadline plus [`MIGRATE_TIMEOUT`] at most) and prints what moved, what is pending and what
/// stayed. Exit status 0 when every object moved; an error (exit 1) otherwise.
pub async fn drain(args: DrainArgs) -> Result<ExitCode> {
    let (source, request) = plan_drain(&args, &process_env, &config::default_client_config_path)?;
    let deadline = request.deadline_s.unwrap_or(DEFAULT_DRAIN_DEADLINE_S);
    let client = long_client(
        &source,
        MIGRATE_TIMEOUT.saturating_add(Duration::from_secs(deadline)),
    )?;
    let json = args.connect.json;
    if !json {
        let to: Vec<String> = request.to.iter().map(|d| clean(&d.to)).collect();
        eprintln!(
            "draining {} to {} (deadline {deadline} s)…",
            clean(client.url()),
            to.join(", ")
        );
    }
    let raw = long_call(
        &client,
        paths::DRAIN,
        serde_json::to_vec(&request)?,
        "drain",
    )
    .await?;
    let report: DrainReport = client.parse(&raw)?;
    if json {
        print_raw(&raw)?;
    } else {
        print!("{}", render_drain(&report));
    }
    drain_verdict(&report)
}

fn drain_verdict(r: &DrainReport) -> Result<ExitCode> {
    if r.stayed.is_empty() && r.pending.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut parts = Vec::new();
    if !r.stayed.is_empty() {
        parts.push(format!(
            "{} stayed at the source host (not moved; they remain in its store)",
            plural(r.stayed.len() as u64, "object")
        ));
    }
    if !r.pending.is_empty() {
        parts.push(format!(
            "{} pending (they run on no host until their destination decides; the source \
             host keeps asking)",
            plural(r.pending.len() as u64, "object")
        ));
    }
    bail!("the drain did not move everything: {}", parts.join("; "))
}

/// `sojourn lineage export ID -o FILE`: writes the object's committed lineage (the CBOR
/// sequence `sojourn lineage verify` reads), replacing FILE atomically.
pub async fn lineage_export(args: LineageExportArgs) -> Result<ExitCode> {
    let client = connect(&args.connect)?;
    let path = paths::object_path(paths::LINEAGE, &args.id);
    let raw = call(&client, Method::GET, &path, None).await?;
    fsutil::write_atomic(&args.out, &raw.body, 0o644)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if args.connect.json {
        let summary = serde_json::json!({
            "id": args.id,
            "file": args.out.display().to_string(),
            "bytes": raw.body.len(),
        });
        println!("{summary}");
    } else {
        println!(
            "wrote the lineage of {} ({} bytes) to {}\n  verify it with: sojourn lineage verify {}",
            clean(&args.id),
            raw.body.len(),
            args.out.display(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Host-provided text made safe for a terminal: control characters are escaped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn short(id: &str) -> String {
    clean(&id.chars().take(12).collect::<String>())
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A positive duration in a short human form: `250ms`, `4.2s`, `42s`, `5m03s`, `3h05m`,
/// `2d04h`.
fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 10 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

fn next_wake(info: &ObjectInfo, now: i64) -> String {
    if info.status != "active" {
        return "-".to_string();
    }
    match info.next_wake_ms {
        None => "on message".to_string(),
        Some(at) if at <= now => "due".to_string(),
        Some(at) => format!("in {}", human_duration(at.saturating_sub(now))),
    }
}

fn ago(at: i64, now: i64) -> String {
    let d = now.saturating_sub(at);
    if d <= 0 {
        "just now".to_string()
    } else {
        format!("{} ago", human_duration(d))
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_ls(objects: &[ObjectInfo], now: i64) -> String {
    if objects.is_empty() {
        return "no objects\n".to_string();
    }
    let mut rows = vec![["ID", "NAME", "SEQ", "STATUS", "NEXT-WAKE", "INBOX"]
        .map(str::to_string)
        .to_vec()];
    for o in objects {
        rows.push(vec![
            short(&o.id),
            clean(&o.name),
            o.seq.to_string(),
            clean(&o.status),
            next_wake(o, now),
            o.inbox.to_string(),
        ]);
    }
    table(&rows)
}

fn render_detail(d: &ObjectDetail, now: i64) -> String {
    let o = &d.info;
    let mut rows: Vec<Vec<String>> = vec![
        vec!["id".into(), clean(&o.id)],
        vec!["name".into(), clean(&o.name)],
        vec!["status".into(), clean(&o.status)],
    ];
    if let Some(r) = &o.suspended_reason {
        rows.push(vec!["reason".into(), clean(r)]);
    }
    rows.extend([
        vec!["seq".into(), o.seq.to_string()],
        vec!["next wake".into(), next_wake(o, now)],
        vec![
            "cadence".into(),
            d.cadence_ms
                .map(|c| format!("{c} ms"))
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["inbox".into(), plural(o.inbox, "message")],
        vec![
            "lineage".into(),
            plural(d.lineage_entries, "entry").replace("entrys", "entries"),
        ],
        vec!["descriptor".into(), clean(&o.descriptor_digest)],
        vec!["state digest".into(), clean(&o.state_digest)],
    ]);
    let mut out = table(&rows);
    out.push_str("state:\n");
    match &d.state {
        serde_json::Value::Object(fields) if fields.is_empty() => out.push_str("  (no fields)\n"),
        serde_json::Value::Object(fields) => {
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(k, v)| {
                    vec![
                        format!("  {}", clean(k)),
                        format!("= {}", clean(&v.to_string())),
                    ]
                })
                .collect();
            out.push_str(&table(&rows));
        }
        other => out.push_str(&format!("  {}\n", clean(&other.to_string()))),
    }
    if d.recent.is_empty() {
        out.push_str("recent transitions: none\n");
    } else {
        out.push_str("recent transitions (newest last):\n");
        let mut rows = vec![["  SEQ", "ENTRY", "OUTCOME", "AT", "STATE", "DETAIL"]
            .map(str::to_string)
            .to_vec()];
        for t in &d.recent {
            let mut detail: Vec<String> = Vec::new();
            if let Some(r) = &t.reason {
                detail.push(clean(r));
            }
            if !t.outputs.is_empty() {
                let outputs: Vec<String> = t.outputs.iter().map(|o| clean(o)).collect();
                detail.push(format!("emitted {}", outputs.join(", ")));
            }
            rows.push(vec![
                format!("  {}", t.seq),
                clean(&t.entry),
                clean(&t.outcome),
                ago(t.at_ms, now),
                short(&t.state_after),
                detail.join("; "),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// Microseconds as milliseconds with one decimal: `35.2 ms`.
fn millis(micros: u64) -> String {
    format!("{}.{} ms", micros / 1000, (micros % 1000) / 100)
}

/// A byte count in a short human form: `512 B`, `12.3 KiB`, `4.0 MiB`.
fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n < KIB {
        format!("{n} B")
    } else if n < MIB {
        format!("{}.{} KiB", n / KIB, (n % KIB) * 10 / KIB)
    } else {
        format!("{}.{} MiB", n / MIB, (n % MIB) * 10 / MIB)
    }
}

fn render_migration(r: &MigrationReport) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        vec!["outcome".into(), clean(&r.outcome)],
        vec![
            "object".into(),
            format!("{} ({})", clean(&r.name), short(&r.object)),
        ],
        vec!["destination".into(), clean(&r.destination)],
        vec!["transfer".into(), clean(&r.transfer)],
    ];
    if let Some(reason) = &r.reason {
        rows.push(vec!["reason".into(), clean(reason)]);
    }
    if let Some(code) = &r.refusal_code {
        rows.push(vec!["refusal code".into(), clean(code)]);
    }
    if let Some(appraisal) = &r.appraisal {
        rows.push(vec!["appraisal".into(), clean(appraisal)]);
    }
    rows.extend([
        vec!["seq".into(), r.seq.to_string()],
        vec![
            "package".into(),
            if r.package_bytes == 0 {
                "none sent".to_string()
            } else {
                format!(
                    "{} ({} bytes)",
                    human_bytes(r.package_bytes),
                    r.package_bytes
                )
            },
        ],
        vec!["downtime".into(), millis(r.downtime_micros)],
    ]);
    let mut out = table(&rows);
    if !r.steps.is_empty() {
        out.push_str("steps:\n");
        let rows: Vec<Vec<String>> = r
            .steps
            .iter()
            .map(|s| vec![format!("  {}", clean(&s.name)), millis(s.micros)])
            .collect();
        out.push_str(&table(&rows));
    }
    out
}

fn render_drain(r: &DrainReport) -> String {
    if r.moved.is_empty() && r.pending.is_empty() && r.stayed.is_empty() {
        return "no objects to move\n".to_string();
    }
    let mut out = String::new();
    if !r.moved.is_empty() {
        out.push_str(&format!("moved ({}):\n", r.moved.len()));
        let rows: Vec<Vec<String>> = r
            .moved
            .iter()
            .map(|m| {
                vec![
                    format!("  {}", clean(&m.name)),
                    short(&m.object),
                    format!("→ {}", clean(&m.destination)),
                    format!("downtime {}", millis(m.downtime_micros)),
                ]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if !r.pending.is_empty() {
        out.push_str(&format!(
            "pending ({}): running nowhere until the destination decides\n",
            r.pending.len()
        ));
        let rows: Vec<Vec<String>> = r
            .pending
            .iter()
            .map(|m| {
                vec![
                    format!("  {}", clean(&m.name)),
                    short(&m.object),
                    format!("→ {}", clean(&m.destination)),
                    m.reason.as_deref().map(clean).unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if !r.stayed.is_empty() {
        out.push_str(&format!("stayed ({}):\n", r.stayed.len()));
        for s in &r.stayed {
            out.push_str(&format!("  {} {}\n", clean(&s.name), short(&s.object)));
            if s.reasons.is_empty() {
                out.push_str("    (no destination tried)\n");
            }
            for reason in &s.reasons {
                out.push_str(&format!("    {}\n", clean(reason)));
            }
        }
    }
    out
}

fn render_health(h: &Health, url: &str) -> String {
    let attestation = if h.attestation == "software" {
        "software (INSECURE: no hardware TEE evidence)".to_string()
    } else {
        clean(&h.attestation)
    };
    table(&[
        vec!["host".into(), url.to_string()],
        vec!["status".into(), clean(&h.status)],
        vec!["version".into(), clean(&h.version)],
        vec!["attestation".into(), attestation],
        vec!["objects".into(), h.objects.to_string()],
        vec![
            "uptime".into(),
            if h.uptime_s < 10 {
                format!("{}s", h.uptime_s)
            } else {
                human_duration(i64::try_from(h.uptime_s.saturating_mul(1000)).unwrap_or(i64::MAX))
            },
        ],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str, wake: Option<i64>, status: &str) -> ObjectInfo {
        ObjectInfo {
            id: id.into(),
            name: name.into(),
            descriptor_digest: "d".into(),
            seq: 7,
            status: status.into(),
            suspended_reason: None,
            next_wake_ms: wake,
            inbox: 2,
            state_digest: "s".into(),
        }
    }

    #[test]
    fn ls_table() {
        let objects = vec![
            info(
                "0123456789abcdef0123456789abcdef",
                "counter",
                Some(1_500),
                "active",
            ),
            info(
                "fedcba9876543210fedcba9876543210",
                "esc\u{1b}[2Jrow",
                None,
                "active",
            ),
            info(
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "t",
                Some(0),
                "suspended",
            ),
        ];
        let text = render_ls(&objects, 1_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ID            NAME"));
        assert!(lines[1].starts_with("0123456789ab  counter"));
        assert!(lines[1].contains("in 500ms"));
        assert!(lines[2].contains("on message"));
        assert!(!text.contains('\u{1b}'), "control characters are escaped");
        assert!(lines[3].contains("suspended"));
        assert_eq!(render_ls(&[], 0), "no objects\n");
    }

    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCommand {
        #[command(flatten)]
        Client(ClientCommand),
        LineageExport(LineageExportArgs),
    }

    #[test]
    fn clap_definitions_embed_and_parse() {
        use clap::{CommandFactory, Parser};
        TestCli::command().debug_assert();
        let cli = TestCli::try_parse_from([
            "sojourn",
            "send",
            "abcd",
            "AAE=",
            "--base64",
            "--host",
            "https://[::1]:7",
            "--json",
        ])
        .unwrap();
        let TestCommand::Client(ClientCommand::Send(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(args.base64 && args.connect.json);
        assert_eq!(args.connect.host.as_deref(), Some("https://[::1]:7"));
        let cli =
            TestCli::try_parse_from(["sojourn", "lineage-export", "abcd", "-o", "x.cbor"]).unwrap();
        assert!(
            matches!(cli.command, TestCommand::LineageExport(a) if a.out == Path::new("x.cbor"))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(250), "250ms");
        assert_eq!(human_duration(4_250), "4.2s");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(303_000), "5m03s");
        assert_eq!(human_duration(3 * 3_600_000 + 5 * 60_000), "3h05m");
        assert_eq!(human_duration(2 * 86_400_000 + 4 * 3_600_000), "2d04h");
    }

    fn write_config(dir: &Path, name: &str, url: &str) -> PathBuf {
        let path = dir.join(name);
        ClientConfig {
            url: url.into(),
            ca_pem: format!("CA of {url}"),
            token: format!("token-of-{url}"),
        }
        .write_private(&path)
        .unwrap();
        path
    }

    #[test]
    fn discovery_order() {
        let dir = tempfile::tempdir().unwrap();
        let default = write_config(dir.path(), "client.toml", "https://127.0.0.1:7000");
        let named = write_config(dir.path(), "other.toml", "https://127.0.0.1:7001");
        let no_env = |_: &str| None;
        let none = ConnectArgs::default();

        // Default file.
        let c = resolve_with(&none, &no_env, Ok(default.clone())).unwrap();
        assert_eq!(c.url, "https://127.0.0.1:7000");
        assert_eq!(c.token.as_deref(), Some("token-of-https://127.0.0.1:7000"));

        // $SOJOURN_CLIENT_CONFIG wins over the default; $SOJOURN_TOKEN over the file's token.
        let named_s = named.display().to_string();
        let env = |k: &str| match k {
            "SOJOURN_CLIENT_CONFIG" => Some(named_s.clone()),
            "SOJOURN_TOKEN" => Some("from-env".to_string()),
            _ => None,
        };
        let c = resolve_with(&none, &env, Ok(default.clone())).unwrap();
        assert_eq!(c.url, "https://127.0.0.1:7001");
        assert_eq!(c.token.as_deref(), Some("from-env"));

        // --host matching the discovered file borrows its CA and token.
        let args = ConnectArgs {
            host: Some("https://127.0.0.1:7000/".into()),
            ..ConnectArgs::default()
        };
        let c = resolve_with(&args, &no_env, Ok(default.clone())).unwrap();
        assert_eq!(c.ca_pem, "CA of https://127.0.0.1:7000");
        assert_eq!(c.token.as_deref(), Some("token-of-https://127.0.0.1:7000"));

        // --host for another host without --ca: refused with a clear message.
        let args = ConnectArgs {
            host: Some("https://127.0.0.1:9999".into()),
            ..ConnectArgs::default()
        };
        let e = resolve_with(&args, &no_env, Ok(default.clone())).unwrap_err();
        assert!(e.to_string().contains("--ca"), "{e}");

        // Nothing configured.
        let e = resolve_with(&none, &no_env, Ok(dir.path().join("missing.toml"))).unwrap_err();
        assert!(e.to_string().contains("sojourn host"), "{e}");

        // A named file that does not exist is an error too.
        let missing = dir.path().join("nope.toml").display().to_string();
        let env = |k: &str| (k == "SOJOURN_CLIENT_CONFIG").then(|| missing.clone());
        assert!(resolve_with(&none, &env, Ok(default)).is_err());
    }

    #[test]
    fn migrate_and_drain_parse() {
        use clap::Parser;
        let cli = TestCli::try_parse_from([
            "sojourn",
            "migrate",
            "counter",
            "--from",
            "a/client.toml",
            "--to",
            "https://10.0.0.2:7443",
            "--to-ca",
            "b-ca.pem",
            "--to-token",
            "tok",
            "--json",
        ])
        .unwrap();
        let TestCommand::Client(ClientCommand::Migrate(a)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(a.object, "counter");
        assert_eq!(a.from.as_deref(), Some("a/client.toml"));
        assert_eq!(a.to, "https://10.0.0.2:7443");
        assert_eq!(a.destination.to_ca.as_deref(), Some(Path::new("b-ca.pem")));
        assert_eq!(a.destination.to_token.as_deref(), Some("tok"));
        assert!(a.connect.json);

        // --to is required; --from and --host are exclusive.
        assert!(TestCli::try_parse_from(["sojourn", "migrate", "counter"]).is_err());
        assert!(TestCli::try_parse_from([
            "sojourn",
            "migrate",
            "counter",
            "--to",
            "b.toml",
            "--from",
            "a.toml",
            "--host",
            "https://127.0.0.1:1",
        ])
        .is_err());
        // Without --from the usual connect arguments name the source.
        let cli = TestCli::try_parse_from([
            "sojourn",
            "migrate",
            "abcd",
            "--to",
            "b.toml",
            "--host",
            "https://127.0.0.1:1",
        ])
        .unwrap();
        let TestCommand::Client(ClientCommand::Migrate(a)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(a.from, None);
        assert_eq!(a.connect.host.as_deref(), Some("https://127.0.0.1:1"));

        let cli = TestCli::try_parse_from([
            "sojourn",
            "drain",
            "--to",
            "b.toml,https://10.0.0.3:7443",
            "--to",
            "c.toml",
            "--deadline-s",
            "30",
            "--host",
            "https://127.0.0.1:1",
        ])
        .unwrap();
        let TestCommand::Client(ClientCommand::Drain(a)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(a.to, ["b.toml", "https://10.0.0.3:7443", "c.toml"]);
        assert_eq!(a.deadline_s, Some(30));
        assert!(!a.connect.json);
        assert!(TestCli::try_parse_from(["sojourn", "drain"]).is_err());
        assert!(TestCli::try_parse_from([
            "sojourn",
            "drain",
            "--to",
            "b.toml",
            "--deadline-s",
            "x"
        ])
        .is_err());
    }

    #[test]
    fn migrate_resolves_source_and_destination() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_config(dir.path(), "a.toml", "https://127.0.0.1:7000");
        let b = write_config(dir.path(), "b.toml", "https://127.0.0.1:7001");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "explicit CA").unwrap();
        let no_env = |_: &str| None;
        let default = || Ok(a.clone());
        let args = |from: Option<&Path>, to: &str| MigrateArgs {
            object: "counter".into(),
            from: from.map(|p| p.display().to_string()),
            to: to.into(),
            destination: DestinationArgs::default(),
            connect: ConnectArgs::default(),
        };

        // Client files on both sides.
        let (src, req) =
            plan_migrate(&args(Some(&a), &b.display().to_string()), &no_env, &default).unwrap();
        assert_eq!(src.url, "https://127.0.0.1:7000");
        assert_eq!(
            src.token.as_deref(),
            Some("token-of-https://127.0.0.1:7000")
        );
        assert_eq!(req.to, "https://127.0.0.1:7001");
        assert_eq!(req.ca_pem, "CA of https://127.0.0.1:7001");
        assert_eq!(req.token, "token-of-https://127.0.0.1:7001");

        // Default source; destination as a URL with --to-ca and $SOJOURN_TO_TOKEN (never
        // $SOJOURN_TOKEN, which is the source's).
        let env = |k: &str| match k {
            "SOJOURN_TO_TOKEN" => Some("dest-token".to_string()),
            "SOJOURN_TOKEN" => Some("source-token".to_string()),
            _ => None,
        };
        let mut m = args(None, "https://10.0.0.2:7443/");
        m.destination.to_ca = Some(ca.clone());
        let (src, req) = plan_migrate(&m, &env, &default).unwrap();
        assert_eq!(src.url, "https://127.0.0.1:7000");
        assert_eq!(src.token.as_deref(), Some("source-token"));
        assert_eq!(req.to, "https://10.0.0.2:7443");
        assert_eq!(req.ca_pem, "explicit CA");
        assert_eq!(req.token, "dest-token");
        // --to-token wins over the environment.
        m.destination.to_token = Some("flag-token".into());
        assert_eq!(
            plan_migrate(&m, &env, &default).unwrap().1.token,
            "flag-token"
        );

        // A URL destination without a CA: the message names --to-ca.
        let m = args(None, "https://10.0.0.2:7443");
        let e = plan_migrate(&m, &env, &default).unwrap_err();
        assert!(format!("{e:#}").contains("--to-ca"), "{e:#}");
        // ... and without a token: names --to-token.
        let mut m = args(None, "https://10.0.0.2:7443");
        m.destination.to_ca = Some(ca.clone());
        let e = plan_migrate(&m, &no_env, &default).unwrap_err();
        assert!(format!("{e:#}").contains("--to-token"), "{e:#}");

        // A URL destination matching the discovered client file borrows its CA and token.
        let env_b = |k: &str| (k == "SOJOURN_CLIENT_CONFIG").then(|| b.display().to_string());
        let m = args(Some(&a), "https://127.0.0.1:7001");
        let (_, req) = plan_migrate(&m, &env_b, &default).unwrap();
        assert_eq!(req.token, "token-of-https://127.0.0.1:7001");

        // --from as a URL, with the usual connect arguments.
        let mut m = args(None, &b.display().to_string());
        m.from = Some("https://127.0.0.1:7000".into());
        let (src, _) = plan_migrate(&m, &no_env, &default).unwrap();
        assert_eq!(src.ca_pem, "CA of https://127.0.0.1:7000");

        // The destination must not be the source; a missing file is named.
        let e =
            plan_migrate(&args(Some(&a), &a.display().to_string()), &no_env, &default).unwrap_err();
        assert!(e.to_string().contains("source host itself"), "{e}");
        let missing = dir.path().join("missing.toml");
        let e = plan_migrate(
            &args(Some(&a), &missing.display().to_string()),
            &no_env,
            &default,
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }

    #[test]
    fn drain_resolves_every_destination() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_config(dir.path(), "a.toml", "https://127.0.0.1:7000");
        let b = write_config(dir.path(), "b.toml", "https://127.0.0.1:7001");
        let c = write_config(dir.path(), "c.toml", "https://127.0.0.1:7002");
        let no_env = |_: &str| None;
        let default = || Ok(a.clone());
        let args = DrainArgs {
            to: vec![b.display().to_string(), c.display().to_string()],
            deadline_s: Some(30),
            destination: DestinationArgs::default(),
            connect: ConnectArgs::default(),
        };
        let (src, req) = plan_drain(&args, &no_env, &default).unwrap();
        assert_eq!(src.url, "https://127.0.0.1:7000");
        assert_eq!(req.deadline_s, Some(30));
        let urls: Vec<&str> = req.to.iter().map(|d| d.to.as_str()).collect();
        assert_eq!(urls, ["https://127.0.0.1:7001", "https://127.0.0.1:7002"]);
        assert_eq!(req.to[1].token, "token-of-https://127.0.0.1:7002");

        let mut args = args;
        args.to.push(a.display().to_string());
        let e = plan_drain(&args, &no_env, &default).unwrap_err();
        assert!(e.to_string().contains("source host itself"), "{e}");
    }

    fn report(outcome: &str) -> MigrationReport {
        MigrationReport {
            object: "0123456789abcdef0123456789abcdef".into(),
            name: "counter".into(),
            transfer: "ff".repeat(16),
            destination: "https://10.0.0.2:7443".into(),
            outcome: outcome.into(),
            reason: (outcome != "transferred").then(|| "measurement mismatch".to_string()),
            refusal_code: (outcome == "refused").then(|| "measurement".to_string()),
            appraisal: Some("snp: measurement ab12…, tcb 3.0.0.8, debug off".into()),
            seq: 42,
            package_bytes: 12_595,
            downtime_micros: 35_250,
            steps: vec![
                crate::MigrationStep {
                    name: "quiesce".into(),
                    micros: 300,
                },
                crate::MigrationStep {
                    name: "transfer".into(),
                    micros: 12_000,
                },
            ],
        }
    }

    #[test]
    fn migration_report_and_exit_status() {
        let text = render_migration(&report("transferred"));
        assert!(text.starts_with("outcome      transferred\n"), "{text}");
        assert!(text.contains("counter (0123456789ab)"), "{text}");
        assert!(text.contains("12.2 KiB (12595 bytes)"), "{text}");
        assert!(text.contains("downtime     35.2 ms"), "{text}");
        assert!(text.contains("  quiesce   0.3 ms"), "{text}");
        assert!(text.contains("  transfer  12.0 ms"), "{text}");
        assert!(text.contains("appraisal    snp: measurement"), "{text}");
        assert_eq!(
            migration_verdict(&report("transferred")).unwrap(),
            ExitCode::SUCCESS
        );
        for (outcome, says) in [
            ("refused", "still runs at the source"),
            ("aborted", "still runs at the source"),
            ("pending", "runs on neither host"),
            ("weird", "unknown"),
        ] {
            let e = migration_verdict(&report(outcome)).unwrap_err().to_string();
            assert!(e.contains(says), "{outcome}: {e}");
        }
        let e = migration_verdict(&report("refused"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusal code measurement"), "{e}");
    }

    #[test]
    fn drain_report_and_exit_status() {
        let empty = DrainReport {
            moved: vec![],
            stayed: vec![],
            pending: vec![],
        };
        assert_eq!(render_drain(&empty), "no objects to move\n");
        assert_eq!(drain_verdict(&empty).unwrap(), ExitCode::SUCCESS);
        let moved = DrainReport {
            moved: vec![report("transferred")],
            ..empty.clone()
        };
        assert!(render_drain(&moved).contains("→ https://10.0.0.2:7443"));
        assert_eq!(drain_verdict(&moved).unwrap(), ExitCode::SUCCESS);
        let mixed = DrainReport {
            moved: vec![report("transferred")],
            stayed: vec![crate::DrainStay {
                object: "aa".repeat(16),
                name: "ledger".into(),
                reasons: vec!["https://10.0.0.2:7443: refused (measurement)".into()],
            }],
            pending: vec![report("pending")],
        };
        let text = render_drain(&mixed);
        assert!(
            text.contains("stayed (1):\n  ledger aaaaaaaaaaaa\n    https://10.0.0.2:7443: refused"),
            "{text}"
        );
        assert!(text.contains("pending (1)"), "{text}");
        let e = drain_verdict(&mixed).unwrap_err().to_string();
        assert!(
            e.contains("1 object stayed") && e.contains("1 object pending"),
            "{e}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4 * 1024 * 1024), "4.0 MiB");
        assert_eq!(millis(35_250), "35.2 ms");
        assert_eq!(millis(0), "0.0 ms");
    }

    #[test]
    fn package_module_must_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let toml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/counter/object.toml"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("object.toml"),
            toml.replace("module = \"counter.wasm\"", "module = \"../outside.wasm\""),
        )
        .unwrap();
        let e = read_package(dir.path()).unwrap_err();
        assert!(e.to_string().contains("inside the object directory"), "{e}");

        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("m.wasm"), b"\0asm").unwrap();
            std::os::unix::fs::symlink(outside.path().join("m.wasm"), dir.path().join("m.wasm"))
                .unwrap();
            std::fs::write(
                dir.path().join("object.toml"),
                toml.replace("module = \"counter.wasm\"", "module = \"m.wasm\""),
            )
            .unwrap();
            let e = read_package(dir.path()).unwrap_err();
            assert!(e.to_string().contains("symlink"), "{e}");
        }
    }
}
