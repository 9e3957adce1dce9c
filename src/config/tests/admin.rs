//! `admin:`: the listener's address and its token.

use super::bounds::{set, set_in};
use super::*;

const TOKEN: &str = "s3cret-0123456789abcdef";

fn admin(listen: &str, extra: &str) -> String {
    set("admin", &format!("{{ listen: \"{listen}\"{extra} }}"))
}

#[test]
fn off_unless_configured_and_open_on_loopback() {
    assert!(Config::from_yaml(&set("server.threads", "2"))
        .unwrap()
        .admin
        .is_none());
    let c = Config::from_yaml(&admin("127.0.0.1:9100", "")).unwrap();
    let a = c.admin.unwrap();
    assert_eq!(a.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(a.token, None);
    assert!(Config::from_yaml(&admin("[::1]:9100", "")).is_ok());
}

#[test]
fn beyond_loopback_a_token_is_required() {
    assert_error(
        &admin("0.0.0.0:9100", ""),
        "admin.listen: \"0.0.0.0:9100\" is not a loopback address, so the admin listener \
         needs a token: set admin.token_env or admin.token_file",
    );
}

#[test]
fn never_a_proxy_listener() {
    let base = set("server.listen", "[\"127.0.0.1:8080\", \"0.0.0.0:8081\"]");
    assert_error(
        &set_in(&base, "admin", "{ listen: \"127.0.0.1:8080\" }"),
        "admin.listen: \"127.0.0.1:8080\" is also where the proxy listens (server.listen[0]): \
         give the admin listener a port of its own",
    );
    // 0.0.0.0:8081 takes the port on every address.
    assert_error(
        &set_in(&base, "admin", "{ listen: \"127.0.0.1:8081\" }"),
        "admin.listen: \"127.0.0.1:8081\" is also where the proxy listens (server.listen[1]): \
         give the admin listener a port of its own",
    );
    assert!(Config::from_yaml(&set_in(&base, "admin", "{ listen: \"127.0.0.1:9100\" }")).is_ok());
}

#[test]
fn listen_is_required_and_checked() {
    assert_error(
        &set("admin", "{ token_env: X }"),
        "admin.listen: is required, such as \"127.0.0.1:9100\"",
    );
    assert_error(
        &admin("localhost:9100", ""),
        "admin.listen: \"localhost:9100\" is not an IP:port address",
    );
    assert_error(
        &admin("127.0.0.1:0", ""),
        "admin.listen: \"127.0.0.1:0\" has port 0, which would listen on a random port",
    );
    assert_error(
        &admin("127.0.0.1:9100", ", tokens: x"),
        "admin.tokens: unknown key",
    );
}

#[test]
fn one_token_source_at_most() {
    assert_error(
        &admin("127.0.0.1:9100", ", token_env: A, token_file: /b"),
        "admin: give token_env or token_file, not both",
    );
}

#[test]
fn a_missing_variable_or_file_names_its_key() {
    let all = errors(&admin(
        "0.0.0.0:9100",
        ", token_env: SWITCHYARD_TEST_NEVER_SET_ANYWHERE",
    ));
    assert_eq!(
        all,
        vec!["admin.token_env: environment variable SWITCHYARD_TEST_NEVER_SET_ANYWHERE is not set"]
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").display().to_string();
    let all = errors(&admin(
        "0.0.0.0:9100",
        &format!(", token_file: {missing:?}"),
    ));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with(&format!("admin.token_file: cannot read {missing:?}: ")),
        "{all:?}"
    );
}

#[test]
fn a_token_file_is_read_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let yaml = admin(
        "0.0.0.0:9100",
        &format!(", token_file: {:?}", file.display()),
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let token = c.admin.as_ref().unwrap().token.as_ref().unwrap();
    assert!(token.matches(TOKEN.as_bytes()), "trailing newline trimmed");
    assert!(!token.matches(b"s3cret"));
    assert!(!format!("{c:?}").contains(TOKEN), "Debug hides the token");

    // Too short, or with characters a header cannot carry: the error
    // says so without the token.
    for bad in ["short", "has a space in it, long enough"] {
        std::fs::write(&file, bad).unwrap();
        let all = errors(&yaml);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with("admin.token_file: the token in file "),
            "{all:?}"
        );
        assert!(!all[0].contains(bad), "{all:?}");
    }
}
