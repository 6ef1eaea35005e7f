//! The tuning file: per-host settings for cores, the I/O driver and sockets.
//!
//! Tuning is kept apart from the config because it describes the machine, not the traffic:
//! the same gateway config runs on a dedicated box (cores pinned) and on a laptop shared with
//! a load generator (nothing pinned). The gateway config names a tuning file with
//! `gateway.tuning`; without one the defaults below apply. Problems are reported against the
//! tuning file's own name. Parsing here does no I/O; [`Tuning::load`] reads the file.

use std::path::Path;

use serde::Deserialize;

use super::endpoint::system_resolver;
use super::error::{ConfigErrors, Problems};
use super::raw::{Int, Text};
use super::validate::{int, read_limited, Ctx};

/// Largest tuning file read, in bytes; the real ones are a few hundred.
pub(crate) const TUNING_FILE_LIMIT: u64 = 1 << 20;

/// Per-host tuning, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// The I/O driver each shard runs on. Default [`DriverChoice::IoUring`].
    pub driver: DriverChoice,
    /// Pin shard `i` to core `i`. Default true; turn off on a machine shared with other
    /// busy processes.
    pub pin_cores: bool,
    /// io_uring submission queue entries per shard. Default 1024, range 256..=32768. Unused
    /// with [`DriverChoice::Epoll`].
    pub ring_entries: u32,
    /// Set up each ring with `IORING_SETUP_SINGLE_ISSUER` and `IORING_SETUP_DEFER_TASKRUN`.
    /// Default true; needs Linux 6.1 or later. Unused with [`DriverChoice::Epoll`].
    pub single_issuer: bool,
    /// `listen(2)` backlog of each listening socket, in connections. Default 4096.
    pub listen_backlog: u32,
    /// Read buffer of a client connection while it reads a request, and the buffer a
    /// response is written from, in bytes; between requests a connection keeps only 2 KiB.
    /// Default 16384, range 1024..=1048576.
    pub read_buffer: usize,
    /// Soft `RLIMIT_NOFILE` to raise to at startup, in file descriptors; capped at the hard
    /// limit. Default 1048576.
    pub nofile_limit: u64,
}

/// The I/O driver a shard runs on: `driver = "io_uring" | "epoll"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring (`"io_uring"`), the default: fewer system calls per request.
    #[default]
    IoUring,
    /// epoll (`"epoll"`), for hosts where io_uring is missing or forbidden (old kernels,
    /// seccomp profiles of container runtimes); slower.
    Epoll,
}

impl DriverChoice {
    /// The name used in the tuning file.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverChoice::IoUring => "io_uring",
            DriverChoice::Epoll => "epoll",
        }
    }

    fn from_name(name: &str) -> Option<DriverChoice> {
        [DriverChoice::IoUring, DriverChoice::Epoll]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// The tuning file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTuning {
    driver: Option<Text>,
    pin_cores: Option<bool>,
    ring_entries: Option<Int>,
    single_issuer: Option<bool>,
    listen_backlog: Option<Int>,
    read_buffer: Option<Int>,
    nofile_limit: Option<Int>,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            driver: DriverChoice::IoUring,
            pin_cores: true,
            ring_entries: 1024,
            single_issuer: true,
            listen_backlog: 4096,
            read_buffer: 16384,
            nofile_limit: 1 << 20,
        }
    }
}

impl Tuning {
    /// Reads and validates a tuning file. A file that cannot be read is one problem at 1:1.
    pub fn load(path: &Path) -> Result<Tuning, ConfigErrors> {
        let text = read_limited(path, TUNING_FILE_LIMIT)
            .map_err(|err| ConfigErrors::whole_file(path, format!("cannot read: {err}")))?;
        Tuning::parse(&text, path)
    }

    /// Validates tuning TOML text; `origin` is the file name used in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Tuning, ConfigErrors> {
        let mut problems = Problems::new(origin, text);
        let raw = match toml::from_str::<RawTuning>(text) {
            Ok(raw) => raw,
            Err(err) => {
                problems.toml(&err);
                return Err(problems.into_errors());
            }
        };

