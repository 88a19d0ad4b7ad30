//! To-device messages: stored per receiving device until that device acknowledges them (by
//! syncing past them), so they survive restarts; `sendToDevice` is idempotent per (sender,
//! device, transaction ID), checked and recorded in the same locked commit as the messages.
//! Messages for users of other servers go to a durable outbound queue per destination server
//! (`to_device_outbound`), which the federation sender empties into its queue as
//! `m.direct_to_device` EDUs; those of other servers are delivered once per message ID.
//! Messages for users an application service receives to-device messages for (MSC4203) are
//! also listed in `to_device_appservice`, in order, for the services' senders.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};

use super::notifier::{Notifier, WakeKey};
use serde_json::value::RawValue;

use crate::{
    Result,
    storage::{
        Batch, Db, ScanDirection, WriteLock,
        device_list_tables::TO_DEVICE_RECEIVED,
        key_tables::{
            OutboundToDevice, Recipient, TO_DEVICE, TO_DEVICE_APPSERVICE, TO_DEVICE_OUTBOUND, TO_DEVICE_TRANSACTIONS,
            ToDeviceMessage,
        },
        tables::{COUNTERS, DEVICES},
    },
};

const COUNTER: &str = "to_device_position";
/// Orders the outbound queue.
const OUTBOUND_COUNTER: &str = "to_device_outbound_position";
/// How long the message IDs of other servers' to-device messages are kept to spot repeats (a
/// sender retries a transaction within hours; a week is generous).
const RECEIVED_KEPT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Older message IDs are dropped after every this many received messages.
const PRUNE_EVERY: u64 = 1000;

/// Where a message goes: one device, or every device of the user (`*`).
pub enum Target {
    Device(OwnedDeviceId),
    AllDevices,
}

/// Whether an application service receives a local user's to-device messages.
pub type AppServiceUsers = Arc<dyn Fn(&UserId) -> bool + Send + Sync>;

pub struct ToDevice {
    db: Db,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
    /// Serialises the transaction check, the counters and the commit.
    lock: WriteLock,
    appservice_users: AppServiceUsers,
    /// Messages received from other servers since start-up (to prune old message IDs now and then).
    received: std::sync::atomic::AtomicU64,
    /// Per device, the position up to which its messages were deleted since start-up: a sync
    /// presenting the same token again deletes nothing (positions only grow, so no message
    /// can be queued at or below it later).
    acknowledged: std::sync::Mutex<std::collections::HashMap<(OwnedUserId, OwnedDeviceId), u64>>,
}

/// Devices whose acknowledged position is remembered; past it the memory starts again.
const ACKNOWLEDGED_DEVICES: usize = 100_000;

impl ToDevice {
    pub fn new(
        db: Db,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
        appservice_users: AppServiceUsers,
    ) -> Self {
        Self {
            db,
            notifier,
            server_name,
            lock: WriteLock::new(),
            appservice_users,
            received: Default::default(),
            acknowledged: Default::default(),
        }
    }

