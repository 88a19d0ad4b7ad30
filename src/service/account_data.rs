//! Account data (global and per room) with a change log for sync, and stored filters.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::value::RawValue;

use super::{
    notifier::Notifier,
    push::{PUSH_RULES_TYPE, recipients::PushProfiles},
};

use crate::{
    Result,
    storage::{
        Batch, Db, ScanDirection, WriteLock,
        tables::{ACCOUNT_DATA, ACCOUNT_DATA_CHANGES, AccountDataChange, COUNTERS, FILTERS},
    },
};

/// The counter that orders account data changes (and, later, every sync stream).
const STREAM_COUNTER: &str = "stream_position";
const FILTER_COUNTER: &str = "filter_id";
/// The account data type prefix of a device's local notification settings (MSC3890).
const LOCAL_NOTIFICATION_SETTINGS: &str = "org.matrix.msc3890.local_notification_settings.";

/// Whether stored content is `{}`, which is how a deleted entry is kept (MSC3391: a `PUT` of
/// `{}` deletes, and so does `DELETE`). Incremental syncs still show the change, with that empty
/// content, so clients drop the entry; `get` and initial syncs treat it as absent.
pub fn is_deleted(content: &RawValue) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(content.get()).is_ok_and(|map| map.is_empty())
}

/// One account data entry as sync shows it.
#[derive(Debug, Clone)]
pub struct AccountDataEntry {
    /// The room ID, or empty for global account data.
    pub room: String,
    pub event_type: String,
    pub content: Box<RawValue>,
}

pub struct AccountData {
    db: Db,
    notifier: Arc<Notifier>,
    /// Serialises counter increments and read-modify-write of entries; held until the write
    /// is committed even when the request that started it is dropped.
    lock: WriteLock,
    /// Push evaluation's cached profiles, forgotten when a user's push rules are written.
    push_profiles: Arc<PushProfiles>,
}

fn room_key(room_id: Option<&RoomId>) -> String {
    room_id.map(|r| r.as_str().to_owned()).unwrap_or_default()
}

impl AccountData {
    pub fn new(db: Db, notifier: Arc<Notifier>, push_profiles: Arc<PushProfiles>) -> Self {
        Self { db, notifier, lock: WriteLock::new(), push_profiles }
    }

    /// The newest account data stream position. Changes are written in position order (under
    /// the counter lock), so every change up to it is committed.
    pub async fn position(&self) -> Result<u64> {
        self.db.run(Self::position_in).await
    }

    /// [`position`](Self::position), on the storage threads already.
    pub fn position_in(db: &Db) -> Result<u64> {
        Ok(COUNTERS.get(db, &STREAM_COUNTER.to_owned())?.unwrap_or(0))
    }

    /// A user's account data: all of it without `since`, else what changed in positions
    /// `(since, upto]`, each entry once.
    pub async fn changes(&self, user_id: &UserId, since: Option<u64>, upto: u64) -> Result<Vec<AccountDataEntry>> {
        let user_id = user_id.to_owned();
        self.db
            .run(move |db| {
                let Some(since) = since else {
                    return Ok(ACCOUNT_DATA
                        .scan_prefix(db, &(user_id,))?
                        .into_iter()
                        .filter(|(_, content)| !is_deleted(content))
                        .map(|((_, room, event_type), content)| AccountDataEntry { room, event_type, content })
                        .collect());
                };
                let changed: BTreeSet<(String, String)> = ACCOUNT_DATA_CHANGES
                    .scan_from(
                        db,
                        &(user_id.clone(), since.saturating_add(1)),
                        ScanDirection::Forward,
                        usize::MAX,
                        |(user, position)| *user == user_id && *position <= upto,
                    )?
                    .into_iter()
                    .map(|(_, change)| (change.room, change.event_type))
                    .collect();
                let mut out = Vec::with_capacity(changed.len());
                for (room, event_type) in changed {
                    if let Some(content) = ACCOUNT_DATA.get(db, &(user_id.clone(), room.clone(), event_type.clone()))? {
                        out.push(AccountDataEntry { room, event_type, content });
                    }
                }
                Ok(out)
            })
            .await
    }

