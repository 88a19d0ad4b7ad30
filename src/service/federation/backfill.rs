//! Backfill as a client of other servers: when `/messages` pages past the start of a room's
//! local history and that history has a gap (its oldest event's prev events are not here,
//! typical after joining over federation), the room's other servers are asked for `/backfill`
//! from that event, one after another until one answers, each within a timeout. What comes
//! back is verified and stored through [`Rooms::accept_backfilled`], newest first; the state
//! before each event is computed from the batch itself where the event follows one other event
//! of it, and otherwise asked of the same server with `/state` at the event (its events and
//! auth chain stored as outliers first).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId, ServerName, UInt,
    api::federation::{backfill::get_backfill, event::get_room_state},
    room_version_rules::RoomVersionRules,
};

use super::{Federation, client::FederationError};
use crate::{
    Error, Result,
    service::rooms::{HistoryGap, Outcome, Pdu, Rooms, TimelineScan, pdu::event_id_of},
    storage::ScanDirection,
};

/// Events asked for per `/backfill` request.
const BATCH: u32 = 100;
/// How long one server gets to answer (all its requests together) before the next is tried.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one backfill (all servers together) may take: a `/messages` page waits for it.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(25);
/// Servers tried per backfill.
const MAX_SERVERS: usize = 5;
/// After a backfill of a room found nothing, it is not tried again for this long (so each page
/// of `/messages` at the start of a room whose servers are down does not wait again).
const COOLDOWN: Duration = Duration::from_secs(60);
/// Rooms remembered in the cooldown at most.
const COOLDOWN_ROOMS: usize = 10_000;

/// Rooms whose last backfill found nothing, and when.
#[derive(Default)]
pub struct Cooldown(std::sync::Mutex<HashMap<ruma::OwnedRoomId, std::time::Instant>>);

impl Cooldown {
    fn cooling(&self, room_id: &RoomId) -> bool {
        self.0.lock().is_ok_and(|rooms| rooms.get(room_id).is_some_and(|since| since.elapsed() < COOLDOWN))
    }

    fn record(&self, room_id: &RoomId, added: usize) {
        let Ok(mut rooms) = self.0.lock() else { return };
        if added > 0 {
            rooms.remove(room_id);
            return;
        }
        if rooms.len() >= COOLDOWN_ROOMS {
            rooms.retain(|_, since| since.elapsed() < COOLDOWN);
        }
        if rooms.len() < COOLDOWN_ROOMS {
            rooms.insert(room_id.to_owned(), std::time::Instant::now());
        }
    }
}

/// State as (type, state key) -> event ID.
type StateMap = BTreeMap<(String, String), OwnedEventId>;

fn failed(server: &ServerName, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("backfill from {server} failed: {e}"))
}

fn parse(raw: &serde_json::value::RawValue, rules: &RoomVersionRules) -> Option<(CanonicalJsonObject, Pdu)> {
    let json: CanonicalJsonObject = serde_json::from_str(raw.get()).ok()?;
    let pdu = Pdu::from_json(json.clone(), rules).ok()?;
    Some((json, pdu))
}

impl Federation {
    /// Fills the gap at the start of a room's history from the room's other servers (see the
    /// module comment). Returns how many events were added; 0 when there is no gap or no
    /// server gave anything.
    pub async fn backfill(&self, rooms: &Rooms, room_id: &RoomId) -> Result<usize> {
        if self.backfill_cooldown.cooling(room_id) {
            return Ok(0);
        }
        let Some(gap) = rooms.history_gap(room_id).await? else { return Ok(0) };
        let added = tokio::time::timeout(TOTAL_TIMEOUT, self.backfill_gap(rooms, room_id, &gap)).await;
        let added = added.unwrap_or_else(|_| {
            tracing::info!(%room_id, "backfill timed out");
            Ok(0)
        })?;
        self.backfill_cooldown.record(room_id, added);
        Ok(added)
    }

    async fn backfill_gap(&self, rooms: &Rooms, room_id: &RoomId, gap: &HistoryGap) -> Result<usize> {
        let rules = crate::service::rooms::versions::rules(&gap.version)
            .ok_or_else(|| Error::internal("unsupported room version stored"))?;
        let servers: Vec<_> = rooms.servers_in_room(room_id).await?.into_iter().take(MAX_SERVERS).collect();
        for server in servers {
            match tokio::time::timeout(SERVER_TIMEOUT, self.backfill_from(rooms, &server, room_id, gap, &rules)).await {
                Ok(Ok(0)) => tracing::debug!(%room_id, %server, "backfill gave nothing new"),
                Ok(Ok(added)) => return Ok(added),
                Ok(Err(error)) => tracing::info!(%room_id, %server, %error, "backfill failed"),
                Err(_) => tracing::info!(%room_id, %server, "backfill from this server timed out"),
            }
        }
        Ok(0)
    }

