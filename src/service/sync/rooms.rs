//! The `rooms` part of a sync: which rooms to show (joined, invited, left) and, for each, the
//! timeline window since the last sync, the state before it, room account data and the summary.

use std::{borrow::Cow, collections::HashSet, sync::Arc};

use futures_util::StreamExt;

use ruma::{
    OwnedRoomId, RoomId, UInt,
    api::client::filter::{EventFormat, LazyLoadOptions},
    api::client::sync::sync_events::v3::{
        Ephemeral, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom, RoomAccountData,
        RoomSummary, Rooms, State, Timeline,
    },
    events::{AnySyncStateEvent, StateEventType, TimelineEventType},
    serde::Raw,
};

use super::{Context, filter, raw_account_data, raw_json, unread};
use crate::{
    Result,
    service::rooms::{
        EventPredicate, Pdu, RoomSyncQuery, RoomSyncRead, ServedWith, StateChooser, StateQuery, StateSelection,
        SyncStateEvent, TimelineWindow,
    },
    storage::membership_tables::OutOfBand,
};

/// A room's timeline and state for one sync.
struct Section {
    timeline: Timeline,
    state: Vec<Raw<AnySyncStateEvent>>,
}

/// The state part as the client asked for it: `state` or `state_after` (MSC4222).
fn state_part(ctx: &Context<'_>, events: Vec<Raw<AnySyncStateEvent>>) -> State {
    if ctx.use_state_after { State::After(events.into()) } else { State::Before(events.into()) }
}

/// An event in the sync format (a client event without `room_id`), or with the filter's
/// `event_format: federation` the PDU as stored (hashes, signatures, `auth_events`,
/// `prev_events`).
pub(crate) fn sync_event<T>(pdu: &Pdu, format: &EventFormat) -> Result<Raw<T>> {
    sync_event_with_txn(pdu, format, None, None, None)
}

/// Timeline events in the sync format: the syncing device's own events carry the transaction ID
/// it sent them with, every event its bundled aggregations and the user's membership at it
/// (MSC4115, as Synapse sends it). Sliding sync formats its timelines with it too.
pub(crate) async fn timeline_events<T>(
    services: &crate::service::Services,
    user: &ruma::UserId,
    device: &ruma::DeviceId,
    events: &[crate::service::rooms::StoredEvent],
    format: &EventFormat,
) -> Result<Vec<Raw<T>>> {
    let bundles = *format != EventFormat::Federation;
    let served = services.rooms.served_with(user, events.to_vec(), bundles).await?;
    format_timeline(device, events, format, served)
}

/// Timeline events in the sync format, with what they are served with.
fn format_timeline<T>(
    device: &ruma::DeviceId,
    events: &[crate::service::rooms::StoredEvent],
    format: &EventFormat,
    ServedWith { transactions, mut bundles, memberships }: ServedWith,
) -> Result<Vec<Raw<T>>> {
    events
        .iter()
        .zip(&memberships)
        .map(|(e, membership)| {
            let txn = transactions
                .get(e.pdu.event_id.as_str())
                .filter(|(sender_device, _)| sender_device == device.as_str())
                .map(|(_, txn)| txn.as_str());
            let bundle = bundles.remove(e.pdu.event_id.as_str());
            sync_event_with_txn(&e.pdu, format, txn, bundle, Some(membership))
        })
        .collect()
}

/// An event in the sync format, with the transaction ID its sender's device gave it and its
/// bundled aggregations (`unsigned.m.relations`).
fn sync_event_with_txn<T>(
    pdu: &Pdu,
    format: &EventFormat,
    transaction_id: Option<&str>,
    relations: Option<serde_json::Value>,
    membership: Option<&str>,
) -> Result<Raw<T>> {
    if *format == EventFormat::Federation {
        return pdu.raw_json().map(Raw::from_json).map_err(crate::Error::internal);
    }
    let Some(relations) = relations else {
        // The common case, serialised at once from the event's parts.
        let unsigned_fields = [("transaction_id", transaction_id), ("membership", membership)];
        let extra: Vec<(&str, &str)> = unsigned_fields.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let json = pdu
            .client_json(false, &extra)
            .map_err(|e| crate::Error::internal(format!("cannot serialise event: {e}")))?;
        return Ok(Raw::from_json(json));
    };
    let mut event = pdu.to_client_event();
    let mut relations = relations;
    // Events bundled inside are in the sync format too.
    for path in ["/m.thread/latest_event", "/m.thread/latest_event/unsigned/m.relations/m.replace", "/m.replace"] {
        if let Some(bundled) = relations.pointer_mut(path).and_then(serde_json::Value::as_object_mut) {
            bundled.remove("room_id");
        }
    }
    crate::service::rooms::attach_relations(&mut event, relations);
    if let Some(object) = event.as_object_mut() {
        object.remove("room_id");
        let unsigned_fields = [("transaction_id", transaction_id), ("membership", membership)];
        for (key, value) in unsigned_fields.into_iter().filter_map(|(k, v)| Some((k, v?))) {
            let unsigned = object.entry("unsigned").or_insert_with(|| serde_json::json!({}));
            if let Some(unsigned) = unsigned.as_object_mut() {
                unsigned.insert(key.to_owned(), value.into());
            }
        }
    }
    raw_json(&event)
}

