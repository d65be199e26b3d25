//! TLS settings shared by the server and the client: the ring provider, TLS 1.3 only, ALPN
//! `http/1.1`.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The only protocol the API speaks over TLS.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client configuration that trusts exactly the CA certificates in `ca_pem`.
pub(crate) fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0usize;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("cannot read the CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("the CA PEM holds no certificate".to_string());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS13_ONLY)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
