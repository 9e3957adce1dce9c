//! Configuration: one YAML file, parsed, validated and turned into the model
//! the proxy runs on.
//!
//! # Layout
//! - [`raw`]: the file format, serde structs that mirror the YAML.
//! - [`duplicates`]: keys given twice, found before the raw structs are filled.
//! - [`mistyped`]: values of the wrong YAML type, collected while the raw
//!   structs are filled, each with its key path and line.
//! - [`validate`]: checks every value against its range and applies
//!   defaults, collecting all errors; one module per section of the file.
//! - [`model`]: the checked types the rest of Switchyard uses.
//! - [`tls`]: an HTTPS backend's CA, client certificate and verification,
//!   read from their files.
//! - `paths`: [`Config::check_paths`], the directories the server's files go
//!   in; the one check that reads the disk, run by `switchyard -t`.
//!
//! Parsing a string ([`Config::from_yaml`]) is separate from reading a file
//! ([`Config::load`]) so tests need no files.

pub mod duplicates;
pub mod mistyped;
pub mod model;
mod paths;
pub mod raw;
pub mod tls;
pub mod validate;

pub use model::*;

use std::fmt;
use std::path::Path;

/// Where the service looks for its configuration when `-c` is not given.
pub const DEFAULT_PATH: &str = "/etc/switchyard/switchyard.yaml";

/// One problem with a configuration, at a key path such as
/// `pools.chat.backends[1].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file at `path`. Relative paths in it (the
    /// certificates') start at the file's directory, made absolute now so
    /// that a daemon, whose working directory is `/`, reads the same files.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
        let dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Config::from_yaml_in(&text, &dir)
    }

    /// Parses and validates a configuration held in a string; relative
    /// paths in it start at the working directory.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_yaml_in(text, Path::new(""))
    }

    /// Parses and validates a configuration held in a string; relative
    /// paths in it start at `dir`.
    pub fn from_yaml_in(text: &str, dir: &Path) -> Result<Config, ConfigErrors> {
        // Which of two values was meant is anyone's guess: report, do not pick.
        let duplicates = duplicates::find(text);
        if !duplicates.is_empty() {
            return Err(ConfigErrors(duplicates));
        }
        let read = mistyped::read(text)?;
        let unknown: Vec<ConfigError> = read
            .unknown
            .into_iter()
            .map(|path| ConfigError {
                path,
                message: "unknown key".into(),
            })
            .collect();
        match validate::validate(read.raw, read.mistyped, dir) {
            Ok(config) if unknown.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(unknown)),
            Err(ConfigErrors(mut errors)) => {
                let mut all = unknown;
                all.append(&mut errors);
                Err(ConfigErrors(all))
            }
        }
    }
}

impl Config {
    /// Backends whose certificate is not checked: allowed, but unsafe.
    pub(crate) fn unverified_backends(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pool in &self.pools {
            for (i, b) in pool.backends.iter().enumerate() {
                if b.tls.as_ref().is_some_and(|t| !t.verify) {
                    out.push(format!(
                        "pools.{}.backends[{i}].tls.verify: false: the certificate of backend \
                         {} is not checked, so anyone on the path to {} can read and change \
                         its traffic, credentials included",
                        pool.name, b.name, b.authority
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
