//! The one acceptance path for events, local or remote: format and size, hashes and
//! signatures, authorisation against the event's own auth events and against the state before
//! it (resolved with state resolution v2 when it has several prev events), the soft-fail check
//! against the current state, and then one write batch that stores the event, its state, the
//! timeline entry, forward extremities and the room's new current state.

use std::{collections::HashSet, sync::Arc};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, RoomVersionId,
    api::error::ErrorKind,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    signatures::Verified,
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};

use super::{RoomCore, auth_chain::AuthChain, pdu::Pdu, state::ShortStateMap};
use crate::{
    Error, Result,
    storage::{
        Batch, Db,
        room_tables::{
            CURRENT_STATE, EVENT_META, EVENT_STREAM, EVENT_TRANSACTIONS, EventMeta, FORWARD_EXTREMITIES, PDUS, ROOMS,
            RoomRecord, TIMELINE, TRANSACTIONS, USER_ROOMS, UserMembership,
        },
    },
};

/// The spec's limit on a whole PDU, signatures included.
const MAX_PDU_BYTES: usize = 65_536;

/// What accepting an event did.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event_id: OwnedEventId,
    /// Stream position in the timeline; `None` when soft-failed.
    pub position: Option<u64>,
    pub soft_failed: bool,
}

fn rejected(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
}

/// The event being accepted, whose ids and auth chain are still in the uncommitted batch:
/// state resolution at persist time must see it too.
pub(super) struct Pending<'a> {
    short_event: u64,
    pdu: &'a Pdu,
    auth_chain: AuthChain,
    direct_auth: &'a [u64],
    /// The event's short state key and its names, for state events.
    state_key: Option<(u64, (StateEventType, String))>,
}

/// The `membership` of a member event's content (`leave` if unreadable).
pub(super) fn membership_in(content: &serde_json::value::RawValue) -> String {
    #[derive(serde::Deserialize)]
    struct Membership {
        membership: String,
    }
    serde_json::from_str::<Membership>(content.get()).map(|m| m.membership).unwrap_or_else(|_| "leave".to_owned())
}

fn forbidden(message: impl std::fmt::Display) -> Error {
    Error::forbidden(format!("Event not authorised: {message}"))
}

/// The client transaction that produced a local event, recorded in the event's own batch so a
/// sync that sees the event also sees its transaction ID.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub device: String,
    /// The key of the idempotency record (the transaction ID, prefixed per endpoint).
    pub key: String,
    /// The transaction ID as the client gave it (for `unsigned.transaction_id`).
    pub client_txn: String,
}

