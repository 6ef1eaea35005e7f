//! What each admin path answers, and the admin token check.

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{metrics, AdminState};
use crate::http::{Method, RequestHead};
use crate::quota::{Clock, SECOND};
use crate::upstream::keys::DISABLED_BY_OPERATOR;
use crate::upstream::{KeyPool, KeyStatus};

/// The largest admin request body.
pub(super) const MAX_BODY: u64 = 64 * 1024;

/// A whole admin response.
pub(super) struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Set on a 401: how to authenticate.
    challenge: bool,
    /// Already logged where it was made, with its reason.
    pub(super) logged: bool,
}

impl Answer {
    pub(super) fn json(status: u16, value: &Value) -> Answer {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Answer {
            status,
            content_type: "application/json",
            body,
            challenge: false,
            logged: false,
        }
    }

    /// The status code.
    pub(super) fn status(&self) -> u16 {
        self.status
    }

    /// An error in the contract's JSON shape.
    pub(super) fn error(status: u16, code: &str, message: &str) -> Answer {
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        let mut answer = Answer::json(
            status,
            &json!({"error": {"message": message, "type": kind, "code": code}}),
        );
        answer.challenge = status == 401;
        answer
    }

    /// The response bytes, closing the connection.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if self.challenge {
            out.extend_from_slice(b"WWW-Authenticate: Bearer realm=\"keygate-admin\"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        500 => "Internal Server Error",
        201 => "Created",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers one admin request.
pub(super) fn answer(state: &AdminState, head: &RequestHead, body: &[u8]) -> Answer {
    let path = String::from_utf8_lossy(head.path_only());
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = head.method == Method::Get || head.method == Method::Head;
    let post = head.method == Method::Post;
    match segments.as_slice() {
        ["healthz"] if get => Answer::json(200, &json!({"status": "ok"})),
        ["readyz"] if get => match state.draining.load(std::sync::atomic::Ordering::Relaxed) {
            false => Answer::json(200, &json!({"status": "ready"})),
            true => Answer::json(503, &json!({"status": "draining"})),
        },
        ["metrics"] if get => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics::render(state, Clock::default().now()).into_bytes(),
            challenge: false,
            logged: false,
        },
        ["healthz"] | ["readyz"] | ["metrics"] => method_not_allowed(),
        ["admin", rest @ ..] => match authorize(state, head) {
            Err(answer) => answer,
            Ok(()) => match rest {
                ["keys", rest @ ..] => {
                    let query = head
                        .path()
                        .get(head.path_only().len() + 1..)
                        .unwrap_or_default();
                    let query = String::from_utf8_lossy(query);
                    super::clients::keys(state, rest, head.method_bytes(), &query, body)
                }
                ["tenants", rest @ ..] => {
                    super::clients::tenants(state, rest, head.method_bytes(), body)
                }
                ["routes", rest @ ..] => {
                    super::routing::routes(state, rest, head.method_bytes(), body)
                }
                ["upstreams", name, "keys"] if post => {
                    super::routing::add_provider_key(state, name, body)
                }
                ["upstreams", name, "keys", id] if head.method_bytes() == b"DELETE" => {
                    super::routing::remove_provider_key(state, name, id)
                }
                _ => admin(state, rest, get, post),
            },
        },
        _ => Answer::error(404, "not_found", "no such admin path"),
    }
}

pub(super) fn method_not_allowed() -> Answer {
    Answer::error(405, "method_not_allowed", "method not allowed here")
}

/// Checks the bearer token in constant time.
fn authorize(state: &AdminState, head: &RequestHead) -> Result<(), Answer> {
    let Some(token) = &state.token else {
        return Err(Answer::error(
            403,
            "forbidden",
            "the admin API is off: no admin token is configured (admin_token_env)",
        ));
    };
    let presented = head
        .header("authorization")
        .and_then(|value| {
            let (scheme, rest) = value.split_at(value.len().min(7));
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        })
        .unwrap_or_default();
    let equal = presented.len() == token.len() && bool::from(presented.ct_eq(token));
    if equal {
        Ok(())
    } else {
        Err(Answer::error(
            401,
            "invalid_api_key",
            "send the admin token as Authorization: Bearer TOKEN",
        ))
    }
}

fn admin(state: &AdminState, path: &[&str], get: bool, post: bool) -> Answer {
    match path {
        ["upstreams"] if get => {
            let now = Clock::default().now();
            let pools = state.pools();
            let upstreams: Vec<Value> = pools.iter().map(|p| describe(p, now)).collect();
            Answer::json(200, &json!({ "upstreams": upstreams }))
        }
        ["upstreams", name, "keys", id, action @ ("enable" | "disable")] if post => {
            let pools = state.pools();
            let Some(pool) = pools.iter().find(|p| &*p.upstream == *name) else {
                return Answer::error(404, "not_found", "no upstream with keys has that name");
            };
            let Some(index) = pool.position(id) else {
                return Answer::error(404, "not_found", "the upstream has no key with that id");
            };
            let changed = match *action {
                "enable" => pool.enable(index),
                _ => pool.disable(index),
            };
            tracing::info!(upstream = %pool.upstream, key = %id, action = %action, changed,
                "provider key changed by the admin API");
            let now = Clock::default().now();
            Answer::json(200, &describe_key(pool, index, now))
        }
        ["upstreams"]
        | ["upstreams", _, "keys"]
        | ["upstreams", _, "keys", _]
        | ["upstreams", _, "keys", _, "enable" | "disable"] => method_not_allowed(),
        _ => Answer::error(404, "not_found", "no such admin path"),
    }
}

/// An upstream's keys, for the admin API.
fn describe(pool: &KeyPool, now: u64) -> Value {
    let keys: Vec<Value> = (0..pool.keys().len())
        .map(|index| describe_key(pool, index, now))
        .collect();
    json!({ "name": &*pool.upstream, "keys": keys })
}

/// One key's id, state and counters: never its secret.
pub(super) fn describe_key(pool: &KeyPool, index: usize, now: u64) -> Value {
    let key = &pool.keys()[index];
    let (state, cooldown_ms, disabled_by) = match pool.status(index, now) {
        KeyStatus::Ready => ("ready", 0, Value::Null),
        KeyStatus::Cooling(until) => (
            "cooling",
            (until - now).div_ceil(SECOND / 1000),
            Value::Null,
        ),
        KeyStatus::Disabled(DISABLED_BY_OPERATOR) => ("disabled", 0, json!("operator")),
        KeyStatus::Disabled(status) => ("disabled", 0, json!(status)),
    };
    json!({
        "id": &*key.id,
        "state": state,
        "cooldown_ms": cooldown_ms,
        "disabled_by": disabled_by,
        "rpm": key.rpm_limit(),
        "tpm": key.tpm_limit(),
        "requests": key.sent(),
        "throttled": key.throttled(),
        "refused": key.refused(),
    })
}
