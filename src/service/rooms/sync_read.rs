//! Reading rooms for sync: windows of a room's timeline between two stream positions, the state
//! at a stream position and the difference between two such states, a user's membership at a
//! position, the member summary, the stripped state shown with an invite, and the membership
//! changes between two positions (for device lists).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{
    Pdu, RoomCore, Rooms,
    accept::membership_in,
    read::{StoredEvent, VisibilityMemo},
};
use crate::{
    Error, Result,
    storage::{
        Db, ScanDirection,
        room_tables::{
            CURRENT_STATE, EVENT_META, EVENT_STREAM, EVENT_TRANSACTIONS, EventMeta, PDUS, ROOMS, TIMELINE,
            TIMELINE_GAPS,
        },
    },
};

/// Events a caller wants, decided on the event itself (filters).
pub type EventPredicate = Arc<dyn Fn(&Pdu) -> bool + Send + Sync>;

/// The newest events of a timeline window, oldest first.
#[derive(Debug, Default)]
pub struct TimelineWindow {
    pub events: Vec<StoredEvent>,
    /// More wanted events lie in the window before the first one returned.
    pub limited: bool,
}

/// Event types a caller wants.
pub type TypePredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Which state events a sync wants.
#[derive(Clone)]
pub struct StateSelection {
    /// Decides on the event type.
    pub keep: TypePredicate,
    /// Lazy-loading members: only these users' member events are sent...
    pub lazy_members: Option<HashSet<String>>,
    /// ...and these even when unchanged (the senders of the timeline).
    pub always_members: HashSet<String>,
}

/// A state event's type and state key, as the interner keeps them.
pub type StateNames = Arc<(ruma::events::StateEventType, String)>;

/// A state event as a sync serves it (see `RoomCore::sync_state_events_in`).
pub struct SyncStateEvent {
    /// Its type and state key.
    pub names: StateNames,
    pub sender: OwnedUserId,
    pub event_id: ruma::OwnedEventId,
    /// The event in the form the sync asked for.
    pub json: Box<serde_json::value::RawValue>,
}

/// State events above which a sync's state is written straight from storage when not cached.
const LARGE_STATE: usize = 200;

/// Member counts and heroes for a room summary.
#[derive(Debug, Default)]
pub struct MemberSummary {
    pub joined: u64,
    pub invited: u64,
    /// Up to five other joined or invited members, by user ID.
    pub heroes: Vec<OwnedUserId>,
}

/// A change of one user's membership in a room (a member event whose membership differs from
/// the one before it; profile changes are not membership changes).
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub room_id: OwnedRoomId,
    pub user: OwnedUserId,
    /// The new membership: `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The membership before the change, if the user had one.
    pub previous: Option<String>,
}

/// The most events one timeline window looks at.
const MAX_WINDOW_SCAN: usize = 2000;

/// The most events [`Rooms::rooms_with_events`] reads.
const MAX_CHANGED_SCAN: usize = 5000;

/// State event types shown with an invite (besides the member events).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// An event's stream position with its (short room, short event).
type StreamEntry = (u64, (u64, u64));

/// Every event in stream positions `(after, upto]`, oldest first, or `None` when there are more
/// than [`MAX_CHANGED_SCAN`] of them.
pub(super) fn events_between(db: &Db, after: u64, upto: u64) -> Result<Option<Vec<StreamEntry>>> {
    let events = EVENT_STREAM.between(db, after, upto, MAX_CHANGED_SCAN + 1)?;
    Ok((events.len() <= MAX_CHANGED_SCAN).then_some(events))
}