impl RoomCore {
    /// Accepts one event into its room. The caller holds the room's lock.
    pub(super) fn accept(
        &self,
        db: &Db,
        expected_room: Option<&ruma::RoomId>,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Accepted> {
        self.accept_with(db, expected_room, version, json, None)
    }

    /// [`accept`](Self::accept), recording the client transaction that produced the event.
    pub(super) fn accept_with(
        &self,
        db: &Db,
        expected_room: Option<&ruma::RoomId>,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
        transaction: Option<&Transaction>,
    ) -> Result<Accepted> {
        let rules = version.rules().ok_or_else(|| {
            Error::new(StatusCode::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion, "Unsupported room version")
        })?;
        // Format and size limits (whole event 65,536 bytes, field limits).
        let size = serde_json::to_vec(&json).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PDU_BYTES {
            return Err(Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                format!("Event is {size} bytes; the limit is {MAX_PDU_BYTES}"),
            ));
        }
        state_res::check_pdu_format(&json, &rules.event_format).map_err(rejected)?;
        let mut pdu = Pdu::from_json(json, &rules).map_err(rejected)?;
        if expected_room.is_some_and(|room| room != pdu.room_id) {
            return Err(rejected("The event belongs to another room"));
        }

        // Hashes and signatures. A wrong content hash means the content was tampered with: the
        // spec keeps the event, redacted.
        match ruma::signatures::verify_event(&self.keys.public_key_map(), &pdu.json, &rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => {
                let redacted = ruma::canonical_json::redact(pdu.json.clone(), &rules.redaction, None)
                    .map_err(|e| rejected(format!("cannot redact event: {e}")))?;
                pdu = Pdu::from_json(redacted, &rules).map_err(rejected)?;
            }
            Err(error) => return Err(forbidden(format!("signature check failed: {error}"))),
        }
        if let Some(short) = self.interner.short_event(db, &pdu.event_id)?
            && EVENT_META.contains(db, &short)?
        {
            return Err(rejected("Event already accepted"));
        }

        // Authorisation against the event's own auth events.
        let mut auth_events = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            let event =
                self.event_by_id(db, id, &rules)?.ok_or_else(|| forbidden(format!("unknown auth event {id}")))?;
            auth_events.push(event);
        }
        // From v12 the create event is not among the auth events: ruma asks for it by the ID
        // derived from the room ID, so fall back to the store.
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id: &EventId| {
            auth_events
                .iter()
                .find(|e| e.event_id == id)
                .cloned()
                .or_else(|| self.event_by_id(db, id, &rules).ok().flatten())
        })
        .map_err(forbidden)?;

        let is_create = pdu.kind == TimelineEventType::RoomCreate;
        let room_record = match self.interner.short_room(db, &pdu.room_id)? {
            Some(short) => ROOMS.get(db, &short)?,
            None => None,
        };
        if !is_create && room_record.is_none() {
            return Err(Error::not_found("Unknown room"));
        }

        // The state before the event: after its single prev event, or resolved across several.
        let (before_group, state_before) = if is_create {
            (None, Arc::new(ShortStateMap::new()))
        } else {
            let mut groups = Vec::new();
            for prev in &pdu.prev_events {
                let short = self
                    .interner
                    .short_event(db, prev)?
                    .ok_or_else(|| forbidden(format!("unknown prev event {prev}")))?;
                let meta =
                    EVENT_META.get(db, &short)?.ok_or_else(|| forbidden(format!("unknown prev event {prev}")))?;
                groups.push(meta.state_after);
            }
            groups.sort_unstable();
            groups.dedup();
            match groups.as_slice() {
                [] => return Err(rejected("event has no prev_events")),
                [group] => (Some(*group), self.state.load(db, *group)?),
                many => (None, Arc::new(self.resolve(db, &rules, many, None)?)),
            }
        };
        self.check_against(db, &rules, &pdu, &state_before).map_err(forbidden)?;

        // Soft fail: passes against the state before it, but not against the current state.
        let soft_failed = match &room_record {
            Some(record) if before_group != Some(record.current_state_group) => {
                let current = self.state.load(db, record.current_state_group)?;
                self.check_against(db, &rules, &pdu, &current).is_err()
            }
            _ => false,
        };
        self.persist(db, &rules, version, pdu, before_group, state_before, room_record, soft_failed, transaction)
    }

    /// The state-dependent auth rules against a state map.
    fn check_against(&self, db: &Db, rules: &RoomVersionRules, pdu: &Pdu, state: &ShortStateMap) -> Result<(), String> {
        let fetch = |kind: &StateEventType, state_key: &str| -> Option<Pdu> {
            let short_key = self.interner.short_state_key(db, &kind.to_string(), state_key).ok()??;
            let short_event = *state.get(&short_key)?;
            self.event_by_short(db, short_event, rules).ok()
        };
        state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch)
    }

    /// Stores an accepted event and everything it changes, in one batch.
    #[allow(clippy::too_many_arguments)]
    fn persist(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        version: &RoomVersionId,
        pdu: Pdu,
        before_group: Option<u64>,
        state_before: Arc<ShortStateMap>,
        room_record: Option<RoomRecord>,
        soft_failed: bool,
        transaction: Option<&Transaction>,
    ) -> Result<Accepted> {
        let mut batch = Batch::new();
        if let Some(txn) = transaction {
            let key = (pdu.sender.clone(), txn.device.clone(), txn.key.clone());
            batch.put(&TRANSACTIONS, &key, &pdu.event_id.to_string())?;
            batch.put(&EVENT_TRANSACTIONS, &pdu.event_id.to_string(), &(txn.device.clone(), txn.client_txn.clone()))?;
        }
        let short_room = self.interner.short_room_or_new(db, &mut batch, &pdu.room_id)?;
        let short_event = self.interner.short_event_or_new(db, &mut batch, &pdu.event_id)?;

        // The state before the event is kept as a group too (history visibility is judged by
        // it); it is new only when it came from resolving several prev events, or is empty.
        let before_group = match before_group {
            Some(group) => group,
            None => self.state.store(db, &mut batch, None, state_before.clone())?,
        };
        let mut pending_key = None;
        let (state_after, after_group) = match &pdu.state_key {
            Some(state_key) => {
                let key = self.interner.short_state_key_or_new(db, &mut batch, &pdu.kind.to_string(), state_key)?;
                pending_key = Some((key, (StateEventType::from(pdu.kind.to_string()), state_key.clone())));
                let mut map = (*state_before).clone();
                map.insert(key, short_event);
                let map = Arc::new(map);
                let group = self.state.store(db, &mut batch, Some(before_group), map.clone())?;
                (map, group)
            }
            None => (state_before, before_group),
        };

        let mut direct_auth = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            direct_auth.extend(self.interner.short_event(db, id)?);
        }
        let auth_chain = self.auth_chains.record(db, &mut batch, short_event, &direct_auth)?;
        let pending = Pending { short_event, pdu: &pdu, auth_chain, direct_auth: &direct_auth, state_key: pending_key };

        // Held until the batch is written: readers never look past an uncommitted position.
        let reserved = (!soft_failed).then(|| self.positions.reserve());
        let position = reserved.as_ref().map(|r| r.position);
        let json = serde_json::value::to_raw_value(&pdu.json).map_err(|e| Error::internal(e.to_string()))?;
        batch.put(&PDUS, &short_event, &json)?;
        batch.put(
            &EVENT_META,
            &short_event,
            &EventMeta {
                room: short_room,
                position,
                state_after: after_group,
                state_before: Some(before_group),
                state_key: pending.state_key.as_ref().map(|(key, _)| *key),
                depth: pdu.depth,
                soft_failed,
            },
        )?;

        if pdu.kind == TimelineEventType::RoomRedaction && !soft_failed {
            self.record_redaction(db, &mut batch, &pdu, short_event)?;
        }
        let mut push_queued = false;
        if let Some(position) = position {
            batch.put(&TIMELINE, &(short_room, position), &short_event)?;
            let ts = pdu.origin_server_ts.get().into();
            super::context::index_timestamp(&mut batch, short_room, ts, position, short_event)?;
            batch.put(&EVENT_STREAM, &position, &(short_room, short_event))?;
            // Forward extremities: this event replaces its prev events.
            let mut extremities: Vec<u64> =
                FORWARD_EXTREMITIES.scan_prefix(db, &(short_room,))?.into_iter().map(|((_, e), ())| e).collect();
            for prev in &pdu.prev_events {
                if let Some(short) = self.interner.short_event(db, prev)? {
                    batch.delete(&FORWARD_EXTREMITIES, &(short_room, short));
                    extremities.retain(|e| *e != short);
                }
            }
            batch.put(&FORWARD_EXTREMITIES, &(short_room, short_event), &())?;
            extremities.push(short_event);

            // The room's new current state: the state after this event when it is the only
            // extremity, otherwise the resolution of every extremity's state.
            let (current, current_group) = if extremities.len() == 1 {
                (state_after, after_group)
            } else {
                let mut groups = Vec::new();
                for extremity in &extremities {
                    let group = if *extremity == short_event {
                        after_group
                    } else {
                        EVENT_META
                            .get(db, extremity)?
                            .map(|m| m.state_after)
                            .ok_or_else(|| Error::internal("extremity without meta"))?
                    };
                    groups.push(group);
                }
                groups.sort_unstable();
                groups.dedup();
                if groups.len() == 1 {
                    (self.state.load(db, groups[0])?, groups[0])
                } else {
                    let resolved = Arc::new(self.resolve(db, rules, &groups, Some(&pending))?);
                    let group = self.state.store(db, &mut batch, Some(after_group), resolved.clone())?;
                    (resolved, group)
                }
            };
            let previous = match &room_record {
                Some(record) => self.state.load(db, record.current_state_group)?,
                None => Arc::new(ShortStateMap::new()),
            };
            self.write_current_state(db, &mut batch, short_room, (short_event, &pdu), &previous, &current, position)?;
            // Push rules are evaluated here, in the event's own batch (see push::evaluate).
            let new_key = pending.state_key.as_ref();
            push_queued = self.record_push(
                db,
                &mut batch,
                rules,
                (short_event, &pdu),
                new_key,
                (&current, current_group),
                (short_room, position),
            )?;
            batch.put(
                &ROOMS,
                &short_room,
                &RoomRecord { version: version.clone(), current_state_group: current_group },
            )?;
        }
        db.write(batch)?;
        drop(reserved);
        if push_queued {
            self.push_wake.notify_one();
        }
        Ok(Accepted { event_id: pdu.event_id, position, soft_failed })
    }

    /// Writes the difference between two current states, and local users' memberships.
    #[allow(clippy::too_many_arguments)]
    fn write_current_state(
        &self,
        db: &Db,
        batch: &mut Batch,
        short_room: u64,
        new_event: (u64, &Pdu),
        previous: &ShortStateMap,
        current: &ShortStateMap,
        position: u64,
    ) -> Result<()> {
        let room_id = &new_event.1.room_id;
        for key in previous.keys().filter(|k| !current.contains_key(k)) {
            batch.delete(&CURRENT_STATE, &(short_room, *key));
            // State resolution can drop a member event: the user then has no membership.
            let names = self.interner.state_key(db, *key)?;
            if names.0 == StateEventType::RoomMember
                && let Ok(user_id) = ruma::UserId::parse(names.1.as_str())
                && user_id.server_name() == self.server_name
            {
                batch.delete(&USER_ROOMS, &(user_id, room_id.clone()));
            }
        }
        for (key, event) in current.iter().filter(|(k, v)| previous.get(k) != Some(v)) {
            batch.put(&CURRENT_STATE, &(short_room, *key), event)?;
            // The new event's own state key may be new in this batch: read it from the event.
            let (kind, state_key) = if *event == new_event.0 {
                (new_event.1.kind.to_string(), new_event.1.state_key.clone().unwrap_or_default())
            } else {
                let names = self.interner.state_key(db, *key)?;
                (names.0.to_string(), names.1.clone())
            };
            if kind != "m.room.member" {
                continue;
            }
            let Ok(user_id) = ruma::UserId::parse(state_key.as_str()) else { continue };
            if user_id.server_name() != self.server_name {
                continue;
            }
            let (event_id, membership) = if *event == new_event.0 {
                (new_event.1.event_id.clone(), membership_in(&new_event.1.content))
            } else {
                let pdu = self.event_by_short(db, *event, &self.rules_of_room(db, short_room)?)?;
                (pdu.event_id.clone(), membership_in(&pdu.content))
            };
            batch.put(
                &USER_ROOMS,
                &(user_id, room_id.clone()),
                &UserMembership { membership, event_id: event_id.to_string(), position, forgotten: false },
            )?;
        }
        Ok(())
    }

    /// State resolution over the states of several groups, with the room version's algorithm.
    pub(super) fn resolve(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        groups: &[u64],
        pending: Option<&Pending<'_>>,
    ) -> Result<ShortStateMap> {
        let state_res_rules = match &rules.state_res {
            StateResolutionVersion::V2(rules) => *rules,
            // Ruma implements only state resolution v2. Room version 1 specifies v1; resolving
            // its rare forks with v2 gives a valid state, which may differ from other servers'.
            _ => ruma::room_version_rules::StateResolutionV2Rules::V2_0,
        };
        let mut maps: Vec<StateMap<OwnedEventId>> = Vec::new();
        let mut chains: Vec<EventIdSet<OwnedEventId>> = Vec::new();
        for group in groups {
            let short_map = self.state.load(db, *group)?;
            let mut map = StateMap::new();
            let mut chain = EventIdSet::new();
            for (key, event) in short_map.iter() {
                let names = self.key_names(db, *key, pending)?;
                map.insert(names, self.event_id_of_short(db, *event, pending)?);
                for short in self.auth_chain_of(db, *event, pending)?.iter() {
                    chain.insert(self.event_id_of_short(db, *short, pending)?);
                }
            }
            maps.push(map);
            chains.push(chain);
        }
        let fetch = |id: &EventId| match pending {
            Some(p) if p.pdu.event_id == id => Some(p.pdu.clone()),
            _ => self.event_by_id(db, id, rules).ok().flatten(),
        };
        let subgraph = |conflicted: &StateMap<Vec<OwnedEventId>>| self.conflicted_subgraph(db, conflicted, pending);
        let resolved = state_res::resolve(&rules.authorization, &state_res_rules, &maps, chains, fetch, subgraph)
            .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
        let mut out = ShortStateMap::new();
        for ((kind, state_key), event_id) in resolved {
            let key = match pending.and_then(|p| p.state_key.as_ref()) {
                Some((short, (k, s))) if *k == kind && *s == state_key => Some(*short),
                _ => self.interner.short_state_key(db, &kind.to_string(), &state_key)?,
            };
            let event = match pending {
                Some(p) if p.pdu.event_id == event_id => Some(p.short_event),
                _ => self.interner.short_event(db, &event_id)?,
            };
            if let (Some(key), Some(event)) = (key, event) {
                out.insert(key, event);
            }
        }
        Ok(out)
    }

    fn key_names(&self, db: &Db, key: u64, pending: Option<&Pending<'_>>) -> Result<(StateEventType, String)> {
        match pending.and_then(|p| p.state_key.as_ref()) {
            Some((short, names)) if *short == key => Ok(names.clone()),
            _ => {
                let names = self.interner.state_key(db, key)?;
                Ok((names.0.clone(), names.1.clone()))
            }
        }
    }

    fn event_id_of_short(&self, db: &Db, short: u64, pending: Option<&Pending<'_>>) -> Result<OwnedEventId> {
        match pending {
            Some(p) if p.short_event == short => Ok(p.pdu.event_id.clone()),
            _ => self.interner.event_id(db, short),
        }
    }

    fn short_of_event(&self, db: &Db, id: &EventId, pending: Option<&Pending<'_>>) -> Result<Option<u64>> {
        match pending {
            Some(p) if p.pdu.event_id == id => Ok(Some(p.short_event)),
            _ => self.interner.short_event(db, id),
        }
    }

    fn auth_chain_of(&self, db: &Db, short: u64, pending: Option<&Pending<'_>>) -> Result<AuthChain> {
        match pending {
            Some(p) if p.short_event == short => Ok(p.auth_chain.clone()),
            _ => self.auth_chains.chain(db, short),
        }
    }

    /// The conflicted state subgraph (room version 12): the conflicted events and every event on
    /// an auth-event path between two of them. Ruma asks the caller for it and keeps its own
    /// implementation in its tests; ours walks the auth edges once (see `auth_chain.rs`).
    fn conflicted_subgraph(
        &self,
        db: &Db,
        conflicted: &StateMap<Vec<OwnedEventId>>,
        pending: Option<&Pending<'_>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let conflicted_shorts: HashSet<u64> = conflicted
            .values()
            .flatten()
            .filter_map(|id| self.short_of_event(db, id, pending).ok().flatten())
            .collect();
        let pending_edges = pending.map(|p| (p.short_event, p.direct_auth));
        let mut subgraph = EventIdSet::new();
        for short in self.auth_chains.conflicted_subgraph(db, &conflicted_shorts, pending_edges).ok()? {
            subgraph.insert(self.event_id_of_short(db, short, pending).ok()?);
        }
        Some(subgraph)
    }
}