fn count(n: u64) -> Option<UInt> {
    Some(UInt::try_from(n).unwrap_or(UInt::MAX))
}

/// Every room section of the sync.
pub(super) async fn collect(ctx: &Context<'_>) -> Result<Rooms> {
    let mut rooms = Rooms::new();
    let mut joined = Vec::new();
    let since = ctx.since.map(|s| s.events);
    let upto = ctx.now.events;
    // Incrementally, a joined room without events or account data since is left out early.
    let changed = match since {
        Some(s) if !ctx.full_state && s >= upto => Some(HashSet::new()),
        Some(s) if !ctx.full_state => ctx.services.rooms.rooms_with_events(s, upto).await?,
        _ => None,
    };
    let list = ctx.services.rooms.user_room_list(ctx.user).await?;
    for (room_id, record) in list.iter() {
        if !filter::room_allowed(ctx.filter, room_id) {
            continue;
        }
        // A membership newer than this sync's snapshot: use the membership at the snapshot.
        let (membership, position) = if record.position <= upto {
            (Cow::Borrowed(record.membership.as_str()), Some(record.position))
        } else {
            match ctx.services.rooms.membership_event_at(ctx.user, room_id, upto).await? {
                Some((membership, at)) => (Cow::Owned(membership), at),
                None => continue,
            }
        };
        match &*membership {
            "join" => {
                let quiet = changed.as_ref().is_some_and(|rooms| !rooms.contains(room_id))
                    && !ctx.room_account_data.contains_key(room_id.as_str())
                    && ephemeral(ctx, room_id)?.is_empty();
                if quiet {
                    continue;
                }
                joined.push((room_id.clone(), position));
            }
            "invite" => {
                let new = match since {
                    None => true,
                    Some(s) => changed_since(ctx, room_id, &membership, position, s).await?,
                };
                if new && let Some(invited) = invited_room(ctx, room_id).await? {
                    rooms.invite.insert(room_id.clone(), invited);
                }
            }
            "knock" => {
                let new = match since {
                    None => true,
                    Some(s) => changed_since(ctx, room_id, &membership, position, s).await?,
                };
                if new {
                    let mut state = KnockState::new();
                    // A knock on a room of other servers: the stripped state its server sent.
                    state.events = match ctx.services.rooms.out_of_band(ctx.user, room_id).await? {
                        Some(record) => out_of_band_stripped_state(ctx, &record)?,
                        None => stripped_state(ctx, room_id).await?,
                    };
                    rooms.knock.insert(room_id.clone(), KnockedRoom::from(state));
                }
            }
            "leave" | "ban" => {
                let show = match since {
                    // A forgotten room is left out of initial syncs; an incremental one still
                    // shows a leave that happened after its token.
                    None => ctx.filter.room.include_leave && !record.forgotten,
                    Some(s) => changed_since(ctx, room_id, &membership, position, s).await?,
                };
                if show {
                    let left = match ctx.services.rooms.out_of_band(ctx.user, room_id).await? {
                        Some(record) => out_of_band_left_room(ctx, &record)?,
                        None => left_room(ctx, room_id, position.unwrap_or(upto)).await?,
                    };
                    rooms.leave.insert(room_id.clone(), left);
                }
            }
            _ => {}
        }
    }
    // Joined rooms are built a few at a time: their reads run on the storage threads, so both
    // cores work and one room's round trips to the pool overlap another's.
    // (A loop, not a closure: the sync future must stay `Send` for every lifetime.)
    let mut builds = Vec::with_capacity(joined.len());
    for (room_id, position) in &joined {
        builds.push(joined_room(ctx, room_id, *position));
    }
    let built: Vec<_> = futures_util::stream::iter(builds).buffered(ROOMS_AT_ONCE).collect().await;
    for ((room_id, _), room) in joined.into_iter().zip(built) {
        if let Some(room) = room? {
            rooms.join.insert(room_id, room);
        }
    }
    Ok(rooms)
}

