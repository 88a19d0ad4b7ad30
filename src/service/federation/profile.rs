//! Profiles of other servers' users: asked of their server (`/_matrix/federation/v1/query/profile`)
//! and cached in `remote_profiles`. A cached profile is used for [`FRESH_MS`]; a member event of
//! the user arriving over federation drops it, so the next lookup asks again (the user may have
//! changed their name). When the server cannot be reached, a stale copy is better than nothing.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, UserId,
    api::{client::profile::ProfileFieldValue, error::ErrorKind, federation::query::get_profile_information},
};

use super::client::{FederationClient, FederationError};
use crate::{
    Error, Result,
    service::now_ms,
    storage::{
        Batch, Db,
        remote_tables::{REMOTE_PROFILES, RemoteProfileRecord},
    },
};

/// How long a cached profile is used without asking again.
const FRESH_MS: u64 = 60 * 60 * 1000;

pub struct RemoteProfiles {
    db: Db,
}

impl RemoteProfiles {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The whole profile of `user_id`, from the cache or their server.
    pub async fn get(
        &self,
        client: &FederationClient,
        user_id: &UserId,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        let key = user_id.to_owned();
        let cached = self.db.run(move |db| Ok(REMOTE_PROFILES.get(db, &key)?)).await?;
        if let Some(record) = &cached
            && now_ms().saturating_sub(record.fetched_ms) < FRESH_MS
        {
            return Ok(record.fields.clone());
        }
        let request = get_profile_information::v1::Request::new(user_id.to_owned());
        match client.send(user_id.server_name(), request).await {
            Ok(response) => {
                // Only fields clients can be given: no nulls, no empty avatar URLs (which some
                // servers send for "none").
                let fields: BTreeMap<String, serde_json::Value> = response
                    .iter()
                    .filter(|(name, value)| {
                        let empty_avatar = name.as_str() == "avatar_url" && value.as_str() == Some("");
                        !value.is_null() && !empty_avatar && ProfileFieldValue::new(name, (*value).clone()).is_ok()
                    })
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                let record = RemoteProfileRecord { fields: fields.clone(), fetched_ms: now_ms() };
                let key = user_id.to_owned();
                self.db
                    .run(move |db| {
                        let mut batch = Batch::new();
                        batch.put(&REMOTE_PROFILES, &key, &record)?;
                        Ok(db.write(batch)?)
                    })
                    .await?;
                Ok(fields)
            }
            Err(FederationError::Remote { status: 404, .. }) => {
                self.forget(user_id).await?;
                Err(Error::not_found("Profile not found"))
            }
            Err(error) => match cached {
                Some(record) => {
                    tracing::debug!(user = %user_id, %error, "serving a stale cached profile");
                    Ok(record.fields)
                }
                None => Err(Error::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::Unknown,
                    format!("Could not ask {} for the profile: {error}", user_id.server_name()),
                )),
            },
        }
    }

    /// Drops the cached profile of `user_id`.
    pub async fn forget(&self, user_id: &UserId) -> Result<()> {
        let key = user_id.to_owned();
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                batch.delete(&REMOTE_PROFILES, &key);
                Ok(db.write(batch)?)
            })
            .await
    }
}

/// The user a member event is about, when `json` is one.
pub(crate) fn member_of(json: &CanonicalJsonObject) -> Option<OwnedUserId> {
    match (json.get("type"), json.get("state_key")) {
        (Some(CanonicalJsonValue::String(kind)), Some(CanonicalJsonValue::String(state_key)))
            if kind == "m.room.member" =>
        {
            OwnedUserId::try_from(state_key.as_str()).ok()
        }
        _ => None,
    }
}
