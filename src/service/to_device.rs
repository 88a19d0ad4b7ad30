//! To-device messages: stored per receiving device until that device acknowledges them (by
//! syncing past them), so they survive restarts; `sendToDevice` is idempotent per transaction.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::notifier::Notifier;
use serde_json::value::RawValue;

use crate::{
    Result,
    storage::{
        Batch, Db, ScanDirection,
        key_tables::{TO_DEVICE, TO_DEVICE_TRANSACTIONS, ToDeviceMessage},
        tables::{COUNTERS, DEVICES},
    },
};

const COUNTER: &str = "to_device_position";

/// Where a message goes: one device, or every device of the user (`*`).
pub enum Target {
    Device(OwnedDeviceId),
    AllDevices,
}

pub struct ToDevice {
    db: Db,
    notifier: Arc<Notifier>,
    lock: tokio::sync::Mutex<()>,
}

impl ToDevice {
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier, lock: tokio::sync::Mutex::new(()) }
    }

    /// Queues messages for local devices, once per (sender device, transaction ID). Returns
    /// false when the transaction was already handled.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        event_type: &str,
        messages: Vec<(OwnedUserId, Target, Box<RawValue>)>,
    ) -> Result<bool> {
        let txn = (sender.to_owned(), sender_device.to_owned(), txn_id.to_owned());
        let (sender, event_type) = (sender.to_owned(), event_type.to_owned());
        let _guard = self.lock.lock().await;
        let result = self
            .db
            .run(move |db| {
                if TO_DEVICE_TRANSACTIONS.contains(db, &txn)? {
                    return Ok(false);
                }
                let mut batch = Batch::new();
                let mut position = COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0);
                for (user, target, content) in messages {
                    let devices: Vec<OwnedDeviceId> = match target {
                        Target::Device(device) => vec![device],
                        Target::AllDevices => {
                            DEVICES.scan_prefix(db, &(user.clone(),))?.into_iter().map(|((_, d), _)| d).collect()
                        }
                    };
                    for device in devices {
                        position += 1;
                        let message = ToDeviceMessage {
                            sender: sender.clone(),
                            event_type: event_type.clone(),
                            content: content.clone(),
                        };
                        batch.put(&TO_DEVICE, &(user.clone(), device, position), &message)?;
                    }
                }
                batch.put(&COUNTERS, &COUNTER.to_owned(), &position)?;
                batch.put(&TO_DEVICE_TRANSACTIONS, &txn, &())?;
                db.write(batch)?;
                Ok(true)
            })
            .await;
        // New messages: wake waiting syncs.
        self.notifier.poke();
        result
    }

    /// The newest position handed out (for sync tokens).
    pub async fn current_position(&self) -> Result<u64> {
        self.db.run(|db| Ok(COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0))).await
    }

    /// Up to `limit` messages for a device after position `after`, oldest first.
    pub async fn pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ToDeviceMessage)>> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.db
            .run(move |db| {
                let start = (user.clone(), device.clone(), after.saturating_add(1));
                let rows = TO_DEVICE
                    .scan_from(db, &start, ScanDirection::Forward, limit, |(u, d, _)| *u == user && *d == device)?;
                Ok(rows.into_iter().map(|((_, _, position), message)| (position, message)).collect())
            })
            .await
    }

    /// Deletes a device's messages up to and including `position` (acknowledged by a sync).
    pub async fn acknowledge(&self, user: &UserId, device: &DeviceId, position: u64) -> Result<()> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.db
            .run(move |db| {
                let start = (user.clone(), device.clone(), 0);
                let rows = TO_DEVICE.scan_from(db, &start, ScanDirection::Forward, usize::MAX, |(u, d, p)| {
                    *u == user && *d == device && *p <= position
                })?;
                let mut batch = Batch::new();
                for (key, _) in rows {
                    batch.delete(&TO_DEVICE, &key);
                }
                Ok(db.write(batch)?)
            })
            .await
    }
}
