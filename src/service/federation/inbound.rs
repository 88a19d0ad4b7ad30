//! Transactions other servers send (`PUT /_matrix/federation/v1/send/{txnId}`): checked (the
//! body's `origin` is the signed one, at most 50 PDUs and 100 EDUs), deduplicated per origin
//! and transaction ID (a repeat gets the first answer without being processed again), and
//! processed one transaction per origin at a time, PDUs in order.
//!
//! Each PDU goes through the rooms' acceptance path. When it refers to events this server
//! doesn't have: its auth chain is fetched with `/event_auth`; missing prev events are fetched
//! with `/get_missing_events` (bounded) and placed oldest first, a pulled event whose own prev
//! events are missing on the state after them from `/state_ids` (the events not stored here
//! fetched with `/event`, stored as outliers). A pushed event whose prev events are still
//! missing after that is refused (Synapse's rule). The answer has one result per PDU
//! whose room and event ID could be worked out; PDUs that cannot (not JSON objects, unknown
//! rooms, no room ID) are left out, as Synapse does.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UInt,
    api::{
        error::ErrorKind,
        federation::{
            authorization::get_event_authorization,
            event::{get_event, get_missing_events, get_room_state_ids},
            transactions::send_transaction_message,
        },
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::sender::{MAX_EDUS, MAX_PDUS};
use crate::{
    Error, Result,
    service::{
        Services,
        rooms::{Outcome, pdu},
    },
    storage::{
        Batch, Db,
        federation_send_tables::{INBOUND_TRANSACTIONS, InboundAnswer},
    },
};

/// How many missing prev events `/get_missing_events` asks for.
const MISSING_EVENTS_LIMIT: u32 = 20;
/// How many events one `/state_ids` answer may make this server fetch.
const MAX_STATE_FETCH: usize = 2_000;
/// How many `/event` requests run at once.
const FETCH_PARALLEL: usize = 10;
/// How long the answer to a transaction is kept for repeats of it (a sender retries within
/// its backoff, at most an hour in Trellis; a day covers other servers' longer waits).
const ANSWER_KEPT_MS: u64 = 24 * 3600 * 1000;
/// Answers older than [`ANSWER_KEPT_MS`] are dropped after every this many transactions.
const PRUNE_EVERY: u64 = 1000;

type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

/// The receiving side's state: one lock per origin.
pub struct Inbound {
    db: Db,
    origins: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    /// Transactions answered since start-up (to prune old answers now and then).
    answered: std::sync::atomic::AtomicU64,
}

fn too_large(message: String) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::TooLarge, message)
}

impl Inbound {
    pub fn new(db: Db) -> Self {
        Self { db, origins: Mutex::new(HashMap::new()), answered: Default::default() }
    }

