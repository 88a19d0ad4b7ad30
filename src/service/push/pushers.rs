//! Pushers (`/pushers`, `/pushers/set`): stored per user, keyed by app ID and pushkey. Setting a
//! pusher without `append` removes other users' pushers with the same app ID and pushkey, as the
//! spec says; only `http` pushers receive notifications (`gateway.rs`). An `http` pusher's URL
//! must not point at an address the push address guard refuses (by default loopback, private
//! and other non-public ranges, see `push_ip_range_denylist`): checked here when the pusher is
//! set, and again on every delivery, since DNS answers change.

use ruma::{
    OwnedUserId, UserId,
    api::client::push::{Pusher, PusherIds, PusherKind},
};

use super::Push;
use crate::{
    Error, Result,
    service::address_guard::GuardError,
    storage::{
        Batch,
        push_tables::{PUSHER_OWNERS, PUSHERS, PusherRecord},
    },
};

/// The only path a push gateway serves notifications on.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// How long `/pushers/set` waits for the gateway's host name to resolve; a name that does not
/// resolve in time (or at all) is accepted and checked again at delivery.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The spec's limits on the identifiers.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;

/// A stored pusher with the time its pushkey was set.
#[derive(Debug, Clone)]
pub struct StoredPusher {
    pub pusher: Pusher,
    pub pushkey_ts: u64,
}

fn check(pusher: &Pusher) -> Result<()> {
    if pusher.ids.pushkey.is_empty() || pusher.ids.pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::invalid_param(format!("pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")));
    }
    if pusher.ids.app_id.is_empty() || pusher.ids.app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::invalid_param(format!("app_id must be 1 to {MAX_APP_ID_CHARS} characters")));
    }
    match &pusher.kind {
        PusherKind::Http(data) => {
            let url = url::Url::parse(&data.url).map_err(|_| Error::invalid_param("data.url is not a valid URL"))?;
            if !matches!(url.scheme(), "http" | "https") || !url.path().ends_with(NOTIFY_PATH) {
                return Err(Error::invalid_param(format!("data.url must be an http(s) URL ending in {NOTIFY_PATH}")));
            }
            Ok(())
        }
        PusherKind::Email(_) => Ok(()),
        _ => Err(Error::invalid_param("Unsupported pusher kind")),
    }
}

fn decode(record: &PusherRecord) -> Result<StoredPusher> {
    let pusher = serde_json::from_str(record.pusher.get())
        .map_err(|e| Error::internal(format!("stored pusher is invalid: {e}")))?;
    Ok(StoredPusher { pusher, pushkey_ts: record.pushkey_ts })
}

impl Push {
    /// The user's pushers.
    pub async fn pushers(&self, user: &UserId) -> Result<Vec<StoredPusher>> {
        let user = user.to_owned();
        let records = self.db.run(move |db| Ok(PUSHERS.scan_prefix(db, &(user,))?)).await?;
        records.iter().map(|(_, record)| decode(record)).collect()
    }

    /// Whether push gateways at `url` may be reached: not when its host is, or resolves only
    /// to, addresses the guard refuses (`M_INVALID_PARAM`). A name that does not resolve now is
    /// let through: delivery checks again.
    async fn check_gateway_address(&self, url: &str) -> Result<()> {
        let url = url::Url::parse(url).map_err(|_| Error::invalid_param("data.url is not a valid URL"))?;
        let pinned = tokio::time::timeout(RESOLVE_TIMEOUT, self.guard.pin(reqwest::Client::builder(), &url)).await;
        match pinned {
            Ok(Err(GuardError::Forbidden(why) | GuardError::InvalidUrl(why))) => {
                Err(Error::invalid_param(format!("data.url cannot be used: {why}")))
            }
            Ok(Err(GuardError::Resolve(_))) | Ok(Ok(_)) | Err(_) => Ok(()),
        }
    }

