//! Certificates for the TLS tests: a throwaway certificate authority made
//! per test, and server or client certificates it signs, written as PEM
//! files into the test's temporary directory. Nothing leaves loopback and
//! nothing is read from the system's trust store.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A certificate authority of the test's own.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as PEM, for clients and `tls: { ca: FILE }`.
    pub pem: String,
}

/// A certificate and its key as PEM files on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

/// What to put into a certificate the CA signs.
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    /// DNS names and IP addresses (as text) the certificate is valid for.
    pub names: &'a [&'a str],
    pub serial: u64,
    /// How long from now it stays valid; negative lifetimes are not needed,
    /// an expired certificate is made with `expired: true`.
    pub valid_for: Duration,
    pub expired: bool,
    /// A client certificate (mutual TLS) instead of a server one.
    pub client: bool,
}

impl Default for Leaf<'_> {
    fn default() -> Self {
        Leaf {
            names: &["localhost", "127.0.0.1"],
            serial: 1,
            valid_for: Duration::from_secs(90 * 24 * 3600),
            expired: false,
            client: false,
        }
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Signs a certificate for `leaf` and writes `dir/FILE.crt` and
    /// `dir/FILE.key`.
    pub fn issue(&self, dir: &Path, file: &str, leaf: Leaf<'_>) -> Issued {
        let names: Vec<String> = leaf.names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if let Some(first) = leaf.names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        let now = SystemTime::now();
        if leaf.expired {
            params.not_before = (now - Duration::from_secs(30 * 24 * 3600)).into();
            params.not_after = (now - Duration::from_secs(24 * 3600)).into();
        } else {
            params.not_before = (now - Duration::from_secs(3600)).into();
            params.not_after = (now + leaf.valid_for).into();
        }
        params.extended_key_usages = vec![if leaf.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, &cert_pem).unwrap();
        std::fs::write(&key_path, &key_pem).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            cert_pem,
            key_pem,
            serial: leaf.serial,
        }
    }
}

/// What a client saw of a TLS handshake.
#[derive(Debug)]
pub struct Handshake {
    /// The leaf certificate's serial number.
    pub serial: u64,
    pub version: rustls::ProtocolVersion,
    /// The protocol agreed by ALPN, if any.
    pub alpn: Option<Vec<u8>>,
}

/// rustls's client settings trusting `ca` alone, offering `alpn`.
pub fn client_config(ca: &TestCa, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS handshake with `addr` asking for `sni` (an IP address sends
/// none), verified against `ca`; what the server presented.
pub async fn handshake(
    addr: std::net::SocketAddr,
    sni: &str,
    ca: &TestCa,
) -> Result<Handshake, String> {
    use rustls_pki_types::ServerName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let config = client_config(ca, &[b"h2", b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(super::DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "the handshake did not finish".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let leaf = &session.peer_certificates().ok_or("no certificate")?[0];
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
    let serial = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .fold(0u64, |n, b| (n << 8) | u64::from(*b));
    Ok(Handshake {
        serial,
        version: session.protocol_version().ok_or("no version")?,
        alpn: session.alpn_protocol().map(|p| p.to_vec()),
    })
}

/// An HTTPS client trusting `ca` alone, with `names` resolved to `addr`
/// (no DNS), HTTP/2 offered by ALPN unless `http1_only`.
pub fn https_client(
    ca: &TestCa,
    names: &[&str],
    addr: std::net::SocketAddr,
    http1_only: bool,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(std::time::Duration::from_secs(60));
    for name in names {
        builder = builder.resolve(name, addr);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}
