//! Helpers the room tests share: creating rooms, sending messages, reading state, and an admin
//! account made through shared-secret registration.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::harness::{SHARED_SECRET, Session, TestServer, enc};

/// Creates a room with a `/createRoom` body; returns its ID.
pub async fn create_room(server: &TestServer, session: &Session, body: Value) -> String {
    let (status, response) = server.post("/_matrix/client/v3/createRoom", session.token(), body).await;
    assert_eq!(status, 200, "createRoom: {response}");
    response["room_id"].as_str().expect("room_id").to_owned()
}

/// Sends an `m.text` message; returns its event ID.
pub async fn send_text(server: &TestServer, session: &Session, room_id: &str, text: &str) -> String {
    let txn = format!("t{}", rand_suffix());
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id));
    let (status, response) = server.put(&path, session.token(), json!({"msgtype": "m.text", "body": text})).await;
    assert_eq!(status, 200, "send: {response}");
    response["event_id"].as_str().expect("event_id").to_owned()
}

/// Sends a message event of any type with any content; returns its event ID.
pub async fn send_event(server: &TestServer, session: &Session, room_id: &str, kind: &str, content: Value) -> String {
    let txn = format!("t{}", rand_suffix());
    let path = format!("/_matrix/client/v3/rooms/{}/send/{kind}/{txn}", enc(room_id));
    let (status, response) = server.put(&path, session.token(), content).await;
    assert_eq!(status, 200, "send {kind}: {response}");
    response["event_id"].as_str().expect("event_id").to_owned()
}

/// Redacts an event; returns the redaction's event ID.
pub async fn redact(server: &TestServer, session: &Session, room_id: &str, event_id: &str) -> String {
    let txn = format!("r{}", rand_suffix());
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(room_id), enc(event_id));
    let (status, response) = server.put(&path, session.token(), json!({})).await;
    assert_eq!(status, 200, "redact: {response}");
    response["event_id"].as_str().expect("event_id").to_owned()
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    nanos + u128::from(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A state event's content (status and body).
pub async fn state(server: &TestServer, session: &Session, room_id: &str, kind: &str) -> (u16, Value) {
    server.get(&format!("/_matrix/client/v3/rooms/{}/state/{kind}", enc(room_id)), session.token()).await
}

/// Sets a state event (empty state key); asserts success.
pub async fn put_state(server: &TestServer, session: &Session, room_id: &str, kind: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}", enc(room_id));
    let (status, response) = server.put(&path, session.token(), content).await;
    assert_eq!(status, 200, "put {kind}: {response}");
}

pub async fn join(server: &TestServer, session: &Session, room_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room_id));
    let (status, response) = server.post(&path, session.token(), json!({})).await;
    assert_eq!(status, 200, "join: {response}");
}

/// Registers a server admin through Synapse's shared-secret registration.
pub async fn register_admin(server: &TestServer, localpart: &str) -> Session {
    const PATH: &str = "/_synapse/admin/v1/register";
    let nonce = server.get(PATH, None).await.1["nonce"].as_str().expect("nonce").to_owned();
    let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{nonce}\0{localpart}\0pw\0admin").as_bytes());
    let body = json!({"nonce": nonce, "username": localpart, "password": "pw", "admin": true,
                      "mac": hex::encode(mac.finalize().into_bytes())});
    let (status, response) = server.post(PATH, None, body).await;
    assert_eq!(status, 200, "admin registration: {response}");
    Session::from_response(&response)
}