    /// Creates or replaces a pusher (`M_INVALID_PARAM` when it is not valid).
    pub async fn set_pusher(&self, (user, device): (&UserId, &str), pusher: Pusher, append: bool) -> Result<()> {
        check(&pusher)?;
        if let PusherKind::Http(data) = &pusher.kind {
            self.check_gateway_address(&data.url).await?;
        }
        let json = serde_json::value::to_raw_value(&pusher)
            .map_err(|e| Error::internal(format!("cannot store pusher: {e}")))?;
        let key = (user.to_owned(), pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
        let device = device.to_owned();
        let profiles = self.profiles.clone();
        self.pushers_lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                // The same pushkey keeps its timestamp when only the pusher's details change.
                let pushkey_ts =
                    PUSHERS.get(db, &key)?.map_or_else(|| crate::service::now_ms() / 1000, |r| r.pushkey_ts);
                let (user, app_id, pushkey) = key.clone();
                let mut changed = vec![user.clone()];
                if !append {
                    for ((_, _, other), ()) in PUSHER_OWNERS.scan_prefix(db, &(app_id.clone(), pushkey.clone()))? {
                        if other != user {
                            batch.delete(&PUSHERS, &(other.clone(), app_id.clone(), pushkey.clone()));
                            batch.delete(&PUSHER_OWNERS, &(app_id.clone(), pushkey.clone(), other.clone()));
                            changed.push(other);
                        }
                    }
                }
                batch.put(&PUSHERS, &key, &PusherRecord { pusher: json, pushkey_ts, device_id: Some(device) })?;
                batch.put(&PUSHER_OWNERS, &(app_id, pushkey, user), &())?;
                db.write(batch)?;
                changed.iter().for_each(|user| profiles.forget(user));
                Ok(())
            })
            .await
    }

    /// Deletes a pusher (nothing happens when there is none).
    pub async fn delete_pusher(&self, user: &UserId, ids: PusherIds) -> Result<()> {
        let key: (OwnedUserId, String, String) = (user.to_owned(), ids.app_id, ids.pushkey);
        let profiles = self.profiles.clone();
        self.pushers_lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let (user, app_id, pushkey) = key.clone();
                batch.delete(&PUSHERS, &key);
                batch.delete(&PUSHER_OWNERS, &(app_id, pushkey, user.clone()));
                db.write(batch)?;
                profiles.forget(&user);
                Ok(())
            })
            .await
    }

    /// Removes `user`'s pushers whose pushkeys a gateway rejected, as (app ID, pushkey) pairs.
    pub async fn remove_rejected(&self, user: &UserId, rejected: Vec<(String, String)>) -> Result<()> {
        let user = user.to_owned();
        let profiles = self.profiles.clone();
        self.pushers_lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                for (app_id, pushkey) in rejected {
                    batch.delete(&PUSHERS, &(user.clone(), app_id.clone(), pushkey.clone()));
                    batch.delete(&PUSHER_OWNERS, &(app_id, pushkey, user.clone()));
                }
                db.write(batch)?;
                profiles.forget(&user);
                Ok(())
            })
            .await
    }

    /// Removes the user's pushers set by sessions of devices `remove` selects (by device ID;
    /// `None` for pushers stored before devices were recorded).
    pub async fn remove_device_pushers(
        &self,
        user: &UserId,
        remove: impl Fn(Option<&str>) -> bool + Send + 'static,
    ) -> Result<()> {
        let user = user.to_owned();
        let profiles = self.profiles.clone();
        self.pushers_lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let mut removed = false;
                for ((_, app_id, pushkey), record) in PUSHERS.scan_prefix(db, &(user.clone(),))? {
                    if remove(record.device_id.as_deref()) {
                        batch.delete(&PUSHERS, &(user.clone(), app_id.clone(), pushkey.clone()));
                        batch.delete(&PUSHER_OWNERS, &(app_id, pushkey, user.clone()));
                        removed = true;
                    }
                }
                if removed {
                    db.write(batch)?;
                    profiles.forget(&user);
                }
                Ok(())
            })
            .await
    }
}
