//! The outbound sender: PDUs and EDUs for other servers, queued per destination in storage (so
//! they survive restarts) and delivered in `PUT /_matrix/federation/v1/send/{txnId}`
//! transactions of at most 50 PDUs and 100 EDUs.
//!
//! - **What is queued.** A follower reads the event stream after a stored cursor and queues
//!   every event this server created for the other servers that must hear of it (those with a
//!   joined member right after it, and the target of a member event; see
//!   `rooms::servers`), advancing the cursor in the same write batch. Rooms know nothing of
//!   federation: the follower is woken by the notifier every committed event already pokes,
//!   and a crash between an event and its queueing loses nothing (the cursor was not moved).
//!   EDUs follow the receipt, presence, key-change and to-device streams the same way
//!   (`outbound_edus.rs`; typing is queued as it happens), read only after the notifier's
//!   pokes count moved (a room event alone does not move it), and events other servers gave this
//!   one to pass on (`send_join`, `send_leave`) with [`Sender::relay`].
//! - **Delivery.** One worker task per destination. A transaction's ID and entries are stored
//!   before it is first sent, so every retry (after a restart too) repeats the same ID and the
//!   receiver deduplicates it; its entries are removed only once the destination answered 200.
//! - **Backoff.** After a failure the worker waits 1 s, doubling up to an hour, in memory; it
//!   retries at once when the destination is seen again ([`Sender::destination_is_up`], called
//!   when a request signed by it arrives) or when the server restarts.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Result,
    service::{Services, rooms::LocalEvent},
    storage::{
        Batch, Db,
        federation_send_tables::{OUTBOUND_CURSOR, OUTBOUND_QUEUE, OUTBOUND_TRANSACTIONS, PendingTransaction, Queued},
    },
};

/// The spec's limits on one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// The first wait after a failure, doubled with each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait before trying again after a storage failure.
const STORAGE_RETRY: Duration = Duration::from_secs(5);
/// How many stream positions the follower reads per step.
const FOLLOW_STEP: usize = 500;
/// The cursor's key in [`OUTBOUND_CURSOR`].
const CURSOR: &str = "queued";
/// How long the follower's cursor may run ahead of its stored copy while it passes only events
/// no other server gets. Storing it after every local event cost a synced write per send; a
/// crash loses at most this much of the cursor's progress, and the follower then reads those
/// events again and finds again that they go nowhere (their destinations come from the state
/// at each event, so a second read gives the same answer).
const CURSOR_STORE_INTERVAL: Duration = Duration::from_secs(1);

/// The sender's shared half: the queue and the wake-ups of the destinations' workers. Built once
/// with the services; the tasks are started by [`SenderTask::spawn`].
pub struct Sender {
    db: Db,
    server_name: OwnedServerName,
    /// The next queue sequence (above every stored one).
    sequence: AtomicU64,
    destinations: Mutex<HashMap<OwnedServerName, Arc<Destination>>>,
    /// Set once the tasks run: workers are started only then.
    running: AtomicBool,
    stop: watch::Sender<bool>,
    /// The services, set when the tasks start (weak: the services own this sender).
    services: OnceLock<Weak<Services>>,
    /// The follower's cursor as far as it has gone, and when it was last stored.
    follow_cursor: Mutex<FollowCursor>,
}

/// See [`CURSOR_STORE_INTERVAL`].
#[derive(Default)]
struct FollowCursor {
    /// Every local event up to here is queued (`None`: read the stored cursor).
    position: Option<u64>,
    stored_at: Option<Instant>,
}

/// A destination's worker and its wake-ups.
#[derive(Default)]
struct Destination {
    /// New work was queued.
    work: tokio::sync::Notify,
    /// The destination was seen up while the worker waits after a failure.
    up: tokio::sync::Notify,
    backing_off: AtomicBool,
    started: AtomicBool,
}

