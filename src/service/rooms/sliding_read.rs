//! Reads of rooms for sliding sync (MSC4186): the facts that decide a room's place in a list
//! (its type, whether it is encrypted, its bump stamp) and the name and avatar it shows, read
//! in one pass per room; and the children of a space, for the `spaces` list filter.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, RoomId, UserId};

use super::{RoomCore, Rooms, sync_read::events_between};
use crate::{
    Result,
    storage::{
        Db, ScanDirection,
        membership_tables::OUT_OF_BAND_MEMBERSHIPS,
        room_tables::{ROOMS, TIMELINE, USER_ROOMS, UserMembership},
    },
};

/// The event types that move a room up a list (MSC4186's default bump event types).
pub const BUMP_EVENT_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// The most timeline events looked at to find a room's newest bump event; past it the oldest
/// event looked at stands in (a room whose last 200 events bump nothing sinks, which is what
/// the bump types are for).
const MAX_BUMP_SCAN: usize = 200;

/// What sliding sync needs of a room's current state and timeline.
#[derive(Debug, Clone, Default)]
pub struct SlidingFacts {
    /// `type` of the create event (`m.space` for a space).
    pub room_type: Option<String>,
    pub encrypted: bool,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// The stream position of the newest bump event at or before the position asked for.
    pub bump_stamp: Option<u64>,
    /// The stream position of the room's newest timeline event at or before the position asked
    /// for (0: none): a connection that was sent the room up to it has nothing new to send.
    pub newest_event: u64,
}

fn content_string(content: &serde_json::value::RawValue, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(content.get()).ok()?;
    value.get(field)?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

impl RoomCore {
    fn sliding_facts_in(&self, db: &Db, room_id: &RoomId, upto: u64, cache: &FactsCache) -> Result<SlidingFacts> {
        let Some(short_room) = self.interner.short_room(db, room_id)? else { return Ok(SlidingFacts::default()) };
        let Some(record) = ROOMS.get(db, &short_room)? else { return Ok(SlidingFacts::default()) };
        let newest = TIMELINE
            .scan_from(db, &(short_room, upto), ScanDirection::Reverse, 1, |(r, _)| *r == short_room)?
            .first()
            .map_or(0, |((_, position), _)| *position);
        if let Some(facts) = cache.get(short_room, newest, record.current_state_group) {
            return Ok(facts);
        }
        let state = |kind: &str| self.current_state_event(db, short_room, kind, "");
        let create = state("m.room.create")?;
        let facts = SlidingFacts {
            room_type: create.as_ref().and_then(|pdu| content_string(&pdu.content, "type")),
            encrypted: state("m.room.encryption")?.is_some(),
            name: state("m.room.name")?.and_then(|pdu| content_string(&pdu.content, "name")),
            avatar: state("m.room.avatar")?.and_then(|pdu| content_string(&pdu.content, "url")),
            bump_stamp: self.bump_stamp(db, short_room, upto)?,
            newest_event: newest,
        };
        cache.put(short_room, newest, record.current_state_group, facts.clone());
        Ok(facts)
    }

    fn bump_stamp(&self, db: &Db, short_room: u64, upto: u64) -> Result<Option<u64>> {
        let rules = self.rules_of_room(db, short_room)?;
        let mut cursor = upto;
        let mut scanned = 0;
        let mut oldest = None;
        loop {
            let page =
                TIMELINE.scan_from(db, &(short_room, cursor), ScanDirection::Reverse, 50, |(r, _)| *r == short_room)?;
            for ((_, position), short) in &page {
                scanned += 1;
                oldest = Some(*position);
                let pdu = self.event_by_short(db, *short, &rules)?;
                if BUMP_EVENT_TYPES.contains(&pdu.kind.to_string().as_str()) {
                    return Ok(Some(*position));
                }
                if scanned >= MAX_BUMP_SCAN {
                    return Ok(oldest);
                }
            }
            match page.last() {
                Some(((_, position), _)) if page.len() == 50 && *position > 0 => cursor = position - 1,
                _ => return Ok(oldest),
            }
        }
    }
}

/// Facts already read, by short room: valid while the room's newest timeline event (at or
/// before the position asked for) and its current state group are the same.
#[derive(Default)]
pub struct FactsCache(Mutex<HashMap<u64, (u64, u64, SlidingFacts)>>);

/// The most rooms whose facts are kept; past it the cache starts over.
const CACHED_FACTS: usize = 50_000;

impl FactsCache {
    fn get(&self, short_room: u64, newest: u64, group: u64) -> Option<SlidingFacts> {
        let map = self.0.lock().ok()?;
        map.get(&short_room).filter(|(n, g, _)| *n == newest && *g == group).map(|(_, _, facts)| facts.clone())
    }

    fn put(&self, short_room: u64, newest: u64, group: u64, facts: SlidingFacts) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHED_FACTS {
                map.clear();
            }
            map.insert(short_room, (newest, group, facts));
        }
    }
}

/// One of a user's rooms as sliding sync's lists read it, before a request's own filters.
#[derive(Debug, Clone)]
pub struct ListRoom {
    /// The user's membership record (membership, its event and stream position).
    pub membership: UserMembership,
    /// Whether the membership is an invite or knock this server holds for a room it is not in
    /// (over federation): the room's facts are then unknown.
    pub out_of_band: bool,
    /// For an invite: who sent it, and whether it says `is_direct`.
    pub inviter: Option<String>,
    pub invite_direct: bool,
    pub facts: SlidingFacts,
}

