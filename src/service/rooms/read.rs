//! Reading rooms: versions, current state, memberships, single events, timeline pages, and
//! the history-visibility rule that decides which events a user may see.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::StateEventType,
    room_version_rules::RoomVersionRules,
};
use serde::Deserialize;

use super::{Pdu, RoomCore, Rooms, accept::membership_in, backfill::BACKFILL_CURSOR};
use crate::{
    Error, Result,
    storage::{
        Db, ScanDirection,
        room_tables::{BACKFILL, CURRENT_STATE, EVENT_META, EventMeta, ROOMS, TIMELINE, USER_ROOMS, UserMembership},
    },
};

/// Timeline rows read per storage scan.
const TIMELINE_PAGE: usize = 100;
/// Timeline rows one `/messages` page reads at most (unless its limit is higher).
const MAX_SCANNED: usize = 1_000;

/// Why a timeline scan stopped.
enum End {
    /// `limit` events found.
    Full,
    /// The scan budget is spent: the client continues from the last row read.
    Budget,
    /// No more rows in this part of the timeline.
    Exhausted,
}

impl End {
    /// Goes on into the next part of the timeline only when this one is exhausted.
    fn or_else(self, next: impl FnOnce() -> Result<End>) -> Result<End> {
        match self {
            End::Exhausted => next(),
            other => Ok(other),
        }
    }
}

/// A timeline page and where its scan stopped.
pub struct TimelineScan {
    pub events: Vec<StoredEvent>,
    /// Where to continue from, if the scan did not reach the end of the timeline.
    pub next: Option<u64>,
    /// The cursor of the last row read, also when the scan reached the end of the timeline.
    pub last_read: Option<u64>,
}

/// One `/messages` page being filled: what it found, where it is, what it may still read.
struct TimelinePage<F> {
    user: OwnedUserId,
    short_room: u64,
    rules: RoomVersionRules,
    keep: F,
    limit: usize,
    budget: usize,
    scanned: usize,
    events: Vec<StoredEvent>,
    /// The cursor of the last row read (a stream position, or a backfill cursor).
    last: Option<u64>,
    memo: VisibilityMemo,
}

impl<F: Fn(&Pdu) -> bool> TimelinePage<F> {
    /// Takes one row; `Some` when the page must stop.
    fn take(&mut self, core: &RoomCore, db: &Db, cursor: u64, short: u64) -> Result<Option<End>> {
        self.last = Some(cursor);
        if let Some(meta) = EVENT_META.get(db, &short)?
            && core.can_see_with(db, &self.user, self.short_room, &meta, &mut self.memo)?
        {
            let pdu = core.served_event(db, &self.user, short, &meta, &self.rules, &mut self.memo)?;
            if (self.keep)(&pdu) {
                self.events.push(StoredEvent { pdu, meta, short });
                if self.events.len() >= self.limit {
                    return Ok(Some(End::Full));
                }
            }
        }
        Ok(None)
    }

    /// The live timeline from position `start` (inclusive) in `direction`, in pages.
    fn scan_live(&mut self, core: &RoomCore, db: &Db, start: u64, direction: ScanDirection) -> Result<End> {
        let short_room = self.short_room;
        let mut cursor = start;
        loop {
            if self.scanned >= self.budget {
                return Ok(End::Budget);
            }
            let page_size = TIMELINE_PAGE.min(self.budget - self.scanned);
            let rows =
                TIMELINE.scan_from(db, &(short_room, cursor), direction, page_size, |(room, _)| *room == short_room)?;
            self.scanned += rows.len();
            for ((_, position), short) in &rows {
                if let Some(end) = self.take(core, db, *position, *short)? {
                    return Ok(end);
                }
            }
            let Some(((_, position), _)) = rows.last() else { return Ok(End::Exhausted) };
            cursor = match direction {
                ScanDirection::Forward => position.saturating_add(1),
                ScanDirection::Reverse if *position == 0 => return Ok(End::Exhausted),
                ScanDirection::Reverse => position - 1,
            };
            if rows.len() < page_size {
                return Ok(End::Exhausted);
            }
        }
    }