/// A transaction ready to send: its ID and entries (sequence, what).
struct Outgoing {
    txn_id: String,
    entries: Vec<(u64, Queued)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold plain handles: a panic elsewhere cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wait after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

impl Sender {
    /// Opens the queue: the sequence continues after the newest stored entry.
    pub fn new(db: Db, server_name: OwnedServerName) -> Result<Self> {
        let newest = OUTBOUND_QUEUE.all(&db)?.iter().map(|((_, sequence), _)| *sequence).max().unwrap_or(0);
        Ok(Self {
            db,
            server_name,
            sequence: AtomicU64::new(newest + 1),
            destinations: Mutex::new(HashMap::new()),
            running: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            services: OnceLock::new(),
            follow_cursor: Mutex::new(FollowCursor::default()),
        })
    }

    fn destination(&self, server: &ServerName) -> Arc<Destination> {
        lock(&self.destinations).entry(server.to_owned()).or_default().clone()
    }

    /// A request signed by `server` arrived: if its worker waits after a failure, it retries now.
    pub fn destination_is_up(&self, server: &ServerName) {
        let destination = lock(&self.destinations).get(server).cloned();
        if let Some(destination) = destination
            && destination.backing_off.load(Ordering::SeqCst)
        {
            destination.up.notify_one();
        }
    }

