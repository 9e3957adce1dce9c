//! Where a request goes: which pool (the `routes` list), and the key a
//! `consistent_hash` pool places it by.
//!
//! # Layout
//! - [`router`]: the routes, first match wins.
//! - [`mod@hash_key`]: what `consistent_hash` hashes.

pub mod hash_key;
pub mod router;

pub use hash_key::hash_key;
pub use router::Router;
