//! Transactions to application services: one task per service with a URL, started with the
//! server and stopped on shutdown, follows the event stream from the service's stored cursor
//! (`appservice_tables`). It gathers up to [`BATCH`] events the service is interested in,
//! stores them as the pending transaction together with the moved cursor (one write), then
//! `PUT`s `/_matrix/app/v1/transactions/{txnId}` until the service takes it (2xx): failures are
//! retried with the same ID and events, with exponential backoff from half a second up to
//! `appservice_max_backoff_secs`. Each service has its own task, so a slow or unreachable
//! service delays only itself; a new service starts at the stream's current position. Nothing
//! is queued on disk for a service besides its cursor and one pending transaction: its backlog
//! is the event stream itself, bounded by `appservice_max_backlog_events` (a service further
//! behind loses its oldest events, with a warning). Services with `receive_ephemeral` also get
//! typing, receipts and presence in their transactions (`ephemeral.rs`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{OwnedRoomId, OwnedTransactionId, api::appservice::event::push_events, serde::Raw};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    AppService,
    ephemeral::{self, EphemeralCursor},
    interested,
    query::Answer,
};
use crate::{
    Error, Result,
    service::{Services, accounts::AccountKind},
    storage::appservice_tables::{APPSERVICE_SENDERS, PendingTxn, SenderRecord},
};

/// The most events in one transaction.
const BATCH: usize = 100;
/// Stream entries read per step.
const SCAN: usize = 1000;
/// The first wait before a retry; it doubles with every failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The running senders; [`stop`](Self::stop) ends them.
pub struct AppServiceSenders {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AppServiceSenders {
    /// Creates each service's sender user if missing, and starts a task per service with a URL.
    pub async fn spawn(services: Arc<Services>) -> Result<Self> {
        for sender in services.appservices.senders() {
            if !services.accounts.exists(&sender).await? {
                services.accounts.create(&sender, None, AccountKind::User).await?;
                tracing::info!(user = %sender, "created application service sender user");
            }
        }
        let (stop, stopped) = watch::channel(false);
        let tasks = services
            .appservices
            .all()
            .iter()
            .filter(|service| service.registration.url.is_some())
            .map(|service| tokio::spawn(run(services.clone(), service.clone(), stopped.clone())))
            .collect();
        Ok(Self { stop, tasks })
    }

    /// Stops the senders (a transaction in flight stays stored and is sent after the next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                tracing::warn!("application service sender did not stop in time");
            }
        }
    }
}

async fn run(services: Arc<Services>, service: AppService, mut stopped: watch::Receiver<bool>) {
    let mut stream = services.notifier.subscribe();
    let mut ephemeral = loop {
        match EphemeralCursor::now(&services).await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::warn!(appservice = service.id(), %error, "cannot read the ephemeral streams");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let mut failures: u32 = 0;
    let max_backoff = Duration::from_secs(services.config.appservice_max_backoff_secs.max(1));
    loop {
        if *stopped.borrow() {
            return;
        }
        let wait = match step(&services, &service, &mut ephemeral).await {
            Ok(Step::Again) => {
                failures = 0;
                continue;
            }
            Ok(Step::Idle) => {
                failures = 0;
                None
            }
            Ok(Step::Failed(why)) => {
                failures = failures.saturating_add(1);
                let backoff = FIRST_BACKOFF.saturating_mul(1 << failures.min(16)).min(max_backoff);
                tracing::warn!(appservice = service.id(), failures, ?backoff, "transaction not delivered: {why}");
                Some(backoff)
            }
            Err(error) => {
                tracing::warn!(appservice = service.id(), %error, "application service sender step failed");
                Some(Duration::from_secs(5))
            }
        };
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped.changed() => return,
            // Only an idle sender waits for new events; a failing one waits for its backoff.
            changed = stream.changed(), if wait.is_none() => if changed.is_err() { return },
            () = sleep => {}
        }
    }
}

enum Step {
    /// Something was done; look again at once.
    Again,
    /// Nothing to send until new events come.
    Idle,
    /// The pending transaction was not taken.
    Failed(String),
}

async fn load(services: &Services, id: &str) -> Result<Option<SenderRecord>> {
    let id = id.to_owned();
    services.db.run(move |db| Ok(APPSERVICE_SENDERS.get(db, &id)?)).await
}

async fn store(services: &Services, id: &str, record: SenderRecord) -> Result<()> {
    let id = id.to_owned();
    services
        .db
        .run(move |db| {
            let mut batch = crate::storage::Batch::new();
            batch.put(&APPSERVICE_SENDERS, &id, &record)?;
            Ok(db.write(batch)?)
        })
        .await
}