    /// Queues an EDU for `destination` (presence, typing, receipts, device lists, to-device).
    pub async fn queue_edu(self: &Arc<Self>, destination: &ServerName, edu: serde_json::Value) -> Result<()> {
        if destination == self.server_name {
            return Ok(());
        }
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        let key = (destination.to_string(), sequence);
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                batch.put(&OUTBOUND_QUEUE, &key, &Queued::Edu(edu))?;
                Ok(db.write(batch)?)
            })
            .await?;
        self.wake(destination);
        Ok(())
    }

    /// Queues EDUs, each for its destination, writing them with `batch` (what the caller
    /// records about them: a cursor, the removal from another queue) in one commit.
    pub async fn queue_edus(
        self: &Arc<Self>,
        edus: Vec<(OwnedServerName, serde_json::Value)>,
        mut batch: Batch,
    ) -> Result<()> {
        let mut touched = BTreeSet::new();
        for (destination, edu) in edus {
            if destination == self.server_name {
                continue;
            }
            let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
            batch.put(&OUTBOUND_QUEUE, &(destination.to_string(), sequence), &Queued::Edu(edu))?;
            touched.insert(destination);
        }
        self.db.run(move |db| Ok(db.write(batch)?)).await?;
        touched.iter().for_each(|destination| self.wake(destination));
        Ok(())
    }

    /// Queues an event another server gave this one to pass on (a join through `send_join`, a
    /// leave through `send_leave`: the spec makes the resident server send them to the room) for
    /// the servers joined to the room now, except `origin` and this one.
    pub async fn relay(
        self: &Arc<Self>,
        rooms: &crate::service::rooms::Rooms,
        room_id: &ruma::RoomId,
        event_id: &ruma::EventId,
        origin: &ServerName,
    ) -> Result<()> {
        let destinations: Vec<OwnedServerName> =
            rooms.servers_in_room(room_id).await?.into_iter().filter(|server| server != origin).collect();
        if destinations.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for destination in &destinations {
            let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
            batch.put(&OUTBOUND_QUEUE, &(destination.to_string(), sequence), &Queued::Pdu(event_id.to_string()))?;
        }
        self.db.run(move |db| Ok(db.write(batch)?)).await?;
        destinations.iter().for_each(|destination| self.wake(destination));
        Ok(())
    }

    /// Wakes (or starts, once the tasks run) the worker of `destination`.
    fn wake(self: &Arc<Self>, destination: &ServerName) {
        let state = self.destination(destination);
        state.work.notify_one();
        if self.running.load(Ordering::SeqCst) && !state.started.swap(true, Ordering::SeqCst) {
            tracing::debug!(%destination, "starting the federation sender for a destination");
            tokio::spawn(worker(self.clone(), destination.to_owned(), state, self.stop.subscribe()));
        }
    }

    /// Queues local events for their destinations and moves the cursor to `upto`, in one batch.
    /// Returns the destinations that got work.
    async fn queue_events(&self, events: Vec<LocalEvent>, upto: u64) -> Result<BTreeSet<OwnedServerName>> {
        let mut batch = Batch::new();
        let mut touched = BTreeSet::new();
        for event in events {
            for destination in event.destinations {
                let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
                batch.put(
                    &OUTBOUND_QUEUE,
                    &(destination.to_string(), sequence),
                    &Queued::Pdu(event.event_id.to_string()),
                )?;
                touched.insert(destination);
            }
        }
        let store = !touched.is_empty()
            || lock(&self.follow_cursor).stored_at.is_none_or(|at| at.elapsed() >= CURSOR_STORE_INTERVAL);
        if store {
            batch.put(&OUTBOUND_CURSOR, &CURSOR.to_owned(), &upto)?;
            self.db.run(move |db| Ok(db.write(batch)?)).await?;
        }
        let mut cursor = lock(&self.follow_cursor);
        cursor.position = Some(upto);
        if store {
            cursor.stored_at = Some(Instant::now());
        }
        Ok(touched)
    }

    /// Stores the follower's cursor if it ran ahead of its stored copy.
    async fn store_follow_cursor(&self) -> Result<()> {
        let Some(position) = lock(&self.follow_cursor).position else { return Ok(()) };
        let mut batch = Batch::new();
        batch.put(&OUTBOUND_CURSOR, &CURSOR.to_owned(), &position)?;
        self.db.run(move |db| Ok(db.write(batch)?)).await
    }

    /// The transaction to (re)send to `destination`: the stored one being attempted, or a new
    /// one of its oldest entries, stored before it is sent; `None` when nothing is queued.
    async fn next_transaction(&self, destination: &ServerName) -> Result<Option<Outgoing>> {
        let destination = destination.to_string();
        self.db
            .run(move |db| {
                if let Some(pending) = OUTBOUND_TRANSACTIONS.get(db, &destination)? {
                    let mut entries = Vec::new();
                    for sequence in &pending.sequences {
                        if let Some(item) = OUTBOUND_QUEUE.get(db, &(destination.clone(), *sequence))? {
                            entries.push((*sequence, item));
                        }
                    }
                    if !entries.is_empty() {
                        return Ok(Some(Outgoing { txn_id: pending.txn_id, entries }));
                    }
                }
                let start = (destination.clone(), 0u64);
                let queued = OUTBOUND_QUEUE.scan_from(
                    db,
                    &start,
                    crate::storage::ScanDirection::Forward,
                    MAX_PDUS + MAX_EDUS,
                    |(d, _)| *d == destination,
                )?;
                let (mut pdus, mut edus) = (0, 0);
                let mut entries = Vec::new();
                for ((_, sequence), item) in queued {
                    let count = if matches!(item, Queued::Pdu(_)) { &mut pdus } else { &mut edus };
                    let limit = if matches!(item, Queued::Pdu(_)) { MAX_PDUS } else { MAX_EDUS };
                    if *count == limit {
                        break;
                    }
                    *count += 1;
                    entries.push((sequence, item));
                }
                let mut batch = Batch::new();
                if entries.is_empty() {
                    batch.delete(&OUTBOUND_TRANSACTIONS, &destination);
                    db.write(batch)?;
                    return Ok(None);
                }
                // Unique across restarts and emptied queues, so a receiver that saw an earlier
                // transaction never mistakes this one for it.
                let txn_id =
                    format!("{}.{}.{:016x}", crate::service::now_ms(), entries[0].0, rand::thread_rng().r#gen::<u64>());
                let pending =
                    PendingTransaction { txn_id: txn_id.clone(), sequences: entries.iter().map(|(s, _)| *s).collect() };
                batch.put(&OUTBOUND_TRANSACTIONS, &destination, &pending)?;
                db.write(batch)?;
                Ok(Some(Outgoing { txn_id, entries }))
            })
            .await
    }

    /// The destination took the transaction: its entries leave the queue.
    async fn complete(&self, destination: &ServerName, sent: &Outgoing) -> Result<()> {
        let destination = destination.to_string();
        let sequences: Vec<u64> = sent.entries.iter().map(|(s, _)| *s).collect();
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                for sequence in sequences {
                    batch.delete(&OUTBOUND_QUEUE, &(destination.clone(), sequence));
                }
                batch.delete(&OUTBOUND_TRANSACTIONS, &destination);
                Ok(db.write(batch)?)
            })
            .await
    }

    /// The destinations with queued entries (to start their workers at start-up).
    async fn destinations_with_work(&self) -> Result<BTreeSet<OwnedServerName>> {
        self.db
            .run(|db| {
                Ok(OUTBOUND_QUEUE
                    .all(db)?
                    .into_iter()
                    .filter_map(|((destination, _), _)| OwnedServerName::try_from(destination).ok())
                    .collect())
            })
            .await
    }

    /// How many entries are queued for `destination` (tests, admin).
    pub async fn queued_for(&self, destination: &ServerName) -> Result<usize> {
        let prefix = (destination.to_string(),);
        self.db.run(move |db| Ok(OUTBOUND_QUEUE.scan_prefix(db, &prefix)?.len())).await
    }
}

