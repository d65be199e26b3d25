//! The server's TLS identity: explicit PEM files, or a local CA and server certificate that
//! the host generates on first start and reuses afterwards.
//!
//! The local layout, under the host's data directory:
//!
//! ```text
//! tls/            mode 0700
//!   ca.pem        the local CA certificate (ECDSA P-256): the trust root of client.toml
//!   server.pem    the server certificate (SANs localhost, 127.0.0.1, ::1), signed by the CA
//!   server.key    its private key, PKCS#8, mode 0600
//! ```
//!
//! The CA's private key is used once, to sign the server certificate, and never stored: the
//! CA can vouch for nothing else. Delete `tls/` to get a fresh identity (clients then need the
//! new `client.toml`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{fsutil, tls};

/// Names the generated server certificate is valid for.
pub const LOCAL_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Validity of a generated certificate.
const VALIDITY_DAYS: i64 = 3650;

/// Why a TLS identity could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The local `tls/` directory exists but misses some of its files.
    #[error(
        "{}: incomplete TLS identity (missing {missing}); remove the directory to generate a \
         new one (clients then need the new client.toml)",
        dir.display()
    )]
    Incomplete {
        /// The `tls/` directory.
        dir: PathBuf,
        /// The missing file.
        missing: &'static str,
    },
    /// The private key file is open to other users.
    #[error(
        "{}: private key is open to other users (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Generating the CA or the certificate failed.
    #[error("cannot generate a TLS certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate chain or key.
    #[error("the server certificate or key is not usable: {0}")]
    Tls(String),
}

/// A certificate chain (leaf first) and its private key.
pub struct ServerIdentity {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("cert_chain", &self.cert_chain.len())
            .field("key", &"(redacted)")
            .finish()
    }
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        ServerIdentity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ServerIdentity {
    /// A chain (leaf first, not empty) and its key.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerIdentity, IdentityError> {
        if cert_chain.is_empty() {
            return Err(IdentityError::Tls("empty certificate chain".to_string()));
        }
        Ok(ServerIdentity { cert_chain, key })
    }

    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<ServerIdentity, IdentityError> {
        let chain_pem = read(chain)?;
        let key_pem = read(key)?;
        ServerIdentity::from_pem(&chain_pem, chain, &key_pem, key)
    }

    fn from_pem(
        chain_pem: &[u8],
        chain_path: &Path,
        key_pem: &[u8],
        key_path: &Path,
    ) -> Result<ServerIdentity, IdentityError> {
        let pem_err = |path: &Path, reason: String| IdentityError::Pem {
            path: path.to_path_buf(),
            reason,
        };
        let cert_chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(chain_path, format!("cannot read the certificates: {e}")))?;
        if cert_chain.is_empty() {
            return Err(pem_err(chain_path, "holds no certificate".to_string()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| pem_err(key_path, format!("cannot read a private key: {e}")))?;
        ServerIdentity::new(cert_chain, key)
    }

    /// The chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }
}

/// The TLS configuration the server uses: TLS 1.3 only (ring provider), ALPN `http/1.1`, no
/// client certificates. Fails if the key does not match the leaf certificate.
pub fn server_tls_config(
    identity: &ServerIdentity,
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::TLS13_ONLY)
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![tls::ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// A local CA and the server certificate it signed, kept in `<dir>/tls/`.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    tls_dir: PathBuf,
    ca_pem: String,
    server: ServerIdentity,
    created: bool,
}

