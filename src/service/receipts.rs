//! Read receipts (`m.read`, `m.read.private`): the newest receipt per (room, type, user,
//! thread), each write at the next position of the receipt stream (the `r` part of sync
//! tokens), with a change log so an incremental sync sends only what changed.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::notifier::{Notifier, WakeKey};
use crate::{
    Result,
    storage::{
        Batch, Db, WriteLock,
        room_tables::{RECEIPT_CHANGES, RECEIPTS, ReceiptChange, ReceiptRecord},
        tables::COUNTERS,
    },
};

const COUNTER: &str = "receipt_position";
/// Only its owner sees a private receipt.
const PRIVATE: &str = "m.read.private";

pub struct Receipts {
    db: Db,
    notifier: Arc<Notifier>,
    /// Serialises positions, so every receipt up to the counter is committed.
    lock: WriteLock,
}

impl Receipts {
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier, lock: WriteLock::new() }
    }

    /// The newest receipt stream position.
    pub async fn position(&self) -> Result<u64> {
        self.db.run(Self::position_in).await
    }

    /// [`position`](Self::position), on the storage threads already.
    pub fn position_in(db: &Db) -> Result<u64> {
        Ok(COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0))
    }

    /// Records `user`'s receipt of `receipt_type` at `event_id` (in `thread`, if any).
    pub async fn set(
        &self,
        room: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread: Option<&str>,
    ) -> Result<()> {
        self.set_at(room, user, receipt_type, event_id, thread, super::now_ms()).await
    }

    /// [`set`](Self::set) with the receipt's time (`ts`) given: a receipt of another server
    /// keeps the time its server gave it.
    pub async fn set_at(
        &self,
        room: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread: Option<&str>,
        ts: u64,
    ) -> Result<()> {
        let key = (room.to_owned(), receipt_type.to_owned(), user.to_owned(), thread.unwrap_or_default().to_owned());
        let record =
            ReceiptRecord { event_id: event_id.to_string(), ts, thread_id: thread.map(str::to_owned), position: 0 };
        let notifier = self.notifier.clone();
        self.lock
            .run(&self.db, move |db| {
                let position = COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0) + 1;
                let mut batch = Batch::new();
                batch.put(&COUNTERS, &COUNTER.to_owned(), &position)?;
                batch.put(&RECEIPTS, &key, &ReceiptRecord { position, ..record })?;
                let (room, receipt_type, user, thread) = key;
                let wake = WakeKey::Room(room.clone());
                batch.put(&RECEIPT_CHANGES, &position, &ReceiptChange { room, receipt_type, user, thread })?;
                db.write(batch)?;
                // Inside the blocking work: a dropped request cannot skip the wake-up.
                notifier.wake(&[wake]);
                Ok(())
            })
            .await
    }

    /// The events of `user`'s unthreaded and main-thread read receipts (public and private).
    pub async fn read_receipts(&self, room: &RoomId, user: &UserId) -> Result<Vec<String>> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.db
            .run(move |db| {
                let mut out = Vec::new();
                for kind in ["m.read", PRIVATE] {
                    for thread in ["", "main"] {
                        let key = (room.clone(), kind.to_owned(), user.clone(), thread.to_owned());
                        if let Some(record) = RECEIPTS.get(db, &key)? {
                            out.push(record.event_id);
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// The public (`m.read`) receipts written in positions `(since, upto]`, at most `limit`
    /// positions: (position, room, user, record), for the federation sender. The newest
    /// position read is returned too, so a caller can move on past positions with nothing.
    pub async fn public_changes(
        &self,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(Vec<(OwnedRoomId, ruma::OwnedUserId, ReceiptRecord)>, u64)> {
        self.db
            .run(move |db| {
                let changes = RECEIPT_CHANGES.between(db, since, upto, limit)?;
                let last = if changes.len() < limit { upto } else { changes.last().map_or(upto, |(p, _)| *p) };
                let mut out = Vec::new();
                for (position, change) in changes {
                    if change.receipt_type != "m.read" {
                        continue;
                    }
                    let key = (change.room.clone(), change.receipt_type, change.user.clone(), change.thread);
                    // Only the write at this position: a later one is sent at its own position.
                    if let Some(record) = RECEIPTS.get(db, &key)?
                        && record.position == position
                    {
                        out.push((change.room, change.user, record));
                    }
                }
                Ok((out, last))
            })
            .await
    }

    /// The rooms with receipts written in positions `(since, upto]`.
    pub async fn rooms_changed(&self, since: u64, upto: u64) -> Result<Vec<OwnedRoomId>> {
        self.db
            .run(move |db| {
                let rooms: BTreeSet<OwnedRoomId> =
                    RECEIPT_CHANGES.between(db, since, upto, usize::MAX)?.into_iter().map(|(_, c)| c.room).collect();
                Ok(rooms.into_iter().collect())
            })
            .await
    }

    /// The `m.receipt` content per room for `user`: every receipt of `rooms` without `since`,
    /// else those written in positions `(since, upto]`. Others' private receipts are left out.
    pub async fn for_sync(
        &self,
        user: &UserId,
        rooms: Vec<OwnedRoomId>,
        since: Option<u64>,
        upto: u64,
    ) -> Result<HashMap<OwnedRoomId, Value>> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                let mut receipts = Vec::new();
                match since {
                    None => {
                        for room in rooms {
                            receipts.extend(RECEIPTS.scan_prefix(db, &(room,))?);
                        }
                    }
                    Some(since) => {
                        let wanted: BTreeSet<OwnedRoomId> = rooms.into_iter().collect();
                        let changes = RECEIPT_CHANGES.between(db, since, upto, usize::MAX)?;
                        let keys: BTreeSet<_> = changes
                            .into_iter()
                            .filter(|(_, c)| wanted.contains(&c.room))
                            .map(|(_, c)| (c.room, c.receipt_type, c.user, c.thread))
                            .collect();
                        for key in keys {
                            if let Some(record) = RECEIPTS.get(db, &key)? {
                                receipts.push((key, record));
                            }
                        }
                    }
                }
                let mut out: HashMap<OwnedRoomId, Value> = HashMap::new();
                for ((room, receipt_type, reader, _), record) in receipts {
                    if receipt_type == PRIVATE && reader != user {
                        continue;
                    }
                    let mut receipt = Map::new();
                    receipt.insert("ts".to_owned(), json!(record.ts));
                    if let Some(thread) = record.thread_id {
                        receipt.insert("thread_id".to_owned(), json!(thread));
                    }
                    let content = out.entry(room).or_insert_with(|| json!({}));
                    let slot = &mut content[&record.event_id][&receipt_type][reader.as_str()];
                    // The content holds one receipt per user, event and type: an unthreaded
                    // receipt and a threaded one at the same event show as the unthreaded one
                    // (MSC4102), whichever was sent last.
                    if slot.is_object() && slot.get("thread_id").is_none() {
                        continue;
                    }
                    *slot = Value::Object(receipt);
                }
                Ok(out)
            })
            .await
    }
}

/// `user`'s read receipts (public and private) in a room as (thread, event ID) pairs: the
/// thread is empty for unthreaded receipts, `main` or a thread root for threaded ones.
/// Blocking: for a caller's own trip to the storage threads (unread counts).
pub fn read_receipts_by_thread_in(db: &Db, room: &RoomId, user: &UserId) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for kind in ["m.read", PRIVATE] {
        for ((_, _, _, thread), record) in
            RECEIPTS.scan_prefix(db, &(room.to_owned(), kind.to_owned(), user.to_owned()))?
        {
            out.push((thread, record.event_id));
        }
    }
    Ok(out)
}
