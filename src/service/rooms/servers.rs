//! The servers in a room and the events other servers must hear of, as the federation sender
//! and the transaction receiver read them: the local events after a stream position with the
//! servers each must go to, the servers joined to a room, an event's signed JSON, which events
//! are not stored here, and a room's forward extremities. Rooms know nothing of federation;
//! federation reads rooms through these.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId,
    events::{StateEventType, TimelineEventType},
};

use super::{RoomCore, Rooms, accept::membership_in};
use crate::{
    Error, Result,
    storage::{
        Db,
        room_tables::{EVENT_META, EVENT_STREAM, PDUS, ROOMS},
    },
};

/// How many state groups' server sets are kept.
const CACHED_GROUPS: usize = 1024;

/// Servers with a joined member, per state group (state groups never change).
#[derive(Default)]
pub(super) struct ServerCache(Mutex<HashMap<u64, Arc<BTreeSet<OwnedServerName>>>>);

/// A local event and the other servers that must receive it.
#[derive(Debug, Clone)]
pub struct LocalEvent {
    pub position: u64,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub destinations: BTreeSet<OwnedServerName>,
}

impl RoomCore {
    /// The other servers with a member whose membership is `join` in a state group.
    fn joined_servers_in(&self, db: &Db, group: u64) -> Result<Arc<BTreeSet<OwnedServerName>>> {
        if let Some(servers) = self.servers.0.lock().ok().and_then(|cache| cache.get(&group).cloned()) {
            return Ok(servers);
        }
        let state = self.state.load(db, group)?;
        let mut servers = BTreeSet::new();
        let mut rules = None;
        for (key, short) in state.iter() {
            let names = self.interner.state_key(db, *key)?;
            if names.0 != StateEventType::RoomMember {
                continue;
            }
            let Ok(user) = OwnedUserId::try_from(names.1.as_str()) else { continue };
            // This server is never a destination, so its members' events are not read: a room
            // of local users costs only the (cached) names of its state keys.
            if user.server_name() == self.server_name || servers.contains(user.server_name()) {
                continue;
            }
            let rules = match &rules {
                Some(rules) => rules,
                None => {
                    let meta = EVENT_META.get(db, short)?.ok_or_else(|| Error::internal("state event missing"))?;
                    rules.insert(self.rules_of_room(db, meta.room)?)
                }
            };
            if membership_in(&self.event_by_short(db, *short, rules)?.content) == "join" {
                servers.insert(user.server_name().to_owned());
            }
        }
        let servers = Arc::new(servers);
        if let Ok(mut cache) = self.servers.0.lock() {
            if cache.len() >= CACHED_GROUPS {
                cache.clear();
            }
            cache.insert(group, servers.clone());
        }
        Ok(servers)
    }
}

impl Rooms {
    /// The events this server created with stream positions in `(after, upto]` (at most
    /// `limit` positions looked at), each with the other servers that must receive it: those
    /// with a joined member in the state right after it and, for a member event, the server of
    /// the user it is about (a kick or ban must reach them). Returns the last position looked at.
    pub async fn local_events_for_servers(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(Vec<LocalEvent>, u64)> {
        self.run(move |core, db| {
            let entries = EVENT_STREAM.between(db, after, upto, limit)?;
            let last = if entries.len() < limit { upto } else { entries.last().map_or(upto, |(p, _)| *p) };
            let mut events = Vec::new();
            for (position, (short_room, short_event)) in entries {
                let Some(meta) = EVENT_META.get(db, &short_event)? else { continue };
                let Some(record) = ROOMS.get(db, &short_room)? else { continue };
                let mut destinations: BTreeSet<OwnedServerName> = match meta.state_after_known() {
                    // The usual case, the event still the room's newest state: the counts.
                    Some(group) if record.current_state_group == group => {
                        core.joined_servers(db, short_room)?.into_iter().collect()
                    }
                    Some(group) => (*core.joined_servers_in(db, group)?).clone(),
                    None => BTreeSet::new(),
                };
                destinations.remove(&core.server_name);
                // No other server to tell and no member event that could name one: the event
                // itself need not be read (a room of local users costs two point reads).
                if destinations.is_empty() && meta.state_key.is_none() {
                    continue;
                }
                let rules = crate::service::rooms::versions::rules(&record.version)
                    .ok_or_else(|| Error::internal("unsupported room version stored"))?;
                let pdu = core.shared_event_by_short(db, short_event, &rules)?;
                if pdu.sender.server_name() != core.server_name {
                    continue;
                }
                if pdu.kind == TimelineEventType::RoomMember
                    && let Some(target) = pdu.state_key.as_deref().and_then(|key| OwnedUserId::try_from(key).ok())
                {
                    destinations.insert(target.server_name().to_owned());
                }
                destinations.remove(&core.server_name);
                if !destinations.is_empty() {
                    let (event_id, room_id) = (pdu.event_id.clone(), pdu.room_id.clone());
                    events.push(LocalEvent { position, event_id, room_id, destinations });
                }
            }
            Ok((events, last))
        })
        .await
    }

    /// An event's JSON as signed, without `unsigned` (what is sent to other servers), if stored
    /// and neither rejected nor soft-failed.
    pub async fn pdu_json(&self, event_id: &EventId) -> Result<Option<CanonicalJsonObject>> {
        let event_id = event_id.to_owned();
        self.run(move |core, db| {
            let Some(short) = core.interner.short_event(db, &event_id)? else { return Ok(None) };
            let Some(meta) = EVENT_META.get(db, &short)? else { return Ok(None) };
            if meta.rejected || meta.soft_failed {
                return Ok(None);
            }
            let Some(raw) = PDUS.get(db, &short)? else { return Ok(None) };
            let mut json: CanonicalJsonObject = serde_json::from_str(raw.get())
                .map_err(|e| Error::internal(format!("stored event is invalid: {e}")))?;
            json.remove("unsigned");
            Ok(Some(json))
        })
        .await
    }

    /// Those of `ids` this server has not stored (neither accepted, outlier nor rejected).
    pub async fn unknown_events(&self, ids: Vec<OwnedEventId>) -> Result<Vec<OwnedEventId>> {
        self.run(move |core, db| {
            let mut unknown = Vec::new();
            for id in ids {
                let known = match core.interner.short_event(db, &id)? {
                    Some(short) => EVENT_META.contains(db, &short)?,
                    None => false,
                };
                if !known {
                    unknown.push(id);
                }
            }
            Ok(unknown)
        })
        .await
    }

    /// A room's forward extremities and the smallest depth among them (for
    /// `/get_missing_events`); `None` for an unknown room.
    pub async fn extremities(&self, room_id: &RoomId) -> Result<Option<(Vec<OwnedEventId>, u64)>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let Some((short_room, _)) = core.version_of(db, &room_id)? else { return Ok(None) };
            let Some(record) = ROOMS.get(db, &short_room)? else { return Ok(None) };
            let mut ids = Vec::new();
            let mut min_depth = u64::MAX;
            for short in record.extremities {
                ids.push(core.interner.event_id(db, short)?);
                if let Some(meta) = EVENT_META.get(db, &short)? {
                    min_depth = min_depth.min(meta.depth);
                }
            }
            Ok(Some((ids, if min_depth == u64::MAX { 0 } else { min_depth })))
        })
        .await
    }
}
