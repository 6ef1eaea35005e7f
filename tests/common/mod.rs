//! Test harness: the real `keygate` and `loadtest` binaries on 127.0.0.1, scripted raw
//! upstreams, and raw-bytes clients.

#![allow(dead_code)]

pub mod admin;
pub mod keys;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed when dropped, with its stderr lines collected.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `program args`, waiting for a stderr line containing `listening on ADDR`.
    pub fn start(program: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command.stderr(Stdio::piped()).env("NO_COLOR", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Process { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                panic!("{program:?} did not start: {:#?}", log.lock().unwrap());
            }
        }
    }

    /// The stderr lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// The directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_keygate"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// The `loadtest` binary, built on demand when `cargo test -p keygate` did not build it.
pub fn loadtest_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let path = bin_dir().join("loadtest");
    BUILD.call_once(|| {
        if !path.exists() {
            let release = bin_dir().ends_with("release");
            let mut command = Command::new(env!("CARGO"));
            command.args(["build", "-p", "loadtest"]);
            if release {
                command.arg("--release");
            }
            assert!(command.status().expect("cargo build -p loadtest").success());
        }
    });
    path
}

/// Starts the mock provider on a free port.
pub fn start_mock(extra: &[&str]) -> Process {
    let mut args = vec!["mock", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Process::start(&loadtest_bin(), &args, Path::new("."), &[])
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("keygate-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running gateway with the temporary directory that holds its config.
pub struct Gateway {
    pub process: Process,
    pub dir: TempDir,
}

impl Gateway {
    /// Starts `keygate run` on `config` (TOML text; `listen` should use port 0).
    pub fn start(config: &str) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new("gateway");
        let path = dir.0.join("keygate.toml");
        std::fs::write(&path, config).expect("write config");
        let keygate = PathBuf::from(env!("CARGO_BIN_EXE_keygate"));
        let process = Process::start(
            &keygate,
            &["run", "--config", path.to_str().expect("utf-8 path")],
            &dir.0,
            env,
        );
        Gateway { process, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// The admin address the gateway logged.
    pub fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.process.log_lines().iter().rev().find_map(|line| {
                let rest = &line[line.find("admin API on ")? + "admin API on ".len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no admin address in the log");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.0.join("keygate.toml")
    }

    /// Stops the gateway with SIGTERM (asserting a clean exit) and starts it again on the same
    /// directory and config file, with `env`.
    pub fn restart(mut self, env: &[(&str, &str)]) -> Gateway {
        self.process.signal("TERM");
        let status = self.process.wait_exit(Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        let keygate = PathBuf::from(env!("CARGO_BIN_EXE_keygate"));
        let path = self.config_path();
        let process = Process::start(
            &keygate,
            &["run", "--config", path.to_str().expect("utf-8 path")],
            &self.dir.0,
            env,
        );
        Gateway {
            process,
            dir: self.dir,
        }
    }

    /// Rewrites the config file and sends SIGHUP, then waits for the log to say how the reload
    /// ended; returns that line.
    pub fn reload(&self, config: &str) -> String {
        let before = self.process.log_lines().len();
        std::fs::write(self.config_path(), config).expect("write config");
        self.process.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.process.log_lines();
            let ended = lines[before..]
                .iter()
                .find(|line| line.contains("config reloaded") || line.contains("reload refused"));
            if let Some(line) = ended {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the reload never ended: {lines:#?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One admin API request: `method path` with the bearer `token` and an optional JSON body.
pub fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(addr, request.as_bytes())
}

/// A minimal config: `workers` shards in front of one upstream at `upstream`, route `/`.
pub fn basic_config(upstream: SocketAddr, workers: usize, extra_gateway: &str) -> String {
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n{extra_gateway}\n\n\
         [[upstream]]\nname = \"mock\"\nprovider = \"openai\"\nendpoints = [\"http://{upstream}\"]\n\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"mock\"\n"
    )
}

/// One HTTP response read off a connection.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as received, for checks of exact bytes.
    pub raw_head: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_text()))
    }
}

/// A client connection reading responses with their framing.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one response to a request whose method was HEAD when `head_request`.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        self.try_read_response(head_request).expect("a response")
    }

    /// Like `read_response`, but `None` when the connection closes first.
    pub fn try_read_response(&mut self, head_request: bool) -> Option<Response> {
        let (status, headers, head_len, raw_head) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = response.parse(&self.buf).expect("valid head")
            {
                let headers = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                let raw = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                break (response.code.expect("status"), headers, len, raw);
            }
            if !self.fill()? {
                return None;
            }
        };
        self.buf.drain(..head_len);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
        {
            Vec::new()
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()
        } else if let Some(length) = find("content-length") {
            let length: usize = length.parse().expect("numeric length");
            while self.buf.len() < length {
                assert!(self.fill().unwrap_or(false), "closed inside the body");
            }
            self.buf.drain(..length).collect()
        } else {
            while self.fill().unwrap_or(false) {}
            std::mem::take(&mut self.buf)
        };
        Some(Response {
            status,
            headers,
            body,
            raw_head,
        })
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut decoder = keygate::http::ChunkedDecoder::new();
        let mut body = Vec::new();
        loop {
            let mut pos = 0;
            while pos < self.buf.len() && !decoder.is_done() {
                let step = decoder
                    .decode(&self.buf[pos..])
                    .expect("valid chunked body");
                body.extend_from_slice(&self.buf[pos + step.data.start..pos + step.data.end]);
                pos += step.consumed;
            }
            self.buf.drain(..pos);
            if decoder.is_done() {
                return body;
            }
            assert!(self.fill().unwrap_or(false), "closed inside a chunked body");
        }
    }

    /// Reads more bytes; `Some(false)` on a clean close, `None` on a reset.
    fn fill(&mut self) -> Option<bool> {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => Some(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("read timed out")
            }
            Err(_) => None,
        }
    }

    /// Whether the peer closed the connection (reads EOF or reset within the timeout).
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        !matches!(self.fill(), Some(true))
    }
}

