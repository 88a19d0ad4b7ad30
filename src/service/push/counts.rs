//! Unread counts from the stored notifications (the room's outcome of each event, unless the
//! user has one of their own): the notifying events after the user's newest read receipt in a
//! room. An unthreaded receipt reads everything up to it; a threaded receipt
//! (`thread_id`) reads only its thread (`main` being the main timeline). Counting reads only the
//! notification rows after the oldest receipt that matters, so it costs the unread
//! notifications, not the room's history.

use std::collections::{BTreeMap, HashMap};

use ruma::{RoomId, UserId};

use super::Push;
use crate::{
    Result,
    service::Services,
    storage::{
        ScanDirection,
        push_tables::{ROOM_DEFAULT_NOTIFICATIONS, ROOM_NOTIFICATIONS},
    },
};

/// The thread key of the main timeline in receipts and counts.
const MAIN: &str = "main";

/// Notification and highlight counts of a room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

/// A room's unread counts: the main timeline, and per thread root when asked for.
#[derive(Debug, Default, Clone)]
pub struct UnreadCounts {
    /// With `by_thread`, the main timeline only; otherwise every thread too.
    pub main: Counts,
    pub threads: BTreeMap<String, Counts>,
}

impl Push {
    /// Counts from the receipt positions per thread ("" for unthreaded), of the events in
    /// `(floor, upto]` (`floor`: the user's membership event; `upto`: the sync's snapshot).
    async fn counts_after(
        &self,
        user: &UserId,
        room: &RoomId,
        receipts: HashMap<String, u64>,
        (floor, upto): (u64, u64),
        by_thread: bool,
    ) -> Result<UnreadCounts> {
        let unthreaded = receipts.get("").copied().unwrap_or(0).max(floor);
        let (user, room) = (user.to_owned(), room.to_owned());
        let (own, room_rows) = self
            .db
            .run(move |db| {
                let start = (user.clone(), room.clone(), unthreaded.saturating_add(1));
                let own = ROOM_NOTIFICATIONS.scan_from(db, &start, ScanDirection::Forward, usize::MAX, |key| {
                    key.0 == user && key.1 == room && key.2 <= upto
                })?;
                let start = (room.clone(), unthreaded.saturating_add(1));
                let room_rows =
                    ROOM_DEFAULT_NOTIFICATIONS.scan_from(db, &start, ScanDirection::Forward, usize::MAX, |key| {
                        key.0 == room && key.1 <= upto
                    })?;
                Ok((own, room_rows))
            })
            .await?;
        // The user's own outcome where there is one, else the room's.
        let mut outcomes: BTreeMap<u64, (bool, Option<String>)> = room_rows
            .into_iter()
            .map(|((_, position), record)| (position, (record.highlight, record.thread)))
            .collect();
        for ((_, _, position), row) in own {
            if row.notify {
                outcomes.insert(position, (row.highlight, row.thread));
            } else {
                outcomes.remove(&position);
            }
        }
        let mut out = UnreadCounts::default();
        for (position, (highlight, thread)) in outcomes {
            if position <= receipts.get(thread.as_deref().unwrap_or(MAIN)).copied().unwrap_or(0) {
                continue;
            }
            let counts = match thread {
                Some(root) if by_thread => out.threads.entry(root).or_default(),
                _ => &mut out.main,
            };
            counts.notifications += 1;
            counts.highlights += u64::from(highlight);
        }
        Ok(out)
    }
}

/// The stream position of each of `user`'s read receipts in `room`, per thread.
pub async fn receipt_positions(services: &Services, user: &UserId, room: &RoomId) -> Result<HashMap<String, u64>> {
    let mut positions: HashMap<String, u64> = HashMap::new();
    for (thread, event_id) in services.receipts.read_receipts_by_thread(room, user).await? {
        let Ok(event_id) = ruma::OwnedEventId::try_from(event_id) else { continue };
        let Some(position) = services.rooms.event_for(user, &event_id).await?.and_then(|e| e.meta.position) else {
            continue;
        };
        let entry = positions.entry(thread).or_default();
        *entry = (*entry).max(position);
    }
    Ok(positions)
}

/// `user`'s unread counts in `room`, counting events in the stream positions `(floor, upto]`.
pub async fn unread_counts(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    (floor, upto): (u64, u64),
    by_thread: bool,
) -> Result<UnreadCounts> {
    let receipts = receipt_positions(services, user, room).await?;
    services.push.counts_after(user, room, receipts, (floor, upto), by_thread).await
}

/// How many of `user`'s joined rooms have unread notifications (a push's `counts.unread`, as
/// Synapse counts it by default).
pub async fn rooms_with_unread(services: &Services, user: &UserId) -> Result<u64> {
    let rooms = services.rooms.user_rooms(user).await?;
    let mut unread = 0;
    for (room, membership) in rooms {
        if membership.membership != "join" {
            continue;
        }
        if unread_counts(services, user, &room, (membership.position, u64::MAX), false).await?.main.notifications > 0 {
            unread += 1;
        }
    }
    Ok(unread)
}
