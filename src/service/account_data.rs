//! Account data (global and per room) with a change log for sync, and stored filters.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::notifier::Notifier;

use crate::{
    Result,
    storage::{
        Batch, Db, ScanDirection,
        tables::{ACCOUNT_DATA, ACCOUNT_DATA_CHANGES, AccountDataChange, COUNTERS, FILTERS},
    },
};

/// The counter that orders account data changes (and, later, every sync stream).
const STREAM_COUNTER: &str = "stream_position";
const FILTER_COUNTER: &str = "filter_id";

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
    /// Serialises counter increments.
    counter_lock: tokio::sync::Mutex<()>,
}

fn room_key(room_id: Option<&RoomId>) -> String {
    room_id.map(|r| r.as_str().to_owned()).unwrap_or_default()
}

impl AccountData {
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier, counter_lock: tokio::sync::Mutex::new(()) }
    }

    /// The newest account data stream position. Changes are written in position order (under
    /// the counter lock), so every change up to it is committed.
    pub async fn position(&self) -> Result<u64> {
        self.db.run(|db| Ok(COUNTERS.get(db, &STREAM_COUNTER.to_owned())?.unwrap_or(0))).await
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
        let key = (user_id.to_owned(), room_key(room_id), event_type.to_owned());
        self.db.run(move |db| Ok(ACCOUNT_DATA.get(db, &key)?)).await
    }

    /// Stores content and records the change at a new stream position, in one batch.
    pub async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: Box<RawValue>,
    ) -> Result<()> {
        let user_id = user_id.to_owned();
        let room = room_key(room_id);
        let event_type = event_type.to_owned();
        let _guard = self.counter_lock.lock().await;
        let position = self
            .db
            .run(move |db| {
                let mut batch = Batch::new();
                let position = next_counter(db, &mut batch, STREAM_COUNTER)?;
                batch.put(&ACCOUNT_DATA, &(user_id.clone(), room.clone(), event_type.clone()), &content)?;
                batch.put(&ACCOUNT_DATA_CHANGES, &(user_id, position), &AccountDataChange { room, event_type })?;
                db.write(batch)?;
                Ok(position)
            })
            .await?;
        self.notifier.account_data_committed(position);
        Ok(())
    }

    /// Stores a filter and returns its ID.
    pub async fn create_filter(&self, user_id: &UserId, filter: Box<RawValue>) -> Result<u64> {
        let user_id = user_id.to_owned();
        let _guard = self.counter_lock.lock().await;
        self.db
            .run(move |db| {
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
