//! The command line of the `switchyard` binary.

use clap::{Parser, Subcommand};
use std::io::Read;
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

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// API keys for `auth.keys`.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Read a key on standard input and print the `sha256:` line to paste
    /// into its entry of auth.keys.
    Hash,
    /// Print a new random key, and the `sha256:` line for it.
    New,
}

/// Runs `switchyard key ...`: `input` is standard input; what to print
/// goes to `out`. An error is a message for standard error.
pub fn key_command(
    action: &KeyAction,
    input: &mut dyn std::io::Read,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let write_err = |e: std::io::Error| e.to_string();
    match action {
        KeyAction::Hash => {
            let mut key = String::new();
            std::io::Read::take(&mut *input, 64 << 10)
                .read_to_string(&mut key)
                .map_err(|e| format!("cannot read the key: {e}"))?;
            let line = crate::auth::keygen::hash_line(&key)?;
            writeln!(out, "{line}").map_err(write_err)
        }
        KeyAction::New => {
            let key = crate::auth::keygen::new_key();
            let line = crate::auth::keygen::hash_line(&key)?;
            writeln!(
                out,
                "key:    {key}\n        (give it to its user; it is not shown again)\nconfig: {line}"
            )
            .map_err(write_err)
        }
    }
}

/// `EX_USAGE` from sysexits.h, the exit code for an invalid configuration.
pub const EXIT_BAD_CONFIG: u8 = 64;