/// A user's rooms as read for one sliding sync answer. Entries are shared between the answers
/// of a connection (an unchanged room is not read again).
pub type ListRooms = HashMap<OwnedRoomId, Arc<ListRoom>>;

/// The rooms read for a connection's previous answer, and the stream position they were read at.
pub struct PreviousListRooms {
    pub at: u64,
    pub rooms: Arc<ListRooms>,
}

/// Whether an invite's member event content says `is_direct`.
fn says_direct(content: &serde_json::Value) -> bool {
    content.get("is_direct").and_then(serde_json::Value::as_bool).unwrap_or(false)
}

impl RoomCore {
    fn list_room(
        &self,
        db: &Db,
        user: &UserId,
        room_id: &RoomId,
        record: UserMembership,
        now: u64,
        cache: &FactsCache,
    ) -> Result<ListRoom> {
        let out_of_band = OUT_OF_BAND_MEMBERSHIPS
            .get(db, &(user.to_owned(), room_id.to_owned()))?
            .filter(|oob| oob.event_id == record.event_id);
        // A left room is shown as it was when the user left.
        let upto = match record.membership.as_str() {
            "leave" | "ban" => record.position.min(now),
            _ => now,
        };
        let facts = match out_of_band {
            Some(_) => SlidingFacts::default(),
            None => self.sliding_facts_in(db, room_id, upto, cache)?,
        };
        let (inviter, invite_direct) = match (record.membership.as_str(), &out_of_band) {
            ("invite", Some(oob)) => {
                (oob.invite["sender"].as_str().map(str::to_owned), says_direct(&oob.invite["content"]))
            }
            ("invite", None) => {
                let short_room = self.interner.short_room(db, room_id)?;
                match short_room
                    .map(|short| self.current_state_event(db, short, "m.room.member", user.as_str()))
                    .transpose()?
                    .flatten()
                {
                    Some(pdu) => (Some(pdu.sender.to_string()), says_direct(&pdu.content_value())),
                    None => (None, false),
                }
            }
            _ => (None, false),
        };
        Ok(ListRoom { membership: record, out_of_band: out_of_band.is_some(), inviter, invite_direct, facts })
    }
}

impl Rooms {
    /// The user's rooms that `keep` accepts, with their list facts read at stream position
    /// `now` (a left room at its leave). One blocking read for all of them: a sliding sync
    /// answer needs this for every room of the user.
    ///
    /// With the connection's `previous` read, a room whose membership record is the same and
    /// that has no event after `previous.at` is taken from it rather than read again (unless
    /// too many events happened since, when every room is read), so an answer reads only the
    /// rooms that changed. A room's facts change only with an event in it, as `/sync`'s
    /// incremental answers also assume.
    pub async fn sliding_rooms(
        &self,
        user: &UserId,
        now: u64,
        previous: Option<PreviousListRooms>,
        keep: impl Fn(&RoomId, &UserMembership) -> bool + Send + 'static,
        cache: Arc<FactsCache>,
    ) -> Result<ListRooms> {
        let user = user.to_owned();
        self.run(move |core, db| {
            let records = USER_ROOMS.scan_prefix(db, &(user.clone(),))?;
            let reusable = match &previous {
                Some(previous) if previous.at <= now => match events_between(db, previous.at, now)? {
                    Some(events) => {
                        let shorts: HashSet<u64> = events.into_iter().map(|(_, (room, _))| room).collect();
                        let mut changed = HashSet::with_capacity(shorts.len());
                        for short in shorts {
                            changed.insert(core.interner.room_id(db, short)?);
                        }
                        Some((&previous.rooms, changed))
                    }
                    None => None,
                },
                _ => None,
            };
            let mut out = HashMap::with_capacity(records.len());
            for ((_, room_id), record) in records {
                if !keep(&room_id, &record) {
                    continue;
                }
                let earlier = reusable.as_ref().and_then(|(rooms, changed)| {
                    rooms.get(&room_id).filter(|earlier| earlier.membership == record && !changed.contains(&room_id))
                });
                let entry = match earlier {
                    Some(earlier) => earlier.clone(),
                    None => Arc::new(core.list_room(db, &user, &room_id, record, now, &cache)?),
                };
                out.insert(room_id, entry);
            }
            Ok(out)
        })
        .await
    }

    /// The rooms a space names as children (`m.space.child` with a non-empty `via`).
    pub async fn space_children(&self, space: &RoomId) -> Result<Vec<OwnedRoomId>> {
        let children = self
            .current_state(space)
            .await?
            .into_iter()
            .filter(|pdu| pdu.kind.to_string() == "m.space.child")
            .filter(|pdu| {
                serde_json::from_str::<serde_json::Value>(pdu.content.get())
                    .ok()
                    .and_then(|content| content.get("via")?.as_array().map(|via| !via.is_empty()))
                    .unwrap_or(false)
            })
            .filter_map(|pdu| OwnedRoomId::try_from(pdu.state_key?).ok())
            .collect();
        Ok(children)
    }
}
