//! Filling what a room's history lacks here from another server: the auth chain of an event
//! (`/event_auth`), the events between this server's last ones and a newer event
//! (`/get_missing_events`), and the state at a prev event still missing (`/state_ids`, with
//! `/event` for the events of it this server lacks, stored as outliers). Used for the PDUs of
//! inbound transactions (`inbound.rs`) and, on a rejoin, for the history since this server
//! left the room (`join.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_event, get_missing_events, get_room_state_ids},
    },
    room_version_rules::RoomVersionRules,
};

use super::client::FederationClient;
use crate::{
    Error, Result,
    service::rooms::{Outcome, Rooms, pdu},
};

/// How many missing prev events `/get_missing_events` asks for for a pushed event.
const MISSING_EVENTS_LIMIT: u32 = 20;
/// How many events one `/state_ids` answer may make this server fetch.
pub(super) const MAX_STATE_FETCH: usize = 2_000;
/// How many `/event` requests run at once.
const FETCH_PARALLEL: usize = 10;
/// How many events a rejoin pulls at most to fill the history since this server left; beyond
/// it, the oldest pulled event stands on the state the resident gives and a gap stays there.
const REJOIN_FILL_LIMIT: usize = 1_000;
/// Events asked for per `/get_missing_events` request of that fill.
const REJOIN_FILL_BATCH: u32 = 100;

