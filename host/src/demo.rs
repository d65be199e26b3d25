//! `sojourn demo`: the sample objects side by side, plus one hostile object, for a few
//! seconds; then what each did.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use sojourn_runtime::{Outcome, Status};

use crate::package::{embedded_examples, runaway_example};
use crate::runner::{ClockMode, RunEvent, Runner, StopWhen};

/// Options of `sojourn demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Print every transition, not only the interesting ones.
    #[arg(long, short)]
    pub verbose: bool,
    /// Simulated time (reproducible, instant).
    #[arg(long)]
    pub virtual_time: bool,
}

#[derive(Default)]
struct Tally {
    ticks: u64,
    consumed: u64,
    deferred: u64,
    refused: u64,
    rejected: u64,
    faulted: u64,
    lateness: Vec<i64>,
    emitted: Vec<String>,
}

/// The script: what a user of each object sends, and when (ms after start).
const SCRIPT: &[(i64, &str, &str)] = &[
    (300, "escrow", "deposit 100"),
    (600, "escrow", "withdraw 30"),
    (900, "escrow", "withdraw 500"),
    (1200, "escrow", "owner bob"),
    (1500, "escrow", "stats"),
    (700, "thermostat", "target 25000"),
    (1400, "thermostat", "target 35000"),
    (2500, "thermostat", "status"),
    (1000, "counter", "bump"),
    (1600, "counter", "reset"),
    (2000, "counter", "ticks"),
];

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let clock = if args.virtual_time {
        ClockMode::Virtual(1_700_000_000_000)
    } else {
        ClockMode::Real
    };
    let mut runner = Runner::new(clock)?;
    let mut names = Vec::new();
    let mut pkgs = embedded_examples()?;
    pkgs.push(runaway_example()?);
    println!(
        "Sojourn demo: {} resident objects for {}s\n",
        pkgs.len(),
        args.seconds
    );
    for p in &pkgs {
        let (idx, rec) = runner.add(p)?;
        names.push(p.descriptor.name.clone());
        println!(
            "  {:<10} descriptor {}  init {}",
            p.descriptor.name,
            &hex::encode(p.descriptor.digest())[..16],
            rec.outcome.label()
        );
        let _ = idx;
    }
    println!();
    for (at, name, msg) in SCRIPT {
        if let Some(i) = names.iter().position(|n| n == name) {
            runner.send_at(*at, i, msg.as_bytes());
        }
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let verbose = args.verbose;
    runner
        .run(
            StopWhen::Elapsed(Duration::from_secs(args.seconds)),
            |e: &RunEvent| {
                let t = tallies.entry(e.name.clone()).or_default();
                let interesting = !matches!(e.record.outcome, Outcome::Accepted)
                    || e.record.entry != sojourn_policy::EntryPoint::Tick
                    || !e.record.emitted.is_empty();
                match &e.record.outcome {
                    Outcome::Accepted if e.record.entry == sojourn_policy::EntryPoint::Tick => {
                        t.ticks += 1;
                        t.lateness.push(e.lateness_ms);
                    }
                    Outcome::Accepted => t.consumed += 1,
                    Outcome::Deferred => t.deferred += 1,
                    Outcome::Refused => t.refused += 1,
                    Outcome::Rejected { .. } => t.rejected += 1,
                    Outcome::Faulted { .. } => t.faulted += 1,
                    // The local demo does not migrate.
                    Outcome::MigratedOut { .. }
                    | Outcome::MigratedIn { .. }
                    | Outcome::MigrationRefused { .. } => {}
                }
                for m in &e.record.emitted {
                    t.emitted.push(String::from_utf8_lossy(m).into_owned());
                }
                if verbose || interesting {
                    println!("[{:>5}ms] {:<10} {}", e.at_ms, e.name, e.record.summary());
                    for m in &e.record.emitted {
                        println!("{:>19}emit {:?}", "", String::from_utf8_lossy(m));
                    }
                    for l in &e.record.logs {
                        println!("{:>19}log  {l}", "");
                    }
                }
            },
            |obj, err| println!("  (message to object {obj} refused: {err})"),
        )
        .await?;

    println!("\nWhat each object did:");
    println!(
        "  {:<10} {:>6} {:>9} {:>9} {:>9} {:>7}  {:>11}  {:<}",
        "object", "ticks", "messages", "rejected", "faulted", "late50", "status", "fields"
    );
    for (name, obj) in runner.objects() {
        let t = tallies.remove(name).unwrap_or_default();
        let mut late = t.lateness.clone();
        late.sort_unstable();
        let p50 = late.get(late.len() / 2).copied().unwrap_or(0);
        let (status, fields) = match obj.lock() {
            Ok(h) => (
                match h.object.status() {
                    Status::Active => "active".to_string(),
                    Status::Suspended { .. } => "suspended".to_string(),
                },
                h.object
                    .fields()
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.render()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(_) => ("?".into(), String::new()),
        };
        println!(
            "  {:<10} {:>6} {:>9} {:>9} {:>9} {:>5}ms  {:>11}  {}",
            name,
            t.ticks,
            t.consumed + t.deferred + t.refused,
            t.rejected,
            t.faulted,
            p50,
            status,
            fields
        );
        if let Ok(h) = obj.lock() {
            if let Status::Suspended { reason } = h.object.status() {
                println!("  {:<10} suspended: {reason}", "");
            }
        }
    }
    println!(
        "\nEvery rejected change left its object's state untouched; the runaway object was \
         stopped by its own fuel budget while the others kept their schedules."
    );
    crate::demo_migration::run().await?;
    Ok(ExitCode::SUCCESS)
}
