//! Certificates made with rcgen: loading, the checks, the pick by SNI.

use super::certificate::{Certificate, Part};
use super::resolver::CertSet;
use rcgen::{CertificateParams, KeyPair};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A self-signed certificate for `names`, valid until `not_after`, written
/// to `dir/FILE.crt` and `dir/FILE.key`.
fn issue(dir: &Path, file: &str, names: &[&str], not_after: SystemTime) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
    params.not_after = not_after.into();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn in_days(days: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(days * 24 * 3600)
}

#[test]
fn loads_names_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = issue(
        dir.path(),
        "a",
        &["API.example.com", "*.example.org"],
        in_days(90),
    );
    let cert = Certificate::load("server.listen[0].tls", &c, &k).unwrap();
    assert_eq!(cert.names, ["api.example.com", "*.example.org"]);
    let left = cert.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(89 * 24 * 3600), "{left:?}");
    assert_eq!(cert.expiry_warning(SystemTime::now()), None);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = issue(dir.path(), "a", &["a.test"], in_days(90));
    let (_, other) = issue(dir.path(), "b", &["b.test"], in_days(90));
    let e = Certificate::load("t", &c, &other).unwrap_err();
    assert_eq!(e.part, Part::Pair);
    assert_eq!(
        e.message,
        format!(
            "key {:?} is not the key of certificate {:?}",
            other.display(),
            c.display()
        )
    );
}

#[test]
fn missing_files_and_files_that_are_not_pem_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = issue(dir.path(), "a", &["a.test"], in_days(90));
    let missing = dir.path().join("nope.crt");
    let e = Certificate::load("t", &missing, &k).unwrap_err();
    assert_eq!(e.part, Part::Cert);
    assert!(
        e.message
            .starts_with(&format!("{:?}: cannot read", missing.display())),
        "{e:?}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let e = Certificate::load("t", &junk, &k).unwrap_err();
    assert_eq!(
        e.message,
        format!("{:?}: holds no PEM certificate", junk.display())
    );
    // The certificate given as the key: a PEM file with no key in it.
    let e = Certificate::load("t", &c, &c).unwrap_err();
    assert_eq!(e.part, Part::Key);
    assert_eq!(
        e.message,
        format!("{:?}: holds no PEM private key", c.display())
    );
}

#[test]
fn warns_within_fourteen_days_and_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = issue(dir.path(), "a", &["a.test"], in_days(10));
    let cert = Certificate::load("server.listen[1].tls", &c, &k).unwrap();
    let warning = cert.expiry_warning(SystemTime::now()).unwrap();
    assert!(
        warning.starts_with(&format!(
            "server.listen[1].tls.cert: {:?} expires in 9 days",
            c.display()
        )),
        "{warning}"
    );
    let later = cert.expiry_warning(in_days(11)).unwrap();
    assert!(later.contains("expired at"), "{later}");
    assert_eq!(cert.expiry_warning(in_days(10) - EARLY), None);
}

/// Fifteen days before a ten-day certificate's end: no warning yet.
const EARLY: Duration = Duration::from_secs(15 * 24 * 3600);

#[test]
fn sni_picks_exact_then_wildcard_then_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let load = |file: &str, names: &[&str]| {
        let (c, k) = issue(dir.path(), file, names, in_days(90));
        Certificate::load(file, &c, &k).unwrap()
    };
    let first = load("first", &["first.test"]);
    let wild = load("wild", &["*.example.com"]);
    let exact = load("exact", &["api.example.com"]);
    let set = CertSet::new(&[first.clone(), wild.clone(), exact.clone()]).unwrap();
    let is = |sni: Option<&str>, cert: &Certificate| {
        assert_eq!(set.pick(sni).cert, cert.key.cert, "{sni:?}");
    };
    is(Some("api.example.com"), &exact);
    is(Some("API.Example.com."), &exact);
    is(Some("chat.example.com"), &wild);
    // A wildcard covers one label only.
    is(Some("a.b.example.com"), &first);
    is(Some("example.com"), &first);
    is(Some("other.test"), &first);
    is(None, &first);
    assert!(CertSet::new(&[]).is_none());
}
