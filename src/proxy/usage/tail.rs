//! A whole JSON body read from its end.
//!
//! Every API that answers with a whole body puts its counts last or nearly
//! so: OpenAI, vLLM, llama.cpp and Anthropic end with `usage` (perhaps a
//! `system_fingerprint` or `service_tier` after it), Ollama with
//! `prompt_eval_count`, `eval_count` and their durations. Read from the
//! front, the reader walks the whole answer first (the `choices` with
//! their messages, `id`, `model`, ...) to reach them; read from the end,
//! it stops once they are found. A response that arrived in one chunk,
//! which nearly every whole answer does, is read this way.
//!
//! The top-level members are taken from the last one back: a value is
//! found by its closing bracket or quote (brackets are counted and strings
//! passed over backwards), then its `:` and key. Ollama's and llama.cpp's
//! top-level counts are read where they are found. A `usage` object of
//! numbers, words and strings (as vLLM, llama.cpp and Ollama write it) is
//! read backwards too, member by member, as its start is looked for. Any
//! other object that can hold counts (`usage` with objects in it, as
//! OpenAI's token details, `response`, `message`) is read forwards by the
//! same reader as the rest of the module, so a `usage` object means the
//! same whichever way it is found. Counts nearer the end win, as the ones
//! read later do from the front.
//!
//! It stops at the first `usage` object with counts in it (a body has
//! one), or once a top-level prompt and completion count are both known
//! (nothing before them can change what they say). What comes before is
//! not read: a body broken there, or with counts of another kind there,
//! reads as its usage says. A body that does not end as one JSON object,
//! or anything unexpected between its members, is left to the
//! front-to-back reader, so only the end of a well-formed object is taken
//! this way.

use super::{is_space, slot_of, Counts, Holder, Json, Key, Slot, State};
use memchr::memrchr;

/// The counts of the whole body `b`, as [`Json`] would find them; `None`
/// when the body is not read this way and must be read from the front.
pub(super) fn counts(b: &[u8]) -> Option<Counts> {
    let mut i = before_space(b, b.len());
    if i == 0 || b[i - 1] != b'}' {
        return None;
    }
    i -= 1;
    // Counts of `usage` objects, and of the top level, the nearest the
    // end first.
    let mut usage = Counts::default();
    let mut top = Counts::default();
    let mut stop = false;
    let first = before_space(b, i);
    if first > 0 && b[first - 1] == b'{' {
        // `{}`
        return (before_space(b, first - 1) == 0).then_some(usage);
    }
    loop {
        let end = before_space(b, i);
        // An object of numbers, words and strings is read as its start is
        // found: a `usage` object nearly always is one.
        let (start, flat) = match flat_object(b, end) {
            Some((start, counts)) => (start, Some(counts)),
            None => (value_start(b, end)?, None),
        };
        let (open, key) = key_before(b, start)?;
        let value = &b[start..end];
        match (key, value[0]) {
            (Key::Usage | Key::Response | Key::Message, b'{') => {
                let found = match flat {
                    Some(counts) if key == Key::Usage => counts,
                    // No object to hold a `usage` in.
                    Some(_) => Counts::default(),
                    None => {
                        let mut json = Json::member(key);
                        json.feed(value);
                        if json.depth != 1 || json.state != State::After {
                            return None;
                        }
                        json.found
                    }
                };
                usage.fill(&found);
                stop |= key == Key::Usage && found != Counts::default();
            }
            _ => {
                if let Some((Holder::Top, slot)) = slot_of(&[key]) {
                    if let Some(n) = count(value) {
                        top.fill_one(slot, n);
                    }
                }
            }
        }
        let both = top.get(Slot::Prompt).is_some() && top.get(Slot::Completion).is_some();
        if stop || both {
            break;
        }
        let before = before_space(b, open);
        match b.get(before.wrapping_sub(1)) {
            Some(b',') => i = before - 1,
            Some(b'{') => {
                if before_space(b, before - 1) != 0 {
                    return None;
                }
                break;
            }
            _ => return None,
        }
    }
    // The top level's counts are taken last from the front, over any
    // `usage` object's.
    let mut found = usage;
    found.take(&mut top);
    Some(found)
}

