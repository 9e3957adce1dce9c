//! Finds the top-level `"model"` of a JSON request body without parsing it
//! into a tree.
//!
//! Chat bodies are mostly `messages`: a 2 MiB prompt is 2 MiB of strings the
//! proxy has no use for. The scanner walks the top-level object once,
//! skipping values it does not want without allocating, and finds the
//! `model` key wherever it stands. It also returns where the value sits in
//! the body, so an alias can be replaced in place.
//!
//! Routing on the model is only safe if the backend reads the same model.
//! So keys are compared as a JSON parser decodes them (`"m\u006fdel"` is
//! `model`), and a body in which two top-level keys could be read as
//! `model` is refused: parsers disagree on which of two equal keys wins,
//! and Go's `encoding/json` (Ollama) also matches `"MODEL"` or `"Model"`.

use std::ops::Range;

/// Why a body has no usable model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not a JSON object, or broken before the model was found.
    Malformed(&'static str),
    /// A well-formed object without a string `model`.
    Missing,
    /// Two top-level keys that a backend may read as `model` (`model`
    /// twice, in any spelling or letter case), so the backend could serve
    /// another model than the one Switchyard routed on.
    DuplicateModel,
    /// A model name no backend can be asked for safely: what is wrong.
    UnusableModel(&'static str),
}

/// The longest model name accepted, in bytes. Real names are far shorter:
/// an Ollama reference with registry, namespace and tag
/// (`registry.ollama.ai/library/llama3.1:70b-instruct-q4_K_M`) is under 60
/// bytes, a Hugging Face repository id is an owner and a name of at most
/// 96 characters, and a vLLM model served by its path is a little longer. The name is echoed in the
/// `x-switchyard-model` response header, in logs and in error messages, so
/// a bound keeps a client from making any of those as large as its body.
pub const MAX_MODEL_NAME: usize = 256;

/// Whether `name` can be sent to a backend and echoed back. Control
/// characters (NUL, CR, LF, ...) cannot go into a response header, and
/// backends answer them unpredictably.
pub fn check_model_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_MODEL_NAME {
        return Err("the model name is too long");
    }
    // C0 controls and DEL are one byte in UTF-8 and C1 controls start with
    // 0xC2: a pass over the bytes finds every candidate, without decoding.
    let candidate = |b: &u8| *b < 0x20 || *b == 0x7f || *b == 0xc2;
    if name.as_bytes().iter().any(candidate) && name.chars().any(char::is_control) {
        return Err("the model name contains a control character");
    }
    Ok(())
}

/// The model and the byte range of its JSON string literal (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub model: String,
    pub span: Range<usize>,
}

/// Scans `body` for its top-level `"model"` string. The whole body is
/// checked to be one well-formed JSON object, so a malformed request is
/// refused before any backend sees it.
pub fn find_model(body: &[u8]) -> Result<Found, ScanError> {
    find(body, &[MODEL])
}

/// [`find_model`] for Ollama's endpoints that also take the model as
/// `name` (`/api/show`, `/api/pull`, `/api/delete`, ...): a non-empty
/// `model` wins, else `name`, as Ollama reads them.
pub fn find_model_or_name(body: &[u8]) -> Result<Found, ScanError> {
    find(body, &[MODEL, NAME])
}

/// The key every JSON parser reads as the model.
const MODEL: &[u8] = b"model";

/// The key Ollama's model-management endpoints also read as the model.
const NAME: &[u8] = b"name";

