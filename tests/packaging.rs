//! What ships besides the binary: the systemd unit and the example config.

mod common;

use common::{binary, check_config};
use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo("systemd/switchyard.service")).unwrap();
    for required in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "TimeoutStopSec=90s",
        "Restart=on-failure",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=262144",
        "PIDFile=/run/switchyard/switchyard.pid",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }
    // The unit points at /usr/local/bin; verify a copy that points at the
    // binary under test, since verify checks that commands exist.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("switchyard.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/switchyard", binary().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Unknown keys are only warnings, with exit status 0: any output fails.
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| {
            !l.contains("Failed to connect") && !l.contains("not running") && !l.trim().is_empty()
        })
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(repo("conf/switchyard.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `conf/examples/hybrid.yaml` is checked by `-t` with its key in the
/// environment. Its cloud host is a real provider's, which a machine
/// without DNS cannot resolve: that, and only that, may be said of the
/// file itself, and the same file with the host replaced by `localhost`
/// must be valid.
#[test]
fn the_hybrid_example_is_valid() {
    let example = std::fs::read_to_string(repo("conf/examples/hybrid.yaml")).unwrap();
    let env = [("GROQ_API_KEY", "gsk_example_key_for_the_test")];
    let (code, out) = check_config(&example, &env);
    let unresolved = "pools.fleet.backends[3].url: \"https://api.groq.com/openai\": host \"api.groq.com\" does not resolve";
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(
        code == 0 || problems == [format!("  {unresolved}")],
        "{out}"
    );
    let local = example.replace("https://api.groq.com/", "https://localhost/");
    let (code, out) = check_config(&local, &env);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("gsk_example"), "-t shows the key: {out}");
    let (code, out) = check_config(&local, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("pools.fleet.backends[3].headers.Authorization.env: environment variable GROQ_API_KEY is not set"),
        "{out}"
    );
}