/// Where the object ending at `end` starts, when its members are all
/// numbers, words or strings (as vLLM, llama.cpp and Ollama write
/// `usage`), and the counts it holds were it a `usage` object: read from
/// its end too, the nearest the end winning. `None` for anything else (an
/// object or array in it, as OpenAI's `prompt_tokens_details`, or anything
/// unexpected), which is passed over by its brackets and read from the
/// front.
fn flat_object(b: &[u8], end: usize) -> Option<(usize, Counts)> {
    let mut found = Counts::default();
    let mut i = end.checked_sub(1)?;
    if b[i] != b'}' {
        return None;
    }
    let first = before_space(b, i);
    if first > 0 && b[first - 1] == b'{' {
        return Some((first - 1, found));
    }
    loop {
        let value_end = before_space(b, i);
        if matches!(b.get(value_end.wrapping_sub(1)), None | Some(b'}' | b']')) {
            return None;
        }
        let start = value_start(b, value_end)?;
        let (key_open, key) = key_before(b, start)?;
        if let Some((Holder::Usage, slot)) = slot_of(&[Key::Usage, key]) {
            if let Some(n) = count(&b[start..value_end]) {
                found.fill_one(slot, n);
            }
        }
        let before = before_space(b, key_open);
        match b.get(before.wrapping_sub(1)) {
            Some(b',') => i = before - 1,
            Some(b'{') => return Some((before - 1, found)),
            _ => return None,
        }
    }
}

/// The key of the member whose value starts at `value`: where its
/// opening quote is, and which key it is. `None` without a `:` and a
/// string before the value.
fn key_before(b: &[u8], value: usize) -> Option<(usize, Key)> {
    let colon = before_space(b, value);
    if colon == 0 || b[colon - 1] != b':' {
        return None;
    }
    let close = before_space(b, colon - 1);
    if close == 0 || b[close - 1] != b'"' {
        return None;
    }
    let open = string_start(b, close - 1)?;
    // The raw text is matched as it is: no recognised key has a
    // backslash or is long, so an escaped key is none of them, as from
    // the front.
    Some((open, Key::of(&b[open + 1..close - 1])))
}

/// Where the whitespace ending at `end` begins.
fn before_space(b: &[u8], mut end: usize) -> usize {
    while end > 0 && is_space(b[end - 1]) {
        end -= 1;
    }
    end
}

