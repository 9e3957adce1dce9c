//! One model's entry in each list format, made from what the backends said.
//!
//! Switchyard's `/v1/models` and `/api/tags` pass on the backends' own
//! entries (sizes, digests, `details`, `modified_at`, `created`, `owned_by`
//! and any field a server adds), so `ollama list`, Open WebUI and OpenAI
//! clients see what they would see talking to the backend. Only a model a
//! backend listed in the other format alone, or that the configuration
//! names, gets an entry made up here, from what is known of it.
//!
//! `/api/ps` answers are merged here too: one entry per model, however many
//! backends have it loaded.

use super::{base_name, ModelEntry};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// Ollama's `owned_by` in its own `/v1/models`, for an entry made from an
/// Ollama backend's `/api/tags`.
const OLLAMA_OWNER: &str = "library";

/// `owned_by` for a model known only by name (from `models:`).
const UNKNOWN_OWNER: &str = "switchyard";

/// The entry `/v1/models` lists for `m`.
pub fn openai(m: &ModelEntry) -> Value {
    if let Some(mut entry) = m.openai.clone() {
        // An alias is listed under its own name.
        entry["id"] = json!(m.name);
        return entry;
    }
    let (created, owned_by) = match &m.ollama {
        Some(tag) => (
            tag.get("modified_at")
                .and_then(Value::as_str)
                .and_then(unix_seconds)
                .unwrap_or(0),
            OLLAMA_OWNER,
        ),
        None => (0, UNKNOWN_OWNER),
    };
    json!({"id": m.name, "object": "model", "created": created, "owned_by": owned_by})
}

/// The entry `/api/tags` lists for `m`.
pub fn ollama(m: &ModelEntry) -> Value {
    if let Some(mut entry) = m.ollama.clone() {
        entry["name"] = json!(m.name);
        entry["model"] = json!(m.name);
        return entry;
    }
    let created = m
        .openai
        .as_ref()
        .and_then(|e| e.get("created"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "name": m.name, "model": m.name, "modified_at": rfc3339(created),
        "size": 0, "digest": "", "details": {}
    })
}

/// The fleet's entry for a model several backends list: the first
/// backend's name, and each format's entry from the first backend that gave
/// one, so a model one backend lists only in `/v1/models` still shows
/// another's sizes and details in `/api/tags`.
pub fn merge<'a>(same: impl IntoIterator<Item = &'a ModelEntry>) -> Option<ModelEntry> {
    let mut same = same.into_iter();
    let mut merged = same.next()?.clone();
    for other in same {
        if merged.openai.is_none() {
            merged.openai = other.openai.clone();
        }
        if merged.ollama.is_none() {
            merged.ollama = other.ollama.clone();
        }
    }
    Some(merged)
}

