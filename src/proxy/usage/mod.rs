//! Token usage read from a response body as it streams past: how many
//! tokens the prompt had and how many were generated.
//!
//! Metrics count both per request, and the time per output token needs the
//! completion count. Backends report them in the body, in a few shapes:
//! - OpenAI, and vLLM, Ollama and llama.cpp server speaking it:
//!   `usage: {prompt_tokens, completion_tokens}` in a whole body, or in the
//!   last event of a stream that has one (sent when the client asks for
//!   `stream_options.include_usage`; vLLM may send it in every event).
//! - OpenAI's Responses API: `usage: {input_tokens, output_tokens}`, within
//!   `response` in a stream's `response.completed` event.
//! - Anthropic's Messages API: `message.usage.input_tokens` in
//!   `message_start`, `usage.output_tokens` in `message_delta`; a whole
//!   body has `usage`. Cache reads and writes are added to the prompt, so
//!   it counts every prompt token, as OpenAI's `prompt_tokens` does.
//! - Ollama: top-level `prompt_eval_count` and `eval_count` in the
//!   `"done": true` line or a whole body; llama.cpp server's own
//!   `/completion`: `tokens_evaluated` and `tokens_predicted`.
//!
//! A stream without usage gets an estimate: each event (or line) carrying
//! generated text counts as one token, which is what vLLM, Ollama and
//! llama.cpp send when nothing batches them. A whole body without usage
//! has no estimate.
//!
//! This runs on every chunk of every response, and a backend may send
//! anything, so nothing of the body is copied, not even an event of it. The
//! reader is a JSON tokenizer that carries its state from one chunk to the
//! next in some 340 bytes: the open brackets, the keys that lead to the
//! current value (four levels of them: usage sits three down, the text of
//! a chat chunk four), the counts seen, and the number being read. A chunk may end anywhere, in a key, a
//! number or a UTF-8 sequence. Each byte is looked at once, and string
//! contents are skipped with `memchr`, so time is linear in the body and
//! memory does not grow with it. Being a tokenizer, it knows a key from a
//! string: `"usage"` inside generated text is text.
//!
//! A whole body has no estimate, so its text need not be found: objects and
//! arrays under a top-level key other than `usage`, `response` or `message`
//! (the `choices` with their messages, above all) are passed over by
//! counting brackets outside strings, without reading their keys.
//!
//! A whole body that arrives in one chunk, as nearly all do, is read from
//! its end instead ([`tail`]), where every API puts its counts: at once
//! when the chunk comes with the body's end (Pingora says so with the last
//! data of a body of known length), else the chunk is held (shared with
//! the response, not copied) until the next chunk or the end. Only a body
//! that came in more is read from the front.
//!
//! It follows JSON only as far as usage needs. Nesting deeper than
//! [`MAX_DEPTH`], or a byte no JSON could have there, ends the reading of
//! that event (or line, or body); numbers that are not whole, or do not
//! fit 64 bits, are not counts; keys written with escapes are not
//! recognised (backends write the ones read here plainly).

mod tail;

use bytes::Bytes;
use memchr::{memchr, memchr2};

/// How a response body is framed: the proxy's `StreamFormat`, or a whole
/// JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Server-Sent Events (`text/event-stream`): JSON in `data:` lines.
    Sse,
    /// One JSON document per line (Ollama's `application/x-ndjson`).
    Ndjson,
    /// One JSON document, not streamed (`application/json`).
    Json,
}

/// Where a completion count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The backend said it (or said nothing, and nothing was estimated).
    Reported,
    /// Counted: the stream's events that carried generated text.
    Estimated,
}

/// The tokens of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt, as the backend reported them; never estimated.
    pub prompt: Option<u64>,
    /// Tokens generated: reported, or else estimated for a stream with
    /// events that carried text; `None` when neither.
    pub completion: Option<u64>,
    /// Whether `completion` is the backend's or an estimate.
    pub source: Source,
    /// Events (SSE) or lines (NDJSON) that carried generated text; 0 for a
    /// whole body. Against a reported completion it tells how many tokens
    /// the backend sent per event.
    pub events: u64,
}

/// Deepest nesting followed. Usage sits at most three levels down, and no
/// response of any API nests near this; the bound keeps the bracket stack
/// in one `u64`.
const MAX_DEPTH: usize = 64;

/// Levels whose keys are remembered: enough for
/// `choices[].delta.content` and `response.usage.input_tokens`.
const PATH: usize = 4;

/// Longest key recognised; `cache_creation_input_tokens` is the longest
/// read. Longer keys are not kept, only known not to be one of them.
const KEY_MAX: usize = 32;

/// Reads the token usage of one response body, chunk by chunk.
///
/// Small, so that it sits in the request's context: a whole body that
/// comes in one chunk, the body's end with it, is read from its end
/// ([`tail`]) there and then, without the front-to-back reader, which is
/// made (on the heap: it is some 340 bytes) only for a stream or a body in
/// more than one chunk.
#[derive(Debug, Clone)]
pub struct UsageReader {
    kind: BodyKind,
    state: Reading,
}

/// How far a [`UsageReader`] is.
#[derive(Debug, Clone)]
enum Reading {
    /// No chunk yet.
    Nothing,
    /// A whole body's first chunk, its end not yet seen: kept (shared, not
    /// copied) until the next chunk or the end.
    Held(Bytes),
    /// A whole body read from its end.
    Read(Usage),
    /// Read from the front.
    Front(Box<Reader>),
}

impl UsageReader {
    pub fn new(kind: BodyKind) -> Self {
        UsageReader {
            kind,
            state: Reading::Nothing,
        }
    }

    /// Reads the next chunk of the body; `end` when the body ends with it.
    pub fn feed(&mut self, chunk: &Bytes, end: bool) {
        let kind = self.kind;
        let first = match std::mem::replace(&mut self.state, Reading::Nothing) {
            Reading::Front(mut reader) => {
                reader.feed(chunk);
                self.state = Reading::Front(reader);
                return;
            }
            // Nothing follows the end.
            done @ Reading::Read(_) => {
                self.state = done;
                return;
            }
            Reading::Held(first) => Some(first),
            Reading::Nothing if kind != BodyKind::Json => None,
            Reading::Nothing if !end => {
                self.state = Reading::Held(chunk.clone());
                return;
            }
            Reading::Nothing => {
                if let Some(found) = tail::counts(chunk) {
                    self.state = Reading::Read(usage_of(kind, &found, 0));
                    return;
                }
                None
            }
        };
        let mut reader = Box::new(Reader::new(kind));
        if let Some(first) = first {
            reader.feed(&first);
        }
        reader.feed(chunk);
        self.state = Reading::Front(reader);
    }

