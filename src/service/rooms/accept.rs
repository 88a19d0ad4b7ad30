//! The one acceptance path for events, local or remote, second half (the first is
//! `prepare.rs`: format, size, hashes, signatures, outside the room's lock). Under the lock:
//! authorisation against the event's own auth events and against the state before it
//! (resolved with state resolution when it has several prev events), the soft-fail check
//! against the current state, and then one write batch that stores the event, its state, the
//! timeline entry, its search index rows, forward extremities and the room's new current state.
//! The result is an [`Outcome`]; events from other servers that the auth rules refuse are
//! stored as rejected. State resolution itself is in `resolve.rs`.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomVersionId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};

use super::{
    RoomCore,
    auth_chain::AuthChain,
    notify::CurrentStateChange,
    pdu::Pdu,
    prepare::{Origin, Prepared, bad_event},
    relations,
    state::ShortStateMap,
};
use crate::{
    Error, Result,
    service::push::evaluate::write_notifications,
    storage::{
        Batch, Db,
        group_commit::Ticket,
        room_tables::{
            EVENT_META, EVENT_STREAM, EVENT_TRANSACTIONS, EventMeta, PDUS, ROOMS, RoomRecord, TIMELINE, TIMELINE_GAPS,
            TRANSACTIONS,
        },
    },
};

/// What accepting an event did.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event_id: OwnedEventId,
    /// Stream position in the timeline; `None` when soft-failed.
    pub position: Option<u64>,
    pub soft_failed: bool,
    /// The sync that makes the event durable, when its write was deferred (see
    /// `group_commit.rs`): the client is answered only after [`Db::durable`] of it.
    pub durable: Ticket,
}

/// The event being accepted, whose ids and auth chain are still in the uncommitted batch:
/// state resolution at persist time must see it too.
pub(super) struct Pending<'a> {
    pub(super) short_event: u64,
    pub(super) pdu: &'a Pdu,
    pub(super) auth_chain: AuthChain,
    pub(super) direct_auth: &'a [u64],
    /// The event's short state key and its names, for state events.
    pub(super) state_key: Option<(u64, (StateEventType, String))>,
}

/// The keys whose events differ between two states: set to the event in `current`, or removed.
fn state_diff(previous: &ShortStateMap, current: &ShortStateMap) -> Vec<(u64, Option<u64>)> {
    let removed = previous.keys().filter(|k| !current.contains_key(k)).map(|k| (*k, None));
    let set = current.iter().filter(|(k, v)| previous.get(k) != Some(v)).map(|(k, v)| (*k, Some(*v)));
    removed.chain(set).collect()
}

/// Records in a state event's `unsigned` the event it replaces: `prev_content`, `prev_sender`
/// and `replaces_state`.
fn note_replaced_state(json: &mut CanonicalJsonObject, replaced: &Pdu) -> Result<()> {
    let content = serde_json::from_str::<ruma::CanonicalJsonValue>(replaced.content.get())
        .map_err(|e| Error::internal(format!("stored content is not canonical JSON: {e}")))?;
    let unsigned = json.entry("unsigned".to_owned()).or_insert_with(|| CanonicalJsonValue::Object(Default::default()));
    if let CanonicalJsonValue::Object(unsigned) = unsigned {
        unsigned.insert("prev_content".into(), content);
        unsigned.insert("prev_sender".into(), CanonicalJsonValue::String(replaced.sender.to_string()));
        unsigned.insert("replaces_state".into(), CanonicalJsonValue::String(replaced.event_id.to_string()));
    }
    Ok(())
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
    /// The key of the idempotency record: the transaction ID, prefixed per endpoint and room
    /// (see [`Transaction::key_for`]).
    pub key: String,
    /// The transaction ID as the client gave it (for `unsigned.transaction_id`).
    pub client_txn: String,
}

