//! `host.toml`: where the daemon keeps its data, where it listens, how it attests and who may
//! call it. Every key is optional; a missing file means local defaults (software
//! attestation, data under the default data directory, loopback only).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The daemon's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Data directory (store, keys, TLS identity, client file). Default: `$SOJOURN_HOME`,
    /// else `$XDG_DATA_HOME/sojourn`, else `~/.local/share/sojourn`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on. Default `127.0.0.1:7443`.
    #[serde(default)]
    pub listen: Option<String>,
    /// TLS identity.
    #[serde(default)]
    pub tls: TlsSection,
    /// Evidence for lineages, and the sealing key.
    #[serde(default)]
    pub attestation: AttestationSection,
    /// Bearer tokens.
    #[serde(default)]
    pub auth: AuthSection,
    /// Threads and commit batching.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Migration: how this host names itself, its claims, and the peers it drains to.
    #[serde(default)]
    pub migration: MigrationSection,
}

/// `[migration]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSection {
    /// The URL other hosts reach this one at (named in lineages); default `https://<listen>`.
    pub advertise_url: Option<String>,
    /// Claims this host states in its migration offers (for example `region = "westeurope"`,
    /// `operator = "acme"`); object policies may require them (`[policy.migration] claims`).
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    /// Where objects go when this host stops (SIGTERM/SIGINT): every object moves to the
    /// first peer its policy accepts, within `drain_deadline_s`.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// Deadline of the drain at shutdown, seconds (default 60).
    pub drain_deadline_s: Option<u64>,
    /// MiB of pages this host keeps faulted in for the next arriving object (default
    /// [`DEFAULT_WARM_ARRIVAL_MIB`]; 0: none). An arrival receives its package into them
    /// instead of faulting fresh pages in during the transfer; they are made again on a
    /// thread that runs only when a core would otherwise idle. The price: that much memory
    /// held while no object arrives.
    pub warm_arrival_mib: Option<u64>,
}

/// Default of `[migration] warm_arrival_mib`.
pub const DEFAULT_WARM_ARRIVAL_MIB: u64 = 64;
/// Largest `[migration] warm_arrival_mib`.
pub const MAX_WARM_ARRIVAL_MIB: u64 = 4096;

impl MigrationSection {
    /// `warm_arrival_mib` in bytes, its default applied.
    pub fn warm_arrival_bytes(&self) -> usize {
        mib_in_bytes(
            self.warm_arrival_mib,
            DEFAULT_WARM_ARRIVAL_MIB,
            MAX_WARM_ARRIVAL_MIB,
        )
    }
}

/// A setting in MiB, `default` where unset and at most `max`, in bytes.
fn mib_in_bytes(mib: Option<u64>, default: u64, max: u64) -> usize {
    let mib = mib.unwrap_or(default).min(max);
    usize::try_from(mib << 20).unwrap_or(usize::MAX)
}

/// One `[[migration.peers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// `https://HOST:PORT`.
    pub url: String,
    /// PEM file of the CA its certificate chains to.
    pub ca_file: PathBuf,
    /// File holding a token with the `peer` (or `admin`) role there.
    pub token_file: PathBuf,
}

/// `[tls]`: both or neither. Without them the host makes a local CA and a server
/// certificate for localhost in `<data_dir>/tls/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// The attestation mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationMode {
    /// The software TEE: INSECURE, for local use; refused by policies that do not allow it.
    #[default]
    Software,
    /// AMD SEV-SNP (configfs-tsm or /dev/sev-guest).
    Snp,
    /// Intel TDX (configfs-tsm).
    Tdx,
    /// Azure SEV-SNP confidential VM (vTPM).
    AzSnpVtpm,
    /// Azure TDX confidential VM (vTPM).
    AzTdxVtpm,
}

impl AttestationMode {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationMode::Software => "software",
            AttestationMode::Snp => "snp",
            AttestationMode::Tdx => "tdx",
            AttestationMode::AzSnpVtpm => "az-snp-vtpm",
            AttestationMode::AzTdxVtpm => "az-tdx-vtpm",
        }
    }
}

