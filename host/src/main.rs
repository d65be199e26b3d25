//! `sojourn`: run memory-resident, self-executing WebAssembly objects.
#![forbid(unsafe_code)]

mod cmd_attest;
mod cmd_lineage;

use sojourn_host::{demo, package, runner};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use package::ObjectPackage;
use runner::{ClockMode, RunEvent, Runner, StopWhen};

/// Sojourn hosts WebAssembly *objects*: they stay resident, decide when they run next, and can
/// change their state only through the schema and policy they carry.
#[derive(Parser, Debug)]
#[command(name = "sojourn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one object locally and print each transition (time, entry, accepted/rejected and
    /// why, state digest).
    Run(RunArgs),
    /// Work with object packages (a directory with object.toml and its module).
    #[command(subcommand)]
    Object(ObjectCommand),
    /// Run the sample objects side by side for a few seconds and say what each did.
    Demo(demo::DemoArgs),
    /// Produce and verify attestation evidence (SEV-SNP, TDX, Azure vTPM, software).
    #[command(subcommand)]
    Attest(cmd_attest::AttestCommand),
    /// Verify exported lineages, or export one from a running host.
    #[command(subcommand)]
    Lineage(cmd_lineage::LineageCommand),
    /// Run the host daemon: objects sealed at rest, recovered after a crash, driven over an
    /// authenticated TLS 1.3 API (`sojourn deploy`, `ls`, `inspect`, `send`, ...).
    Host(HostArgs),
    /// Confidential VM images (vm-images/): what a verifier should expect of a host running one.
    #[command(subcommand)]
    Image(ImageCommand),
    #[command(flatten)]
    Client(sojourn_api::cli::ClientCommand),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Compute the SEV-SNP launch digest (direct boot), the vTPM PCRs and the TDX RTMRs of an
    /// image's UKI; print them and write a reference-values file (docs/vm-images.md).
    Measure(Box<sojourn_measure::cli::MeasureArgs>),
}

#[derive(clap::Args, Debug)]
struct HostArgs {
    /// The host configuration (TOML). Without it: local defaults (software attestation,
    /// data in the default data directory, loopback only).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides the config's `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address (overrides the config's `listen`), e.g. 127.0.0.1:7443.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn cmd_host(a: HostArgs) -> Result<ExitCode> {
    // Refused calls, handshake failures and operator actions (from the API layer) go to
    // stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .try_init();
    let (mut config, origin) = match &a.config {
        Some(p) => (
            sojourn_host::daemon::config::HostConfig::load(p).map_err(anyhow::Error::msg)?,
            p.display().to_string(),
        ),
        None => (
            sojourn_host::daemon::config::HostConfig::default(),
            "(none: local defaults)".to_string(),
        ),
    };
    if a.data_dir.is_some() {
        config.data_dir = a.data_dir;
    }
    if a.listen.is_some() {
        config.listen = a.listen;
    }
    sojourn_host::daemon::run::run_host(config, &origin)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The object directory (holding object.toml).
    dir: PathBuf,
    /// Stop after the object has ticked N times.
    #[arg(long, conflicts_with = "for_")]
    ticks: Option<u64>,
    /// Stop after this long, e.g. 500ms, 3s, 1m (default: 10 ticks).
    #[arg(long = "for", value_parser = parse_duration)]
    for_: Option<Duration>,
    /// Simulated time: jump from wake to wake instead of waiting (reproducible).
    #[arg(long)]
    virtual_time: bool,
    /// Send a message before the first wake (repeatable; delivered in order).
    #[arg(long = "send", value_name = "MESSAGE")]
    send: Vec<String>,
    /// One JSON object per transition instead of text.
    #[arg(long)]
    json: bool,
    /// Write the run's lineage (signed, chained, evidence-bound) to this file.
    #[arg(long, value_name = "FILE")]
    lineage_out: Option<PathBuf>,
    /// Evidence for the lineage: `software` (insecure, local) or `hardware` (configfs-tsm).
    #[arg(long, value_enum, default_value = "software", requires = "lineage_out")]
    attestation: cmd_lineage::AttestationMode,
    /// Software attestation key (64 hex characters; see `sojourn attest report
    /// --init-software-key`). Default: an ephemeral key.
    #[arg(long, value_name = "FILE", requires = "lineage_out")]
    software_key: Option<PathBuf>,
    /// Reference values the host appraises its own evidence against (TOML).
    #[arg(long, value_name = "FILE", requires = "lineage_out")]
    reference_values: Option<PathBuf>,
    /// Entries per signed lineage batch.
    #[arg(long, default_value_t = 256, requires = "lineage_out")]
    lineage_batch: usize,
}

#[derive(Subcommand, Debug)]
enum ObjectCommand {
    /// Parse and check a package, and print its descriptor digest (the content address of its
    /// schema, policy and module).
    Pack {
        /// The object directory.
        dir: PathBuf,
        /// Also write the canonical (deterministic CBOR) descriptor to this file.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `250ms`, `3s`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 500ms, 3s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
    }
}

