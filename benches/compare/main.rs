//! `compare`: Switchyard side by side with nginx and HAProxy, and with no
//! proxy at all, on the same mock backend and the same workloads, and at
//! saturation against a static backend that costs less than any proxy.
//!
//! Run it with `benches/run.sh [--quick]` (see `benches/README.md`), which
//! raises the open-file limit, builds the release binaries and then runs
//! `cargo bench --bench compare -- ARGS`.
//!
//! # Layout
//! - `main`: the command line, the two runtimes, the report's header.
//! - `cpus`: which CPUs the proxies and the harness are pinned to.
//! - `targets`: starting direct / Switchyard / Pingora / nginx / HAProxy.
//! - `process`: a server run as a child process, pinned, killed on drop.
//! - `bare`: the bare Pingora proxy, this binary run with `--serve-pingora`.
//! - `backend`: the static backend of workload 6 (nginx `return 200`).
//! - `tls`: the certificate and client settings of workloads 7 and 8.
//! - `https`: workload 9, the proxies reaching the static backend over TLS.
//! - `redis`: the `redis-server` of workload 10, and its own round trip.
//! - `phases`: the workloads, in interleaved rounds.
//! - `load`: the load generator (hyper client connections).
//! - `procfs`: CPU time, memory and machine facts from `/proc`.
//! - `samples`, `report`: percentiles, medians and the Markdown table.
//!
//! # Processes and threads
//! The mock backend is `switchyard::mock::MockServer` in this process, on a
//! tokio runtime of its own (threads named `mock`), so its connection
//! counter can be read directly and every proxy is measured against the
//! very same backend. The load generator has a second runtime (threads
//! named `loadgen`), so the CPU each uses can be read per thread. The
//! proxies are child processes. For workload 6 a second set of them runs
//! in front of the static backend, another child process.

mod backend;
mod bare;
mod cpus;
mod https;
mod load;
mod phases;
mod process;
mod procfs;
mod redis;
mod report;
mod samples;
mod targets;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use switchyard::mock::{MockConfig, MockServer};
use tokio::runtime::Runtime;

use backend::StaticBackend;
use cpus::CpuPlan;
use load::{Client, Window};
use phases::{Bench, EdgeRun, Plan, Variant};
use report::Results;
use targets::{Kind, Launch, Target};

/// The held-stream target of workload 4.
const DEFAULT_STREAMS: u64 = 10_000;

/// File descriptors kept aside from the held-stream budget: runtimes,
/// listeners, the other workloads' connections, logs.
const FD_RESERVE: u64 = 600;

