//! Simplified sliding sync (MSC4186, `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`):
//! lists of the user's rooms ordered by their newest "bump" event, each cut to the ranges the
//! client asks for, room subscriptions, and the extensions (to-device, E2EE, account data,
//! receipts, typing). Built on the pieces `/sync` uses (`service::sync`: stream tokens, timeline
//! formatting, device parts; `service::rooms`: timeline windows, state reads, summaries).
//!
//! Files: `connection.rs` (per-connection state and `pos`), `lists.rs` (which rooms, in which
//! order, in which list), `room_data.rs` (what is sent of one room), `extensions.rs`.
//! A request that finds nothing new waits on the [`Notifier`](super::notifier::Notifier) until a
//! change that concerns it or its `timeout` passes, as `/sync` does (`sync::listen`).

mod connection;
mod extensions;
mod lists;
mod room_data;
pub mod thread_subscriptions;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    DeviceId, OwnedRoomId, OwnedUserId, UserId,
    api::client::sync::sync_events::v5::{self, response},
    events::AnyStrippedStateEvent,
    serde::Raw,
};
use serde::Deserialize;

pub use connection::{Answer, Connections, IDLE_EXPIRY, ListSent, MAX_CONNECTIONS, RoomSent};

use super::{
    Services,
    rooms::sliding_read::FactsCache,
    sync::{SyncToken, current_token},
};
use crate::Result;

/// The longest a request waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The most events one room's timeline carries, whatever the client asks.
const MAX_TIMELINE_LIMIT: u64 = 100;
/// The most rooms one request sends (lists' ranges and subscriptions together).
const MAX_ROOMS: usize = 1000;

/// The sliding sync service: its connections and the room facts it orders lists by.
#[derive(Default)]
pub struct SlidingSync {
    pub connections: Connections,
    facts: Arc<FactsCache>,
}

/// What a request is answered with: ruma's response, and the stripped state of each knocked
/// room sent, which ruma 0.17's `Room` has no `knock_state` field for (the handler adds it to
/// the serialized response).
pub struct Reply {
    pub response: v5::Response,
    pub knock_states: BTreeMap<OwnedRoomId, Vec<Raw<AnyStrippedStateEvent>>>,
    /// MSC4308's extension (`extensions.io.element.msc4308.thread_subscriptions`), if any.
    pub thread_subscriptions: Option<serde_json::Value>,
}

/// The request fields ruma 0.17's types do not carry, read from the body: the `spaces`, `tags`
/// and `not_tags` list filters and `unsubscribe_rooms` (older MSC drafts; clients still send
/// them).
#[derive(Debug, Default, Deserialize)]
struct Extra {
    #[serde(default)]
    lists: BTreeMap<String, ExtraList>,
    #[serde(default)]
    unsubscribe_rooms: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ExtraList {
    #[serde(default)]
    filters: Option<ExtraFilters>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct ExtraFilters {
    #[serde(default)]
    spaces: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    not_tags: Vec<String>,
}

/// How one room is to be sent: the widest of the lists and subscriptions that include it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomConfig {
    timeline_limit: u64,
    required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn merge(&mut self, timeline_limit: u64, required_state: &[(ruma::events::StateEventType, String)]) {
        self.timeline_limit = self.timeline_limit.max(timeline_limit.min(MAX_TIMELINE_LIMIT));
        self.required_state.extend(required_state.iter().map(|(kind, key)| (kind.to_string(), key.clone())));
    }

    /// A short text naming the configuration, to tell when it changed.
    fn key(&self) -> String {
        format!("{}|{:?}", self.timeline_limit, self.required_state)
    }
}

/// What every part of one answer shares.
pub(crate) struct Context<'a> {
    services: &'a Services,
    user: &'a UserId,
    device: &'a DeviceId,
    /// The answer the request's `pos` names (`None` on a new connection).
    since: Option<&'a Answer>,
    now: SyncToken,
    ignored: HashSet<OwnedUserId>,
    /// Rooms `m.direct` names.
    direct: HashSet<OwnedRoomId>,
    /// Rooms with receipts written since the connection's last answer (their unread counts may
    /// have changed).
    receipt_rooms: HashSet<OwnedRoomId>,
}

