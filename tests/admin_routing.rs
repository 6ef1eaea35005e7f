//! The admin API's route states and added provider keys with the real binary: in effect on
//! every shard once answered, kept across restarts and reloads.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use common::*;

const TOKEN: &str = "admin-token-for-routing-tests-012";
const ENV: &[(&str, &str)] = &[("KEYGATE_TEST_ADMIN_TOKEN", TOKEN)];

/// Two shards, an admin listener, routes `/v1/` and `/v2/` to `echo` (provider openai, one
/// key `a` = `sk-a`).
fn config(echo: SocketAddr, more_routes: &str) -> String {
    format!(
        "{}[[upstream]]\nname = \"echo\"\nprovider = \"openai\"\n\
         endpoints = [\"http://{echo}\"]\nstrategy = \"round_robin\"\n\n\
         [[upstream.key]]\nid = \"a\"\nsecret = \"sk-a\"\n\n{}{}{more_routes}",
        gateway_section(
            2,
            "admin_listen = \"127.0.0.1:0\"\nadmin_token_env = \"KEYGATE_TEST_ADMIN_TOKEN\"\n"
        ),
        route_section("/v1/", None, "echo"),
        route_section("/v2/", None, "echo"),
    )
}

fn call(admin: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    admin_call(admin, method, path, Some(TOKEN), body)
}

fn get(gateway: &Gateway, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    roundtrip(gateway.addr(), request.as_bytes())
}

