//! Values of the wrong YAML type: `weight: -1`, a list where a number goes,
//! `yes please` for a flag.
//!
//! serde stops at the first such value and words it for a Rust programmer
//! (`invalid value: integer -1, expected usize`). So the file is read in
//! rounds: when a round stops at a value, its key path, what the file has
//! there and what the key takes are recorded, the value is taken out of a
//! parsed copy of the document, and the copy is read again, until a round
//! gets through. Validation then words each one with the range it knows for
//! the key (`must be a whole number from 0 to 1000`), and says nothing else
//! about a key reported here, so a value taken out is not also `required`.
//!
//! A value is taken out so that the rest of the file keeps its shape: a
//! mapping or list the key wanted is replaced by an empty one, so a pool
//! keeps its name and a backend its index; a list of strings holding
//! something else is emptied and reported as a whole; any other value is
//! removed, as if not written.
//!
//! The first round reads the file itself, so a file without such values is
//! read exactly as before. Later rounds read the copy written back as YAML,
//! which writes a number in its plain form (`0x10` as `16`): only messages
//! about a file that is rejected anyway can show that.

use super::raw::RawConfig;
use super::{duplicates, ConfigError, ConfigErrors};
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

/// Values of the wrong type reported at most. Each costs a round, a read of
/// the whole file, so a generated file with a mistake in each of its
/// thousands of backends is not read thousands of times: 100 rounds over
/// 1024 backends took 3.3 s in a debug build. A file past this is not
/// validated, and its messages lack the ranges validation adds.
pub const MAX_MISTYPED: usize = 100;

/// A value of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistyped {
    /// The key path, as validation writes it; empty for the whole file.
    pub path: String,
    /// What the key takes, `a mapping` or `a whole number`; validation says
    /// more where it knows more (`a whole number from 0 to 1000`).
    pub takes: String,
    /// What the file has there, as a message shows it: `-1`,
    /// `"yes please"`, `a list`.
    pub found: String,
    /// In a list of strings, the index of the first item that is not one;
    /// `found` is that item.
    pub item: Option<usize>,
    /// The line of the key, or of the item.
    pub line: Option<usize>,
}

impl Mistyped {
    /// The error `switchyard -t` lists.
    pub fn error(&self) -> ConfigError {
        let subject = if self.path.is_empty() {
            "the file must be"
        } else {
            "must be"
        };
        let mut message = match self.item {
            None => format!("{subject} {}, not {}", self.takes, self.found),
            Some(i) => format!("{subject} {}, but [{i}] is {}", self.takes, self.found),
        };
        if let Some(line) = self.line {
            message += &format!(" (line {line})");
        }
        ConfigError {
            path: self.path.clone(),
            message,
        }
    }

    /// Whether an error at `path` is about this value: its key, or a key
    /// inside it.
    pub fn covers(&self, path: &str) -> bool {
        match path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || self.path.is_empty() || rest.starts_with(['.', '[']),
            None => false,
        }
    }
}

/// What a file holds, as far as its YAML types go.
pub struct Read {
    /// Every value of the right type; the others are taken out.
    pub raw: RawConfig,
    /// The key paths serde did not use.
    pub unknown: Vec<String>,
    /// In the order found, which is the file's.
    pub mistyped: Vec<Mistyped>,
}

/// Reads `text` into the raw structs, collecting the values of the wrong
/// type. Fails alone on a file that is not YAML; fails with the values of
/// the wrong type found so far past [`MAX_MISTYPED`] of them, or on one
/// that cannot be taken out.
pub fn read(text: &str) -> Result<Read, ConfigErrors> {
    let mut doc: Option<Value> = None;
    let mut mistyped: Vec<Mistyped> = Vec::new();
    loop {
        let read = match &doc {
            None => round(text),
            Some(doc) => round(&serde_yaml::to_string(doc).map_err(|e| yaml_error(&e))?),
        };
        let (error, segments) = match read {
            Ok((raw, unknown)) => {
                locate(text, &mut mistyped);
                return Ok(Read {
                    raw,
                    unknown,
                    mistyped,
                });
            }
            Err(stop) => stop,
        };
        // Parsed only now: most files have no value of the wrong type. A
        // file that is not YAML fails here, and that is all there is to say.
        let doc = match &mut doc {
            Some(doc) => doc,
            None => doc.insert(parse(text)?),
        };
        let path = join(&segments);
        let taken = Kind::of(&error)
            .filter(|_| mistyped.len() < MAX_MISTYPED && !mistyped.iter().any(|m| m.path == path))
            .and_then(|kind| take_out(doc, &segments, kind));
        match taken {
            Some(m) => mistyped.push(m),
            None => return Err(stopped(text, mistyped, path)),
        }
    }
}

/// One reading of `source`: the raw structs and the key paths serde did
/// not use, or the first error and its path.
fn round(source: &str) -> Result<(RawConfig, Vec<String>), (String, Vec<Segment>)> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(
        serde_yaml::Deserializer::from_str(source),
        &mut track,
    );
    // `Option` so that an empty file is an empty config, not a type error.
    match serde_ignored::deserialize::<_, _, Option<RawConfig>>(deserializer, |path| {
        unknown.push(key_path(&path))
    }) {
        Ok(raw) => Ok((raw.unwrap_or_default(), unknown)),
        Err(e) => Err((e.to_string(), track.path().iter().cloned().collect())),
    }
}

/// The errors of a file whose reading stopped at `path`: the values of the
/// wrong type found so far, and why it stopped.
fn stopped(text: &str, mut mistyped: Vec<Mistyped>, path: String) -> ConfigErrors {
    let why = if mistyped.len() < MAX_MISTYPED {
        ConfigError {
            path,
            message: "has a value of a type this key does not take".into(),
        }
    } else {
        ConfigError {
            path: String::new(),
            message: format!("more values of the wrong type; the first {MAX_MISTYPED} are listed"),
        }
    };
    locate(text, &mut mistyped);
    let mut all: Vec<ConfigError> = mistyped.iter().map(Mistyped::error).collect();
    all.push(why);
    ConfigErrors(all)
}

