//! The official client libraries against the real `switchyard --demo`: the
//! Python `ollama` and `openai` packages, at the versions pinned in
//! `tests/clients/requirements.txt`, run `tests/clients/check_clients.py`,
//! which makes each call a user's tools make (list, ps, show, version,
//! chat, generate, embed; models, chat completions, responses, embeddings)
//! and checks what comes back.
//!
//! Two runs: through the proxy, which is what users see, and straight at
//! one demo backend, so a failure says whether the mock or the proxy
//! answered wrongly.
//!
//! The interpreter is the one of the virtual environment `.ci/run` creates
//! in `.venv-clients`, or `$SWITCHYARD_CLIENTS_PYTHON`. Without it the test
//! fails and says how to create it: a missing client must not pass as a
//! working one.

mod common;

use common::{binary, free_port, wait_until};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchyard::demo::MODELS;

/// Names a Python that has the client libraries, instead of the venv.
const PYTHON_ENV: &str = "SWITCHYARD_CLIENTS_PYTHON";

/// Where `.ci/run` and the README's setup put the venv.
const VENV: &str = ".venv-clients";

/// How long the demo may take to start and list every backend's models.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long the checks may take. They make seven generation calls at the
/// demo's pace (24 tokens, about two seconds each) and a dozen quick ones.
const CHECKS_DEADLINE: Duration = Duration::from_secs(180);

/// The Python to run the checks with; fails the test, saying how to
/// create it, if it is not there.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os(PYTHON_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(VENV).join("bin").join("python"));
    assert!(
        python.exists(),
        "no Python with the client libraries at {}.\n\
         Create it (as .ci/run does) in {}:\n    \
         python3 -m venv {VENV} && {VENV}/bin/pip install -r tests/clients/requirements.txt\n\
         or set {PYTHON_ENV} to a Python that has them.",
        python.display(),
        root.display(),
    );
    python
}

/// A running `switchyard --demo`, killed when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
    /// Its stdout (the banner) and stderr (the log).
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo on a free port, and returns once it lists every
    /// model of its fleet.
    async fn start() -> Demo {
        // The port is picked by binding and releasing it; if another test
        // takes it first, the demo exits saying so and is started again.
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("demo.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(binary())
                .args(["--demo", "--listen", &addr.to_string()])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start switchyard --demo");
            let mut demo = Demo {
                child,
                addr,
                log,
                _dir: dir,
            };
            if demo.wait_listening().await {
                demo.wait_models().await;
                return demo;
            }
            let text = demo.log_text();
            assert!(
                text.contains("address already in use"),
                "the demo exited:\n{text}"
            );
        }
        panic!("no free port for the demo in five tries");
    }

    /// True once the proxy accepts connections, false if the demo exited.
    async fn wait_listening(&mut self) -> bool {
        let end = std::time::Instant::now() + START_DEADLINE;
        while std::time::Instant::now() < end {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the demo did not listen within {START_DEADLINE:?}");
    }

    /// Waits until `/v1/models` lists every model of the fleet: each
    /// backend's list has been discovered and its health check passed.
    async fn wait_models(&self) {
        let client = common::client();
        let url = format!("http://{}/v1/models", self.addr);
        wait_until(START_DEADLINE, "the demo to list its models", || {
            let (client, url) = (&client, &url);
            async move {
                let Ok(resp) = client.get(url).send().await else {
                    return false;
                };
                let Ok(bytes) = resp.bytes().await else {
                    return false;
                };
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let listed: BTreeSet<&str> = body["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["id"].as_str())
                    .collect();
                all_models().iter().all(|m| listed.contains(m))
            }
        })
        .await;
    }

    /// The address of the demo backend named `name`, from the banner.
    fn backend_url(&self, name: &str) -> String {
        let prefix = format!("backend {name} on ");
        self.log_text()
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no line for {name} in the banner:\n{}", self.log_text()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- last lines of the demo's output:\n{}", tail.join("\n"));
        }
    }
}

/// Every model the demo fleet serves.
fn all_models() -> BTreeSet<&'static str> {
    MODELS.iter().flat_map(|m| m.iter().copied()).collect()
}

/// The models every demo backend serves, which any of them can answer.
fn common_models() -> BTreeSet<&'static str> {
    let mut common: BTreeSet<&str> = MODELS[0].iter().copied().collect();
    for models in &MODELS[1..] {
        common.retain(|m| models.contains(m));
    }
    common
}

/// Runs the checks against `url`; fails with their output if any failed.
async fn check_clients(url: &str, chat_model: &str, models: &BTreeSet<&str>) {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/check_clients.py");
    let models = models.iter().copied().collect::<Vec<_>>().join(",");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .args([
            "--url",
            url,
            "--chat-model",
            chat_model,
            "--models",
            &models,
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CHECKS_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("the client checks took over {CHECKS_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client checks against {url} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_work_through_the_proxy() {
    python();
    let demo = Demo::start().await;
    let model = common_models().into_iter().next().expect("a shared model");
    check_clients(&format!("http://{}", demo.addr), model, &all_models()).await;
    // A healthy run, streams the SDKs read to the end and close at once
    // among them, leaves nothing for an operator to act on.
    let log = demo.log_text();
    let alarming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(alarming.is_empty(), "{}", alarming.join("\n"));

    // The banner names the status page; it lists the three backends up,
    // and /metrics beside it counted the clients' requests.
    let page = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("status page on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no status page in the banner:\n{log}"));
    let admin = page.trim_end_matches("/status/");
    let client = common::client();
    let status = client
        .get(format!("{admin}/status"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let states: Vec<&str> = status["pools"][0]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["state"].as_str())
        .collect();
    assert_eq!(states, ["up", "up", "up"], "{status}");
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("switchyard_requests_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_work_against_a_demo_backend() {
    python();
    let demo = Demo::start().await;
    let models: BTreeSet<&str> = MODELS[0].iter().copied().collect();
    let model = MODELS[0][0];
    check_clients(&demo.backend_url("gpu-1"), model, &models).await;
}
