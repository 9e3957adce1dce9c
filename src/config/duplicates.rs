//! Keys written twice in one mapping.
//!
//! serde fills a map entry by entry, so a second `pools.chat` silently
//! replaces the first; for struct fields it stops at the first repeat. This
//! pass walks the document before it is deserialized and reports every key
//! that appears twice in its mapping, with its key path and both lines.
//!
//! serde_yaml does not show positions to a visitor; it only writes the line
//! into an error raised while it reads a node. So the first walk records
//! each duplicate as the ordinal of its key in the document, and one more
//! walk per line wanted stops with an error at that key and reads the line
//! back from it. That is only done for files that have duplicates.
//!
//! The same walk finds the line of a key path ([`line_of_key`]) for the
//! values of the wrong type that [`super::mistyped`] reports.

use super::ConfigError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;

/// Duplicates reported with their lines; the rest are counted. Each costs
/// two more walks of the file.
const MAX_LOCATED: usize = 10;

/// Every key that appears twice in its mapping, in file order.
pub fn find(text: &str) -> Vec<ConfigError> {
    let walk = Walk::default();
    // A file that does not parse is reported by the real deserialization,
    // which says more than this walk could.
    let _ = walk.run(text);
    let found = walk.found.into_inner();
    let mut errors = Vec::new();
    for dup in found.iter().take(MAX_LOCATED) {
        let message = match (line_of(text, dup.first), line_of(text, dup.again)) {
            (Some(a), Some(b)) if a == b => format!("is given twice on line {a}"),
            (Some(a), Some(b)) => format!("is given twice, on lines {a} and {b}"),
            _ => "is given twice".to_string(),
        };
        errors.push(ConfigError {
            path: dup.path.clone(),
            message,
        });
    }
    if found.len() > MAX_LOCATED {
        errors.push(ConfigError {
            path: String::new(),
            message: format!("and {} more keys given twice", found.len() - MAX_LOCATED),
        });
    }
    errors
}

/// The line of the `ordinal`th key of the document.
fn line_of(text: &str, ordinal: usize) -> Option<usize> {
    Walk {
        stop_at: Stop::Ordinal(ordinal),
        ..Walk::default()
    }
    .line(text)
}

/// The line of the key at `path` (`pools.chat.backends[1].url`), or of the
/// item at a path that ends in an index (`server.listen[1]`).
pub(super) fn line_of_key(text: &str, path: &str) -> Option<usize> {
    Walk {
        stop_at: Stop::Path(path.to_string()),
        ..Walk::default()
    }
    .line(text)
}

/// The message of the error that stops a locating walk.
const STOP: &str = "switchyard: located";

/// A key seen twice: where, and the ordinals of both occurrences.
struct Duplicate {
    path: String,
    first: usize,
    again: usize,
}

/// The path of `key` in the mapping at `parent`.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Where a locating walk fails, so that serde_yaml marks the line.
#[derive(Default)]
enum Stop {
    #[default]
    Nowhere,
    /// At the key with this ordinal.
    Ordinal(usize),
    /// At the key, or the list item, with this path.
    Path(String),
}

/// One walk over the document.
#[derive(Default)]
struct Walk {
    /// Keys read so far: the next key's ordinal.
    keys: Cell<usize>,
    found: RefCell<Vec<Duplicate>>,
    stop_at: Stop,
    /// Set on reaching `stop_at`: an error after this is the stop, wherever
    /// serde_yaml raised it.
    stopped: Cell<bool>,
}

impl Walk {
    fn run(&self, text: &str) -> Result<(), serde_yaml::Error> {
        Node {
            walk: self,
            path: String::new(),
        }
        .deserialize(serde_yaml::Deserializer::from_str(text))
    }

    /// The line `stop_at` is on.
    fn line(&self, text: &str) -> Option<usize> {
        match self.run(text) {
            Err(e) if self.stopped.get() => e.location().map(|l| l.line()),
            _ => None,
        }
    }

    /// Whether the walk is to stop at the node at `path`, or at the key
    /// with `ordinal`; if so, it is stopping.
    fn stops_at(&self, path: &str, ordinal: Option<usize>) -> bool {
        let stop = match &self.stop_at {
            Stop::Nowhere => false,
            Stop::Ordinal(n) => ordinal == Some(*n),
            Stop::Path(p) => p == path,
        };
        if stop {
            self.stopped.set(true);
        }
        stop
    }
}

/// Any node, at a key path.
struct Node<'w> {
    walk: &'w Walk,
    path: String,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.walk.stops_at(&self.path, None) {
            return deserializer.deserialize_str(Here);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        while let Some((key, ordinal)) = map.next_key_seed(Key {
            walk: self.walk,
            parent: &self.path,
        })? {
            let path = child(&self.path, &key);
            if let Some(&first) = seen.get(&key) {
                self.walk.found.borrow_mut().push(Duplicate {
                    path: path.clone(),
                    first,
                    again: ordinal,
                });
            } else {
                seen.insert(key, ordinal);
            }
            map.next_value_seed(Node {
                walk: self.walk,
                path,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Node {
                walk: self.walk,
                path: format!("{}[{i}]", self.path),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    // Scalars hold no keys.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A mapping key, read as the text a `String` key or a field name gets,
/// with its ordinal in the document.
struct Key<'w> {
    walk: &'w Walk,
    /// The path of the mapping the key is in.
    parent: &'w str,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = (String, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = (String, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let ordinal = self.walk.keys.get();
        self.walk.keys.set(ordinal + 1);
        if self.walk.stops_at(&child(self.parent, key), Some(ordinal)) {
            return Err(E::custom(STOP));
        }
        Ok((key.to_string(), ordinal))
    }
}

/// The node a locating walk stops at, read as a string: that fails on any
/// node, a scalar here and anything else in serde_yaml, and either error is
/// marked with the node's line.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the node to locate")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(STOP))
    }
}
