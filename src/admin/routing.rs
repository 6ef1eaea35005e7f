//! The admin API's routes and added provider keys: list routes with their states, set a
//! route's lifecycle, add a provider key to an upstream and remove it again. The work is
//! [`crate::shard::ControlPlane`]'s; this maps bodies to it and its answers to JSON.

use serde_json::{json, Value};

use super::routes::Answer;
use super::AdminState;
use crate::accesslog::format_timestamp;
use crate::clients::{ClientsError, Definition};
use crate::config::Route;
use crate::quota::SECOND;
use crate::shard::ReloadError;

/// Answers `/admin/routes...`.
pub(super) fn routes(state: &AdminState, path: &[&str], method: &[u8], body: &[u8]) -> Answer {
    match (path, method) {
        ([], b"GET" | b"HEAD") => {
            let routes: Vec<Value> = state
                .plane
                .routes()
                .iter()
                .map(|(id, route, set)| route_json(id, route, *set))
                .collect();
            Answer::json(200, &json!({ "routes": routes }))
        }
        (["lifecycle"], b"POST") => {
            let mut body = match super::clients::object(body) {
                Ok(body) => body,
                Err(err) => return super::clients::failed(&err),
            };
            let Some(Value::String(id)) = body.remove("route") else {
                let message = "send the route's id as \"route\" (its path_prefix, after its \
                               host when it has one; GET /admin/routes lists them)";
                return Answer::error(400, "bad_request", message);
            };
            // `"state": null` hands the route back to the config file.
            let lifecycle = match body.get("state") {
                Some(Value::Null) if body.len() == 1 => None,
                _ => Some(body),
            };
            let back_to_file = lifecycle.is_none();
            match state.plane.set_route_lifecycle(&id, lifecycle) {
                Ok(route) => {
                    tracing::info!(route = %id, state = route.state.name(), back_to_file,
                        "route state changed by the admin API");
                    Answer::json(200, &route_json(&id, &route, !back_to_file))
                }
                Err(err) => failed(&err),
            }
        }
        ([] | ["lifecycle"], _) => super::routes::method_not_allowed(),
        _ => Answer::error(404, "not_found", "no such admin path"),
    }
}

/// Answers `POST /admin/upstreams/{name}/keys`: adds a provider key.
pub(super) fn add_provider_key(state: &AdminState, name: &str, body: &[u8]) -> Answer {
    let key: Definition = match super::clients::object(body) {
        Ok(key) => key,
        Err(err) => return super::clients::failed(&err),
    };
    let id = crate::overrides::definition_id(&key).to_owned();
    match state.plane.add_provider_key(name, key) {
        Ok(()) => {
            tracing::info!(upstream = %name, key = %id, "provider key added by the admin API");
            let pools = state.pools();
            let described = pools
                .iter()
                .find(|pool| &*pool.upstream == name)
                .and_then(|pool| Some((pool, pool.position(&id)?)))
                .map(|(pool, index)| super::routes::describe_key(pool, index, now()));
            Answer::json(201, &described.unwrap_or_else(|| json!({ "id": id })))
        }
        Err(err) => failed(&err),
    }
}

/// Answers `DELETE /admin/upstreams/{name}/keys/{id}`: removes a provider key the admin API
/// added.
pub(super) fn remove_provider_key(state: &AdminState, name: &str, id: &str) -> Answer {
    match state.plane.remove_provider_key(name, id) {
        Ok(()) => {
            tracing::info!(upstream = %name, key = %id, "provider key removed by the admin API");
            Answer::json(200, &json!({ "upstream": name, "id": id, "removed": true }))
        }
        Err(err) => failed(&err),
    }
}

fn now() -> u64 {
    crate::quota::Clock::default().now()
}

fn failed(err: &ReloadError) -> Answer {
    match err {
        ReloadError::Clients(err) => super::clients::failed(err),
        ReloadError::ShardLate(_) => super::clients::failed(&ClientsError::ShardLate(0)),
    }
}

fn route_json(id: &str, route: &Route, set_by_admin: bool) -> Value {
    let date = |secs: Option<u64>| {
        secs.map(|secs| {
            let ts = format_timestamp(secs.saturating_mul(SECOND));
            String::from_utf8_lossy(&ts).into_owned()
        })
    };
    json!({
        "route": id,
        "path_prefix": route.path_prefix,
        "host": route.host,
        "upstream": route.upstream,
        "state": route.state.name(),
        "deprecation": date(route.deprecation),
        "sunset": date(route.sunset),
        "deprecation_link": route.deprecation_link,
        "source": if set_by_admin { "admin" } else { "config" },
    })
}