/// Side-by-side benchmark of direct, Switchyard, Pingora, nginx and HAProxy,
/// against a mock backend and (workload 6) a static one.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Args {
    /// About 2½ minutes: 2 rounds of 2 s windows, 2,000 held streams.
    #[arg(long)]
    quick: bool,
    /// Interleaved rounds per workload [default: 3; quick: 2].
    #[arg(long)]
    rounds: Option<usize>,
    /// Measured window per workload and target [default: 5s; quick: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    measure: Option<Duration>,
    /// Warm-up before each window [default: 1s; quick: 500ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Streams to hold open in workload 4 [default: 10000; quick: 2000];
    /// capped by the open-file limit.
    #[arg(long)]
    streams: Option<u64>,
    /// Rate of workload 2 in req/s [default: half of Switchyard's saturation].
    #[arg(long)]
    rate: Option<f64>,
    /// Targets to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,switchyard,pingora,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// Workloads to run, comma-separated: 1 (saturation, with upstream
    /// reuse as 5), 2 (fixed rate), 3 (SSE streams), 4 (held streams),
    /// 6 (saturation against a static backend: nginx answering with the
    /// mock's completion, on the harness's CPUs, so the proxy's CPU runs out
    /// first; the targets are started a second time in front of it, and
    /// direct is the static backend itself). 6 runs first. 7 (TLS
    /// termination, kept-alive connections) and 8 (a full TLS handshake per
    /// request) run Switchyard and nginx terminating TLS in front of a
    /// static backend of their own; they are not in the default run. 9
    /// (the proxies talk HTTPS to a static backend of their own,
    /// kept-alive; upstream reuse from Switchyard's metrics and the
    /// backend's accepts) is not in the default run either, nor is 10
    /// (what an API key and a request limit cost, local and in Redis:
    /// three Switchyard processes in front of a static backend, and a
    /// `redis-server`).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,6")]
    workloads: Vec<u8>,
    /// `auto`: proxies and harness on separate CPUs when there are at least
    /// two; `off`: no pinning.
    #[arg(long, default_value = "auto")]
    pin: String,
    /// Workers of every proxy (Switchyard `threads`, nginx
    /// `worker_processes`, HAProxy `nbthread`) [default: one per CPU the
    /// proxies are pinned to; 2 when not pinning].
    #[arg(long)]
    workers: Option<usize>,
    /// Where to write the Markdown report.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/latest.md"))]
    out: PathBuf,
    /// Run as the bare Pingora proxy on this address, forwarding to
    /// `--backend` (how the harness starts its `Pingora` target).
    #[arg(long, hide = true, requires = "backend")]
    serve_pingora: Option<SocketAddr>,
    #[arg(long, hide = true)]
    backend: Option<SocketAddr>,
    /// With `--serve-pingora`: reach `--backend` over TLS, trusting this.
    #[arg(long, hide = true)]
    backend_ca: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(listen), Some(backend)) = (args.serve_pingora, args.backend) {
        let ca = args.backend_ca.as_deref();
        bare::serve(listen, backend, args.workers.unwrap_or(1), ca);
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let q = args.quick;
    let mut kinds: Vec<Kind> = Vec::new();
    for name in &args.targets {
        let kind = Kind::parse(name).ok_or_else(|| format!("unknown target {name:?}"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    let nofile = procfs::open_files_limit().unwrap_or(1024);
    let streams_wanted = args
        .streams
        .unwrap_or(if q { 2_000 } else { DEFAULT_STREAMS });
    let plan_cpus = CpuPlan::new(&args.pin, &procfs::allowed_cpus());
    // A proxy gets a worker per CPU it runs on: more workers than CPUs
    // would measure them taking turns on one CPU.
    let workers = args
        .workers
        .unwrap_or_else(|| plan_cpus.proxy_cpus.as_ref().map_or(2, Vec::len))
        .max(1);
    let plan = Plan {
        rounds: args.rounds.unwrap_or(if q { 2 } else { 3 }).max(1),
        window: Window {
            warmup: args
                .warmup
                .unwrap_or(Duration::from_millis(if q { 500 } else { 1000 })),
            measure: args
                .measure
                .unwrap_or(Duration::from_secs(if q { 2 } else { 5 })),
        },
        streams_wanted,
        streams: streams_wanted.min(nofile.saturating_sub(FD_RESERVE) / 2),
        hold_probe: Duration::from_secs(if q { 2 } else { 4 }),
        rate: args.rate,
        harness_cpus: plan_cpus.harness_cpus.clone(),
        proxy_cpus: plan_cpus.proxy_cpus.clone(),
        workers,
    };
    // Before pinning, which would make this process see one CPU.
    let machine = procfs::machine();
    if let Some(cpus) = &plan_cpus.harness {
        procfs::pin_self(cpus).map_err(|e| format!("cannot pin the harness: {e}"))?;
    }
    eprintln!("compare: {}", plan_cpus.text);

    // Each runtime gets half the harness CPUs (at least one thread): the
    // load generator must not starve the backend it is measuring through.
    let threads = |name: &str, n: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| format!("{name} runtime: {e}"))
    };
    let hc = plan.harness_cpus.len();
    let mock_rt = threads("mock", hc / 2)?;
    let load_rt = threads("loadgen", hc.div_ceil(2))?;
    let mock = mock_rt.block_on(async {
        let cfg = MockConfig::new("bench").models(["llama3"]);
        MockServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    });
    let mock = mock.map_err(|e| format!("cannot start the mock backend: {e}"))?;

    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let bin_dir = release_dir();
    let launch = Launch {
        backend: mock.addr(),
        dir: dir.path(),
        cpus: plan_cpus.proxy.as_deref(),
        bin_dir: &bin_dir,
        max_conns: plan.streams + 256,
        nofile,
        workers,
        tls: None,
        upstream_tls: None,
        switchyard_extra: "",
    };
    let mut results = Results::default();
    let running = start_targets(&kinds, &launch, "", &mut results);
    let static_run = if args.workloads.contains(&6) {
        // The static backend stands in for the mock, on the same CPUs with
        // as many workers as the mock has threads.
        let workers = (hc / 2).max(1);
        start_static(
            &kinds,
            &launch,
            &load_rt,
            plan_cpus.harness.as_deref(),
            workers,
            "6",
            &mut results,
        )
    } else {
        None
    };
    let tls_files = if args.workloads.iter().any(|w| [7, 8, 9].contains(w)) {
        Some(tls::TlsFiles::new(&dir.path().join("tls"))?)
    } else {
        None
    };
    let tls_run = tls_files
        .as_ref()
        .filter(|_| args.workloads.iter().any(|w| *w == 7 || *w == 8));
    let tls_run = tls_run.and_then(|files| {
        let kinds: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| matches!(k, Kind::Switchyard | Kind::Nginx))
            .collect();
        let launch = Launch {
            tls: Some(files),
            ..launch
        };
        results.note(format!("7., 8. {}.", tls::SETUP));
        start_static(
            &kinds,
            &launch,
            &load_rt,
            plan_cpus.harness.as_deref(),
            (hc / 2).max(1),
            "7",
            &mut results,
        )
    });
    let https_run = tls_files.as_ref().filter(|_| args.workloads.contains(&9));
    let https_run = https_run.and_then(|files| {
        let launch = Launch {
            upstream_tls: Some(files),
            ..launch
        };
        results.note(format!("9. {}.", https::SETUP));
        start_static(
            &kinds,
            &launch,
            &load_rt,
            plan_cpus.harness.as_deref(),
            (hc / 2).max(1),
            "9",
            &mut results,
        )
    });
    let edge_run = if args.workloads.contains(&10) {
        start_edge(
            &launch,
            &load_rt,
            plan_cpus.harness.as_deref(),
            (hc / 2).max(1),
            &mut results,
        )
    } else {
        None
    };
    let started = std::time::Instant::now();
    let results = load_rt.block_on(async {
        if let (Some((_, targets)), Some(files)) = (&tls_run, &tls_files) {
            for t in targets {
                let client = load::Client::tls(t.addr, files.client.clone(), false);
                if let Err(e) = client.probe().await {
                    return Err(format!(
                        "{} does not answer over TLS: {e}\n{}",
                        t.kind.label(),
                        t.log_tail()
                    ));
                }
            }
        }
        if let (Some((backend, targets)), Some(files)) = (&https_run, &tls_files) {
            for t in targets {
                let client = https_client(t, backend, files);
                if let Err(e) = client.probe().await {
                    return Err(format!(
                        "{} does not answer through HTTPS to its backend: {e}\n{}",
                        t.kind.label(),
                        t.log_tail()
                    ));
                }
            }
        }
        let behind_static = static_run.iter().flat_map(|(_, targets)| targets);
        let edge = edge_run
            .iter()
            .flat_map(|e| e.targets.iter().map(|(_, t)| t));
        for t in running.iter().chain(behind_static) {
            if let Err(e) = load::Client::new(t.addr).probe().await {
                return Err(format!(
                    "{} does not answer: {e}\n{}",
                    t.kind.label(),
                    t.log_tail()
                ));
            }
        }
        for t in edge {
            let client = load::Client::new(t.addr).with_key(phases::EDGE_KEY);
            if let Err(e) = client.probe().await {
                return Err(format!(
                    "workload 10's Switchyard does not answer: {e}\n{}",
                    t.log_tail()
                ));
            }
        }
        let mut bench = Bench {
            plan: plan.clone(),
            mock: &mock,
            stats: mock.stats(),
            targets: &running,
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            results,
        };
        let w = &args.workloads;
        // 6 first, so the figures where the proxy is the bottleneck lead
        // the table.
        for (n, name) in [
            (6, "saturation against the static backend"),
            (1, "saturation"),
            (2, "fixed rate"),
            (3, "streaming"),
            (4, "held streams"),
            (7, "TLS termination, kept-alive connections"),
            (8, "TLS handshake per request"),
            (9, "HTTPS to the backend, kept-alive connections"),
            (10, "API key and request limit, local and in Redis"),
        ] {
            if !w.contains(&n) {
                continue;
            }
            eprintln!(
                "compare: workload {n}, {name} ({:.0}s so far)",
                started.elapsed().as_secs_f64()
            );
            match n {
                6 => {
                    if let Some((backend, targets)) = &static_run {
                        bench.static_saturation(targets, backend).await;
                    }
                }
                7 | 8 => {
                    if let (Some((backend, targets)), Some(files)) = (&tls_run, &tls_files) {
                        let client = files.client.clone();
                        bench.tls_saturation(targets, backend, client, n == 8).await;
                    }
                }
                9 => {
                    if let (Some((backend, targets)), Some(files)) = (&https_run, &tls_files) {
                        let client = |t: &targets::Target| https_client(t, backend, files);
                        bench.https_saturation(targets, backend, &client).await;
                    }
                }
                10 => {
                    if let Some(run) = &edge_run {
                        bench.edge_cost(run).await;
                    }
                }
                1 => bench.saturation().await,
                2 => bench.fixed_rate().await,
                3 => bench.streaming().await,
                _ => bench.hold().await,
            }
        }
        Ok(bench.results)
    })?;
    let mut shown: Vec<Kind> = running.iter().map(|t| t.kind).collect();
    for (_, targets) in static_run.iter().chain(&tls_run).chain(&https_run) {
        shown.extend(targets.iter().map(|t| t.kind));
    }
    if edge_run.is_some() {
        shown.push(Kind::Switchyard);
    }
    shown.sort();
    shown.dedup();
    drop(https_run);
    drop(edge_run);
    drop(tls_run);
    drop(static_run);
    drop(running);
    drop(mock);

    let text = render(
        &args,
        &plan,
        &plan_cpus,
        &machine,
        &results,
        &shown,
        started.elapsed(),
    );
    println!("{text}");
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.out, &text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("compare: written to {}", args.out.display());
    Ok(())
}

