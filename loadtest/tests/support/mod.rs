//! What the black-box tests of `loadtest mock` share: the real binary on 127.0.0.1 port 0,
//! spoken to in raw bytes over std `TcpStream`, with a deliberately small response reader.

// Each test crate uses its own share of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running mock, killed when dropped.
pub struct Mock {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Mock {
    /// Starts `loadtest mock --listen 127.0.0.1:0` with `args` and waits for its address.
    pub fn start(args: &[&str]) -> Mock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["mock", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loadtest");
        let stderr = child.stderr.take().expect("piped stderr");

        // Read stderr on a thread, so that a silent child fails the test instead of hanging
        // it, and so that the child never blocks on a full pipe afterwards.
        let (found_tx, found_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let rest = &line[at + "listening on ".len()..];
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = found_tx.send(addr);
                }
            }
        });
        let mut mock = Mock {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let addr = found_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the mock logs `listening on ADDR`");
        mock.addr = addr.parse().expect("a socket address after `listening on`");
        mock
    }

    /// A new connection to the mock, with a read timeout.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to the mock");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Fields with lower-cased names.
    pub fields: Vec<(String, String)>,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
}

impl Response {
    /// The first value of field `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// Reads responses one after another from a connection.
pub struct Reader {
    /// The connection.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader of `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).expect("read from the mock");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Takes the next `\r\n`-terminated line, without its terminator.
    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..at].to_vec()).expect("a UTF-8 line");
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill(), "connection closed inside a line");
        }
    }

    fn take(&mut self, len: usize) -> Vec<u8> {
        while self.buf.len() < len {
            assert!(self.fill(), "connection closed inside a body");
        }
        self.buf.drain(..len).collect()
    }

    /// Reads the next response head and, for a chunked body, hands each chunk to `on_chunk`.
    pub fn response_with(&mut self, mut on_chunk: impl FnMut(&[u8])) -> Response {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut fields = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a field line");
            fields.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            fields,
            body: Vec::new(),
            chunked: false,
        };
        if let Some(len) = response.header("content-length") {
            response.body = self.take(len.parse().expect("a numeric Content-Length"));
        } else if response.header("transfer-encoding") == Some("chunked") {
            response.chunked = true;
            loop {
                let size = usize::from_str_radix(&self.line(), 16).expect("a hex chunk size");
                if size == 0 {
                    assert_eq!(self.line(), "", "no trailers");
                    break;
                }
                let chunk = self.take(size);
                on_chunk(&chunk);
                response.body.extend_from_slice(&chunk);
                assert_eq!(self.line(), "", "CRLF after chunk data");
            }
        } else {
            while self.fill() {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    /// Reads the next response.
    pub fn response(&mut self) -> Response {
        self.response_with(|_| {})
    }

    /// Whether the peer has closed (after everything before was read).
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }
}

/// A POST request with a JSON body and `extra_fields` (each ending in CRLF).
pub fn post(path: &str, extra_fields: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra_fields}\r\n{body}",
        body.len()
    )
}

/// Sends `request` on a new connection and reads one response.
pub fn exchange(mock: &Mock, request: &str) -> Response {
    let mut stream = mock.connect();
    stream.write_all(request.as_bytes()).unwrap();
    Reader::new(stream).response()
}

/// Sends signal `name` (INT, TERM, ...) to process `pid`, with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits for `child` to end and collects its output, killing it and failing the test once
/// `limit` has passed.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("poll a child").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not end within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect a child's output")
}

/// Reads lines from `stderr` until one contains `marker`, failing the test if the stream
/// ends first.
pub fn wait_for_line(stderr: &mut impl BufRead, marker: &str) -> String {
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        let read = stderr.read_line(&mut line).expect("read a child's stderr");
        assert!(read > 0, "the child ended before printing {marker:?}");
    }
    line
}

/// The JSON summary of a run that `signal` (INT or TERM) ended: checked for the exit status a
/// shell gives a process that signal ended, and for the summary's `interrupted` field.
pub fn interrupted_summary(output: &Output, signal: &str) -> Value {
    let status = match signal {
        "INT" => 130,
        "TERM" => 143,
        other => panic!("no exit status known for SIG{other}"),
    };
    assert_eq!(
        output.status.code(),
        Some(status),
        "the status for SIG{signal}"
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["interrupted"], format!("SIG{signal}"));
    summary
}
