//! `/sync`: what changed for a user between two sync tokens. A sync reads every stream up to
//! its positions at the start (the "snapshot"), builds the rooms and account data parts, and,
//! when an incremental sync finds nothing and the client asked to wait, waits on the
//! [`Notifier`](super::notifier::Notifier) until a change that concerns the user (see
//! [`listen`]) or the timeout passes.
//!
//! Files: `token.rs` (the token format), `filter.rs` (resolving and applying filters),
//! `rooms.rs` (the joined, invited and left rooms), `unread.rs` (unread counts by push
//! rules), `e2ee.rs` (to-device messages, device
//! lists, key counts).
//! `presence.rs`: the top-level presence part; `lazy_members.rs`: member events already sent;
//! `event_fields.rs`: the filter's `event_fields`.

mod e2ee;
mod event_fields;
pub mod filter;
mod lazy_members;
mod presence;
mod rooms;
mod token;
mod unread;

use std::{collections::HashMap, time::Duration};

use ruma::{
    DeviceId, OwnedRoomId, UserId,
    api::client::{filter::FilterDefinition, sync::sync_events::v3},
    presence::PresenceState,
    serde::Raw,
};
use serde::Serialize;

pub use e2ee::{DeviceListWindow, device_list_changes};
// Shared with sliding sync (`service::sliding_sync`).
pub(crate) use e2ee::{device_lists, key_counts, to_device};
pub use lazy_members::LazyMemberCache;
pub(crate) use rooms::{sync_event, timeline_events};
pub use token::SyncToken;

use super::{Services, account_data::AccountDataEntry};
use crate::{Error, Result};

/// The longest a sync waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A sync request, as the handler passes it on.
#[derive(Debug, Default)]
pub struct SyncRequest {
    pub filter: Option<v3::Filter>,
    pub since: Option<String>,
    pub full_state: bool,
    pub timeout: Option<Duration>,
    /// The client's `set_presence` (online by default).
    pub set_presence: PresenceState,
    /// `use_state_after` (MSC4222, spec v1.16): rooms carry `state_after`, the state at the end
    /// of the timeline, instead of `state`, the state before it.
    pub use_state_after: bool,
}

/// What every part of one sync shares.
struct Context<'a> {
    services: &'a Services,
    user: &'a UserId,
    device: &'a DeviceId,
    filter: &'a FilterDefinition,
    since: Option<SyncToken>,
    now: SyncToken,
    full_state: bool,
    /// `state_after` instead of `state` (MSC4222).
    use_state_after: bool,
    /// Changed room account data, by room ID.
    room_account_data: HashMap<String, Vec<AccountDataEntry>>,
    /// `m.receipt` content of the joined rooms whose receipts changed.
    receipts: HashMap<OwnedRoomId, serde_json::Value>,
    /// Users whose events and invites this user ignores.
    ignored: std::collections::HashSet<ruma::OwnedUserId>,
}

/// Serialises a JSON value into a ruma `Raw`.
pub(crate) fn raw_json<T, V: Serialize>(value: &V) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|e| Error::internal(format!("cannot serialise event: {e}")))
}

pub(crate) fn raw_account_data<T>(entry: &AccountDataEntry) -> Result<Raw<T>> {
    raw_json(&serde_json::json!({ "type": entry.event_type, "content": entry.content }))
}

/// Every sync stream's newest position.
pub(crate) async fn current_token(services: &Services) -> Result<SyncToken> {
    // The stored counters are read in one trip to the storage threads (every sync reads them).
    let counters = services.db.run(stored_positions).await?;
    Ok(token_from(services, counters))
}

/// The stored stream counters: account data, to-device, receipts, presence.
fn stored_positions(db: &crate::storage::Db) -> Result<[u64; 4]> {
    use crate::service::{account_data::AccountData, presence::Presence, receipts::Receipts, to_device::ToDevice};
    Ok([
        AccountData::position_in(db)?,
        ToDevice::position_in(db)?,
        Receipts::position_in(db)?,
        Presence::position_in(db)?,
    ])
}

