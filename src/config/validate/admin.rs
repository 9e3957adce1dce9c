//! `admin:`: the admin listener and its bearer token.
//!
//! The token is read here, from the environment variable `token_env`
//! names or the file `token_file` names, so that `switchyard -t` and a
//! reload find a missing one. It is the one value validation reads from
//! outside the file (a reload applies a changed token file), and no error
//! shows it: messages name the variable or the file, never their content.

use super::Errors;
use crate::config::model::{AdminSettings, Secret};
use crate::config::raw::RawAdmin;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

/// Bytes a token may have. Sixteen random characters are beyond guessing
/// over a network; fewer is a password someone chose. 4 KiB fits a
/// request header with room to spare.
pub const TOKEN_LEN: RangeInclusive<usize> = 16..=4096;

pub(super) fn admin(
    errors: &mut Errors,
    raw: Option<RawAdmin>,
    proxy: &[SocketAddr],
) -> Option<AdminSettings> {
    errors.mistyped("admin", || {
        "a mapping with listen, and token_env or token_file".into()
    });
    let raw = raw?;
    let listen = listen(errors, raw.listen.as_deref(), proxy);
    // A token that was asked for and could not be read is reported as such.
    let wants_token = raw.token_env.is_some()
        || raw.token_file.is_some()
        || errors.is_mistyped("admin.token_env")
        || errors.is_mistyped("admin.token_file");
    let token = match (raw.token_env, raw.token_file) {
        (Some(_), Some(_)) => {
            errors.push("admin", "give token_env or token_file, not both");
            None
        }
        (Some(name), None) => from_env(errors, "admin.token_env", &name),
        (None, Some(file)) => from_file(errors, "admin.token_file", &file),
        (None, None) => None,
    };
    let listen = listen?;
    if !wants_token && !listen.ip().is_loopback() {
        errors.push(
            "admin.listen",
            format!(
                "\"{listen}\" is not a loopback address, so the admin listener needs a token: \
                 set admin.token_env or admin.token_file"
            ),
        );
    }
    Some(AdminSettings { listen, token })
}

fn listen(errors: &mut Errors, raw: Option<&str>, proxy: &[SocketAddr]) -> Option<SocketAddr> {
    const PATH: &str = "admin.listen";
    if errors.mistyped(PATH, || {
        "an IP:port address such as \"127.0.0.1:9100\"".into()
    }) {
        return None;
    }
    let Some(text) = raw else {
        errors.push(PATH, "is required, such as \"127.0.0.1:9100\"");
        return None;
    };
    let Ok(addr) = text.parse::<SocketAddr>() else {
        errors.push(PATH, format!("{text:?} is not an IP:port address"));
        return None;
    };
    if addr.port() == 0 {
        errors.push(
            PATH,
            format!("{text:?} has port 0, which would listen on a random port"),
        );
        return None;
    }
    if let Some(i) = proxy.iter().position(|p| overlaps(*p, addr)) {
        errors.push(
            PATH,
            format!(
                "{text:?} is also where the proxy listens (server.listen[{i}]): \
                 give the admin listener a port of its own"
            ),
        );
        return None;
    }
    Some(addr)
}

/// Whether two listeners would take the same port: the same address, or
/// the same port where one of them is the unspecified address (`0.0.0.0`
/// takes the port on every address of its family).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// A secret from the environment variable `name`, named at `path` (the
/// admin token, an API key).
pub(super) fn from_env(errors: &mut Errors, path: &str, name: &str) -> Option<Secret> {
    let value = env_value(errors, path, name)?;
    token(
        errors,
        path,
        &format!("environment variable {name}"),
        &value,
    )
}

/// The value of the environment variable `name`, named at `path`: for the
/// admin token, API keys and backends' header values alike.
pub(super) fn env_value(errors: &mut Errors, path: &str, name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        errors.push(
            path,
            format!("{name:?} is not an environment variable name"),
        );
        return None;
    }
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => {
            errors.push(path, format!("environment variable {name} is not set"));
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            errors.push(
                path,
                format!("environment variable {name} is not valid UTF-8"),
            );
            None
        }
    }
}

/// A secret from `file`, named at `path`.
pub(super) fn from_file(errors: &mut Errors, path: &str, file: &str) -> Option<Secret> {
    // The largest token, with room for a trailing newline and spaces.
    let limit = *TOKEN_LEN.end() as u64 + 64;
    let read = std::fs::metadata(file).and_then(|m| {
        if m.len() > limit {
            Ok(Err(m.len()))
        } else {
            std::fs::read_to_string(file).map(Ok)
        }
    });
    match read {
        Ok(Ok(text)) => token(errors, path, &format!("file {file:?}"), &text),
        Ok(Err(len)) => {
            errors.push(
                path,
                format!(
                    "file {file:?} has {len} bytes; a token has at most {}",
                    TOKEN_LEN.end()
                ),
            );
            None
        }
        Err(e) => {
            errors.push(path, format!("cannot read {file:?}: {e}"));
            None
        }
    }
}

/// Checks a token read from `source`; surrounding white space (the newline
/// `echo` leaves in a file) is not part of it.
fn token(errors: &mut Errors, path: &str, source: &str, value: &str) -> Option<Secret> {
    let value = value.trim();
    let len = value.len();
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(
            path,
            format!(
                "the token in {source} has characters an HTTP header cannot carry: \
                 use printable ASCII without spaces, such as the output of `openssl rand -hex 32`"
            ),
        );
        None
    } else if !TOKEN_LEN.contains(&len) {
        let (min, max) = (TOKEN_LEN.start(), TOKEN_LEN.end());
        errors.push(
            path,
            format!("the token in {source} has {len} characters; it needs {min} to {max}"),
        );
        None
    } else {
        Some(Secret::new(value.to_string()))
    }
}