    /// The backfilled history from `n` (inclusive): older (growing `n`) when reading backwards,
    /// newer (shrinking `n`, down to 1) when reading forwards.
    fn scan_backfill(&mut self, core: &RoomCore, db: &Db, n: u64, direction: ScanDirection) -> Result<End> {
        let short_room = self.short_room;
        // Backwards in time is forwards in `n`.
        let order = match direction {
            ScanDirection::Reverse => ScanDirection::Forward,
            ScanDirection::Forward => ScanDirection::Reverse,
        };
        let mut cursor = n;
        loop {
            if self.scanned >= self.budget {
                return Ok(End::Budget);
            }
            let page_size = TIMELINE_PAGE.min(self.budget - self.scanned);
            let rows = BACKFILL
                .scan_from(db, &(short_room, cursor), order, page_size, |(room, n)| *room == short_room && *n > 0)?;
            self.scanned += rows.len();
            for ((_, n), short) in &rows {
                if let Some(end) = self.take(core, db, BACKFILL_CURSOR | n, *short)? {
                    return Ok(end);
                }
            }
            let Some(((_, n), _)) = rows.last() else { return Ok(End::Exhausted) };
            cursor = match order {
                ScanDirection::Forward => n.saturating_add(1),
                ScanDirection::Reverse if *n <= 1 => return Ok(End::Exhausted),
                ScanDirection::Reverse => n - 1,
            };
            if rows.len() < page_size {
                return Ok(End::Exhausted);
            }
        }
    }
}

/// An event with what the server knows about it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Shared with the event cache when served unchanged (no copy of the event).
    pub pdu: std::sync::Arc<Pdu>,
    pub meta: EventMeta,
    /// Its short event ID (what later lookups of the same event take instead of the event ID).
    pub short: u64,
}

/// For which stream positions a user was joined to a room at some point after them.
#[derive(Debug, Clone, Copy)]
enum JoinedAfter {
    /// Joined now: every position.
    Always,
    /// Left (or banned) at this position, having been joined until then: the positions before.
    Before(u64),
    Never,
}

/// What visibility checks of one user in one room have read; see [`RoomCore::can_see_with`].
#[derive(Default)]
pub(super) struct VisibilityMemo {
    /// Per state group: its history visibility and the user's membership in it.
    groups: std::collections::HashMap<u64, (String, Option<String>)>,
    joined_after: Option<JoinedAfter>,
    /// Per sender: whether they were erased (see `erasure.rs`).
    pub(super) erased: std::collections::HashMap<OwnedUserId, bool>,
}

#[derive(Deserialize)]
struct HistoryVisibility {
    history_visibility: String,
}