    /// The usage, once the body has ended (or was cut off). An event or line
    /// still open counts if its text was complete: the client got it.
    pub fn finish(self) -> Usage {
        let reader = match self.state {
            Reading::Read(usage) => return usage,
            Reading::Front(reader) => *reader,
            // A body whose end came without a chunk, or never came: it
            // ends with the chunk held.
            Reading::Held(body) => {
                let mut whole = UsageReader::new(self.kind);
                whole.feed(&body, true);
                return whole.finish();
            }
            Reading::Nothing => Reader::new(self.kind),
        };
        reader.finish()
    }
}

/// What `found` and `events` make of a body of `kind`.
fn usage_of(kind: BodyKind, found: &Counts, events: u64) -> Usage {
    let estimate = (kind != BodyKind::Json && events > 0).then_some(events);
    let (completion, source) = match (found.get(Slot::Completion), estimate) {
        (Some(n), _) => (Some(n), Source::Reported),
        (None, Some(n)) => (Some(n), Source::Estimated),
        (None, None) => (None, Source::Reported),
    };
    Usage {
        prompt: found.prompt(),
        completion,
        source,
        events,
    }
}

/// The front-to-back reader.
#[derive(Debug, Clone)]
struct Reader {
    kind: BodyKind,
    /// Where in its line an event stream is.
    sse: Sse,
    /// The current event's, line's or body's JSON.
    json: Json,
    /// Events or lines that carried generated text.
    events: u64,
}

impl Reader {
    fn new(kind: BodyKind) -> Self {
        Reader {
            kind,
            sse: Sse {
                line: Line::Start,
                cr: false,
                data: false,
            },
            json: Json {
                // A whole body has no estimate, so its text need not be
                // found: only usage is looked for.
                skip_nested: kind == BodyKind::Json,
                ..Json::new()
            },
            events: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self.kind {
            BodyKind::Json => self.json.feed(chunk),
            BodyKind::Ndjson => self.ndjson(chunk),
            BodyKind::Sse => self.sse(chunk),
        }
    }

    fn finish(mut self) -> Usage {
        match self.kind {
            BodyKind::Sse if self.sse.data => self.end_event(),
            BodyKind::Ndjson => self.end_event(),
            _ => {}
        }
        usage_of(self.kind, &self.json.found, self.events)
    }

    /// An event or line is over: count it if it carried text.
    fn end_event(&mut self) {
        if self.json.content {
            self.events += 1;
        }
        self.json.reset();
    }

    fn ndjson(&mut self, mut bytes: &[u8]) {
        while let Some(n) = memchr(b'\n', bytes) {
            self.json.feed(&bytes[..n]);
            self.end_event();
            bytes = &bytes[n + 1..];
        }
        self.json.feed(bytes);
    }

    /// Passes the values of `data` fields to the JSON reader, a newline
    /// between two of one event (as an event's data is joined), and ends
    /// the event at an empty line. Lines end with LF, CRLF or CR.
    fn sse(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.sse.cr {
                self.sse.cr = false;
                if bytes[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.sse.line {
                Line::Start => match bytes[i] {
                    c @ (b'\n' | b'\r') => {
                        self.sse.cr = c == b'\r';
                        i += 1;
                        if self.sse.data {
                            self.sse.data = false;
                            self.end_event();
                        }
                    }
                    _ => self.sse.line = Line::Name(0),
                },
                Line::Name(n) => {
                    let c = bytes[i];
                    i += 1;
                    self.sse.line = match c {
                        b':' if n == 4 => {
                            self.data_line();
                            Line::Data { space: true }
                        }
                        b'\n' | b'\r' => {
                            // A line `data` alone is a data line, empty.
                            if n == 4 {
                                self.data_line();
                            }
                            self.sse.cr = c == b'\r';
                            Line::Start
                        }
                        _ if n < 4 && c == b"data"[usize::from(n)] => Line::Name(n + 1),
                        _ => Line::Skip,
                    };
                }
                Line::Data { space: true } => {
                    // One space after the colon is not part of the value.
                    if bytes[i] == b' ' {
                        i += 1;
                    }
                    self.sse.line = Line::Data { space: false };
                }
                Line::Data { space: false } | Line::Skip => {
                    let rest = &bytes[i..];
                    let end = memchr2(b'\n', b'\r', rest);
                    if self.sse.line != Line::Skip {
                        self.json.feed(&rest[..end.unwrap_or(rest.len())]);
                    }
                    match end {
                        Some(n) => {
                            self.sse.cr = rest[n] == b'\r';
                            self.sse.line = Line::Start;
                            i += n + 1;
                        }
                        None => i = bytes.len(),
                    }
                }
            }
        }
    }

    /// A `data` field begins: the event has data, joined to what it had.
    fn data_line(&mut self) {
        if self.sse.data {
            self.json.feed(b"\n");
        }
        self.sse.data = true;
    }
}

/// An event stream's reading position.
#[derive(Debug, Clone, Copy)]
struct Sse {
    line: Line,
    /// The last line ended with CR, so an LF next is part of that ending.
    cr: bool,
    /// The current event has had a `data` field.
    data: bool,
}

/// Where in a line of an event stream the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At its start.
    Start,
    /// In the field name, of which this many bytes matched `data`.
    Name(u8),
    /// In a `data` field's value; `space` before its first byte.
    Data { space: bool },
    /// In a line of no interest: another field, or a comment.
    Skip,
}

/// What the JSON reader expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value: the document's, an array's item, or after a key's `:`.
    Value,
    /// After a value in a container: `,` or the closing bracket.
    After,
    /// A key's opening quote, or `}`.
    Key,
    /// In a key.
    KeyText,
    /// In a key, after a backslash.
    KeyEscape,
    /// After a key: `:`.
    Colon,
    /// In a string value.
    Text,
    /// In a string value, after a backslash.
    TextEscape,
    /// In a number.
    Number,
    /// In `true`, `false` or `null`.
    Word,
    /// After the document's value; another may follow.
    End,
    /// Not JSON as far as the reader follows it: the rest is ignored.
    Broken,
    /// In an object or array that cannot hold usage, passed over
    /// ([`Json::skip`]).
    Skip,
}