/// The running sender: the event follower and the destinations' workers.
pub struct SenderTask {
    sender: Arc<Sender>,
    task: Option<JoinHandle<()>>,
}

impl SenderTask {
    /// Starts the follower and a worker for each destination with queued work (when federation
    /// is allowed; otherwise nothing runs and nothing is queued).
    pub fn spawn(services: Arc<Services>) -> Self {
        let sender = services.federation.sender.clone();
        if !services.config.allow_federation {
            return Self { sender, task: None };
        }
        let _ = sender.services.set(Arc::downgrade(&services));
        sender.running.store(true, Ordering::SeqCst);
        let task = tokio::spawn(follow(services, sender.stop.subscribe()));
        Self { sender, task: Some(task) }
    }

    /// Stops the follower and the workers (a transaction in flight is abandoned and sent again,
    /// with the same ID, after the next start).
    pub async fn stop(self) {
        let _ = self.sender.stop.send(true);
        if let Some(task) = self.task
            && tokio::time::timeout(Duration::from_secs(2), task).await.is_err()
        {
            tracing::warn!("federation sender did not stop in time");
        }
    }
}

/// Waits `duration`, or until the sender stops (then returns false).
async fn pause(duration: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = stopped.wait_for(|stop| *stop) => false,
    }
}

/// The follower: queues local events as the event stream moves; when stopped, stores how far
/// it got.
async fn follow(services: Arc<Services>, stopped: watch::Receiver<bool>) {
    let sender = services.federation.sender.clone();
    follow_until_stopped(services, stopped).await;
    if let Err(error) = sender.store_follow_cursor().await {
        tracing::warn!(%error, "cannot store the federation queue's cursor");
    }
}