impl RoomCore {
    /// One state event of the state after a given state group.
    pub(super) fn state_in_group(
        &self,
        db: &Db,
        group: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<std::sync::Arc<Pdu>>> {
        let Some(key) = self.interner.short_state_key(db, kind, state_key)? else { return Ok(None) };
        let map = self.state.load(db, group)?;
        let Some(short) = map.get(&key) else { return Ok(None) };
        // The room's rules are read only when the event is not cached.
        let rules = || self.rules_of_room(db, EVENT_META.get(db, short)?.map_or(0, |m| m.room));
        Ok(Some(self.shared_event_with(db, *short, rules)?))
    }

    pub(super) fn current_state_event(
        &self,
        db: &Db,
        short_room: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(key) = self.interner.short_state_key(db, kind, state_key)? else { return Ok(None) };
        let Some(short) = CURRENT_STATE.get(db, &(short_room, key))? else { return Ok(None) };
        let rules = self.rules_of_room(db, short_room)?;
        Ok(Some(self.event_by_short(db, short, &rules)?))
    }

    /// The short ID and stored facts of an event that is served and that `user` may see
    /// ([`can_see`](Self::can_see)); `None` for any other event, or one this server lacks.
    fn visible_meta(&self, db: &Db, user: &UserId, event_id: &ruma::EventId) -> Result<Option<(u64, EventMeta)>> {
        let Some(short) = self.interner.short_event(db, event_id)? else { return Ok(None) };
        let Some(meta) = EVENT_META.get(db, &short)? else { return Ok(None) };
        Ok((meta.is_served() && self.can_see(db, user, meta.room, &meta)?).then_some((short, meta)))
    }

    /// Whether `user` may see an event, by the spec's history visibility rules, judged by the
    /// state before the event: `world_readable`; joined then; `invited` and invited then;
    /// `shared` and joined at some point after the event. A change of history visibility, and
    /// the user's own member events, are visible if the state before *or* after allows it.
    pub(super) fn can_see(&self, db: &Db, user: &UserId, short_room: u64, meta: &EventMeta) -> Result<bool> {
        self.can_see_with(db, user, short_room, meta, &mut VisibilityMemo::default())
    }

    /// [`can_see`](Self::can_see) for many events of one room and one user: `memo` keeps what
    /// the checks read (per state group, and the user's current membership), so a page of
    /// messages sharing one state costs one set of reads.
    pub(super) fn can_see_with(
        &self,
        db: &Db,
        user: &UserId,
        short_room: u64,
        meta: &EventMeta,
        memo: &mut VisibilityMemo,
    ) -> Result<bool> {
        let before = meta.state_before.unwrap_or(meta.state_after);
        if self.visible_in(db, user, short_room, meta, before, memo)? {
            return Ok(true);
        }
        if let (Some(key), Some(_)) = (meta.state_key, meta.state_before) {
            let names = self.interner.state_key(db, key)?;
            let visibility_change = names.0 == StateEventType::RoomHistoryVisibility && names.1.is_empty();
            let own_membership = names.0 == StateEventType::RoomMember && names.1 == user.as_str();
            if visibility_change || own_membership {
                return self.visible_in(db, user, short_room, meta, meta.state_after, memo);
            }
        }
        Ok(false)
    }

    /// The user's membership in the state of one group (through `memo`).
    pub(super) fn membership_in_group(
        &self,
        db: &Db,
        user: &UserId,
        group: u64,
        memo: &mut VisibilityMemo,
    ) -> Result<Option<String>> {
        if let Some((_, membership)) = memo.groups.get(&group) {
            return Ok(membership.clone());
        }
        let facts = self.group_facts(db, user, group)?;
        let membership = facts.1.clone();
        memo.groups.insert(group, facts);
        Ok(membership)
    }

    /// The visibility rules against the state of one group.
    fn visible_in(
        &self,
        db: &Db,
        user: &UserId,
        short_room: u64,
        meta: &EventMeta,
        group: u64,
        memo: &mut VisibilityMemo,
    ) -> Result<bool> {
        let (visibility, membership_then) = match memo.groups.get(&group) {
            Some(facts) => facts.clone(),
            None => {
                let facts = self.group_facts(db, user, group)?;
                memo.groups.insert(group, facts.clone());
                facts
            }
        };
        if visibility == "world_readable" {
            return Ok(true);
        }
        match membership_then.as_deref() {
            Some("join") => return Ok(true),
            Some("invite") if visibility == "invited" => return Ok(true),
            _ => {}
        }
        if visibility == "shared" {
            let joined_after = match memo.joined_after {
                Some(joined_after) => joined_after,
                None => *memo.joined_after.insert(self.joined_after(db, user, short_room)?),
            };
            let position = meta.position.unwrap_or(0);
            return Ok(match joined_after {
                JoinedAfter::Always => true,
                JoinedAfter::Before(left_at) => position < left_at,
                JoinedAfter::Never => false,
            });
        }
        Ok(false)
    }

    /// The history visibility of a state group (`shared` when unset) and the user's membership
    /// in it.
    fn group_facts(&self, db: &Db, user: &UserId, group: u64) -> Result<(String, Option<String>)> {
        let visibility = self
            .state_in_group(db, group, "m.room.history_visibility", "")?
            .and_then(|pdu| serde_json::from_str::<HistoryVisibility>(pdu.content.get()).ok())
            .map_or_else(|| "shared".to_owned(), |v| v.history_visibility);
        let membership_then =
            self.state_in_group(db, group, "m.room.member", user.as_str())?.map(|pdu| membership_in(&pdu.content));
        Ok((visibility, membership_then))
    }

    /// For which stream positions the user was joined to the room at some point after them:
    /// all when joined now; those before their leave (or ban) when they were joined until it.
    fn joined_after(&self, db: &Db, user: &UserId, short_room: u64) -> Result<JoinedAfter> {
        let Some(current) = self.current_state_event(db, short_room, "m.room.member", user.as_str())? else {
            return Ok(JoinedAfter::Never);
        };
        match membership_in(&current.content).as_str() {
            "join" => Ok(JoinedAfter::Always),
            "leave" | "ban" => {
                let Some(short) = self.interner.short_event(db, &current.event_id)? else {
                    return Ok(JoinedAfter::Never);
                };
                let Some(leave) = EVENT_META.get(db, &short)? else { return Ok(JoinedAfter::Never) };
                let before_leave = leave.state_before.unwrap_or(leave.state_after);
                let joined_until_leave = self
                    .state_in_group(db, before_leave, "m.room.member", user.as_str())?
                    .is_some_and(|pdu| membership_in(&pdu.content) == "join");
                Ok(if joined_until_leave {
                    JoinedAfter::Before(leave.position.unwrap_or(0))
                } else {
                    JoinedAfter::Never
                })
            }
            _ => Ok(JoinedAfter::Never),
        }
    }
}

impl Rooms {
    pub async fn version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| Ok(core.version_of(db, &room_id)?.map(|(_, v)| v))).await
    }

    /// A state event of the room's current state.
    pub async fn state_event(&self, room_id: &RoomId, kind: &StateEventType, state_key: &str) -> Result<Option<Pdu>> {
        let (room_id, kind, state_key) = (room_id.to_owned(), kind.to_string(), state_key.to_owned());
        self.run(move |core, db| {
            let Some(short_room) = core.interner.short_room(db, &room_id)? else { return Ok(None) };
            core.current_state_event(db, short_room, &kind, &state_key)
        })
        .await
    }

    /// The room's whole current state.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Vec<Pdu>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            // A room known only by its ID (an out-of-band invite, outliers) has no state here.
            let Some(short_room) = core.interner.short_room(db, &room_id)? else { return Ok(Vec::new()) };
            if !ROOMS.contains(db, &short_room)? {
                return Ok(Vec::new());
            }
            let rules = core.rules_of_room(db, short_room)?;
            CURRENT_STATE
                .scan_prefix(db, &(short_room,))?
                .into_iter()
                .map(|(_, short)| core.event_for_client(db, short, &rules))
                .collect()
        })
        .await
    }

    /// The state after an event, for users allowed to see the event.
    pub async fn state_at_event(&self, event_id: &ruma::EventId) -> Result<Vec<Pdu>> {
        let event_id = event_id.to_owned();
        self.run(move |core, db| {
            let short = core.interner.short_event(db, &event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
            let meta = EVENT_META.get(db, &short)?.ok_or_else(|| Error::not_found("Unknown event"))?;
            let rules = core.rules_of_room(db, meta.room)?;
            let map = core.state.load(db, meta.state_after)?;
            map.values().map(|short| core.event_for_client(db, *short, &rules)).collect()
        })
        .await
    }

    /// A local user's membership in a room, as last recorded.
    pub async fn membership(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<UserMembership>> {
        let key = (user_id.to_owned(), room_id.to_owned());
        self.run(move |_, db| Ok(USER_ROOMS.get(db, &key)?)).await
    }

    /// Every room a local user has a membership in.
    pub async fn user_rooms(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, UserMembership)>> {
        Ok(self.user_room_list(user_id).await?.as_ref().clone())
    }

    pub async fn set_forgotten(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let key = (user_id.to_owned(), room_id.to_owned());
        self.run(move |_, db| {
            let mut membership =
                USER_ROOMS.get(db, &key)?.ok_or_else(|| Error::not_found("You were never in this room"))?;
            if membership.membership == "join" || membership.membership == "invite" {
                return Err(Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::Unknown,
                    "You must leave the room before forgetting it",
                ));
            }
            membership.forgotten = true;
            let mut batch = crate::storage::Batch::new();
            batch.put(&USER_ROOMS, &key, &membership)?;
            Ok(db.write(batch)?)
        })
        .await
    }

    /// An event by ID, if it exists, is not soft-failed and `user` may see it.
    pub async fn event_for(&self, user: &UserId, event_id: &ruma::EventId) -> Result<Option<StoredEvent>> {
        let (user, event_id) = (user.to_owned(), event_id.to_owned());
        self.run(move |core, db| {
            let Some((short, meta)) = core.visible_meta(db, &user, &event_id)? else { return Ok(None) };
            let rules = core.rules_of_room(db, meta.room)?;
            let pdu = core.served_event(db, &user, short, &meta, &rules, &mut VisibilityMemo::default())?;
            Ok(Some(StoredEvent { pdu, meta, short }))
        })
        .await
    }

    /// What reads the stream positions of events a user may see inside another service's trip
    /// to the storage threads (unread counts read receipts, then their events' positions, then
    /// notification rows, in one).
    pub fn position_reader(&self) -> PositionReader {
        PositionReader(self.core.clone())
    }

    /// Up to `limit` events of a room's timeline that `user` may see, from stream position
    /// `from` (exclusive) in `direction`; returns them with the position to continue from.
    pub async fn timeline(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<u64>,
        direction: ScanDirection,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, Option<u64>)> {
        self.timeline_filtered(user, room_id, from, direction, limit, |_| true).await
    }

    /// Like [`timeline`](Self::timeline), counting only events `keep` accepts (a client's
    /// event filter), so a filtered page still holds up to `limit` events. One call reads at
    /// most [`MAX_SCANNED`] timeline rows (or `limit`, if more): a room full of events the user
    /// may not see, or that the filter drops, returns a short (even empty) page with the
    /// position the scan reached, from which the client continues.
    pub async fn timeline_filtered(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<u64>,
        direction: ScanDirection,
        limit: usize,
        keep: impl Fn(&Pdu) -> bool + Send + 'static,
    ) -> Result<(Vec<StoredEvent>, Option<u64>)> {
        let scan = self.timeline_scan(user, room_id, from, direction, limit, keep).await?;
        Ok((scan.events, scan.next))
    }

    /// [`timeline_filtered`](Self::timeline_filtered), also saying where the scan stopped.
    pub async fn timeline_scan(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<u64>,
        direction: ScanDirection,
        limit: usize,
        keep: impl Fn(&Pdu) -> bool + Send + 'static,
    ) -> Result<TimelineScan> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules = core.rules_of_room(db, short_room)?;
            let mut page = TimelinePage {
                user,
                short_room,
                rules,
                keep,
                limit,
                budget: MAX_SCANNED.max(limit),
                scanned: 0,
                events: Vec::new(),
                last: None,
                memo: VisibilityMemo::default(),
            };
            // Backwards: the live timeline, then the history backfill prepended to it; forwards
            // the other way round. A cursor with `BACKFILL_CURSOR` set is in the backfilled part.
            let in_backfill = from.filter(|f| f & BACKFILL_CURSOR != 0).map(|f| f & !BACKFILL_CURSOR);
            let end = match (direction, in_backfill) {
                (ScanDirection::Reverse, Some(n)) => page.scan_backfill(core, db, n.saturating_add(1), direction)?,
                (ScanDirection::Reverse, None) => {
                    let start = from.map_or(u64::MAX, |p| p.saturating_sub(1));
                    match from == Some(0) {
                        true => End::Exhausted,
                        false => page.scan_live(core, db, start, direction)?,
                    }
                    .or_else(|| page.scan_backfill(core, db, 1, direction))?
                }
                (ScanDirection::Forward, Some(n)) => match n > 1 {
                    true => page.scan_backfill(core, db, n - 1, direction)?,
                    false => End::Exhausted,
                }
                .or_else(|| page.scan_live(core, db, 0, direction))?,
                (ScanDirection::Forward, None) => {
                    page.scan_live(core, db, from.map_or(0, |p| p.saturating_add(1)), direction)?
                }
            };
            let next = match end {
                End::Full | End::Budget => page.last,
                End::Exhausted => None,
            };
            Ok(TimelineScan { events: page.events, next, last_read: page.last })
        })
        .await
    }

    /// The newest stream position up to which every event is committed (for pagination and
    /// sync tokens).
    pub fn current_position(&self) -> u64 {
        self.core.positions.committed()
    }
}