fn find(body: &[u8], keys: &[&[u8]]) -> Result<Found, ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    // Per key of `keys`: the string found under it, and how many top-level
    // keys a backend may read as it, whatever their value.
    let mut found: [Option<Found>; 2] = [None, None];
    let mut seen = [0usize; 2];
    s.ws();
    s.expect(b'{', "a JSON object")?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key_start = s.i;
            let escaped = s.skip_string()?;
            let raw = &body[key_start + 1..s.i - 1];
            // Most keys are told apart by their length alone; only a key
            // with escapes needs decoding.
            let key = keys.iter().enumerate().find_map(|(n, want)| {
                let kind = if escaped {
                    decoded_key_kind(raw, want)
                } else if raw.len() == want.len() {
                    Ok(plain_key_kind(raw, want))
                } else {
                    Ok(Key::Other)
                };
                match kind {
                    Ok(Key::Other) => None,
                    other => Some(other.map(|k| (n, k))),
                }
            });
            let key = key.transpose()?;
            s.ws();
            s.expect(b':', "':' after a key")?;
            s.ws();
            let start = s.i;
            s.skip_value(0)?;
            if let Some((n, kind)) = key {
                seen[n] += 1;
                if seen[n] > 1 {
                    return Err(ScanError::DuplicateModel);
                }
                if kind == Key::Exact && body[start] == b'"' {
                    let model = serde_json::from_slice::<String>(&body[start..s.i])
                        .map_err(|_| ScanError::Malformed("an invalid model value"))?;
                    found[n] = Some(Found {
                        model,
                        span: start..s.i,
                    });
                }
            }
            s.ws();
            match s.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(ScanError::Malformed("',' or '}' after a value")),
            }
        }
    }
    s.ws();
    if s.peek().is_some() {
        return Err(ScanError::Malformed("nothing after the object"));
    }
    let [model, name] = found;
    let found = match (model, name) {
        (Some(model), _) if !model.model.is_empty() => model,
        (model, name) => name.or(model).ok_or(ScanError::Missing)?,
    };
    check_model_name(&found.model).map_err(ScanError::UnusableModel)?;
    Ok(found)
}

/// What a top-level key is to a backend, compared with a key it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The key itself, as every JSON parser reads it.
    Exact,
    /// The key in other letter case: Go's `encoding/json` reads it as the
    /// key, other parsers do not.
    OtherCase,
    Other,
}

/// What a key without escapes, as long as `want`, is.
fn plain_key_kind(raw: &[u8], want: &[u8]) -> Key {
    if raw == want {
        Key::Exact
    } else if raw.eq_ignore_ascii_case(want) {
        Key::OtherCase
    } else {
        Key::Other
    }
}

/// What a key with escapes is, decoded without allocating: a key is `want`
/// when its UTF-16 code units are, and every unit of `want` is ASCII, so
/// raw non-ASCII bytes and surrogates simply do not match.
#[cold]
fn decoded_key_kind(raw: &[u8], want: &[u8]) -> Result<Key, ScanError> {
    let (mut exact, mut folded, mut n) = (true, true, 0);
    let mut i = 0;
    while i < raw.len() {
        let unit: u32 = if raw[i] != b'\\' {
            i += 1;
            u32::from(raw[i - 1])
        } else {
            let escape = raw.get(i + 1).copied();
            i += 2;
            match escape {
                Some(c @ (b'"' | b'\\' | b'/')) => u32::from(c),
                Some(b'b') => 0x08,
                Some(b'f') => 0x0c,
                Some(b'n') => u32::from(b'\n'),
                Some(b'r') => u32::from(b'\r'),
                Some(b't') => u32::from(b'\t'),
                Some(b'u') => {
                    let hex = raw
                        .get(i..i + 4)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .ok_or(ScanError::Malformed("a \\u escape with four hex digits"))?;
                    i += 4;
                    hex
                }
                _ => return Err(ScanError::Malformed("a valid escape in a key")),
            }
        };
        let expected = want.get(n).copied().map(u32::from);
        let lower = if (0x41..=0x5a).contains(&unit) {
            unit + 0x20
        } else {
            unit
        };
        exact &= expected == Some(unit);
        folded &= expected == Some(lower);
        n += 1;
    }
    Ok(match (n == want.len(), exact, folded) {
        (true, true, _) => Key::Exact,
        (true, false, true) => Key::OtherCase,
        _ => Key::Other,
    })
}

