//! SIGHUP with the real binary: the reloaded config is in effect on every shard, no
//! connection or request is dropped while it happens, an invalid config is refused, and the
//! admin API's changes are kept on top of the file.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

const TOKEN: &str = "admin-token-for-reload-tests-0123";
const ENV: &[(&str, &str)] = &[("KEYGATE_TEST_ADMIN_TOKEN", TOKEN)];

/// Two shards, an admin listener, `echo` behind `routes` (prefix, upstream "echo"), and
/// `rest` (more tables) after them.
fn config(echo: SocketAddr, gateway_extra: &str, routes: &[&str], rest: &str) -> String {
    let routes: String = routes
        .iter()
        .map(|prefix| route_section(prefix, None, "echo"))
        .collect();
    format!(
        "{}{}{routes}{rest}",
        gateway_section(
            2,
            &format!(
                "admin_listen = \"127.0.0.1:0\"\n\
                 admin_token_env = \"KEYGATE_TEST_ADMIN_TOKEN\"\n{gateway_extra}"
            )
        ),
        upstream_section("echo", &[echo], ""),
    )
}

const KEY_A: &str = "[[client_key]]\nid = \"a\"\nsecret = \"kg-reload-a\"\n\n";
const KEY_B: &str = "[[client_key]]\nid = \"b\"\nsecret = \"kg-reload-b\"\n\n";

fn get(gateway: &Gateway, path: &str, secret: &str) -> Response {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {secret}\r\n\r\n");
    roundtrip(gateway.addr(), request.as_bytes())
}

#[test]
fn a_reload_under_load_fails_no_request_and_drops_no_connection() {
    let echo = Echo::start("up");
    let first = config(echo.addr(), "", &["/v1/"], KEY_A);
    let gateway = Gateway::start_with_env(&first, ENV);
    let addr = gateway.addr();
    let stop = Arc::new(AtomicBool::new(false));

    // Four keep-alive connections and one that reconnects for every request, all busy while
    // the config is reloaded again and again.
    let mut workers = Vec::new();
    for worker in 0..5 {
        let stop = Arc::clone(&stop);
        workers.push(thread::spawn(move || {
            let request =
                b"GET /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-reload-a\r\n\r\n";
            let mut answered = Vec::new();
            let mut client = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                if worker == 4 {
                    client = Client::connect(addr);
                }
                client.send(request);
                match client.try_read_response(false) {
                    Some(response) => answered.push(response.status),
                    None => panic!("worker {worker}: the connection closed under a reload"),
                }
            }
            answered
        }));
    }
    let second = config(
        echo.addr(),
        "max_body_bytes = 2048\n",
        &["/v1/", "/v2/"],
        &format!("{KEY_A}{KEY_B}"),
    );
    for round in 0..6 {
        let text = if round % 2 == 0 { &second } else { &first };
        let line = gateway.reload(text);
        assert!(line.contains("config reloaded"), "{line}");
        thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let statuses = worker.join().expect("worker");
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        total += statuses.len();
    }
    assert!(total >= 5, "only {total} requests were made");
    // The last reload (the first config) is what is in effect: no /v2/, no key b.
    assert_error(&get(&gateway, "/v2/x", "kg-reload-a"), 404, "not_found");
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-b"),
        401,
        "invalid_api_key",
    );
}

#[test]
fn a_reload_changes_routes_keys_and_limits_on_every_shard() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), "", &["/v1/"], KEY_A), ENV);
    assert_error(&get(&gateway, "/v2/x", "kg-reload-a"), 404, "not_found");

    let limited =
        "[[client_key]]\nid = \"a\"\nsecret = \"kg-reload-a\"\nquota = { per_day = 2 }\n\n";
    let line = gateway.reload(&config(
        echo.addr(),
        "max_body_bytes = 16\nworkers_note = 1\n",
        &["/v1/"],
        limited,
    ));
    assert!(
        line.contains("reload refused"),
        "an unknown key must be refused: {line}"
    );

    let line = gateway.reload(&config(
        echo.addr(),
        "max_body_bytes = 16\n",
        &["/v1/", "/v2/"],
        &format!("{limited}{KEY_B}"),
    ));
    assert!(line.contains("config reloaded"), "{line}");
    // Fresh connections land on both shards: each sees the new routes, keys and limits.
    for _ in 0..2 {
        assert_eq!(get(&gateway, "/v2/x", "kg-reload-b").status, 200);
    }
    let statuses: Vec<u16> = (0..3)
        .map(|_| get(&gateway, "/v1/x", "kg-reload-a").status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    let body = "x".repeat(17);
    let request = format!(
        "POST /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-reload-b\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_error(
        &roundtrip(gateway.addr(), request.as_bytes()),
        413,
        "request_too_large",
    );

    // A key gone from the file is refused; so is its route.
    let line = gateway.reload(&config(echo.addr(), "", &["/v1/"], KEY_A));
    assert!(line.contains("config reloaded"), "{line}");
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-b"),
        401,
        "invalid_api_key",
    );
    assert_error(&get(&gateway, "/v2/x", "kg-reload-a"), 404, "not_found");
}

#[test]
fn settings_that_take_a_restart_are_named_and_the_rest_applies() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), "", &["/v1/"], KEY_A), ENV);
    let line = gateway.reload(&config(
        echo.addr(),
        "drain_timeout = \"9s\"\n",
        &["/v1/", "/v2/"],
        KEY_A,
    ));
    assert!(
        line.contains("config reloaded") && line.contains("gateway.drain_timeout"),
        "{line}"
    );
    assert_eq!(get(&gateway, "/v2/x", "kg-reload-a").status, 200);
    // Back to the value the process runs with: nothing is waiting for a restart.
    let line = gateway.reload(&config(echo.addr(), "", &["/v1/"], KEY_A));
    assert!(
        line.contains("config reloaded") && !line.contains("restart"),
        "{line}"
    );
}

