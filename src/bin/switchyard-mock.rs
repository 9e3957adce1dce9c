//! `switchyard-mock`: one mock LLM backend as its own process, for benchmarks
//! and manual testing. Only parses the command line; the server is
//! `switchyard::mock`.
//!
//! Prints `switchyard-mock <name> listening on <addr>` once bound, which is
//! what scripts wait for, and runs until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::mock::{Failure, MockConfig, MockServer, MockTls};

/// A mock inference backend speaking the OpenAI, Ollama and Anthropic APIs
/// as Ollama does.
#[derive(Debug, Parser)]
#[command(name = "switchyard-mock", version)]
struct Args {
    /// Address to listen on, `ip:port`; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:11434")]
    listen: SocketAddr,

    /// Name reported in the `x-mock-backend` header and response bodies.
    #[arg(long, default_value = "mock")]
    name: String,

    /// Comma-separated models to serve [default: llama3,qwen2.5].
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    models: Option<Vec<String>>,

    /// Time to first token, e.g. `50ms` [default: 10ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    ttft: Option<Duration>,

    /// Time between tokens, e.g. `20ms` [default: 5ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    token_gap: Option<Duration>,

    /// Tokens per completion [default: 8].
    #[arg(long, value_name = "N")]
    tokens: Option<usize>,

    /// Failure mode: `none`, an HTTP status such as `503`, `hang`,
    /// `drop:N` (cut streams after N tokens) or `split:N` (cut them in the
    /// middle of the token after N).
    #[arg(long, value_name = "MODE", default_value = "none")]
    fail: Failure,

    /// Serve HTTPS with this certificate (PEM), with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// A path prefix every request must carry (as behind a reverse proxy).
    #[arg(long, value_name = "PATH", default_value = "")]
    base_path: String,
}

impl Args {
    /// Library defaults for whatever was not given.
    fn config(self) -> MockConfig {
        let mut cfg = MockConfig::new(self.name)
            .failure(self.fail)
            .base_path(self.base_path);
        if let Some(models) = self.models {
            cfg = cfg.models(models.into_iter().filter(|m| !m.is_empty()));
        }
        if let Some(ttft) = self.ttft {
            cfg = cfg.ttft(ttft);
        }
        if let Some(gap) = self.token_gap {
            cfg = cfg.token_gap(gap);
        }
        if let Some(tokens) = self.tokens {
            cfg = cfg.tokens(tokens);
        }
        cfg
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::init();
    let args = Args::parse();
    let listen = args.listen;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = MockTls::new(cert, key);
            if let Some(ca) = &args.tls_client_ca {
                tls = tls.require_client_cert(ca);
            }
            match tls.acceptor() {
                Ok(acceptor) => Some(acceptor),
                Err(e) => {
                    eprintln!("switchyard-mock: cannot use the TLS certificate: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let server = match MockServer::bind_with(listen, args.config(), tls) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("switchyard-mock: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "switchyard-mock {} listening on {}",
        server.name(),
        server.addr()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("switchyard-mock: cannot wait for Ctrl-C: {e}");
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}