/// Where in an object or array passed over the reader is.
#[derive(Debug, Clone, Copy, Default)]
struct Skipping {
    /// Its brackets still open, its own included.
    open: u32,
    /// In a string.
    string: bool,
    /// After a backslash in a string.
    escape: bool,
}

/// The keys the reader tells apart; each other key is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    /// An array's item, whatever its index.
    Item,
    Usage,
    PromptTokens,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    CacheCreation,
    CacheRead,
    PromptEvalCount,
    EvalCount,
    TokensEvaluated,
    TokensPredicted,
    Choices,
    Delta,
    Message,
    Response,
    Content,
    Text,
    Role,
    Thinking,
    PartialJson,
    ToolCalls,
}

impl Key {
    fn of(raw: &[u8]) -> Key {
        match raw {
            b"usage" => Key::Usage,
            b"prompt_tokens" => Key::PromptTokens,
            b"completion_tokens" => Key::CompletionTokens,
            b"input_tokens" => Key::InputTokens,
            b"output_tokens" => Key::OutputTokens,
            b"cache_creation_input_tokens" => Key::CacheCreation,
            b"cache_read_input_tokens" => Key::CacheRead,
            b"prompt_eval_count" => Key::PromptEvalCount,
            b"eval_count" => Key::EvalCount,
            b"tokens_evaluated" => Key::TokensEvaluated,
            b"tokens_predicted" => Key::TokensPredicted,
            b"choices" => Key::Choices,
            b"delta" => Key::Delta,
            b"message" => Key::Message,
            b"response" => Key::Response,
            b"content" => Key::Content,
            b"text" => Key::Text,
            b"role" => Key::Role,
            b"thinking" => Key::Thinking,
            b"partial_json" => Key::PartialJson,
            b"tool_calls" => Key::ToolCalls,
            _ => Key::Other,
        }
    }
}

/// A count of [`Counts`].
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// OpenAI's `prompt_tokens`, Ollama's and llama.cpp's prompt counts.
    Prompt,
    /// `input_tokens` (Responses, Anthropic).
    Input,
    /// Anthropic's `cache_creation_input_tokens`.
    CacheWrite,
    /// Anthropic's `cache_read_input_tokens`.
    CacheRead,
    Completion,
}

/// Which object a count belongs to; each is taken when it closes whole, so
/// a count of an object cut off is not.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// A `usage` object.
    Usage,
    /// The document's own object (Ollama, llama.cpp).
    Top,
}

/// Counts found, each replacing the one before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts([Option<u64>; 5]);

impl Counts {
    fn get(&self, slot: Slot) -> Option<u64> {
        self.0[slot as usize]
    }

    fn set(&mut self, slot: Slot, n: u64) {
        self.0[slot as usize] = Some(n);
    }

    /// Sets `slot` to `n` unless it is set.
    fn fill_one(&mut self, slot: Slot, n: u64) {
        self.0[slot as usize].get_or_insert(n);
    }

    /// Takes the counts of `other` for the slots not set here, keeping the
    /// ones that are.
    fn fill(&mut self, other: &Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.or(*theirs);
        }
    }

    /// Takes the counts of `other` that are set, and clears it.
    fn take(&mut self, other: &mut Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(&mut other.0) {
            *mine = theirs.take().or(*mine);
        }
    }

    /// The prompt: its count, or the input with the cache's tokens.
    fn prompt(&self) -> Option<u64> {
        self.get(Slot::Prompt).or_else(|| {
            let write = self.get(Slot::CacheWrite).unwrap_or(0);
            let read = self.get(Slot::CacheRead).unwrap_or(0);
            let input = self.get(Slot::Input)?;
            Some(input.saturating_add(write).saturating_add(read))
        })
    }
}

/// Where a number at `path` is counted, if it is a count.
fn slot_of(path: &[Key]) -> Option<(Holder, Slot)> {
    let usage = |key: Key, output: bool| {
        let slot = match key {
            Key::PromptTokens => Slot::Prompt,
            Key::CompletionTokens => Slot::Completion,
            Key::InputTokens => Slot::Input,
            // `message_start` says 1 or so before anything is generated.
            Key::OutputTokens if output => Slot::Completion,
            Key::CacheCreation => Slot::CacheWrite,
            Key::CacheRead => Slot::CacheRead,
            _ => return None,
        };
        Some((Holder::Usage, slot))
    };
    match *path {
        [Key::Usage, k] | [Key::Response, Key::Usage, k] => usage(k, true),
        [Key::Message, Key::Usage, k] => usage(k, false),
        [Key::PromptEvalCount] | [Key::TokensEvaluated] => Some((Holder::Top, Slot::Prompt)),
        [Key::EvalCount] | [Key::TokensPredicted] => Some((Holder::Top, Slot::Completion)),
        _ => None,
    }
}

/// Whether an object at `path` is a `usage` object.
fn is_usage(path: &[Key]) -> bool {
    matches!(
        path,
        [Key::Usage] | [Key::Response | Key::Message, Key::Usage]
    )
}

/// Whether a string at `path` is generated text: the delta of a chat
/// chunk (its text, reasoning or tool call, not its `role`), a legacy
/// completion's `text`, a Responses `delta`, an Anthropic delta, Ollama's
/// `message` or `response`, llama.cpp's `content`. Paths are cut at
/// [`PATH`] keys, so only the first pattern, a prefix, reaches deeper.
fn is_text(path: &[Key]) -> bool {
    use Key::*;
    match path {
        [Choices, Item, Delta, key, ..] => *key != Role,
        [Choices, Item, Text]
        | [Delta]
        | [Delta, Text | PartialJson | Thinking]
        | [Message, Content | Thinking]
        | [Message, ToolCalls, ..]
        | [Response | Content | Thinking] => true,
        _ => false,
    }
}