async fn follow_until_stopped(services: Arc<Services>, mut stopped: watch::Receiver<bool>) {
    let sender = services.federation.sender.clone();
    match sender.destinations_with_work().await {
        Ok(destinations) => destinations.iter().for_each(|destination| sender.wake(destination)),
        Err(error) => tracing::warn!(%error, "cannot read the federation queue"),
    }
    let mut positions = services.notifier.subscribe();
    // The pokes count whose changes are queued: most wake-ups are room events alone, and need
    // no read of the other streams.
    let mut edus_queued_at = None;
    loop {
        if *stopped.borrow() {
            return;
        }
        // Read before queueing: a poke during it moves the count on and wakes this loop again.
        let pokes = positions.borrow_and_update().pokes;
        let queued = match queue_new_events(&services, &sender).await {
            Ok(()) if edus_queued_at == Some(pokes) => Ok(()),
            Ok(()) => {
                super::outbound_edus::queue_changes(&services, &sender).await.map(|()| edus_queued_at = Some(pokes))
            }
            Err(error) => Err(error),
        };
        if let Err(error) = queued {
            tracing::warn!(%error, "queueing events for other servers failed");
            if !pause(STORAGE_RETRY, &mut stopped).await {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = positions.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Queues the local events committed since the cursor. A new database (or one from before the
/// sender existed) starts at the current position: history is not sent.
async fn queue_new_events(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    let upto = services.rooms.current_position();
    let known = lock(&sender.follow_cursor).position;
    let stored = match known {
        Some(position) => Some(position),
        None => sender.db.run(|db| Ok(OUTBOUND_CURSOR.get(db, &CURSOR.to_owned())?)).await?,
    };
    let mut cursor = match stored {
        Some(cursor) => cursor,
        None => {
            sender.queue_events(Vec::new(), upto).await?;
            upto
        }
    };
    while cursor < upto {
        let (events, last) = services.rooms.local_events_for_servers(cursor, upto, FOLLOW_STEP).await?;
        let touched = sender.queue_events(events, last).await?;
        touched.iter().for_each(|destination| sender.wake(destination));
        cursor = last;
    }
    Ok(())
}

/// One destination's worker: sends its transactions one at a time, in queue order.
async fn worker(
    sender: Arc<Sender>,
    destination: OwnedServerName,
    state: Arc<Destination>,
    mut stopped: watch::Receiver<bool>,
) {
    let services_gone = || tracing::debug!(%destination, "federation sender stopped");
    let mut failures = 0u32;
    loop {
        if *stopped.borrow() {
            return services_gone();
        }
        let outgoing = match sender.next_transaction(&destination).await {
            Ok(outgoing) => outgoing,
            Err(error) => {
                tracing::warn!(%destination, %error, "cannot read the federation queue");
                if !pause(STORAGE_RETRY, &mut stopped).await {
                    return services_gone();
                }
                continue;
            }
        };
        let Some(outgoing) = outgoing else {
            tokio::select! {
                _ = state.work.notified() => continue,
                _ = stopped.wait_for(|stop| *stop) => return services_gone(),
            }
        };
        let delivered = tokio::select! {
            delivered = deliver(&sender, &destination, &outgoing) => delivered,
            _ = stopped.wait_for(|stop| *stop) => return services_gone(),
        };
        match delivered {
            Ok(()) => {
                failures = 0;
                if let Err(error) = sender.complete(&destination, &outgoing).await {
                    tracing::warn!(%destination, %error, "cannot remove a delivered transaction from the queue");
                    if !pause(STORAGE_RETRY, &mut stopped).await {
                        return services_gone();
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::info!(%destination, txn = %outgoing.txn_id, %error, ?wait, "transaction not delivered; retrying later");
                state.backing_off.store(true, Ordering::SeqCst);
                let go_on = tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = state.up.notified() => {
                        tracing::debug!(%destination, "destination is up again; retrying now");
                        true
                    }
                    _ = stopped.wait_for(|stop| *stop) => false,
                };
                state.backing_off.store(false, Ordering::SeqCst);
                if !go_on {
                    return services_gone();
                }
            }
        }
    }
}

/// Sends one transaction; `Ok` once the destination answered 200. PDUs no longer stored (or
/// stored as rejected) are left out.
async fn deliver(sender: &Arc<Sender>, destination: &ServerName, outgoing: &Outgoing) -> Result<(), String> {
    let services = sender.services.get().and_then(Weak::upgrade).ok_or("the server is stopping")?;
    let mut request = send_transaction_message::v1::Request::new(
        OwnedTransactionId::from(outgoing.txn_id.as_str()),
        sender.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    for (_, item) in &outgoing.entries {
        match item {
            Queued::Pdu(event_id) => {
                let Ok(event_id) = ruma::OwnedEventId::try_from(event_id.as_str()) else { continue };
                let json = services.rooms.pdu_json(&event_id).await.map_err(|e| e.to_string())?;
                if let Some(json) = json {
                    request.pdus.push(serde_json::value::to_raw_value(&json).map_err(|e| e.to_string())?);
                }
            }
            Queued::Edu(edu) => {
                let raw = serde_json::value::to_raw_value(edu).map_err(|e| e.to_string())?;
                request.edus.push(Raw::from_json(raw));
            }
        }
    }
    if request.pdus.is_empty() && request.edus.is_empty() {
        return Ok(());
    }
    let (pdus, edus) = (request.pdus.len(), request.edus.len());
    let response = services.federation.client.send(destination, request).await.map_err(|e| e.to_string())?;
    tracing::debug!(%destination, txn = %outgoing.txn_id, pdus, edus, "transaction delivered");
    for (event_id, result) in response.pdus {
        if let Err(error) = result {
            tracing::debug!(%destination, %event_id, %error, "the destination refused an event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_an_hour() {
        let waits: Vec<u64> = (1..=14).map(|failures| backoff(failures).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