    fn origin_lock(&self, origin: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        let mut origins = self.origins.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if origins.len() > 10_000 {
            origins.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        origins.entry(origin.to_owned()).or_default().clone()
    }

    /// Handles a transaction from `origin` (the verified signer of the request).
    pub async fn receive(
        &self,
        services: &Services,
        origin: &ServerName,
        request: send_transaction_message::v1::Request,
    ) -> Result<send_transaction_message::v1::Response> {
        if request.origin != origin {
            return Err(Error::forbidden(format!(
                "The transaction's origin {} is not the server that signed the request ({origin})",
                request.origin
            )));
        }
        if request.pdus.len() > MAX_PDUS || request.edus.len() > MAX_EDUS {
            return Err(too_large(format!(
                "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs; this one has {} and {}",
                request.pdus.len(),
                request.edus.len()
            )));
        }
        let lock = self.origin_lock(origin);
        let _guard = lock.lock().await;
        let key = (origin.to_string(), request.transaction_id.to_string());
        let stored_key = key.clone();
        if let Some(answer) = self.db.run(move |db| Ok(INBOUND_TRANSACTIONS.get(db, &stored_key)?)).await? {
            tracing::debug!(%origin, txn = %request.transaction_id, "repeated transaction answered from its record");
            let pdus: PduResults = serde_json::from_value(answer.response.get("pdus").cloned().unwrap_or_default())
                .map(|map: BTreeMap<OwnedEventId, serde_json::Value>| {
                    map.into_iter()
                        .map(|(id, result)| match result.get("error").and_then(|e| e.as_str()) {
                            Some(error) => (id, Err(error.to_owned())),
                            None => (id, Ok(())),
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Ok(send_transaction_message::v1::Response::new(pdus));
        }

        let mut results = PduResults::new();
        // Set when this server failed (storage): the answer is then not kept, so the sender's
        // retry of the transaction is processed again.
        let transient = AtomicBool::new(false);
        for raw in &request.pdus {
            if let Some((event_id, result)) = self.pdu(services, origin, raw, &transient).await {
                if let Err(error) = &result {
                    tracing::debug!(%origin, %event_id, %error, "refused a PDU of a transaction");
                }
                results.insert(event_id, result);
            }
        }
        for edu in &request.edus {
            let kind = edu.get_field::<String>("edu_type").ok().flatten().unwrap_or_default();
            tracing::debug!(%origin, edu_type = %kind, "EDU received and not handled yet");
        }

        let response: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(id, result)| {
                let value = match result {
                    Ok(()) => serde_json::json!({}),
                    Err(error) => serde_json::json!({ "error": error }),
                };
                (id.to_string(), value)
            })
            .collect();
        if transient.load(Ordering::SeqCst) {
            return Ok(send_transaction_message::v1::Response::new(results));
        }
        let now = crate::service::now_ms();
        let answer = InboundAnswer { response: serde_json::json!({ "pdus": response }), at_ms: now };
        let prune = self.answered.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                batch.put(&INBOUND_TRANSACTIONS, &key, &answer)?;
                if prune {
                    for (old, answer) in INBOUND_TRANSACTIONS.all(db)? {
                        if answer.at_ms.saturating_add(ANSWER_KEPT_MS) < now {
                            batch.delete(&INBOUND_TRANSACTIONS, &old);
                        }
                    }
                }
                Ok(db.write(batch)?)
            })
            .await?;
        Ok(send_transaction_message::v1::Response::new(results))
    }

    /// One PDU of a transaction: its event ID and result, or `None` when its room or ID cannot
    /// be worked out.
    async fn pdu(
        &self,
        services: &Services,
        origin: &ServerName,
        raw: &RawValue,
        transient: &AtomicBool,
    ) -> Option<(OwnedEventId, Result<(), String>)> {
        let Ok(json) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
            tracing::debug!(%origin, "a PDU of a transaction is not a canonical JSON object");
            return None;
        };
        let room_id = match json.get("room_id") {
            Some(CanonicalJsonValue::String(room)) => OwnedRoomId::try_from(room.as_str()).ok()?,
            _ => return None,
        };
        let version = match services.rooms.version(&room_id).await {
            Ok(Some(version)) => version,
            Ok(None) => {
                // The one event of such a room this server takes: the inviter rescinding an
                // invite of a local user (`membership.rs`).
                match super::membership::receive_rescission(services, origin, json).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(%origin, %room_id, "a PDU for a room this server is not in"),
                    Err(error) => tracing::debug!(%origin, %room_id, %error, "a rescinded invite refused"),
                }
                return None;
            }
            Err(error) => {
                tracing::warn!(%origin, %room_id, %error, "cannot read a room's version");
                transient.store(true, Ordering::SeqCst);
                return None;
            }
        };
        let rules = version.rules()?;
        let event_id = pdu::event_id_of(&json, &rules).ok()?;
        let gap = Gap { services, origin, room_id: &room_id, version: &version, rules: &rules, transient };
        let member = super::profile::member_of(&json);
        let result = gap.accept(&event_id, json).await;
        // A member event may carry a new name or avatar: the cached profile is asked again.
        if let Some(user) = member.filter(|user| result.is_ok() && user.server_name() != services.config.server_name)
            && let Err(error) = services.federation.profiles.forget(&user).await
        {
            tracing::warn!(%user, %error, "cannot drop a cached profile");
        }
        Some((event_id, result))
    }
}