impl LocalIdentity {
    /// Loads `<dir>/tls/{ca.pem,server.pem,server.key}`, or generates them if `<dir>/tls/`
    /// does not exist (creating `dir` if needed). Generation is atomic: the files are written
    /// to a temporary directory that is then renamed to `tls/`, so a crash leaves either
    /// nothing or a complete identity.
    pub fn load_or_create(dir: &Path) -> Result<LocalIdentity, IdentityError> {
        let tls_dir = dir.join("tls");
        if tls_dir.exists() {
            return LocalIdentity::load(&tls_dir);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        fsutil::create_dir(dir, 0o700).map_err(io(dir))?;
        let generated = generate()?;
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| IdentityError::Generate(e.to_string()))?;
        let tmp = dir.join(format!(".tls.tmp-{}", hex::encode(nonce)));
        let written = (|| {
            fsutil::create_dir(&tmp, 0o700).map_err(io(&tmp))?;
            for (name, bytes, mode) in [
                ("ca.pem", generated.ca_pem.as_bytes(), 0o644),
                ("server.pem", generated.server_pem.as_bytes(), 0o644),
                ("server.key", generated.key_pem.as_bytes(), 0o600),
            ] {
                let path = tmp.join(name);
                fsutil::write_atomic(&path, bytes, mode).map_err(io(&path))?;
            }
            std::fs::rename(&tmp, &tls_dir).map_err(io(&tls_dir))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another process may have created it meanwhile: use theirs.
            if tls_dir.join("server.key").exists() {
                return LocalIdentity::load(&tls_dir);
            }
            return Err(e);
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let mut identity = LocalIdentity::load(&tls_dir)?;
        identity.created = true;
        Ok(identity)
    }

    fn load(tls_dir: &Path) -> Result<LocalIdentity, IdentityError> {
        for missing in ["ca.pem", "server.pem", "server.key"] {
            if !tls_dir.join(missing).exists() {
                return Err(IdentityError::Incomplete {
                    dir: tls_dir.to_path_buf(),
                    missing,
                });
            }
        }
        let key_path = tls_dir.join("server.key");
        let meta = std::fs::metadata(&key_path).map_err(|source| IdentityError::Io {
            path: key_path.clone(),
            source,
        })?;
        if let Some(mode) = fsutil::open_to_others(&meta) {
            return Err(IdentityError::KeyTooOpen {
                path: key_path,
                mode,
            });
        }
        let ca_path = tls_dir.join("ca.pem");
        let ca_pem = String::from_utf8(read(&ca_path)?).map_err(|_| IdentityError::Pem {
            path: ca_path.clone(),
            reason: "not UTF-8 text".to_string(),
        })?;
        if CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .next()
            .is_none_or(|c| c.is_err())
        {
            return Err(IdentityError::Pem {
                path: ca_path,
                reason: "holds no certificate".to_string(),
            });
        }
        let server = ServerIdentity::from_pem_files(&tls_dir.join("server.pem"), &key_path)?;
        Ok(LocalIdentity {
            tls_dir: tls_dir.to_path_buf(),
            ca_pem,
            server,
            created: false,
        })
    }

    /// The CA certificate (PEM): what a client trusts, and what `client.toml` carries.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate chain and key.
    pub fn server(&self) -> &ServerIdentity {
        &self.server
    }

    /// The `tls/` directory.
    pub fn tls_dir(&self) -> &Path {
        &self.tls_dir
    }

    /// Whether this call generated the identity (first start) rather than loading it.
    pub fn created(&self) -> bool {
        self.created
    }

    /// [`server_tls_config`] for this identity.
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        server_tls_config(&self.server)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

struct Generated {
    ca_pem: String,
    server_pem: String,
    key_pem: String,
}

fn generate() -> Result<Generated, IdentityError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let gen = |e: rcgen::Error| IdentityError::Generate(e.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| IdentityError::Generate(format!("the clock is before 1970: {e}")))?
        .as_secs();
    let now = i64::try_from(now).map_err(|e| IdentityError::Generate(e.to_string()))?;
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| IdentityError::Generate(e.to_string()))
    };
    let not_before = at(now - 3600)?;
    let not_after = at(now + VALIDITY_DAYS * 86_400)?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Sojourn local host CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "Sojourn");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    ca.serial_number = Some(serial()?);
    let ca_cert = ca.self_signed(&ca_key).map_err(gen)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut server =
        CertificateParams::new(LOCAL_SANS.map(str::to_string).to_vec()).map_err(gen)?;
    server.distinguished_name = rcgen::DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "Sojourn host");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = not_after;
    server.serial_number = Some(serial()?);
    let server_cert = server.signed_by(&server_key, &issuer).map_err(gen)?;
    // `issuer` (with the CA key) is dropped here: the CA signs nothing else, ever.
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        key_pem: server_key.serialize_pem(),
    })
}

/// A random positive 128-bit serial number.
fn serial() -> Result<rcgen::SerialNumber, IdentityError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| IdentityError::Generate(e.to_string()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