#[test]
fn admin_changes_stay_on_top_of_the_reloaded_file() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(
        &config(echo.addr(), "", &["/v1/"], &format!("{KEY_A}{KEY_B}")),
        ENV,
    );
    let admin = gateway.admin_addr();
    let call = |method: &str, path: &str, body: Option<&str>| {
        admin_call(admin, method, path, Some(TOKEN), body)
    };
    assert_eq!(
        call("PATCH", "/admin/keys/a", Some(r#"{"quota":{"per_day":3}}"#)).status,
        200
    );
    assert_eq!(call("DELETE", "/admin/keys/b", None).status, 200);
    let created = call("POST", "/admin/keys", Some(r#"{"id":"c"}"#)).json();
    let secret_c = created["secret"].as_str().expect("secret").to_owned();

    // The file now gives key a a concurrency cap and still defines b.
    let a_capped = "[[client_key]]\nid = \"a\"\nsecret = \"kg-reload-a\"\nmax_concurrent = 7\n\n";
    let line = gateway.reload(&config(
        echo.addr(),
        "",
        &["/v1/"],
        &format!("{a_capped}{KEY_B}"),
    ));
    assert!(line.contains("config reloaded"), "{line}");
    let a = call("GET", "/admin/keys/a", None).json();
    assert_eq!(a["limits"]["quota"]["per_day"], 3, "{a}");
    assert_eq!(a["limits"]["max_concurrent"], 7, "{a}");
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&gateway, "/v1/x", "kg-reload-a").status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-b"),
        401,
        "invalid_api_key",
    );
    assert_eq!(get(&gateway, "/v1/x", &secret_c).status, 200);
}

#[test]
fn a_reload_the_admin_changes_do_not_fit_is_refused_whole() {
    let echo = Echo::start("up");
    let tenant = "[[tenant]]\nname = \"acme\"\n\n";
    let gateway = Gateway::start_with_env(&config(echo.addr(), "", &["/v1/"], tenant), ENV);
    let admin = gateway.admin_addr();
    let created = admin_call(
        admin,
        "POST",
        "/admin/keys",
        Some(TOKEN),
        Some(r#"{"id":"in-acme","tenant":"acme"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body_text());
    let secret = created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();

    // Without tenant acme the API's key cannot stand: the reload is refused, with the reason,
    // and nothing changes (not even the new route).
    let line = gateway.reload(&config(echo.addr(), "", &["/v1/", "/v2/"], ""));
    assert!(
        line.contains("reload refused") && line.contains("in-acme"),
        "{line}"
    );
    assert_eq!(get(&gateway, "/v1/x", &secret).status, 200);
    assert_error(&get(&gateway, "/v2/x", &secret), 404, "not_found");

    // A file that does not parse is refused with its FILE:LINE:COL.
    let line = gateway.reload("[gateway\nlisten = 1\n");
    assert!(
        line.contains("reload refused") && line.contains("keygate.toml:1:"),
        "{line}"
    );
    assert_eq!(get(&gateway, "/v1/x", &secret).status, 200);
}

#[test]
fn a_reload_without_client_keys_keeps_the_gateway_closed() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), "", &["/v1/"], KEY_A), ENV);
    let line = gateway.reload(&config(echo.addr(), "", &["/v1/"], ""));
    assert!(line.contains("config reloaded"), "{line}");
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-a"),
        401,
        "invalid_api_key",
    );
    let bare = roundtrip(gateway.addr(), b"GET /v1/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_error(&bare, 401, "invalid_api_key");
    assert!(echo.seen().is_empty());
}

#[test]
fn a_reload_that_moves_a_key_to_another_tenant_is_refused() {
    let echo = Echo::start("up");
    let tenants = "[[tenant]]\nname = \"t1\"\n\n[[tenant]]\nname = \"t2\"\n\n";
    let in_t1 = format!(
        "{tenants}[[client_key]]\nid = \"a\"\ntenant = \"t1\"\nsecret = \"kg-reload-a\"\n\
         quota = {{ per_day = 2 }}\n\n"
    );
    let gateway = Gateway::start_with_env(&config(echo.addr(), "", &["/v1/"], &in_t1), ENV);
    assert_eq!(get(&gateway, "/v1/x", "kg-reload-a").status, 200);
    assert_eq!(get(&gateway, "/v1/x", "kg-reload-a").status, 200);

    let in_t2 = in_t1.replace("tenant = \"t1\"\nsecret", "tenant = \"t2\"\nsecret");
    let line = gateway.reload(&config(echo.addr(), "", &["/v1/"], &in_t2));
    assert!(
        line.contains("reload refused") && line.contains("change tenant"),
        "{line}"
    );
    // The quota is not reset by a move.
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-a"),
        429,
        "quota_exceeded",
    );
    // A restart applies it, and the key keeps its counters.
    std::fs::write(
        gateway.config_path(),
        config(echo.addr(), "", &["/v1/"], &in_t2),
    )
    .expect("write");
    let gateway = gateway.restart(ENV);
    assert_error(
        &get(&gateway, "/v1/x", "kg-reload-a"),
        429,
        "quota_exceeded",
    );
}
