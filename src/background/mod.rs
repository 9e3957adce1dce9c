//! The work Switchyard does besides serving requests, each a Pingora
//! background service over the current routing snapshot.
//!
//! # Layout
//! - [`health`]: active health checks.
//! - [`discovery`]: each backend's model list.

pub mod discovery;
pub mod health;
