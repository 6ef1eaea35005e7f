//! keygate: a thread-per-core API gateway for AI and HTTP API providers.
//!
//! Modules:
//! - [`config`]: the TOML config and tuning files, read into typed, validated values.
#![deny(unsafe_code)]

pub mod http;
pub mod config;
