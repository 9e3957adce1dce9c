//! `access_log:`: where each request's line goes, and in what form.
//!
//! Only the spelling is checked here; whether the file's directory exists
//! and may be written is a question for the disk, asked by `switchyard -t`
//! ([`crate::config::Config::check_paths`]).

use super::Errors;
use crate::config::model::{AccessLogSpec, LogFormat, LogPath};
use crate::config::raw::RawAccessLog;
use std::path::{Path, PathBuf};

/// The `path` that names standard output rather than a file.
pub const STDOUT: &str = "stdout";

/// What `access_log.path` takes, for messages.
const PATH_TAKES: &str = "an absolute file path such as /var/log/switchyard/access.log, or stdout";

pub(super) fn access_log(errors: &mut Errors, raw: Option<RawAccessLog>) -> Option<AccessLogSpec> {
    errors.mistyped("access_log", || {
        "a mapping such as { path: /var/log/switchyard/access.log, format: json }".into()
    });
    let raw = raw?;
    let path = path(errors, raw.path);
    let format = format(errors, raw.format);
    Some(AccessLogSpec { path, format })
}

fn path(errors: &mut Errors, raw: Option<String>) -> LogPath {
    const KEY: &str = "access_log.path";
    errors.mistyped(KEY, || PATH_TAKES.into());
    let Some(text) = raw else {
        errors.push(KEY, format!("is required: {PATH_TAKES}"));
        return LogPath::Stdout;
    };
    if text == STDOUT {
        return LogPath::Stdout;
    }
    let problem = if text.is_empty() {
        Some("is empty".to_string())
    } else if text.contains('\0') {
        Some(format!("{text:?} has a NUL byte, which no file name can"))
    } else if !Path::new(&text).is_absolute() {
        // A daemon's working directory is `/`, so a relative path would
        // name another file than the one `-t` checked.
        Some(format!(
            "{text:?} is not an absolute path (a relative one would depend on the \
             directory Switchyard was started in)"
        ))
    } else if text.ends_with('/') {
        Some(format!("{text:?} names a directory, not a file"))
    } else {
        None
    };
    match problem {
        Some(message) => {
            errors.push(KEY, message);
            LogPath::Stdout
        }
        None => LogPath::File(PathBuf::from(text)),
    }
}

fn format(errors: &mut Errors, raw: Option<String>) -> LogFormat {
    const KEY: &str = "access_log.format";
    errors.mistyped(KEY, || "json".into());
    match raw.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push(
                KEY,
                format!("{other:?} is not a format; the one format is json"),
            );
            LogFormat::Json
        }
    }
}
