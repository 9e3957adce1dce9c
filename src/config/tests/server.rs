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

#[test]
fn forwarding_settings_have_their_defaults() {
    let s = Config::from_yaml(&set("server.threads", "2"))
        .unwrap()
        .server;
    assert!(s.expose_backend);
    assert!(s.trusted_proxies.is_empty());
}

#[test]
fn trusted_proxies_are_networks_or_addresses() {
    let list = r#"["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", " ::1 "]"#;
    let s = Config::from_yaml(&set("server.trusted_proxies", list))
        .unwrap()
        .server;
    let trusts = |ip: &str| s.trusted_proxies.contains(ip.parse().unwrap());
    assert!(trusts("10.200.0.1") && trusts("192.0.2.7") && trusts("2001:db8::9"));
    assert!(trusts("::1"));
    assert!(!trusts("192.0.2.8") && !trusts("11.0.0.1") && !trusts("2001:db9::1"));
    let s = Config::from_yaml(&set("server.expose_backend", "false"))
        .unwrap()
        .server;
    assert!(!s.expose_backend);
}

#[test]
fn bad_trusted_proxies_are_all_named_by_their_index() {
    let list =
        r#"["10.0.0.0/8", "10.0.0.0/33", "proxy.example.com", "10.1.2.3/8", "::/0", "fd00::/8"]"#;
    let all = errors(&set("server.trusted_proxies", list));
    let expected = [
        r#"server.trusted_proxies[1]: "10.0.0.0/33" is not a network (an address and a prefix length, such as "10.0.0.0/8" or "fd00::/8") or an address"#,
        r#"server.trusted_proxies[2]: "proxy.example.com" is not a network (an address and a prefix length, such as "10.0.0.0/8" or "fd00::/8") or an address"#,
        r#"server.trusted_proxies[3]: "10.1.2.3/8" has bits set past its prefix length; the network is "10.0.0.0/8""#,
        r#"server.trusted_proxies[4]: "::/0" trusts every address, so any client could choose the address Switchyard sees; list the networks of the proxies in front"#,
    ];
    assert_eq!(all, expected);
}

#[test]
fn trusted_proxies_of_the_wrong_type_or_too_many() {
    assert_error(
        &set("server.trusted_proxies", r#""10.0.0.0/8""#),
        r#"server.trusted_proxies: must be a list of networks such as ["10.0.0.0/8", "fd00::/8"], not "10.0.0.0/8" (line 6)"#,
    );
    let many: Vec<String> = (0..1025)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .collect();
    assert_error(
        &set("server.trusted_proxies", &format!("[{}]", many.join(", "))),
        "server.trusted_proxies: has 1025 entries, more than the maximum 1024",
    );
    assert_error(
        &set("server.expose_backend", "\"no\""),
        r#"server.expose_backend: must be true or false, not "no" (line 6)"#,
    );
}