/// Where the first `"` or `\\` of `b` is: the end of a string's plain
/// run. Keys and most values are short, and `memchr` spends more setting
/// up than finding on a few bytes, so the first 16 are looked at eight at a
/// time in a plain word; a longer run is left to `memchr`.
fn string_end(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // The high bit of each byte that is zero in `x` (and, past the first
    // such byte, perhaps of others: only the first is used).
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = 0;
    for word in b.chunks_exact(8).take(2) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let found = zeros(w ^ QUOTES) | zeros(w ^ BACKSLASHES);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    memchr2(b'"', b'\\', &b[at..]).map(|n| n + at)
}

/// JSON's whitespace.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// An incremental JSON reader that keeps only what usage needs.
#[derive(Debug, Clone)]
struct Json {
    state: State,
    /// Open containers.
    depth: u8,
    /// Bit `d` is set when the container at depth `d + 1` is an array.
    arrays: u64,
    /// The keys that lead to the current value, `path[..depth]`, cut at
    /// [`PATH`].
    path: [Key; PATH],
    /// The key being read, when it is short enough to be one recognised.
    key: [u8; KEY_MAX],
    /// Bytes in `key`; above [`KEY_MAX`] when the key is none recognised.
    key_len: usize,
    /// What the key read so far is, once its closing quote is found.
    key_kind: Key,
    /// The number being read; `None` once it cannot be a count.
    number: Option<u64>,
    /// Where the number being read is counted.
    number_slot: Option<(Holder, Slot)>,
    /// The string being read is generated text.
    text: bool,
    /// The string being read has no byte yet.
    text_empty: bool,
    /// This document has carried generated text.
    content: bool,
    /// Counts of the `usage` object being read.
    usage: Counts,
    /// Counts at the top of the document being read.
    top: Counts,
    /// Counts of every object that closed whole, the latest winning.
    found: Counts,
    /// Objects and arrays under a top-level key other than the ones usage
    /// sits in are passed over without reading their keys.
    skip_nested: bool,
    /// The object or array being passed over.
    skipping: Skipping,
}

impl Json {
    fn new() -> Self {
        Json {
            state: State::Value,
            depth: 0,
            arrays: 0,
            path: [Key::Other; PATH],
            key: [0; KEY_MAX],
            key_len: 0,
            key_kind: Key::Other,
            number: None,
            number_slot: None,
            text: false,
            text_empty: true,
            content: false,
            usage: Counts::default(),
            top: Counts::default(),
            found: Counts::default(),
            skip_nested: false,
            skipping: Skipping::default(),
        }
    }

    /// A reader placed at the value of a whole body's top-level member
    /// `key`, as it would be from the front: one object open, the key
    /// read, only what usage needs followed.
    fn member(key: Key) -> Self {
        let mut json = Json {
            state: State::Value,
            depth: 1,
            skip_nested: true,
            ..Json::new()
        };
        json.path[0] = key;
        json
    }

    /// Starts a new document, keeping what was found.
    fn reset(&mut self) {
        *self = Json {
            found: self.found,
            skip_nested: self.skip_nested,
            ..Json::new()
        };
    }

    fn feed(&mut self, b: &[u8]) {
        let mut i = 0;
        while i < b.len() {
            match self.state {
                State::Text => i = self.text(b, i),
                State::KeyText => i = self.key_text(b, i),
                State::Number => i = self.number(b, i),
                State::TextEscape | State::KeyEscape => {
                    // The escaped byte; `\u` is followed by plain hex digits.
                    i += 1;
                    self.text_empty = false;
                    self.state = match self.state {
                        State::TextEscape => State::Text,
                        _ => State::KeyText,
                    };
                }
                State::Word => {
                    while i < b.len() && b[i].is_ascii_alphabetic() {
                        i += 1;
                    }
                    if i < b.len() {
                        self.state = self.after();
                    }
                }
                State::Broken => return,
                State::Skip => i = self.skip(b, i),
                _ => {
                    let c = b[i];
                    i += 1;
                    if !is_space(c) {
                        self.token(c);
                    }
                }
            }
        }
    }

    /// A byte outside strings, numbers and words.
    fn token(&mut self, c: u8) {
        match (self.state, c) {
            (State::Value | State::End, _) => self.value(c),
            (State::After, b',') if self.in_array() => self.state = State::Value,
            (State::After, b',') => self.state = State::Key,
            (State::After | State::Key, b'}' | b']') => self.close(c),
            (State::Key, b'"') => {
                self.key_len = 0;
                self.key_kind = Key::Other;
                self.state = State::KeyText;
            }
            (State::Colon, b':') => self.colon(),
            _ => self.state = State::Broken,
        }
    }

    /// The `:` after a key: the value that follows is the key's.
    fn colon(&mut self) {
        // Only in an object, so at depth 1 or more.
        let at = usize::from(self.depth).checked_sub(1);
        if let Some(slot) = at.and_then(|d| self.path.get_mut(d)) {
            *slot = self.key_kind;
        }
        self.state = State::Value;
    }

    /// A value in a container has ended before `b[i]`. The next bytes are
    /// nearly always `,` and, in an object, the next key's quote, or the
    /// key's `:`: taken here, they save a turn of [`Json::feed`] each.
    /// Anything else is left to it.
    fn took_after(&mut self, b: &[u8], i: usize) -> usize {
        match (self.state, b.get(i), b.get(i + 1)) {
            (State::After, Some(b','), Some(b'"')) if !self.in_array() => {
                self.key_len = 0;
                self.key_kind = Key::Other;
                self.state = State::KeyText;
                i + 2
            }
            (State::Colon, Some(b':'), Some(&c)) if !is_space(c) => {
                self.colon();
                self.value(c);
                i + 2
            }
            (State::Colon, Some(b':'), _) => {
                self.colon();
                i + 1
            }
            _ => i,
        }
    }

    /// Whether an object or array starting here is passed over: in a
    /// whole body, the value of a top-level key usage is never under
    /// (`choices` with its messages, above all).
    fn skips(&self) -> bool {
        self.skip_nested
            && self.depth == 1
            && !matches!(self.path[0], Key::Usage | Key::Response | Key::Message)
    }