/// Where the value ending at `end` starts: an object or array by its
/// brackets, a string by its quotes, a number or word by its characters.
fn value_start(b: &[u8], end: usize) -> Option<usize> {
    let last = *b.get(end.checked_sub(1)?)?;
    match last {
        b'}' | b']' => container_start(b, end - 1),
        b'"' => string_start(b, end - 1),
        _ => {
            let start = b[..end]
                .iter()
                .rposition(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-')))
                .map_or(0, |n| n + 1);
            scalar(&b[start..end]).then_some(start)
        }
    }
}

/// Whether `s` is a number or word as the front-to-back reader takes one
/// whole: `true`, `false` or `null` spelled with letters only, or a number's
/// characters after a digit or `-`.
fn scalar(s: &[u8]) -> bool {
    match s.first() {
        Some(b't' | b'f' | b'n') => s.iter().all(u8::is_ascii_alphabetic),
        Some(b'0'..=b'9' | b'-') => s
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')),
        _ => false,
    }
}

/// A count as the front-to-back reader reads one: digits only, within 64
/// bits. Any other value (a negative or fractional number, a string) is
/// none.
fn count(value: &[u8]) -> Option<u64> {
    value.iter().try_fold(0u64, |n, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Where the object or array whose closing bracket is at `close` opens:
/// brackets are counted outside strings, as from the front, without
/// telling `[` from `{`.
fn container_start(b: &[u8], close: usize) -> Option<usize> {
    let mut open = 0u32;
    let mut k = close + 1;
    while k > 0 {
        k -= 1;
        match b[k] {
            b'}' | b']' => open += 1,
            b'{' | b'[' => {
                open -= 1;
                if open == 0 {
                    return Some(k);
                }
            }
            b'"' => k = string_start(b, k)?,
            // Outside strings a backslash is no JSON; from the front it
            // would not be read as here.
            b'\\' => return None,
            _ => {}
        }
    }
    None
}

/// Where the string whose closing quote is at `close` opens: the nearest
/// quote before it that no backslash escapes. `None` when the closing
/// quote is itself escaped (then it closes nothing) or no quote opens it.
fn string_start(b: &[u8], close: usize) -> Option<usize> {
    if escaped(b, close) {
        return None;
    }
    let mut k = close;
    loop {
        let q = memrchr(b'"', &b[..k])?;
        if !escaped(b, q) {
            return Some(q);
        }
        k = q;
    }
}

/// Whether the byte at `at` follows an odd run of backslashes.
fn escaped(b: &[u8], at: usize) -> bool {
    let mut k = at;
    while k > 0 && b[k - 1] == b'\\' {
        k -= 1;
    }
    (at - k) % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_every_split, read, reported};
    use super::super::{BodyKind, Usage};
    use super::*;

    /// A whole body's usage, read as the proxy reads one.
    fn whole(body: &str) -> Usage {
        read(BodyKind::Json, body)
    }

    /// Checks `body` read whole and split at every byte.
    fn every_split(body: &str, want: Usage) {
        check_every_split(BodyKind::Json, body, want)
    }

    /// Reported counts of a whole body.
    fn counted(prompt: u64, completion: u64) -> Usage {
        reported(prompt, completion, 0)
    }

    /// The prompt and completion counts the front-to-back reader finds in
    /// `b`: what a response's usage is made of.
    fn from_the_front(b: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
        let mut json = Json {
            skip_nested: true,
            ..Json::new()
        };
        json.feed(b);
        Some(summary(json.found))
    }

    fn from_the_end(b: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
        counts(b).map(summary)
    }

    fn summary(c: Counts) -> (Option<u64>, Option<u64>) {
        (c.prompt(), c.get(Slot::Completion))
    }

    /// A deterministic generator of well-formed bodies.
    struct Gen(u64);

    impl Gen {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize % n
        }

        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }

        fn space(&mut self) -> &'static str {
            self.pick(&["", "", "", " ", "\n  ", "\t", "\r\n"])
        }

        /// A string as JSON writes it: escapes, brackets, text that looks
        /// like usage, multi-byte characters.
        fn string(&mut self) -> String {
            let text = self.pick(&[
                "",
                "Hi",
                "tok0 ",
                r#"\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":9}}"#,
                r#"]}\"}{[ \\"#,
                "🌍 é",
                r#"\\"#,
                r#"\\\""#,
                r#"\u00e9\n"#,
                r#",\"eval_count\":5}"#,
            ]);
            format!("\"{text}\"")
        }

        fn key(&mut self) -> String {
            let key = self.pick(&[
                "id",
                "model",
                "choices",
                "usage",
                "prompt_tokens",
                "completion_tokens",
                "eval_count",
                "message",
                "content",
                "usage_note",
                r#"us\u0061ge"#,
                r#"\"usage"#,
            ]);
            format!("\"{key}\"")
        }

        fn value(&mut self, depth: usize) -> String {
            let kinds = if depth > 3 { 3 } else { 5 };
            match self.below(kinds) {
                0 => self.string(),
                1 => self
                    .pick(&["0", "7", "-5", "5.0", "1e3", "18446744073709551616", "42"])
                    .to_owned(),
                2 => self.pick(&["true", "false", "null"]).to_owned(),
                3 => {
                    let items: Vec<String> =
                        (0..self.below(4)).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", items.join(","))
                }
                _ => self.object(depth + 1),
            }
        }

        fn object(&mut self, depth: usize) -> String {
            let members: Vec<String> = (0..self.below(4))
                .map(|_| {
                    let (s1, s2) = (self.space(), self.space());
                    format!("{}{s1}:{s2}{}", self.key(), self.value(depth))
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }

        /// A `usage`, `response` or `message` object with counts in it.
        fn counts(&mut self) -> String {
            let keys = [
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ];
            let mut members: Vec<String> = (0..1 + self.below(4))
                .map(|_| {
                    let key = self.pick(&keys);
                    let value = match self.below(6) {
                        0 => self.value(3),
                        _ => self.below(1000).to_string(),
                    };
                    format!("\"{key}\":{value}")
                })
                .collect();
            if self.below(2) == 0 {
                members.push(format!("\"details\":{}", self.object(2)));
            }
            let usage = format!("{{{}}}", members.join(", "));
            match self.below(4) {
                0 => format!("{{\"id\":\"r\",\"usage\":{usage}}}"),
                _ => usage,
            }
        }

        /// A body: members no count is read from, then perhaps a `usage`
        /// object with counts, then anything but another such; members
        /// before it are not read from the end, so none of them has counts.
        fn body(&mut self) -> String {
            let mut members = Vec::new();
            for _ in 0..self.below(5) {
                let key = self.pick(&["\"id\"", "\"choices\"", "\"model\"", "\"data\""]);
                members.push(format!("{key}:{}", self.value(1)));
            }
            if self.below(4) != 0 {
                members.push(format!("\"usage\":{}", self.counts()));
            }
            for _ in 0..self.below(4) {
                let member = match self.below(4) {
                    0 => format!("\"eval_count\":{}", self.below(100)),
                    1 => format!("\"prompt_eval_count\":{}", self.below(100)),
                    2 => {
                        let key = self.pick(&["\"response\"", "\"message\""]);
                        format!("{key}:{}", self.counts())
                    }
                    _ => {
                        // Not a `usage` with counts: one ends the reading.
                        let key = self.pick(&["\"id\"", "\"usage\"", "\"eval\"", "\"content\""]);
                        let value = match key {
                            "\"usage\"" => {
                                self.pick(&["{}", "null", "[]", r#"{"a":{}}"#]).to_owned()
                            }
                            _ => self.value(1),
                        };
                        format!("{key}:{value}")
                    }
                };
                members.push(member);
            }
            let (s1, s2) = (self.space(), self.space());
            format!(
                "{s1}{{{}}}{s2}",
                members.join(&format!(",{}", self.space()))
            )
        }
    }

    #[test]
    fn a_well_formed_body_reads_the_same_from_either_end() {
        for seed in 0..3000 {
            let body = Gen(seed).body();
            let b = body.as_bytes();
            assert_eq!(from_the_end(b), from_the_front(b), "{body:?}");
        }
        for seed in 0..40 {
            let body = Gen(seed).body();
            let want = whole(&body);
            every_split(&body, want);
        }
    }

    #[test]
    fn any_end_is_read_without_a_panic() {
        // Noise ending as an object does, the usage keys among it.
        let alphabet = b"{}[]\":, \\0123456789-.etrunlfa";
        for seed in 0..20_000 {
            let mut body = super::super::tests::noise(seed, 1 + seed as usize % 90, alphabet);
            body.push(b'}');
            let cut = body.len() / 2;
            body.splice(cut..cut, *b"\"usage\":{\"prompt_tokens\":");
            let _ = counts(&body);
        }
    }

    #[test]
    fn it_stops_at_the_usage_and_reads_nothing_before() {
        let broken =
            r#"{"choices":[}}}"oops" 1 2,"usage":{"prompt_tokens":4,"completion_tokens":2}}"#;
        assert_eq!(whole(broken), counted(4, 2));
        // Ollama's two counts end the reading too.
        let ollama = r#"{"message":{"content":"x"]]]"prompt_eval_count":26,"eval_duration":5,"eval_count":298}"#;
        assert_eq!(whole(ollama), counted(26, 298));
        // With one count only, everything is read, and a break is found.
        let one = r#"{"message":{"content":"x"]]],"eval_count":298}"#;
        assert_eq!(counts(one.as_bytes()), None);
    }

    #[test]
    fn what_is_not_one_object_at_the_end_is_read_from_the_front() {
        for body in [
            r#"[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}} x"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}{"a":1}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"usage" {"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{usage:{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"usage\":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"a":[\],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1} "a":1}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1]}"#,
            r#"{"eval_count":tru3}"#,
            r#"{"eval_count":+3}"#,
            "{}",
            "}",
            "",
        ] {
            let b = body.as_bytes();
            if let Some(found) = from_the_end(b) {
                assert_eq!(Some(found), from_the_front(b), "{body}");
            }
        }
        assert_eq!(counts(b"{}"), Some(Counts::default()));
        assert_eq!(counts(b"x{}"), None);
    }
}
