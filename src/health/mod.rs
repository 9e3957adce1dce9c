//! Is each backend up? What active checks and real requests say of it.
//!
//! # Layout
//! - [`state`]: what active checks know of a backend, with their thresholds.
//! - [`probe`]: the TCP or HTTP probe of one backend.
//! - [`circuit`]: passive health, a circuit breaker per backend.
//!
//! What runs the probes is [`crate::background::health`].

pub mod circuit;
pub mod probe;
pub mod state;

pub use state::BackendHealth;