/// How many joined rooms one sync builds at the same time.
const ROOMS_AT_ONCE: usize = 6;

/// Whether the membership changed after stream position `since`.
async fn changed_since(
    ctx: &Context<'_>,
    room_id: &RoomId,
    membership: &str,
    position: Option<u64>,
    since: u64,
) -> Result<bool> {
    Ok(match position {
        Some(position) => position > since,
        None => ctx.services.rooms.membership_at(ctx.user, room_id, since).await?.as_deref() != Some(membership),
    })
}

fn room_account_data(ctx: &Context<'_>, room_id: &RoomId) -> Result<RoomAccountData> {
    let mut data = RoomAccountData::new();
    let filter = &ctx.filter.room.account_data;
    if !filter::room_event_room_allowed(filter, room_id) {
        return Ok(data);
    }
    for entry in ctx.room_account_data.get(room_id.as_str()).into_iter().flatten() {
        if filter::room_event_type_allowed(filter, &entry.event_type) {
            data.events.push(raw_account_data(entry)?);
        }
    }
    Ok(data)
}

/// Ephemeral events of a joined room: receipts and who is typing, when they changed since the
/// last sync.
fn ephemeral(ctx: &Context<'_>, room_id: &RoomId) -> Result<Ephemeral> {
    let mut ephemeral = Ephemeral::new();
    let filter = &ctx.filter.room.ephemeral;
    if !filter::room_event_room_allowed(filter, room_id) {
        return Ok(ephemeral);
    }
    if filter::room_event_type_allowed(filter, "m.receipt")
        && let Some(content) = ctx.receipts.get(room_id)
    {
        ephemeral.events.push(raw_json(&serde_json::json!({ "type": "m.receipt", "content": content }))?);
    }
    if !filter::room_event_type_allowed(filter, "m.typing") {
        return Ok(ephemeral);
    }
    if let Some(users) = ctx.services.typing.typing_since(room_id, ctx.since.map(|s| s.typing)) {
        ephemeral.events.push(raw_json(&serde_json::json!({
            "type": "m.typing",
            "content": { "user_ids": users },
        }))?);
    }
    Ok(ephemeral)
}

async fn joined_room(
    ctx: &Context<'_>,
    room_id: &OwnedRoomId,
    membership_position: Option<u64>,
) -> Result<Option<JoinedRoom>> {
    let since = ctx.since.map(|s| s.events);
    let (section, newly_joined, summary) = section(ctx, room_id, ctx.now.events, None).await?;
    let account_data = room_account_data(ctx, room_id)?;
    let ephemeral = ephemeral(ctx, room_id)?;
    let unchanged = section.timeline.events.is_empty()
        && section.state.is_empty()
        && account_data.is_empty()
        && ephemeral.is_empty();
    if since.is_some() && !newly_joined && !ctx.full_state && unchanged {
        return Ok(None);
    }
    let summary = summary.unwrap_or_default();
    let mut room = JoinedRoom::new();
    room.summary = RoomSummary::new();
    room.summary.heroes = summary.heroes;
    room.summary.joined_member_count = count(summary.joined);
    room.summary.invited_member_count = count(summary.invited);
    (room.unread_notifications, room.unread_thread_notifications) =
        unread::counts(ctx, room_id, membership_position).await?;
    room.timeline = section.timeline;
    room.state = state_part(ctx, section.state);
    room.account_data = account_data;
    room.ephemeral = ephemeral;
    Ok(Some(room))
}

async fn left_room(ctx: &Context<'_>, room_id: &OwnedRoomId, left_at: u64) -> Result<LeftRoom> {
    let full = ctx.since.is_none();
    let (section, _, _) = section(ctx, room_id, left_at.min(ctx.now.events), Some(full)).await?;
    let mut room = LeftRoom::new();
    room.timeline = section.timeline;
    room.state = state_part(ctx, section.state);
    room.account_data = room_account_data(ctx, room_id)?;
    Ok(room)
}