impl Transaction {
    /// The idempotency key of a transaction ID used on `endpoint` in `room`. Synapse scopes a
    /// transaction to its request path, so the same ID in another room is another event
    /// (Complement's `TestTxnIdempotency` expects that).
    pub fn key_for(endpoint: &str, room: &ruma::RoomId, txn_id: &str) -> String {
        format!("{endpoint}\u{0}{room}\u{0}{txn_id}")
    }
}

/// What committing an event did: the domain outcome that the API layer turns into its answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// In the timeline; `Accepted::soft_failed` is set when it passed the auth rules against
    /// the state before it but not against the room's current state: then it is stored and
    /// kept out of the timeline, as the spec says.
    Accepted(Accepted),
    /// Refused by the auth rules (against its auth events or the state before it). From another
    /// server it is stored as rejected: never served, never used to authorise another event.
    Rejected { event_id: OwnedEventId, reason: String },
    /// It refers to events this server doesn't have (auth or prev events, or the state at a
    /// prev event); nothing was stored. Federation fetches them and tries again.
    MissingEvents { event_id: OwnedEventId, missing: Vec<OwnedEventId> },
    /// Already stored; nothing changed.
    AlreadyKnown { event_id: OwnedEventId },
}

impl Outcome {
    /// The outcome for an event this server built itself: anything but acceptance is an error
    /// of the request that asked for it (a local event is never stored as rejected).
    pub fn into_local_result(self) -> Result<Accepted> {
        match self {
            Outcome::Accepted(accepted) => Ok(accepted),
            // MSC3757: a key that names no owner is a bad request, as Synapse answers it.
            Outcome::Rejected { reason, .. } if reason.starts_with(super::owned_state::MALFORMED_KEY) => {
                Err(Error::bad_json(reason))
            }
            Outcome::Rejected { reason, .. } => Err(forbidden(reason)),
            Outcome::MissingEvents { missing, .. } => {
                let list = missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                Err(forbidden(format!("unknown events {list}")))
            }
            Outcome::AlreadyKnown { .. } => Err(bad_event("Event already accepted")),
        }
    }
}

/// Whether an accepted event's write may be deferred to a shared sync (see `group_commit.rs`):
/// only a client's send (its request waits for the sync before it is answered, which only sends
/// with a transaction ID do), and only an event whose rows are read by nothing that could hand
/// it out before its stream position is released. A state event changes the room's current
/// state (read by `/state`, `/members`, joins and the room lists without a stream bound), a
/// redaction changes how its target is served, and a relation is counted in its parent's
/// bundled aggregations and `/relations`: those keep a synced write under the room's lock.
fn deferrable(transaction: Option<&Transaction>, pdu: &Pdu) -> bool {
    transaction.is_some()
        && pdu.state_key.is_none()
        && pdu.kind != TimelineEventType::RoomRedaction
        && super::relations::relation_of(&pdu.content_value()).is_none()
}

/// Why an event can't be authorised yet, or at all.
enum AuthProblem {
    Missing(Vec<OwnedEventId>),
    Refused(String),
}

