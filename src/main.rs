//! The `switchyard` binary: parse the command line, load the configuration,
//! run the server. Everything else is in the library.

use clap::Parser;
use pingora_core::server::RunArgs;
use std::process::ExitCode;
use switchyard::cli::{Args, EXIT_BAD_CONFIG};
use switchyard::config::Config;
use switchyard::lifecycle::signals::{SignalWatch, UpgradeCommand};
use switchyard::server::{self, RunOptions};

// jemalloc rather than glibc's malloc: Pingora allocates and frees buffers
// of 16 to 64 KiB per request, which glibc answers by consolidating its free
// lists each time (a tenth of the proxy's CPU at saturation). With jemalloc
// a request costs less CPU and a held stream less resident memory
// (`benches/`). The allocator has to be a static; it holds no state of ours.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // SIGHUP's and SIGUSR1's default action ends the process, and
    // Switchyard's handlers are only installed once Pingora's services run.
    // Until then (startup, the daemon fork) a `systemctl reload` or a
    // logrotate must not kill it: ignore the signals. The reload service's
    // and the access log writer's handlers replace this disposition.
    // SAFETY: called before any thread exists; SIG_IGN needs no handler code.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
    if let Err(e) = switchyard::logging::Logger::from_env().install() {
        eprintln!("switchyard: cannot start logging: {e}");
    }
    let args = Args::parse();

    if args.demo {
        let (fleet, addrs) = match switchyard::demo::DemoFleet::bind() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("switchyard: cannot start the demo fleet: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin = switchyard::demo::admin_addr(args.listen);
        let config = switchyard::demo::config(args.listen, admin, &addrs);
        if let Err(e) = server::check_listen(&config.server.listen) {
            eprintln!("switchyard: {e}");
            return ExitCode::FAILURE;
        }
        let (mut server, _) = server::build(config, &RunOptions::default());
        server.add_service(pingora_core::services::background::background_service(
            "demo fleet",
            fleet,
        ));
        println!("{}", switchyard::demo::banner(args.listen, admin, &addrs));
        server.run_forever();
    }

    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "switchyard: configuration {} is invalid:",
                args.config.display()
            );
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    for warning in config.warnings() {
        if args.test {
            eprintln!("switchyard: warning: {warning}");
        } else {
            log::warn!("{warning}");
        }
    }
    if args.test {
        // Only here: a running server's reload must not depend on the disk.
        let problems = config.check_paths();
        if !problems.is_empty() {
            eprintln!(
                "switchyard: configuration {} is invalid:",
                args.config.display()
            );
            for e in &problems {
                eprintln!("  {e}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        println!(
            "switchyard: configuration {} is valid",
            args.config.display()
        );
        return ExitCode::SUCCESS;
    }
    if args.daemon {
        let problems = config.check_daemon_paths();
        if !problems.is_empty() {
            eprintln!("switchyard: cannot start as a daemon:");
            for e in &problems {
                eprintln!("  {e}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    if !args.upgrade {
        if let Err(e) = server::check_listen(&config.listeners()) {
            eprintln!("switchyard: {e}");
            return ExitCode::FAILURE;
        }
        let addrs: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
        log::info!("listening on {}", addrs.join(", "));
        if let Some(admin) = &config.admin {
            log::info!("admin listener on {} (/metrics, /status/)", admin.listen);
        }
    }
    let upgrade = std::env::current_exe().ok().map(|exe| UpgradeCommand {
        exe,
        args: [
            Some("-c".into()),
            Some(args.config.clone().into_os_string()),
            args.daemon.then(|| "-d".into()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        upgrade_sock: config.server.upgrade_sock.clone().into(),
    });
    let options = RunOptions {
        daemon: args.daemon,
        upgrade: args.upgrade,
        config_path: Some(args.config),
    };
    let (server, _) = server::build(config, &options);
    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch::new(upgrade)),
    });
    ExitCode::SUCCESS
}
