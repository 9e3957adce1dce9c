//! Which backend of a pool serves a request, and how many it may serve at
//! once.
//!
//! # Layout
//! - [`pool`]: a pool's backends and its Pingora selector, with the accept
//!   filter that consults health, circuit, models and caps.
//! - [`least_conn`]: the `least_connections` selector.
//! - [`in_flight`]: requests in flight per backend, and the slot a request
//!   holds.
//! - [`queue`]: where requests wait when every candidate is at its cap.
//! - [`peer`]: how a backend is reached: Pingora's peer, with TLS for an
//!   HTTPS backend; the proxy and the health checks build it alike.

pub mod in_flight;
pub mod least_conn;
pub mod peer;
pub mod pool;
pub mod queue;
