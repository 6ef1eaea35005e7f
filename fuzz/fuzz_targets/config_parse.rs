//! Config parsing must never panic, whatever the text: it either loads or lists problems.
//!
//! Run with `cargo +nightly fuzz run config_parse` from the repository root. Host names are
//! never resolved (the resolver refuses them), and relative paths point into a directory that
//! does not exist, so the target does no network I/O and reads no files unless the input
//! names an absolute path.
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use keygate::config::{Config, ConfigErrors};
use libfuzzer_sys::fuzz_target;

fn no_dns(_host: &str, _port: u16) -> io::Result<SocketAddr> {
    Err(io::Error::other("no DNS while fuzzing"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/keygate-fuzz");
    let result = Config::parse_with_resolver(text, Path::new("fuzz.toml"), base, &no_dns);
    if let Err(ConfigErrors(problems)) = result {
        assert!(!problems.is_empty(), "an error without a problem");
        for problem in &problems {
            assert!(
                problem.line >= 1 && problem.col >= 1,
                "positions are 1-based"
            );
        }
    }
});