fn print_event(e: &RunEvent, json: bool, with_name: bool) {
    if json {
        let mut v = serde_json::to_value(&e.record).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("object".into(), e.name.clone().into());
            m.insert("at_ms".into(), e.at_ms.into());
            m.insert("lateness_ms".into(), e.lateness_ms.into());
        }
        println!("{v}");
    } else {
        let name = if with_name {
            format!("{:<10} ", e.name)
        } else {
            String::new()
        };
        println!("[{:>6}ms] {name}{}", e.at_ms, e.record.summary());
        for l in &e.record.logs {
            println!("{:>10}  log {l}", "");
        }
        for m in &e.record.emitted {
            println!("{:>10}  emit {:?}", "", String::from_utf8_lossy(m));
        }
    }
}

async fn cmd_run(a: RunArgs) -> Result<ExitCode> {
    let pkg = ObjectPackage::load(&a.dir)?;
    let clock = if a.virtual_time {
        ClockMode::Virtual(1_700_000_000_000)
    } else {
        ClockMode::Real
    };
    let mut runner = Runner::new(clock)?;
    let (idx, init) = runner.add(&pkg)?;
    if !a.json {
        println!(
            "object {} ({}), descriptor {}",
            pkg.descriptor.name,
            init.object_id,
            hex::encode(pkg.descriptor.digest())
        );
    }
    print_event(
        &RunEvent {
            object: idx,
            name: pkg.descriptor.name.clone(),
            at_ms: 0,
            lateness_ms: 0,
            record: init.clone(),
        },
        a.json,
        false,
    );
    if let Some(out) = &a.lineage_out {
        let (writer, note) = cmd_lineage::local_writer(
            init.object_id.0,
            &pkg.descriptor,
            a.attestation,
            a.software_key.as_deref(),
            a.reference_values.as_deref(),
            cmd_lineage::batch_size(a.lineage_batch)?,
        )?;
        if !a.json {
            println!("lineage -> {} ({note})", out.display());
        }
        runner.attach_lineage(idx, writer, &init)?;
    }
    for m in &a.send {
        runner.send_at(0, idx, m.as_bytes());
    }
    let stop = match (a.ticks, a.for_) {
        (Some(n), _) => StopWhen::Ticks(n),
        (None, Some(d)) => StopWhen::Elapsed(d),
        (None, None) => StopWhen::Ticks(10),
    };
    let json = a.json;
    runner
        .run(
            stop,
            |e| print_event(e, json, false),
            |_, err| eprintln!("message refused: {err}"),
        )
        .await?;
    if let Some(out) = &a.lineage_out {
        let bytes = runner.drain_lineage(idx)?;
        std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
        if !a.json {
            println!(
                "lineage: {} bytes written to {}",
                bytes.len(),
                out.display()
            );
        }
    }
    let code = runner
        .objects()
        .map(|(_, o)| o.lock().map(|h| h.object.status().clone()).ok())
        .next()
        .flatten();
    match code {
        Some(sojourn_runtime::Status::Suspended { reason }) => {
            eprintln!("object suspended: {reason}");
            Ok(ExitCode::from(3))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn cmd_pack(dir: PathBuf, out: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let pkg = ObjectPackage::load(&dir)?;
    let d = &pkg.descriptor;
    let encoded = d.encode();
    let digest = hex::encode(d.digest());
    if let Some(path) = &out {
        std::fs::write(path, &encoded).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": d.name,
                "version": d.version,
                "descriptor_sha256": digest,
                "module_sha256": hex::encode(d.module_sha256),
                "descriptor_bytes": encoded.len(),
                "fields": d.schema.fields.keys().collect::<Vec<_>>(),
                "invariants": d.policy.invariants.iter().map(|i| &i.name).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("{digest}  {} v{}", d.name, d.version);
        println!("  module sha256   {}", hex::encode(d.module_sha256));
        println!(
            "  descriptor      {} bytes of deterministic CBOR",
            encoded.len()
        );
        println!(
            "  fields          {}",
            d.schema
                .fields
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  invariants      {}",
            d.policy
                .invariants
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(p) = out {
            println!("  written to      {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Host(a) = cli.command {
        // The daemon runs its own threads and runtime.
        return match cmd_host(a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(a) => cmd_run(a).await,
            Command::Object(ObjectCommand::Pack { dir, out, json }) => cmd_pack(dir, out, json),
            Command::Demo(a) => demo::run(a).await,
            Command::Image(ImageCommand::Measure(a)) => {
                sojourn_measure::cli::measure(*a).map(|()| ExitCode::SUCCESS)
            }
            Command::Attest(c) => cmd_attest::run(c),
            Command::Lineage(cmd_lineage::LineageCommand::Export(a)) => {
                sojourn_api::cli::lineage_export(a).await
            }
            Command::Lineage(c) => cmd_lineage::run(c),
            Command::Client(c) => sojourn_api::cli::run(c).await,
            Command::Host(_) => Ok(ExitCode::FAILURE),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
