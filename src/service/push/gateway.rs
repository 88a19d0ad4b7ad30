//! Delivery to push gateways: one sender task, started with the server and stopped on
//! shutdown, works through the durable push queue (entries written in the event's own batch,
//! so nothing is lost across restarts) oldest first. For each queued notification it POSTs
//! `/_matrix/push/v1/notify` (ruma's push gateway types) to every `http` pusher of the user.
//! Network errors and 5xx answers are retried with exponential backoff (from half a second,
//! capped by `push_max_backoff_secs`) until `push_give_up_secs` after the event; other 4xx
//! answers are not retried; pushkeys the gateway lists in `rejected` are removed.
//!
//! Every request goes through the push address guard (`push_ip_range_denylist`/`allowlist`):
//! the gateway's host is resolved and checked again for each delivery and the connection pinned
//! to the checked address; redirects are not followed (a 3xx counts as a refusal), and at most
//! `MAX_RESPONSE_BYTES` of an answer are read.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::{
        IncomingResponseExt, OutgoingRequestExt,
        client::push::PusherKind,
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, PusherData, Request, Response,
        },
    },
    events::{StateEventType, TimelineEventType},
    push::{Action, PushFormat},
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::{counts::rooms_with_unread, pushers::StoredPusher};
use crate::{
    Error, Result,
    service::{
        Services,
        address_guard::{AddressGuard, GuardError},
        now_ms,
        rooms::Pdu,
    },
    storage::{
        Batch, ScanDirection,
        push_tables::{NOTIFICATIONS, NotificationRecord, PUSH_QUEUE, ROOM_DEFAULT_NOTIFICATIONS},
    },
};

/// The first wait before a retry; it doubles with every failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one request to a gateway may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Queue entries looked at per pass.
const PASS: usize = 100;
/// The most of a gateway's answer that is read (its `rejected` list is all we need).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The running sender; [`stop`](Self::stop) ends it.
pub struct GatewaySender {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GatewaySender {
    /// Starts the sender task.
    pub fn spawn(services: Arc<Services>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(services, stopped));
        Self { stop, task }
    }

    /// Stops the sender and waits for it (a delivery in progress is abandoned; its queue entry
    /// stays and is sent after the next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(2), self.task).await.is_err() {
            tracing::warn!("push sender did not stop in time");
        }
    }
}

/// Retry state of one queue entry (in memory: after a restart, retries start over).
#[derive(Default)]
struct Retry {
    failures: u32,
    next_at: Option<Instant>,
    /// Pushers (app ID, pushkey) that already took this notification.
    delivered: HashSet<(String, String)>,
}

async fn run(services: Arc<Services>, mut stopped: watch::Receiver<bool>) {
    let mut retries: HashMap<(u64, String), Retry> = HashMap::new();
    let mut sweep = Sweep::default();
    loop {
        let next = match pass(&services, &mut retries, &mut sweep).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "push delivery pass failed");
                Some(Instant::now() + Duration::from_secs(5))
            }
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped.changed() => return,
            () = services.push.wake.notified() => {}
            () = sleep => {}
        }
    }
}

/// Where a sweep through the queue is, [`PASS`] entries at a time: each pass goes on after the
/// previous one, so entries waiting for a retry never hide the ones behind them, and a queue
/// full of entries in backoff is not scanned again before one is due.
#[derive(Default)]
struct Sweep {
    /// The last entry of the previous pass, when the sweep is not finished.
    after: Option<(u64, String)>,
    /// The earliest retry due among the entries swept so far.
    earliest: Option<Instant>,
}

