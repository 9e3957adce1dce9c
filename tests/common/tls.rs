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