impl Gap<'_> {
    /// Accepts a PDU into its known room, fetching what it refers to and this server lacks.
    async fn accept(&self, event_id: &OwnedEventId, json: CanonicalJsonObject) -> Result<(), String> {
        for server in [Some(self.origin), sender_server(&json).as_deref()].into_iter().flatten() {
            if !self.services.rooms.server_allowed(self.room_id, server).await.map_err(|e| self.failed(e))? {
                return Err(format!("The room's server ACL denies {server}"));
            }
        }
        match self.place(event_id, json, true).await? {
            None => Ok(()),
            Some(missing) => Err(format!(
                "Refers to events that could not be fetched: {}",
                missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// The per-PDU error for a failure: the refusal as it is, or for a failure of this server
    /// (storage, a bug) a generic message, and the transaction is marked to be processed again.
    fn failed(&self, error: Error) -> String {
        match error {
            Error::Storage(_) | Error::Internal(_) => {
                tracing::warn!(origin = %self.origin, %error, "processing an event of a transaction failed");
                self.transient.store(true, Ordering::SeqCst);
                "This server failed to process the event; send it again".to_owned()
            }
            refusal => refusal.to_string(),
        }
    }
}

/// What placing one PDU (and the events pulled for it) needs.
struct Gap<'a> {
    services: &'a Services,
    origin: &'a ServerName,
    room_id: &'a RoomId,
    version: &'a RoomVersionId,
    rules: &'a RoomVersionRules,
    /// Set when this server failed rather than the event (see `Inbound::receive`).
    transient: &'a AtomicBool,
}

impl Gap<'_> {
    /// Accepts an event, fetching what it lacks: its auth chain (`/event_auth`), and for an
    /// event pushed in a transaction (`pull`) the events between this server's extremities and
    /// it (`/get_missing_events`); for an event pulled that way, the state after a prev event
    /// still missing (`/state_ids`). `None` once settled; the events still missing otherwise;
    /// an error when refused.
    async fn place(
        &self,
        event_id: &OwnedEventId,
        json: CanonicalJsonObject,
        pull: bool,
    ) -> Result<Option<Vec<OwnedEventId>>, String> {
        let rooms = &self.services.rooms;
        let prev_events = pdu::Pdu::from_json(json.clone(), self.rules).map(|p| p.prev_events).unwrap_or_default();
        let outcome = rooms.accept_pdu(self.room_id, json.clone()).await.map_err(|e| self.failed(e))?;
        let Some(mut missing) = settled(outcome)? else { return Ok(None) };
        tracing::debug!(origin = %self.origin, %event_id, ?missing, "PDU refers to events this server lacks");

        let lacks_auth = |missing: &[OwnedEventId]| missing.iter().any(|id| !prev_events.contains(id));
        // Auth events are checked first, so prev events not stored here may not be reported.
        let lacks_prev = missing.iter().any(|id| prev_events.contains(id))
            || !rooms.unknown_events(prev_events.clone()).await.map_err(|e| self.failed(e))?.is_empty();
        if pull && lacks_prev {
            Box::pin(self.pull_missing(event_id)).await;
            let outcome = rooms.accept_pdu(self.room_id, json.clone()).await.map_err(|e| self.failed(e))?;
            let Some(still) = settled(outcome)? else { return Ok(None) };
            missing = still;
        }
        if lacks_auth(&missing) {
            self.fetch_auth_chain(event_id).await;
            let outcome = rooms.accept_pdu(self.room_id, json.clone()).await.map_err(|e| self.failed(e))?;
            let Some(still) = settled(outcome)? else { return Ok(None) };
            missing = still;
        }
        // A pushed event whose prev events are still missing is refused, as Synapse does: it
        // could otherwise become the room's only extremity with state only its sender vouches
        // for. Pulled events (between ours and it) are placed on the state the origin gives.
        if pull {
            return Ok(Some(missing));
        }
        // The prev event to take the state after: one reported missing, or (when only auth
        // events were reported, which are checked first) one not stored here.
        let prev = match prev_events.iter().find(|id| missing.contains(id)) {
            Some(prev) => prev.clone(),
            None => {
                let unknown = rooms.unknown_events(prev_events.clone()).await.map_err(|e| self.failed(e))?;
                match unknown.into_iter().next() {
                    Some(prev) => prev,
                    None => return Ok(Some(missing)),
                }
            }
        };
        match self.accept_on_state_after(json, &prev).await {
            Ok(outcome) => settled(outcome),
            Err(error) => {
                tracing::debug!(origin = %self.origin, %prev, %error, "cannot fetch the state at a prev event");
                Ok(Some(missing))
            }
        }
    }

    /// `/get_missing_events` from this server's forward extremities to `latest`, and the
    /// events it gives placed oldest first.
    async fn pull_missing(&self, latest: &OwnedEventId) {
        let (services, origin, room_id) = (self.services, self.origin, self.room_id);
        let Ok(Some((earliest, min_depth))) = services.rooms.extremities(room_id).await else { return };
        let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest, vec![latest.clone()]);
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        request.min_depth = UInt::try_from(min_depth).unwrap_or_default();
        let events = match services.federation.client.send(origin, request).await {
            Ok(response) => response.events,
            Err(error) => {
                tracing::debug!(%origin, %room_id, %error, "/get_missing_events failed");
                return;
            }
        };
        let mut pulled: Vec<(u64, OwnedEventId, CanonicalJsonObject)> = events
            .iter()
            .take(MISSING_EVENTS_LIMIT as usize)
            .filter_map(|raw| serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok())
            .filter_map(|json| {
                let pdu = pdu::Pdu::from_json(json.clone(), self.rules).ok()?;
                (pdu.room_id == room_id).then_some((pdu.depth, pdu.event_id, json))
            })
            .collect();
        pulled.sort_by_key(|(depth, _, _)| *depth);
        for (_, event_id, json) in pulled {
            match self.place(&event_id, json, false).await {
                Ok(None) => tracing::debug!(%origin, %event_id, "missing event pulled"),
                Ok(Some(missing)) => tracing::debug!(%origin, %event_id, ?missing, "a pulled event lacks events"),
                Err(error) => tracing::debug!(%origin, %event_id, %error, "a pulled missing event was refused"),
            }
        }
    }

    /// `/event_auth` of an event, stored as outliers.
    async fn fetch_auth_chain(&self, event_id: &OwnedEventId) {
        let (services, origin, room_id) = (self.services, self.origin, self.room_id);
        let request = get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.clone());
        let chain = match services.federation.client.send(origin, request).await {
            Ok(response) => response.auth_chain,
            Err(error) => {
                tracing::debug!(%origin, %event_id, %error, "/event_auth failed");
                return;
            }
        };
        let events: Vec<CanonicalJsonObject> = chain
            .iter()
            .take(MAX_STATE_FETCH)
            .filter_map(|raw| serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok())
            .collect();
        if let Err(error) = services.rooms.accept_outliers(room_id, None, events).await {
            tracing::debug!(%origin, %event_id, %error, "the auth chain could not be stored");
        }
    }

    /// Accepts an event whose prev event `prev` this server lacks (or has without state) on
    /// the state after `prev`: the state before it as the origin's `/state_ids` gives it, plus
    /// `prev` itself when it is a state event (Synapse answers with the state before the event).
    /// The events of that state and their auth chain not stored here are fetched with `/event`
    /// and stored as outliers first. With several prev events, only this one's state is used.
    async fn accept_on_state_after(&self, json: CanonicalJsonObject, prev: &OwnedEventId) -> Result<Outcome> {
        let (services, origin, room_id) = (self.services, self.origin, self.room_id);
        let failed = |what: &str, e: String| Error::internal(format!("{what}: {e}"));
        let state = services
            .federation
            .client
            .send(origin, get_room_state_ids::v1::Request::new(prev.clone(), room_id.to_owned()))
            .await
            .map_err(|e| failed("/state_ids", e.to_string()))?;
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        let mut seen = HashSet::new();
        for id in state.auth_chain_ids.iter().chain(&state.pdu_ids).chain(std::iter::once(prev)) {
            if seen.insert(id.clone()) {
                wanted.push(id.clone());
            }
        }
        if wanted.len() > MAX_STATE_FETCH {
            return Err(failed("/state_ids", format!("{} events is too many", wanted.len())));
        }
        let unknown = services.rooms.unknown_events(wanted).await?;
        let mut fetched = fetch_events(services, origin, self.version, &unknown).await;
        let prev_json = match fetched.iter().position(|(id, _)| id == prev) {
            Some(index) => Some(fetched.swap_remove(index).1),
            None => services.rooms.pdu_json(prev).await?,
        };
        let prev_json = prev_json.ok_or_else(|| failed("/event", format!("{prev} could not be fetched")))?;
        let mut state_ids = state.pdu_ids;
        // The state after a state event includes it: stored as an outlier like the rest.
        if prev_json.contains_key("state_key") {
            fetched.push((prev.clone(), prev_json));
            state_ids.push(prev.clone());
        }
        services.rooms.accept_outliers(room_id, None, fetched.into_iter().map(|(_, json)| json).collect()).await?;
        let outcome = services.rooms.accept_pdu_with_state(room_id, None, json, state_ids).await?;
        tracing::debug!(%origin, %prev, ?outcome, "event accepted on the state the origin gave at a gap");
        Ok(outcome)
    }
}

