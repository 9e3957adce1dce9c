//! `server:`: the client-side settings and the listeners.

use super::bounds::set;
use super::*;
use std::time::Duration;

#[test]
fn client_settings_have_their_defaults() {
    let c = Config::from_yaml(&set("server.threads", "2")).unwrap();
    let s = &c.server;
    assert_eq!(
        s.timeouts,
        ClientTimeouts {
            client_header: Duration::from_secs(30),
            client_body: Duration::from_secs(60),
            client_send: Duration::from_secs(60),
            keepalive: Duration::from_secs(60),
        }
    );
    assert_eq!(s.max_header_size, 32 << 10);
    assert_eq!(s.max_connections, 16384);
    assert_eq!(s.max_request_body, 32 << 20);
    assert_eq!(s.upstream_keepalive_pool_size, 1024);
}

#[test]
fn client_settings_are_read() {
    let yaml = "server:\n  timeouts: { client_header: 10s, client_body: 20s, client_send: 30s, keepalive: 0s }\n  \
                max_header_size: 16KiB\n  max_connections: 100\n\
                pools:\n  a:\n    backends: [{ url: \"http://127.0.0.1:9001\" }]\n";
    let s = Config::from_yaml(yaml).unwrap().server;
    assert_eq!(s.timeouts.client_header, Duration::from_secs(10));
    assert_eq!(s.timeouts.client_body, Duration::from_secs(20));
    assert_eq!(s.timeouts.client_send, Duration::from_secs(30));
    assert_eq!(s.timeouts.keepalive, Duration::ZERO);
    assert_eq!(s.max_header_size, 16 << 10);
    assert_eq!(s.max_connections, 100);
}

#[test]
fn a_misspelt_client_timeout_is_an_unknown_key() {
    assert_error(
        &set("server.timeouts.header", "10s"),
        "server.timeouts.header: unknown key",
    );
}

#[test]
fn listening_on_port_0_is_refused() {
    assert_error(
        &set("server.listen", "[\"127.0.0.1:8080\", \"0.0.0.0:0\"]"),
        r#"server.listen[1]: "0.0.0.0:0" has port 0, which would listen on a random port"#,
    );
}