    pub async fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
    ) -> Result<Option<Box<RawValue>>> {
        let (user_id, room_key, event_type) = (user_id.to_owned(), room_key(room_id), event_type.to_owned());
        self.db.run(move |db| Self::get_in(db, &user_id, &room_key, &event_type)).await
    }

    /// [`get`](Self::get), on the storage threads already (`room_key` empty for global data).
    fn get_in(db: &Db, user_id: &UserId, room_key: &str, event_type: &str) -> Result<Option<Box<RawValue>>> {
        let key = (user_id.to_owned(), room_key.to_owned(), event_type.to_owned());
        Ok(ACCOUNT_DATA.get(db, &key)?.filter(|content| !is_deleted(content)))
    }

    /// The users `user_id` ignores (`m.ignored_user_list`): their events and invites are hidden
    /// from `user_id`'s syncs, `/messages` and `/context`. An unreadable list ignores no one.
    pub async fn ignored_users(&self, user_id: &UserId) -> Result<HashSet<OwnedUserId>> {
        let user_id = user_id.to_owned();
        self.db.run(move |db| Self::ignored_users_in(db, &user_id)).await
    }

    /// [`ignored_users`](Self::ignored_users), on the storage threads already.
    pub fn ignored_users_in(db: &Db, user_id: &UserId) -> Result<HashSet<OwnedUserId>> {
        #[derive(serde::Deserialize)]
        struct IgnoredUserList {
            #[serde(default)]
            ignored_users: std::collections::BTreeMap<OwnedUserId, serde::de::IgnoredAny>,
        }
        let Some(raw) = Self::get_in(db, user_id, &room_key(None), "m.ignored_user_list")? else {
            return Ok(HashSet::new());
        };
        Ok(serde_json::from_str::<IgnoredUserList>(raw.get())
            .map(|list| list.ignored_users.into_keys().collect())
            .unwrap_or_default())
    }

    /// Every entry of the user's account data: (room ID or empty, type, content).
    pub async fn all(&self, user_id: &UserId) -> Result<Vec<(String, String, Box<RawValue>)>> {
        let user_id = user_id.to_owned();
        self.db
            .run(move |db| {
                Ok(ACCOUNT_DATA
                    .scan_prefix(db, &(user_id,))?
                    .into_iter()
                    .map(|((_, room, kind), content)| (room, kind, content))
                    .collect())
            })
            .await
    }

    /// Deletes every entry of the user's account data (global and per room), its change log
    /// and their saved filters (account erasure).
    pub async fn erase(&self, user_id: &UserId) -> Result<()> {
        let user_id = user_id.to_owned();
        let push_profiles = self.push_profiles.clone();
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                for (key, _) in ACCOUNT_DATA.scan_prefix(db, &(user_id.clone(),))? {
                    batch.delete(&ACCOUNT_DATA, &key);
                }
                for (key, _) in ACCOUNT_DATA_CHANGES.scan_prefix(db, &(user_id.clone(),))? {
                    batch.delete(&ACCOUNT_DATA_CHANGES, &key);
                }
                for (key, _) in crate::storage::tables::FILTERS.scan_prefix(db, &(user_id.clone(),))? {
                    batch.delete(&crate::storage::tables::FILTERS, &key);
                }
                db.write(batch)?;
                push_profiles.forget(&user_id);
                Ok(())
            })
            .await
    }

    /// Stores content and records the change at a new stream position, in one batch.
    pub async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: Box<RawValue>,
    ) -> Result<()> {
        self.update(user_id, room_id, event_type, move |_, _| Ok((Some(content), ()))).await
    }

    /// Read-modify-write of one entry under the account data lock: `change` gets the database
    /// and the stored content and returns the new content (`None`: leave it as it is) and a
    /// result. The new content is stored at a new stream position and waiting syncs are woken
    /// inside the blocking work, so a dropped request can neither interleave with another
    /// change of the entry nor skip the wake-up.
    pub async fn update<R, F>(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        change: F,
    ) -> Result<R>
    where
        F: FnOnce(&Db, Option<Box<RawValue>>) -> Result<(Option<Box<RawValue>>, R)> + Send + 'static,
        R: Send + 'static,
    {
        let key = (user_id.to_owned(), room_key(room_id), event_type.to_owned());
        let notifier = self.notifier.clone();
        let push_profiles = self.push_profiles.clone();
        self.lock
            .run(&self.db, move |db| {
                let (content, out) = change(db, ACCOUNT_DATA.get(db, &key)?)?;
                let Some(content) = content else { return Ok(out) };
                let mut batch = Batch::new();
                let position = next_counter(db, &mut batch, STREAM_COUNTER)?;
                batch.put(&ACCOUNT_DATA, &key, &content)?;
                let (user_id, room, event_type) = key;
                let push_rules = room.is_empty() && event_type == PUSH_RULES_TYPE;
                batch.put(
                    &ACCOUNT_DATA_CHANGES,
                    &(user_id.clone(), position),
                    &AccountDataChange { room, event_type },
                )?;
                db.write(batch)?;
                if push_rules {
                    // After the write: a profile read before it is not cached (see `PushProfiles`).
                    push_profiles.forget(&user_id);
                }
                notifier.account_data_committed(&user_id, position);
                Ok(out)
            })
            .await
    }

    /// A write of another per-user stream that shares the account data positions (thread
    /// subscriptions, MSC4308): `write` gets the database and the position the change will
    /// have, and returns the batch to commit at it (`None`: nothing changes) and a result. Under
    /// the account data lock, so positions are committed in order; waiting syncs are woken.
    pub async fn write_at_position<R, F>(&self, user: &UserId, write: F) -> Result<R>
    where
        F: FnOnce(&Db, u64) -> Result<(Option<Batch>, R)> + Send + 'static,
        R: Send + 'static,
    {
        let (notifier, user) = (self.notifier.clone(), user.to_owned());
        self.lock
            .run(&self.db, move |db| {
                let position = COUNTERS.get(db, &STREAM_COUNTER.to_owned())?.unwrap_or(0) + 1;
                let (batch, out) = write(db, position)?;
                let Some(mut batch) = batch else { return Ok(out) };
                if next_counter(db, &mut batch, STREAM_COUNTER)? != position {
                    return Err(crate::Error::internal("account data position moved under its lock"));
                }
                db.write(batch)?;
                notifier.account_data_committed(&user, position);
                Ok(out)
            })
            .await
    }

    /// Deletes the local notification settings (MSC3890:
    /// `org.matrix.msc3890.local_notification_settings.<device>`) of the devices `which`
    /// accepts, before those devices are deleted. Like the pushers, this goes first: a request
    /// dropped in between leaves a device without its settings, which clients write again.
    pub async fn remove_device_settings(
        &self,
        user_id: &UserId,
        which: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<()> {
        let user = user_id.to_owned();
        let types: Vec<String> = self
            .db
            .run(move |db| {
                Ok(ACCOUNT_DATA
                    .scan_prefix(db, &(user,))?
                    .into_iter()
                    .filter(|((_, room, event_type), content)| {
                        room.is_empty()
                            && !is_deleted(content)
                            && event_type.strip_prefix(LOCAL_NOTIFICATION_SETTINGS).is_some_and(&which)
                    })
                    .map(|((_, _, event_type), _)| event_type)
                    .collect())
            })
            .await?;
        for event_type in types {
            let empty = RawValue::from_string("{}".to_owned()).map_err(|e| crate::Error::internal(e.to_string()))?;
            self.set(user_id, None, &event_type, empty).await?;
        }
        Ok(())
    }

    /// Stores a filter and returns its ID.
    pub async fn create_filter(&self, user_id: &UserId, filter: Box<RawValue>) -> Result<u64> {
        let user_id = user_id.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let id = next_counter(db, &mut batch, FILTER_COUNTER)?;
                batch.put(&FILTERS, &(user_id, id), &filter)?;
                db.write(batch)?;
                Ok(id)
            })
            .await
    }

    pub async fn filter(&self, user_id: &UserId, filter_id: u64) -> Result<Option<Box<RawValue>>> {
        let key = (user_id.to_owned(), filter_id);
        self.db.run(move |db| Ok(FILTERS.get(db, &key)?)).await
    }
}

/// Reserves the next value of a persistent counter inside `batch` (callers hold the lock).
fn next_counter(db: &Db, batch: &mut Batch, name: &str) -> Result<u64> {
    let key = name.to_owned();
    let next = COUNTERS.get(db, &key)?.unwrap_or(0) + 1;
    batch.put(&COUNTERS, &key, &next)?;
    Ok(next)
}