/// Sends every due queue entry of the next [`PASS`] once; returns when the next pass is due
/// (`None`: when woken).
async fn pass(
    services: &Services,
    retries: &mut HashMap<(u64, String), Retry>,
    sweep: &mut Sweep,
) -> Result<Option<Instant>> {
    let after = sweep.after.clone();
    // Only notifications of events readers may see: a deferred write's rows are in the queue
    // before its sync makes the event visible (see `storage/group_commit.rs`), and the sync
    // wakes this loop again.
    let committed = services.rooms.current_position();
    let entries = services
        .db
        .run(move |db| {
            let start = after.clone().unwrap_or((0, String::new()));
            Ok(PUSH_QUEUE.scan_from(db, &start, ScanDirection::Forward, PASS + 1, |_| true)?)
        })
        .await?;
    // The scan starts at the previous pass's last entry (inclusive); skip it.
    let entries: Vec<_> = entries
        .into_iter()
        .take_while(|(key, _)| key.0 <= committed)
        .filter(|(key, _)| sweep.after.as_ref() != Some(key))
        .take(PASS)
        .collect();
    let full_pass = entries.len() == PASS;
    sweep.after = if full_pass { entries.last().map(|(key, _)| key.clone()) } else { None };
    let give_up_ms = services.config.push_give_up_secs.saturating_mul(1000);
    let max_backoff = Duration::from_secs(services.config.push_max_backoff_secs.max(1));
    let mut next: Option<Instant> = None;
    let mut done = Vec::new();
    for (key, entry) in entries {
        if now_ms().saturating_sub(entry.queued_at) > give_up_ms {
            tracing::warn!(user = %key.1, position = key.0, "push notification not delivered in time; dropped");
            done.push(key);
            continue;
        }
        let retry = retries.entry(key.clone()).or_default();
        if let Some(at) = retry.next_at
            && at > Instant::now()
        {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        if deliver(services, (key.0, &key.1, entry.room), &mut retry.delivered).await? {
            done.push(key);
        } else {
            let backoff = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(retry.failures)).min(max_backoff);
            retry.failures = retry.failures.saturating_add(1);
            let at = Instant::now() + backoff;
            retry.next_at = Some(at);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    if !done.is_empty() {
        for key in &done {
            retries.remove(key);
        }
        services
            .db
            .run(move |db| {
                let mut batch = Batch::new();
                for key in &done {
                    batch.delete(&PUSH_QUEUE, key);
                }
                Ok(db.write(batch)?)
            })
            .await?;
    }
    if let Some(at) = next {
        sweep.earliest = Some(sweep.earliest.map_or(at, |e| e.min(at)));
    }
    // Go on with the sweep at once; at its end, wait for the earliest retry it saw.
    Ok(if full_pass { Some(Instant::now()) } else { sweep.earliest.take() })
}

/// Sends one notification to the user's http pushers that have not had it yet. `Ok(true)` when
/// nothing is left to retry.
async fn deliver(
    services: &Services,
    (position, user, room): (u64, &str, Option<OwnedRoomId>),
    delivered: &mut HashSet<(String, String)>,
) -> Result<bool> {
    let Ok(user) = OwnedUserId::try_from(user) else { return Ok(true) };
    let key = (user.clone(), position);
    // The user's own notification if they have one, else the room's outcome they shared.
    let record = services
        .db
        .run(move |db| match NOTIFICATIONS.get(db, &key)? {
            Some(own) => Ok(Some(own)),
            None => match room {
                Some(room) => Ok(ROOM_DEFAULT_NOTIFICATIONS.get(db, &(room, position))?),
                None => Ok(None),
            },
        })
        .await?;
    let Some(record) = record else { return Ok(true) };
    let Ok(event_id) = OwnedEventId::try_from(record.event_id.as_str()) else { return Ok(true) };
    let Some(event) = services.rooms.event_for(&user, &event_id).await? else { return Ok(true) };
    let pushers: Vec<StoredPusher> = services.push.pushers(&user).await?;
    let unread = rooms_with_unread(services, &user).await?;
    let names = Names::of(services, &event.pdu).await?;
    let mut all_done = true;
    let mut rejected = Vec::new();
    for stored in pushers {
        let PusherKind::Http(http) = &stored.pusher.kind else { continue };
        let ids = (stored.pusher.ids.app_id.clone(), stored.pusher.ids.pushkey.clone());
        if delivered.contains(&ids) {
            continue;
        }
        let notification = notification_for(&record, &event.pdu, &user, &stored, unread, &names)?;
        match send(&services.push.guard, &http.url, notification).await {
            Sent::Accepted(rejected_keys) => {
                if rejected_keys.contains(&ids.1) {
                    rejected.push(ids.clone());
                }
                delivered.insert(ids);
            }
            Sent::Refused(status) => {
                tracing::warn!(%status, app_id = %ids.0, "push gateway refused a notification; not retried");
                delivered.insert(ids);
            }
            Sent::NotAllowed(why) => {
                tracing::warn!(%why, app_id = %ids.0, "push gateway address not allowed; not sent");
                delivered.insert(ids);
            }
            Sent::Failed(error) => {
                tracing::info!(%error, app_id = %ids.0, "push gateway unreachable; will retry");
                all_done = false;
            }
        }
    }
    if !rejected.is_empty() {
        tracing::info!(user = %user, count = rejected.len(), "removing pushkeys the push gateway rejected");
        services.push.remove_rejected(&user, rejected).await?;
    }
    Ok(all_done)
}

/// The display names a full-format notification carries.
struct Names {
    sender: Option<String>,
    room: Option<String>,
}

impl Names {
    async fn of(services: &Services, pdu: &Pdu) -> Result<Self> {
        let content_field = |pdu: Option<Pdu>, field: &str| {
            pdu.and_then(|pdu| pdu.content_value()[field].as_str().map(str::to_owned)).filter(|s| !s.is_empty())
        };
        let rooms = &services.rooms;
        let member = rooms.state_event(&pdu.room_id, &StateEventType::RoomMember, pdu.sender.as_str()).await?;
        let name = rooms.state_event(&pdu.room_id, &StateEventType::RoomName, "").await?;
        Ok(Self { sender: content_field(member, "displayname"), room: content_field(name, "name") })
    }
}

/// The notify request for one pusher.
fn notification_for(
    record: &NotificationRecord,
    pdu: &Pdu,
    user: &UserId,
    stored: &StoredPusher,
    unread: u64,
    names: &Names,
) -> Result<Notification> {
    let PusherKind::Http(http) = &stored.pusher.kind else {
        return Err(Error::internal("not an http pusher"));
    };
    let mut device = Device::new(stored.pusher.ids.app_id.clone(), stored.pusher.ids.pushkey.clone());
    device.pushkey_ts = Some(ruma::SecondsSinceUnixEpoch(UInt::try_from(stored.pushkey_ts).unwrap_or(UInt::MAX)));
    // `From<HttpPusherData>` keeps `format` and the other data fields, never `url`.
    device.data = PusherData::from(http.clone());
    device.tweaks = record
        .actions
        .iter()
        .filter_map(|a| if let Action::SetTweak(t) = a { Some(t.clone()) } else { None })
        .collect();
    let mut notification = Notification::new(vec![device]);
    notification.event_id = Some(pdu.event_id.clone());
    notification.room_id = Some(pdu.room_id.clone());
    notification.counts = NotificationCounts::new(UInt::try_from(unread).unwrap_or(UInt::MAX), UInt::MIN);
    // Synapse's rule: highlights and messages (and calls) are urgent, the rest may wait.
    let urgent = record.highlight
        || matches!(
            pdu.kind,
            TimelineEventType::RoomMessage | TimelineEventType::RoomEncrypted | TimelineEventType::CallInvite
        );
    notification.prio = if urgent { NotificationPriority::High } else { NotificationPriority::Low };
    if http.format != Some(PushFormat::EventIdOnly) {
        notification.event_type = Some(pdu.kind.clone());
        notification.sender = Some(pdu.sender.clone());
        notification.user_is_target = pdu.state_key.as_deref() == Some(user.as_str());
        notification.content = Some(pdu.content.clone());
        notification.sender_display_name = names.sender.clone();
        notification.room_name = names.room.clone();
    }
    Ok(notification)
}

enum Sent {
    /// 2xx, with the pushkeys the gateway rejected.
    Accepted(Vec<String>),
    /// A 4xx other than 429: retrying would not help.
    Refused(http::StatusCode),
    /// A network error, timeout, 429 or 5xx: worth retrying.
    Failed(String),
    /// The gateway's address is one push gateways may not be reached at: not retried.
    NotAllowed(String),
}

/// A client for one request to `url`: no proxy, no redirects, pinned to an address the guard
/// allows.
async fn client_for(guard: &AddressGuard, url: &str) -> Result<reqwest::Client, Sent> {
    let url = reqwest::Url::parse(url).map_err(|_| Sent::Refused(http::StatusCode::BAD_REQUEST))?;
    let builder =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).no_proxy();
    let builder = guard.pin(builder, &url).await.map_err(|error| match error {
        GuardError::Resolve(why) => Sent::Failed(why),
        GuardError::Forbidden(why) | GuardError::InvalidUrl(why) => Sent::NotAllowed(why),
    })?;
    builder.build().map_err(|e| Sent::Failed(format!("cannot build the HTTP client: {e}")))
}

async fn send(guard: &AddressGuard, url: &str, notification: Notification) -> Sent {
    // Ruma builds the body; the request goes to the pusher's URL exactly as the client gave it.
    let body = match Request::new(notification).try_into_http_request::<Vec<u8>>("http://gateway", (), ()) {
        Ok(request) => request.into_body(),
        Err(error) => return Sent::Failed(format!("cannot build the request: {error}")),
    };
    let client = match client_for(guard, url).await {
        Ok(client) => client,
        Err(sent) => return sent,
    };
    let mut response =
        match client.post(url).header(http::header::CONTENT_TYPE, "application/json").body(body).send().await {
            Ok(response) => response,
            Err(error) => return Sent::Failed(error.without_url().to_string()),
        };
    let status = response.status();
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        return Sent::Failed(format!("status {status}"));
    }
    if !status.is_success() {
        return Sent::Refused(status);
    }
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_RESPONSE_BYTES => bytes.extend_from_slice(&chunk),
            // Too long to be a gateway's answer: it took the notification; the `rejected` list
            // is lost.
            Ok(Some(_)) => return Sent::Accepted(Vec::new()),
            Ok(None) => break,
            Err(error) => return Sent::Failed(error.without_url().to_string()),
        }
    }
    let parsed = http::Response::builder()
        .status(status)
        .body(bytes.as_slice())
        .map_err(|e| e.to_string())
        .and_then(|r| Response::try_from_http_response(r).map_err(|e| e.to_string()));
    match parsed {
        Ok(response) => Sent::Accepted(response.rejected),
        // The gateway took it; an unreadable answer only loses the `rejected` list.
        Err(_) => Sent::Accepted(Vec::new()),
    }
}
