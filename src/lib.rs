//! keygate: a thread-per-core API gateway for AI and HTTP API providers.
#![deny(unsafe_code)]

pub mod http;
