//! Erasing an account (deactivation with `erase`, GDPR article 17): the profile, uploaded media,
//! account data, keys, pushers and presence go, and the user is recorded as erased, so their
//! past events are served redacted to anyone who was not in the room when they were sent
//! (`service/rooms/erasure.rs`). Pruning goes further, on an admin's request: the content of
//! every event the user sent is removed from disk for everyone, and the database is compacted
//! so the old values are gone from its files too.

use ruma::UserId;

use crate::{
    Result,
    service::{Services, now_ms},
    storage::{
        Batch,
        erasure_tables::{ERASED_USERS, ErasedUser},
        tables::PRESENCE,
    },
};

/// Deletes what the account holds besides its events, and records it as erased. The caller
/// (deactivation) has already removed its devices and pushers and left its rooms.
pub async fn erase_account(services: &Services, user: &UserId) -> Result<()> {
    services.profile.erase(user).await?;
    services.account_data.erase(user).await?;
    services.keys.erase(user).await?;
    services.push.remove_device_pushers(user, |_| true).await?;
    let media = services.media.delete_media_of(user).await?;
    let user_id = user.to_owned();
    services
        .db
        .run(move |db| {
            let mut batch = Batch::new();
            batch.delete(&PRESENCE, &user_id);
            let erased_ms = ERASED_USERS.get(db, &user_id)?.map_or_else(now_ms, |e| e.erased_ms);
            let pruned_ms = ERASED_USERS.get(db, &user_id)?.and_then(|e| e.pruned_ms);
            batch.put(&ERASED_USERS, &user_id, &ErasedUser { erased_ms, pruned_ms })?;
            Ok(db.write(batch)?)
        })
        .await?;
    tracing::info!(%user, media, "erased account data");
    Ok(())
}

/// Whether the user was erased.
pub async fn is_erased(services: &Services, user: &UserId) -> Result<bool> {
    let user = user.to_owned();
    services.db.run(move |db| Ok(ERASED_USERS.contains(db, &user)?)).await
}

/// Prunes the content of every event an erased user sent, on disk and for everyone, then
/// compacts the database. Returns how many events were pruned.
pub async fn prune_events(services: &Services, user: &UserId) -> Result<usize> {
    let started = std::time::Instant::now();
    let pruned = services.rooms.prune_events_of(user).await?;
    let prune_ms = started.elapsed().as_millis();
    let user_id = user.to_owned();
    services
        .db
        .run(move |db| {
            let erased_ms = ERASED_USERS.get(db, &user_id)?.map_or_else(now_ms, |e| e.erased_ms);
            let mut batch = Batch::new();
            batch.put(&ERASED_USERS, &user_id, &ErasedUser { erased_ms, pruned_ms: Some(now_ms()) })?;
            Ok(db.write(batch)?)
        })
        .await?;
    compact(services).await?;
    let total_ms = started.elapsed().as_millis();
    tracing::info!(%user, pruned, prune_ms, total_ms, "pruned the events of an erased user and compacted the database");
    Ok(pruned)
}

/// Flushes and compacts the whole database, so values deleted or overwritten are gone from its
/// files (after a pruning or a purge).
pub async fn compact(services: &Services) -> Result<()> {
    services.db.run(|db| Ok(db.compact_all()?)).await
}
