//! Helpers the room tests share.

use serde_json::Value;

use crate::harness::{Session, TestServer};

/// Creates a room with a `/createRoom` body; returns its ID.
pub async fn create_room(server: &TestServer, session: &Session, body: Value) -> String {
    let (status, response) = server.post("/_matrix/client/v3/createRoom", session.token(), body).await;
    assert_eq!(status, 200, "createRoom: {response}");
    response["room_id"].as_str().expect("room_id").to_owned()
}