/// What a key takes, as far as YAML types go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mapping,
    List,
    Text,
    Number,
    Flag,
}

impl Kind {
    /// From serde's name for the raw struct's type in an error (`expected
    /// usize`, `expected struct RawPool`); `None` for an error that is not
    /// about a type.
    fn of(error: &str) -> Option<Kind> {
        // The last one: the value found, quoted earlier in the error, could
        // hold the same words.
        let (_, expected) = error.rsplit_once(", expected ")?;
        let kinds = [
            ("struct ", Kind::Mapping),
            ("a map", Kind::Mapping),
            ("a sequence", Kind::List),
            ("a string", Kind::Text),
            ("a boolean", Kind::Flag),
            ("usize", Kind::Number),
            ("u64", Kind::Number),
            ("u32", Kind::Number),
            ("u16", Kind::Number),
        ];
        kinds
            .iter()
            .find(|(serde, _)| expected.starts_with(serde))
            .map(|&(_, kind)| kind)
    }

    /// As a message says it; validation says more where it knows more.
    fn words(self) -> &'static str {
        match self {
            Kind::Mapping => "a mapping",
            Kind::List => "a list",
            Kind::Text => "a string",
            Kind::Number => "a whole number",
            Kind::Flag => "true or false",
        }
    }

    /// An empty value of this kind, where there is one.
    fn empty(self) -> Option<Value> {
        match self {
            Kind::Mapping => Some(Value::Mapping(Mapping::new())),
            Kind::List => Some(Value::Sequence(Vec::new())),
            _ => None,
        }
    }
}

/// Takes the value at `segments` out of `doc` (see the module's doc), and
/// says what it was. `None` where there is no such value.
fn take_out(doc: &mut Value, segments: &[Segment], kind: Kind) -> Option<Mistyped> {
    let mistyped = |path: &[Segment], found: &Value| Mistyped {
        path: join(path),
        takes: kind.words().to_string(),
        found: describe(found),
        item: None,
        line: None,
    };
    let Some((last, parents)) = segments.split_last() else {
        let m = mistyped(segments, doc);
        *doc = Value::Mapping(Mapping::new());
        return Some(m);
    };
    let parent = node(doc, parents)?;
    match (last, parent, kind.empty()) {
        (Segment::Map { key }, Value::Mapping(map), empty) => {
            let key = map
                .keys()
                .find(|k| text_of(k).as_deref() == Some(key))?
                .clone();
            let m = mistyped(segments, map.get(&key)?);
            match (empty, map.get_mut(&key)) {
                (Some(empty), Some(value)) => *value = empty,
                _ => {
                    map.shift_remove(&key);
                }
            }
            Some(m)
        }
        (Segment::Seq { index }, Value::Sequence(items), Some(empty)) => {
            let item = items.get_mut(*index)?;
            let m = mistyped(segments, item);
            *item = empty;
            Some(m)
        }
        // An item of a list of strings: the list is reported, and emptied
        // so that its other items are not reported at the wrong index.
        (Segment::Seq { index }, list @ Value::Sequence(_), None) if kind == Kind::Text => {
            let found = describe(list.get(*index)?);
            *list = Value::Sequence(Vec::new());
            Some(Mistyped {
                path: join(parents),
                takes: "a list of strings".into(),
                found,
                item: Some(*index),
                line: None,
            })
        }
        _ => None,
    }
}

/// The node at `segments`.
fn node<'v>(mut at: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    for segment in segments {
        at = match (segment, at) {
            (Segment::Map { key }, Value::Mapping(map)) => map
                .iter_mut()
                .find(|(k, _)| text_of(k).as_deref() == Some(key))
                .map(|(_, v)| v)?,
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(at)
}

/// A mapping key as serde reads it into a `String` or a field name.
fn text_of(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value as a message shows it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `pools.chat.backends[1].weight`.
fn join(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path += &format!("[{index}]"),
            Segment::Map { key } if path.is_empty() => path += key,
            Segment::Map { key } => path += &format!(".{key}"),
            Segment::Enum { variant } => path += &format!(".{variant}"),
            Segment::Unknown => path += ".?",
        }
    }
    path
}

/// Finds the lines of the values, in the file as written.
fn locate(text: &str, mistyped: &mut [Mistyped]) {
    for m in mistyped {
        m.line = match m.item {
            Some(i) => duplicates::line_of_key(text, &format!("{}[{i}]", m.path)),
            None if m.path.is_empty() => None,
            None => duplicates::line_of_key(text, &m.path),
        };
    }
}

/// The document, or why it is not one: not YAML, or a number beyond what
/// a YAML value holds (64 bits), which no key takes either.
fn parse(text: &str) -> Result<Value, ConfigErrors> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let too_large = ["as u128", "as i128"]
            .iter()
            .any(|t| e.inner().to_string().contains(t));
        if !too_large {
            return yaml_error(e.inner());
        }
        let mut message = "is a number too large for any key".to_string();
        if let Some(at) = e.inner().location() {
            message += &format!(" (line {})", at.line());
        }
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        ConfigErrors::one(join(&segments), message)
    })
}

/// A file that is not YAML: serde_yaml's words, with the line and column.
fn yaml_error(e: &serde_yaml::Error) -> ConfigErrors {
    ConfigErrors::one("", format!("YAML: {e}"))
}

/// Renders a `serde_ignored` path as `pools.chat.backends[1].wieght`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}