impl RoomCore {
    /// The state group after the room's last timeline event at or before `position`.
    fn state_group_at(&self, db: &Db, short_room: u64, position: u64) -> Result<Option<u64>> {
        let last =
            TIMELINE.scan_from(db, &(short_room, position), ScanDirection::Reverse, 1, |(r, _)| *r == short_room)?;
        let Some((_, short)) = last.first() else {
            // Before the room's first live event: the state before it. A room joined through
            // another server starts with the join, on the state that server gave.
            let first = TIMELINE
                .scan_from(db, &(short_room, position), ScanDirection::Forward, 1, |(r, _)| *r == short_room)?;
            let Some((_, short)) = first.first() else { return Ok(None) };
            return Ok(self.event_meta(db, *short)?.and_then(|meta| meta.state_before));
        };
        Ok(self.event_meta(db, *short)?.map(|meta| meta.state_after))
    }

    /// The event's `EVENT_META` row, kept beside the event in the event cache once read (every
    /// writer of the row forgets the event after its batch).
    pub(super) fn event_meta(&self, db: &Db, short: u64) -> Result<Option<EventMeta>> {
        Ok(self.event_meta_read(db, short)?.map(|(meta, _)| meta))
    }

    /// [`event_meta`](Self::event_meta), with the event cache's ticket when the row was read
    /// from storage: a caller that then loads the event itself (which puts it in the cache)
    /// keeps the row beside it with [`keep_event_meta`](Self::keep_event_meta). Otherwise an
    /// event served for the first time would have its row read again the next time.
    pub(super) fn event_meta_read(&self, db: &Db, short: u64) -> Result<Option<(EventMeta, Option<u64>)>> {
        let ticket = match self.events.meta(short) {
            Ok(meta) => return Ok(Some((meta, None))),
            Err(ticket) => ticket,
        };
        let meta = EVENT_META.get(db, &short)?;
        if let Some(meta) = &meta {
            self.events.put_meta(short, meta, ticket);
        }
        Ok(meta.map(|meta| (meta, Some(ticket))))
    }

    /// Keeps an `EVENT_META` row read under `ticket` beside its event, now that the event is
    /// cached (nothing when it was forgotten since the ticket was taken).
    pub(super) fn keep_event_meta(&self, short: u64, meta: &EventMeta, ticket: Option<u64>) {
        if let Some(ticket) = ticket {
            self.events.put_meta(short, meta, ticket);
        }
    }

    /// The state events `selection` picks of the state at `to` (those that differ from the
    /// state at `from`, when given): (type and state key, short event ID), with the size of
    /// the state at `to`.
    fn selected_state(
        &self,
        db: &Db,
        short_room: u64,
        from: Option<u64>,
        to: u64,
        selection: &StateSelection,
    ) -> Result<(Vec<(StateNames, u64)>, usize)> {
        let Some(to_group) = self.state_group_at(db, short_room, to)? else { return Ok((Vec::new(), 0)) };
        let from_group = match from {
            Some(position) => self.state_group_at(db, short_room, position)?,
            None => None,
        };
        // Nothing changed and no member is wanted regardless (only lazy-loading sends the
        // timeline's senders unchanged): skip reading and walking the state. The size is only
        // used for initial syncs, which have no `from`.
        let members_regardless = selection.lazy_members.is_some() && !selection.always_members.is_empty();
        if from_group == Some(to_group) && !members_regardless {
            return Ok((Vec::new(), 0));
        }
        let to_map = self.state.load(db, to_group)?;
        let from_map = match from_group {
            Some(group) => Some(self.state.load(db, group)?),
            None => None,
        };
        let mut out = Vec::new();
        for (key, event) in to_map.iter() {
            let names = self.interner.state_key(db, *key)?;
            let kind = names.0.to_string();
            if !(selection.keep)(&kind) {
                continue;
            }
            let changed = from_map.as_ref().is_none_or(|map| map.get(key) != Some(event));
            let wanted = match &selection.lazy_members {
                Some(lazy) if kind == "m.room.member" => {
                    lazy.contains(&names.1) && (changed || selection.always_members.contains(&names.1))
                }
                _ => changed,
            };
            if wanted {
                out.push((names, *event));
            }
        }
        Ok((out, to_map.len()))
    }