/// `[attestation]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSection {
    /// The mode (default `software`).
    #[serde(default)]
    pub mode: AttestationMode,
    /// Software attestation key (hex seed); default `<data_dir>/software-attestation.key`,
    /// created on first start.
    pub software_key: Option<PathBuf>,
    /// Reference values the host appraises its own evidence against.
    pub reference_values: Option<PathBuf>,
    /// Sealing key file for software mode; default `<data_dir>/sealing.key`, created 0600
    /// on first start.
    pub sealing_key: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Tokens. Without any, the host makes an admin token on first start
    /// (`<data_dir>/admin.token`, 0600) and puts it in the client file.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// One `[[auth.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who (logged with refusals).
    pub name: String,
    /// A file holding the token (preferred: keeps secrets out of the config).
    pub token_file: Option<PathBuf>,
    /// The token itself.
    pub token: Option<String>,
    /// `admin` (everything), `read` (list, inspect, lineage, metrics) or `peer` (the
    /// host-to-host migration routes only: what other hosts use to move objects here).
    pub role: String,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Wake runner threads (default: the number of CPUs).
    pub workers: Option<usize>,
    /// Most transitions merged into one store commit (default 1024).
    pub group_commit_max: Option<usize>,
    /// Transparent huge pages for large buffers (object memories, migration packages):
    /// `auto` (default: unless the VM reports free memory to its host), `on` or `off`.
    #[serde(default)]
    pub huge_pages: HugePagesSetting,
    /// Freed heap memory the allocator keeps for reuse rather than returning it to the
    /// kernel, per heap, in MiB (default 64; 0: the allocator's own behaviour). See
    /// `sojourn_mem::retain_freed_heap`: a migration streams its package through buffers
    /// that would otherwise be unmapped and faulted in again, megabyte after megabyte.
    pub retain_freed_heap_mib: Option<u64>,
}

/// Default of `[runtime] retain_freed_heap_mib`.
pub const DEFAULT_RETAIN_FREED_HEAP_MIB: u64 = 64;
/// Largest `[runtime] retain_freed_heap_mib` (the allocator takes at most 2 GiB).
pub const MAX_RETAIN_FREED_HEAP_MIB: u64 = 2047;

impl RuntimeSection {
    /// `retain_freed_heap_mib` in bytes, its default applied.
    pub fn retain_freed_heap_bytes(&self) -> usize {
        mib_in_bytes(
            self.retain_freed_heap_mib,
            DEFAULT_RETAIN_FREED_HEAP_MIB,
            MAX_RETAIN_FREED_HEAP_MIB,
        )
    }
}

/// `[runtime] huge_pages`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HugePagesSetting {
    /// See [`sojourn_mem::HugePages::Auto`].
    #[default]
    Auto,
    /// Always advise huge pages.
    On,
    /// Never advise huge pages.
    Off,
}

impl From<HugePagesSetting> for sojourn_mem::HugePages {
    fn from(s: HugePagesSetting) -> Self {
        match s {
            HugePagesSetting::Auto => sojourn_mem::HugePages::Auto,
            HugePagesSetting::On => sojourn_mem::HugePages::On,
            HugePagesSetting::Off => sojourn_mem::HugePages::Off,
        }
    }
}