/// The token of the stored counters and the positions kept in memory, read after them.
fn token_from(services: &Services, [account_data, to_device, receipts, presence]: [u64; 4]) -> SyncToken {
    SyncToken {
        events: services.rooms.current_position(),
        account_data,
        to_device,
        key_changes: services.keys.current_position(),
        typing: services.typing.serial(),
        receipts,
        presence,
    }
}

/// What one pass of a sync reads before anything else, in one trip to the storage threads: the
/// streams' positions, the device's key counts and the users the user ignores.
struct Snapshot {
    now: SyncToken,
    key_counts: (std::collections::BTreeMap<String, u64>, Vec<String>),
    ignored: std::collections::HashSet<ruma::OwnedUserId>,
}

async fn snapshot(services: &Services, user: &UserId, device: &DeviceId) -> Result<Snapshot> {
    use crate::service::{account_data::AccountData, keys::Keys};
    let (user, device) = (user.to_owned(), device.to_owned());
    let (counters, key_counts, ignored) = services
        .db
        .run(move |db| {
            Ok((
                stored_positions(db)?,
                Keys::key_counts_in(db, &user, &device)?,
                AccountData::ignored_users_in(db, &user)?,
            ))
        })
        .await?;
    Ok(Snapshot { now: token_from(services, counters), key_counts, ignored })
}

/// Registers a sync of `user`'s `device` with the notifier, before it reads the streams. What
/// each stream it reads needs woken:
/// - room events, typing, receipts (and the unread counts they move): the joined rooms;
/// - the user's memberships (invites, joins from another device, leaves, kicks, knocks
///   answered), account data (room account data, tags, ignored users, push rules, thread
///   subscriptions): the user, whose key every member event about them wakes;
/// - to-device messages and key counts: the device (and the user, for messages to all devices);
/// - device lists and presence of room-mates: the rooms (the notifier wakes a changed user's
///   rooms) and the user (their own);
/// - shutdown: every registration.
///
/// The user is listened to before the room list is read, so a join landing between the two
/// wakes the user's key.
pub(crate) async fn listen<'a>(
    services: &'a Services,
    user: &UserId,
    device: &DeviceId,
) -> Result<crate::service::notifier::Registration<'a>> {
    use crate::service::notifier::WakeKey;
    let mut registration = services
        .notifier
        .register([WakeKey::User(user.to_owned()), WakeKey::Device(user.to_owned(), device.to_owned())]);
    registration.listen_rooms(user, services.rooms.user_room_list(user).await?);
    Ok(registration)
}

/// Runs one `/sync` for `user`'s `device`.
pub async fn sync(services: &Services, user: &UserId, device: &DeviceId, request: SyncRequest) -> Result<v3::Response> {
    let since = request.since.as_deref().map(SyncToken::parse).transpose()?;
    let filter = filter::resolve(&services.account_data, user, request.filter.clone()).await?;
    let timeout = request.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    // The user counts as syncing (for presence) until this sync returns.
    let _syncing = services.presence.syncing(user, &request.set_presence).await?;
    // Only an incremental sync with a timeout can wait; the others register nothing (which
    // costs a read of the user's rooms).
    let may_wait = since.is_some() && !request.full_state && !timeout.is_zero();
    loop {
        // Register before reading the streams: a change after the read wakes the wait below.
        let changes = match may_wait {
            true => Some(listen(services, user, device).await?),
            false => None,
        };
        // A sync close behind the event stream (a woken long-poll, a client that polls often)
        // shows a few rooms: its reads, a handful of short ones in a row, run in place.
        let close =
            since.is_some_and(|s| services.rooms.current_position().saturating_sub(s.events) <= IN_PLACE_EVENTS);
        let pass = read_pass(services, user, device, &filter, since, &request);
        let response = if close { crate::storage::in_place(pass).await? } else { pass.await? };
        let empty = response.rooms.is_empty()
            && response.account_data.is_empty()
            && response.to_device.is_empty()
            && response.device_lists.is_empty()
            && response.presence.is_empty();
        let Some(changes) = changes else { return Ok(response) };
        if !empty || services.notifier.is_shutting_down() {
            return Ok(response);
        }
        if !changes.wait_until(deadline).await {
            // Timed out: an empty sync with the new token.
            return Ok(response);
        }
    }
}