/// Backends' `/api/ps` lists as Ollama's one: one entry per model, in name
/// order, each the entry that stays loaded longest (the latest
/// `expires_at`), which is the one that tells a client how long it may
/// count on the model being warm somewhere.
pub fn merge_ps(lists: impl IntoIterator<Item = Vec<Value>>) -> Vec<Value> {
    let mut by_model: BTreeMap<String, (Option<i64>, Value)> = BTreeMap::new();
    for entry in lists.into_iter().flatten() {
        let Some(name) = entry
            .get("model")
            .or_else(|| entry.get("name"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let key = base_name(name).to_string();
        let expires = entry
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(unix_seconds_signed);
        match by_model.get(&key) {
            Some((kept, _)) if *kept >= expires => {}
            _ => {
                by_model.insert(key, (expires, entry));
            }
        }
    }
    by_model.into_values().map(|(_, entry)| entry).collect()
}

/// `seconds` since the epoch as RFC 3339 in UTC, as Ollama writes times.
fn rfc3339(seconds: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(seconds.min(253_402_300_799));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An RFC 3339 time (`2024-05-10T13:43:02.1234-07:00`, as Go writes it) as
/// seconds since the epoch; `None` before the epoch or when malformed.
fn unix_seconds(text: &str) -> Option<u64> {
    u64::try_from(unix_seconds_signed(text)?).ok()
}

/// [`unix_seconds`], signed: Ollama marks a model that never expires with a
/// time far in the future and one being unloaded with year 1.
fn unix_seconds_signed(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Fractional seconds are dropped; then `Z` or `±HH:MM`.
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second.min(60) - offset)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_go_writes_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2024-05-10T13:43:02Z"), Some(1_715_348_582));
        assert_eq!(
            unix_seconds("2024-05-10T06:43:02.123456789-07:00"),
            Some(1_715_348_582)
        );
        assert_eq!(
            unix_seconds("2024-05-10T15:43:02+02:00"),
            Some(1_715_348_582)
        );
        assert_eq!(
            unix_seconds_signed("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800)
        );
        assert_eq!(unix_seconds("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-10T13:43:02",
            "2024-05-10T13:43:02+0200",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
        assert_eq!(rfc3339(1_715_348_582), "2024-05-10T13:43:02Z");
        for t in [0, 1, 951_782_400, 4_102_444_799] {
            assert_eq!(unix_seconds(&rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn backend_entries_are_passed_on() {
        let vllm = ModelEntry {
            name: "qwen".into(),
            openai: Some(
                json!({"id": "qwen", "object": "model", "created": 1_715_348_582u64,
                                "owned_by": "vllm", "max_model_len": 32768}),
            ),
            ollama: None,
        };
        assert_eq!(openai(&vllm)["max_model_len"], 32768);
        assert_eq!(openai(&vllm)["owned_by"], "vllm");
        let tag = ollama(&vllm);
        assert_eq!(tag["modified_at"], "2024-05-10T13:43:02Z");
        assert_eq!(tag["name"], "qwen");

        let details =
            json!({"family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"});
        let ollama_only = ModelEntry {
            name: "llama3:latest".into(),
            openai: None,
            ollama: Some(
                json!({"name": "llama3:latest", "model": "llama3:latest", "size": 4_661_224_676u64,
                                "digest": "365c", "details": details,
                                "modified_at": "2024-05-10T06:43:02.1-07:00"}),
            ),
        };
        let tag = ollama(&ollama_only);
        assert_eq!(tag["size"], 4_661_224_676u64);
        assert_eq!(tag["details"], details);
        let entry = openai(&ollama_only);
        assert_eq!(entry["created"], 1_715_348_582);
        assert_eq!(entry["owned_by"], "library");

        // An alias renames both.
        let alias = ModelEntry {
            name: "gpt-4o".into(),
            ..merge([&vllm, &ollama_only]).unwrap()
        };
        assert_eq!(openai(&alias)["id"], "gpt-4o");
        assert_eq!(ollama(&alias)["name"], "gpt-4o");
        assert_eq!(ollama(&alias)["model"], "gpt-4o");
        assert_eq!(ollama(&alias)["digest"], "365c");

        let bare = ModelEntry::named("x");
        assert_eq!(openai(&bare)["owned_by"], "switchyard");
        assert_eq!(ollama(&bare)["size"], 0);
    }

    #[test]
    fn one_ps_entry_per_model_the_longest_loaded() {
        let ps = |name: &str, expires: &str, backend: &str| json!({"name": name, "model": name, "expires_at": expires, "size_vram": 1, "backend": backend});
        let merged = merge_ps([
            vec![
                ps("llama3:latest", "2026-11-26T10:05:00Z", "a"),
                ps("qwen", "2026-11-26T10:00:00Z", "a"),
            ],
            vec![ps("llama3:latest", "2026-11-26T11:00:00+02:00", "b")],
            vec![ps("llama3:latest", "2026-11-26T09:30:00.5-01:00", "c")],
            vec![json!({"no": "name"})],
        ]);
        let picked: Vec<(&str, &str)> = merged
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["backend"].as_str().unwrap()))
            .collect();
        assert_eq!(picked, [("llama3:latest", "c"), ("qwen", "a")]);
    }
}
