//! What other servers may read of a room over federation: single events, the state and auth
//! chain at an event, missing events, backfill, and the servers in a room; and the room's
//! server ACL (`m.room.server_acl`), which every room-scoped federation request is checked
//! against ([`Rooms::server_allowed`]).
//!
//! Access follows the spec and Synapse: the requesting server must pass the room's ACL and have
//! a user joined to the room now (`403 M_FORBIDDEN` otherwise); an unknown room or event is
//! `404 M_NOT_FOUND`. Each event served is judged by the history visibility of the state before
//! it for that server (`world_readable` and `shared` history is visible to servers in the room;
//! `invited` and `joined` history only when one of the server's users was invited or joined
//! then); an event it may not see is served redacted, so the DAG stays whole. Rejected events
//! are never served; soft-failed events are (the spec's note under "Soft failure"), but only
//! reached through events that reference them. Events are served as their signed JSON without
//! `unsigned`, which is this server's own.

use std::collections::{BTreeSet, BinaryHeap, HashSet};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, RoomId, ServerName, events::StateEventType,
    events::room::server_acl::RoomServerAclEventContent, room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::{Pdu, RoomCore, Rooms, accept::membership_in};
use crate::{
    Error, Result,
    storage::{
        Db,
        room_tables::{EVENT_META, EventMeta, ROOM_SERVERS},
    },
};

/// Most events one `/backfill` answer holds, whatever `limit` asks.
pub const MAX_BACKFILL: usize = 100;
/// Most events one `/get_missing_events` answer holds.
pub const MAX_MISSING_EVENTS: usize = 100;
/// Most events a walk starts from (`latest_events`, `v`); the rest of a longer list is ignored.
const MAX_START_EVENTS: usize = 100;

fn not_in_room(server: &ServerName) -> Error {
    Error::forbidden(format!("{server} is not in this room"))
}

fn denied_by_acl(server: &ServerName) -> Error {
    Error::forbidden(format!("{server} is denied by the room's server ACL"))
}

fn to_raw(json: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(json).map_err(|e| Error::internal(e.to_string()))
}

impl RoomCore {
    /// Whether the room's current server ACL lets `server` in (no ACL: everyone).
    fn acl_allows(&self, db: &Db, short_room: u64, server: &ServerName) -> Result<bool> {
        let Some(acl) = self.current_state_event(db, short_room, "m.room.server_acl", "")? else { return Ok(true) };
        // An ACL whose content does not parse denies no one (Synapse ignores such an event).
        Ok(serde_json::from_str::<RoomServerAclEventContent>(acl.content.get())
            .map_or(true, |content| content.is_allowed(server)))
    }

    /// The servers with a user joined to the room now (kept in `ROOM_SERVERS`).
    pub(super) fn joined_servers(&self, db: &Db, short_room: u64) -> Result<Vec<OwnedServerName>> {
        Ok(ROOM_SERVERS
            .scan_prefix(db, &(short_room,))?
            .into_iter()
            .filter_map(|((_, server), _)| OwnedServerName::try_from(server).ok())
            .collect())
    }

