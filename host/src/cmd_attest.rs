//! `sojourn attest …`: verify evidence from any supported platform, or produce evidence on
//! this machine. The binary edge: file I/O, the clock and `anyhow` live here; verification
//! itself is `sojourn_attestation::verify_evidence` (pure, no I/O).
//!
//! Exit codes: 0 accepted / evidence written; 1 evidence rejected (reason on stderr);
//! errors in the inputs (unreadable files, bad hex, bogus reference values) are returned as
//! `Err` for the caller to report (the `sojourn` binary exits 2 on those).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{
    certs_from_pem_bundle, verify_evidence, Appraisal, Attester as _, Evidence, Platform,
    ReferenceValues, Tier, Timestamp,
};

/// `sojourn attest` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AttestCommand {
    /// Verify evidence and print the appraisal (exit 1 if rejected).
    Verify(VerifyArgs),
    /// Produce evidence on this machine over the given report data.
    Report(ReportArgs),
}

/// `sojourn attest verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Evidence: a sojourn evidence file, trustee's Azure evidence JSON, or a bare report
    /// (SNP report .bin, TDX quote, Azure HCL report, software report).
    pub evidence: PathBuf,
    /// Platform: auto, snp, tdx, az-snp, az-tdx, software.
    #[arg(long, default_value = "auto")]
    pub platform: String,
    /// Reference values (TOML). Default: genuine hardware of any platform, debug off,
    /// software refused.
    #[arg(long)]
    pub reference_values: Option<PathBuf>,
    /// Expected report data (hex): 64 bytes for SNP/TDX/software, the vTPM nonce for
    /// Azure. Without it the binding is NOT checked (the report's own value is used).
    #[arg(long)]
    pub report_data: Option<String>,
    /// Directory (or file) of certificates (.der/.pem/.crt, PEM bundles split) to add,
    /// e.g. a VCEK cache or ASK/ASVK bundles. May be repeated.
    #[arg(long)]
    pub certs: Vec<PathBuf>,
    /// Directory (or file) of TDX collateral (dcap-qvl QuoteCollateralV3 JSON); the file
    /// whose FMSPC matches the quote is used.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Azure: the vTPM quote file, when the evidence is a bare HCL report.
    #[arg(long)]
    pub tpm_quote: Option<PathBuf>,
    /// Azure TDX: the TD quote file, when the evidence is a bare HCL report.
    #[arg(long)]
    pub td_quote: Option<PathBuf>,
    /// Verification time: Unix seconds or YYYY-MM-DDTHH:MM:SSZ. Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Print the appraisal as EAR JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sojourn attest report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Report data to bind (hex, exactly 64 bytes).
    #[arg(long)]
    pub report_data: String,
    /// Produce INSECURE software evidence signed with this Ed25519 seed file (64 hex
    /// characters). Without it, hardware evidence through configfs-tsm.
    #[arg(long)]
    pub software_key: Option<PathBuf>,
    /// Create the software key file if it does not exist.
    #[arg(long, requires = "software_key")]
    pub init_software_key: bool,
    /// Output file (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// Run an `attest` subcommand.
pub fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Verify(a) => verify(a),
        AttestCommand::Report(a) => report(a),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Files of a directory (sorted), or the path itself if it is a file.
fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut certs = Vec::new();
    for f in files(path)? {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "der" | "pem" | "crt" | "cer") {
            continue;
        }
        let bytes = read(&f)?;
        if bytes.starts_with(b"-----BEGIN") || ext == "pem" {
            certs
                .extend(certs_from_pem_bundle(&bytes).with_context(|| format!("{}", f.display()))?);
        } else {
            certs.push(bytes);
        }
    }
    Ok(certs)
}

