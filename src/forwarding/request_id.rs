//! The request id: the client's own `x-request-id` when it is sane, a new
//! random one otherwise.
//!
//! A client (or a proxy in front) that already names its requests keeps its
//! name, so one id follows a request from the client's logs through
//! Switchyard's to the backend's. A value that could break a log line or a
//! header (too long, a control character, a space) is replaced rather than
//! cleaned up: a cleaned-up id would no longer match the client's logs
//! anyway.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

/// The header carrying the id: to the backend, and back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest id kept. 128 bytes hold any UUID, ULID or trace id with room
/// for a prefix, and bound what one client can make every log line carry.
pub const MAX_REQUEST_ID: usize = 128;

/// The id for a request with `headers`: the client's, if it sent exactly one
/// sane `x-request-id`, else a new one. Two ids would leave it open which
/// one the backend reads.
///
/// It is kept as the header value it is written as, twice per request (to
/// the backend and to the client): the client's is shared with its
/// request, not copied, and each write shares it again.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    // The name made once, not parsed from text on every lookup.
    const NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
    let mut given = headers.get_all(&NAME).iter();
    match (given.next(), given.next()) {
        (Some(id), None) if is_sane(id.as_bytes()) => id.clone(),
        _ => new_id(),
    }
}

/// 1 to [`MAX_REQUEST_ID`] bytes of printable ASCII without spaces
/// (`!` to `~`): a space would split the id in a log line.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// A new id: 128 random bits as 32 lower-case hex digits, the form of
/// nginx's `$request_id`.
///
/// The bits come from a xoshiro generator (`SmallRng`) of the thread's
/// own, seeded once from the operating system: an id must not repeat, not
/// be unguessable (it names a request, it grants nothing), and this costs a
/// few operations where the cryptographic `thread_rng` costs a ChaCha
/// block now and then and its bookkeeping on every id.
///
/// The digits are owned by a shared buffer from the start, so the copies
/// written on the request and the response share it without allocating
/// (a value made from a slice allocates again when first cloned).
pub fn new_id() -> HeaderValue {
    thread_local! {
        static BITS: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
    }
    let bits: u128 = BITS.with(|rng| rng.borrow_mut().gen());
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex(bits)))
        .expect("hex digits are a header value")
}

/// `bits` as 32 lower-case hex digits, the most significant first: a
/// byte's two digits at a time, from a table.
fn hex(bits: u128) -> [u8; 32] {
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        pairs
    };
    let mut out = [0u8; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(REQUEST_ID_HEADER, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn is_new(id: &HeaderValue) -> bool {
        let id = id.as_bytes();
        id.len() == 32 && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn a_sane_id_is_kept() {
        assert_eq!(request_id(&with(&[b"abc-123"])), "abc-123");
        let uuid = "0b6c4a5e-6f0e-4c1a-9b1e-2f7d3c4b5a69";
        assert_eq!(request_id(&with(&[uuid.as_bytes()])), uuid);
        let longest = "x".repeat(MAX_REQUEST_ID);
        assert_eq!(request_id(&with(&[longest.as_bytes()])), longest);
    }

    #[test]
    fn anything_else_gets_a_new_id() {
        assert!(is_new(&request_id(&HeaderMap::new())));
        let too_long = "x".repeat(MAX_REQUEST_ID + 1);
        assert!(is_new(&request_id(&with(&[too_long.as_bytes()]))));
        assert!(is_new(&request_id(&with(&[b"a\tb"]))));
        assert!(is_new(&request_id(&with(&[b"a b"]))));
        assert!(is_new(&request_id(&with(&[b"caf\xc3\xa9"]))));
        assert!(is_new(&request_id(&with(&[b"one", b"two"]))));
    }

    #[test]
    fn hex_digits_run_from_the_most_significant() {
        assert_eq!(&hex(0), b"00000000000000000000000000000000");
        assert_eq!(&hex(u128::MAX), b"ffffffffffffffffffffffffffffffff");
        assert_eq!(
            &hex(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            b"0123456789abcdeffedcba9876543210"
        );
    }

    #[test]
    fn new_ids_differ() {
        let (a, b) = (new_id(), new_id());
        assert!(is_new(&a) && is_new(&b), "{a:?} {b:?}");
        assert_ne!(a, b);
    }

    #[test]
    fn threads_make_different_ids() {
        // Each thread seeds its own generator: one seed shared, or a fixed
        // one, would repeat ids across threads.
        let ids: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 4000);
        assert!(ids.iter().all(is_new));
    }

    #[test]
    fn sanity_bounds() {
        assert!(!is_sane(b""));
        assert!(is_sane(b"!~"));
        assert!(!is_sane(b"a\x00"));
        assert!(!is_sane(b"\x7f"));
    }
}
