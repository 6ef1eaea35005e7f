//! The admin API's client keys and tenants with the real binary: a change is in effect on
//! every shard once answered, survives a restart, and never shows a secret twice.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "admin-token-for-client-tests-0123";
const ENV: &[(&str, &str)] = &[("KEYGATE_TEST_ADMIN_TOKEN", TOKEN)];

/// Two shards in front of `echo`, an admin listener, tenant `acme` and one file key
/// `file-key` (secret `kg-file-key-0001`, 5 per day) in it.
fn config(echo: SocketAddr, extra_keys: &str) -> String {
    format!(
        "{}{}{}[[tenant]]\nname = \"acme\"\n\n\
         [[client_key]]\nid = \"file-key\"\ntenant = \"acme\"\nsecret = \"kg-file-key-0001\"\n\
         quota = {{ per_day = 5 }}\n\n{extra_keys}",
        gateway_section(
            2,
            "admin_listen = \"127.0.0.1:0\"\nadmin_token_env = \"KEYGATE_TEST_ADMIN_TOKEN\"\n"
        ),
        upstream_section("echo", &[echo], ""),
        route_section("/", None, "echo"),
    )
}

fn call(admin: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    admin_call(admin, method, path, Some(TOKEN), body)
}

/// A request with `secret` on a fresh connection: its status.
fn status_with(gateway: &Gateway, secret: &str) -> u16 {
    let request =
        format!("GET /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {secret}\r\n\r\n");
    roundtrip(gateway.addr(), request.as_bytes()).status
}

/// The statuses of `count` requests with `secret`, each on a fresh connection, so that they
/// arrive on both shards.
fn statuses(gateway: &Gateway, secret: &str, count: usize) -> Vec<u16> {
    (0..count).map(|_| status_with(gateway, secret)).collect()
}

#[test]
fn a_created_key_works_at_once_on_every_shard_and_survives_a_restart() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();

    let created = call(
        admin,
        "POST",
        "/admin/keys",
        Some(r#"{"id":"new-key","tenant":"acme","quota":{"per_day":6}}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body_text());
    let body = created.json();
    let secret = body["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_owned();
    assert!(secret.starts_with("kg-") && secret.len() == 67, "{secret}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["source"], "admin");
    assert_eq!(body["limits"]["quota"]["per_day"], 6);
    // Once answered, every shard knows it: 6 requests pass, the 7th is over the quota.
    assert_eq!(statuses(&gateway, &secret, 6), [200; 6]);
    assert_error(
        &roundtrip(
            gateway.addr(),
            format!("GET / HTTP/1.1\r\nHost: gw\r\nx-api-key: {secret}\r\n\r\n").as_bytes(),
        ),
        429,
        "quota_exceeded",
    );

    // The secret is never shown again, nor kept in the clear, nor logged.
    let shown = call(admin, "GET", "/admin/keys/new-key", None);
    assert_eq!(shown.status, 200);
    assert!(!shown.body_text().contains(&secret));
    assert!(!shown.body_text().contains("secret_sha256"));
    assert_eq!(shown.json()["usage"]["budgets"][0]["remaining"], 0);
    let gateway = gateway.restart(ENV);
    let state = std::fs::read_to_string(gateway.dir.0.join("state/clients.json")).expect("state");
    assert!(!state.contains(&secret));
    assert!(gateway
        .process
        .log_lines()
        .iter()
        .all(|l| !l.contains(&secret)));
    let metrics = admin_call(gateway.admin_addr(), "GET", "/metrics", None, None).body_text();
    assert!(!metrics.contains(&secret));

    // After the restart the key is there with its counters: still over its quota.
    assert_eq!(statuses(&gateway, &secret, 2), [429, 429]);
    // Its traffic is in the metrics by id (2 answered 4xx since the restart), never its secret.
    let series = "keygate_client_key_requests_total{key_id=\"new-key\",tenant=\"acme\",\
                  status_class=\"4xx\"}";
    let metrics = common::admin::scrape_until(gateway.admin_addr(), &[(series, 2.0)]);
    assert!(!metrics.contains(&secret));
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 1), [200]);
}

#[test]
fn a_revoked_key_is_refused_at_once_even_on_a_connection_that_used_it() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();

    // A keep-alive connection authenticates with the file key: it remembers it.
    let mut client = Client::connect(gateway.addr());
    let request = b"GET /a HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-file-key-0001\r\n\r\n";
    client.send(request);
    assert_eq!(client.read_response(false).status, 200);

    let revoked = call(admin, "DELETE", "/admin/keys/file-key", None);
    assert_eq!(revoked.status, 200, "{}", revoked.body_text());
    assert_eq!(revoked.json()["revoked"], true);

    client.send(request);
    assert_error(&client.read_response(false), 401, "invalid_api_key");
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 4), [401; 4]);

    // Revoked stays revoked: no change, no second revocation, none after a restart although
    // the config file still defines the key.
    assert_eq!(
        call(admin, "PATCH", "/admin/keys/file-key", Some("{}")).status,
        409
    );
    assert_eq!(
        call(admin, "DELETE", "/admin/keys/file-key", None).status,
        409
    );
    let gateway = gateway.restart(ENV);
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 2), [401, 401]);
    let listed = call(gateway.admin_addr(), "GET", "/admin/keys", None).json();
    assert_eq!(listed["keys"][0]["revoked"], true, "{listed}");
}