/// Sends the pending transaction, or builds the next one from the stream.
async fn step(services: &Services, service: &AppService, ephemeral: &mut EphemeralCursor) -> Result<Step> {
    let upto = services.rooms.current_position();
    let Some(mut record) = load(services, service.id()).await? else {
        // A new service: events from now on.
        let to_device_cursor = services.to_device.current_position().await?;
        store(services, service.id(), SenderRecord { cursor: upto, to_device_cursor, ..Default::default() }).await?;
        return Ok(Step::Again);
    };
    if let Some(pending) = &record.pending {
        return match send(services, service, pending).await {
            Answer::Ok => {
                let took_to_device = !pending.to_device.is_empty();
                record.pending = None;
                store(services, service.id(), record).await?;
                if took_to_device {
                    forget_taken_to_device(services).await?;
                }
                Ok(Step::Again)
            }
            Answer::Status(status) => Ok(Step::Failed(format!("the service answered {status}"))),
            Answer::Failed(why) => Ok(Step::Failed(why)),
        };
    }
    // Whether a room has a joined member the service wants, asked once per room and step.
    let mut member_rooms: HashMap<OwnedRoomId, bool> = HashMap::new();
    let edus = if service.registration.receive_ephemeral {
        ephemeral::collect(services, service, ephemeral, &mut member_rooms).await?
    } else {
        Vec::new()
    };
    let (to_device, to_device_last) = if service.registration.receive_ephemeral {
        to_device_messages(services, service, record.to_device_cursor).await?
    } else {
        (Vec::new(), record.to_device_cursor)
    };
    if record.cursor >= upto && edus.is_empty() && to_device_last == record.to_device_cursor {
        return Ok(Step::Idle);
    }
    record.to_device_cursor = to_device_last;
    // A service far behind (down for long) loses its oldest events rather than holding the
    // whole server's history for itself.
    let max_backlog = services.config.appservice_max_backlog_events.max(1);
    if upto.saturating_sub(record.cursor) > max_backlog {
        let skipped_to = upto - max_backlog;
        tracing::warn!(
            appservice = service.id(),
            behind = upto - record.cursor,
            max_backlog,
            "application service is too far behind; the oldest events are dropped for it"
        );
        record.cursor = skipped_to;
    }
    let (events, last) = if record.cursor < upto {
        services.rooms.stream_events(record.cursor, upto, SCAN).await?
    } else {
        (Vec::new(), record.cursor)
    };
    let mut batch = Vec::new();
    let mut cursor = last;
    for event in events {
        if !interested(service, &event)
            && !ephemeral::room_wanted(services, service, &event.pdu.room_id, &mut member_rooms).await?
        {
            continue;
        }
        batch.push(event.pdu.to_client_event());
        if batch.len() == BATCH {
            cursor = event.position;
            break;
        }
    }
    record.cursor = cursor.max(record.cursor);
    if !batch.is_empty() || !edus.is_empty() || !to_device.is_empty() {
        let txn_id = record.next_txn.to_string();
        record.pending = Some(PendingTxn { txn_id, events: batch, ephemeral: edus, to_device });
        record.next_txn += 1;
    }
    store(services, service.id(), record).await?;
    Ok(Step::Again)
}

/// The to-device messages after `cursor` for the service's users (MSC4203), as the
/// transaction carries them, and the last position read.
async fn to_device_messages(
    services: &Services,
    service: &AppService,
    cursor: u64,
) -> Result<(Vec<serde_json::Value>, u64)> {
    let (messages, last) = services.to_device.for_appservices(cursor, BATCH).await?;
    let events = messages
        .into_iter()
        .filter(|(user, _, _)| super::wants_user(service, user.as_str()))
        .map(|(user, device, message)| {
            serde_json::json!({
                "type": message.event_type,
                "sender": message.sender,
                "content": message.content,
                "to_user_id": user,
                "to_device_id": device,
            })
        })
        .collect();
    Ok((events, last))
}

/// Forgets the to-device list for services up to where every service that reads it is.
async fn forget_taken_to_device(services: &Services) -> Result<()> {
    let mut upto = u64::MAX;
    for other in services.appservices.all().iter().filter(|s| s.registration.receive_ephemeral) {
        // A transaction in flight holds a copy of what it carries; a service not started yet
        // has read nothing (and starts at the newest position).
        match load(services, other.id()).await? {
            Some(record) => upto = upto.min(record.to_device_cursor),
            None => return Ok(()),
        }
    }
    services.to_device.forget_for_appservices(upto).await
}

/// Values as the raw JSON a request carries.
fn raws<T>(values: &[serde_json::Value]) -> serde_json::Result<Vec<Raw<T>>> {
    values.iter().map(|value| serde_json::value::to_raw_value(value).map(Raw::from_json)).collect()
}

async fn send(services: &Services, service: &AppService, pending: &PendingTxn) -> Answer {
    let (events, ephemeral, to_device) =
        match (raws(&pending.events), raws(&pending.ephemeral), raws(&pending.to_device)) {
            (Ok(events), Ok(ephemeral), Ok(to_device)) => (events, ephemeral, to_device),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                return Answer::Failed(Error::internal(format!("cannot serialise a transaction: {error}")).to_string());
            }
        };
    let mut request = push_events::v1::Request::new(OwnedTransactionId::from(pending.txn_id.as_str()), events);
    request.ephemeral = ephemeral;
    request.to_device = to_device;
    services.appservices.call(service, request).await
}