/// Nesting deeper than this is refused rather than followed: it bounds the
/// recursion a hostile body can cause.
const MAX_DEPTH: usize = 128;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), ScanError> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(ScanError::Malformed(what))
        }
    }

    /// Skips a string literal, escapes included; returns whether it has
    /// any escape.
    #[inline]
    fn skip_string(&mut self) -> Result<bool, ScanError> {
        self.expect(b'"', "a string")?;
        let mut escaped = false;
        loop {
            // Jump to the next quote or backslash; everything else is content.
            let rest = &self.b[self.i..];
            match memchr::memchr2(b'"', b'\\', rest) {
                None => return Err(ScanError::Malformed("an unterminated string")),
                Some(n) => {
                    self.i += n;
                    if self.next() == Some(b'"') {
                        return Ok(escaped);
                    }
                    escaped = true;
                    // A backslash escapes the next byte (`\uXXXX` needs no
                    // more care: its digits are plain content).
                    if self.next().is_none() {
                        return Err(ScanError::Malformed("an unterminated string"));
                    }
                }
            }
        }
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Malformed("nesting too deep"));
        }
        match self.peek() {
            Some(b'"') => self.skip_string().map(drop),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.skip_string()?;
                        self.ws();
                        self.expect(b':', "':' after a key")?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(c) if c == close => return Ok(()),
                        _ => return Err(ScanError::Malformed("',' or a closing bracket")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9' | b'a'..=b'z')
                ) {
                    self.i += 1;
                }
                let word = &self.b[start..self.i];
                let literal = matches!(word, b"true" | b"false" | b"null");
                let number = word[0] == b'-' || word[0].is_ascii_digit();
                if literal || (number && word.iter().all(|c| !c.is_ascii_lowercase() || *c == b'e'))
                {
                    Ok(())
                } else {
                    Err(ScanError::Malformed("a JSON value"))
                }
            }
            _ => Err(ScanError::Malformed("a JSON value")),
        }
    }
}

