//! Connections handed to a key's owning shard count against that shard's `max_connections`,
//! so a client cannot crowd one shard by connecting through the others; a request handed to
//! a full owner is answered with a 503 and logged.

mod common;

use std::time::Duration;

use common::keys::*;
use common::*;

#[test]
fn handed_over_connections_respect_the_owners_connection_limit() {
    let mock = start_mock(&[]);
    let config = keyed_config(
        2,
        mock.addr,
        "max_connections = 3\naccess_log = \"access.log\"",
        &client_key("app", ""),
    );
    let mut gateway = Gateway::start(&config);

    // Every connection names the same key, so all of them end up on its owner, whichever
    // shard accepted them. Each is kept open after its first response. One the owner
    // accepted past its limit is closed unanswered; one the other shard accepted and
    // handed over is answered with a 503.
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..24 {
        let mut client = Client::connect(gateway.addr());
        client.send(&get_models("kg-app"));
        let Some(response) = client.try_read_response(false) else {
            continue;
        };
        match response.status {
            200 => served.push(client),
            503 => {
                let error = &response.json()["error"];
                assert_eq!(error["code"], "overloaded", "{error}");
                assert_eq!(error["type"], "server_error", "{error}");
                assert_eq!(response.header("Retry-After"), Some("1"));
                assert_eq!(response.header("Connection"), Some("close"));
                refused += 1;
            }
            status => panic!("unexpected status {status}"),
        }
    }
    assert!(!served.is_empty(), "nothing was served");
    assert!(
        served.len() <= 3,
        "{} connections open on one shard with a limit of 3",
        served.len()
    );
    // Of the 21 or more connections past the limit, about half land on the other shard.
    assert!(refused > 0, "no handed-over connection was answered");

    // The ones that were served keep working.
    for client in &mut served {
        client.send(&get_models("kg-app"));
        assert_eq!(client.read_response(false).status, 200);
    }

    // Every 503 is in the access log, with its request.
    gateway.process.signal("TERM");
    assert!(gateway.process.wait_exit(Duration::from_secs(20)).is_some());
    let log = std::fs::read_to_string(gateway.dir.0.join("access.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let logged = lines
        .iter()
        .filter(|line| line["status"] == 503 && line["error_code"] == "overloaded")
        .inspect(|line| {
            assert_eq!(line["path"], "/v1/models", "{line}");
            assert_eq!(line["key_id"], "app", "{line}");
        })
        .count();
    assert_eq!(logged, refused, "{log}");
}