/// Starts a target of each kind; one that cannot start is skipped with a
/// note, which starts with `prefix` (the workload, when it is only one's).
fn start_targets(
    kinds: &[Kind],
    launch: &Launch,
    prefix: &str,
    results: &mut Results,
) -> Vec<Target> {
    let mut running = Vec::new();
    for kind in kinds {
        match Target::start(*kind, launch) {
            Ok(t) => running.push(t),
            Err(e) => {
                eprintln!("compare: skipping {prefix}{}: {e}", kind.label());
                results.note(format!(
                    "{prefix}{} skipped: {}",
                    kind.label(),
                    e.lines().next().unwrap_or("")
                ));
            }
        }
    }
    running
}

/// How workload 9 reaches `t`: the proxies in plain HTTP, the static
/// backend itself (direct) over TLS.
fn https_client(t: &targets::Target, backend: &StaticBackend, files: &tls::TlsFiles) -> Client {
    if t.addr == backend.addr {
        Client::tls(t.addr, files.client.clone(), false)
    } else {
        Client::new(t.addr)
    }
}

/// Workload 6's static backend, answering with the body the mock gives the
/// load generator's request, and the targets started again in front of it,
/// configured as for the mock. `None`, with a note, if it cannot run.
fn start_static(
    kinds: &[Kind],
    launch: &Launch,
    load_rt: &Runtime,
    cpus: Option<&str>,
    workers: usize,
    workload: &str,
    results: &mut Results,
) -> Option<(StaticBackend, Vec<Target>)> {
    let dir = launch.dir.join(format!("static-{workload}"));
    let mock = Client::new(launch.backend);
    let started = load_rt
        .block_on(async {
            Ok::<_, load::BoxError>((mock.completion().await?, mock.get("/v1/models").await?))
        })
        .map_err(|e| format!("the mock's answers could not be read: {e}"))
        .and_then(|(completion, models)| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let backend = StaticBackend::start(
                &text(&completion),
                &text(&models),
                &dir.join("backend"),
                cpus,
                workers,
                launch.upstream_tls,
            )?;
            Ok((backend, completion.len()))
        });
    let (backend, bytes) = match started {
        Ok(b) => b,
        Err(e) => {
            eprintln!("compare: skipping workload {workload}: {e}");
            results.note(format!(
                "{workload}. skipped: {}",
                e.lines().next().unwrap_or("")
            ));
            return None;
        }
    };
    results.note(format!(
        "{workload}. Static backend: nginx `return 200` with the mock's {bytes}-byte completion, {workers} worker(s){}.",
        cpus.map(|c| format!(", on CPU {c}")).unwrap_or_default()
    ));
    let launch = Launch {
        backend: backend.addr,
        dir: &dir,
        ..*launch
    };
    let targets = start_targets(kinds, &launch, &format!("{workload}. "), results);
    Some((backend, targets))
}

