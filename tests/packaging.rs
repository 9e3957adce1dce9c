//! What ships besides the binary: the systemd unit and the example config.

mod common;

use common::binary;
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