/// Sends `request` on a fresh connection and reads one response.
pub fn roundtrip(addr: SocketAddr, request: &[u8]) -> Response {
    let mut client = Client::connect(addr);
    client.send(request);
    client.read_response(request.starts_with(b"HEAD "))
}

/// A scripted upstream: each accepted connection is handed to `handler` on its own thread.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    probes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where `ScriptedUpstream::settled_connections` connects from, to be told apart.
const PROBE_IP: [u8; 4] = [127, 0, 0, 2];

impl ScriptedUpstream {
    pub fn start<F>(handler: F) -> ScriptedUpstream
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        ScriptedUpstream::start_on("127.0.0.1:0".parse().unwrap(), handler)
    }

    /// Like `start`, on a given address (to bring an endpoint back on the port it had).
    pub fn start_on<F>(addr: SocketAddr, handler: F) -> ScriptedUpstream
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind(addr).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, probed) = (Arc::clone(&connections), Arc::clone(&probes));
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if stream
                    .peer_addr()
                    .is_ok_and(|peer| peer.ip() == std::net::IpAddr::from(PROBE_IP))
                {
                    probed.fetch_add(1, SeqCst);
                    continue;
                }
                let n = counter.fetch_add(1, SeqCst);
                let handler = Arc::clone(&handler);
                thread::spawn(move || handler(stream, n));
            }
        });
        ScriptedUpstream {
            addr,
            connections,
            probes,
        }
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections made so far, counting those the kernel completed but the accept loop has
    /// not taken yet: a probe connection (not counted, not handled) is made, and since
    /// connections are accepted in order, every earlier one is counted once the probe is seen.
    pub fn settled_connections(&self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        let before = self.probes.load(SeqCst);
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        probe
            .bind(&SocketAddr::from((PROBE_IP, 0)).into())
            .expect("bind the probe");
        probe.connect(&self.addr.into()).expect("connect the probe");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.probes.load(SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "the probe connection was not accepted"
            );
            thread::sleep(Duration::from_millis(1));
        }
        self.connection_count()
    }
}

/// Reads one request head (and a Content-Length body) from a scripted upstream's socket.
/// Returns the head text and the body, or `None` at EOF.
pub fn read_request(stream: &mut TcpStream, carry: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&carry[..end + 4]).into_owned();
            carry.drain(..end + 4);
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            while carry.len() < length {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => carry.extend_from_slice(&chunk[..n]),
                }
            }
            let body = carry.drain(..length).collect();
            return Some((head, body));
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => carry.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A request as a scripted upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The head as received, up to and including the empty line.
    pub head: String,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// The body bytes as received, framing included.
    pub raw_body: Vec<u8>,
}

impl Seen {
    /// The request target of the request line.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of the field `name` (compared without case), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        head_values(&self.head, name)
    }

    /// Whether any field is called `name` (compared without case).
    pub fn has(&self, name: &str) -> bool {
        !self.values(name).is_empty()
    }
}

