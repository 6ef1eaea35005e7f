//! The admin API's client keys and tenants: list, create, change, revoke, rotate, show live
//! usage, reset counters. The work is [`crate::clients::Clients`]'s; this maps paths and
//! bodies to it and its answers and errors to JSON.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::routes::Answer;
use super::AdminState;
use crate::accesslog::format_timestamp;
use crate::clients::{ClientsError, Definition, KeyUsage, KeyView};
use crate::config::{parse_duration, Limits};
use crate::quota::{Clock, Counters, Window, SECOND};

/// What an answer holding a new secret says of it.
const SHOWN_ONCE: &str = "the secret is shown this once; keygate keeps only its SHA-256";

/// Keys listed per page unless `limit` says otherwise, and the most a page holds.
const PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

/// Answers `/admin/keys...`.
pub(super) fn keys(
    state: &AdminState,
    path: &[&str],
    method: &[u8],
    query: &str,
    body: &[u8],
) -> Answer {
    let clients = &state.clients;
    let answer = match (path, method) {
        ([], b"GET" | b"HEAD") => {
            let (offset, limit) = match page(query) {
                Ok(page) => page,
                Err(answer) => return answer,
            };
            let (page, total) = clients.keys(offset, limit);
            let keys: Vec<Value> = page.iter().map(|(id, view)| key_json(id, view)).collect();
            let next = (offset + keys.len() < total).then_some(offset + keys.len());
            Ok(Answer::json(
                200,
                &json!({"keys": keys, "total": total, "next_offset": next}),
            ))
        }
        ([], b"POST") => object(body).and_then(|mut definition| {
            let Some(Value::String(id)) = definition.remove("id") else {
                return Ok(Answer::error(
                    400,
                    "bad_request",
                    "send the new key's \"id\"",
                ));
            };
            let (secret, view) = clients.create_key(&id, definition)?;
            tracing::info!(key_id = %id, "client key created by the admin API");
            let mut answer = key_json(&id, &view);
            if let Some(secret) = secret {
                answer["secret"] = secret.into();
                answer["note"] = SHOWN_ONCE.into();
            }
            Ok(Answer::json(201, &answer))
        }),
        ([id], b"GET" | b"HEAD") => clients
            .usage(id)
            .map(|usage| Answer::json(200, &usage_json(id, &usage))),
        ([id], b"PATCH") => object(body).and_then(|patch| {
            let view = clients.update_key(id, &patch)?;
            tracing::info!(key_id = %id, "client key changed by the admin API");
            Ok(Answer::json(200, &key_json(id, &view)))
        }),
        ([id], b"DELETE") => clients.revoke_key(id).map(|view| {
            tracing::info!(key_id = %id, "client key revoked by the admin API");
            Answer::json(200, &key_json(id, &view))
        }),
        ([id, "rotate"], b"POST") => object_or_empty(body).and_then(|options| {
            let grace = match options.get("grace") {
                None => Duration::ZERO,
                Some(Value::String(text)) => match parse_duration(text) {
                    Ok(grace) => grace,
                    Err(err) => {
                        let message = format!("grace: {err}");
                        return Ok(Answer::error(400, "bad_request", &message));
                    }
                },
                Some(_) => {
                    return Ok(Answer::error(
                        400,
                        "bad_request",
                        "grace is a duration like \"1h\"",
                    ))
                }
            };
            let (secret, view) = clients.rotate_key(id, grace)?;
            let grace_s = grace.as_secs();
            tracing::info!(key_id = %id, grace_s, "client key rotated by the admin API");
            let mut answer = key_json(id, &view);
            answer["secret"] = secret.into();
            answer["note"] = SHOWN_ONCE.into();
            Ok(Answer::json(200, &answer))
        }),
        ([id, "reset"], b"POST") => clients
            .reset_key(id)
            .map(|usage| Answer::json(200, &usage_json(id, &usage))),
        ([] | [_] | [_, "rotate" | "reset"], _) => Ok(method_not_allowed()),
        _ => Ok(Answer::error(404, "not_found", "no such admin path")),
    };
    answer.unwrap_or_else(|err| failed(&err))
}

/// Answers `/admin/tenants...`.
pub(super) fn tenants(state: &AdminState, path: &[&str], method: &[u8], body: &[u8]) -> Answer {
    let clients = &state.clients;
    let answer = match (path, method) {
        ([], b"GET" | b"HEAD") => {
            let tenants: Vec<Value> = clients
                .tenants()
                .into_iter()
                .map(|(name, definition, source, deleted)| {
                    tenant_json(&name, definition, source, deleted)
                })
                .collect();
            Ok(Answer::json(200, &json!({ "tenants": tenants })))
        }
        ([], b"POST") => object(body).and_then(|mut definition| {
            let Some(Value::String(name)) = definition.remove("name") else {
                return Ok(Answer::error(
                    400,
                    "bad_request",
                    "send the new tenant's \"name\"",
                ));
            };
            let definition = clients.put_tenant(&name, &definition, true)?;
            tracing::info!(tenant = %name, "tenant created by the admin API");
            Ok(Answer::json(
                201,
                &tenant_json(&name, definition, "admin", false),
            ))
        }),
        ([name], b"GET" | b"HEAD") => {
            let found = clients.tenants().into_iter().find(|(n, ..)| n == name);
            match found {
                Some((name, definition, source, deleted)) => Ok(Answer::json(
                    200,
                    &tenant_json(&name, definition, source, deleted),
                )),
                None => Err(ClientsError::NoTenant((*name).to_owned())),
            }
        }
        ([name], b"PATCH") => object(body).and_then(|patch| {
            clients.put_tenant(name, &patch, false)?;
            tracing::info!(tenant = %name, "tenant changed by the admin API");
            let found = clients.tenants().into_iter().find(|(n, ..)| n == name);
            let (name, definition, source, deleted) =
                found.ok_or_else(|| ClientsError::NoTenant((*name).to_owned()))?;
            Ok(Answer::json(
                200,
                &tenant_json(&name, definition, source, deleted),
            ))
        }),
        ([name], b"DELETE") => clients.delete_tenant(name).map(|()| {
            tracing::info!(tenant = %name, "tenant deleted by the admin API");
            Answer::json(200, &json!({"name": name, "deleted": true}))
        }),
        ([name, "reset"], b"POST") => clients.reset_tenant(name).map(|usage| {
            let in_flight = usage.key.in_flight;
            Answer::json(
                200,
                &json!({"name": name, "reset": true, "in_flight": in_flight}),
            )
        }),
        ([] | [_] | [_, "reset"], _) => Ok(method_not_allowed()),
        _ => Ok(Answer::error(404, "not_found", "no such admin path")),
    };
    answer.unwrap_or_else(|err| failed(&err))
}

