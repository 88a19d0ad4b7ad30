//! Reads of rooms for sliding sync (MSC4186): the facts that decide a room's place in a list
//! (its type, whether it is encrypted, its bump stamp) and the name and avatar it shows, read
//! in one pass per room; and the children of a space, for the `spaces` list filter.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, RoomId, UserId};

use super::{RoomCore, Rooms, out_of_band::current_out_of_band};
use crate::{
    Result,
    storage::{
        Db, ScanDirection,
        membership_tables::OutOfBand,
        room_tables::{ROOMS, TIMELINE},
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

impl Rooms {
    /// For each of the user's rooms, with the stream position to read it at: the user's
    /// out-of-band membership in it (see [`Rooms::out_of_band`]) and, for a room this server
    /// has, its list facts (the bump stamp read at or before that position). One blocking read for all of them: a sliding sync answer needs
    /// this for every room of the user.
    pub async fn sliding_candidates(
        &self,
        user: &UserId,
        rooms: Vec<(OwnedRoomId, u64)>,
        cache: Arc<FactsCache>,
    ) -> Result<Vec<(Option<OutOfBand>, SlidingFacts)>> {
        let user = user.to_owned();
        self.run(move |core, db| {
            let mut out = Vec::with_capacity(rooms.len());
            for (room_id, upto) in rooms {
                let key = (user.clone(), room_id);
                let out_of_band = current_out_of_band(db, &key)?;
                let facts = match out_of_band {
                    Some(_) => SlidingFacts::default(),
                    None => core.sliding_facts_in(db, &key.1, upto, &cache)?,
                };
                out.push((out_of_band, facts));
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