/// An invite, unless it comes from a user this one ignores.
async fn invited_room(ctx: &Context<'_>, room_id: &OwnedRoomId) -> Result<Option<InvitedRoom>> {
    if let Some(record) = ctx.services.rooms.out_of_band(ctx.user, room_id).await? {
        let inviter = record.invite["sender"].as_str().and_then(|sender| ruma::UserId::parse(sender).ok());
        if let Some(inviter) = inviter
            && invite_hidden(ctx, &inviter).await?
        {
            return Ok(None);
        }
        return Ok(Some(InvitedRoom::from(InviteState::from(out_of_band_stripped_state(ctx, &record)?))));
    }
    let state = ctx.services.rooms.invite_state(room_id, ctx.user).await?;
    let invite = state.iter().find(|pdu| pdu.state_key.as_deref() == Some(ctx.user.as_str()));
    if let Some(invite) = invite
        && invite_hidden(ctx, &invite.sender).await?
    {
        return Ok(None);
    }
    let events: Vec<Raw<_>> = state.iter().map(|pdu| raw_json(&pdu.to_stripped_state())).collect::<Result<_>>()?;
    Ok(Some(InvitedRoom::from(InviteState::from(events))))
}

/// Whether an invite from `inviter` stays out of the user's syncs: they ignore the inviter, or
/// their invite permission config ignores or blocks them (spec v1.18, MSC4155).
async fn invite_hidden(ctx: &Context<'_>, inviter: &ruma::UserId) -> Result<bool> {
    Ok(ctx.ignored.contains(inviter)
        || ctx.services.account_data.invite_decision(ctx.user, inviter).await?
            != crate::service::invite_filter::Decision::Allow)
}

/// The stripped state of an invite received over federation for a room this server is not in:
/// what the inviting server sent, and the invite itself (whose content may say `is_direct`);
/// likewise for a knock the room's server accepted, with the knock.
fn out_of_band_stripped_state<T>(ctx: &Context<'_>, record: &OutOfBand) -> Result<Vec<Raw<T>>> {
    let own = |event: &serde_json::Value| {
        event["type"] == "m.room.member" && event["state_key"].as_str() == Some(ctx.user.as_str())
    };
    let invite = serde_json::json!({
        "type": record.invite["type"],
        "state_key": record.invite["state_key"],
        "sender": record.invite["sender"],
        "content": record.invite["content"],
    });
    record.stripped_state.iter().filter(|event| !own(event)).chain([&invite]).map(raw_json).collect()
}

/// A rejected out-of-band invite: the leave in the timeline, the room's events being elsewhere.
fn out_of_band_left_room(ctx: &Context<'_>, record: &OutOfBand) -> Result<LeftRoom> {
    let mut room = LeftRoom::new();
    if let Some(leave) = &record.leave {
        let mut event = serde_json::json!({
            "type": leave["type"],
            "state_key": leave["state_key"],
            "sender": leave["sender"],
            "content": leave["content"],
            "origin_server_ts": leave["origin_server_ts"],
            "event_id": record.event_id,
        });
        if ctx.filter.event_format == EventFormat::Federation {
            event = leave.clone();
        }
        room.timeline.events.push(raw_json(&event)?);
    }
    Ok(room)
}

/// The stripped state of an invite or a knock: the room's basic state and the user's own member
/// event (with, for an invite, the inviter's).
async fn stripped_state<T>(ctx: &Context<'_>, room_id: &OwnedRoomId) -> Result<Vec<Raw<T>>> {
    ctx.services
        .rooms
        .invite_state(room_id, ctx.user)
        .await?
        .iter()
        .map(|pdu| raw_json(&pdu.to_stripped_state()))
        .collect()
}

