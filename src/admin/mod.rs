//! The admin listener on `admin_listen`: health, readiness, Prometheus metrics, and the admin
//! API behind the admin token.
//!
//! It is the control plane, off the request path: plain blocking sockets on threads of its
//! own, one request per connection, a few connections at once. What it shows, shards hand
//! over once a second or keep in atomics; what it changes goes to every shard as a message
//! or a new immutable snapshot ([`crate::clients`], [`crate::shard::ControlPlane`]), and is
//! answered once every shard uses it. An admin call never waits on a request, nor a request
//! on it. docs/admin.md describes every path; in short:
//!
//! | method | path | auth | answer |
//! | --- | --- | --- | --- |
//! | GET | `/healthz` | none | 200 while the process runs |
//! | GET | `/readyz` | none | 200 while serving, 503 once draining |
//! | GET | `/metrics` | none | Prometheus text |
//! | GET | `/admin/upstreams` | token | every upstream's provider keys and their states |
//! | POST | `/admin/upstreams/{name}/keys/{id}/enable` | token | puts the key back in use |
//! | POST | `/admin/upstreams/{name}/keys/{id}/disable` | token | takes the key out of use |
//! | POST | `/admin/upstreams/{name}/keys` | token | adds a provider key |
//! | GET, POST | `/admin/keys` | token | lists client keys; creates one (its secret shown once) |
//! | GET, PATCH, DELETE | `/admin/keys/{id}` | token | usage and limits; change; revoke |
//! | POST | `/admin/keys/{id}/rotate`, `/reset` | token | new secret with a grace; clear counters |
//! | GET, POST | `/admin/tenants` | token | lists tenants; creates one |
//! | GET, PATCH, DELETE | `/admin/tenants/{name}` | token | show; change; delete |
//! | POST | `/admin/tenants/{name}/reset` | token | clears the tenant's counters |
//! | GET | `/admin/routes` | token | routes and their states |
//! | POST | `/admin/routes/lifecycle` | token | publishes, deprecates or retires a route |

mod clients;
mod metrics;
mod routes;
mod routing;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;

use crate::http::RequestHead;
use crate::upstream::KeyPool;

/// The largest admin request head.
const MAX_HEAD: usize = 16 * 1024;

/// Admin connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 16;

/// How long an admin client may take to send its request, or to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin listener shows and changes.
pub struct AdminState {
    /// Provider key pools, each named by its upstream; a reload may replace them.
    pub pools: crate::upstream::Pools,
    /// The bearer token `/admin/*` needs; `None` turns `/admin/*` off.
    pub token: Option<Box<[u8]>>,
    /// Set once the gateway drains: `/readyz` says 503 from then on.
    pub draining: AtomicBool,
    /// The access log's counters, when one is kept.
    pub access_log: Option<Arc<crate::accesslog::Stats>>,
    /// Each shard's published request metrics.
    pub shards: Vec<Arc<std::sync::Mutex<crate::metrics::Counts>>>,
    /// Route labels (`path_prefix`) and upstream names by metric slot; a reload adds to them.
    pub labels: crate::metrics::SharedLabels,
    /// Routes, upstreams and reloads, for the admin API's route states and provider keys.
    pub plane: Arc<crate::shard::ControlPlane>,
    /// The client keys and tenants, for the admin API to list and change, and for metrics to
    /// name key and tenant positions by (see `metrics::key_names`).
    pub clients: Arc<crate::clients::Clients>,
}

impl AdminState {
    /// The provider key pools in use now.
    pub fn pools(&self) -> Vec<Arc<KeyPool>> {
        crate::upstream::persist::current(&self.pools)
    }
}

