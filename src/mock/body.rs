//! Response bodies: whole ones, and token streams that really stream.
//!
//! A token stream is a `futures_util::stream::unfold` polled by hyper itself,
//! not a task feeding a channel: the timer between tokens runs inside the
//! body, so every token becomes its own HTTP chunk written at its time (hyper
//! flushes whenever the body is pending), and when the client goes away hyper
//! drops the body, which the stream's guard counts as a cancelled stream. No
//! task outlives its connection, so aborting a connection stops generation.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use super::generation::Generation;
use super::stats::{InFlight, MockStats, StreamEnd};

/// The body of every mock response. A body error makes hyper close the
/// connection without finishing the response, which is how
/// `Failure::DropMidStream` cuts a stream.
pub(crate) type MockBody = UnsyncBoxBody<Bytes, io::Error>;

/// A body sent in one piece.
pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Where a failing stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// After this many whole token chunks.
    Between(usize),
    /// After this many whole token chunks and half of the next.
    Within(usize),
}

impl Cut {
    fn after(self) -> usize {
        match self {
            Cut::Between(n) | Cut::Within(n) => n,
        }
    }
}

/// A stream of the dialect's opening events (if it has any), `gen.tokens`
/// token chunks `gap` apart, then the dialect's terminator. With
/// `cut: Some(..)`, the connection is cut after `min(n, tokens)` token
/// chunks instead (and half a chunk, for `Cut::Within`), before any
/// terminator.
///
/// The opening events and the first token are produced immediately: the
/// caller has already waited the time to first token before sending the
/// response head.
pub(crate) fn token_stream(
    gen: Generation,
    gap: Duration,
    cut: Option<Cut>,
    stats: Arc<MockStats>,
    in_flight: InFlight,
) -> MockBody {
    let state = State {
        step: Step::Head(gen.head().into_iter()),
        cut_after: cut.map(|c| c.after().min(gen.tokens)),
        half: matches!(cut, Some(Cut::Within(_))),
        gen,
        gap,
        guard: StreamGuard {
            stats,
            ended: false,
            _in_flight: in_flight,
        },
    };
    StreamBody::new(stream::unfold(state, next_frame)).boxed_unsync()
}

/// Where a token stream is.
enum Step {
    /// The opening events not sent yet.
    Head(std::vec::IntoIter<Bytes>),
    /// Token `i` is next.
    Token(usize),
    /// The terminator pieces not sent yet.
    Tail(std::vec::IntoIter<Bytes>),
    /// Nothing left to send.
    Done,
}

struct State {
    step: Step,
    gen: Generation,
    gap: Duration,
    cut_after: Option<usize>,
    /// At the cut, send half of the next chunk first.
    half: bool,
    guard: StreamGuard,
}

type Item = Result<Frame<Bytes>, io::Error>;

async fn next_frame(mut st: State) -> Option<(Item, State)> {
    loop {
        match st.step {
            Step::Head(ref mut rest) => match rest.next() {
                Some(piece) => return Some((Ok(Frame::data(piece)), st)),
                None => st.step = Step::Token(0),
            },
            Step::Token(i) if st.cut_after == Some(i) && st.half => {
                st.half = false;
                let chunk = st.gen.chunk(i);
                let half = chunk.slice(..chunk.len() / 2);
                return Some((Ok(Frame::data(half)), st));
            }
            Step::Token(i) if st.cut_after == Some(i) => {
                // Return pending once so hyper flushes the chunks already
                // written before it sees the error and drops the connection.
                tokio::task::yield_now().await;
                st.step = Step::Done;
                st.guard.end(StreamEnd::Dropped);
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "mock cut the stream");
                return Some((Err(cut), st));
            }
            Step::Token(i) if i < st.gen.tokens => {
                if i > 0 {
                    super::pause(st.gap).await;
                }
                st.step = Step::Token(i + 1);
                return Some((Ok(Frame::data(st.gen.chunk(i))), st));
            }
            Step::Token(_) => st.step = Step::Tail(st.gen.tail().into_iter()),
            Step::Tail(ref mut rest) => match rest.next() {
                Some(piece) => return Some((Ok(Frame::data(piece)), st)),
                None => st.step = Step::Done,
            },
            Step::Done => {
                st.guard.end(StreamEnd::Completed);
                return None;
            }
        }
    }
}

/// Counts how a stream ended. Dropped before it ended means hyper let go of
/// the body early, which only happens when the client went away.
struct StreamGuard {
    stats: Arc<MockStats>,
    ended: bool,
    /// Keeps the request in flight until the stream is over.
    _in_flight: InFlight,
}

impl StreamGuard {
    fn end(&mut self, how: StreamEnd) {
        if !self.ended {
            self.ended = true;
            self.stats.stream_ended(how);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.end(StreamEnd::Cancelled);
    }
}
