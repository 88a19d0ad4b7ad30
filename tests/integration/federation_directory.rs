//! Public room directories across servers: a client of `hs-b` lists and searches the
//! directory of `hs-a` (`/publicRooms?server=`), and `hs-a` serves its directory to other
//! servers (`GET`/`POST /_matrix/federation/v1/publicRooms`), refusing unsigned and bad requests.

use serde_json::{Value, json};

use crate::{
    federation::{federation_call, start_pair},
    federation_join::fake_call,
    harness::assert_error,
    room_helpers::create_room,
};

fn room_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        body["chunk"].as_array().unwrap().iter().map(|room| room["room_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn directories_of_other_servers_are_listed_and_searched() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let cheese =
        create_room(a, &alice, json!({"preset": "public_chat", "visibility": "public", "name": "Cheese Lovers"})).await;
    let wine = create_room(a, &alice, json!({"preset": "public_chat", "visibility": "public", "name": "Wine"})).await;
    create_room(a, &alice, json!({"preset": "public_chat", "name": "Unlisted cheese"})).await;
    let mut both = vec![cheese.clone(), wine.clone()];
    both.sort();

    let listed = b.get("/_matrix/client/v3/publicRooms?server=hs-a", bob.token()).await;
    assert_eq!(listed.0, 200, "{}", listed.1);
    assert_eq!(room_ids(&listed.1), both);
    let cheese_entry = listed.1["chunk"].as_array().unwrap().iter().find(|r| r["room_id"] == cheese.as_str()).unwrap();
    assert_eq!(cheese_entry["name"], "Cheese Lovers");
    assert_eq!(cheese_entry["num_joined_members"], 1);
    // Paged.
    let first = b.get("/_matrix/client/v3/publicRooms?server=hs-a&limit=1", bob.token()).await;
    assert_eq!(first.1["chunk"].as_array().unwrap().len(), 1, "{}", first.1);
    let since = first.1["next_batch"].as_str().expect("a next page").to_owned();
    let second =
        b.get_owned(format!("/_matrix/client/v3/publicRooms?server=hs-a&limit=1&since={since}"), bob.token()).await;
    assert_eq!(second.1["chunk"].as_array().unwrap().len(), 1, "{}", second.1);
    assert_ne!(second.1["chunk"][0]["room_id"], first.1["chunk"][0]["room_id"]);

    let searched = b
        .post(
            "/_matrix/client/v3/publicRooms?server=hs-a",
            bob.token(),
            json!({"filter": {"generic_search_term": "cheese"}}),
        )
        .await;
    assert_eq!(searched.0, 200, "{}", searched.1);
    assert_eq!(room_ids(&searched.1), vec![cheese.clone()]);
    let none = b
        .post(
            "/_matrix/client/v3/publicRooms?server=hs-a",
            bob.token(),
            json!({"filter": {"generic_search_term": "beer"}}),
        )
        .await;
    assert_eq!(room_ids(&none.1), Vec::<String>::new());
    // A server that cannot be reached.
    let gone = b.get("/_matrix/client/v3/publicRooms?server=hs-y", bob.token()).await;
    assert_error(&gone, 502, "M_UNKNOWN");
}

#[tokio::test]
async fn the_federation_directory_is_served_to_signed_requests_only() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat", "visibility": "public", "name": "Lobby"})).await;
    let listed = fake_call(&pair, a, "GET", "/_matrix/federation/v1/publicRooms?limit=10", None).await;
    assert_eq!(listed.0, 200, "{}", listed.1);
    assert_eq!(room_ids(&listed.1), vec![room.clone()]);
    let filtered = fake_call(
        &pair,
        a,
        "POST",
        "/_matrix/federation/v1/publicRooms",
        Some(&json!({"filter": {"generic_search_term": "lobby"}, "limit": 5})),
    )
    .await;
    assert_eq!((filtered.0, room_ids(&filtered.1)), (200, vec![room.clone()]));
    let missed = fake_call(
        &pair,
        a,
        "POST",
        "/_matrix/federation/v1/publicRooms",
        Some(&json!({"filter": {"generic_search_term": "nothing like it"}})),
    )
    .await;
    assert_eq!((missed.0, room_ids(&missed.1)), (200, Vec::new()));

    let client = pair.pki.client();
    let unsigned = federation_call(&client, a, "GET", "/_matrix/federation/v1/publicRooms", None, None).await;
    assert_error(&unsigned, 401, "M_UNAUTHORIZED");
    let bad_limit = fake_call(&pair, a, "GET", "/_matrix/federation/v1/publicRooms?limit=many", None).await;
    assert_eq!(bad_limit.0, 400, "{}", bad_limit.1);
    let bad_body =
        fake_call(&pair, a, "POST", "/_matrix/federation/v1/publicRooms", Some(&json!({"filter": "cheese"}))).await;
    assert_eq!(bad_body.0, 400, "{}", bad_body.1);
    assert!(bad_body.1["errcode"].is_string(), "{}", bad_body.1);
}