/// The running admin listener.
pub struct Admin {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Listens on `addr` and serves `state` on a thread of its own.
    pub fn start(addr: SocketAddr, state: Arc<AdminState>) -> io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("keygate-admin".into())
            .spawn(move || accept_loop(&listener, &state, &stopping))?;
        Ok(Admin {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting; requests being answered finish on their own threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The accept loop wakes for a connection; make one.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<AdminState>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "admin listener: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let answer = routes::Answer::error(503, "busy", "too many admin connections");
            let _ = stream.write_all(&answer.encode());
            continue;
        }
        let (state, active) = (Arc::clone(state), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("keygate-admin-conn".into())
            .spawn(move || {
                serve(stream, &state);
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "admin listener: cannot start a connection thread");
        }
    }
}

/// Answers the one request of a connection, then closes it.
fn serve(mut stream: TcpStream, state: &AdminState) {
    let (answer, head) = match read_request(&mut stream) {
        Ok(Some((head, body))) => (routes::answer(state, &head, &body), Some(head)),
        Ok(None) => return,
        Err((answer, head)) => (answer, head.map(|head| *head)),
    };
    if (400..500).contains(&answer.status()) && !answer.logged {
        // A refused admin request is worth a line: a wrong token may be someone guessing.
        // The path without its query; never a header (the token is in one).
        let (method, path) = head.as_ref().map_or((&b""[..], &b""[..]), |head| {
            (head.method_bytes(), head.path_only())
        });
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_owned(), |peer| peer.to_string());
        tracing::info!(
            status = answer.status(),
            method = %String::from_utf8_lossy(method),
            path = %String::from_utf8_lossy(path),
            %peer,
            "admin request refused"
        );
    }
    let head_only = head.is_some_and(|head| head.method == crate::http::Method::Head);
    let mut bytes = answer.encode();
    if head_only {
        // RFC 9110 section 9.3.2: the fields a GET would have, without its content.
        let end = memchr::memmem::find(&bytes, b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
        bytes.truncate(end);
    }
    if let Err(err) = stream.write_all(&bytes) {
        tracing::debug!(error = %err, "admin answer not delivered");
    }
}

/// Why a request could not be read whole: the answer, and the head when it was read.
type Unread = (routes::Answer, Option<Box<RequestHead>>);

/// Reads a request head and a small body. `Ok(None)`: the client left without a request.
fn read_request(stream: &mut TcpStream) -> Result<Option<(RequestHead, Vec<u8>)>, Unread> {
    // IO_TIMEOUT bounds the whole request, not each read: a client trickling bytes cannot
    // hold one of the few admin connections.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let read = |stream: &mut TcpStream, chunk: &mut [u8]| -> io::Result<usize> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        stream.read(chunk)
    };
    let mut buf = BytesMut::with_capacity(4096);
    let mut fields = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        match RequestHead::parse(&mut buf, MAX_HEAD, &mut fields) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(err) => {
                let answer = routes::Answer::error(400, "bad_request", &err.to_string());
                return Err((answer, None));
            }
        }
        match read(stream, &mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => {
                let answer = routes::Answer::error(400, "bad_request", "incomplete request");
                return Err((answer, None));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Ok(None),
        }
    };
    let length = match head.framing {
        crate::http::Framing::Empty => 0,
        crate::http::Framing::Length(length) if length <= routes::MAX_BODY => length as usize,
        crate::http::Framing::Length(_) => {
            let answer = routes::Answer::error(413, "request_too_large", "admin bodies are small");
            return Err((answer, Some(Box::new(head))));
        }
        _ => {
            let message = "send admin bodies with Content-Length";
            return Err((
                routes::Answer::error(400, "bad_request", message),
                Some(Box::new(head)),
            ));
        }
    };
    while buf.len() < length {
        match read(stream, &mut chunk) {
            Ok(0) => {
                let message = "the body ended before its Content-Length";
                return Err((
                    routes::Answer::error(400, "bad_request", message),
                    Some(Box::new(head)),
                ));
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let message = "the body did not arrive within 5 s";
                let answer = routes::Answer::error(408, "request_timeout", message);
                return Err((answer, Some(Box::new(head))));
            }
            Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(Some((head, buf[..length].to_vec())))
}