/// How far behind the event stream a sync's token may be for its reads to run in place (see
/// `storage::in_place`): at most this many events, so at most this many rooms to read on one
/// thread. Further behind, the rooms are read a few at a time on the storage threads, using
/// every core.
const IN_PLACE_EVENTS: u64 = 32;

/// One pass of a sync: the snapshot of the streams, then the response up to it.
async fn read_pass(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    filter: &FilterDefinition,
    since: Option<SyncToken>,
    request: &SyncRequest,
) -> Result<v3::Response> {
    let snapshot = snapshot(services, user, device).await?;
    let now = snapshot.now;
    let since = since.map(|s| s.at_most(now));
    build(services, user, device, filter, since, snapshot, request).await
}

async fn build(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    filter: &FilterDefinition,
    since: Option<SyncToken>,
    Snapshot { now, key_counts, ignored }: Snapshot,
    request: &SyncRequest,
) -> Result<v3::Response> {
    let (full_state, use_state_after) = (request.full_state, request.use_state_after);
    let (to_device, to_device_position) = e2ee::to_device(services, user, device, since, now.to_device).await?;
    let next_batch = SyncToken { to_device: to_device_position, ..now };
    let mut response = v3::Response::new(next_batch.to_string());
    response.to_device.events = to_device;
    if let Some(since) = since {
        response.device_lists = e2ee::device_lists(services, user, since, now).await?;
    }
    let (counts, fallback) = e2ee::key_counts_to_ruma(key_counts);
    response.device_one_time_keys_count = counts;
    response.device_unused_fallback_key_types = Some(fallback);
    response.presence.events =
        presence::collect(services, user, &filter.presence, since.map(|s| s.presence), now.presence).await?;
    let mut room_account_data: HashMap<String, Vec<AccountDataEntry>> = HashMap::new();
    let mut push_rules_sent = false;
    // A stream whose position has not moved since the token has nothing to read.
    let account_data = match since {
        Some(since) if since.account_data >= now.account_data => Vec::new(),
        _ => services.account_data.changes(user, since.map(|s| s.account_data), now.account_data).await?,
    };
    for entry in account_data {
        if entry.room.is_empty() {
            if filter::account_data_allowed(&filter.account_data, &entry.event_type) {
                push_rules_sent |= entry.event_type == crate::service::push::PUSH_RULES_TYPE;
                response.account_data.events.push(raw_account_data(&entry)?);
            }
        } else {
            room_account_data.entry(entry.room.clone()).or_default().push(entry);
        }
    }
    // Clients expect their push rules in an initial sync (Synapse always sends them; Complement's
    // `TestPushSync`): a user who never changed them has none stored, so the defaults are sent.
    if since.is_none()
        && !push_rules_sent
        && filter::account_data_allowed(&filter.account_data, crate::service::push::PUSH_RULES_TYPE)
    {
        let ruleset = services.push.ruleset(user).await?;
        let event =
            serde_json::json!({ "type": crate::service::push::PUSH_RULES_TYPE, "content": { "global": ruleset } });
        response.account_data.events.push(raw_json(&event)?);
    }
    let receipts = match since {
        Some(since) if since.receipts >= now.receipts => HashMap::new(),
        _ => {
            let joined: Vec<OwnedRoomId> = services
                .rooms
                .user_room_list(user)
                .await?
                .iter()
                .filter(|(_, m)| m.membership == "join")
                .map(|(room, _)| room.clone())
                .collect();
            services.receipts.for_sync(user, joined, since.map(|s| s.receipts), now.receipts).await?
        }
    };
    if since.is_none() || full_state {
        services.lazy_members.reset(user, device);
    }
    let context = Context {
        services,
        user,
        device,
        filter,
        since,
        now,
        full_state,
        use_state_after,
        room_account_data,
        receipts,
        ignored,
    };
    response.rooms = rooms::collect(&context).await?;
    event_fields::apply(&mut response, filter.event_fields.as_deref());
    Ok(response)
}