    /// The room's short id and rules, once `origin` passes its ACL and is in it.
    fn admit(&self, db: &Db, room_id: &RoomId, origin: &ServerName) -> Result<(u64, RoomVersionRules)> {
        let short_room = self.interner.short_room(db, room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = self.rules_of_room(db, short_room)?;
        if !self.acl_allows(db, short_room, origin)? {
            return Err(denied_by_acl(origin));
        }
        if !ROOM_SERVERS.contains(db, &(short_room, origin.to_string()))? {
            return Err(not_in_room(origin));
        }
        Ok((short_room, rules))
    }

    /// A stored event of the room that may be served (not rejected), with its facts.
    fn servable(&self, db: &Db, short_room: u64, event_id: &EventId) -> Result<Option<(u64, EventMeta)>> {
        let Some(short) = self.interner.short_event(db, event_id)? else { return Ok(None) };
        let Some(meta) = EVENT_META.get(db, &short)? else { return Ok(None) };
        Ok((meta.room == short_room && !meta.rejected).then_some((short, meta)))
    }

    /// Whether `server` may see an event by the history visibility of the state before it.
    /// An outlier (no known state) is judged by the room's current state.
    pub(super) fn server_can_see(&self, db: &Db, server: &ServerName, meta: &EventMeta) -> Result<bool> {
        let state = self.state.load(
            db,
            match meta.state_before.or(meta.state_after_known()) {
                Some(group) => group,
                None => crate::storage::room_tables::ROOMS
                    .get(db, &meta.room)?
                    .map_or(0, |record| record.current_state_group),
            },
        )?;
        let rules = self.rules_of_room(db, meta.room)?;
        let mut visibility = "shared".to_owned();
        let mut memberships = Vec::new();
        for (key, short) in state.iter() {
            let names = self.interner.state_key(db, *key)?;
            match names.0 {
                StateEventType::RoomHistoryVisibility if names.1.is_empty() => {
                    let pdu = self.event_by_short(db, *short, &rules)?;
                    if let Ok(value) = serde_json::from_str::<serde_json::Value>(pdu.content.get())
                        && let Some(v) = value.get("history_visibility").and_then(|v| v.as_str())
                    {
                        visibility = v.to_owned();
                    }
                }
                StateEventType::RoomMember
                    if ruma::UserId::parse(names.1.as_str()).is_ok_and(|user| user.server_name() == server) =>
                {
                    memberships.push(membership_in(&self.event_by_short(db, *short, &rules)?.content));
                }
                _ => {}
            }
        }
        Ok(match visibility.as_str() {
            "world_readable" | "shared" => true,
            "invited" => memberships.iter().any(|m| m == "join" || m == "invite"),
            _ => memberships.iter().any(|m| m == "join"),
        })
    }

    /// An event as served to `server`: its signed JSON without `unsigned`, redacted when the
    /// server may not see it or its sender was erased (as Synapse's `filter_events_for_server`).
    fn served_json(
        &self,
        db: &Db,
        server: &ServerName,
        pdu: Pdu,
        meta: &EventMeta,
        rules: &RoomVersionRules,
    ) -> Result<CanonicalJsonObject> {
        let mut json = pdu.json().into_owned();
        json.remove("unsigned");
        if self.server_can_see(db, server, meta)? && !self.erased_sender(db, &pdu.sender)? {
            return Ok(json);
        }
        ruma::canonical_json::redact(json, &rules.redaction, None)
            .map_err(|e| Error::internal(format!("cannot redact event: {e}")))
    }

    /// The state before an event (short ids of the state events), `404` when it is not known.
    pub(super) fn state_before(&self, db: &Db, meta: &EventMeta) -> Result<Vec<u64>> {
        let group = meta
            .state_before
            .filter(|_| !meta.is_outlier())
            .ok_or_else(|| Error::not_found("The state at that event is not known here"))?;
        Ok(self.state.load(db, group)?.values().copied().collect())
    }

    /// The union of the auth chains of `events` (sorted short ids).
    pub(super) fn chain_union(&self, db: &Db, events: &[u64]) -> Result<Vec<u64>> {
        let mut chain = BTreeSet::new();
        for short in events {
            chain.extend(self.auth_chains.chain(db, *short)?.iter().copied());
        }
        Ok(chain.into_iter().collect())
    }

    /// Stored events by short id as served JSON (those that may not be served are left out).
    fn served_many(
        &self,
        db: &Db,
        server: &ServerName,
        shorts: &[u64],
        rules: &RoomVersionRules,
    ) -> Result<Vec<Box<RawValue>>> {
        let mut out = Vec::with_capacity(shorts.len());
        for short in shorts {
            let Some(meta) = EVENT_META.get(db, short)? else { continue };
            if meta.rejected {
                continue;
            }
            let pdu = self.event_by_short(db, *short, rules)?;
            out.push(to_raw(&self.served_json(db, server, pdu, &meta, rules)?)?);
        }
        Ok(out)
    }

    /// Walks prev events from `start` (included when `include_start`), newest (deepest) first,
    /// skipping `stop` and events not stored, rejected or shallower than `min_depth`; at most
    /// `limit` events.
    #[allow(clippy::too_many_arguments)]
    fn walk_prev_events(
        &self,
        db: &Db,
        short_room: u64,
        rules: &RoomVersionRules,
        start: &[OwnedEventId],
        stop: &HashSet<OwnedEventId>,
        include_start: bool,
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<(u64, Pdu, EventMeta)>> {
        let mut seen: HashSet<OwnedEventId> = stop.clone();
        let mut queue: BinaryHeap<(u64, u64, bool)> = BinaryHeap::new();
        let push = |core: &RoomCore,
                    id: &EventId,
                    seen: &mut HashSet<OwnedEventId>,
                    queue: &mut BinaryHeap<(u64, u64, bool)>,
                    take: bool|
         -> Result<()> {
            if !seen.insert(id.to_owned()) {
                return Ok(());
            }
            if let Some((short, meta)) = core.servable(db, short_room, id)?
                && meta.depth >= min_depth
            {
                queue.push((meta.depth, short, take));
            }
            Ok(())
        };
        for id in start.iter().take(MAX_START_EVENTS) {
            push(self, id, &mut seen, &mut queue, include_start)?;
        }
        let mut found = Vec::new();
        // The walk reads at most this many events, however many it may return.
        let mut budget = limit.saturating_mul(20).max(1_000);
        while let Some((_, short, take)) = queue.pop() {
            if found.len() >= limit || budget == 0 {
                break;
            }
            budget -= 1;
            let Some(meta) = EVENT_META.get(db, &short)? else { continue };
            let pdu = self.event_by_short(db, short, rules)?;
            for prev in &pdu.prev_events {
                push(self, prev, &mut seen, &mut queue, true)?;
            }
            if take {
                found.push((short, pdu, meta));
            }
        }
        Ok(found)
    }
}

impl Rooms {
    /// Whether the room's server ACL (`m.room.server_acl` in its current state) allows
    /// `server`: `true` without an ACL or for a room this server does not know. Every
    /// room-scoped federation request and every event from another server should be checked
    /// with it (`403 M_FORBIDDEN` when it says no).
    pub async fn server_allowed(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        let (room_id, server) = (room_id.to_owned(), server.to_owned());
        self.run(move |core, db| match core.interner.short_room(db, &room_id)? {
            Some(short_room) => core.acl_allows(db, short_room, &server),
            None => Ok(true),
        })
        .await
    }

    /// [`server_allowed`](Self::server_allowed) as the answer to a request: `403 M_FORBIDDEN`
    /// when the room's ACL denies `server`.
    pub async fn check_server_allowed(&self, room_id: &RoomId, server: &ServerName) -> crate::Result<()> {
        if self.server_allowed(room_id, server).await? {
            Ok(())
        } else {
            Err(crate::Error::forbidden(format!("The room's server ACL denies {server}")))
        }
    }

    /// The servers with a user joined to the room now (empty for an unknown room).
    pub async fn joined_servers(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| match core.interner.short_room(db, &room_id)? {
            Some(short_room) => core.joined_servers(db, short_room),
            None => Ok(Vec::new()),
        })
        .await
    }

    /// `GET /event/{eventId}` for `origin`: the event's JSON (redacted if the server may not
    /// see it). The server must be in the event's room and allowed by its ACL.
    pub async fn event_for_server(&self, origin: &ServerName, event_id: &EventId) -> Result<Box<RawValue>> {
        let (origin, event_id) = (origin.to_owned(), event_id.to_owned());
        self.run(move |core, db| {
            let unknown = || Error::not_found("Unknown event");
            let short = core.interner.short_event(db, &event_id)?.ok_or_else(unknown)?;
            let meta = EVENT_META.get(db, &short)?.ok_or_else(unknown)?;
            if meta.rejected {
                return Err(unknown());
            }
            let room_id = core.interner.room_id(db, meta.room)?;
            let (_, rules) = core.admit(db, &room_id, &origin)?;
            let pdu = core.event_by_short(db, short, &rules)?;
            to_raw(&core.served_json(db, &origin, pdu, &meta, &rules)?)
        })
        .await
    }

    /// `GET /state_ids/{roomId}?event_id=`: the IDs of the state before the event and of its
    /// auth chain.
    pub async fn state_ids_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let (origin, room_id, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.run(move |core, db| {
            let (short_room, _) = core.admit(db, &room_id, &origin)?;
            let (_, meta) =
                core.servable(db, short_room, &event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
            let state = core.state_before(db, &meta)?;
            let chain = core.chain_union(db, &state)?;
            let ids = |shorts: &[u64]| -> Result<Vec<OwnedEventId>> {
                shorts.iter().map(|short| core.interner.event_id(db, *short)).collect()
            };
            Ok((ids(&state)?, ids(&chain)?))
        })
        .await
    }

    /// `GET /state/{roomId}?event_id=`: the state before the event and its auth chain, as PDUs
    /// (`(pdus, auth_chain)`).
    pub async fn room_state_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<Box<RawValue>>, Vec<Box<RawValue>>)> {
        let (origin, room_id, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.run(move |core, db| {
            let (short_room, rules) = core.admit(db, &room_id, &origin)?;
            let (_, meta) =
                core.servable(db, short_room, &event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
            let state = core.state_before(db, &meta)?;
            let chain = core.chain_union(db, &state)?;
            Ok((core.served_many(db, &origin, &state, &rules)?, core.served_many(db, &origin, &chain, &rules)?))
        })
        .await
    }

    /// `GET /event_auth/{roomId}/{eventId}`: the event's auth chain as PDUs.
    pub async fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Box<RawValue>>> {
        let (origin, room_id, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.run(move |core, db| {
            let (short_room, rules) = core.admit(db, &room_id, &origin)?;
            let (short, _) =
                core.servable(db, short_room, &event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
            let chain = core.chain_union(db, &[short])?;
            core.served_many(db, &origin, &chain, &rules)
        })
        .await
    }

    /// `POST /get_missing_events/{roomId}`: the events before `latest` (walking prev events,
    /// `latest` themselves excluded) the server does not have, stopping at `earliest`, at most
    /// `limit` of them and none shallower than `min_depth`; oldest first.
    pub async fn missing_events_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: Vec<OwnedEventId>,
        latest: Vec<OwnedEventId>,
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Box<RawValue>>> {
        let (origin, room_id) = (origin.to_owned(), room_id.to_owned());
        let limit = limit.min(MAX_MISSING_EVENTS);
        self.run(move |core, db| {
            let (short_room, rules) = core.admit(db, &room_id, &origin)?;
            let stop: HashSet<OwnedEventId> = earliest.into_iter().collect();
            let mut found = core.walk_prev_events(db, short_room, &rules, &latest, &stop, false, limit, min_depth)?;
            found.sort_by_key(|(short, _, meta)| (meta.depth, *short));
            found
                .into_iter()
                .map(|(_, pdu, meta)| to_raw(&core.served_json(db, &origin, pdu, &meta, &rules)?))
                .collect()
        })
        .await
    }

    /// `GET /backfill/{roomId}?v=&limit=`: the `v` events and those before them (walking prev
    /// events), newest first, at most `limit` (and [`MAX_BACKFILL`]).
    pub async fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: Vec<OwnedEventId>,
        limit: usize,
    ) -> Result<Vec<Box<RawValue>>> {
        let (origin, room_id) = (origin.to_owned(), room_id.to_owned());
        let limit = limit.min(MAX_BACKFILL);
        self.run(move |core, db| {
            let (short_room, rules) = core.admit(db, &room_id, &origin)?;
            let found = core.walk_prev_events(db, short_room, &rules, &from, &HashSet::new(), true, limit, 0)?;
            found
                .into_iter()
                .map(|(_, pdu, meta)| to_raw(&core.served_json(db, &origin, pdu, &meta, &rules)?))
                .collect()
        })
        .await
    }
}
