//! MSC4308's sliding sync extension `io.element.msc4308.thread_subscriptions`, as Synapse
//! serves it: the changes of the user's thread subscriptions (MSC4306) since the connection's
//! last answer (all of them on a new connection), the newest `limit` of them, as
//! `subscribed: {room: {root: {automatic, bump_stamp}}}` and `unsubscribed: {room: {root:
//! {bump_stamp}}}`, with a `prev_batch` when older changes were left out (paged through
//! `GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions`). Ruma 0.17 has the
//! extension only behind its `unstable-msc4308` feature, so the request part is read from the
//! body and the answer is added to the serialized response (see `Reply::thread_subscriptions`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Context;
use crate::{
    Result,
    service::{
        Services,
        thread_subscriptions::{SubscriptionChange, changes},
    },
};

/// The extension's name in the request and the answer.
pub const EXTENSION: &str = "io.element.msc4308.thread_subscriptions";
/// Changes sent when the request names no limit (Synapse's default).
const DEFAULT_LIMIT: usize = 100;
/// The largest page (Synapse's).
pub const MAX_LIMIT: usize = 512;

/// The extension's part of a request.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Asked {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    limit: Option<usize>,
}

impl Asked {
    /// Reads the extension's request from the request body (absent or malformed: not asked).
    pub(super) fn from_body(raw_body: &[u8]) -> Self {
        let Ok(body) = serde_json::from_slice::<Value>(raw_body) else { return Self::default() };
        body.get("extensions")
            .and_then(|extensions| extensions.get(EXTENSION))
            .and_then(|part| serde_json::from_value(part.clone()).ok())
            .unwrap_or_default()
    }
}

/// The extension's answer, `None` when not asked or when nothing changed.
pub(super) async fn part(ctx: &Context<'_>, asked: &Asked) -> Result<Option<Value>> {
    if asked.enabled != Some(true) {
        return Ok(None);
    }
    let limit = asked.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let since = ctx.since.map(|answer| answer.token.account_data);
    let page = page(ctx.services, ctx.user, since, ctx.now.account_data, limit).await?;
    Ok(page.map(|(mut body, more)| {
        if let Some(more) = more {
            body.insert("prev_batch".to_owned(), json!(more.to_string()));
        }
        Value::Object(body)
    }))
}

/// The newest `limit` changes at positions in `(since, upto]` as the extension (and the
/// pagination endpoint) shows them, and the position to page back from when there are more;
/// `None` when there are none.
pub async fn page(
    services: &Services,
    user: &ruma::UserId,
    since: Option<u64>,
    upto: u64,
    limit: usize,
) -> Result<Option<(Map<String, Value>, Option<u64>)>> {
    let (changes, more) = changes(services, user, since, upto, limit).await?;
    let Some(oldest) = changes.last().map(|change| change.bump_stamp) else { return Ok(None) };
    let mut subscribed = Map::new();
    let mut unsubscribed = Map::new();
    for SubscriptionChange { room, root, automatic, bump_stamp } in changes {
        let (target, entry) = match automatic {
            Some(automatic) => (&mut subscribed, json!({"automatic": automatic, "bump_stamp": bump_stamp})),
            None => (&mut unsubscribed, json!({"bump_stamp": bump_stamp})),
        };
        let room = target.entry(room.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(room) = room.as_object_mut() {
            room.insert(root, entry);
        }
    }
    let mut body = Map::new();
    if !subscribed.is_empty() {
        body.insert("subscribed".to_owned(), Value::Object(subscribed));
    }
    if !unsubscribed.is_empty() {
        body.insert("unsubscribed".to_owned(), Value::Object(unsubscribed));
    }
    // The next page holds the changes before the oldest one sent.
    Ok(Some((body, more.then(|| oldest.saturating_sub(1)))))
}