impl HostConfig {
    /// Reads `path`; errors name the file, the key and what was expected.
    pub fn load(path: &Path) -> Result<HostConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        HostConfig::parse(&path.display().to_string(), &text)
    }

    /// Parses config text.
    pub fn parse(origin: &str, text: &str) -> Result<HostConfig, String> {
        let c: HostConfig = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        if c.tls.cert.is_some() != c.tls.key.is_some() {
            return Err(format!(
                "{origin}: tls: give both `cert` and `key`, or neither (a local identity is made)"
            ));
        }
        for t in &c.auth.tokens {
            if !["admin", "read", "peer"].contains(&t.role.as_str()) {
                return Err(format!(
                    "{origin}: auth.tokens ({}): role must be \"admin\", \"read\" or \"peer\", found {:?}",
                    t.name, t.role
                ));
            }
            if t.token.is_some() == t.token_file.is_some() {
                return Err(format!(
                    "{origin}: auth.tokens ({}): give exactly one of `token` and `token_file`",
                    t.name
                ));
            }
        }
        if c.runtime.workers == Some(0) || c.runtime.group_commit_max == Some(0) {
            return Err(format!("{origin}: runtime: values must be at least 1"));
        }
        if c.runtime.retain_freed_heap_mib > Some(MAX_RETAIN_FREED_HEAP_MIB) {
            return Err(format!(
                "{origin}: runtime: retain_freed_heap_mib must be at most \
                 {MAX_RETAIN_FREED_HEAP_MIB}"
            ));
        }
        if c.migration.warm_arrival_mib > Some(MAX_WARM_ARRIVAL_MIB) {
            return Err(format!(
                "{origin}: migration: warm_arrival_mib must be at most {MAX_WARM_ARRIVAL_MIB}"
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_full_config_and_clear_errors() {
        let c = HostConfig::parse("t", "").unwrap();
        assert_eq!(c.attestation.mode, AttestationMode::Software);
        let c = HostConfig::parse(
            "t",
            r#"data_dir = "/tmp/x"
listen = "0.0.0.0:8443"
[attestation]
mode = "az-snp-vtpm"
[[auth.tokens]]
name = "ops"
token = "abc"
role = "read"
[runtime]
workers = 3
huge_pages = "off"
"#,
        )
        .unwrap();
        assert_eq!(c.attestation.mode, AttestationMode::AzSnpVtpm);
        assert_eq!(c.runtime.workers, Some(3));
        assert_eq!(c.runtime.huge_pages, HugePagesSetting::Off);
        assert_eq!(
            HostConfig::parse("t", "").unwrap().runtime.huge_pages,
            HugePagesSetting::Auto
        );
        assert_eq!(
            HostConfig::parse("t", "")
                .unwrap()
                .migration
                .warm_arrival_bytes(),
            64 << 20
        );
        for (text, bytes) in [("0", 0), ("1", 1 << 20), ("4096", 4096 << 20)] {
            let c = HostConfig::parse("t", &format!("[migration]\nwarm_arrival_mib = {text}"));
            assert_eq!(c.unwrap().migration.warm_arrival_bytes(), bytes, "{text}");
        }
        assert_eq!(
            HostConfig::parse("t", "")
                .unwrap()
                .runtime
                .retain_freed_heap_bytes(),
            64 << 20
        );
        for (text, bytes) in [("0", 0), ("2047", 2047 << 20)] {
            let c = HostConfig::parse("t", &format!("[runtime]\nretain_freed_heap_mib = {text}"));
            assert_eq!(
                c.unwrap().runtime.retain_freed_heap_bytes(),
                bytes,
                "{text}"
            );
        }
        for (bad, want) in [
            ("lisen = \"x\"", "unknown field"),
            ("[attestation]\nmode = \"sgx\"", "unknown variant"),
            ("[tls]\ncert = \"a\"", "both"),
            (
                "[[auth.tokens]]\nname = \"a\"\ntoken = \"x\"\nrole = \"root\"",
                "role must be",
            ),
            (
                "[[auth.tokens]]\nname = \"a\"\nrole = \"read\"",
                "exactly one",
            ),
            ("[runtime]\nworkers = 0", "at least 1"),
            ("[runtime]\nhuge_pages = \"yes\"", "unknown variant"),
            ("[migration]\nwarm_arrival_mib = 4097", "at most 4096"),
            ("[runtime]\nretain_freed_heap_mib = 2048", "at most 2047"),
            ("[migration]\nwarm_arrival_mib = -1", "invalid value"),
        ] {
            let e = HostConfig::parse("t", bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