    /// Passes over an object or array, counting brackets outside strings,
    /// up to the one that closes it. What is inside is not checked.
    fn skip(&mut self, b: &[u8], mut i: usize) -> usize {
        let s = &mut self.skipping;
        while i < b.len() {
            if s.escape {
                s.escape = false;
                i += 1;
            } else if s.string {
                let Some(n) = string_end(&b[i..]) else {
                    return b.len();
                };
                s.string = b[i + n] != b'"';
                s.escape = s.string;
                i += n + 1;
            } else {
                let c = b[i];
                i += 1;
                match c {
                    b'"' => s.string = true,
                    b'{' | b'[' => s.open += 1,
                    b'}' | b']' => {
                        s.open -= 1;
                        if s.open == 0 {
                            self.state = self.after();
                            return self.took_after(b, i);
                        }
                    }
                    _ => {}
                }
            }
        }
        i
    }

    /// The first byte of a value.
    fn value(&mut self, c: u8) {
        match c {
            b'{' | b'[' if self.skips() => {
                self.skipping = Skipping {
                    open: 1,
                    ..Skipping::default()
                };
                self.state = State::Skip;
            }
            b'{' | b'[' => self.open(c),
            b'"' => {
                self.text = is_text(self.at());
                self.text_empty = true;
                self.state = State::Text;
            }
            b'0'..=b'9' | b'-' => {
                self.number_slot = slot_of(self.at());
                self.number = (c != b'-').then(|| u64::from(c - b'0'));
                self.state = State::Number;
            }
            b't' | b'f' | b'n' => self.state = State::Word,
            // `[]`, or a trailing comma.
            b']' if self.in_array() => self.close(c),
            _ => self.state = State::Broken,
        }
    }

    fn open(&mut self, c: u8) {
        let d = usize::from(self.depth);
        if d >= MAX_DEPTH {
            self.state = State::Broken;
            return;
        }
        if c == b'{' && is_usage(self.at()) {
            self.usage = Counts::default();
        }
        self.depth += 1;
        if c == b'[' {
            self.arrays |= 1 << d;
            if d < PATH {
                self.path[d] = Key::Item;
            }
            self.state = State::Value;
        } else {
            self.arrays &= !(1 << d);
            self.state = State::Key;
        }
    }

    fn close(&mut self, c: u8) {
        if self.depth == 0 || (c == b']') != self.in_array() {
            self.state = State::Broken;
            return;
        }
        self.depth -= 1;
        if c == b'}' {
            if is_usage(self.at()) {
                self.found.take(&mut self.usage);
            }
            if self.depth == 0 {
                self.found.take(&mut self.top);
            }
        }
        self.state = self.after();
    }

    /// Skips a string's contents up to its closing quote or a backslash.
    fn text(&mut self, b: &[u8], i: usize) -> usize {
        let rest = &b[i..];
        let Some(n) = string_end(rest) else {
            self.text_empty = false;
            return b.len();
        };
        if n > 0 {
            self.text_empty = false;
        }
        if rest[n] == b'"' {
            self.content |= self.text && !self.text_empty;
            self.state = self.after();
            return self.took_after(b, i + n + 1);
        }
        self.state = State::TextEscape;
        i + n + 1
    }

    /// Reads a key up to its closing quote or a backslash, keeping it only
    /// where keys are remembered and while it could be one recognised. A
    /// key read whole from one chunk (nearly all) is told apart where it
    /// lies; only one split between chunks is gathered in `key`.
    fn key_text(&mut self, b: &[u8], i: usize) -> usize {
        let rest = &b[i..];
        let end = string_end(rest);
        let part = &rest[..end.unwrap_or(rest.len())];
        let kept = usize::from(self.depth) <= PATH && self.key_len <= KEY_MAX;
        let closed = matches!(end, Some(n) if rest[n] == b'"');
        if kept && self.key_len == 0 && closed {
            self.key_kind = Key::of(part);
        } else if kept {
            let len = self.key_len + part.len();
            match self.key.get_mut(self.key_len..len) {
                Some(dst) => {
                    dst.copy_from_slice(part);
                    self.key_len = len;
                }
                None => self.key_len = KEY_MAX + 1,
            }
            if closed {
                self.key_kind = self.key.get(..self.key_len).map_or(Key::Other, Key::of);
            }
        }
        match end {
            Some(n) => {
                if rest[n] == b'"' {
                    self.state = State::Colon;
                    return self.took_after(b, i + n + 1);
                } else {
                    self.key_len = KEY_MAX + 1;
                    self.key_kind = Key::Other;
                    self.state = State::KeyEscape;
                }
                i + n + 1
            }
            None => b.len(),
        }
    }

