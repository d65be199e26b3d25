//! `sojourn host`: puts the pieces together — data directory, sealing key, store, lineage
//! evidence, the core, the TLS identity, credentials, the client file — and serves the API
//! until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sojourn_api::{
    ClientConfig, Credential, HostControl as _, LocalIdentity, Role, ServerIdentity,
};
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey};
use sojourn_attestation::{Attester, ReferenceValues};
use sojourn_store::{SealingKeySource, SoftwareKeyFile, Store};

use super::config::{AttestationMode, HostConfig};
use super::{AttesterFactory, CoreOptions, HostCore, LineageSetup};
use crate::evidence::{read_reference, HardwareAttester};

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// Reads (or creates, mode 0600) a file holding a hex secret.
fn private_hex_file(path: &Path, make: impl FnOnce() -> Result<String>) -> Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{} is readable by group or others; it holds a secret: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(text.trim().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(format!("{value}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(value)
        }
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Builds the lineage evidence source for `mode`.
pub fn lineage_setup(config: &HostConfig, data_dir: &Path) -> Result<(LineageSetup, String)> {
    let a = &config.attestation;
    match a.mode {
        AttestationMode::Software => {
            let path = a
                .software_key
                .clone()
                .unwrap_or_else(|| data_dir.join("software-attestation.key"));
            let seed = private_hex_file(&path, || Ok(SoftwareKey::generate()?.to_seed_hex()))?;
            let key = SoftwareKey::from_seed_hex(&seed)
                .with_context(|| format!("{}: software attestation key", path.display()))?;
            let pk = hex::encode(key.public_key());
            let reference = match &a.reference_values {
                Some(p) => read_reference(p)?,
                None => ReferenceValues::default().allowing_software(),
            };
            let factory: AttesterFactory = Arc::new(move || {
                SoftwareKey::from_seed_hex(&seed)
                    .map(|k| Box::new(SoftwareAttester::new(k)) as Box<dyn Attester + Send>)
                    .map_err(|e| e.to_string())
            });
            Ok((
                LineageSetup {
                    attester: factory,
                    reference,
                    label: "software".into(),
                    software: true,
                },
                format!(
                    "SOFTWARE (INSECURE: for local use; objects whose policy forbids software \
                     evidence are refused), key {} ({pk})",
                    path.display()
                ),
            ))
        }
        AttestationMode::Snp | AttestationMode::Tdx => {
            let probe = sojourn_attestation::hardware_attester().map_err(|e| {
                anyhow!(
                    "attestation mode {}: no evidence interface: {e} (build with --features \
                     configfs-tsm or sev-guest, and run on a confidential VM)",
                    a.mode.as_str()
                )
            })?;
            let platform = probe.platform().as_str().to_string();
            let reference = match &a.reference_values {
                Some(p) => read_reference(p)?,
                None => bail!(
                    "attestation mode {}: set attestation.reference_values (the host appraises \
                     its own evidence; there are no defaults for hardware)",
                    a.mode.as_str()
                ),
            };
            let factory: AttesterFactory = Arc::new(|| {
                sojourn_attestation::hardware_attester()
                    .map(|h| Box::new(HardwareAttester(h)) as Box<dyn Attester + Send>)
                    .map_err(|e| e.to_string())
            });
            Ok((
                LineageSetup {
                    attester: factory,
                    reference,
                    label: platform.clone(),
                    software: false,
                },
                format!("{platform} (configfs-tsm or /dev/sev-guest)"),
            ))
        }
        AttestationMode::AzSnpVtpm | AttestationMode::AzTdxVtpm => bail!(
            "attestation mode {}: this build verifies Azure vTPM evidence but cannot produce \
             it yet (the daemon needs the vTPM quote path); use `snp`/`tdx` on bare \
             confidential VMs or `software` locally",
            a.mode.as_str()
        ),
    }
}

/// The sealing key for the store.
fn sealing_key(
    config: &HostConfig,
    data_dir: &Path,
) -> Result<(sojourn_store::SealingKey, String)> {
    let a = &config.attestation;
    let file = |path: PathBuf| -> Result<(sojourn_store::SealingKey, String)> {
        let src = SoftwareKeyFile::new(path);
        let key = src.load()?;
        Ok((key, src.describe()))
    };
    match (a.mode, &a.sealing_key) {
        (_, Some(path)) => file(path.clone()),
        (AttestationMode::Software, None) => file(data_dir.join("sealing.key")),
        (AttestationMode::Snp, None) => {
            let src = sojourn_store::SnpDerivedKey::default();
            let key = src.load().context(
                "attestation mode snp: the sealing key is derived by the SNP firmware \
                 (build with --features snp-sealing), or name a key file in \
                 attestation.sealing_key",
            )?;
            Ok((key, src.describe()))
        }
        (mode, None) => bail!(
            "attestation mode {}: no platform-derived sealing key exists here; the documented \
             path is a key released by a key broker after attestation (not in this build). \
             Name a key file in attestation.sealing_key to accept a local key.",
            mode.as_str()
        ),
    }
}

fn credentials(config: &HostConfig, data_dir: &Path) -> Result<(Vec<Credential>, Option<String>)> {
    if config.auth.tokens.is_empty() {
        let path = data_dir.join("admin.token");
        let token = private_hex_file(&path, || {
            Ok(Credential::generate("local-admin", Role::Admin)?.token)
        })?;
        return Ok((
            vec![Credential {
                name: "local-admin".into(),
                token: token.clone(),
                role: Role::Admin,
            }],
            Some(token),
        ));
    }
    let mut out = Vec::new();
    let mut admin = None;
    for t in &config.auth.tokens {
        let token = match (&t.token, &t.token_file) {
            (Some(tok), _) => tok.clone(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .with_context(|| format!("auth.tokens ({}): cannot read {}", t.name, p.display()))?
                .trim()
                .to_string(),
            (None, None) => bail!("auth.tokens ({}): no token", t.name),
        };
        let role = Role::from_wire(&t.role)
            .ok_or_else(|| anyhow!("auth.tokens ({}): unknown role {:?}", t.name, t.role))?;
        if role == Role::Admin && admin.is_none() {
            admin = Some(token.clone());
        }
        out.push(Credential {
            name: t.name.clone(),
            token,
            role,
        });
    }
    Ok((out, admin))
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run_host(config: HostConfig, origin: &str) -> Result<()> {
    let data_dir = match &config.data_dir {
        Some(d) => d.clone(),
        None => sojourn_api::default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let listen = config
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    println!("sojourn host {}", env!("CARGO_PKG_VERSION"));
    println!("  config:       {origin}");
    println!("  data:         {}", data_dir.display());

    let (key, key_note) = sealing_key(&config, &data_dir)?;
    println!("  sealing key:  {key_note}");
    let store = Store::open(&data_dir, key).map_err(|e| {
        anyhow!(
            "refusing to start: the store in {} cannot be used: {e}\n(nothing was changed; \
             move the directory aside to start empty, or restore it from a backup)",
            data_dir.display()
        )
    })?;
    let (lineage, evidence_note) = lineage_setup(&config, &data_dir)?;
    println!("  attestation:  {evidence_note}");
    let mut options = CoreOptions::default();
    let answer = private_hex_file(&data_dir.join("migration-answer.key"), || loop {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| anyhow!("randomness: {e}"))?;
        if sojourn_lineage::P256Signer::from_secret(&b).is_some() {
            break Ok(hex::encode(b));
        }
    })?;
    options.answer_secret = Some(
        hex::decode(&answer)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}/migration-answer.key is not 64 hex digits",
                    data_dir.display()
                )
            })?,
    );
    options.self_url = config
        .migration
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("https://{listen}"));
    options.claims = config.migration.claims.clone();
    options.warm_arrival_bytes = config.migration.warm_arrival_bytes();
    let peers = config
        .migration
        .peers
        .iter()
        .map(|p| {
            let read = |f: &Path| {
                std::fs::read_to_string(f).with_context(|| {
                    format!("migration.peers ({}): cannot read {}", p.url, f.display())
                })
            };
            Ok(sojourn_api::MigrateRequest {
                to: p.url.clone(),
                ca_pem: read(&p.ca_file)?,
                token: read(&p.token_file)?.trim().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(w) = config.runtime.workers {
        options.workers = w;
    }
    if let Some(g) = config.runtime.group_commit_max {
        options.group_commit_max = g;
    }
    let retain = config.runtime.retain_freed_heap_bytes();
    let retained = sojourn_mem::retain_freed_heap(retain);
    println!(
        "  freed heap:   {}",
        if retained {
            format!("up to {} MiB kept for reuse per heap", retain >> 20)
        } else {
            "returned as the allocator decides".to_string()
        }
    );
    let huge = sojourn_mem::set_huge_pages(config.runtime.huge_pages.into());
    println!(
        "  huge pages:   {} ({:?})",
        if huge {
            "advised for large buffers"
        } else {
            "not used"
        },
        config.runtime.huge_pages
    );
    let core = HostCore::start(store, lineage, options).map_err(|e| anyhow!("{e}"))?;
    println!("  objects:      {} restored", core.health().objects);

    let (tls, ca_pem) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let id = ServerIdentity::from_pem_files(cert, key)?;
            let pem = std::fs::read_to_string(cert).unwrap_or_default();
            (sojourn_api::server_tls_config(&id)?, pem)
        }
        _ => {
            let id = LocalIdentity::load_or_create(&data_dir)?;
            (id.server_tls_config()?, id.ca_pem().to_string())
        }
    };
    let (creds, admin_token) = credentials(&config, &data_dir)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sojourn-api")
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
            if addr.is_ipv6() {
                "[::1]".to_string()
            } else {
                "127.0.0.1".to_string()
            }
        } else {
            addr.ip().to_string()
        };
        let url = format!("https://{host}:{}", addr.port());
        if let Some(token) = admin_token {
            let client = data_dir.join("client.toml");
            ClientConfig {
                url: url.clone(),
                ca_pem,
                token,
            }
            .write_private(&client)?;
            println!("  client file:  {} (mode 0600)", client.display());
        }
        println!("  listening on  {url}");
        println!("ready");
        let drain_core = core.clone();
        let drain_peers = peers.clone();
        let drain_deadline = config.migration.drain_deadline_s;
        let shutdown = async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
            if !drain_peers.is_empty() {
                println!(
                    "sojourn host: draining to {} peer(s) before stopping",
                    drain_peers.len()
                );
                let core = drain_core;
                let request = sojourn_api::DrainRequest {
                    to: drain_peers,
                    deadline_s: drain_deadline,
                };
                match tokio::task::spawn_blocking(move || core.drain_to(request)).await {
                    Ok(Ok(r)) => {
                        println!(
                            "sojourn host: drain: {} moved, {} pending, {} stay",
                            r.moved.len(),
                            r.pending.len(),
                            r.stayed.len()
                        );
                        for s in &r.stayed {
                            println!(
                                "  stays: {} ({}): {}",
                                s.name,
                                s.object,
                                s.reasons.join("; ")
                            );
                        }
                    }
                    Ok(Err(e)) => println!("sojourn host: drain failed: {e}"),
                    Err(e) => println!("sojourn host: drain failed: {e}"),
                }
            }
            println!("sojourn host: stopping (committing in-flight transitions)");
        };
        let control: Arc<dyn sojourn_api::HostControl> = Arc::new(core.clone());
        sojourn_api::serve(listener, tls, control, creds, shutdown)
            .await
            .context("API server")?;
        anyhow::Ok(())
    });
    core.shutdown();
    println!("sojourn host: stopped");
    result
}