#[test]
fn a_rotated_key_accepts_both_secrets_for_its_grace_only() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    let old = "kg-file-key-0001";

    let rotated = call(
        admin,
        "POST",
        "/admin/keys/file-key/rotate",
        Some(r#"{"grace":"2s"}"#),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body_text());
    let rotated_at = Instant::now();
    let body = rotated.json();
    let new = body["secret"].as_str().expect("new secret").to_owned();
    assert!(body["previous_secret_valid_until"].is_string(), "{body}");

    // Both work, and count against the one key's quota of 5.
    assert_eq!(statuses(&gateway, old, 2), [200, 200]);
    assert_eq!(statuses(&gateway, &new, 2), [200, 200]);
    let usage = call(admin, "GET", "/admin/keys/file-key", None).json();
    assert_eq!(usage["usage"]["budgets"][0]["remaining"], 1, "{usage}");

    // Past the grace period the old one is refused, on a remembered connection too.
    let mut client = Client::connect(gateway.addr());
    let request = format!("GET / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {old}\r\n\r\n");
    client.send(request.as_bytes());
    assert_eq!(client.read_response(false).status, 200);
    let wait = Duration::from_millis(2100).saturating_sub(rotated_at.elapsed());
    std::thread::sleep(wait);
    client.send(request.as_bytes());
    assert_error(&client.read_response(false), 401, "invalid_api_key");
    assert_eq!(statuses(&gateway, &new, 1), [429]);

    // Without a grace period the replaced secret stops at once, and the rotation survives a
    // restart.
    let again = call(admin, "POST", "/admin/keys/file-key/rotate", None).json();
    let newest = again["secret"].as_str().expect("secret").to_owned();
    assert_eq!(statuses(&gateway, &new, 1), [401]);
    let gateway = gateway.restart(ENV);
    assert_eq!(statuses(&gateway, &newest, 1), [429]);
    assert_eq!(statuses(&gateway, old, 1), [401]);
}

#[test]
fn limits_change_at_once_and_counters_reset() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    let key = "kg-file-key-0001";

    let changed = call(
        admin,
        "PATCH",
        "/admin/keys/file-key",
        Some(r#"{"quota":{"per_day":2},"max_concurrent":3}"#),
    );
    assert_eq!(changed.status, 200, "{}", changed.body_text());
    assert_eq!(changed.json()["source"], "config+admin");
    assert_eq!(statuses(&gateway, key, 3), [200, 200, 429]);

    let reset = call(admin, "POST", "/admin/keys/file-key/reset", None);
    assert_eq!(reset.status, 200, "{}", reset.body_text());
    let budgets = &reset.json()["usage"]["budgets"];
    assert_eq!(budgets[0]["name"], "day");
    assert_eq!(budgets[0]["remaining"], 2);
    assert_eq!(statuses(&gateway, key, 3), [200, 200, 429]);

    // Removing the quota (a null in the merge patch) lifts it.
    let lifted = call(
        admin,
        "PATCH",
        "/admin/keys/file-key",
        Some(r#"{"quota":null}"#),
    );
    assert_eq!(lifted.status, 200, "{}", lifted.body_text());
    assert_eq!(statuses(&gateway, key, 2), [200, 200]);
}

#[test]
fn tenants_are_created_changed_and_deleted() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();

    let created = call(
        admin,
        "POST",
        "/admin/tenants",
        Some(r#"{"name":"beta","quota":{"per_day":3}}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body_text());
    let key = call(
        admin,
        "POST",
        "/admin/keys",
        Some(r#"{"id":"beta-1","tenant":"beta"}"#),
    )
    .json();
    let secret = key["secret"].as_str().expect("secret").to_owned();
    assert_eq!(statuses(&gateway, &secret, 4), [200, 200, 200, 429]);

    let changed = call(
        admin,
        "PATCH",
        "/admin/tenants/beta",
        Some(r#"{"quota":{"per_day":5}}"#),
    );
    assert_eq!(changed.status, 200, "{}", changed.body_text());
    assert_eq!(statuses(&gateway, &secret, 3), [200, 200, 429]);

    // A tenant with live keys stays; once they are revoked it can go.
    assert_eq!(
        call(admin, "DELETE", "/admin/tenants/beta", None).status,
        409
    );
    assert_eq!(
        call(admin, "DELETE", "/admin/keys/beta-1", None).status,
        200
    );
    assert_eq!(
        call(admin, "DELETE", "/admin/tenants/beta", None).status,
        200
    );
    let tenants = call(admin, "GET", "/admin/tenants", None).json();
    let beta = tenants["tenants"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "beta"))
        .expect("beta listed")
        .clone();
    assert_eq!(beta["deleted"], true);
    assert_eq!(
        call(admin, "POST", "/admin/tenants", Some(r#"{"name":"beta"}"#)).status,
        409
    );
}

#[test]
fn bad_admin_calls_get_clear_errors_and_change_nothing() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();

    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("POST", "/admin/keys", Some("{not json"), 400, "not JSON"),
        ("POST", "/admin/keys", Some("[1]"), 400, "JSON object"),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"tenant":"acme"}"#),
            400,
            "\"id\"",
        ),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"id":"x","rate":"fast"}"#),
            400,
            "rate",
        ),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"id":"x","secret":"kg-clear"}"#),
            400,
            "secret_sha256",
        ),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"id":"x","colour":"red"}"#),
            400,
            "unknown client key field",
        ),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"id":"x","tenant":"nobody"}"#),
            400,
            "not defined",
        ),
        ("POST", "/admin/keys", Some(r#"{"id":"bad id"}"#), 400, "id"),
        (
            "POST",
            "/admin/keys",
            Some(r#"{"id":"file-key"}"#),
            409,
            "in use",
        ),
        (
            "PATCH",
            "/admin/keys/file-key",
            Some(r#"{"tenant":null}"#),
            409,
            "tenant cannot change",
        ),
        (
            "PATCH",
            "/admin/keys/file-key",
            Some(r#"{"burst":3}"#),
            400,
            "burst needs a rate",
        ),
        ("GET", "/admin/keys/nobody", None, 404, "nobody"),
        ("POST", "/admin/keys/nobody/rotate", None, 404, "nobody"),
        (
            "POST",
            "/admin/keys/file-key/rotate",
            Some(r#"{"grace":"soon"}"#),
            400,
            "grace",
        ),
        ("PUT", "/admin/keys/file-key", Some("{}"), 405, "method"),
        ("GET", "/admin/keys?limit=x", None, 400, "limit"),
        ("PATCH", "/admin/tenants/nobody", Some("{}"), 404, "nobody"),
        (
            "POST",
            "/admin/tenants",
            Some(r#"{"name":"acme"}"#),
            409,
            "exists",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let response = call(admin, method, path, *body);
        assert_eq!(
            response.status,
            *status,
            "{method} {path} {body:?}: {}",
            response.body_text()
        );
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{method} {path}: {message}");
    }
    // Without the token nothing is shown or changed.
    let refused = admin_call(
        admin,
        "POST",
        "/admin/keys",
        None,
        Some(r#"{"id":"sneaky"}"#),
    );
    assert_error(&refused, 401, "invalid_api_key");

    // The file key is as it was, and no key was made.
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 1), [200]);
    let listed = call(admin, "GET", "/admin/keys", None).json();
    assert_eq!(listed["total"], 1, "{listed}");
    assert!(!gateway.dir.0.join("state/clients.json").exists());
}

#[test]
fn keys_are_listed_a_page_at_a_time() {
    let echo = Echo::start("up");
    let extra: String = (0..5)
        .map(|i| format!("[[client_key]]\nid = \"k{i}\"\nsecret = \"kg-page-{i}\"\n\n"))
        .collect();
    let gateway = Gateway::start_with_env(&config(echo.addr(), &extra), ENV);
    let admin = gateway.admin_addr();
    let first = call(admin, "GET", "/admin/keys?limit=4", None).json();
    assert_eq!(first["total"], 6);
    assert_eq!(first["keys"].as_array().map(Vec::len), Some(4));
    assert_eq!(first["next_offset"], 4);
    let rest = call(admin, "GET", "/admin/keys?offset=4&limit=4", None).json();
    let ids: Vec<&str> = rest["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids, ["k3", "k4"]);
    assert!(rest["next_offset"].is_null());
}

#[test]
fn a_deleted_tenant_and_its_revoked_keys_never_stop_a_reload_or_a_restart() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    assert_eq!(
        call(admin, "DELETE", "/admin/keys/file-key", None).status,
        200
    );
    assert_eq!(
        call(admin, "DELETE", "/admin/tenants/acme", None).status,
        200
    );

    // The file still names acme for file-key: that key is revoked, so it does not matter.
    let line = gateway.reload(&config(echo.addr(), ""));
    assert!(line.contains("config reloaded"), "{line}");
    let gateway = gateway.restart(ENV);
    let admin = gateway.admin_addr();
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 1), [401]);
    // Both are still listed, as revoked and deleted.
    let key = call(admin, "GET", "/admin/keys/file-key", None).json();
    assert_eq!(key["revoked"], true, "{key}");
    let tenant = call(admin, "GET", "/admin/tenants/acme", None).json();
    assert_eq!(tenant["deleted"], true, "{tenant}");
}

#[test]
fn an_admin_change_the_file_no_longer_fits_leaves_that_key_out_and_nothing_else() {
    let echo = Echo::start("up");
    let rated = "[[client_key]]\nid = \"rated\"\nsecret = \"kg-rated-0001\"\nrate = \"2/s\"\n\n";
    let gateway = Gateway::start_with_env(&config(echo.addr(), rated), ENV);
    let admin = gateway.admin_addr();
    assert_eq!(
        call(admin, "PATCH", "/admin/keys/rated", Some(r#"{"burst":5}"#)).status,
        200
    );

    // Without a rate in the file, the API's burst has nothing to apply to.
    let unrated = "[[client_key]]\nid = \"rated\"\nsecret = \"kg-rated-0001\"\n\n";
    let line = gateway.reload(&config(echo.addr(), unrated));
    assert!(
        line.contains("reload refused") && line.contains("burst needs a rate"),
        "{line}"
    );
    assert_eq!(statuses(&gateway, "kg-rated-0001", 1), [200]);

    // A restart on that file starts, refusing that key only, and says why.
    let gateway = gateway.restart(ENV);
    assert_eq!(statuses(&gateway, "kg-rated-0001", 1), [401]);
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 1), [200]);
    let logged = gateway.process.log_lines();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("no longer fits") && l.contains("rated")),
        "{logged:#?}"
    );
}

#[test]
fn a_request_whose_key_is_revoked_while_its_body_arrives_goes_no_further() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    let mut client = Client::connect(gateway.addr());
    client.send(
        b"POST /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer kg-file-key-0001\r\n\
          Content-Length: 20\r\n\r\n0123456789",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        call(admin, "DELETE", "/admin/keys/file-key", None).status,
        200
    );
    client.send(b"0123456789");
    assert_error(&client.read_response(false), 401, "invalid_api_key");
    assert!(
        echo.seen().is_empty(),
        "the upstream saw {:#?}",
        echo.seen()
    );
}

#[test]
fn rotation_grace_is_bounded_and_head_answers_have_no_body() {
    let echo = Echo::start("up");
    let gateway = Gateway::start_with_env(&config(echo.addr(), ""), ENV);
    let admin = gateway.admin_addr();
    let too_long = call(
        admin,
        "POST",
        "/admin/keys/file-key/rotate",
        Some(r#"{"grace":"99999999h"}"#),
    );
    assert_error(&too_long, 400, "bad_request");
    assert_eq!(statuses(&gateway, "kg-file-key-0001", 1), [200]);

    // The admin listener closes after each answer: everything it sent is the head.
    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    let request =
        format!("HEAD /admin/keys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
    assert!(!answer.contains("Content-Length: 0\r\n"), "{answer}");
}
