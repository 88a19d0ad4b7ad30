//! Account data (global and per room) with a change log for sync, and stored filters.

use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use crate::{
    Result,
    storage::{
        Batch, Db,
        tables::{ACCOUNT_DATA, ACCOUNT_DATA_CHANGES, AccountDataChange, COUNTERS, FILTERS},
    },
};

/// The counter that orders account data changes (and, later, every sync stream).
const STREAM_COUNTER: &str = "stream_position";
const FILTER_COUNTER: &str = "filter_id";

pub struct AccountData {
    db: Db,
    /// Serialises counter increments.
    counter_lock: tokio::sync::Mutex<()>,
}

fn room_key(room_id: Option<&RoomId>) -> String {
    room_id.map(|r| r.as_str().to_owned()).unwrap_or_default()
}

impl AccountData {
    pub fn new(db: Db) -> Self {
        Self { db, counter_lock: tokio::sync::Mutex::new(()) }
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
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                let position = next_counter(db, &mut batch, STREAM_COUNTER)?;
                batch.put(&ACCOUNT_DATA, &(user_id.clone(), room.clone(), event_type.clone()), &content)?;
                batch.put(&ACCOUNT_DATA_CHANGES, &(user_id, position), &AccountDataChange { room, event_type })?;
                Ok(db.write(batch)?)
            })
            .await
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
