//! Reading around one event: `/context` (the events before and after an event, with the state
//! there and pagination tokens for `/messages`) and `/timestamp_to_event` (the visible event
//! closest to a point in time, in one direction, found through the room's timestamp index).

use ruma::{EventId, OwnedEventId, RoomId, ServerName, UserId};

use super::{Pdu, Rooms, read::StoredEvent};
use crate::{
    Error, Result,
    storage::{
        Batch, ScanDirection,
        room_tables::{EVENT_META, TIMELINE_BY_TS},
    },
};

/// At most this many timeline reads per side while a filter skips events.
const MAX_FILTER_ROUNDS: usize = 50;
/// Timestamp index rows read per page by `/timestamp_to_event`.
const TIMESTAMP_PAGE: usize = 64;
/// At most this many events `/timestamp_to_event` passes over (hidden from the user) before it
/// answers that there is none.
const MAX_TIMESTAMP_CANDIDATES: usize = 10_000;

/// Adds a timeline event to its room's timestamp index, in the event's own batch (called where
/// the event's timeline entry is written).
pub(super) fn index_timestamp(
    batch: &mut Batch,
    short_room: u64,
    origin_server_ts: u64,
    position: u64,
    short_event: u64,
) -> Result<()> {
    Ok(batch.put(&TIMELINE_BY_TS, &(short_room, origin_server_ts, position), &short_event)?)
}

/// The index key right after `key` in `direction`, if any.
fn next_key((room, ts, position): (u64, u64, u64), direction: ScanDirection) -> Option<(u64, u64, u64)> {
    match direction {
        ScanDirection::Forward => match position.checked_add(1) {
            Some(position) => Some((room, ts, position)),
            None => Some((room, ts.checked_add(1)?, 0)),
        },
        ScanDirection::Reverse => match position.checked_sub(1) {
            Some(position) => Some((room, ts, position)),
            None => Some((room, ts.checked_sub(1)?, u64::MAX)),
        },
    }
}

/// What `/context` returns. Tokens are stream positions: `start` for paginating backwards,
/// `end` forwards.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub event: StoredEvent,
    /// Newest first, as `/messages` with `dir=b` returns them.
    pub before: Vec<StoredEvent>,
    /// Oldest first.
    pub after: Vec<StoredEvent>,
    pub start: u64,
    pub end: u64,
    /// The state after the last event returned.
    pub state: Vec<Pdu>,
}

