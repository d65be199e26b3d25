//! `sojourn-measure measure`: compute what a verifier expects from a host running a VM
//! image, print a table of digests, write a reference-values file (also `sojourn image
//! measure`).

use clap::{Parser, Subcommand};
use sojourn_measure::cli::{measure, MeasureArgs};

#[derive(Parser, Debug)]
#[command(
    name = "sojourn-measure",
    version,
    about = "Reference values for Sojourn VM images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Compute the SNP launch digest, PCRs and RTMRs of an image; print them; optionally
    /// write a reference-values file (`sojourn attest verify --reference-values`).
    Measure(Box<MeasureArgs>),
}

fn main() -> std::process::ExitCode {
    let Cmd::Measure(a) = Cli::parse().cmd;
    match measure(*a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
