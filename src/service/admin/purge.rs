//! Purging history (Synapse's `purge_history`) and deleted rooms' events: older timeline events
//! lose their content on disk and leave the timeline, with what was derived from them (search,
//! relations), and the database is compacted. State events stay (the room keeps working from
//! its state), as does the newest event; only the bare, redacted form of a purged event stays
//! stored, for the room's graph. Purges run in the background; their status is kept in the
//! `purges` table.

use ruma::{OwnedEventId, OwnedRoomId, RoomId};

use crate::{
    Error, Result,
    service::{Services, random_string, rooms::PruneMode},
    storage::erasure_tables::{PURGES, PurgeRecord},
};

/// Up to where a purge goes.
#[derive(Debug, Clone)]
pub enum PurgeUpTo {
    /// Events before this one in the timeline.
    Event(OwnedEventId),
    /// Events sent before this time (ms since the epoch).
    Ts(u64),
}

/// Starts purging a room's history in the background; returns the purge ID.
pub async fn start_purge_history(
    services: &std::sync::Arc<Services>,
    room_id: &RoomId,
    up_to: PurgeUpTo,
    delete_local_events: bool,
) -> Result<String> {
    // Checked before answering: an unknown room or event is `404`.
    let event = match &up_to {
        PurgeUpTo::Event(event) => Some(event.clone()),
        PurgeUpTo::Ts(_) => None,
    };
    let (newest, bound) = services.rooms.timeline_positions(room_id, event).await?;
    let purge_id = random_string(16);
    record(services, &purge_id, room_id, "active", None, 0).await?;
    let (services, room, id) = (services.clone(), room_id.to_owned(), purge_id.clone());
    tokio::spawn(async move {
        let server_name = services.config.server_name.clone();
        let pick = move |pdu: &crate::service::rooms::Pdu, meta: &crate::storage::room_tables::EventMeta| {
            let before = match (&up_to, bound) {
                (PurgeUpTo::Event(_), Some(bound)) => meta.position.is_none_or(|p| p < bound),
                (PurgeUpTo::Ts(ts), _) => u64::from(pdu.origin_server_ts.get()) < *ts,
                (PurgeUpTo::Event(_), None) => false,
            };
            before
                && pdu.state_key.is_none()
                && meta.position != Some(newest)
                && (delete_local_events || pdu.sender.server_name() != server_name)
        };
        let outcome = purge(&services, &room, PruneMode::Remove, pick).await;
        let result = match outcome {
            Ok(pruned) => record(&services, &id, &room, "complete", None, pruned).await,
            Err(error) => record(&services, &id, &room, "failed", Some(error.to_string()), 0).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, purge_id = %id, "could not record the end of a purge");
        }
    });
    Ok(purge_id)
}

/// Prunes the events of a room `pick` chooses, forgets what was derived from them, and
/// compacts the database. Returns how many events were pruned.
pub async fn purge(
    services: &Services,
    room_id: &RoomId,
    mode: PruneMode,
    pick: impl Fn(&crate::service::rooms::Pdu, &crate::storage::room_tables::EventMeta) -> bool + Send + Sync + 'static,
) -> Result<u64> {
    let pruned = services.rooms.prune_room(room_id, mode, pick).await?;
    let count = pruned.len() as u64;
    services.rooms.forget_pruned(pruned).await?;
    if count > 0 {
        super::erasure::compact(services).await?;
    }
    tracing::info!(%room_id, pruned = count, "purged room history and compacted the database");
    Ok(count)
}

async fn record(
    services: &Services,
    purge_id: &str,
    room_id: &RoomId,
    status: &str,
    error: Option<String>,
    pruned: u64,
) -> Result<()> {
    let key = purge_id.to_owned();
    let record = PurgeRecord { status: status.to_owned(), error, room_id: room_id.to_string(), pruned };
    services
        .db
        .run(move |db| {
            let mut batch = crate::storage::Batch::new();
            batch.put(&PURGES, &key, &record)?;
            Ok(db.write(batch)?)
        })
        .await
}

/// A purge's status.
pub async fn status(services: &Services, purge_id: &str) -> Result<PurgeRecord> {
    let key = purge_id.to_owned();
    services.db.run(move |db| PURGES.get(db, &key)?.ok_or_else(|| Error::not_found("No such purge"))).await
}

/// Removes every event of a deleted room from its timeline, content included (a room deleted
/// with `purge`).
pub async fn purge_room(services: &Services, room_id: &RoomId) -> Result<u64> {
    let room: OwnedRoomId = room_id.to_owned();
    purge(services, &room, PruneMode::Remove, |_, _| true).await
}
