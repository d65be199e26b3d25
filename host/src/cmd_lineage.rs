//! `sojourn lineage ...`: offline verification of an exported lineage, and the helpers
//! `sojourn run --lineage-out` uses to write one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues, Timestamp};
use sojourn_host::evidence::{read_reference, HardwareAttester};
use sojourn_lineage::{verify_lineage, LineageWriter, P256Signer, VerifyOptions, WriterConfig};
use sojourn_policy::Descriptor;

/// `sojourn lineage` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LineageCommand {
    /// Export an object's committed lineage from a running host to a file.
    Export(sojourn_api::cli::LineageExportArgs),
    /// Verify an exported lineage offline: chain, signatures, evidence binding every key,
    /// freshness per epoch, every mutation re-validated, rejections changed nothing, trust
    /// slope. Prints the first failure precisely (exit 1) or a summary.
    Verify {
        /// The export (a CBOR sequence written by `sojourn run --lineage-out`).
        export: PathBuf,
        /// Reference values for the evidence (TOML). Default: the object's own policy
        /// (software evidence only if it allows it).
        #[arg(long)]
        reference_values: Option<PathBuf>,
        /// Check evidence as of this time (Unix seconds or YYYY-MM-DDTHH:MM:SSZ). Default: the
        /// time each piece of evidence was produced.
        #[arg(long)]
        at: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Where evidence for a local lineage comes from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestationMode {
    /// The software TEE: an Ed25519 key signs reports. INSECURE: for local runs; refused by
    /// any policy that does not allow software evidence.
    Software,
    /// This machine's SEV-SNP or TDX through configfs-tsm, or /dev/sev-guest (needs the
    /// `configfs-tsm` or `sev-guest` feature).
    Hardware,
}

/// Builds the lineage writer for a local run. Returns the writer and a line saying what
/// evidence it uses.
pub fn local_writer(
    object_id: [u8; 16],
    descriptor: &Descriptor,
    mode: AttestationMode,
    software_key: Option<&Path>,
    reference: Option<&Path>,
    batch: usize,
) -> Result<(LineageWriter, String)> {
    let (attester, reference, note): (Box<dyn Attester + Send>, ReferenceValues, String) =
        match mode {
            AttestationMode::Software => {
                let (key, origin) = match software_key {
                    Some(p) => {
                        let text = std::fs::read_to_string(p)
                            .with_context(|| format!("cannot read {}", p.display()))?;
                        (
                            SoftwareKey::from_seed_hex(&text)
                                .with_context(|| format!("{}: software key", p.display()))?,
                            p.display().to_string(),
                        )
                    }
                    None => (SoftwareKey::generate()?, "an ephemeral key".to_string()),
                };
                let pk = hex::encode(key.public_key());
                let rv = match reference {
                    Some(p) => read_reference(p)?,
                    None => ReferenceValues::default().allowing_software(),
                };
                (
                    Box::new(SoftwareAttester::new(key)),
                    rv,
                    format!(
                        "evidence: SOFTWARE (insecure, for local runs) from {origin}, key {pk}"
                    ),
                )
            }
            AttestationMode::Hardware => {
                let a = sojourn_attestation::hardware_attester()?;
                let platform = a.platform().as_str();
                let rv = match reference {
                    Some(p) => read_reference(p)?,
                    None => ReferenceValues::default(),
                };
                (
                    Box::new(HardwareAttester(a)),
                    rv,
                    format!("evidence: {platform} (configfs-tsm or /dev/sev-guest)"),
                )
            }
        };
    let signer = loop {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow!("randomness: {e}"))?;
        if let Some(s) = P256Signer::from_secret(&secret) {
            break s;
        }
    };
    let cfg = WriterConfig {
        batch_size: batch,
        ..WriterConfig::default()
    };
    Ok((
        LineageWriter::new(
            object_id,
            descriptor,
            Box::new(signer),
            attester,
            reference,
            cfg,
        ),
        note,
    ))
}

/// Runs a `sojourn lineage` command.
pub fn run(cmd: LineageCommand) -> Result<ExitCode> {
    match cmd {
        LineageCommand::Export(_) => Err(anyhow!("lineage export runs on the async runtime")),
        LineageCommand::Verify {
            export,
            reference_values,
            at,
            json,
        } => {
            let bytes = std::fs::read(&export)
                .with_context(|| format!("cannot read {}", export.display()))?;
            let opts = VerifyOptions {
                reference: reference_values
                    .as_deref()
                    .map(read_reference)
                    .transpose()?,
                at: at
                    .as_deref()
                    .map(Timestamp::parse)
                    .transpose()
                    .map_err(|e| anyhow!("--at: {e}"))?,
            };
            match verify_lineage(&bytes, &opts) {
                Ok(s) => {
                    if json {
                        println!("{}", serde_json::json!({"verified": true, "summary": s}));
                    } else {
                        println!("lineage of object {} verifies", s.object_id);
                        println!("  descriptor   {}", s.descriptor_digest);
                        println!(
                            "  entries      {} in {} signed batches",
                            s.entries, s.batches
                        );
                        let outcomes: Vec<String> =
                            s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                        println!("  outcomes     {}", outcomes.join(", "));
                        println!(
                            "  hosts        {}",
                            s.hosts.iter().cloned().collect::<Vec<_>>().join(", ")
                        );
                        println!(
                            "  platforms    {}",
                            s.platforms.iter().cloned().collect::<Vec<_>>().join(", ")
                        );
                        let trust: Vec<String> = s
                            .trust
                            .iter()
                            .map(|(seq, score, ewma)| format!("#{seq}: score {score}, mean {ewma}"))
                            .collect();
                        println!("  trust        {}", trust.join("; "));
                        println!("  final state  {}", s.final_state);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(f) => {
                    if json {
                        println!("{}", serde_json::json!({"verified": false, "failure": f}));
                    } else {
                        eprintln!("lineage does NOT verify: {f}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Refuses a batch size of zero with a clear message.
pub fn batch_size(n: usize) -> Result<usize> {
    if n == 0 {
        bail!("--lineage-batch must be at least 1");
    }
    Ok(n)
}
