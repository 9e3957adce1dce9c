//! Finds the top-level `"model"` of a JSON request body without parsing it
//! into a tree.
//!
//! Chat bodies are mostly `messages`: a 2 MiB prompt is 2 MiB of strings the
//! proxy has no use for. The scanner walks the top-level object once,
//! skipping values it does not want without allocating, and stops at the
//! `model` key wherever it stands. It also returns where the value sits in
//! the body, so an alias can be replaced in place.

use std::ops::Range;

/// Why a body has no usable model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not a JSON object, or broken before the model was found.
    Malformed(&'static str),
    /// A well-formed object without a string `model`.
    Missing,
}

/// The model and the byte range of its JSON string literal (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub model: String,
    pub span: Range<usize>,
}

/// Scans `body` for its top-level `"model"` string. The whole body is
/// checked to be one well-formed JSON object, so a malformed request is
/// refused before any backend sees it. A repeated key counts as its last
/// occurrence, as most JSON parsers read it.
pub fn find_model(body: &[u8]) -> Result<Found, ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    let mut found = None;
    let mut model_not_string = false;
    s.ws();
    s.expect(b'{', "a JSON object")?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key_start = s.i;
            s.skip_string()?;
            let is_model = &body[key_start..s.i] == b"\"model\"";
            s.ws();
            s.expect(b':', "':' after a key")?;
            s.ws();
            let start = s.i;
            s.skip_value(0)?;
            if is_model {
                let literal = &body[start..s.i];
                match serde_json::from_slice::<serde_json::Value>(literal) {
                    Ok(serde_json::Value::String(model)) => {
                        found = Some(Found {
                            model,
                            span: start..s.i,
                        });
                        model_not_string = false;
                    }
                    Ok(_) => model_not_string = true,
                    Err(_) => return Err(ScanError::Malformed("an invalid model value")),
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
    match found {
        Some(found) if !model_not_string => Ok(found),
        _ => Err(ScanError::Missing),
    }
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

    /// Skips a string literal, escapes included.
    fn skip_string(&mut self) -> Result<(), ScanError> {
        self.expect(b'"', "a string")?;
        loop {
            // Jump to the next quote or backslash; everything else is content.
            let rest = &self.b[self.i..];
            match memchr::memchr2(b'"', b'\\', rest) {
                None => return Err(ScanError::Malformed("an unterminated string")),
                Some(n) => {
                    self.i += n;
                    if self.next() == Some(b'"') {
                        return Ok(());
                    }
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
            Some(b'"') => self.skip_string(),
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