impl Rooms {
    /// The event a transaction ID already produced, for idempotent sends.
    /// The event may still wait for its sync (see `group_commit.rs`): the answer waits for it
    /// too, as the first request's does.
    pub async fn transaction(&self, user: &UserId, device: &str, txn_id: &str) -> Result<Option<ruma::OwnedEventId>> {
        let (user, device, txn_id) = (user.to_owned(), device.to_owned(), txn_id.to_owned());
        let found = self
            .run(move |core, db| {
                Ok(core.transaction_event(db, &user, &device, &txn_id)?.map(|id| (id, db.newest_deferred())))
            })
            .await?;
        let Some((event_id, ticket)) = found else { return Ok(None) };
        self.core.db.durable(ticket).await?;
        Ok(Some(event_id))
    }
}

impl Rooms {
    pub async fn is_world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let event = self.state_event(room_id, &StateEventType::RoomHistoryVisibility, "").await?;
        Ok(event
            .and_then(|pdu| serde_json::from_str::<HistoryVisibility>(pdu.content.get()).ok())
            .is_some_and(|v| v.history_visibility == "world_readable"))
    }

    /// The state after the room's last event at or before stream position `position`, if
    /// `user` may see that event.
    pub async fn state_at_position(&self, user: &UserId, room_id: &RoomId, position: u64) -> Result<Vec<Pdu>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules = core.rules_of_room(db, short_room)?;
            let last = TIMELINE
                .scan_from(db, &(short_room, position), ScanDirection::Reverse, 1, |(r, _)| *r == short_room)?;
            let Some((_, short)) = last.first() else { return Ok(Vec::new()) };
            let meta = EVENT_META.get(db, short)?.ok_or_else(|| Error::internal("event without meta"))?;
            if !core.can_see(db, &user, short_room, &meta)? {
                return Err(Error::forbidden("You cannot see the room at that point"));
            }
            let map = core.state.load(db, meta.state_after)?;
            map.values().map(|short| core.event_for_client(db, *short, &rules)).collect()
        })
        .await
    }
}