/// Workload 10's static backend, `redis-server` and three Switchyard
/// processes in front of the backend (see `phases::edge_cost`). `None`,
/// with a note, if the backend or the keyless proxy cannot run; without
/// Redis, its variant is left out, with a note.
fn start_edge(
    launch: &Launch,
    load_rt: &Runtime,
    cpus: Option<&str>,
    workers: usize,
    results: &mut Results,
) -> Option<EdgeRun> {
    let (backend, mut plain) = start_static(
        &[Kind::Switchyard],
        launch,
        load_rt,
        cpus,
        workers,
        "10",
        results,
    )?;
    let plain = plain.pop()?;
    let redis = match redis::RedisServer::start(&launch.dir.join("static-10/redis"), cpus) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("compare: workload 10 without Redis: {e}");
            results.note(format!("10. key + Redis limit skipped: {e}"));
            None
        }
    };
    let mut targets = vec![(Variant::NoKey, plain)];
    for v in [Variant::LocalLimit, Variant::RedisLimit] {
        if v == Variant::RedisLimit && redis.is_none() {
            continue;
        }
        let extra = v.config(redis.as_ref());
        let dir = launch.dir.join(format!("static-10/{v:?}"));
        let _ = std::fs::create_dir_all(&dir);
        let launch = Launch {
            backend: backend.addr,
            dir: &dir,
            switchyard_extra: &extra,
            ..*launch
        };
        let mut started = start_targets(&[Kind::Switchyard], &launch, "10. ", results);
        targets.extend(started.pop().map(|t| (v, t)));
    }
    Some(EdgeRun {
        _backend: backend,
        redis,
        targets,
    })
}