/// `None` when the event is settled (accepted or known), the missing events when some are, an
/// error when it was refused.
fn settled(outcome: Outcome) -> Result<Option<Vec<OwnedEventId>>, String> {
    match outcome {
        Outcome::Accepted(_) | Outcome::AlreadyKnown { .. } => Ok(None),
        Outcome::Rejected { reason, .. } => Err(reason),
        Outcome::MissingEvents { missing, .. } => Ok(Some(missing)),
    }
}

/// The server of a PDU's `sender`.
fn sender_server(json: &CanonicalJsonObject) -> Option<OwnedServerName> {
    match json.get("sender") {
        Some(CanonicalJsonValue::String(sender)) => {
            ruma::OwnedUserId::try_from(sender.as_str()).ok().map(|user| user.server_name().to_owned())
        }
        _ => None,
    }
}

/// Fetches events with `/event/{id}` from `origin`, a few at a time; those that fail, are not
/// canonical JSON or whose ID is not the one asked for are left out.
async fn fetch_events(
    services: &Services,
    origin: &ServerName,
    version: &RoomVersionId,
    ids: &[OwnedEventId],
) -> Vec<(OwnedEventId, CanonicalJsonObject)> {
    let Some(rules) = version.rules() else { return Vec::new() };
    let mut fetched = Vec::new();
    for chunk in ids.chunks(FETCH_PARALLEL) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let (client, origin, id) = (services.federation.client.clone(), origin.to_owned(), id.clone());
            tasks.spawn(async move {
                let response = client.send(&origin, get_event::v1::Request::new(id.clone())).await;
                (id, response)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((id, response)) = joined else { continue };
            let json = match response {
                Ok(response) => serde_json::from_str::<CanonicalJsonObject>(response.pdu.get()).ok(),
                Err(error) => {
                    tracing::debug!(%origin, %id, %error, "/event failed");
                    None
                }
            };
            if let Some(json) = json
                && pdu::event_id_of(&json, &rules).is_ok_and(|computed| computed == id)
            {
                fetched.push((id, json));
            }
        }
    }
    fetched
}
