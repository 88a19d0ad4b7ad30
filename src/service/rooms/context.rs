//! Reading around one event: `/context` (the events before and after an event, with the state
//! there and pagination tokens for `/messages`) and `/timestamp_to_event` (the visible event
//! closest to a point in time, in one direction).

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde::Deserialize;

use super::{Pdu, Rooms, read::StoredEvent};
use crate::{
    Error, Result,
    storage::{
        ScanDirection,
        room_tables::{EVENT_META, PDUS, TIMELINE},
    },
};

/// At most this many timeline reads per side while a filter skips events.
const MAX_FILTER_ROUNDS: usize = 50;
/// Timeline rows read per page by `/timestamp_to_event`.
const TIMESTAMP_PAGE: usize = 1000;

#[derive(Deserialize)]
struct Timestamp {
    origin_server_ts: u64,
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
        let last = events_after.last().map_or(&event.pdu.event_id, |e| &e.pdu.event_id);
        let state = self.state_at_event(last).await?;
        Ok(EventContext { event, before: events_before, after: events_after, start, end, state })
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
            // (timestamp, position, short event id) of every candidate on the right side of `ts`.
            let mut candidates: Vec<(u64, u64, u64)> = Vec::new();
            let mut cursor = 0;
            loop {
                let page = TIMELINE.scan_from(
                    db,
                    &(short_room, cursor),
                    ScanDirection::Forward,
                    TIMESTAMP_PAGE,
                    |(room, _)| *room == short_room,
                )?;
                for ((_, position), short) in &page {
                    let Some(json) = PDUS.get(db, short)? else { continue };
                    let event_ts = serde_json::from_str::<Timestamp>(json.get()).map_or(0, |t| t.origin_server_ts);
                    if (forward && event_ts >= ts) || (!forward && event_ts <= ts) {
                        candidates.push((event_ts, *position, *short));
                    }
                }
                match page.last() {
                    Some(((_, position), _)) if page.len() == TIMESTAMP_PAGE => cursor = position.saturating_add(1),
                    _ => break,
                }
            }
            // Closest first.
            if forward {
                candidates.sort_unstable();
            } else {
                candidates.sort_unstable_by(|a, b| b.cmp(a));
            }
            for (event_ts, _, short) in candidates {
                let Some(meta) = EVENT_META.get(db, &short)? else { continue };
                if !meta.is_served() || !core.can_see(db, &user, short_room, &meta)? {
                    continue;
                }
                return Ok(Some((core.interner.event_id(db, short)?, event_ts)));
            }
            Ok(None)
        })
        .await
    }
}