    fn short_room_of(&self, db: &Db, room_id: &RoomId) -> Result<u64> {
        self.interner.short_room(db, room_id)?.ok_or_else(|| Error::not_found("Unknown room"))
    }
}

/// Rows of the timeline read at a time once the first page of a window was not enough.
const TIMELINE_PAGE: usize = 100;

impl Rooms {
    /// The newest `limit` events in stream positions `(after, upto]` that `user` may see and
    /// `wanted` accepts. A user always sees their own membership events (so a leave is shown).
    pub async fn timeline_window(
        &self,
        user: &UserId,
        room_id: &RoomId,
        after: Option<u64>,
        upto: u64,
        limit: usize,
        wanted: EventPredicate,
    ) -> Result<TimelineWindow> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| core.timeline_window_in(db, &user, &room_id, (after, upto), limit, &wanted)).await
    }

    /// State events of the room at stream position `to` (after its last event at or before
    /// it): all of them when `from` is `None`, else those that differ from the state at `from`;
    /// narrowed by `selection`.
    pub async fn sync_state(
        &self,
        room_id: &RoomId,
        from: Option<u64>,
        to: u64,
        selection: StateSelection,
    ) -> Result<Vec<Arc<Pdu>>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let short_room = core.short_room_of(db, &room_id)?;
            let rules = core.rules_of_room(db, short_room)?;
            let (wanted, _) = core.selected_state(db, short_room, from, to, &selection)?;
            wanted.into_iter().map(|(_, short)| core.shared_event_for_client(db, short, &rules)).collect()
        })
        .await
    }

    /// The rooms with events in stream positions `(after, upto]`, or `None` when there are
    /// more than [`MAX_CHANGED_SCAN`] events to look at (the caller then checks every room).
    pub async fn rooms_with_events(&self, after: u64, upto: u64) -> Result<Option<HashSet<OwnedRoomId>>> {
        self.run(move |core, db| {
            let Some(events) = events_between(db, after, upto)? else { return Ok(None) };
            let shorts: BTreeSet<u64> = events.into_iter().map(|(_, (room, _))| room).collect();
            let mut rooms = HashSet::with_capacity(shorts.len());
            for short in shorts {
                rooms.insert(core.interner.room_id(db, short)?);
            }
            Ok(Some(rooms))
        })
        .await
    }

    /// The membership changes in stream positions `(after, upto]` in `rooms`, oldest first, or
    /// `None` when there are more than [`MAX_CHANGED_SCAN`] events to look at.
    pub async fn membership_changes(
        &self,
        rooms: Vec<OwnedRoomId>,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<MembershipChange>>> {
        self.run(move |core, db| {
            let Some(events) = events_between(db, after, upto)? else { return Ok(None) };
            // Only the rooms with events in the window are looked up, each once (not every
            // room of the list: a user may be in hundreds).
            let wanted: HashSet<OwnedRoomId> = rooms.into_iter().collect();
            let mut room_of: HashMap<u64, Option<OwnedRoomId>> = HashMap::new();
            let mut changes = Vec::new();
            for (_, (short_room, short_event)) in events {
                let room_id = match room_of.get(&short_room) {
                    Some(known) => known,
                    None => {
                        // A room purged since has no ID any more: none of the user's rooms.
                        let room_id = crate::storage::room_tables::ROOM_IDS.get(db, &short_room)?;
                        room_of.entry(short_room).or_insert(room_id.filter(|room_id| wanted.contains(room_id)))
                    }
                };
                let Some(room_id) = room_id else { continue };
                let Some(meta) = EVENT_META.get(db, &short_event)? else { continue };
                let Some(state_key) = meta.state_key.filter(|_| meta.is_served()) else { continue };
                let names = core.interner.state_key(db, state_key)?;
                if names.0 != ruma::events::StateEventType::RoomMember {
                    continue;
                }
                let Ok(user) = OwnedUserId::try_from(names.1.as_str()) else { continue };
                let rules = core.rules_of_room(db, short_room)?;
                let membership = membership_in(&core.event_by_short(db, short_event, &rules)?.content);
                let before = match meta.state_before {
                    Some(group) => core
                        .state_in_group(db, group, "m.room.member", user.as_str())?
                        .map(|pdu| membership_in(&pdu.content)),
                    None => None,
                };
                if before.as_deref() != Some(membership.as_str()) {
                    changes.push(MembershipChange { room_id: room_id.clone(), user, membership, previous: before });
                }
            }
            Ok(Some(changes))
        })
        .await
    }

    /// The users joined to a room now.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let short_room = core.short_room_of(db, &room_id)?;
            let rules = core.rules_of_room(db, short_room)?;
            let mut joined = Vec::new();
            for ((_, key), short) in CURRENT_STATE.scan_prefix(db, &(short_room,))? {
                let names = core.interner.state_key(db, key)?;
                if names.0 != ruma::events::StateEventType::RoomMember {
                    continue;
                }
                if membership_in(&core.event_by_short(db, short, &rules)?.content) == "join"
                    && let Ok(user) = OwnedUserId::try_from(names.1.as_str())
                {
                    joined.push(user);
                }
            }
            Ok(joined)
        })
        .await
    }

    /// The (device, transaction ID) of each of these events that has one.
    pub async fn transaction_ids(&self, event_ids: Vec<String>) -> Result<HashMap<String, (String, String)>> {
        self.run(move |core, db| core.transaction_ids_in(db, event_ids)).await
    }

    /// The user's membership in the room's state at a stream position, with the stream position
    /// of that membership event.
    pub async fn membership_event_at(
        &self,
        user: &UserId,
        room_id: &RoomId,
        position: u64,
    ) -> Result<Option<(String, Option<u64>)>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.short_room_of(db, &room_id)?;
            let Some(group) = core.state_group_at(db, short_room, position)? else { return Ok(None) };
            let Some(pdu) = core.state_in_group(db, group, "m.room.member", user.as_str())? else { return Ok(None) };
            let at = match core.interner.short_event(db, &pdu.event_id)? {
                Some(short) => EVENT_META.get(db, &short)?.and_then(|meta| meta.position),
                None => None,
            };
            Ok(Some((membership_in(&pdu.content), at)))
        })
        .await
    }

    /// The user's membership in the state after each of these events (by their `state_after`
    /// groups): `unsigned.membership` of MSC4115, "leave" where the user has none.
    pub async fn memberships_after(&self, user: &UserId, groups: Vec<u64>) -> Result<Vec<String>> {
        let user = user.to_owned();
        self.run(move |core, db| core.memberships_after_in(db, &user, groups)).await
    }

    /// `user`'s membership in the room at stream position `position`.
    pub async fn membership_at(&self, user: &UserId, room_id: &RoomId, position: u64) -> Result<Option<String>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| core.membership_at_in(db, &user, &room_id, position)).await
    }

    /// Joined and invited counts of the current state, and heroes other than `user`. Read once
    /// per current state group (a message changes nothing here; a sync of a big room would
    /// otherwise parse every member event) and kept in [`SummaryCache`].
    pub async fn member_summary(&self, room_id: &RoomId, user: &UserId) -> Result<MemberSummary> {
        let (room_id, user) = (room_id.to_owned(), user.to_owned());
        self.run(move |core, db| core.member_summary_in(db, &room_id, &user)).await
    }

    /// Everyone joined now to any of these rooms (those this server knows), from the same
    /// per-state facts as the room summary: one blocking call for all the rooms, and no member
    /// event read again while a room's state stays the same.
    pub async fn joined_members_of(&self, rooms: Vec<OwnedRoomId>) -> Result<BTreeSet<OwnedUserId>> {
        self.run(move |core, db| {
            let mut users = BTreeSet::new();
            for room_id in rooms {
                let Some(short_room) = core.interner.short_room(db, &room_id)? else { continue };
                if !ROOMS.contains(db, &short_room)? {
                    continue;
                }
                users.extend(core.summary_facts(db, short_room)?.joined_members.iter().cloned());
            }
            Ok(users)
        })
        .await
    }

    /// The state shown with an invite: the room's basic state events, the invited user's
    /// member event and the inviter's.
    pub async fn invite_state(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<Pdu>> {
        let (room_id, user) = (room_id.to_owned(), user.to_owned());
        self.run(move |core, db| {
            let short_room = core.short_room_of(db, &room_id)?;
            let mut out = Vec::new();
            for kind in INVITE_STATE_TYPES {
                if let Some(pdu) = core.current_state_event(db, short_room, kind, "")? {
                    out.push(pdu);
                }
            }
            if let Some(invite) = core.current_state_event(db, short_room, "m.room.member", user.as_str())? {
                let inviter = invite.sender.clone();
                out.push(invite);
                if inviter != user
                    && let Some(member) = core.current_state_event(db, short_room, "m.room.member", inviter.as_str())?
                {
                    out.push(member);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// What the room summary needs of one current state: the counts and the first six joined or
/// invited members by user ID (five heroes whoever asks); and the joined members.
pub(super) struct SummaryFacts {
    joined: u64,
    invited: u64,
    first_members: Vec<OwnedUserId>,
    /// Every joined member (for the presence part of an initial sync).
    joined_members: Vec<OwnedUserId>,
}

/// Summary facts by short room ID, with the current state group they were read for.
#[derive(Default)]
pub(super) struct SummaryCache(std::sync::Mutex<HashMap<u64, (u64, Arc<SummaryFacts>)>>);

/// The most rooms whose summaries are kept; past it the cache starts over.
const CACHED_SUMMARIES: usize = 10_000;

impl SummaryCache {
    /// Forgets everything (after events were pruned on disk).
    pub(super) fn clear(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.clear();
        }
    }

    fn get(&self, short_room: u64) -> Option<(u64, Arc<SummaryFacts>)> {
        self.0.lock().ok()?.get(&short_room).cloned()
    }

    fn put(&self, short_room: u64, group: u64, facts: Arc<SummaryFacts>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHED_SUMMARIES {
                map.clear();
            }
            map.insert(short_room, (group, facts));
        }
    }
}

impl RoomCore {
    /// The summary facts of the room's current state, from [`SummaryCache`] when it has them.
    fn summary_facts(&self, db: &Db, short_room: u64) -> Result<Arc<SummaryFacts>> {
        let group = ROOMS.get(db, &short_room)?.map(|record| record.current_state_group);
        Ok(match (group, self.summaries.get(short_room)) {
            (Some(group), Some((cached, facts))) if cached == group => facts,
            _ => {
                let facts = Arc::new(self.read_summary(db, short_room)?);
                if let Some(group) = group {
                    self.summaries.put(short_room, group, facts.clone());
                }
                facts
            }
        })
    }

    fn read_summary(&self, db: &Db, short_room: u64) -> Result<SummaryFacts> {
        let (mut joined, mut invited) = (0, 0);
        let mut members = BTreeSet::new();
        let mut joined_members = Vec::new();
        for ((_, key), short) in CURRENT_STATE.scan_prefix(db, &(short_room,))? {
            let names = self.interner.state_key(db, key)?;
            if names.0 != ruma::events::StateEventType::RoomMember {
                continue;
            }
            let membership = self.stored_membership(db, short)?;
            match membership.as_str() {
                "join" => joined += 1,
                "invite" => invited += 1,
                _ => continue,
            }
            if let Ok(member) = OwnedUserId::try_from(names.1.as_str()) {
                if membership == "join" {
                    joined_members.push(member.clone());
                }
                members.insert(member);
            }
        }
        Ok(SummaryFacts { joined, invited, first_members: members.into_iter().take(6).collect(), joined_members })
    }

    /// The `membership` of a stored member event: from the event cache when it holds the
    /// event, else read from its stored JSON without parsing the whole event (and without
    /// filling the cache: a room of thousands of members read cold would evict everything).
    fn stored_membership(&self, db: &Db, short: u64) -> Result<String> {
        if let super::event_cache::Lookup::Hit(pdu) = self.events.lookup(short) {
            return Ok(membership_in(&pdu.content));
        }
        #[derive(serde::Deserialize)]
        struct ContentOnly<'a> {
            #[serde(borrow)]
            content: &'a serde_json::value::RawValue,
        }
        let bytes =
            PDUS.get_bytes(db, &short)?.ok_or_else(|| crate::Error::internal(format!("event {short} missing")))?;
        let event: ContentOnly<'_> = serde_json::from_slice(&bytes)
            .map_err(|e| crate::Error::internal(format!("stored event {short} is invalid: {e}")))?;
        Ok(membership_in(event.content))
    }
}

/// The blocking halves of the reads above, for one trip that makes several (`sync_room.rs`).
impl RoomCore {
    pub(super) fn timeline_window_in(
        &self,
        db: &Db,
        user: &UserId,
        room_id: &RoomId,
        (after, upto): (Option<u64>, u64),
        limit: usize,
        wanted: &EventPredicate,
    ) -> Result<TimelineWindow> {
        let short_room = self.short_room_of(db, room_id)?;
        let rules = self.rules_of_room(db, short_room)?;
        // A gap in the room's history inside the window (events placed after missing
        // ones): the window starts at it and is limited, as Synapse shows it, so the client
        // pages back with `/messages` instead of seeing the two sides joined.
        let floor = after.unwrap_or(0);
        let gap = TIMELINE_GAPS
            .scan_from(db, &(short_room, upto), ScanDirection::Reverse, 1, |(r, p)| *r == short_room && *p > floor)?;
        let (floor, mut limited) = match gap.first() {
            Some(((_, position), ())) => (position.saturating_sub(1), true),
            None => (floor, false),
        };
        let mut newest_first = Vec::new();
        let mut scanned = 0;
        let mut cursor = upto;
        let mut memo = VisibilityMemo::default();
        // The first page is just large enough to fill the window and tell whether it is
        // limited (most rooms show everything they read); later pages, needed only when
        // events are hidden or filtered out, read 100 rows at a time.
        let mut page_size = limit.saturating_add(1).min(TIMELINE_PAGE);
        'pages: while cursor > floor {
            let page =
                TIMELINE.scan_from(db, &(short_room, cursor), ScanDirection::Reverse, page_size, |(room, p)| {
                    *room == short_room && *p > floor
                })?;
            for (_, short) in &page {
                // Bounded work when little is visible (a long history hidden from a new
                // member): the window is then cut short and marked limited.
                scanned += 1;
                if scanned > MAX_WINDOW_SCAN {
                    limited = true;
                    break 'pages;
                }
                let Some((meta, ticket)) = self.event_meta_read(db, *short)? else { continue };
                let visible = self.can_see_with(db, user, short_room, &meta, &mut memo)?;
                let pdu = self.served_event(db, user, *short, &meta, &rules, &mut memo)?;
                self.keep_event_meta(*short, &meta, ticket);
                let own_membership = pdu.state_key.as_deref() == Some(user.as_str())
                    && pdu.kind == ruma::events::TimelineEventType::RoomMember;
                if !(visible || own_membership) || !wanted(&pdu) {
                    continue;
                }
                if newest_first.len() >= limit {
                    limited = true;
                    break 'pages;
                }
                newest_first.push(StoredEvent { pdu, meta, short: *short });
            }
            match page.last() {
                Some(((_, position), _)) if page.len() == page_size => {
                    cursor = position.saturating_sub(1);
                    page_size = TIMELINE_PAGE;
                }
                _ => break,
            }
        }
        newest_first.reverse();
        Ok(TimelineWindow { events: newest_first, limited })
    }

    /// [`Rooms::sync_state`] as a sync serves it: each event in the sync format
    /// (a client event without `room_id`), or as stored with `federation`, serialised here on
    /// the storage threads (so the rooms of one sync are serialised on every core). In a room with
    /// a large state, an event not in the event cache is written straight from its stored text
    /// without being parsed or cached (a sync of many big rooms would otherwise parse and evict
    /// every member event of each).
    pub(super) fn sync_state_events_in(
        &self,
        db: &Db,
        room_id: &RoomId,
        from: Option<u64>,
        to: u64,
        selection: &StateSelection,
        federation: bool,
    ) -> Result<Vec<SyncStateEvent>> {
        let short_room = self.short_room_of(db, room_id)?;
        let rules = self.rules_of_room(db, short_room)?;
        let (wanted, state_size) = self.selected_state(db, short_room, from, to, selection)?;
        let large = !federation && state_size > LARGE_STATE;
        let mut out = Vec::with_capacity(wanted.len());
        for (names, short) in wanted {
            if large
                && !self.redacted_targets.may_contain(short)
                && !matches!(self.events.lookup(short), super::event_cache::Lookup::Hit(_))
                && let Some(bytes) = PDUS.get_bytes(db, &short)?
            {
                let event_id = self.interner.event_id(db, short)?;
                if let Some((json, sender)) = Pdu::stored_client_json(&bytes, event_id.as_str()) {
                    out.push(SyncStateEvent { names, sender, event_id, json });
                    continue;
                }
            }
            let pdu = self.shared_event_for_client(db, short, &rules)?;
            let json = if federation { pdu.raw_json() } else { pdu.client_json(false, &[]) }
                .map_err(|e| Error::internal(format!("cannot serialise event: {e}")))?;
            out.push(SyncStateEvent { names, sender: pdu.sender.clone(), event_id: pdu.event_id.clone(), json });
        }
        Ok(out)
    }

    pub(super) fn transaction_ids_in(
        &self,
        db: &Db,
        event_ids: Vec<String>,
    ) -> Result<HashMap<String, (String, String)>> {
        let mut out = HashMap::new();
        for event_id in event_ids {
            if let Some(txn) = EVENT_TRANSACTIONS.get(db, &event_id)? {
                out.insert(event_id, txn);
            }
        }
        Ok(out)
    }

    pub(super) fn memberships_after_in(&self, db: &Db, user: &UserId, groups: Vec<u64>) -> Result<Vec<String>> {
        let mut memo: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            if let Some(known) = memo.get(&group) {
                out.push(known.clone());
                continue;
            }
            let membership = self
                .state_in_group(db, group, "m.room.member", user.as_str())?
                .map_or_else(|| "leave".to_owned(), |pdu| membership_in(&pdu.content));
            memo.insert(group, membership.clone());
            out.push(membership);
        }
        Ok(out)
    }

    pub(super) fn membership_at_in(
        &self,
        db: &Db,
        user: &UserId,
        room_id: &RoomId,
        position: u64,
    ) -> Result<Option<String>> {
        let short_room = self.short_room_of(db, room_id)?;
        let Some(group) = self.state_group_at(db, short_room, position)? else { return Ok(None) };
        Ok(self.state_in_group(db, group, "m.room.member", user.as_str())?.map(|pdu| membership_in(&pdu.content)))
    }

    pub(super) fn member_summary_in(&self, db: &Db, room_id: &RoomId, user: &UserId) -> Result<MemberSummary> {
        let short_room = self.short_room_of(db, room_id)?;
        let facts = self.summary_facts(db, short_room)?;
        let heroes = facts.first_members.iter().filter(|member| **member != user).take(5).cloned().collect();
        Ok(MemberSummary { joined: facts.joined, invited: facts.invited, heroes })
    }
}
