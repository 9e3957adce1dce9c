//! `access_log:`: off by default, a file or stdout, and one format.

use super::bounds::set;
use super::*;
use std::path::PathBuf;

#[test]
fn off_unless_configured() {
    let c = Config::from_yaml(&set("server.threads", "2")).unwrap();
    assert_eq!(c.access_log, None);
}

#[test]
fn a_file_or_stdout_in_json() {
    let c = Config::from_yaml(&set("access_log", "{ path: /var/log/s/access.log }")).unwrap();
    assert_eq!(
        c.access_log,
        Some(AccessLogSpec {
            path: LogPath::File(PathBuf::from("/var/log/s/access.log")),
            format: LogFormat::Json,
        })
    );
    let c = Config::from_yaml(&set("access_log", "{ path: stdout, format: json }")).unwrap();
    assert_eq!(c.access_log.unwrap().path, LogPath::Stdout);
}

#[test]
fn every_problem_is_named_with_its_key() {
    let all = errors(&set(
        "access_log",
        "{ path: logs/access.log, format: text }",
    ));
    assert_eq!(
        all,
        vec![
            "access_log.path: \"logs/access.log\" is not an absolute path (a relative one would \
             depend on the directory Switchyard was started in)"
                .to_string(),
            "access_log.format: \"text\" is not a format; the one format is json".to_string(),
        ]
    );
    assert_error(
        &set("access_log", "{ format: json }"),
        "access_log.path: is required: an absolute file path such as \
         /var/log/switchyard/access.log, or stdout",
    );
    assert_error(
        &set("access_log", "{ path: \"\" }"),
        "access_log.path: is empty",
    );
    assert_error(
        &set("access_log", "{ path: /var/log/ }"),
        "access_log.path: \"/var/log/\" names a directory, not a file",
    );
    assert_error(
        &set("access_log", "{ path: \"/tmp/a\\0b\" }"),
        "access_log.path: \"/tmp/a\\0b\" has a NUL byte, which no file name can",
    );
    assert_error(
        &set("access_log", "{ path: /tmp/a, buffer: 1MiB }"),
        "access_log.buffer: unknown key",
    );
}

#[test]
fn a_path_alone_is_a_mistyped_section() {
    let all = errors(&set("access_log", "/var/log/access.log"));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with("access_log: must be a mapping such as { path: "),
        "{all:?}"
    );
}