fn method_not_allowed() -> Answer {
    Answer::error(405, "method_not_allowed", "method not allowed here")
}

/// The answer for a refused or failed change, logged.
pub(super) fn failed(err: &ClientsError) -> Answer {
    let (status, code) = match err {
        ClientsError::Invalid(_) => (400, "bad_request"),
        ClientsError::NoKey(_) | ClientsError::NoTenant(_) | ClientsError::NotFound { .. } => {
            (404, "not_found")
        }
        ClientsError::Conflict(_) => (409, "conflict"),
        ClientsError::Save { .. } | ClientsError::Random(_) => (500, "internal_error"),
        ClientsError::ShardLate(_) => (503, "shard_unavailable"),
    };
    match status {
        500.. => tracing::error!(error = %err, "admin change failed"),
        _ => tracing::info!(error = %err, status, "admin change refused"),
    }
    let mut answer = Answer::error(status, code, &err.to_string());
    answer.logged = true;
    answer
}

/// A JSON object body.
pub(super) fn object(body: &[u8]) -> Result<Definition, ClientsError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the body must be a JSON object")),
        Err(err) => Err(invalid(&format!("the body is not JSON: {err}"))),
    }
}

fn object_or_empty(body: &[u8]) -> Result<Definition, ClientsError> {
    match body.iter().all(u8::is_ascii_whitespace) {
        true => Ok(Map::new()),
        false => object(body),
    }
}

fn invalid(message: &str) -> ClientsError {
    ClientsError::Invalid(crate::clients::Invalid(vec![message.to_owned()]))
}

/// `offset` and `limit` from a query string.
fn page(query: &str) -> Result<(usize, usize), Answer> {
    let (mut offset, mut limit) = (0, PAGE);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = value.parse::<usize>().map_err(|_| {
            Answer::error(
                400,
                "bad_request",
                &format!("{name} must be a whole number"),
            )
        })?;
        match name {
            "offset" => offset = number,
            "limit" => limit = number.clamp(1, MAX_PAGE),
            _ => {
                let message = format!("unknown query parameter {name:?}; use offset and limit");
                return Err(Answer::error(400, "bad_request", &message));
            }
        }
    }
    Ok((offset, limit))
}

fn timestamp(ns: u64) -> String {
    String::from_utf8_lossy(&format_timestamp(ns)).into_owned()
}

fn key_json(id: &str, view: &KeyView) -> Value {
    let mut limits = view.definition.clone();
    let tenant = limits.remove("tenant");
    let mut out = json!({
        "id": id,
        "tenant": tenant,
        "source": view.source,
        "revoked": view.revoked,
        "limits": limits,
    });
    if let Some(until) = view.previous_until {
        out["previous_secret_valid_until"] = timestamp(until).into();
    }
    out
}

fn tenant_json(name: &str, definition: Definition, source: &str, deleted: bool) -> Value {
    json!({"name": name, "source": source, "deleted": deleted, "limits": definition})
}

/// A key with what it has used and has left of each limit, and its tenant's.
fn usage_json(id: &str, usage: &KeyUsage) -> Value {
    let now = Clock::default().now();
    let key = usage.table.key(usage.view.index);
    let mut out = key_json(id, &usage.view);
    out["usage"] = budgets_json(&usage.usage.key, &key.limits, now);
    if let (Some(index), Some(counters)) = (key.tenant, &usage.usage.tenant) {
        let tenant = usage.table.tenant(index);
        out["tenant_usage"] = budgets_json(counters, &tenant.limits, now);
    }
    out
}

fn budgets_json(counters: &Counters, limits: &Limits, now: u64) -> Value {
    let mut budgets: Vec<Value> = counters
        .budgets(limits, now)
        .chain(counters.tokens_budget(limits, now))
        .map(|budget| {
            json!({
                "name": budget.name,
                "limit": budget.limit,
                "remaining": budget.remaining,
                "reset_ms": budget.reset.div_ceil(SECOND / 1000),
            })
        })
        .collect();
    if let Some(per_day) = limits.tokens_per_day {
        let used = counters.tokens_today(now);
        budgets.push(json!({
            "name": "tokens_day",
            "limit": per_day,
            "remaining": per_day.saturating_sub(used),
            "reset_ms": Window::Day.bounds(now).1.saturating_sub(now) / (SECOND / 1000),
        }));
    }
    json!({
        "in_flight": counters.in_flight,
        "max_concurrent": limits.max_concurrent,
        "budgets": budgets,
    })
}