    /// Reads a number's bytes; at the first byte after it, counts it.
    fn number(&mut self, b: &[u8], mut i: usize) -> usize {
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' => {
                    let d = u64::from(c - b'0');
                    self.number = self.number.and_then(|n| n.checked_mul(10)?.checked_add(d));
                }
                b'.' | b'e' | b'E' | b'+' | b'-' => self.number = None,
                _ => {
                    if let (Some(n), Some((holder, slot))) = (self.number, self.number_slot) {
                        match holder {
                            Holder::Usage => self.usage.set(slot, n),
                            Holder::Top => self.top.set(slot, n),
                        }
                    }
                    self.state = self.after();
                    return self.took_after(b, i);
                }
            }
            i += 1;
        }
        i
    }

    /// The keys leading to the current value.
    fn at(&self) -> &[Key] {
        &self.path[..usize::from(self.depth).min(PATH)]
    }

    fn in_array(&self) -> bool {
        self.depth > 0 && self.arrays & (1 << (self.depth - 1)) != 0
    }

    /// What follows a complete value.
    fn after(&self) -> State {
        if self.depth == 0 {
            State::End
        } else {
            State::After
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn read_chunks<'a>(kind: BodyKind, chunks: impl IntoIterator<Item = &'a [u8]>) -> Usage {
        read_flagged(kind, chunks, true)
    }

    /// Reads `chunks`, the last flagged as the body's end when `end` (as
    /// the proxy sees a body that ends with its data), or not (a body cut
    /// off, or whose end came without data).
    fn read_flagged<'a>(
        kind: BodyKind,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        end: bool,
    ) -> Usage {
        let mut r = UsageReader::new(kind);
        let mut chunks = chunks.into_iter().peekable();
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            r.feed(&Bytes::copy_from_slice(c), end && last);
        }
        r.finish()
    }

    pub(super) fn read(kind: BodyKind, body: &str) -> Usage {
        read_chunks(kind, [body.as_bytes()])
    }

    pub(super) fn reported(prompt: u64, completion: u64, events: u64) -> Usage {
        Usage {
            prompt: Some(prompt),
            completion: Some(completion),
            source: Source::Reported,
            events,
        }
    }

    /// The body read whole, split at each byte, and a byte at a time, must
    /// all give `want`.
    pub(super) fn check_every_split(kind: BodyKind, body: &str, want: Usage) {
        let b = body.as_bytes();
        assert_eq!(read(kind, body), want, "whole");
        assert_eq!(
            read_flagged(kind, [b], false),
            want,
            "whole, its end unflagged"
        );
        for i in 0..=b.len() {
            assert_eq!(
                read_chunks(kind, [&b[..i], &b[i..]]),
                want,
                "split at {i}: {:?} | {:?}",
                String::from_utf8_lossy(&b[..i]),
                String::from_utf8_lossy(&b[i..]),
            );
        }
        assert_eq!(read_chunks(kind, b.chunks(1)), want, "a byte at a time");
    }

    /// One chat chunk as vLLM streams it with `include_usage` on.
    fn chat_chunk(delta: &str, finish: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-9a1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\
             \"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{delta},\
             \"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    }

    /// A chat stream: a role chunk, four text chunks (one of them the text
    /// of a usage object), a finishing chunk, then usage and `[DONE]`.
    fn chat_stream(usage: bool) -> String {
        let mut s = chat_chunk(r#"{"role":"assistant","content":""}"#, "null");
        for t in [
            "Hé",
            "llo",
            " 🌍",
            r#" \"usage\": {\"prompt_tokens\": 999}"#,
        ] {
            s += &chat_chunk(&format!(r#"{{"content":"{t}"}}"#), "null");
        }
        s += &chat_chunk("{}", r#""stop""#);
        if usage {
            s += "data: {\"id\":\"chatcmpl-9a1\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\
                  \"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":17,\
                  \"total_tokens\":22,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n";
        }
        s + "data: [DONE]\n\n"
    }

    const RESPONSES: &str = concat!(
        "event: response.created\n",
        r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[],"usage":null}}"#,
        "\n\nevent: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#,
        "\n\nevent: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" there"}"#,
        "\n\nevent: response.output_text.done\n",
        r#"data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi there"}"#,
        "\n\nevent: response.completed\n",
        r#"data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi there","annotations":[]}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14},"metadata":{}}}"#,
        "\n\n",
    );

    const ANTHROPIC_START: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"qwen3","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\nevent: ping\n",
        r#"data: {"type": "ping"}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
        "\n\n",
    );

    const ANTHROPIC_END: &str = concat!(
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        "\n\nevent: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    const OLLAMA_CHAT: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":"The"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.16Z","message":{"role":"assistant","content":" ciel 🌍"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.2Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":2,"eval_duration":4535599000}"#,
        "\n",
    );

    const OLLAMA_GENERATE: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28Z","response":"Why","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28Z","response":"","done":true,"context":[1,2,3],"prompt_eval_count":8,"eval_count":1}"#,
    );

    #[test]
    fn openai_stream_usage_is_the_last_event_that_has_one() {
        check_every_split(BodyKind::Sse, &chat_stream(true), reported(17, 5, 4));
    }

    #[test]
    fn a_stream_without_usage_is_estimated_from_its_text_events() {
        let want = Usage {
            prompt: None,
            completion: Some(4),
            source: Source::Estimated,
            events: 4,
        };
        check_every_split(BodyKind::Sse, &chat_stream(false), want);
        let ollama = OLLAMA_CHAT.replace(r#","prompt_eval_count":26"#, "");
        let ollama = ollama.replace(r#","eval_count":2"#, "");
        let want = Usage {
            completion: Some(2),
            events: 2,
            ..want
        };
        assert_eq!(read(BodyKind::Ndjson, &ollama), want);
    }

    #[test]
    fn continuous_usage_keeps_the_latest() {
        let s: String = (1..=3)
            .map(|n| {
                format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"t\"}}}}],\"usage\":\
                     {{\"prompt_tokens\":9,\"completion_tokens\":{n}}}}}\n\n"
                )
            })
            .collect();
        assert_eq!(read(BodyKind::Sse, &s), reported(9, 3, 3));
    }

    #[test]
    fn responses_usage_is_in_response_completed() {
        check_every_split(BodyKind::Sse, RESPONSES, reported(12, 2, 2));
    }

    #[test]
    fn anthropic_input_comes_first_and_output_last() {
        let body = format!("{ANTHROPIC_START}{ANTHROPIC_END}");
        // 25 input tokens and 100 read from the cache.
        check_every_split(BodyKind::Sse, &body, reported(125, 15, 2));
        // Cut off before `message_delta`: the prompt is known, and the
        // placeholder output count of `message_start` is not taken.
        let cut = read(BodyKind::Sse, ANTHROPIC_START);
        assert_eq!(
            cut,
            Usage {
                prompt: Some(125),
                completion: Some(2),
                source: Source::Estimated,
                events: 2,
            }
        );
    }

    #[test]
    fn ollama_counts_are_in_the_done_line() {
        check_every_split(BodyKind::Ndjson, OLLAMA_CHAT, reported(26, 2, 2));
        // The last line need not end with a newline.
        assert_eq!(read(BodyKind::Ndjson, OLLAMA_GENERATE), reported(8, 1, 1));
    }

    #[test]
    fn llama_cpp_native_completion() {
        let s = concat!(
            "data: {\"content\":\"Hi\",\"stop\":false}\n\n",
            "data: {\"content\":\"\",\"stop\":true,\"tokens_predicted\":1,\"tokens_evaluated\":6}\n\n",
        );
        assert_eq!(read(BodyKind::Sse, s), reported(6, 1, 1));
    }

    #[test]
    fn whole_bodies() {
        let openai = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1731000000,"model":"llama3","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\" \\ 🌍"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#;
        check_every_split(BodyKind::Json, openai, reported(11, 4, 0));
        let responses = r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":7,"output_tokens":1,"total_tokens":8},"metadata":{}}"#;
        assert_eq!(read(BodyKind::Json, responses), reported(7, 1, 0));
        let anthropic = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}"#;
        assert_eq!(read(BodyKind::Json, anthropic), reported(15, 3, 0));
        let ollama = r#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":true,"prompt_eval_count":26,"eval_count":298}"#;
        assert_eq!(read(BodyKind::Json, ollama), reported(26, 298, 0));
        let embeddings = r#"{"object":"list","data":[{"embedding":[0.1,-2e-3]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let got = read(BodyKind::Json, embeddings);
        assert_eq!((got.prompt, got.completion), (Some(3), None));
    }

    #[test]
    fn a_whole_body_without_usage_has_no_estimate() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"Hi"}}]}"#;
        let want = Usage {
            prompt: None,
            completion: None,
            source: Source::Reported,
            events: 0,
        };
        assert_eq!(read(BodyKind::Json, body), want);
        assert_eq!(read(BodyKind::Sse, "data: [DONE]\n\n"), want);
        assert_eq!(read(BodyKind::Json, ""), want);
    }

    #[test]
    fn usage_inside_text_or_deeper_objects_is_not_usage() {
        let none = |body: &str| {
            let got = read(BodyKind::Json, body);
            assert_eq!((got.prompt, got.completion), (None, None), "{body}");
        };
        none(
            r#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999}"}}]}"#,
        );
        none(
            r#"{"choices":[{"message":{"content":"x"},"usage":{"prompt_tokens":1,"completion_tokens":1}}]}"#,
        );
        none(
            r#"{"metadata":{"usage":{"prompt_tokens":1,"completion_tokens":1}},"eval":{"eval_count":4}}"#,
        );
        none(r#"[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]"#);
        none(
            r#"{"usage_note":{"prompt_tokens":1},"usage":"lots","xusage":{"completion_tokens":1}}"#,
        );
        none(r#"{"usage":[{"prompt_tokens":1}],"eval_count":"3"}"#);
        // Text that looks like usage, before and after the real one.
        let body = r#"{"a":"{\"usage\":{\"prompt_tokens\":1}}","usage":{"prompt_tokens":3,"completion_tokens":4},"choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 999, \"completion_tokens\": 999}}"}}]}"#;
        check_every_split(BodyKind::Json, body, reported(3, 4, 0));
    }

    #[test]
    fn what_a_whole_body_passes_over_ends_where_its_brackets_close() {
        // Brackets and escaped quotes in text, nesting, and usage-like
        // objects deep inside the parts passed over; then the real usage,
        // and after it another part passed over.
        let body = r#"{"choices":[{"message":{"content":"]}\"}{[ \\","tool_calls":[{"function":{"arguments":"{\"usage\":{\"prompt_tokens\":9}}"}}]},"usage":{"prompt_tokens":9,"completion_tokens":9}},[[],{}]],"usage":{"prompt_tokens":5,"completion_tokens":6},"output":[{"usage":{"completion_tokens":9}}]}"#;
        check_every_split(BodyKind::Json, body, reported(5, 6, 0));
        // A part never closed leaves nothing after it read from the front
        // (a body in two chunks). Whole, the body is read from its end,
        // which stops at the usage: what is before it is not read.
        let open = r#"{"choices":[{"message":{"content":"x"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        let (front, back) = open.as_bytes().split_at(10);
        let got = read_chunks(BodyKind::Json, [front, back]);
        assert_eq!((got.prompt, got.completion), (None, None));
        assert_eq!(read(BodyKind::Json, open), reported(1, 1, 0));
    }

    #[test]
    fn a_string_ends_at_the_first_quote_or_backslash() {
        for seed in 0..300 {
            let b = noise(seed, 1 + seed as usize % 40, b"ab\"\\\x80\xff\x00 ");
            for start in 0..b.len() {
                let want = b[start..].iter().position(|&c| c == b'"' || c == b'\\');
                assert_eq!(string_end(&b[start..]), want, "{:?}", &b[start..]);
            }
        }
    }

    #[test]
    fn counts_must_be_whole_numbers_that_fit() {
        let one = |v: &str| {
            let body = format!(r#"{{"usage":{{"prompt_tokens":{v},"completion_tokens":2}}}}"#);
            read(BodyKind::Json, &body).prompt
        };
        assert_eq!(one("18446744073709551615"), Some(u64::MAX));
        assert_eq!(one("18446744073709551616"), None);
        assert_eq!(one("99999999999999999999999999999"), None);
        assert_eq!(one("-5"), None);
        assert_eq!(one("5.0"), None);
        assert_eq!(one("5e2"), None);
        assert_eq!(one("\"5\""), None);
        assert_eq!(one("null"), None);
        assert_eq!(one(" 0 "), Some(0));
    }

    #[test]
    fn a_usage_object_cut_off_is_not_taken() {
        let mut s = chat_stream(false);
        s += r#"data: {"choices":[],"usage":{"prompt_tokens":17,"completion_tokens":5"#;
        let got = read(BodyKind::Sse, &s);
        assert_eq!((got.prompt, got.completion), (None, Some(4)));
        assert_eq!(got.source, Source::Estimated);
        // Ollama's last line cut off: its counts are not taken either.
        let cut = &OLLAMA_CHAT[..OLLAMA_CHAT.len() - 3];
        let got = read(BodyKind::Ndjson, cut);
        assert_eq!((got.prompt, got.completion), (None, Some(2)));
    }

    #[test]
    fn event_stream_syntax() {
        let event = r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
        // CRLF, CR alone, no space after the colon, comments, other fields.
        for (sep, prefix) in [("\r\n", "data: "), ("\r", "data:"), ("\n", "data:")] {
            let s = format!(": keep-alive{sep}retry: 10{sep}id: 1{sep}{prefix}{event}{sep}{sep}data: [DONE]{sep}{sep}");
            check_every_split(BodyKind::Sse, &s, reported(2, 1, 1));
        }
        // One event's data over several lines is one document.
        let s = "data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"a\"}}],\ndata: \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n";
        assert_eq!(read(BodyKind::Sse, s), reported(2, 1, 1));
        // Fields that only resemble `data`, and `data` with no value.
        let s = format!("dat: {event}\n\ndatas: {event}\n\nDATA: {event}\n\ndata\n\n");
        assert_eq!(read(BodyKind::Sse, &s).completion, None);
        // Events with text but nothing else count; a `role` alone does not.
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"text\":\"legacy\"}]}\n\n",
            "data: {\"delta\":{\"partial_json\":\"{\"}}\n\n",
            "data: {\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        );
        assert_eq!(read(BodyKind::Sse, s).events, 4);
    }

    #[test]
    fn an_open_event_at_the_end_counts_if_its_text_arrived() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}";
        assert_eq!(read(BodyKind::Sse, s).events, 1);
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"a";
        assert_eq!(read(BodyKind::Sse, s).events, 0);
    }

    #[test]
    fn keys_are_recognised_only_written_plainly() {
        let body = r#"{"us\u0061ge":{"prompt_tokens":1,"completion_tokens":1},"a\"b":{"usage":1},"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
        check_every_split(BodyKind::Json, body, reported(2, 3, 0));
        let long = format!(r#"{{"{}usage":{{"prompt_tokens":1}}}}"#, "x".repeat(100));
        assert_eq!(read(BodyKind::Json, &long).prompt, None);
    }

    #[test]
    fn broken_json_ends_only_its_own_event() {
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]]}\n\n",
            "data: {]\n\n",
            "data: }}}}\n\n",
            "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n",
        );
        assert_eq!(read(BodyKind::Sse, s), reported(2, 1, 1));
        let lines =
            "{\"response\":\"a\"\n\u{0}\u{ff}{{\n{\"response\":\"b\"}\n{\"eval_count\":2}\n";
        assert_eq!(read(BodyKind::Ndjson, lines).completion, Some(2));
        assert_eq!(read(BodyKind::Ndjson, lines).events, 2);
    }

    #[test]
    fn the_reader_is_small_whatever_the_body() {
        // Every field of the front-to-back reader is a number, a flag or an
        // array of them: memory stays this, whatever the body.
        assert!(std::mem::size_of::<Reader>() <= 512);
        // What sits in a request's context: that reader boxed, a chunk
        // shared with the response, or the usage read.
        assert!(std::mem::size_of::<UsageReader>() <= 64);
    }

    /// A deterministic byte generator for the hostile tests.
    pub(super) fn noise(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                alphabet[(x >> 33) as usize % alphabet.len()]
            })
            .collect()
    }

    #[test]
    fn any_input_reads_the_same_however_it_is_split() {
        let alphabet = b"{}[]\":,\\ \r\n0123456789-.eutrnlfasdgpmoc_ kx";
        for seed in 0..200 {
            let body = noise(seed, 600, alphabet);
            for kind in [BodyKind::Sse, BodyKind::Ndjson, BodyKind::Json] {
                let whole = read_chunks(kind, [&body[..]]);
                let step = 1 + seed as usize % 7;
                assert_eq!(whole, read_chunks(kind, body.chunks(step)), "seed {seed}");
                assert_eq!(whole, read_chunks(kind, body.chunks(1)), "seed {seed}");
            }
        }
    }

    /// Reads `body` a byte at a time and 64 KiB at a time, and checks that
    /// both give `want` within a bound far above linear time.
    fn check_large(kind: BodyKind, body: &[u8], want: Usage) {
        // Loose: a debug build on a loaded machine; quadratic time on 10 MiB
        // would take hours.
        const BOUND: Duration = Duration::from_secs(60);
        for size in [1, 64 << 10] {
            let start = Instant::now();
            assert_eq!(
                read_chunks(kind, body.chunks(size)),
                want,
                "chunks of {size}"
            );
            let took = start.elapsed();
            assert!(
                took < BOUND,
                "{} MiB in chunks of {size}: {took:?}",
                body.len() >> 20
            );
        }
    }

    const MIB10: usize = 10 << 20;

    #[test]
    fn ten_mib_of_one_event_or_one_body() {
        // One event whose text is 10 MiB, escapes and fake usage included.
        let unit = r#"ab\"usage\":{\"prompt_tokens\":9}\\ "#;
        let text = unit.repeat(MIB10 / unit.len());
        let usage = r#""usage":{"prompt_tokens":3,"completion_tokens":1}"#;
        let sse = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\ndata: {{{usage}}}\n\n");
        check_large(BodyKind::Sse, sse.as_bytes(), reported(3, 1, 1));
        let json = format!(r#"{{"choices":[{{"message":{{"content":"{text}"}}}}],{usage}}}"#);
        check_large(BodyKind::Json, json.as_bytes(), reported(3, 1, 0));
    }

    #[test]
    fn ten_mib_of_nesting_or_noise() {
        let none = Usage {
            prompt: None,
            completion: None,
            source: Source::Reported,
            events: 0,
        };
        let deep = "[".repeat(MIB10);
        check_large(BodyKind::Json, deep.as_bytes(), none);
        let deep = format!("data: {}\n\n", "{\"a\":".repeat(MIB10 / 5));
        check_large(BodyKind::Sse, deep.as_bytes(), none);
        let lines = noise(7, MIB10, b"{}[]\":,\\ 0123456789abcdefghijklmnopqrstuvwxyz");
        let got = read_chunks(BodyKind::Ndjson, lines.chunks(64 << 10));
        check_large(BodyKind::Ndjson, &lines, got);
        // Many small events.
        let many = chat_stream(false).repeat(MIB10 / chat_stream(false).len());
        let events = (MIB10 / chat_stream(false).len()) as u64 * 4;
        let want = Usage {
            completion: Some(events),
            source: Source::Estimated,
            events,
            ..none
        };
        check_large(BodyKind::Sse, many.as_bytes(), want);
    }
}