/// Where the `switchyard` binary is. Cargo builds the package's binaries
/// for a benchmark and names them at compile time, so the proxy measured is
/// always the one built from the current source with the same profile;
/// without that (built some other way), `target/release` beside this
/// executable, which runs from `target/release/deps/`.
fn release_dir() -> PathBuf {
    if let Some(exe) = option_env!("CARGO_BIN_EXE_switchyard") {
        if let Some(dir) = Path::new(exe).parent() {
            return dir.to_path_buf();
        }
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/release")))
}

/// First line of a command's output (either stream), for version strings.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let all = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&all)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not found".to_string())
}

fn render(
    args: &Args,
    plan: &Plan,
    cpus: &CpuPlan,
    machine: &str,
    results: &Results,
    kinds: &[Kind],
    took: Duration,
) -> String {
    let command = std::env::var("SWITCHYARD_BENCH_CMD").unwrap_or_else(|_| {
        let rest: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        format!("cargo bench --bench compare -- {}", rest.join(" "))
    });
    let rev = first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let w = plan.window;
    format!(
        "# Switchyard vs Pingora vs nginx vs HAProxy\n\n\
         - Command: `{command}`{quick}\n\
         - Machine: {machine}\n\
         - CPUs: {pin}\n\
         - Versions: Switchyard {rev}, {nginx}, {haproxy}\n\
         - Rounds: {rounds} interleaved, figures are medians; windows {warm:?} warm-up + {measure:?} measured\n\
         - Workers: Switchyard `threads: {w}`, nginx `worker_processes {w}`, HAProxy `nbthread {w}`\n\
         - Took {took:.0}s\n\n{table}",
        quick = if args.quick { " (quick mode)" } else { "" },
        w = plan.workers,
        pin = cpus.text,
        nginx = first_line("nginx", &["-v"]),
        haproxy = first_line("haproxy", &["-v"]),
        rounds = plan.rounds,
        warm = w.warmup,
        measure = w.measure,
        took = took.as_secs_f64(),
        table = results.markdown(kinds),
    )
}
