//! The client configuration file (`client.toml`, kubeconfig-style) and the default data
//! directory that the host and the CLI share.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The file name the host writes its client configuration to, in its data directory.
pub const CLIENT_CONFIG_FILE: &str = "client.toml";

/// Environment variable naming a client configuration file.
pub const ENV_CLIENT_CONFIG: &str = "SOJOURN_CLIENT_CONFIG";
/// Environment variable naming the data directory.
pub const ENV_HOME: &str = "SOJOURN_HOME";
/// Environment variable holding a bearer token.
pub const ENV_TOKEN: &str = "SOJOURN_TOKEN";

/// Why a client configuration (or the data directory) could not be found, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid client configuration.
    #[error("{}: not a valid client configuration: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file holds a token but group or others may read it.
    #[error(
        "{}: holds a token but is open to other users (mode {mode:04o}); \
         run `chmod 600 {}` if it is yours",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No data directory can be derived from the environment.
    #[error("cannot find a data directory: set SOJOURN_HOME (or HOME)")]
    NoDataDir,
}

/// Where and how to reach a host: its URL, the CA that signed its certificate (the only trust
/// root the client uses) and a bearer token. The host writes one to
/// `<data dir>/client.toml` (mode 0600) when it starts; the CLI reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `https://HOST:PORT`.
    pub url: String,
    /// PEM of the CA certificate(s) to trust for this host.
    pub ca_pem: String,
    /// The bearer token.
    pub token: String,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("ca_pem", &format_args!("({} bytes)", self.ca_pem.len()))
            .field("token", &"(redacted)")
            .finish()
    }
}

impl ClientConfig {
    /// Writes the configuration as TOML to `path`, readable by its owner only (mode 0600),
    /// replacing any previous file atomically. Creates the parent directory (mode 0700) if
    /// needed.
    pub fn write_private(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string(self).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# Sojourn client configuration: where the host listens, the CA of its TLS \
             certificate, and a bearer token.\n# Keep it private (mode 0600).\n{text}"
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_dir(dir, 0o700).map_err(io)?;
        }
        fsutil::write_atomic(path, text.as_bytes(), 0o600).map_err(io)
    }

    /// Reads a configuration written by [`ClientConfig::write_private`]. Refuses a file that
    /// group or others may access (it holds a token).
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if let Some(mode) = fsutil::open_to_others(&meta) {
            return Err(ConfigError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let config: ClientConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        if config.url.trim().is_empty() || config.token.is_empty() || config.ca_pem.is_empty() {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                reason: "url, ca_pem and token must not be empty".to_string(),
            });
        }
        Ok(config)
    }
}

/// The data directory of the host and the CLI: `$SOJOURN_HOME` if set, else
/// `$XDG_DATA_HOME/sojourn` (when absolute), else `$HOME/.local/share/sojourn`. Empty
/// variables count as unset.
pub fn default_data_dir() -> Result<PathBuf, ConfigError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    data_dir_from(var(ENV_HOME), var("XDG_DATA_HOME"), var("HOME"))
}

/// `<default data dir>/client.toml`.
pub fn default_client_config_path() -> Result<PathBuf, ConfigError> {
    Ok(default_data_dir()?.join(CLIENT_CONFIG_FILE))
}

fn data_dir_from(
    sojourn_home: Option<std::ffi::OsString>,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = sojourn_home {
        return Ok(PathBuf::from(dir));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(xdg) = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("sojourn"));
    }
    match home {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/sojourn")),
        None => Err(ConfigError::NoDataDir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<std::ffi::OsString> {
        Some(s.into())
    }

    #[test]
    fn data_dir_precedence() {
        assert_eq!(
            data_dir_from(os("/s"), os("/x"), os("/h")).ok(),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(
            data_dir_from(None, os("/x"), os("/h")).ok(),
            Some(PathBuf::from("/x/sojourn"))
        );
        assert_eq!(
            data_dir_from(None, os("relative"), os("/h")).ok(),
            Some(PathBuf::from("/h/.local/share/sojourn"))
        );
        assert_eq!(
            data_dir_from(None, None, os("/h")).ok(),
            Some(PathBuf::from("/h/.local/share/sojourn"))
        );
        assert!(matches!(
            data_dir_from(None, None, None),
            Err(ConfigError::NoDataDir)
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = ClientConfig {
            url: "https://127.0.0.1:1".into(),
            ca_pem: "pem".into(),
            token: "s3cret-token".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