impl Rooms {
    /// Up to `want` events that `user` may see and `keep` accepts, from stream position `from`
    /// (exclusive) in `direction`; returns them and the position reached.
    async fn collect_events(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: u64,
        direction: ScanDirection,
        want: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Sync),
    ) -> Result<(Vec<StoredEvent>, u64)> {
        let mut out = Vec::new();
        let mut cursor = from;
        for _ in 0..MAX_FILTER_ROUNDS {
            if out.len() >= want {
                break;
            }
            let (events, next) = self.timeline(user, room_id, Some(cursor), direction, want - out.len()).await?;
            for event in events {
                cursor = event.meta.position.unwrap_or(cursor);
                if keep(&event.pdu) {
                    out.push(event);
                }
            }
            match next {
                Some(position) => cursor = position,
                None => break,
            }
        }
        Ok((out, cursor))
    }

    /// The context of an event `user` may see: up to `before` earlier and `after` later events
    /// that `keep` accepts, and the state after the last event returned. `M_NOT_FOUND` when the
    /// event is unknown, in another room, or hidden from the user.
    pub async fn event_context(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        before: usize,
        after: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Sync),
    ) -> Result<EventContext> {
        let mut context = self.surrounding_events(user, room_id, event_id, before, after, keep).await?;
        let last = context.after.last().map_or(&context.event.pdu.event_id, |e| &e.pdu.event_id);
        context.state = self.state_at_event(last).await?;
        Ok(context)
    }

    /// [`event_context`](Self::event_context) with, instead of the whole state, only the member
    /// events of the events' senders in the state after the last event returned (for search
    /// results' `profile_info`; none when `with_senders` is false), so the cost does not grow
    /// with the room's membership.
    pub async fn event_context_with_senders(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        (before, after): (usize, usize),
        with_senders: bool,
    ) -> Result<EventContext> {
        let mut context = self.surrounding_events(user, room_id, event_id, before, after, &|_| true).await?;
        if with_senders {
            let last = context.after.last().unwrap_or(&context.event);
            let (group, short_room) = (last.meta.state_after, last.meta.room);
            let senders: std::collections::BTreeSet<String> = context
                .before
                .iter()
                .chain(context.after.iter())
                .chain([&context.event])
                .map(|e| e.pdu.sender.to_string())
                .collect();
            context.state = self
                .run(move |core, db| {
                    let rules = core.rules_of_room(db, short_room)?;
                    let state = core.state.load(db, group)?;
                    let mut members = Vec::new();
                    for sender in senders {
                        let Some(key) = core.interner.short_state_key(db, "m.room.member", &sender)? else { continue };
                        if let Some(short) = state.get(&key) {
                            // As served: a redacted member event shows no name.
                            members.push(core.event_for_client(db, *short, &rules)?);
                        }
                    }
                    Ok(members)
                })
                .await?;
        }
        Ok(context)
    }

    /// The event and the events around it, without state.
    async fn surrounding_events(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        before: usize,
        after: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Sync),
    ) -> Result<EventContext> {
        let event = self
            .event_for(user, event_id)
            .await?
            .filter(|e| e.pdu.room_id == room_id)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let position = event.meta.position.ok_or_else(|| Error::not_found("Event is not in the room's timeline"))?;
        let (events_before, start) =
            self.collect_events(user, room_id, position, ScanDirection::Reverse, before, keep).await?;
        let (events_after, end) =
            self.collect_events(user, room_id, position, ScanDirection::Forward, after, keep).await?;
        Ok(EventContext { event, before: events_before, after: events_after, start, end, state: Vec::new() })
    }

    /// The event closest to `ts` (milliseconds) that `user` may see: the first at or after it
    /// when `forward`, else the last at or before it. Ordered by `origin_server_ts`, then by
    /// stream position.
    pub async fn event_at_timestamp(
        &self,
        user: &UserId,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        if self.membership(user, room_id).await?.is_none() && !self.is_world_readable(room_id).await? {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let mut memo = super::read::VisibilityMemo::default();
            nearest_event(core, db, short_room, ts, forward, |core, db, meta| {
                core.can_see_with(db, &user, short_room, meta, &mut memo)
            })
        })
        .await
    }

    /// The event nearest to `ts` that `origin` may see, for another server's
    /// `/timestamp_to_event`: `404` for a room this server does not know, `403` when the room's
    /// server ACL denies `origin`.
    pub async fn event_at_timestamp_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        self.check_server_allowed(room_id, origin).await?;
        let (origin, room_id) = (origin.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            nearest_event(core, db, short_room, ts, forward, |core, db, meta| core.server_can_see(db, &origin, meta))
        })
        .await
    }
}

/// The first served event from `ts` in the direction asked for that `visible` lets through,
/// looking at most at `MAX_TIMESTAMP_CANDIDATES` events.
fn nearest_event(
    core: &super::RoomCore,
    db: &crate::storage::Db,
    short_room: u64,
    ts: u64,
    forward: bool,
    mut visible: impl FnMut(&super::RoomCore, &crate::storage::Db, &crate::storage::room_tables::EventMeta) -> Result<bool>,
) -> Result<Option<(OwnedEventId, u64)>> {
    // The index is ordered by (timestamp, position): seek to `ts` and read away from it.
    let (mut cursor, direction) = if forward {
        ((short_room, ts, 0), ScanDirection::Forward)
    } else {
        ((short_room, ts, u64::MAX), ScanDirection::Reverse)
    };
    let mut passed = 0;
    while passed < MAX_TIMESTAMP_CANDIDATES {
        let page =
            TIMELINE_BY_TS.scan_from(db, &cursor, direction, TIMESTAMP_PAGE, |(room, _, _)| *room == short_room)?;
        for ((_, event_ts, _), short) in &page {
            let Some(meta) = EVENT_META.get(db, short)? else { continue };
            if !meta.is_served() || !visible(core, db, &meta)? {
                continue;
            }
            return Ok(Some((core.interner.event_id(db, *short)?, *event_ts)));
        }
        passed += page.len();
        match page.last() {
            Some((key, _)) if page.len() == TIMESTAMP_PAGE => match next_key(*key, direction) {
                Some(next) => cursor = next,
                None => break,
            },
            _ => break,
        }
    }
    Ok(None)
}