    /// Queues messages for local devices and, for users of other servers, in the outbound
    /// queue of their server; once per (sender, sender device, transaction ID). Returns false
    /// when the transaction was already handled.
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
        let (notifier, server_name) = (self.notifier.clone(), self.server_name.clone());
        let appservice_users = self.appservice_users.clone();
        let message_id = super::random_string(16);
        self.lock
            .run(&self.db, move |db| {
                if TO_DEVICE_TRANSACTIONS.contains(db, &txn)? {
                    return Ok(false);
                }
                let mut batch = Batch::new();
                let mut position = COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0);
                let mut wakes = Vec::new();
                let mut outbound = COUNTERS.get(db, &OUTBOUND_COUNTER.to_owned())?.unwrap_or(0);
                for (user, target, content) in messages {
                    if user.server_name() != server_name {
                        outbound += 1;
                        let device = match target {
                            Target::Device(device) => device.to_string(),
                            Target::AllDevices => "*".to_owned(),
                        };
                        let message = OutboundToDevice {
                            sender: sender.clone(),
                            target: user.clone(),
                            device,
                            event_type: event_type.clone(),
                            content,
                            message_id: message_id.clone(),
                        };
                        batch.put(&TO_DEVICE_OUTBOUND, &(user.server_name().to_string(), outbound), &message)?;
                        continue;
                    }
                    let message = ToDeviceMessage { sender: sender.clone(), event_type: event_type.clone(), content };
                    let for_appservice = appservice_users(&user);
                    queue_local(db, &mut batch, &mut position, &user, target, &message, for_appservice, &mut wakes)?;
                }
                batch.put(&COUNTERS, &COUNTER.to_owned(), &position)?;
                batch.put(&COUNTERS, &OUTBOUND_COUNTER.to_owned(), &outbound)?;
                batch.put(&TO_DEVICE_TRANSACTIONS, &txn, &())?;
                db.write(batch)?;
                // New messages: wake the recipients' syncs (here, so a dropped request cannot
                // skip it; the senders follow messages for other servers).
                notifier.wake(&wakes);
                Ok(true)
            })
            .await
    }

    /// Delivers the messages of an `m.direct_to_device` EDU from `origin` to local devices, once
    /// per (origin, message ID): the check and the record are in the same locked commit as the
    /// messages. Returns false when the message ID was already delivered. `messages` must name
    /// local users only.
    pub async fn receive(
        &self,
        origin: &ruma::ServerName,
        message_id: &str,
        sender: &UserId,
        event_type: &str,
        messages: Vec<(OwnedUserId, Target, Box<RawValue>)>,
    ) -> Result<bool> {
        let key = (origin.to_string(), message_id.to_owned());
        let (sender, event_type, notifier) = (sender.to_owned(), event_type.to_owned(), self.notifier.clone());
        let appservice_users = self.appservice_users.clone();
        let prune = self.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        self.lock
            .run(&self.db, move |db| {
                if TO_DEVICE_RECEIVED.contains(db, &key)? {
                    return Ok(false);
                }
                let mut batch = Batch::new();
                let mut position = COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0);
                let mut wakes = Vec::new();
                for (user, target, content) in messages {
                    let message = ToDeviceMessage { sender: sender.clone(), event_type: event_type.clone(), content };
                    let for_appservice = appservice_users(&user);
                    queue_local(db, &mut batch, &mut position, &user, target, &message, for_appservice, &mut wakes)?;
                }
                batch.put(&COUNTERS, &COUNTER.to_owned(), &position)?;
                let now = super::now_ms();
                batch.put(&TO_DEVICE_RECEIVED, &key, &now)?;
                if prune {
                    for (old, at) in TO_DEVICE_RECEIVED.all(db)? {
                        if at.saturating_add(RECEIVED_KEPT_MS) < now {
                            batch.delete(&TO_DEVICE_RECEIVED, &old);
                        }
                    }
                }
                db.write(batch)?;
                notifier.wake(&wakes);
                Ok(true)
            })
            .await
    }

    /// Moves up to `limit` messages waiting for other servers into the federation queue:
    /// `queue` gets them (destination and the `m.direct_to_device` EDUs, one per sender, type
    /// and message ID) with a batch deleting them here, and writes the batch with the queue
    /// entries. Returns how many messages were moved.
    pub async fn outbound_edus(&self, limit: usize) -> Result<(Vec<(String, serde_json::Value)>, Batch, usize)> {
        self.db
            .run(move |db| {
                let rows =
                    TO_DEVICE_OUTBOUND.scan_from(db, &(String::new(), 0), ScanDirection::Forward, limit, |_| true)?;
                let mut batch = Batch::new();
                // (destination, sender, type, message ID) -> user -> device -> content, in
                // queue order per destination.
                let mut edus: Vec<((String, OwnedUserId, String, String), serde_json::Value)> = Vec::new();
                for ((destination, position), message) in &rows {
                    batch.delete(&TO_DEVICE_OUTBOUND, &(destination.clone(), *position));
                    let id = (
                        destination.clone(),
                        message.sender.clone(),
                        message.event_type.clone(),
                        message.message_id.clone(),
                    );
                    let content: serde_json::Value =
                        serde_json::from_str(message.content.get()).unwrap_or(serde_json::Value::Null);
                    let index = match edus.iter().position(|(existing, _)| *existing == id) {
                        Some(index) => index,
                        None => {
                            edus.push((id, serde_json::json!({})));
                            edus.len() - 1
                        }
                    };
                    edus[index].1[message.target.as_str()][message.device.as_str()] = content;
                }
                let out = edus
                    .into_iter()
                    .map(|((destination, sender, event_type, message_id), messages)| {
                        let edu = serde_json::json!({
                            "edu_type": "m.direct_to_device",
                            "content": {
                                "sender": sender,
                                "type": event_type,
                                "message_id": message_id,
                                "messages": messages,
                            }
                        });
                        (destination, edu)
                    })
                    .collect();
                Ok((out, batch, rows.len()))
            })
            .await
    }

    /// The messages waiting for `destination` (a server name), oldest first, at most `limit`:
    /// what the federation sender will deliver.
    pub async fn outbound(&self, destination: &str, limit: usize) -> Result<Vec<(u64, OutboundToDevice)>> {
        let destination = destination.to_owned();
        self.db
            .run(move |db| {
                let rows = TO_DEVICE_OUTBOUND.scan_from(
                    db,
                    &(destination.clone(), 0),
                    ScanDirection::Forward,
                    limit,
                    |(server, _)| *server == destination,
                )?;
                Ok(rows.into_iter().map(|((_, position), message)| (position, message)).collect())
            })
            .await
    }

    /// The newest position handed out (for sync tokens).
    pub async fn current_position(&self) -> Result<u64> {
        self.db.run(Self::position_in).await
    }

    /// [`current_position`](Self::current_position), on the storage threads already.
    pub fn position_in(db: &Db) -> Result<u64> {
        Ok(COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0))
    }

    /// Up to `limit` messages for application service users after position `after`, oldest
    /// first, with their user and device; `None` for a message its device already took.
    /// Also returns the last position read.
    #[allow(clippy::type_complexity)]
    pub async fn for_appservices(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(OwnedUserId, OwnedDeviceId, ToDeviceMessage)>, u64)> {
        self.db
            .run(move |db| {
                let rows = TO_DEVICE_APPSERVICE.scan_from(
                    db,
                    &after.saturating_add(1),
                    ScanDirection::Forward,
                    limit,
                    |_| true,
                )?;
                let last = rows.last().map_or(after, |(position, _)| *position);
                let mut out = Vec::new();
                for (position, Recipient { user, device }) in rows {
                    if let Some(message) = TO_DEVICE.get(db, &(user.clone(), device.clone(), position))? {
                        out.push((user, device, message));
                    }
                }
                Ok((out, last))
            })
            .await
    }

    /// Forgets the application service list up to and including `upto` (every service has
    /// taken those messages).
    pub async fn forget_for_appservices(&self, upto: u64) -> Result<()> {
        self.db
            .run(move |db| {
                let rows = TO_DEVICE_APPSERVICE.scan_from(db, &0, ScanDirection::Forward, 10_000, |p| *p <= upto)?;
                if rows.is_empty() {
                    return Ok(());
                }
                let mut batch = Batch::new();
                for (position, _) in rows {
                    batch.delete(&TO_DEVICE_APPSERVICE, &position);
                }
                Ok(db.write(batch)?)
            })
            .await
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
        let key = (user.to_owned(), device.to_owned());
        let acknowledged = || self.acknowledged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if acknowledged().get(&key).is_some_and(|done| *done >= position) {
            return Ok(());
        }
        let (user, device) = key.clone();
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
            .await?;
        let mut acknowledged = acknowledged();
        if acknowledged.len() >= ACKNOWLEDGED_DEVICES {
            acknowledged.clear();
        }
        let done = acknowledged.entry(key).or_default();
        *done = (*done).max(position);
        Ok(())
    }
}