    async fn backfill_from(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        gap: &HistoryGap,
        rules: &RoomVersionRules,
    ) -> Result<usize> {
        let request = get_backfill::v1::Request::new(room_id.to_owned(), vec![gap.oldest.clone()], UInt::from(BATCH));
        let response = self.client.send(server, request).await.map_err(|e| failed(server, e))?;
        let mut events: Vec<(CanonicalJsonObject, Pdu)> = Vec::new();
        for raw in response.pdus.iter().take(BATCH as usize * 2) {
            let Some((json, pdu)) = parse(raw, rules) else { continue };
            if pdu.room_id != room_id || rooms.is_placed(&pdu.event_id).await? {
                continue;
            }
            if events.iter().all(|(_, known)| known.event_id != pdu.event_id) {
                events.push((json, pdu));
            }
        }
        if events.is_empty() {
            return Ok(0);
        }
        // Oldest first, to compute the state before each event from the one before it.
        events.sort_by(|(_, a), (_, b)| a.depth.cmp(&b.depth).then_with(|| a.event_id.cmp(&b.event_id)));
        let mut state_after: HashMap<OwnedEventId, StateMap> = HashMap::new();
        let mut state_before: HashMap<OwnedEventId, StateMap> = HashMap::new();
        for (_, pdu) in &events {
            let before = match pdu.prev_events.as_slice() {
                // The create event: nothing before it.
                [] => StateMap::new(),
                [prev] if state_after.contains_key(prev) => state_after[prev].clone(),
                _ => match self.state_at(rooms, server, room_id, &pdu.event_id, rules).await {
                    Ok(state) => state,
                    Err(error) => {
                        // Without it the event (and those after it) cannot be placed.
                        tracing::info!(%room_id, %server, event = %pdu.event_id, %error, "no state for a backfilled event");
                        continue;
                    }
                },
            };
            let mut after = before.clone();
            if let Some(state_key) = &pdu.state_key {
                after.insert((pdu.kind.to_string(), state_key.clone()), pdu.event_id.clone());
            }
            state_before.insert(pdu.event_id.clone(), before);
            state_after.insert(pdu.event_id.clone(), after);
        }
        // The batch's state events must be stored before the newer events whose state names
        // them; as outliers, until their own turn places them.
        let state_events: Vec<CanonicalJsonObject> =
            events.iter().filter(|(_, pdu)| pdu.state_key.is_some()).map(|(json, _)| json.clone()).collect();
        if !state_events.is_empty() {
            rooms.accept_outliers(room_id, None, state_events).await?;
        }
        let mut added = 0;
        for (json, pdu) in events.into_iter().rev() {
            let ids = state_before.remove(&pdu.event_id).map(|state| state.into_values().collect());
            match rooms.accept_backfilled(room_id, json, ids).await {
                Ok(Outcome::Accepted(_)) => added += 1,
                Ok(outcome) => tracing::info!(%room_id, event = %pdu.event_id, ?outcome, "backfilled event not added"),
                Err(error) => tracing::info!(%room_id, event = %pdu.event_id, %error, "backfilled event refused"),
            }
        }
        Ok(added)
    }

    /// The state before an event, asked of `server` with `/state`; its events and their auth
    /// chain are stored as outliers.
    async fn state_at(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        rules: &RoomVersionRules,
    ) -> Result<StateMap> {
        let request = get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned());
        let response = self.client.send(server, request).await.map_err(|e: FederationError| failed(server, e))?;
        let mut state = StateMap::new();
        let mut jsons = Vec::new();
        for raw in response.auth_chain.iter() {
            if let Some((json, _)) = parse(raw, rules) {
                jsons.push(json);
            }
        }
        for raw in response.pdus.iter() {
            let Some((json, pdu)) = parse(raw, rules) else { continue };
            if let Some(state_key) = pdu.state_key {
                state.insert((pdu.kind.to_string(), state_key), pdu.event_id);
                jsons.push(json);
            }
        }
        let jsons: Vec<(CanonicalJsonObject, OwnedEventId)> =
            jsons.into_iter().filter_map(|json| event_id_of(&json, rules).ok().map(|id| (json, id))).collect();
        let known = rooms.known_events(jsons.iter().map(|(_, id)| id.clone()).collect()).await?;
        let unknown: Vec<CanonicalJsonObject> =
            jsons.into_iter().zip(known).filter(|(_, known)| !known).map(|((json, _), _)| json).collect();
        if !unknown.is_empty() {
            rooms.accept_outliers(room_id, None, unknown).await?;
        }
        Ok(state)
    }
}

impl crate::service::Services {
    /// [`Federation::backfill`], with failures logged and counted as nothing added: a page can
    /// still be served from local history.
    pub async fn backfill(&self, room_id: &RoomId) -> usize {
        self.federation.backfill(&self.rooms, room_id).await.unwrap_or_else(|error| {
            tracing::info!(%room_id, %error, "backfill failed");
            0
        })
    }

    /// A `/messages` page ([`Rooms::timeline_filtered`]) that, going backwards, backfills from
    /// other servers while the page is short because local history ran out, then reads again;
    /// a bounded number of rounds, enough to fill `limit` when the other servers answer.
    pub async fn timeline_with_backfill(
        &self,
        user: &ruma::UserId,
        room_id: &RoomId,
        from: Option<u64>,
        direction: ScanDirection,
        limit: usize,
        keep: impl Fn(&Pdu) -> bool + Clone + Send + 'static,
    ) -> Result<TimelineScan> {
        let mut page = self.rooms.timeline_scan(user, room_id, from, direction, limit, keep.clone()).await?;
        if direction != ScanDirection::Reverse {
            return Ok(page);
        }
        let rounds = limit / BATCH as usize + 2;
        for _ in 0..rounds {
            if page.next.is_some() || page.events.len() >= limit || self.backfill(room_id).await == 0 {
                break;
            }
            page = self.rooms.timeline_scan(user, room_id, from, direction, limit, keep.clone()).await?;
        }
        Ok(page)
    }
}