impl SlidingSync {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Runs one sliding sync request for `user`'s `device`. `raw_body` is the request body as sent
/// (for the fields ruma drops).
pub async fn sync(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    request: v5::Request,
    raw_body: &[u8],
) -> Result<Reply> {
    let extra: Extra = serde_json::from_slice(raw_body).unwrap_or_default();
    let threads_asked = thread_subscriptions::Asked::from_body(raw_body);
    let conn_id = request.conn_id.clone().unwrap_or_default();
    let since = services.sliding_sync.connections.resume(user, device, &conn_id, request.pos.as_deref())?;
    let timeout = request.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    // The user counts as syncing (for presence) until this request returns.
    let _syncing = services.presence.syncing(user, &request.set_presence).await?;
    let unsubscribed: HashSet<OwnedRoomId> =
        extra.unsubscribe_rooms.iter().filter_map(|room| OwnedRoomId::try_from(room.as_str()).ok()).collect();
    // Rooms unsubscribed from are forgotten: sent afresh if they come back.
    let since = since.map(|answer| {
        let mut answer = (*answer).clone();
        answer.rooms.retain(|room, _| !unsubscribed.contains(room));
        answer
    });
    // Only a request that continues a connection, with a timeout, can wait; the others register
    // nothing (which costs a read of the user's rooms).
    let may_wait = since.is_some() && !timeout.is_zero();
    loop {
        // Register before reading the streams: a change after the read wakes the wait below.
        let changes = match may_wait {
            true => Some(super::sync::listen(services, user, device).await?),
            false => None,
        };
        let now = current_token(services).await?;
        let since = since.as_ref().map(|answer| Answer { token: answer.token.at_most(now), ..answer.clone() });
        let ignored = services.account_data.ignored_users(user).await?;
        let direct = lists::direct_rooms(services, user).await?;
        let receipt_rooms = match &since {
            Some(answer) => services.receipts.rooms_changed(answer.token.receipts, now.receipts).await?,
            None => Vec::new(),
        };
        let receipt_rooms = receipt_rooms.into_iter().collect();
        let ctx = Context { services, user, device, since: since.as_ref(), now, ignored, direct, receipt_rooms };
        let (mut reply, answer) = build(&ctx, &request, &extra).await?;
        reply.thread_subscriptions = thread_subscriptions::part(&ctx, &threads_asked).await?;
        let response = &mut reply.response;
        let unchanged = since.as_ref().is_some_and(|previous| {
            response.rooms.is_empty()
                && !extensions_changed(&response.extensions)
                && reply.thread_subscriptions.is_none()
                && previous.lists == answer.lists
                && previous.key_counts == answer.key_counts
        });
        if unchanged && !services.notifier.is_shutting_down() {
            // Nothing new: wait for a stream to move, then look again.
            if let Some(changes) = &changes
                && changes.wait_until(deadline).await
            {
                continue;
            }
        }
        response.pos = services.sliding_sync.connections.record(user, device, &conn_id, answer);
        response.txn_id = request.txn_id.clone();
        return Ok(reply);
    }
}

/// Whether the extensions carry news. Key counts are in every E2EE part (they count as news
/// only when they changed) and a to-device part always has its `next_batch`.
fn extensions_changed(extensions: &response::Extensions) -> bool {
    extensions.to_device.as_ref().is_some_and(|part| !part.events.is_empty())
        || !extensions.e2ee.device_lists.is_empty()
        || !extensions.account_data.is_empty()
        || !extensions.receipts.is_empty()
        || !extensions.typing.is_empty()
}

async fn build(ctx: &Context<'_>, request: &v5::Request, extra: &Extra) -> Result<(Reply, Answer)> {
    let mut response = v5::Response::new(String::new());
    let mut knock_states = BTreeMap::new();
    let mut answer = Answer {
        token: ctx.now,
        rooms: ctx.since.map(|since| since.rooms.clone()).unwrap_or_default(),
        lists: BTreeMap::new(),
        key_counts: String::new(),
        list_rooms: Default::default(),
    };
    let (candidates, list_rooms) = lists::candidates(ctx).await?;
    answer.list_rooms = list_rooms;
    let mut selected: BTreeMap<OwnedRoomId, RoomConfig> = BTreeMap::new();
    let mut list_rooms: BTreeMap<String, Vec<OwnedRoomId>> = BTreeMap::new();
    let mut tags = lists::TagCache::default();
    for (name, list) in &request.lists {
        let filters = extra.lists.get(name).and_then(|l| l.filters.clone()).unwrap_or_default();
        let ordered = lists::apply(ctx, &candidates, list.filters.as_ref(), &filters, &mut tags).await?;
        let in_range = lists::in_ranges(&ordered, &list.ranges);
        for room in &in_range {
            if selected.len() >= MAX_ROOMS && !selected.contains_key(room) {
                break;
            }
            let config = selected.entry(room.clone()).or_default();
            config.merge(list.room_details.timeline_limit.into(), &list.room_details.required_state);
        }
        let count = ordered.len() as u64;
        response.lists.insert(name.clone(), list_count(count));
        answer.lists.insert(name.clone(), ListSent { count, rooms: in_range.clone() });
        list_rooms.insert(name.clone(), in_range);
    }
    let mut subscribed = Vec::new();
    for (room, subscription) in &request.room_subscriptions {
        if !candidates.iter().any(|c| c.room_id == *room) || selected.len() >= MAX_ROOMS {
            continue;
        }
        let config = selected.entry(room.clone()).or_default();
        config.merge(subscription.timeline_limit.into(), &subscription.required_state);
        subscribed.push(room.clone());
    }
    let mut initial_rooms = HashSet::new();
    for (room_id, config) in &selected {
        let Some(candidate) = candidates.iter().find(|c| c.room_id == *room_id) else { continue };
        let sent = answer.rooms.get(room_id);
        if let Some(entry) = room_data::room(ctx, candidate, config, sent).await? {
            if entry.initial {
                initial_rooms.insert(room_id.clone());
            }
            if let Some(state) = entry.knock_state {
                knock_states.insert(room_id.clone(), state);
            }
            answer.rooms.insert(room_id.clone(), entry.sent);
            response.rooms.insert(room_id.clone(), entry.room);
        }
    }
    let joined: HashSet<OwnedRoomId> =
        candidates.iter().filter(|c| c.membership == "join").map(|c| c.room_id.clone()).collect();
    let scope = extensions::Scope {
        list_rooms: &list_rooms,
        subscribed: &subscribed,
        initial: &initial_rooms,
        joined: &joined,
    };
    response.extensions = extensions::collect(ctx, &request.extensions, &scope).await?;
    let e2ee = &response.extensions.e2ee;
    answer.key_counts = format!("{:?} {:?}", e2ee.device_one_time_keys_count, e2ee.device_unused_fallback_key_types);
    Ok((Reply { response, knock_states, thread_subscriptions: None }, answer))
}

/// A list's entry (`response::List` is non-exhaustive: built from `Default`).
fn list_count(count: u64) -> response::List {
    let mut list = response::List::default();
    list.count = ruma::UInt::try_from(count).unwrap_or(ruma::UInt::MAX);
    list
}