/// Every value of the field `name` in a head's text, compared without case.
pub fn head_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// Reads one request with either framing from a scripted upstream's socket; `None` at EOF
/// or when the connection breaks first.
pub fn read_seen(stream: &mut TcpStream, carry: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(end) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        fill_from(stream, carry)?;
    };
    let head = String::from_utf8_lossy(&carry[..head_end]).into_owned();
    carry.drain(..head_end);
    let chunked = head_values(&head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut decoder = keygate::http::ChunkedDecoder::new();
        let (mut body, mut pos) = (Vec::new(), 0);
        loop {
            while pos < carry.len() && !decoder.is_done() {
                let step = decoder.decode(&carry[pos..]).ok()?;
                body.extend_from_slice(&carry[pos + step.data.start..pos + step.data.end]);
                pos += step.consumed;
            }
            if decoder.is_done() {
                let raw_body = carry.drain(..pos).collect();
                return Some(Seen {
                    head,
                    body,
                    raw_body,
                });
            }
            fill_from(stream, carry)?;
        }
    }
    let length = head_values(&head, "content-length")
        .first()
        .map_or(0, |v| v.parse().expect("length"));
    while carry.len() < length {
        fill_from(stream, carry)?;
    }
    let body: Vec<u8> = carry.drain(..length).collect();
    Some(Seen {
        head,
        raw_body: body.clone(),
        body,
    })
}

fn fill_from(stream: &mut TcpStream, carry: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            carry.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// An upstream that records every request and answers each on a keep-alive connection with
/// 200 and the body `TAG PATH`.
pub struct Echo {
    pub upstream: ScriptedUpstream,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Echo {
    pub fn start(tag: &'static str) -> Echo {
        Echo::start_on(tag, "127.0.0.1:0".parse().unwrap())
    }

    /// Like `start`, on a given address.
    pub fn start_on(tag: &'static str, addr: SocketAddr) -> Echo {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let upstream = ScriptedUpstream::start_on(addr, move |mut stream, _| {
            let mut carry = Vec::new();
            while let Some(request) = read_seen(&mut stream, &mut carry) {
                let body = format!("{tag} {}", request.target());
                record.lock().unwrap().push(request);
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Echo { upstream, seen }
    }

    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request received so far.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected one request upstream: {seen:#?}");
        seen.into_iter().next().unwrap()
    }
}

/// A `[gateway]` table listening on 127.0.0.1 port 0 with `workers` shards, using the
/// repository's `tuning/local.toml` (shards unpinned, as many gateways run at once).
pub fn gateway_section(workers: usize, extra: &str) -> String {
    let tuning = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/local.toml");
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\ntuning = {:?}\n{extra}\n\n",
        tuning.display().to_string()
    )
}

/// An `[[upstream]]` table of provider `http` with `endpoints` and `extra` keys.
pub fn upstream_section(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"http://{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[upstream]]\nname = \"{name}\"\nprovider = \"http\"\nendpoints = [{list}]\n{extra}\n\n"
    )
}

/// A `[[route]]` table.
pub fn route_section(prefix: &str, host: Option<&str>, upstream: &str) -> String {
    let host = host
        .map(|h| format!("host = \"{h}\"\n"))
        .unwrap_or_default();
    format!("[[route]]\npath_prefix = \"{prefix}\"\n{host}upstream = \"{upstream}\"\n\n")
}

/// Asserts `response` is a gateway error with the contract's JSON body and `code`.
pub fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "{}{}",
        response.raw_head,
        response.body_text()
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{}",
        response.raw_head
    );
    let json = response.json();
    let error = &json["error"];
    assert_eq!(error["code"], code, "{json}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert!(
        error["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{json}"
    );
}

/// An address on 127.0.0.1 where nothing listens (a port just released).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Reads from `stream` onto `buf` until `buf` holds `needle`; false when the peer closes
/// first. The stream's read timeout applies to each read.
pub fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    while !buf.windows(needle.len()).any(|w| w == needle) {
        if fill_from(stream, buf).is_none() {
            return false;
        }
    }
    true
}

/// Starts a gateway with one shard in front of an `Echo` upstream on route `/`.
pub fn echo_gateway(gateway_extra: &str, upstream_extra: &str) -> (Echo, Gateway) {
    let echo = Echo::start("echo");
    let config = gateway_section(1, gateway_extra)
        + &upstream_section("echo", &[echo.addr()], upstream_extra)
        + &route_section("/", None, "echo");
    (echo, Gateway::start(&config))
}