fn parse_platform(s: &str) -> anyhow::Result<Option<Platform>> {
    if s == "auto" {
        return Ok(None);
    }
    Platform::from_name(s)
        .map(Some)
        .ok_or_else(|| anyhow!("unknown platform {s:?} (auto, snp, tdx, az-snp, az-tdx, software)"))
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let platform = parse_platform(&a.platform)?;
    let raw = read(&a.evidence)?;
    let mut ev = Evidence::from_any_bytes(&raw, platform)
        .with_context(|| format!("reading evidence {}", a.evidence.display()))?;
    for dir in &a.certs {
        let certs = load_certs(dir)?;
        ev = ev.with_certs(certs);
    }
    if let Some(dir) = &a.collateral {
        let candidates: Vec<Vec<u8>> = files(dir)?
            .iter()
            .filter(|f| f.extension().and_then(|e| e.to_str()) == Some("json"))
            .map(|f| read(f))
            .collect::<anyhow::Result<_>>()?;
        let quote = match ev.platform {
            Platform::AzureTdxVtpm => ev.td_quote.clone(),
            _ => Some(ev.report.clone()),
        };
        let quote = match (&a.td_quote, quote) {
            (Some(p), _) => Some(read(p)?),
            (None, q) => q,
        };
        let picked = match (quote, candidates.len()) {
            (_, 0) => bail!("no .json collateral in {}", dir.display()),
            (_, 1) => candidates.first().cloned(),
            (Some(q), _) => sojourn_attestation::tdx::pick_collateral(&q, &candidates).cloned(),
            (None, _) => None,
        };
        let picked = picked.ok_or_else(|| {
            anyhow!(
                "no collateral in {} matches the quote's FMSPC",
                dir.display()
            )
        })?;
        ev = ev.with_collateral(picked);
    }
    if let Some(p) = &a.tpm_quote {
        ev = ev.with_tpm_quote(read(p)?);
    }
    if let Some(p) = &a.td_quote {
        ev = ev.with_td_quote(read(p)?);
    }
    let reference = match &a.reference_values {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            ReferenceValues::from_toml_str(&text)?
        }
        None => ReferenceValues::default(),
    };
    let now = match &a.at {
        Some(t) => Timestamp::parse(t)?,
        None => Timestamp::now(),
    };
    let report_data = match &a.report_data {
        Some(h) => hex::decode(h.trim()).context("--report-data is not hex")?,
        None => {
            eprintln!(
                "warning: no --report-data: the nonce binding is NOT checked \
                 (using the value the evidence claims)"
            );
            ev.claimed_report_data()?
        }
    };
    match verify_evidence(&ev, &report_data, &reference, now) {
        Ok(appraisal) => {
            let text = if a.json {
                serde_json::to_string_pretty(&appraisal.to_ear())? + "\n"
            } else {
                render_human(&appraisal)
            };
            emit(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("REJECTED ({} evidence at {now}): {e}", ev.platform);
            if a.json {
                let j =
                    serde_json::json!({"ear.status": "contraindicated", "error": e.to_string()});
                emit(format!("{j}\n").as_bytes())?;
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn emit(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn tier(t: Tier) -> &'static str {
    match t {
        Tier::None => "none",
        Tier::Affirming => "affirming",
        Tier::Warning => "warning",
        Tier::Contraindicated => "contraindicated",
        _ => "unknown",
    }
}

fn render_human(a: &Appraisal) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let c = a.claims();
    let _ = writeln!(
        o,
        "VERIFIED  platform {}  status {}",
        c.platform,
        tier(a.status())
    );
    let _ = writeln!(o, "  verified at      {}", a.verified_at());
    let _ = writeln!(o, "  report data      {}", hex::encode(&c.report_data));
    for m in &c.measurements {
        let _ = writeln!(o, "  {:<16} {}", m.name, hex::encode(&m.value));
    }
    if let Some(h) = &c.host_data {
        let _ = writeln!(o, "  host data        {}", hex::encode(h));
    }
    let _ = writeln!(o, "  debug            {}", c.debug);
    if let Some(v) = c.smt_allowed {
        let _ = writeln!(o, "  smt allowed      {v}");
    }
    if let Some(v) = c.migration_agent_allowed {
        let _ = writeln!(o, "  migration agent  {v}");
    }
    if let Some(v) = c.vmpl {
        let _ = writeln!(o, "  vmpl             {v}");
    }
    for (name, t) in [
        ("reported tcb", c.tcb.reported),
        ("committed tcb", c.tcb.committed),
        ("current tcb", c.tcb.current),
    ] {
        if let Some(t) = t {
            let parts: Vec<String> = t
                .components()
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            let _ = writeln!(o, "  {name:<16} {}", parts.join(" "));
        }
    }
    if let Some(s) = &c.tcb.status {
        let _ = writeln!(o, "  tcb status       {s} {:?}", c.tcb.advisory_ids);
    }
    if let Some(f) = &c.chip_family {
        let _ = writeln!(o, "  chip family      {f}");
    }
    if let Some(id) = &c.chip_id {
        let _ = writeln!(o, "  chip id          {}", hex::encode(id));
    }
    if let Some(k) = &c.signing_key {
        let _ = writeln!(o, "  signing key      {k}");
    }
    if let Some(d) = &c.snp {
        let _ = writeln!(
            o,
            "  snp report       version {} policy {:#x} guest_svn {} family_id {} image_id {} id_key_digest {}",
            d.version,
            d.policy,
            d.guest_svn,
            hex::encode(&d.family_id),
            hex::encode(&d.image_id),
            hex::encode(&d.id_key_digest)
        );
    }
    if let Some(d) = &c.tdx {
        let _ = writeln!(
            o,
            "  tdx quote        version {} td_attributes {} xfam {}",
            d.quote_version,
            hex::encode(&d.td_attributes),
            hex::encode(&d.xfam)
        );
    }
    if let Some(vm) = &c.vm_configuration {
        let _ = writeln!(o, "  vm configuration {vm}");
    }
    let _ = writeln!(
        o,
        "  trust vector (worst tier per claim over the components):"
    );
    if let Ok(v) = serde_json::to_value(a.trust_vector()) {
        if let Some(obj) = v.as_object() {
            for (k, claim) in obj {
                if !claim.is_null() {
                    let _ = writeln!(
                        o,
                        "    {k:<18} {:<16} {}",
                        claim["tier"].as_str().unwrap_or(""),
                        claim["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    for comp in a.components() {
        let _ = writeln!(
            o,
            "  component {:<12} {}",
            comp.name,
            tier(comp.trust_vector.status())
        );
    }
    o
}

fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let bytes = hex::decode(a.report_data.trim()).context("--report-data is not hex")?;
    let report_data: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow!("--report-data must be exactly 64 bytes, got {}", b.len()))?;
    let evidence = match &a.software_key {
        Some(path) => {
            if !path.exists() {
                if !a.init_software_key {
                    bail!(
                        "{} does not exist (pass --init-software-key to create it)",
                        path.display()
                    );
                }
                let key = SoftwareKey::generate()?;
                std::fs::write(path, key.to_seed_hex())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            eprintln!("warning: producing SOFTWARE evidence: it proves nothing about this machine");
            SoftwareAttester::new(SoftwareKey::from_seed_hex(&text)?).attest(&report_data)?
        }
        None => sojourn_attestation::hardware_attester()?.attest(&report_data)?,
    };
    let out = evidence.to_bytes();
    match &a.output {
        Some(p) => std::fs::write(p, &out).with_context(|| format!("writing {}", p.display()))?,
        None => emit(&[out.as_slice(), b"\n"].concat())?,
    }
    Ok(ExitCode::SUCCESS)
}
