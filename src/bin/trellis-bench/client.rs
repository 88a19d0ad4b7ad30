//! The benchmark's HTTP client: requests with failure counting, shared-secret registration,
//! `/sync` and sliding sync calls, and the message bodies a sync answer delivered.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) failures: Arc<AtomicU64>,
    /// Register users as server admins (`--admin-users`).
    pub(crate) admin_users: bool,
}

pub(crate) struct User {
    pub(crate) token: String,
}

impl Client {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Option<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                response.bytes().await.ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                eprintln!("request failed: {path}: {status} {text}");
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(error) => {
                eprintln!("request failed: {path}: {error}");
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub(crate) async fn register(&self, secret: &str, name: &str) -> Option<User> {
        let nonce = self.call(reqwest::Method::GET, "/_synapse/admin/v1/register", None, None).await?;
        let nonce = nonce["nonce"].as_str()?.to_owned();
        let password = format!("{name}-password");
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
        let admin = if self.admin_users { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{name}\0{password}\0{admin}").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body =
            json!({"nonce": nonce, "username": name, "password": password, "admin": self.admin_users, "mac": mac});
        let response = self.call(reqwest::Method::POST, "/_synapse/admin/v1/register", None, Some(&body)).await?;
        Some(User { token: response["access_token"].as_str()?.to_owned() })
    }

    /// Creates a public room as the user of `token`; its ID.
    pub(crate) async fn create_room(&self, token: &str) -> Result<String, String> {
        let body = json!({"preset": "public_chat"});
        let created = self
            .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(&body))
            .await
            .ok_or("createRoom failed")?;
        Ok(created["room_id"].as_str().ok_or("no room_id")?.to_owned())
    }

    /// Joins `room` as the user of `token`; `None` when the request failed (counted).
    pub(crate) async fn join(&self, token: &str, room: &str) -> Option<Value> {
        let path = format!("/_matrix/client/v3/join/{}", urlencode(room));
        self.call(reqwest::Method::POST, &path, Some(token), Some(&json!({}))).await
    }

    pub(crate) async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Option<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", urlencode(since)));
        }
        self.call(reqwest::Method::GET, &path, Some(&user.token), None).await
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Message bodies seen in a sync response's joined rooms.
pub(crate) fn bodies_in(sync: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rooms) = sync["rooms"]["join"].as_object() {
        for room in rooms.values() {
            for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                if event["type"] == "m.room.message"
                    && let Some(body) = event["content"]["body"].as_str()
                {
                    out.push(body.to_owned());
                }
            }
        }
    }
    out
}

impl Client {
    /// Message bodies a sync delivered, including what a `limited` timeline left out: as a
    /// client does, those are fetched with /messages from `prev_batch` back to the previous
    /// sync's token.
    pub(crate) async fn bodies_delivered(&self, user: &User, previous_since: &str, sync: &Value) -> Vec<String> {
        let mut out = bodies_in(sync);
        let Some(rooms) = sync["rooms"]["join"].as_object() else { return out };
        for (room_id, room) in rooms {
            if room["timeline"]["limited"] != true {
                continue;
            }
            let Some(mut from) = room["timeline"]["prev_batch"].as_str().map(str::to_owned) else { continue };
            loop {
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&from={}&to={}",
                    urlencode(room_id),
                    urlencode(&from),
                    urlencode(previous_since)
                );
                let Some(page) = self.call(reqwest::Method::GET, &path, Some(&user.token), None).await else { break };
                for event in page["chunk"].as_array().into_iter().flatten() {
                    if event["type"] == "m.room.message"
                        && let Some(body) = event["content"]["body"].as_str()
                    {
                        out.push(body.to_owned());
                    }
                }
                match page["end"].as_str() {
                    Some(end) if page["chunk"].as_array().is_some_and(|c| !c.is_empty()) => from = end.to_owned(),
                    _ => break,
                }
            }
        }
        out
    }
}

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

impl Client {
    /// One sliding sync request on the connection `bench`, from `pos`.
    pub(crate) async fn sliding(&self, user: &User, pos: Option<&str>, timeout_ms: u64, body: &Value) -> Option<Value> {
        let mut path = format!("{SLIDING_SYNC}?timeout={timeout_ms}");
        if let Some(pos) = pos {
            path.push_str(&format!("&pos={}", urlencode(pos)));
        }
        self.call(reqwest::Method::POST, &path, Some(&user.token), Some(body)).await
    }
}

/// Message bodies in a sliding sync answer's rooms.
pub(crate) fn sliding_bodies(answer: &Value) -> Vec<String> {
    let rooms = answer["rooms"].as_object().into_iter().flat_map(|rooms| rooms.values());
    rooms
        .flat_map(|room| room["timeline"].as_array().cloned().unwrap_or_default())
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
