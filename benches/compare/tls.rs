//! Workloads 7 and 8: the certificate the TLS targets serve and the client
//! settings the load generator uses, so that Switchyard and nginx run the
//! very same handshake.
//!
//! One ECDSA P-256 certificate (what certbot issues by default), TLS 1.3
//! only, one cipher suite (TLS_AES_128_GCM_SHA256) and one key exchange
//! (X25519) offered by the client, so neither server can pick a cheaper or
//! dearer one than the other. Session resumption is off in the client:
//! workload 8's every connection is a full handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;

/// A self-signed certificate for `localhost` on disk, and the client
/// settings that trust it.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<rustls::ClientConfig>,
}

impl TlsFiles {
    pub fn new(dir: &Path) -> Result<TlsFiles, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (cert_path, key_path) = (dir.join("localhost.crt"), dir.join("localhost.key"));
        std::fs::write(&cert_path, cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(|e| e.to_string())?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).map_err(|e| e.to_string())?;
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![provider::cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![provider::kx_group::X25519],
            ..provider::default_provider()
        };
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsFiles {
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
        })
    }
}

/// What the report says the rows measured.
pub const SETUP: &str = "TLS 1.3, TLS_AES_128_GCM_SHA256, X25519, an ECDSA P-256 certificate, \
                         HTTP/1.1 by ALPN; no session resumption";