#[test]
fn a_route_is_deprecated_and_retired_at_run_time_and_stays_so() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    assert!(get(&gateway, "/v1/x").header("deprecation").is_none());

    let deprecated = call(
        admin,
        "POST",
        "/admin/routes/lifecycle",
        Some(
            r#"{"route":"/v1/","state":"deprecated","deprecation":"2026-01-01T00:00:00Z",
                "sunset":"2027-01-01T00:00:00Z"}"#,
        ),
    );
    assert_eq!(deprecated.status, 200, "{}", deprecated.body_text());
    assert_eq!(deprecated.json()["source"], "admin");
    // Fresh connections reach both shards; each marks the route's answers.
    for _ in 0..4 {
        let response = get(&gateway, "/v1/x");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("deprecation"), Some("@1767225600"));
        assert_eq!(
            response.header("sunset"),
            Some("Fri, 01 Jan 2027 00:00:00 GMT")
        );
        assert!(get(&gateway, "/v2/x").header("deprecation").is_none());
    }

    // Retiring changes the state and keeps the dates: the 410 still carries them.
    let retired = call(
        admin,
        "POST",
        "/admin/routes/lifecycle",
        Some(r#"{"route":"/v1/","state":"retired"}"#),
    );
    assert_eq!(retired.status, 200, "{}", retired.body_text());
    assert_eq!(retired.json()["sunset"], "2027-01-01T00:00:00.000Z");
    let before = echo.seen().len();
    let gone = get(&gateway, "/v1/x");
    assert_error(&gone, 410, "route_retired");
    assert_eq!(gone.header("sunset"), Some("Fri, 01 Jan 2027 00:00:00 GMT"));
    assert_eq!(
        echo.seen().len(),
        before,
        "a retired route contacts no upstream"
    );

    // Across a restart and a reload of the file (which says nothing of states), it stays.
    let gateway = gateway.restart(ENV);
    assert_error(&get(&gateway, "/v1/x"), 410, "route_retired");
    let line = gateway.reload(&config(echo.addr(), &route_section("/v3/", None, "echo")));
    assert!(line.contains("config reloaded"), "{line}");
    assert_error(&get(&gateway, "/v1/x"), 410, "route_retired");
    assert_eq!(get(&gateway, "/v3/x").status, 200);
    let listed = call(gateway.admin_addr(), "GET", "/admin/routes", None).json();
    assert_eq!(listed["routes"][0]["state"], "retired", "{listed}");
    assert_eq!(listed["routes"][2]["route"], "/v3/", "{listed}");

    // `"state": null` hands the route back to the file.
    let back = call(
        gateway.admin_addr(),
        "POST",
        "/admin/routes/lifecycle",
        Some(r#"{"route":"/v1/","state":null}"#),
    );
    assert_eq!(back.status, 200, "{}", back.body_text());
    assert_eq!(back.json()["state"], "published");
    assert_eq!(get(&gateway, "/v1/x").status, 200);
}

#[test]
fn bad_route_changes_are_refused_and_change_nothing() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"state":"retired"}"#, 400, "route"),
        (r#"{"route":"/nope/","state":"retired"}"#, 404, "/nope/"),
        (r#"{"route":"/v1/","state":"asleep"}"#, 400, "state"),
        (
            r#"{"route":"/v1/","state":"deprecated"}"#,
            400,
            "deprecation",
        ),
        (
            r#"{"route":"/v1/","state":"published","sunset":"2027-01-01T00:00:00Z"}"#,
            400,
            "sunset",
        ),
        (
            r#"{"route":"/v1/","state":"retired","upstream":"x"}"#,
            400,
            "unknown route field",
        ),
        ("nope", 400, "JSON"),
    ];
    for (body, status, says) in cases {
        let response = call(admin, "POST", "/admin/routes/lifecycle", Some(body));
        assert_eq!(response.status, *status, "{body}: {}", response.body_text());
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(get(&gateway, "/v1/x").status, 200);
    assert!(!gateway.dir.0.join("state/overrides.json").exists());
}

#[test]
fn an_added_provider_key_is_used_at_once_and_kept() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    for _ in 0..3 {
        assert_eq!(get(&gateway, "/v1/x").status, 200);
    }
    let requests_of_a = |admin| {
        let listed = call(admin, "GET", "/admin/upstreams", None).json();
        listed["upstreams"][0]["keys"][0]["requests"]
            .as_u64()
            .expect("requests")
    };
    assert_eq!(requests_of_a(admin), 3);

    let added = call(
        admin,
        "POST",
        "/admin/upstreams/echo/keys",
        Some(r#"{"id":"b","secret":"sk-added-b","rpm":600}"#),
    );
    assert_eq!(added.status, 201, "{}", added.body_text());
    assert_eq!(added.json()["id"], "b");
    assert_eq!(added.json()["rpm"], 600);
    assert!(!added.body_text().contains("sk-added-b"));

    // Round robin over a and b, on both shards.
    for _ in 0..6 {
        assert_eq!(get(&gateway, "/v1/x").status, 200);
    }
    let used: Vec<String> = echo
        .seen()
        .iter()
        .flat_map(|seen| seen.values("authorization").into_iter().map(str::to_owned))
        .collect();
    assert!(used.iter().any(|v| v == "Bearer sk-added-b"), "{used:?}");
    assert!(used.iter().any(|v| v == "Bearer sk-a"), "{used:?}");
    // The pool was rebuilt with the new key; the old key's counts came along.
    assert!(requests_of_a(admin) >= 4, "{}", requests_of_a(admin));

    let cases: &[(&str, &str, u16)] = &[
        (
            "/admin/upstreams/echo/keys",
            r#"{"id":"b","secret":"sk-again"}"#,
            409,
        ),
        (
            "/admin/upstreams/nope/keys",
            r#"{"id":"c","secret":"sk-c"}"#,
            404,
        ),
        (
            "/admin/upstreams/echo/keys",
            r#"{"id":"c","secret_file":"/etc/passwd"}"#,
            400,
        ),
        ("/admin/upstreams/echo/keys", r#"{"id":"c"}"#, 400),
    ];
    for (path, body, status) in cases {
        let response = call(admin, "POST", path, Some(body));
        assert_eq!(response.status, *status, "{body}: {}", response.body_text());
    }

    // Kept across a restart, in a file only its owner reads; never logged.
    let gateway = gateway.restart(ENV);
    let listed = call(gateway.admin_addr(), "GET", "/admin/upstreams", None).json();
    let ids: Vec<&str> = listed["upstreams"][0]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let path = gateway.dir.0.join("state/overrides.json");
    let mode = std::fs::metadata(&path)
        .expect("overrides")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    assert!(gateway
        .process
        .log_lines()
        .iter()
        .all(|l| !l.contains("sk-added-b")));
}

#[test]
fn an_added_provider_key_is_removed_at_once_and_for_good() {
    let echo = Echo::start("up");
    let bare = format!(
        "[[upstream]]\nname = \"bare\"\nprovider = \"openai\"\nendpoints = [\"http://{}\"]\n",
        echo.addr()
    );
    let gateway = Gateway::start_with_env(&config(echo.addr(), &bare), ENV);
    let admin = gateway.admin_addr();
    for (upstream, id) in [("echo", "b"), ("bare", "c")] {
        let body = format!(r#"{{"id":"{id}","secret":"sk-added-{id}"}}"#);
        let path = format!("/admin/upstreams/{upstream}/keys");
        let added = call(admin, "POST", &path, Some(&body));
        assert_eq!(added.status, 201, "{}", added.body_text());
    }

    let removed = call(admin, "DELETE", "/admin/upstreams/echo/keys/b", None);
    assert_eq!(removed.status, 200, "{}", removed.body_text());
    assert_eq!(removed.json()["removed"], true);
    // No shard uses it any more: every request goes out with the file's key.
    let before = echo.seen().len();
    for _ in 0..6 {
        assert_eq!(get(&gateway, "/v1/x").status, 200);
    }
    let used: Vec<String> = echo.seen()[before..]
        .iter()
        .flat_map(|seen| seen.values("authorization").into_iter().map(str::to_owned))
        .collect();
    assert_eq!(used, vec!["Bearer sk-a"; 6]);

    let refusals: &[(&str, u16, &str)] = &[
        ("/admin/upstreams/echo/keys/b", 404, "echo/b"),
        ("/admin/upstreams/nope/keys/b", 404, "nope"),
        ("/admin/upstreams/echo/keys/a", 409, "config file"),
        ("/admin/upstreams/bare/keys/c", 409, "last provider key"),
    ];
    for (path, status, says) in refusals {
        let response = call(admin, "DELETE", path, None);
        assert_eq!(response.status, *status, "{path}: {}", response.body_text());
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{path}: {message}");
    }
    let wrong_method = call(admin, "PUT", "/admin/upstreams/echo/keys/a", None);
    assert_eq!(wrong_method.status, 405);

    // Gone across a restart, and its secret gone from the state directory.
    let gateway = gateway.restart(ENV);
    let listed = call(gateway.admin_addr(), "GET", "/admin/upstreams", None).json();
    let ids = |index: usize| -> Vec<String> {
        listed["upstreams"][index]["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        (ids(0), ids(1)),
        (vec!["a".to_owned()], vec!["c".to_owned()])
    );
    let overrides = gateway.dir.0.join("state/overrides.json");
    let kept = std::fs::read_to_string(&overrides).unwrap();
    assert!(!kept.contains("sk-added-b"), "{kept}");
    assert!(kept.contains("sk-added-c"), "{kept}");

    // An upstream the file drops keeps its added key, unused, until it is removed.
    let line = gateway.reload(&config(echo.addr(), ""));
    assert!(line.contains("config reloaded"), "{line}");
    let admin = gateway.admin_addr();
    let removed = call(admin, "DELETE", "/admin/upstreams/bare/keys/c", None);
    assert_eq!(removed.status, 200, "{}", removed.body_text());
    let kept = std::fs::read_to_string(&overrides).unwrap();
    assert!(!kept.contains("sk-added-c"), "{kept}");
    let again = call(admin, "DELETE", "/admin/upstreams/bare/keys/c", None);
    assert_eq!(again.status, 404, "{}", again.body_text());
}
