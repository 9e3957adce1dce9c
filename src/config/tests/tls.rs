//! `server.listen[i].tls`: the listen forms, relative paths, and every
//! problem with a certificate named by key and path.

use super::*;
use rcgen::{CertificateParams, KeyPair};
use std::path::Path;

/// Writes a self-signed certificate for `name` as `dir/FILE.crt` and
/// `dir/FILE.key`.
fn issue(dir: &Path, file: &str, name: &str) {
    let params = CertificateParams::new(vec![name.to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
}

fn with_listen(listen: &str) -> String {
    format!(
        "server:\n  listen:\n{listen}\
         pools:\n  a:\n    backends: [{{ url: \"http://127.0.0.1:9001\" }}]\n"
    )
}

fn errors_in(dir: &Path, yaml: &str) -> Vec<String> {
    match Config::from_yaml_in(yaml, dir) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_plain_and_tls_forms_mix_and_paths_start_at_the_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "a", "a.test");
    issue(dir.path(), "b", "b.test");
    let yaml = with_listen(
        "    - \"127.0.0.1:8080\"\n\
         \x20   - { addr: \"127.0.0.1:8443\", tls: { cert: a.crt, key: a.key } }\n\
         \x20   - addr: \"127.0.0.1:9443\"\n\
         \x20     tls:\n\
         \x20       certs:\n\
         \x20         - { cert: b.crt, key: b.key }\n\
         \x20         - { cert: a.crt, key: a.key }\n",
    );
    let c = Config::from_yaml_in(&yaml, dir.path()).unwrap();
    let addrs: Vec<String> = c.server.listen.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:9443"]
    );
    assert_eq!(c.listeners().len(), 3);
    let tls = &c.server.tls;
    assert_eq!(tls.len(), 2);
    assert_eq!(tls[0].addr.to_string(), "127.0.0.1:8443");
    assert_eq!(tls[0].certs[0].cert_path, dir.path().join("a.crt"));
    assert_eq!(tls[0].certs[0].at, "server.listen[1].tls");
    assert_eq!(tls[1].certs[0].names, ["b.test"]);
    assert_eq!(tls[1].certs[1].at, "server.listen[2].tls.certs[1]");
    assert_eq!(
        c.warnings(std::time::SystemTime::now()),
        Vec::<String>::new()
    );
}

#[test]
fn every_certificate_problem_names_its_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "a", "a.test");
    issue(dir.path(), "b", "b.test");
    let at = |f: &str| dir.path().join(f).display().to_string();
    let yaml = with_listen(
        "    - { addr: \"127.0.0.1:8443\", tls: { cert: nope.crt, key: a.key } }\n\
         \x20   - { addr: \"127.0.0.1:8444\", tls: { cert: a.crt, key: b.key } }\n\
         \x20   - { addr: \"127.0.0.1:8445\", tls: { cert: a.crt } }\n\
         \x20   - { addr: \"127.0.0.1:8446\", tls: { cert: a.crt, key: a.key, certs: [] } }\n\
         \x20   - { addr: \"127.0.0.1:8447\", tls: { certs: [] } }\n\
         \x20   - { addr: \"127.0.0.1:8448\", tls: { certs: [{ cert: a.key, key: a.key }] } }\n\
         \x20   - { addr: \"127.0.0.1:8449\" }\n\
         \x20   - { tls: { cert: a.crt, key: a.key } }\n\
         \x20   - { addr: \"127.0.0.1:8450\", tls: { cert: a.crt, key: a.key, ca: x } }\n",
    );
    let all = errors_in(dir.path(), &yaml);
    let expected = [
        "server.listen[8].tls.ca: unknown key".to_string(),
        format!(
            "server.listen[0].tls.cert: {:?}: cannot read: No such file or directory (os error 2)",
            at("nope.crt")
        ),
        format!(
            "server.listen[1].tls: key {:?} is not the key of certificate {:?}",
            at("b.key"),
            at("a.crt")
        ),
        "server.listen[2].tls.key: is required: a PEM file".to_string(),
        "server.listen[3].tls: give cert and key, or certs, not both: \
         { cert: FILE, key: FILE } or { certs: [{ cert: FILE, key: FILE }, ...] }"
            .to_string(),
        "server.listen[4].tls.certs: lists no certificate".to_string(),
        format!(
            "server.listen[5].tls.certs[0].cert: {:?}: holds no PEM certificate",
            at("a.key")
        ),
        "server.listen[6].tls: is required in a mapping; write a plain listener as the \
         address alone"
            .to_string(),
        "server.listen[7].addr: is required, such as \"0.0.0.0:443\"".to_string(),
    ];
    assert_eq!(all, expected);
}

#[test]
fn a_tls_listener_is_an_address_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "a", "a.test");
    let yaml = with_listen(
        "    - \"127.0.0.1:8443\"\n\
         \x20   - { addr: \"127.0.0.1:8443\", tls: { cert: a.crt, key: a.key } }\n\
         \x20   - { addr: \"localhost:443\", tls: { cert: a.crt, key: a.key } }\n",
    );
    assert_eq!(
        errors_in(dir.path(), &yaml),
        [
            r#"server.listen[1].addr: "127.0.0.1:8443" is listed twice"#,
            r#"server.listen[2].addr: "localhost:443" is not an IP:port address"#,
        ]
    );
}

#[test]
fn values_of_the_wrong_type_say_what_the_key_takes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_listen(
        "    - { addr: \"127.0.0.1:8443\", tls: \"a.crt\" }\n\
         \x20   - { addr: \"127.0.0.1:8444\", tls: { certs: a.crt } }\n",
    );
    let all = errors_in(dir.path(), &yaml);
    assert_eq!(
        all,
        [
            "server.listen[0].tls: must be a mapping: { cert: FILE, key: FILE } or \
             { certs: [{ cert: FILE, key: FILE }, ...] }, not \"a.crt\" (line 3)",
            "server.listen[1].tls.certs: must be a list of { cert: FILE, key: FILE }, \
             not \"a.crt\" (line 4)",
        ]
    );
}
