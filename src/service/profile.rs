//! Profiles: `displayname`, `avatar_url` and custom fields (spec v1.16), one row per field. A
//! display name change rewrites the user's user directory words in the same batch.

use std::collections::BTreeMap;

use ruma::UserId;

use crate::{
    Result,
    storage::{Batch, Db, tables::PROFILE_FIELDS},
};

pub struct Profiles {
    db: Db,
}

impl Profiles {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn all(&self, user_id: &UserId) -> Result<BTreeMap<String, serde_json::Value>> {
        let user_id = user_id.to_owned();
        self.db
            .run(move |db| {
                Ok(PROFILE_FIELDS
                    .scan_prefix(db, &(user_id,))?
                    .into_iter()
                    .map(|((_, field), value)| (field, value))
                    .collect())
            })
            .await
    }

    pub async fn field(&self, user_id: &UserId, field: &str) -> Result<Option<serde_json::Value>> {
        let key = (user_id.to_owned(), field.to_owned());
        self.db.run(move |db| Ok(PROFILE_FIELDS.get(db, &key)?)).await
    }

    /// Sets (or with `None`, removes) one field.
    pub async fn set_field(&self, user_id: &UserId, field: &str, value: Option<serde_json::Value>) -> Result<()> {
        let key = (user_id.to_owned(), field.to_owned());
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                if key.1 == "displayname" {
                    let name = value.as_ref().and_then(|v| v.as_str());
                    crate::service::user_directory::reindex_user(db, &mut batch, &key.0, name)?;
                }
                match value {
                    Some(value) => batch.put(&PROFILE_FIELDS, &key, &value)?,
                    None => batch.delete(&PROFILE_FIELDS, &key),
                }
                Ok(db.write(batch)?)
            })
            .await
    }

    /// Removes every field (account erasure).
    pub async fn erase(&self, user_id: &UserId) -> Result<()> {
        let user_id = user_id.to_owned();
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                for (key, _) in PROFILE_FIELDS.scan_prefix(db, &(user_id.clone(),))? {
                    batch.delete(&PROFILE_FIELDS, &key);
                }
                crate::service::user_directory::reindex_user(db, &mut batch, &user_id, None)?;
                Ok(db.write(batch)?)
            })
            .await
    }
}