impl Gap<'_> {
    /// Accepts a PDU into its known room, fetching what it refers to and this server lacks.
    pub(super) async fn accept(&self, event_id: &OwnedEventId, json: CanonicalJsonObject) -> Result<(), String> {
        for server in [Some(self.origin), sender_server(&json).as_deref()].into_iter().flatten() {
            if !self.rooms.server_allowed(self.room_id, server).await.map_err(|e| self.failed(e))? {
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
pub(super) struct Gap<'a> {
    pub(super) rooms: &'a Rooms,
    pub(super) client: &'a Arc<FederationClient>,
    pub(super) origin: &'a ServerName,
    pub(super) room_id: &'a RoomId,
    pub(super) version: &'a RoomVersionId,
    pub(super) rules: &'a RoomVersionRules,
    /// Set when this server failed rather than the event (see `Inbound::receive`).
    pub(super) transient: &'a AtomicBool,
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
        let rooms = &self.rooms;
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
        let (rooms, origin, room_id) = (self.rooms, self.origin, self.room_id);
        let Ok(Some((earliest, min_depth))) = rooms.extremities(room_id).await else { return };
        let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest, vec![latest.clone()]);
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        request.min_depth = UInt::try_from(min_depth).unwrap_or_default();
        let events = match self.client.send(origin, request).await {
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
        let (rooms, origin, room_id) = (self.rooms, self.origin, self.room_id);
        let request = get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.clone());
        let chain = match self.client.send(origin, request).await {
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
        if let Err(error) = rooms.accept_outliers(room_id, None, events).await {
            tracing::debug!(%origin, %event_id, %error, "the auth chain could not be stored");
        }
    }

    /// Accepts an event whose prev event `prev` this server lacks (or has without state) on
    /// the state after `prev`: the state before it as the origin's `/state_ids` gives it, plus
    /// `prev` itself when it is a state event (Synapse answers with the state before the event).
    /// The events of that state and their auth chain not stored here are fetched with `/event`
    /// and stored as outliers first. With several prev events, only this one's state is used.
    async fn accept_on_state_after(&self, json: CanonicalJsonObject, prev: &OwnedEventId) -> Result<Outcome> {
        let (rooms, origin, room_id) = (self.rooms, self.origin, self.room_id);
        let failed = |what: &str, e: String| Error::internal(format!("{what}: {e}"));
        let state = self
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
        let unknown = rooms.unknown_events(wanted).await?;
        let mut fetched = fetch_events(self.client, origin, self.version, &unknown).await;
        let prev_json = match fetched.iter().position(|(id, _)| id == prev) {
            Some(index) => Some(fetched.swap_remove(index).1),
            None => rooms.pdu_json(prev).await?,
        };
        let prev_json = prev_json.ok_or_else(|| failed("/event", format!("{prev} could not be fetched")))?;
        let mut state_ids = state.pdu_ids;
        // The state after a state event includes it: stored as an outlier like the rest.
        if prev_json.contains_key("state_key") {
            fetched.push((prev.clone(), prev_json));
            state_ids.push(prev.clone());
        }
        rooms.accept_outliers(room_id, None, fetched.into_iter().map(|(_, json)| json).collect()).await?;
        let outcome = rooms.accept_pdu_with_state(room_id, None, json, state_ids).await?;
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
    client: &Arc<FederationClient>,
    origin: &ServerName,
    version: &RoomVersionId,
    ids: &[OwnedEventId],
) -> Vec<(OwnedEventId, CanonicalJsonObject)> {
    let Some(rules) = crate::service::rooms::versions::rules(version) else { return Vec::new() };
    let mut fetched = Vec::new();
    for chunk in ids.chunks(FETCH_PARALLEL) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let (client, origin, id) = (client.clone(), origin.to_owned(), id.clone());
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

impl Gap<'_> {
    /// Before a join of a room this server has history of (a rejoin), pulls the events between
    /// its last events and the join (`join`, which `self.origin` accepted) and places them
    /// oldest first, so that history since this server left is in its timeline without a
    /// hole. `/get_missing_events` is asked in rounds, each for what lies before the oldest
    /// events the previous round gave, up to [`REJOIN_FILL_LIMIT`] events.
    pub(super) async fn fill_before_join(&self, join: &OwnedEventId) {
        let (rooms, origin, room_id) = (self.rooms, self.origin, self.room_id);
        let Ok(Some((earliest, min_depth))) = rooms.extremities(room_id).await else { return };
        if earliest.is_empty() {
            return;
        }
        let mut gathered: HashMap<OwnedEventId, (u64, CanonicalJsonObject, Vec<OwnedEventId>)> = HashMap::new();
        let mut latest = vec![join.clone()];
        while !latest.is_empty() && gathered.len() < REJOIN_FILL_LIMIT {
            let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest.clone(), latest);
            request.limit = UInt::from(REJOIN_FILL_BATCH);
            request.min_depth = UInt::try_from(min_depth).unwrap_or_default();
            let events = match self.client.send(origin, request).await {
                Ok(response) => response.events,
                Err(error) => {
                    tracing::info!(%origin, %room_id, %error, "/get_missing_events for a rejoin failed");
                    break;
                }
            };
            let mut new = Vec::new();
            for raw in events.iter().take(REJOIN_FILL_BATCH as usize) {
                let Ok(json) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else { continue };
                let Ok(event) = pdu::Pdu::from_json(json.clone(), self.rules) else { continue };
                if event.room_id != room_id || &event.event_id == join || gathered.contains_key(&event.event_id) {
                    continue;
                }
                if rooms.is_placed(&event.event_id).await.unwrap_or(true) {
                    continue;
                }
                new.push(event.event_id.clone());
                gathered.insert(event.event_id, (event.depth, json, event.prev_events));
            }
            if new.is_empty() {
                break;
            }
            // The next round asks for what lies before the events whose prev events are
            // neither here nor pulled yet.
            latest = Vec::new();
            for id in new {
                let Some((_, _, prevs)) = gathered.get(&id) else { continue };
                let mut open = false;
                for prev in prevs {
                    if !gathered.contains_key(prev) && !rooms.is_placed(prev).await.unwrap_or(true) {
                        open = true;
                    }
                }
                if open {
                    latest.push(id);
                }
            }
        }
        let mut pulled: Vec<_> = gathered.into_iter().map(|(id, (depth, json, _))| (depth, id, json)).collect();
        pulled.sort_by(|(a, a_id, _), (b, b_id, _)| a.cmp(b).then_with(|| a_id.cmp(b_id)));
        tracing::debug!(%origin, %room_id, events = pulled.len(), "history since this server left pulled for a rejoin");
        for (_, event_id, json) in pulled {
            match self.place(&event_id, json, false).await {
                Ok(None) => {}
                Ok(Some(missing)) => tracing::debug!(%origin, %event_id, ?missing, "a pulled event lacks events"),
                Err(error) => tracing::debug!(%origin, %event_id, %error, "a pulled event was refused"),
            }
        }
    }
}
