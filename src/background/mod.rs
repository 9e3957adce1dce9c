//! The work Switchyard does besides serving requests, each a Pingora
//! background service over the current routing snapshot.
//!
//! # Layout
//! - [`health`]: active health checks.
//! - [`discovery`]: each backend's model list.
//! - [`access_log`]: writing the access log's lines, and reopening it.

pub mod access_log;
pub mod discovery;
pub mod health;