        let mut cx = Ctx {
            problems: &mut problems,
            base_dir: Path::new(""),
            resolver: &system_resolver,
        };
        let defaults = Tuning::default();
        let tuning = Tuning {
            driver: raw
                .driver
                .as_ref()
                .map_or(defaults.driver, |v| driver(v, &mut cx)),
            pin_cores: raw.pin_cores.unwrap_or(defaults.pin_cores),
            ring_entries: int(
                &raw.ring_entries,
                "ring_entries",
                256..=32_768,
                defaults.ring_entries,
                &mut cx,
            ),
            single_issuer: raw.single_issuer.unwrap_or(defaults.single_issuer),
            listen_backlog: int(
                &raw.listen_backlog,
                "listen_backlog",
                1..=i32::MAX.into(),
                defaults.listen_backlog,
                &mut cx,
            ),
            read_buffer: int(
                &raw.read_buffer,
                "read_buffer",
                1024..=1 << 20,
                defaults.read_buffer,
                &mut cx,
            ),
            nofile_limit: int(
                &raw.nofile_limit,
                "nofile_limit",
                64..=i64::MAX,
                defaults.nofile_limit,
                &mut cx,
            ),
        };

        if problems.is_empty() {
            Ok(tuning)
        } else {
            Err(problems.into_errors())
        }
    }
}

fn driver(v: &Text, cx: &mut Ctx<'_, '_>) -> DriverChoice {
    DriverChoice::from_name(v.get_ref()).unwrap_or_else(|| {
        let msg = format!("unknown driver {:?}; use io_uring or epoll", v.get_ref());
        cx.problems.at(v.span(), msg);
        DriverChoice::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Tuning, String> {
        Tuning::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(check(""), Ok(Tuning::default()));
    }

    #[test]
    fn every_key_is_read() {
        let text = "driver = \"epoll\"\npin_cores = false\nring_entries = 4096\n\
                    single_issuer = false\nlisten_backlog = 128\nread_buffer = 65536\n\
                    nofile_limit = 65536\n";
        let want = Tuning {
            driver: DriverChoice::Epoll,
            pin_cores: false,
            ring_entries: 4096,
            single_issuer: false,
            listen_backlog: 128,
            read_buffer: 65536,
            nofile_limit: 65536,
        };
        assert_eq!(check(text), Ok(want));
    }

    #[test]
    fn driver_values() {
        let cases = [
            ("driver = \"io_uring\"\n", Ok(DriverChoice::IoUring)),
            ("driver = \"epoll\"\n", Ok(DriverChoice::Epoll)),
            ("", Ok(DriverChoice::IoUring)),
            (
                "pin_cores = true\ndriver = \"kqueue\"\n",
                Err("t.toml:2:10: unknown driver \"kqueue\"; use io_uring or epoll"),
            ),
            (
                "driver = \"io-uring\"\n",
                Err("t.toml:1:10: unknown driver \"io-uring\"; use io_uring or epoll"),
            ),
            (
                "driver = \"EPOLL\"\n",
                Err("t.toml:1:10: unknown driver \"EPOLL\"; use io_uring or epoll"),
            ),
            (
                "driver = \"\"\n",
                Err("t.toml:1:10: unknown driver \"\"; use io_uring or epoll"),
            ),
            (
                "driver = 1\n",
                Err("t.toml:1:10: invalid type: integer `1`, expected a string"),
            ),
        ];
        for (text, want) in cases {
            let got = check(text).map(|t| t.driver);
            assert_eq!(
                got.as_ref().copied().map_err(String::as_str),
                want,
                "{text:?}"
            );
        }
        for driver in [DriverChoice::IoUring, DriverChoice::Epoll] {
            assert_eq!(DriverChoice::from_name(driver.as_str()), Some(driver));
        }
    }

    #[test]
    fn problems_point_into_the_tuning_file() {
        let cases = [
            (
                "pin_cores = true\npin_core = 1\n",
                "t.toml:2:1: unknown field `pin_core`",
            ),
            (
                "ring_entries = 100\n",
                "t.toml:1:16: ring_entries must be from 256 to 32768, not 100",
            ),
            (
                "pin_cores = \"yes\"\n",
                "t.toml:1:13: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "read_buffer = 1\nlisten_backlog = 0\n",
                "t.toml:1:15: read_buffer must be from 1024 to 1048576, not 1\n\
                 t.toml:2:18: listen_backlog must be from 1 to 2147483647, not 0",
            ),
        ];
        for (text, want) in cases {
            let got = check(text).expect_err(text);
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }
}
