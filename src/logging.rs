//! The process log: `env_logger` (`RUST_LOG`, `info` by default), with
//! Pingora's known noise lowered to `debug`.
//!
//! ERROR is for what an operator must act on. Pingora logs a few things at
//! ERROR that are not: a race inside its own upstream connection pool (an
//! idle connection's watcher still held it when a request came for it, so
//! a new connection is made; nothing fails) is the one seen in normal
//! traffic. Each such line is named here, by where it comes from and what
//! it says, and logged at `debug` instead, where it still helps whoever
//! studies the pool. Requests that end in an error are kept out of the log
//! by the proxy's `suppress_error_log` hook, which knows the request.

use log::{Level, Log, Metadata, Record};

/// A line of Pingora's that is not an operator's concern: where it is
/// logged from (a module path prefix) and how its message starts.
struct Noise {
    target: &'static str,
    message: &'static str,
}

/// Every line lowered to `debug`.
const NOISE: &[Noise] = &[
    Noise {
        // pingora-core's `TransportConnector::reused_stream`: the idle watcher
        // of a pooled connection had not let go of it yet; the request opens
        // a new connection instead.
        target: "pingora_core::connectors",
        message: "failed to acquire reusable stream",
    },
    Noise {
        // A client's TLS handshake failed on a TLS listener: plain HTTP sent
        // to it, an old TLS version, a client that does not trust the
        // certificate, a scanner. The client is told by the handshake;
        // every port 443 on the internet sees these all day.
        target: "pingora_core::services::listening",
        message: "Downstream handshake error",
    },
];

/// `env_logger`, with [`NOISE`] lowered to `debug`.
pub struct Logger {
    inner: env_logger::Logger,
}

impl Logger {
    /// The logger `RUST_LOG` asks for, `info` when it is not set.
    pub fn from_env() -> Logger {
        let env = env_logger::Env::default().default_filter_or("info");
        Logger {
            inner: env_logger::Builder::from_env(env).build(),
        }
    }

    /// Installs it as the process's logger.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        log::set_max_level(self.inner.filter());
        log::set_boxed_logger(Box::new(self))
    }

    /// The level `record` is logged at.
    fn level_of(record: &Record) -> Level {
        if record.level() > Level::Warn || !record.target().starts_with("pingora") {
            return record.level();
        }
        let noise = NOISE.iter().any(|n| {
            record.target().starts_with(n.target)
                && match record.args().as_str() {
                    Some(text) => text.starts_with(n.message),
                    None => record.args().to_string().starts_with(n.message),
                }
        });
        if noise {
            Level::Debug
        } else {
            record.level()
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let level = Logger::level_of(record);
        if level == record.level() {
            return self.inner.log(record);
        }
        let lowered = Record::builder()
            .args(*record.args())
            .level(level)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.inner.enabled(lowered.metadata()) {
            self.inner.log(&lowered);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(target: &str, level: Level, message: std::fmt::Arguments) -> Level {
        Logger::level_of(
            &Record::builder()
                .args(message)
                .level(level)
                .target(target)
                .build(),
        )
    }

    #[test]
    fn only_named_noise_is_lowered() {
        let pool = "pingora_core::connectors";
        let noise = "failed to acquire reusable stream";
        assert_eq!(
            level(pool, Level::Error, format_args!("{noise}")),
            Level::Debug
        );
        assert_eq!(
            level(
                pool,
                Level::Error,
                format_args!("failed to acquire reusable stream")
            ),
            Level::Debug
        );
        assert_eq!(
            level(pool, Level::Error, format_args!("failed to connect")),
            Level::Error
        );
        assert_eq!(
            level("switchyard::proxy", Level::Error, format_args!("{noise}")),
            Level::Error
        );
    }
}
