//! TLS to one HTTPS backend: the roots its certificate is checked against,
//! the client certificate it may ask for, and whether it is checked at all.
//!
//! The files are read once, when the configuration is loaded (and by every
//! reload), into the two forms that use them: Pingora's per-peer CA list
//! and client certificate for proxied requests, and a rustls client
//! configuration for the requests Switchyard makes itself (model lists,
//! `/api/ps`). A file that does not parse, or a key that does not belong
//! to its certificate, is a configuration error, never a failure of the
//! first request (Pingora's connector panics on a certificate it cannot
//! read).

use pingora_core::utils::tls::{CertKey, WrappedX509};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file larger than this is not a certificate chain or a key: a CA
/// bundle of every public root is about 220 KB.
pub const MAX_PEM_FILE: u64 = 4 << 20;

/// TLS settings of one `https://` backend.
pub struct BackendTls {
    /// The server name sent (SNI) and checked: the URL's host.
    pub sni: String,
    /// `tls.verify`: `false` accepts any certificate.
    pub verify: bool,
    /// `tls.ca`, when given: only these roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// `tls.cert`, for messages.
    pub cert_file: Option<PathBuf>,
    /// The roots of `tls.ca`, as Pingora's connector takes them; `None`
    /// uses the system's roots.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate and key of `tls.cert` and `tls.key`.
    pub client: Option<Arc<CertKey>>,
    /// For Switchyard's own requests to the backend.
    pub client_config: Arc<ClientConfig>,
    /// A hash of everything above that decides whether a connection may be
    /// reused: it becomes the Pingora peer's `group_key`, so a connection
    /// made under one CA or client certificate is never handed to a
    /// request configured with another (Pingora's pool key has the SNI,
    /// the client certificate's serial and the verify flags, not the CA).
    pub fingerprint: u64,
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is not shown, nor anything read from the files.
        f.debug_struct("BackendTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// What `tls:` says, with the files not read yet.
#[derive(Debug, Default)]
pub struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub verify: bool,
}

/// A problem with one of the files, and the key it belongs to.
#[derive(Debug)]
pub struct TlsError {
    /// `ca`, `cert` or `key`.
    pub key: &'static str,
    pub message: String,
}

fn error(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

/// The system's roots, read once per configuration load by whoever asks
/// first, since every HTTPS backend without `tls.ca` uses them.
#[derive(Default)]
pub struct SystemRoots(Option<Arc<RootCertStore>>);

impl SystemRoots {
    fn get(&mut self) -> Arc<RootCertStore> {
        self.0
            .get_or_insert_with(|| {
                let mut store = RootCertStore::empty();
                // A system without roots is left with none: every backend
                // then fails its check, saying the issuer is unknown.
                if let Err(e) =
                    pingora_core::tls::load_platform_certs_incl_env_into_store(&mut store)
                {
                    log::warn!("cannot read the system's root certificates: {e}");
                }
                Arc::new(store)
            })
            .clone()
    }
}

/// Reads the files of `files` for a backend whose host is `sni`.
pub fn load(
    sni: &str,
    files: &TlsFiles<'_>,
    system: &mut SystemRoots,
) -> Result<BackendTls, Vec<TlsError>> {
    let mut errors = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    sni.hash(&mut hasher);
    files.verify.hash(&mut hasher);
    let ca = match files.ca {
        Some(path) => match certificates(path) {
            Ok(certs) => {
                certs.hash(&mut hasher);
                Some(certs)
            }
            Err(e) => {
                errors.push(error("ca", e));
                None
            }
        },
        None => None,
    };
    let client = match (files.cert, files.key) {
        (Some(cert), Some(key)) => match (certificates(cert), private_key(key)) {
            (Ok(certs), Ok(key)) => {
                certs.hash(&mut hasher);
                Some((certs, key))
            }
            (certs, key) => {
                if let Err(e) = certs {
                    errors.push(error("cert", e));
                }
                if let Err(e) = key {
                    errors.push(error("key", e));
                }
                None
            }
        },
        (Some(_), None) => {
            errors.push(error("key", "is required with tls.cert"));
            None
        }
        (None, Some(_)) => {
            errors.push(error("cert", "is required with tls.key"));
            None
        }
        (None, None) => None,
    };
    let roots = match &ca {
        Some(certs) => {
            let mut store = RootCertStore::empty();
            for cert in certs {
                if let Err(e) = store.add(CertificateDer::from(cert.clone())) {
                    errors.push(error(
                        "ca",
                        format!("a certificate is not a usable root: {e}"),
                    ));
                }
            }
            Arc::new(store)
        }
        None => system.get(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![error("ca", e.to_string())])?;
    let builder = if files.verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    };
    let client_config = match &client {
        Some((certs, key)) => {
            let chain = certs.iter().cloned().map(CertificateDer::from).collect();
            let der = PrivateKeyDer::try_from(key.clone())
                .map_err(|e| vec![error("key", format!("is not a private key: {e}"))])?;
            builder.with_client_auth_cert(chain, der).map_err(|e| {
                vec![error(
                    "key",
                    format!("does not go with the certificate of tls.cert: {e}"),
                )]
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(BackendTls {
        sni: sni.to_string(),
        verify: files.verify,
        ca_file: files.ca.map(Path::to_path_buf),
        cert_file: files.cert.map(Path::to_path_buf),
        ca: ca.map(|certs| {
            certs
                .into_iter()
                .map(|der| WrappedX509::new(der, pingora_core::utils::tls::parse_x509))
                .collect()
        }),
        client: client.map(|(certs, key)| Arc::new(CertKey::new(certs, key))),
        client_config: Arc::new(client_config),
        fingerprint: hasher.finish(),
    })
}

/// Reads a PEM file whole, refusing one too large to be a certificate file.
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown:?}: {e}"))?
        .len();
    if len > MAX_PEM_FILE {
        return Err(format!(
            "{shown:?} has {len} bytes, more than a certificate file has ({MAX_PEM_FILE} at most)"
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {shown:?}: {e}"))
}

/// The certificates of a PEM file, each checked with the parser Pingora
/// uses; at least one.
fn certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let shown = path.display();
    let pem = read_pem(path)?;
    let mut out = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| format!("{shown:?} is not PEM: {e}"))?;
        if x509_parser::parse_x509_certificate(&der).is_err() {
            return Err(format!(
                "certificate {} of {shown:?} cannot be parsed",
                out.len() + 1
            ));
        }
        out.push(der.to_vec());
    }
    if out.is_empty() {
        return Err(format!("{shown:?} holds no PEM certificate"));
    }
    Ok(out)
}

/// The one private key of a PEM file (PKCS#8, PKCS#1 or SEC1), as DER.
fn private_key(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let pem = read_pem(path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key.secret_der().to_vec()),
        Ok(None) => Err(format!("{shown:?} holds no PEM private key")),
        // The parser's message may quote the file; it is a key, so no.
        Err(_) => Err(format!("{shown:?} is not a PEM private key")),
    }
}

/// `tls.verify: false`: any certificate is accepted, while the handshake's
/// signatures are still checked (so the connection is at least to the
/// holder of the certificate's key).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