impl Rooms {
    /// Whether two users are both joined to some room (for key visibility).
    pub async fn share_a_room(&self, a: &UserId, b: &UserId) -> Result<bool> {
        let mut rooms_of_a: Vec<OwnedRoomId> = self
            .user_room_list(a)
            .await?
            .iter()
            .filter(|(_, m)| m.membership == "join")
            .map(|(r, _)| r.clone())
            .collect();
        rooms_of_a.sort();
        for room in rooms_of_a {
            if let Some(member) = self.state_event(&room, &StateEventType::RoomMember, b.as_str()).await?
                && membership_in(&member.content) == "join"
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Reads the stream positions of events as [`Rooms::event_for`] would serve them, inside a
/// caller's own trip to the storage threads ([`Rooms::position_reader`]).
#[derive(Clone)]
pub struct PositionReader(std::sync::Arc<RoomCore>);

impl PositionReader {
    /// The stream position of each of these events that `user` may see (as
    /// [`Rooms::event_for`] decides), without loading the events: `None` for the others.
    /// Blocking.
    pub fn visible_positions_in<'a>(
        &self,
        db: &Db,
        user: &UserId,
        event_ids: impl IntoIterator<Item = &'a ruma::EventId>,
    ) -> Result<Vec<Option<u64>>> {
        event_ids
            .into_iter()
            .map(|event_id| Ok(self.0.visible_meta(db, user, event_id)?.and_then(|(_, meta)| meta.position)))
            .collect()
    }
}
