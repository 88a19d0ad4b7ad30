//! State events with an empty state key, addressed as `.../state/{type}` or `.../state/{type}/`.

use serde_json::json;

use crate::{
    harness::{TestServer, enc},
    room_helpers::create_room,
};

#[tokio::test]
async fn empty_state_keys_work_with_and_without_trailing_slash() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let base = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));

    let put = server.put(&format!("{base}/"), alice.token(), json!({"topic": "slash"})).await;
    assert_eq!(put.0, 200, "{}", put.1);
    assert_eq!(server.get(&base, alice.token()).await.1, json!({"topic": "slash"}));
    let put = server.put(&base, alice.token(), json!({"topic": "bare"})).await;
    assert_eq!(put.0, 200, "{}", put.1);
    assert_eq!(server.get(&format!("{base}/"), alice.token()).await.1, json!({"topic": "bare"}));
    // A non-empty state key is still its own state.
    let keyed = server.get(&format!("{base}/other"), alice.token()).await;
    assert_eq!(keyed.0, 404, "{}", keyed.1);
}
