//! Trellis: a Matrix homeserver with an embedded RocksDB event store.
//!
//! The crate is split by responsibility: `config` (the typed configuration), `storage` (typed
//! tables over a key-value engine), `service` (the homeserver's logic), `api` (thin HTTP handlers
//! per spec module) and `server` (listeners, TLS and shutdown).

pub mod api;
pub mod cli;
pub mod cli_data;
pub mod config;
pub mod error;
pub mod heap;
pub mod server;
pub mod service;
pub mod storage;

pub use error::{Error, Result};