/// Puts a message in the inbox of the local devices `target` names, at the next positions (and
/// in the list for application services when one receives the user's messages), and the
/// devices to wake in `wakes`.
#[allow(clippy::too_many_arguments)]
fn queue_local(
    db: &Db,
    batch: &mut Batch,
    position: &mut u64,
    user: &OwnedUserId,
    target: Target,
    message: &ToDeviceMessage,
    for_appservice: bool,
    wakes: &mut Vec<WakeKey>,
) -> Result<()> {
    let devices: Vec<OwnedDeviceId> = match target {
        Target::Device(device) => vec![device],
        Target::AllDevices => DEVICES.scan_prefix(db, &(user.clone(),))?.into_iter().map(|((_, d), _)| d).collect(),
    };
    for device in devices {
        *position += 1;
        wakes.push(WakeKey::Device(user.clone(), device.clone()));
        if for_appservice {
            batch.put(&TO_DEVICE_APPSERVICE, position, &Recipient { user: user.clone(), device: device.clone() })?;
        }
        batch.put(&TO_DEVICE, &(user.clone(), device, *position), message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_user_id, user_id};
    use serde_json::value::to_raw_value;

    use super::Target;
    use crate::{config::Config, service::Services, storage::Db};

    /// Messages for users of other servers wait, durably, in the outbound queue of their
    /// server (once per transaction); local ones are delivered as before.
    #[tokio::test]
    async fn remote_messages_wait_in_the_outbound_queue_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[global]\nserver_name = \"localhost\"\ndatabase_path = \"{}\"\n", dir.path().display());
        let config = Config::from_toml(&text, "test.toml", Vec::new()).unwrap().config;
        let (alice, bob) = (user_id!("@alice:localhost"), owned_user_id!("@bob:localhost"));
        let (eve, zed) = (owned_user_id!("@eve:one.example"), owned_user_id!("@zed:two.example"));
        {
            let services = Services::build(config.clone(), Db::open(&config).unwrap()).unwrap();
            let to_device = &services.to_device;
            let messages = || {
                vec![
                    (eve.clone(), Target::Device(owned_device_id!("EVEDEVICE")), to_raw_value(&1).unwrap()),
                    (zed.clone(), Target::AllDevices, to_raw_value(&2).unwrap()),
                    (bob.clone(), Target::Device(owned_device_id!("BOBDEVICE")), to_raw_value(&3).unwrap()),
                ]
            };
            let device = owned_device_id!("ALICEDEVICE");
            assert!(to_device.send(alice, &device, "t1", "org.example.test", messages()).await.unwrap());
            assert!(!to_device.send(alice, &device, "t1", "org.example.test", messages()).await.unwrap());
            let local = to_device.pending(&bob, &owned_device_id!("BOBDEVICE"), 0, 10).await.unwrap();
            assert_eq!(local.len(), 1);
        }
        // After a restart (the queue is durable).
        let services = Services::build(config.clone(), Db::open(&config).unwrap()).unwrap();
        let one = services.to_device.outbound("one.example", 10).await.unwrap();
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!((one[0].1.target.as_str(), one[0].1.device.as_str()), ("@eve:one.example", "EVEDEVICE"));
        assert_eq!((one[0].1.sender.as_str(), one[0].1.event_type.as_str()), ("@alice:localhost", "org.example.test"));
        assert_eq!(one[0].1.content.get(), "1");
        let two = services.to_device.outbound("two.example", 10).await.unwrap();
        assert_eq!(two.len(), 1, "{two:?}");
        assert_eq!(two[0].1.device, "*");
        assert_eq!(two[0].1.message_id, one[0].1.message_id, "one message ID per request");
        assert!(services.to_device.outbound("localhost", 10).await.unwrap().is_empty());
    }
}
