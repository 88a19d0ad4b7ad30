//! Unread counts from the stored notifications (the room's outcome of each event, unless the
//! user has one of their own): the notifying events after the user's newest read receipt in a
//! room. An unthreaded receipt reads everything up to it; a threaded receipt
//! (`thread_id`) reads only its thread (`main` being the main timeline). Counting reads only the
//! notification rows after the oldest receipt that matters, so it costs the unread
//! notifications, not the room's history.
//!
//! **Counts already made are extended, not made again** ([`CountCache`]). A room nobody reads
//! (no receipt) has as many unread notifications as messages since the user joined, and every
//! sync that shows the room counted them all again. The notification rows of an event are
//! written in the event's own batch, keyed by its stream position, and never changed or
//! deleted afterwards, so the rows up to a committed position are final: counts made up to such
//! a position, for the same receipts and the same membership, stay right, and the next count
//! adds only the rows after it. A moved receipt or membership misses and counts again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::{
    Result,
    service::{Services, receipts::read_receipts_by_thread_in, rooms::PositionReader},
    storage::{
        Db, ScanDirection,
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

impl UnreadCounts {
    /// Adds the counts of a later, disjoint range of positions.
    fn add_later(&mut self, other: UnreadCounts) {
        self.main.notifications += other.main.notifications;
        self.main.highlights += other.main.highlights;
        for (root, counts) in other.threads {
            let mine = self.threads.entry(root).or_default();
            mine.notifications += counts.notifications;
            mine.highlights += counts.highlights;
        }
    }
}

/// Most rows kept: one per (user, room) and one per thread count in it (about 200 bytes each);
/// past it the cache starts over.
const CACHED_ROWS: usize = 20_000;
/// Counts with more thread roots than this are not kept.
const CACHED_THREADS: usize = 64;

/// What counts were made from, and up to where.
struct CachedCounts {
    receipts: HashMap<String, u64>,
    floor: u64,
    by_thread: bool,
    /// The committed stream position counted up to.
    upto: u64,
    counts: UnreadCounts,
}

impl CachedCounts {
    fn rows(&self) -> usize {
        1 + self.counts.threads.len()
    }

    /// Made from the same receipts, floor and `by_thread` as `other`.
    fn same_kind(&self, other: &CachedCounts) -> bool {
        self.receipts == other.receipts && self.floor == other.floor && self.by_thread == other.by_thread
    }
}

type CountKey = (OwnedUserId, OwnedRoomId);

#[derive(Default)]
struct Kept {
    entries: HashMap<CountKey, CachedCounts>,
    rows: usize,
}

/// Unread counts made up to a committed stream position, by user and room (see the module
/// documentation for why they stay right). Bounded at [`CACHED_ROWS`] rows.
#[derive(Default)]
pub(super) struct CountCache {
    kept: Mutex<Kept>,
}

impl CountCache {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Plain maps and numbers, each change complete before the lock is released.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The counts made for the same receipts, floor and `by_thread` as `wanted` up to a
    /// position at or before `wanted.upto`, with that position.
    fn base(&self, key: &CountKey, wanted: &CachedCounts) -> Option<(u64, UnreadCounts)> {
        let kept = self.kept();
        let entry = kept.entries.get(key)?;
        (entry.same_kind(wanted) && entry.upto <= wanted.upto).then(|| (entry.upto, entry.counts.clone()))
    }

    /// Keeps `made` (unless newer counts of the same kind are kept already).
    fn keep(&self, key: CountKey, made: CachedCounts) {
        if made.counts.threads.len() > CACHED_THREADS {
            return;
        }
        let mut kept = self.kept();
        if let Some(entry) = kept.entries.get(&key)
            && entry.same_kind(&made)
            && entry.upto > made.upto
        {
            return;
        }
        if kept.rows + made.rows() > CACHED_ROWS {
            *kept = Kept::default();
        }
        kept.rows += made.rows();
        if let Some(old) = kept.entries.insert(key, made) {
            kept.rows -= old.rows();
        }
    }

    /// Counts from the receipt positions per thread ("" for unthreaded), of the events in
    /// `(floor, upto]` (`floor`: the user's membership event; `upto`: the sync's snapshot).
    /// With `committed` (every event up to `upto` is committed), counts kept for the same
    /// receipts and floor up to an earlier position are extended by the rows after it, and the
    /// result is kept. Blocking.
    fn counts_in(
        &self,
        db: &Db,
        (user, room): (&UserId, &RoomId),
        receipts: HashMap<String, u64>,
        (floor, upto): (u64, u64),
        by_thread: bool,
        committed: bool,
    ) -> Result<UnreadCounts> {
        if !committed {
            return count_rows_in(db, (user, room), &receipts, (floor, 0, upto), by_thread);
        }
        let key = (user.to_owned(), room.to_owned());
        let mut made = CachedCounts { receipts, floor, by_thread, upto, counts: UnreadCounts::default() };
        let (counted, mut counts) = self.base(&key, &made).unwrap_or_default();
        if counted < upto {
            counts.add_later(count_rows_in(db, (user, room), &made.receipts, (floor, counted, upto), by_thread)?);
        }
        made.counts = counts.clone();
        self.keep(key, made);
        Ok(counts)
    }
}

/// The counts of the notification rows in positions `(counted, upto]` (and after the floor
/// and the unthreaded receipt). Blocking.
fn count_rows_in(
    db: &Db,
    (user, room): (&UserId, &RoomId),
    receipts: &HashMap<String, u64>,
    (floor, counted, upto): (u64, u64, u64),
    by_thread: bool,
) -> Result<UnreadCounts> {
    let unthreaded = receipts.get("").copied().unwrap_or(0).max(floor).max(counted);
    let start = (user.to_owned(), room.to_owned(), unthreaded.saturating_add(1));
    let own = ROOM_NOTIFICATIONS.scan_from(db, &start, ScanDirection::Forward, usize::MAX, |key| {
        key.0 == user && key.1 == room && key.2 <= upto
    })?;
    let start = (room.to_owned(), unthreaded.saturating_add(1));
    let room_rows = ROOM_DEFAULT_NOTIFICATIONS
        .scan_from(db, &start, ScanDirection::Forward, usize::MAX, |key| key.0 == room && key.1 <= upto)?;
    // The user's own outcome where there is one, else the room's.
    let mut outcomes: BTreeMap<u64, (bool, Option<String>)> =
        room_rows.into_iter().map(|((_, position), record)| (position, (record.highlight, record.thread))).collect();
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

/// The stream position of each of `user`'s read receipts in `room`, per thread. Blocking.
fn receipt_positions_in(
    db: &Db,
    positions: &PositionReader,
    user: &UserId,
    room: &RoomId,
) -> Result<HashMap<String, u64>> {
    let receipts: Vec<(String, OwnedEventId)> = read_receipts_by_thread_in(db, room, user)?
        .into_iter()
        .filter_map(|(thread, event_id)| Some((thread, OwnedEventId::try_from(event_id).ok()?)))
        .collect();
    let mut by_thread: HashMap<String, u64> = HashMap::new();
    if receipts.is_empty() {
        return Ok(by_thread);
    }
    let found = positions.visible_positions_in(db, user, receipts.iter().map(|(_, event_id)| &**event_id))?;
    for ((thread, _), position) in receipts.into_iter().zip(found) {
        let Some(position) = position else { continue };
        let entry = by_thread.entry(thread).or_default();
        *entry = (*entry).max(position);
    }
    Ok(by_thread)
}

/// The stream position of each of `user`'s read receipts in `room`, per thread: one trip to
/// the storage threads.
pub async fn receipt_positions(services: &Services, user: &UserId, room: &RoomId) -> Result<HashMap<String, u64>> {
    let positions = services.rooms.position_reader();
    let (user, room) = (user.to_owned(), room.to_owned());
    services.db.run(move |db| receipt_positions_in(db, &positions, &user, &room)).await
}

/// `user`'s unread counts in `room`, counting events in the stream positions `(floor, upto]`:
/// the receipts, their events' positions and the notification rows after them, in one trip to
/// the storage threads.
pub async fn unread_counts(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    (floor, upto): (u64, u64),
    by_thread: bool,
) -> Result<UnreadCounts> {
    // Only counts up to a committed position are kept (a push's count reads up to the end).
    let committed = upto <= services.rooms.current_position();
    let positions = services.rooms.position_reader();
    let cache = services.push.count_cache.clone();
    let (user, room) = (user.to_owned(), room.to_owned());
    services
        .db
        .run(move |db| {
            let receipts = receipt_positions_in(db, &positions, &user, &room)?;
            cache.counts_in(db, (&user, &room), receipts, (floor, upto), by_thread, committed)
        })
        .await
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