/// `body` with the string literal at `span` replaced by `model`, JSON-quoted.
pub fn replace_model(body: &[u8], span: &Range<usize>, model: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(model).unwrap_or_else(|_| format!("{model:?}"));
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(body: &str) -> Result<String, ScanError> {
        find_model(body.as_bytes()).map(|f| f.model)
    }

    #[test]
    fn finds_the_model_anywhere_at_top_level() {
        assert_eq!(model(r#"{"model":"llama3"}"#).unwrap(), "llama3");
        assert_eq!(
            model(r#" { "messages": [{"role":"user","content":"say \"model\": x"}], "stream": true, "n": -1.5e3, "x": null, "model" : "qwen2.5:7b" } "#).unwrap(),
            "qwen2.5:7b"
        );
        assert_eq!(
            model(r#"{"options":{"model":"inner"},"model":"outer"}"#).unwrap(),
            "outer"
        );
        assert_eq!(
            model(r#"{"model":"caf\u00e9 \"x\""}"#).unwrap(),
            "café \"x\""
        );
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(model(r#"{"messages":[]}"#), Err(ScanError::Missing));
        assert_eq!(model("{}"), Err(ScanError::Missing));
        assert_eq!(model(r#"{"model": 3}"#), Err(ScanError::Missing));
        for bad in [
            "",
            "[]",
            "{",
            r#"{"model"}"#,
            r#"{"a":tru,"model":"x"}"#,
            r#"{"a":"#,
            "not json",
            r#"{"a" 1}"#,
            r#"{"a":1 "model":"x"}"#,
        ] {
            assert!(
                matches!(model(bad), Err(ScanError::Malformed(_))),
                "{bad:?} -> {:?}",
                model(bad)
            );
        }
        let deep =
            "{\"a\":".to_string() + &"[".repeat(1000) + &"]".repeat(1000) + ",\"model\":\"x\"}";
        assert!(matches!(model(&deep), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn keys_are_read_as_a_json_parser_reads_them() {
        assert_eq!(model(r#"{"m\u006fdel":"qwen"}"#).unwrap(), "qwen");
        assert_eq!(
            model(r#"{"\u006D\u006f\u0064\u0065\u006c":"x"}"#).unwrap(),
            "x"
        );
        // Escapes that decode to something else are other keys.
        assert_eq!(
            model(r#"{"mod\u0065l\n":"a","model":"b","\ud83d\ude00":1}"#).unwrap(),
            "b"
        );
        for bad in [
            r#"{"m\x6fdel":"a"}"#,
            r#"{"m\u6fzl":"a"}"#,
            r#"{"m\u+06fdel":"a"}"#,
            r#"{"m\u00":"a"}"#,
        ] {
            assert!(
                matches!(model(bad), Err(ScanError::Malformed(_))),
                "{bad:?} -> {:?}",
                model(bad)
            );
        }
        // Go's encoding/json (Ollama) would read this key as the model;
        // the others would find none.
        assert_eq!(model(r#"{"Model":"x"}"#), Err(ScanError::Missing));
    }

    #[test]
    fn a_second_model_key_in_any_spelling_is_refused() {
        for body in [
            r#"{"model":"llama3","model":"qwen"}"#,
            r#"{"model":"llama3","m\u006fdel":"qwen"}"#,
            r#"{"m\u006fdel":"qwen","messages":[],"model":"llama3"}"#,
            r#"{"model":"llama3","MODEL":"qwen"}"#,
            r#"{"MoDeL":"qwen","model":"llama3"}"#,
            r#"{"model":"llama3","M\u004fDEL":"qwen"}"#,
            r#"{"model":"llama3","model":3}"#,
        ] {
            assert_eq!(model(body), Err(ScanError::DuplicateModel), "{body}");
        }
        // Only top-level keys count.
        assert_eq!(
            model(r#"{"model":"a","options":{"model":"b","MODEL":"c"}}"#).unwrap(),
            "a"
        );
    }

    #[test]
    fn ollama_management_endpoints_also_read_name() {
        let either = |body: &str| find_model_or_name(body.as_bytes()).map(|f| f.model);
        assert_eq!(either(r#"{"name":"llama3"}"#).unwrap(), "llama3");
        assert_eq!(either(r#"{"model":"a","name":"b"}"#).unwrap(), "a");
        assert_eq!(either(r#"{"name":"b","model":"a"}"#).unwrap(), "a");
        // An empty model gives way to the name, as in Ollama.
        assert_eq!(either(r#"{"model":"","name":"b"}"#).unwrap(), "b");
        assert_eq!(either(r#"{"n\u0061me":"b"}"#).unwrap(), "b");
        assert_eq!(either(r#"{"verbose":true}"#), Err(ScanError::Missing));
        assert_eq!(
            either(r#"{"name":"a","NAME":"b"}"#),
            Err(ScanError::DuplicateModel)
        );
        // The span is the name's, so an alias is replaced where it stands.
        let body = br#"{"name":"gpt-4o","verbose":false}"#;
        let found = find_model_or_name(body).unwrap();
        assert_eq!(&body[found.span], br#""gpt-4o""#);
        // Elsewhere `name` is just a key.
        assert_eq!(model(r#"{"name":"b"}"#), Err(ScanError::Missing));
        assert_eq!(model(r#"{"name":"b","model":"a"}"#).unwrap(), "a");
    }

    #[test]
    fn unusable_model_names() {
        let long = "m".repeat(MAX_MODEL_NAME + 1);
        for body in [
            r#"{"model":"llama3\u0000"}"#.to_string(),
            r#"{"model":"llama3\r\nx-evil: 1"}"#.to_string(),
            r#"{"model":"a\tb"}"#.to_string(),
            r#"{"model":"\u0085"}"#.to_string(),
            format!(r#"{{"model":"{long}"}}"#),
        ] {
            assert!(
                matches!(model(&body), Err(ScanError::UnusableModel(_))),
                "{body}"
            );
        }
        let longest = "m".repeat(MAX_MODEL_NAME);
        assert_eq!(
            model(&format!(r#"{{"model":"{longest}"}}"#)).unwrap(),
            longest
        );
        assert_eq!(model(r#"{"model":"café:7b"}"#).unwrap(), "café:7b");
        // Starts like a C1 control in UTF-8 (0xC2), but is not one.
        assert_eq!(model(r#"{"model":"a\u00a9b ©"}"#).unwrap(), "a©b ©");
    }

    #[test]
    fn replaces_in_place() {
        let body = br#"{"messages":[],"model":"gpt-4o","stream":true}"#;
        let found = find_model(body).unwrap();
        let out = replace_model(body, &found.span, "llama3.1:70b");
        assert_eq!(
            out,
            br#"{"messages":[],"model":"llama3.1:70b","stream":true}"#
        );
    }

    #[test]
    fn model_last_in_a_large_body() {
        let content = "x".repeat(2 << 20);
        let body =
            format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}],"model":"m"}}"#);
        assert_eq!(model(&body).unwrap(), "m");
    }
}
