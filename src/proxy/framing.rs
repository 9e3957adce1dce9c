//! Whole events only: a streamed response reaches the client one complete
//! Server-Sent Event or NDJSON line at a time.
//!
//! Backends write whole events, and almost every chunk ends on a boundary,
//! which passes through untouched. When a chunk ends inside an event, its
//! unfinished tail is held back until the rest arrives. Should the backend
//! die first, the tail is dropped and the stream's closing error event
//! starts on a fresh boundary, where the client's parser reads it, instead
//! of being glued onto half an event. A client's parser dispatches nothing
//! before an event is complete, so holding the tail delays nothing it
//! could have used.

use bytes::{Bytes, BytesMut};

/// A streamed response's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson` (Ollama).
    Ndjson,
}

impl StreamFormat {
    pub fn of(content_type: Option<&str>) -> Option<StreamFormat> {
        let ct = essence(content_type)?;
        let is = |name: &str| ct.eq_ignore_ascii_case(name);
        if is("text/event-stream") {
            Some(StreamFormat::Sse)
        } else if is("application/x-ndjson")
            || is("application/jsonl")
            || is("application/json-seq")
        {
            Some(StreamFormat::Ndjson)
        } else {
            None
        }
    }
}

/// A `Content-Type`'s media type without its parameters (`charset=...`),
/// to be compared without regard to case.
pub(super) fn essence(content_type: Option<&str>) -> Option<&str> {
    let ct = content_type?;
    let end = ct.bytes().position(|b| b == b';').unwrap_or(ct.len());
    Some(ct[..end].trim_ascii())
}

/// The unfinished end of a streamed response.
#[derive(Debug, Default)]
pub(super) struct Framer {
    tail: BytesMut,
}

impl Framer {
    /// What of `chunk` (after any held tail) may go to the client now; at
    /// the end of the stream, everything.
    pub(super) fn pass(
        &mut self,
        format: StreamFormat,
        chunk: Option<Bytes>,
        end: bool,
    ) -> Option<Bytes> {
        if self.tail.is_empty() {
            let chunk = chunk?;
            let cut = if end {
                chunk.len()
            } else {
                boundary(format, &chunk)
            };
            if cut == chunk.len() {
                return Some(chunk);
            }
            self.tail.extend_from_slice(&chunk[cut..]);
            return (cut > 0).then(|| chunk.slice(..cut));
        }
        if let Some(chunk) = chunk {
            self.tail.extend_from_slice(&chunk);
        }
        let cut = if end {
            self.tail.len()
        } else {
            boundary(format, &self.tail)
        };
        (cut > 0).then(|| self.tail.split_to(cut).freeze())
    }
}

/// The length of `bytes` up to and including its last event boundary.
fn boundary(format: StreamFormat, bytes: &[u8]) -> usize {
    match format {
        // An event ends with an empty line (`\n\n`, `\r\n\r\n`, `\r\r`).
        StreamFormat::Sse => {
            if bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\r") {
                return bytes.len();
            }
            let lf = memchr::memmem::rfind(bytes, b"\n\n").map_or(0, |i| i + 2);
            let crlf = memchr::memmem::rfind(bytes, b"\n\r\n").map_or(0, |i| i + 3);
            let cr = memchr::memmem::rfind(bytes, b"\r\r").map_or(0, |i| i + 2);
            lf.max(crlf).max(cr)
        }
        StreamFormat::Ndjson => memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: StreamFormat, chunks: &[&str], end: bool) -> Vec<String> {
        let mut f = Framer::default();
        let n = chunks.len();
        chunks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                f.pass(format, Some(Bytes::from(c.to_string())), end && i + 1 == n)
            })
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn whole_events_pass_untouched() {
        let out = run(
            StreamFormat::Sse,
            &["data: a\n\n", "data: b\n\ndata: c\n\n"],
            false,
        );
        assert_eq!(out, ["data: a\n\n", "data: b\n\ndata: c\n\n"]);
    }

    #[test]
    fn a_split_event_is_sent_whole() {
        let out = run(
            StreamFormat::Sse,
            &["data: a\n\ndata: {\"x", "\":1}\n\n"],
            false,
        );
        assert_eq!(out, ["data: a\n\n", "data: {\"x\":1}\n\n"]);
        let out = run(StreamFormat::Sse, &["data: a\r\n", "\r\n"], false);
        assert_eq!(out, ["data: a\r\n\r\n"]);
        let out = run(StreamFormat::Ndjson, &["{\"a\":1}\n{\"b\"", ":2}\n"], false);
        assert_eq!(out, ["{\"a\":1}\n", "{\"b\":2}\n"]);
    }

    #[test]
    fn the_end_flushes_what_is_held() {
        let out = run(StreamFormat::Ndjson, &["{\"a\":1}\n{\"b\"", ":2}"], true);
        assert_eq!(out, ["{\"a\":1}\n", "{\"b\":2}"]);
        let mut f = Framer::default();
        assert!(f
            .pass(
                StreamFormat::Sse,
                Some(Bytes::from_static(b"data: x")),
                false
            )
            .is_none());
        assert_eq!(
            f.pass(StreamFormat::Sse, None, true).as_deref(),
            Some(&b"data: x"[..])
        );
    }
}