/// The timeline window `(since, upto]` and the state before it: the state changes since the
/// last sync (including those inside a gap), or the whole state when `full`. A joined room
/// (`full` is `None`) gets the whole state when the user joined since the last sync, and its
/// member summary; the flag says whether they did.
async fn section(
    ctx: &Context<'_>,
    room_id: &OwnedRoomId,
    upto: u64,
    full: Option<bool>,
) -> Result<(Section, bool, Option<crate::service::rooms::MemberSummary>)> {
    let since = ctx.since.map(|s| s.events);
    let room_filter = &ctx.filter.room;
    let timeline_filter = room_filter.timeline.clone();
    let ignored = ctx.ignored.clone();
    let wanted: EventPredicate = if filter::room_event_room_allowed(&timeline_filter, room_id) {
        Arc::new(move |pdu: &Pdu| {
            !ignored.contains(&pdu.sender)
                && filter::room_event_allowed(&timeline_filter, &pdu.kind.to_string(), &pdu.sender)
                && filter::url_allowed(&timeline_filter, &pdu.content)
        })
    } else {
        Arc::new(|_: &Pdu| false)
    };
    let limit = filter::timeline_limit(&room_filter.timeline);
    let lazy = !room_filter.state.lazy_load_options.is_disabled();
    let format = &ctx.filter.event_format;
    let federation = *format == EventFormat::Federation;
    let state_filter = room_filter.state.clone();
    let state_wanted = filter::room_event_room_allowed(&state_filter, room_id);
    let (user, full_state, use_state_after) = (ctx.user.to_string(), ctx.full_state, ctx.use_state_after);
    let state: StateChooser = Box::new(move |window: &TimelineWindow, newly_joined: bool| {
        let senders: HashSet<String> = window.events.iter().map(|e| e.pdu.sender.to_string()).collect();
        let selection = StateSelection {
            keep: Arc::new(move |kind: &str| state_wanted && filter::room_event_type_allowed(&state_filter, kind)),
            lazy_members: lazy.then(|| {
                let mut members = senders.clone();
                members.insert(user);
                members
            }),
            always_members: senders,
        };
        let full = full.unwrap_or(newly_joined);
        let from = if full || full_state { None } else { since };
        // The state before the first timeline event, or at the end when the timeline is empty;
        // with `use_state_after`, the state at the end of the timeline (changes inside it
        // included).
        let first = window.events.first().and_then(|e| e.meta.position);
        let to = if use_state_after { upto } else { first.map_or(upto, |p| p.saturating_sub(1)) };
        StateQuery { from, to, selection, federation }
    });
    let query = RoomSyncQuery {
        user: ctx.user.to_owned(),
        room_id: room_id.clone(),
        since,
        upto,
        limit,
        wanted,
        state,
        bundles: !federation,
        summary: full.is_none(),
    };
    let RoomSyncRead { newly_joined, window, state, served, summary } = ctx.services.rooms.sync_room(query).await?;
    let first = window.events.first().and_then(|e| e.meta.position);

    // Lazy-loading without `include_redundant_members`: member events this device already has
    // are left out.
    let redundant =
        matches!(room_filter.state.lazy_load_options, LazyLoadOptions::Enabled { include_redundant_members: true });
    let cache = &ctx.services.lazy_members;
    let already_sent = |event: &SyncStateEvent| {
        lazy && !redundant
            && event.names.0 == StateEventType::RoomMember
            && cache.was_sent(ctx.user, ctx.device, room_id, &event.names.1, event.event_id.as_str())
    };
    let state: Vec<SyncStateEvent> = state
        .into_iter()
        .filter(|event| filter::room_event_allowed(&room_filter.state, &event.names.0.to_string(), &event.sender))
        .filter(|event| !already_sent(event))
        .collect();
    if lazy {
        let state_members = state
            .iter()
            .filter(|event| event.names.0 == StateEventType::RoomMember)
            .map(|event| (event.names.1.clone(), event.event_id.to_string()));
        let timeline_members = window
            .events
            .iter()
            .map(|e| &*e.pdu)
            .filter(|pdu| pdu.kind == TimelineEventType::RoomMember)
            .filter_map(|pdu| Some((pdu.state_key.clone()?, pdu.event_id.to_string())));
        cache.record(ctx.user, ctx.device, room_id, state_members.chain(timeline_members).collect());
    }
    let state = state.into_iter().map(|event| Raw::from_json(event.json)).collect();

    let mut timeline = Timeline::new();
    timeline.limited = window.limited;
    // `/messages?dir=b&from=P` returns the events before position P.
    timeline.prev_batch = Some(first.unwrap_or(upto.saturating_add(1)).to_string());
    timeline.events = format_timeline(ctx.device, &window.events, format, served)?;
    Ok((Section { timeline, state }, newly_joined, summary))
}
