//! What a provider's response says about the key that carried it. (Placeholder types; the
//! parsing lands separately.)

use std::time::Duration;

/// What one response said about the provider key that carried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// How long the provider asked the gateway to wait.
    pub retry_after: Option<Duration>,
    /// The request-count window, if announced.
    pub requests: Option<Window>,
    /// The token window, if announced.
    pub tokens: Option<Window>,
}

/// One rate-limit window as the provider announced it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// The limit per window.
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: Option<u64>,
    /// Time until it is whole again.
    pub reset_in: Option<Duration>,
}

impl Learned {
    /// Placeholder until the parser lands.
    pub fn from_head(
        _provider: crate::config::Provider,
        _head: &crate::http::ResponseHead,
        _buf: &[u8],
        _now: std::time::SystemTime,
    ) -> Learned {
        Learned::default()
    }

    /// Placeholder until the parser lands.
    pub fn retry_delay_from_body(_body: &[u8]) -> Option<Duration> {
        None
    }
}
