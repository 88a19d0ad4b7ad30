//! Transactions other servers send (`PUT /_matrix/federation/v1/send/{txnId}`): checked (the
//! body's `origin` is the signed one, at most 50 PDUs and 100 EDUs), deduplicated per origin
//! and transaction ID (a repeat gets the first answer without being processed again), and
//! processed one transaction per origin at a time, PDUs in order.
//!
//! Each PDU goes through the rooms' acceptance path. When it refers to events this server
//! doesn't have, they are fetched from the origin (`gap.rs`): its auth chain with
//! `/event_auth`; missing prev events with `/get_missing_events` (bounded), placed oldest
//! first, a pulled event whose own prev events are missing on the state after them from
//! `/state_ids`. A pushed event whose prev events are still missing after that is refused
//! (Synapse's rule). The answer has one result per PDU
//! whose room and event ID could be worked out; PDUs that cannot (not JSON objects, unknown
//! rooms, no room ID) are left out, as Synapse does.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, ServerName,
    api::{error::ErrorKind, federation::transactions::send_transaction_message},
};
use serde_json::value::RawValue;

use super::{
    gap::Gap,
    sender::{MAX_EDUS, MAX_PDUS},
};
use crate::{
    Error, Result,
    service::{Services, rooms::pdu},
    storage::{
        Batch, Db,
        federation_send_tables::{INBOUND_TRANSACTIONS, InboundAnswer},
    },
};

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
            super::edus::receive(services, origin, edu.json()).await;
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
        let rules = crate::service::rooms::versions::rules(&version)?;
        let event_id = pdu::event_id_of(&json, &rules).ok()?;
        let gap = Gap {
            rooms: &services.rooms,
            client: &services.federation.client,
            origin,
            room_id: &room_id,
            version: &version,
            rules: &rules,
            transient,
        };
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