impl RoomCore {
    /// Accepts one event this server built into its room. The caller holds the room's lock.
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
        let prepared = self.prepare(expected_room, version, json, None)?;
        self.commit(db, prepared, Origin::Local, transaction, None)?.into_local_result()
    }

    /// The second half of accepting an event, under the room's lock: authorisation against its
    /// auth events and against the state before it (resolved with the room version's state
    /// resolution when it has several prev events), the soft-fail check against the current
    /// state, and one write batch.
    ///
    /// `state_at_gap` is the state before the event as another server gave it (IDs of stored
    /// events, from `send_join` or `/state_ids`), for an event whose prev events are not all
    /// here: an event after a gap in the graph, or the join that brings this server into a room
    /// it didn't know (then the room is created from it).
    pub(super) fn commit(
        &self,
        db: &Db,
        prepared: Prepared,
        origin: Origin,
        transaction: Option<&Transaction>,
        state_at_gap: Option<Vec<OwnedEventId>>,
    ) -> Result<Outcome> {
        let Prepared { pdu, rules, version } = prepared;
        let event_id = pdu.event_id.clone();
        if self.placed_already(db, &pdu)? {
            return Ok(Outcome::AlreadyKnown { event_id });
        }
        let is_create = pdu.kind == TimelineEventType::RoomCreate;
        let room_record = match self.interner.short_room(db, &pdu.room_id)? {
            Some(short) => ROOMS.get(db, &short)?,
            None => None,
        };
        if !is_create && room_record.is_none() && state_at_gap.is_none() {
            return Err(Error::not_found("Unknown room"));
        }

        if origin == Origin::Local {
            self.check_new_relation(db, &pdu, &rules)?;
        }
        // Authorisation against the event's own auth events.
        if let Some(outcome) = self.auth_events_outcome(db, &rules, &pdu, origin)? {
            return Ok(outcome);
        }
        let refused = |reason: String, before_group: Option<u64>| -> Result<Outcome> {
            if origin == Origin::Remote {
                self.store_rejected(db, &pdu, before_group)?;
            }
            Ok(Outcome::Rejected { event_id: pdu.event_id.clone(), reason })
        };

        // The state before the event: after its single prev event, or resolved across several.
        let mut after_gap = false;
        let (before_group, state_before) = if is_create {
            (None, Arc::new(ShortStateMap::new()))
        } else {
            match (self.prev_state_groups(db, &pdu)?, state_at_gap) {
                (Ok(groups), _) => match groups.as_slice() {
                    [] => return Err(bad_event("event has no prev_events")),
                    [group] => (Some(*group), self.state.load(db, *group)?),
                    many => (None, Arc::new(self.resolve(db, &rules, many, None)?)),
                },
                (Err(_), Some(ids)) => match self.state_from_ids(db, &rules, ids)? {
                    Ok(state) => {
                        after_gap = true;
                        (None, Arc::new(state))
                    }
                    Err(missing) => return Ok(Outcome::MissingEvents { event_id, missing }),
                },
                (Err(missing), None) => return Ok(Outcome::MissingEvents { event_id, missing }),
            }
        };
        if let Err(reason) = self.check_against(db, &rules, &pdu, &state_before) {
            return refused(reason, before_group);
        }

        // Soft fail: passes against the state before it, but not against the current state.
        let soft_failed = match &room_record {
            Some(record) if before_group != Some(record.current_state_group) => {
                let current = self.state.load(db, record.current_state_group)?;
                self.check_against(db, &rules, &pdu, &current).is_err()
            }
            _ => false,
        };
        let accepted = self.persist(
            db,
            &rules,
            &version,
            pdu,
            (before_group, state_before, after_gap),
            room_record,
            soft_failed,
            transaction,
        )?;
        crate::service::metrics::global().event_persisted(if origin == Origin::Local { "local" } else { "remote" });
        Ok(Outcome::Accepted(accepted))
    }

    /// Whether the event is stored with its place in the graph already. An outlier stored
    /// earlier (an auth event fetched on its own) that now arrives with its place in the graph
    /// is accepted like any new event.
    pub(super) fn placed_already(&self, db: &Db, pdu: &Pdu) -> Result<bool> {
        Ok(match self.interner.short_event(db, &pdu.event_id)? {
            Some(short) => EVENT_META.get(db, &short)?.is_some_and(|meta| !meta.is_outlier()),
            None => false,
        })
    }

    /// The outcome when the event's auth events don't authorise it (`None` when they do):
    /// missing events, or a refusal, stored as rejected for an event from another server.
    pub(super) fn auth_events_outcome(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        origin: Origin,
    ) -> Result<Option<Outcome>> {
        let event_id = pdu.event_id.clone();
        Ok(match self.check_auth_events(db, rules, pdu)? {
            Ok(()) => None,
            Err(AuthProblem::Missing(missing)) => Some(Outcome::MissingEvents { event_id, missing }),
            Err(AuthProblem::Refused(reason)) => {
                if origin == Origin::Remote {
                    // The state at a rejected event is the state before it, when it is known
                    // without resolving (one prev event with state): later events may name it
                    // as a prev event (Complement's TestInboundFederationRejectsEvents-
                    // WithRejectedAuthEvents sends one).
                    let before = match self.prev_state_groups(db, pdu)? {
                        Ok(groups) if groups.len() == 1 => groups.first().copied(),
                        _ => None,
                    };
                    self.store_rejected(db, pdu, before)?;
                }
                Some(Outcome::Rejected { event_id, reason })
            }
        })
    }

    /// The auth rules against the event's own auth events: they must all be known and not
    /// rejected, and must authorise it.
    /// Storage failures are errors (`Err`), never taken for a refusal.
    fn check_auth_events(&self, db: &Db, rules: &RoomVersionRules, pdu: &Pdu) -> Result<Result<(), AuthProblem>> {
        let mut auth_events = Vec::with_capacity(pdu.auth_events.len());
        let mut missing = Vec::new();
        for id in &pdu.auth_events {
            let short = self.interner.short_event(db, id)?;
            // Through the event cache: the same few auth events (create, power levels, the
            // sender's membership) are asked for by every event of a room.
            let meta = match short {
                Some(short) => self.event_meta_read(db, short)?,
                None => None,
            };
            match (short, meta) {
                (Some(_), Some((meta, _))) if meta.rejected => {
                    return Ok(Err(AuthProblem::Refused(format!("auth event {id} was rejected"))));
                }
                (Some(short), Some((meta, ticket))) => {
                    auth_events.push(self.shared_event_by_short(db, short, rules)?);
                    self.keep_event_meta(short, &meta, ticket);
                }
                _ => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(AuthProblem::Missing(missing)));
        }
        // From v12 the create event is not among the auth events: ruma asks for it by the ID
        // derived from the room ID, so fall back to the store.
        if let Err(reason) = state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id: &EventId| {
            auth_events
                .iter()
                .find(|e| e.event_id == id)
                .cloned()
                .or_else(|| self.shared_event_by_id(db, id, rules).ok().flatten())
        }) {
            return Ok(Err(AuthProblem::Refused(reason)));
        }
        // The state-dependent rules with the auth events as the state (from v12 plus the create
        // event, which the room ID names).
        if rules.authorization.room_create_event_id_as_room_id
            && !auth_events.iter().any(|e| e.kind == TimelineEventType::RoomCreate)
            && let Ok(create_id) = OwnedEventId::try_from(format!("${}", &pdu.room_id.as_str()[1..]))
            && let Some(create) = self.shared_event_by_id(db, &create_id, rules)?
        {
            auth_events.push(create);
        }
        Ok(super::owned_state::check_state_dependent(rules, pdu, |kind: &StateEventType, key: &str| {
            auth_events
                .iter()
                .find(|e| e.kind.to_string() == kind.to_string() && e.state_key.as_deref() == Some(key))
                .cloned()
        })
        .map_err(AuthProblem::Refused))
    }

    /// Stores an event as an outlier: known and usable as an auth event, but without state
    /// and outside the timeline (an auth or state event fetched from another server, whose own
    /// history is not here). It must pass the auth rules against its own auth events, which
    /// must be stored already.
    pub(super) fn store_outlier(&self, db: &Db, prepared: Prepared) -> Result<Outcome> {
        let Prepared { pdu, rules, .. } = prepared;
        let event_id = pdu.event_id.clone();
        if let Some(short) = self.interner.short_event(db, &pdu.event_id)?
            && EVENT_META.contains(db, &short)?
        {
            return Ok(Outcome::AlreadyKnown { event_id });
        }
        if let Some(outcome) = self.auth_events_outcome(db, &rules, &pdu, Origin::Remote)? {
            return Ok(outcome);
        }
        let mut batch = Batch::new();
        let (short_event, _) = self.store_off_timeline(db, &mut batch, &pdu, None)?;
        db.write(batch)?;
        self.forget_stored(short_event);
        Ok(Outcome::Accepted(Accepted { event_id, position: None, soft_failed: false, durable: Ticket::default() }))
    }

    /// The state groups after each prev event of `pdu` (sorted, without repeats), or the prev
    /// events whose state this server doesn't have.
    pub(super) fn prev_state_groups(&self, db: &Db, pdu: &Pdu) -> Result<Result<Vec<u64>, Vec<OwnedEventId>>> {
        let mut groups = Vec::new();
        let mut missing = Vec::new();
        for prev in &pdu.prev_events {
            let meta = match self.interner.short_event(db, prev)? {
                Some(short) => EVENT_META.get(db, &short)?,
                None => None,
            };
            match meta.and_then(|meta| meta.state_after_known()) {
                Some(group) => groups.push(group),
                None => missing.push(prev.clone()),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(Ok(groups))
    }

    /// A state map from the IDs of its events (as another server lists them), or the IDs of
    /// those not stored here. Non-state events in the list are ignored.
    pub(super) fn state_from_ids(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        ids: Vec<OwnedEventId>,
    ) -> Result<Result<ShortStateMap, Vec<OwnedEventId>>> {
        let mut state = ShortStateMap::new();
        let mut unknown = Vec::new();
        for id in ids {
            let stored = match self.interner.short_event(db, &id)? {
                Some(short) => EVENT_META.get(db, &short)?.map(|meta| (short, meta)),
                None => None,
            };
            let Some((short, meta)) = stored else {
                unknown.push(id);
                continue;
            };
            if meta.rejected {
                continue;
            }
            let event = self.event_by_short(db, short, rules)?;
            let Some(state_key) = &event.state_key else { continue };
            state.insert(self.interner.short_state_key_or_new(db, &event.kind.to_string(), state_key)?, short);
        }
        Ok(if unknown.is_empty() { Ok(state) } else { Err(unknown) })
    }

    /// Adds an event that takes no place in the live timeline to `batch`: its ids, auth edges,
    /// PDU and metadata. `state` is the (before, after) state groups when known; without them it
    /// is an outlier. Returns its short id and metadata.
    pub(super) fn store_off_timeline(
        &self,
        db: &Db,
        batch: &mut Batch,
        pdu: &Pdu,
        state: Option<(u64, u64)>,
    ) -> Result<(u64, EventMeta)> {
        let short_room = self.interner.short_room_or_new(db, batch, &pdu.room_id)?;
        let short_event = self.interner.short_event_or_new(db, batch, &pdu.event_id)?;
        let state_key = match &pdu.state_key {
            Some(state_key) => Some(self.interner.short_state_key_or_new(db, &pdu.kind.to_string(), state_key)?),
            None => None,
        };
        let mut direct_auth = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            direct_auth.extend(self.interner.short_event(db, id)?);
        }
        self.auth_chains.record(db, batch, short_event, &direct_auth)?;
        let json = pdu.raw_json().map_err(Error::internal)?;
        batch.put(&PDUS, &short_event, &json)?;
        let meta = EventMeta {
            room: short_room,
            position: None,
            state_after: state.map_or(0, |(_, after)| after),
            state_before: state.map(|(before, _)| before),
            state_key,
            depth: pdu.depth,
            soft_failed: false,
            rejected: false,
        };
        batch.put(&EVENT_META, &short_event, &meta)?;
        Ok((short_event, meta))
    }

    /// Stores an event from another server that the auth rules refused: never served, never
    /// used to authorise another event; the state at it is the state before it (when known).
    pub(super) fn store_rejected(&self, db: &Db, pdu: &Pdu, before_group: Option<u64>) -> Result<()> {
        let mut batch = Batch::new();
        let short_room = self.interner.short_room_or_new(db, &mut batch, &pdu.room_id)?;
        let short_event = self.interner.short_event_or_new(db, &mut batch, &pdu.event_id)?;
        let json = pdu.raw_json().map_err(Error::internal)?;
        batch.put(&PDUS, &short_event, &json)?;
        let meta = EventMeta {
            room: short_room,
            position: None,
            state_after: before_group.unwrap_or(0),
            state_before: before_group,
            state_key: None,
            depth: pdu.depth,
            soft_failed: false,
            rejected: true,
        };
        batch.put(&EVENT_META, &short_event, &meta)?;
        db.write(batch)?;
        self.forget_stored(short_event);
        Ok(())
    }

    /// The state-dependent auth rules against a state map.
    pub(super) fn check_against(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state: &ShortStateMap,
    ) -> Result<(), String> {
        let fetch = |kind: &StateEventType, state_key: &str| -> Option<Arc<Pdu>> {
            let short_key = self.interner.short_state_key(db, &kind.to_string(), state_key).ok()??;
            let short_event = *state.get(&short_key)?;
            self.shared_event_by_short(db, short_event, rules).ok()
        };
        super::owned_state::check_state_dependent(rules, pdu, fetch)
    }

    /// Stores an accepted event and everything it changes, in one batch.
    #[allow(clippy::too_many_arguments)]
    fn persist(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        version: &RoomVersionId,
        mut pdu: Pdu,
        (before_group, state_before, after_gap): (Option<u64>, Arc<ShortStateMap>, bool),
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
        // What a state event replaces, for clients (`unsigned.prev_content`, `prev_sender` and
        // `replaces_state`, as Synapse gives them; Element shows membership and name changes by
        // them). Kept in the stored event's `unsigned`, which is never sent to other servers.
        if let Some(state_key) = &pdu.state_key
            && let Some(key) = self.interner.short_state_key(db, &pdu.kind.to_string(), state_key)?
            && let Some(replaced) = state_before.get(&key).copied()
        {
            let replaced = self.event_by_short(db, replaced, rules)?;
            note_replaced_state(pdu.json_mut(), &replaced)?;
        }
        let mut pending_key = None;
        let (state_after, after_group) = match &pdu.state_key {
            Some(state_key) => {
                let key = self.interner.short_state_key_or_new(db, &pdu.kind.to_string(), state_key)?;
                pending_key = Some((key, (StateEventType::from(pdu.kind.to_string()), state_key.clone())));
                let (group, map) =
                    self.state.store_change(db, &mut batch, before_group, &[(key, Some(short_event))])?;
                (map, group)
            }
            None => (state_before, before_group),
        };
        // What a redaction is judged by (see `relations.rs`).
        let redaction_state = relations::is_redaction(&pdu.kind).then(|| state_after.clone());

        let mut direct_auth = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            direct_auth.extend(self.interner.short_event(db, id)?);
        }
        let auth_chain = self.auth_chains.record(db, &mut batch, short_event, &direct_auth)?;
        let pending = Pending { short_event, pdu: &pdu, auth_chain, direct_auth: &direct_auth, state_key: pending_key };

        if pdu.kind == TimelineEventType::RoomRedaction && !soft_failed {
            self.record_redaction(db, &mut batch, &pdu, short_event)?;
        }
        let json = pdu.raw_json().map_err(Error::internal)?;
        batch.put(&PDUS, &short_event, &json)?;
        let mut meta = EventMeta {
            room: short_room,
            position: None,
            state_after: after_group,
            state_before: Some(before_group),
            state_key: pending.state_key.as_ref().map(|(key, _)| *key),
            depth: pdu.depth,
            soft_failed,
            rejected: false,
        };
        if soft_failed {
            batch.put(&EVENT_META, &short_event, &meta)?;
            db.write(batch)?;
            self.forget_stored(short_event);
            return Ok(Accepted { event_id: pdu.event_id, position: None, soft_failed, durable: Ticket::default() });
        }

        // Forward extremities: this event replaces its prev events.
        let mut extremities = room_record.as_ref().map(|r| r.extremities.clone()).unwrap_or_default();
        for prev in &pdu.prev_events {
            if let Some(short) = self.interner.short_event(db, prev)? {
                extremities.retain(|e| *e != short);
            }
        }
        extremities.push(short_event);

        // The room's new current state: the state after this event when it is the only
        // extremity, otherwise the resolution of every extremity's state. The change from the
        // previous current state is known without comparing whole states unless there was a fork.
        let previous_group = room_record.as_ref().map(|r| r.current_state_group);
        let previous = match previous_group {
            Some(group) => self.state.load(db, group)?,
            None => Arc::new(ShortStateMap::new()),
        };
        let own_change: Vec<(u64, Option<u64>)> =
            pending.state_key.as_ref().map(|(key, _)| (*key, Some(short_event))).into_iter().collect();
        let (current, current_group, changes) = if extremities.len() == 1 && previous_group == Some(before_group) {
            (state_after, after_group, own_change)
        } else {
            let (current, group) = if extremities.len() == 1 {
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
                if let [group] = groups.as_slice() {
                    (self.state.load(db, *group)?, *group)
                } else {
                    let resolved = Arc::new(self.resolve(db, rules, &groups, Some(&pending))?);
                    let group = self.state.store(db, &mut batch, Some(after_group), resolved.clone())?;
                    (resolved, group)
                }
            };
            (current.clone(), group, state_diff(&previous, &current))
        };
        // Push rules are evaluated here, for the event's own batch (see push::evaluate), and
        // before the stream position is taken, so a big room holds back no reader meanwhile.
        let change = previous_group.map(|previous_group| CurrentStateChange {
            previous_group,
            previous: &previous,
            changes: &changes,
        });
        let notifications = self.evaluate_push(
            db,
            rules,
            ((short_event, &pdu), pending.state_key.as_ref()),
            (&current, current_group),
            change,
            short_room,
        )?;

        // Held until the batch is written: readers never look past an uncommitted position.
        let mut reserved = self.positions.reserve();
        let position = reserved.position;
        meta.position = Some(position);
        batch.put(&EVENT_META, &short_event, &meta)?;
        batch.put(&TIMELINE, &(short_room, position), &short_event)?;
        if after_gap {
            batch.put(&TIMELINE_GAPS, &(short_room, position), &())?;
        }
        super::context::index_timestamp(
            &mut batch,
            short_room,
            pdu.origin_server_ts.get().into(),
            position,
            short_event,
        )?;
        batch.put(&EVENT_STREAM, &position, &(short_room, short_event))?;
        super::search::index_event(db, &mut batch, short_room, position, short_event, &pdu)?;
        self.index_relation(db, &mut batch, (short_event, &pdu), short_room, position)?;
        if let Some(state) = &redaction_state {
            self.unindex_redacted(db, &mut batch, &pdu, state, rules)?;
        }
        self.write_current_state(
            db,
            &mut batch,
            (short_room, rules),
            (short_event, &pdu),
            &previous,
            &changes,
            position,
        )?;
        let push_queued = write_notifications(&mut batch, position, notifications)?;
        batch.put(
            &ROOMS,
            &short_room,
            &RoomRecord {
                version: version.clone(),
                current_state_group: current_group,
                extremities,
                backfilled: room_record.as_ref().map_or(0, |r| r.backfilled),
            },
        )?;
        reserved.wakes(super::stream::wake_keys(&pdu.room_id, &pdu.kind.to_string(), pdu.state_key.as_deref()));
        let push_wake = push_queued.then(|| self.push_wake.clone());
        // Releasing the position makes the event readable by those who hand it out (and wakes
        // them); with a deferred write that waits for the sync that makes the batch durable.
        let publish = move || {
            drop(reserved);
            if let Some(push_wake) = push_wake {
                push_wake.notify_one();
            }
        };
        let durable = if deferrable(transaction, &pdu) {
            db.write_deferred(batch, publish)?
        } else {
            db.write(batch)?;
            publish();
            Ticket::default()
        };
        self.forget_stored(short_event);
        Ok(Accepted { event_id: pdu.event_id, position: Some(position), soft_failed, durable })
    }
}
