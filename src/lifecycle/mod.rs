//! The process's life: reloading its configuration, upgrading its binary,
//! and ending with its last request.
//!
//! # Layout
//! - [`reload`]: SIGHUP re-reads the configuration.
//! - [`history`]: what the last reloads did, for `/status`.
//! - [`drain`]: shutdown that ends with the last request in flight.
//! - [`signals`]: QUIT, TERM, INT and USR2 (upgrade from inside the service);
//!   USR1 reopens the access log (`background::access_log`).

pub mod drain;
pub mod history;
pub mod reload;
pub mod signals;
