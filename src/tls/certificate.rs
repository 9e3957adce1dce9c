//! One certificate of a TLS listener: its chain and key read from PEM
//! files, checked against each other, and what the rest of Switchyard
//! needs to know about it (the names it serves for SNI, when it expires).
//!
//! Files are parsed with `rustls-pemfile` and the certificate's fields with
//! `x509-parser`; nothing here reads DER by hand. A key that does not match
//! its certificate is refused here, at `-t`, start and reload, rather than
//! at the first handshake.

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate expiring sooner than this is warned about by `-t`, at
/// start and on every reload. certbot renews 30 days before expiry, so a
/// certificate with two weeks left means renewal has failed for two weeks,
/// with time left to fix it.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate chain and its private key, loaded and checked.
#[derive(Clone)]
pub struct Certificate {
    /// The configuration key of its entry (`server.listen[0].tls` or
    /// `server.listen[0].tls.certs[1]`), for messages.
    pub at: String,
    /// The chain file, absolute or as written.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// DNS names from its subject alternative names (the subject's common
    /// name when it has none), lower-cased; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// The leaf's serial number in hex, for logs.
    pub serial: String,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
    /// What rustls serves: the chain and the signing key.
    pub key: Arc<CertifiedKey>,
}

impl PartialEq for Certificate {
    /// The same files with the same content: a reload that re-reads an
    /// unchanged certificate changes nothing.
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.key.cert == other.key.cert
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Which file of a pair a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    /// Both: the key is not the certificate's.
    Pair,
}

/// Why a certificate could not be loaded; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub part: Part,
    pub message: String,
}

impl Certificate {
    /// Reads the chain at `cert_path` and the key at `key_path`, and checks
    /// that the key is the leaf certificate's. `at` is the configuration
    /// key, kept for messages.
    pub fn load(at: &str, cert_path: &Path, key_path: &Path) -> Result<Certificate, LoadError> {
        let cert_err = |message: String| LoadError {
            part: Part::Cert,
            message,
        };
        let key_err = |message: String| LoadError {
            part: Part::Key,
            message,
        };
        let shown = cert_path.display();
        let chain = read_chain(cert_path).map_err(cert_err)?;
        let key = read_key(key_path).map_err(key_err)?;
        let leaf = X509Certificate::from_der(chain[0].as_ref())
            .map_err(|e| {
                cert_err(format!(
                    "{shown:?}: the first certificate does not parse: {e}"
                ))
            })?
            .1;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
            key_err(format!(
                "{:?}: not a key rustls can sign with: {e}",
                key_path.display()
            ))
        })?;
        let certified = CertifiedKey::new(chain.clone(), signing);
        if let Err(e) = certified.keys_match() {
            let why = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "is not the key of".to_string()
                }
                other => format!("cannot be checked against ({other})"),
            };
            return Err(LoadError {
                part: Part::Pair,
                message: format!("key {:?} {why} certificate {shown:?}", key_path.display()),
            });
        }
        let seconds = leaf.validity().not_after.timestamp();
        let not_after = if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        };
        Ok(Certificate {
            at: at.to_string(),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            names: names(&leaf),
            serial: leaf.tbs_certificate.raw_serial_as_string().replace(':', ""),
            not_after,
            key: Arc::new(certified),
        })
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING`] of
    /// `now`, or has expired.
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let when = humantime::format_rfc3339_seconds(self.not_after);
        let path = self.cert_path.display();
        match self.not_after.duration_since(now) {
            Err(_) => Some(format!(
                "{}.cert: {path:?} expired at {when}; clients will refuse it",
                self.at
            )),
            Ok(left) if left < EXPIRY_WARNING => {
                let days = left.as_secs() / (24 * 3600);
                Some(format!(
                    "{}.cert: {path:?} expires in {days} days, at {when}; \
                     renew it and reload",
                    self.at
                ))
            }
            Ok(_) => None,
        }
    }
}

/// Every certificate in the PEM file at `path`, leaf first.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown:?}: cannot read: {e}"))?;
    let chain = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown:?}: not a PEM file: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{shown:?}: holds no PEM certificate"));
    }
    Ok(chain)
}

/// The first private key in the PEM file at `path` (PKCS#8, PKCS#1 or
/// SEC1, as certbot and openssl write them).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown:?}: cannot read: {e}"))?;
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(format!("{shown:?}: holds no PEM private key")),
        Err(e) => Err(format!("{shown:?}: not a PEM file: {e}")),
    }
}

/// The names a client may ask for by SNI: the DNS names among the subject
/// alternative names, or the common name when there are none.
fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    names
}
