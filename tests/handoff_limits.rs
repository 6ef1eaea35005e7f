//! Connections handed to a key's owning shard count against that shard's `max_connections`,
//! so a client cannot crowd one shard by connecting through the others.

mod common;

use common::keys::*;
use common::*;

#[test]
fn handed_over_connections_respect_the_owners_connection_limit() {
    let mock = start_mock(&[]);
    let config = keyed_config(2, mock.addr, "max_connections = 3", &client_key("app", ""));
    let gateway = Gateway::start(&config);

    // Every connection names the same key, so all of them end up on its owner, whichever
    // shard accepted them. Each is kept open after its first response.
    let mut served = Vec::new();
    for _ in 0..24 {
        let mut client = Client::connect(gateway.addr());
        client.send(&get_models("kg-app"));
        if let Some(response) = client.try_read_response(false) {
            assert_eq!(response.status, 200);
            served.push(client);
        }
    }
    assert!(!served.is_empty(), "nothing was served");
    assert!(
        served.len() <= 3,
        "{} connections open on one shard with a limit of 3",
        served.len()
    );

    // The ones that were served keep working.
    for client in &mut served {
        client.send(&get_models("kg-app"));
        assert_eq!(client.read_response(false).status, 200);
    }
}
