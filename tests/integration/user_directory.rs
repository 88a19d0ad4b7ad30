//! The user directory (`POST /user_directory/search`): the behaviour of Complement's
//! `TestRoomSpecificUsernameChange` and `TestRoomSpecificUsernameAtJoin` (a name given in one
//! room is never found by users outside it), who can be found (shared rooms, public rooms, or
//! everyone with `user_directory.search_all_users`), and the index following profile changes.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join},
};

const PUBLIC_NAME: &str = "Alice Cooper";
const PRIVATE_NAME: &str = "Freddy";

async fn directory(server: &TestServer, session: &Session, body: Value) -> Value {
    let (status, response) = server.post("/_matrix/client/v3/user_directory/search", session.token(), body).await;
    assert_eq!(status, 200, "user directory: {response}");
    response
}

fn found_ids(response: &Value) -> Vec<String> {
    response["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

async fn set_display_name(server: &TestServer, session: &Session, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&session.user_id));
    let (status, body) = server.put(&path, session.token(), json!({"displayname": name})).await;
    assert_eq!(status, 200, "displayname: {body}");
}

/// Alice, Bob and Eve as Complement names them; Alice has a public name and is in a public room.
async fn setup(server: &TestServer) -> (Session, Session, Session) {
    let alice = server.register("user-1-alice", "pw").await;
    let bob = server.register("user-2-bob", "pw").await;
    let eve = server.register("user-3-eve", "pw").await;
    set_display_name(server, &alice, PUBLIC_NAME).await;
    create_room(server, &alice, json!({"visibility": "public"})).await;
    (alice, bob, eve)
}

/// What each of Eve and Bob finds, whatever Alice told Bob's room.
async fn check_expectations(server: &TestServer, alice: &Session, bob: &Session, eve: &Session) {
    let by_mxid = alice.user_id.split('-').next().expect("prefix").to_owned();
    for searcher in [eve, bob] {
        for term in [PUBLIC_NAME, by_mxid.as_str()] {
            let found = directory(server, searcher, json!({"search_term": term})).await;
            assert_eq!(
                found_ids(&found),
                std::slice::from_ref(&alice.user_id),
                "{} searching {term}: {found}",
                searcher.user_id
            );
            assert_eq!(found["results"][0]["display_name"], PUBLIC_NAME);
            assert_eq!(found["limited"], false);
        }
    }
    let found = directory(server, eve, json!({"search_term": PRIVATE_NAME})).await;
    assert_eq!(found["results"], json!([]), "{found}");
    // The whole user ID works too (its parts are words).
    let found = directory(server, eve, json!({"search_term": alice.user_id})).await;
    assert_eq!(found_ids(&found), std::slice::from_ref(&alice.user_id), "{found}");
}

async fn private_room_with_alice(server: &TestServer, alice: &Session, bob: &Session) -> String {
    let room = create_room(server, bob, json!({"visibility": "private", "invite": [alice.user_id]})).await;
    join(server, alice, &room).await;
    room
}

#[tokio::test]
async fn room_specific_name_change_is_not_leaked() {
    let server = TestServer::start().await;
    let (alice, bob, eve) = setup(&server).await;
    let room = private_room_with_alice(&server, &alice, &bob).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id));
    let (status, body) =
        server.put(&path, alice.token(), json!({"membership": "join", "displayname": PRIVATE_NAME})).await;
    assert_eq!(status, 200, "member event: {body}");
    check_expectations(&server, &alice, &bob, &eve).await;
}

#[tokio::test]
async fn room_specific_name_at_join_is_not_leaked() {
    let server = TestServer::start().await;
    let (alice, bob, eve) = setup(&server).await;
    let room = create_room(&server, &bob, json!({"visibility": "private", "invite": [alice.user_id]})).await;
    // Alice joins with her private name in the join itself.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id));
    let (status, body) =
        server.put(&path, alice.token(), json!({"membership": "join", "displayname": PRIVATE_NAME})).await;
    assert_eq!(status, 200, "join with a name: {body}");
    check_expectations(&server, &alice, &bob, &eve).await;
}

#[tokio::test]
async fn finds_only_users_in_shared_or_public_rooms() {
    let server = TestServer::start().await;
    let (alice, bob, eve) = setup(&server).await;
    // Bob is in no room: nobody finds him, and he finds only Alice (public room).
    let found = directory(&server, &eve, json!({"search_term": "bob"})).await;
    assert_eq!(found["results"], json!([]), "{found}");
    let found = directory(&server, &bob, json!({"search_term": "user"})).await;
    assert_eq!(found_ids(&found), std::slice::from_ref(&alice.user_id));

    // Sharing a private room makes Bob and Eve visible to each other.
    let room = create_room(&server, &bob, json!({"visibility": "private", "invite": [eve.user_id]})).await;
    join(&server, &eve, &room).await;
    let found = directory(&server, &eve, json!({"search_term": "bob"})).await;
    assert_eq!(found_ids(&found), std::slice::from_ref(&bob.user_id));
    assert!(found["results"][0].get("display_name").is_none(), "{found}");

    // Leaving ends it.
    let (status, body) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), eve.token(), json!({})).await;
    assert_eq!(status, 200, "leave: {body}");
    let found = directory(&server, &eve, json!({"search_term": "bob"})).await;
    assert_eq!(found["results"], json!([]), "{found}");
}

#[tokio::test]
async fn follows_display_name_changes_and_limits() {
    let server = TestServer::start().await;
    let (alice, _bob, eve) = setup(&server).await;
    set_display_name(&server, &alice, "Vincent Furnier").await;
    let found = directory(&server, &eve, json!({"search_term": "cooper"})).await;
    assert_eq!(found["results"], json!([]), "{found}");
    // Word prefixes, any case, every word.
    let found = directory(&server, &eve, json!({"search_term": "VIN fur"})).await;
    assert_eq!(found_ids(&found), std::slice::from_ref(&alice.user_id));
    assert_eq!(found["results"][0]["display_name"], "Vincent Furnier");
    let found = directory(&server, &eve, json!({"search_term": "vincent cooper"})).await;
    assert_eq!(found["results"], json!([]));

    // Limits: more matches than asked for are `limited`.
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    for i in 0..3 {
        let fan = server.register(&format!("fan{i}"), "pw").await;
        join(&server, &fan, &room).await;
    }
    let found = directory(&server, &eve, json!({"search_term": "fan", "limit": 2})).await;
    assert_eq!(found_ids(&found).len(), 2, "{found}");
    assert_eq!(found["limited"], true);
    let found = directory(&server, &eve, json!({"search_term": "fan"})).await;
    assert_eq!(found_ids(&found).len(), 3);
    assert_eq!(found["limited"], false);

    let (status, body) =
        server.post("/_matrix/client/v3/user_directory/search", None, json!({"search_term": "fan"})).await;
    assert_error(&(status, body), 401, "M_MISSING_TOKEN");
    let (status, _) = server.post("/_matrix/client/v3/user_directory/search", eve.token(), json!({})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn search_all_users_lists_everyone() {
    let server = TestServer::start_with("[global.user_directory]\nsearch_all_users = true").await;
    let loner = server.register("loner", "pw").await;
    let eve = server.register("eve", "pw").await;
    let found = directory(&server, &eve, json!({"search_term": "lon"})).await;
    assert_eq!(found_ids(&found), std::slice::from_ref(&loner.user_id));
}
