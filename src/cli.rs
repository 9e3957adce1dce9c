//! The command line of the `switchyard` binary.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Load balancer and edge proxy for fleets of LLM inference servers.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version)]
pub struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Check the configuration, print every error, and exit (0 when valid).
    #[arg(short = 't', long = "test")]
    pub test: bool,

    /// Run in the background, writing server.pid_file.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Take over the listening sockets of a running Switchyard (send the
    /// old process SIGQUIT once this one is started).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,

    /// Start a mock fleet of three backends with the proxy in front of it;
    /// no configuration file is read.
    #[arg(long)]
    pub demo: bool,

    /// With --demo: where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080", requires = "demo")]
    pub listen: SocketAddr,
}

/// `EX_USAGE` from sysexits.h, the exit code for an invalid configuration.
pub const EXIT_BAD_CONFIG: u8 = 64;
