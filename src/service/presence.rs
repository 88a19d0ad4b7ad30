//! Presence of local users (online, unavailable, offline, a status message), as Synapse keeps
//! it: every notable change is stored with the next position of the presence stream (the `p`
//! part of sync tokens) and wakes waiting syncs. Users who are not offline are also kept in
//! memory with their syncs in progress and last sync time; a timer task moves them to
//! `unavailable` after `presence_idle_timeout_s` without activity and to `offline` once they
//! stop syncing for `presence_offline_timeout_s`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use ruma::{OwnedUserId, UserId, presence::PresenceState};

use super::{notifier::Notifier, now_ms};
use crate::{
    Result,
    config::Config,
    storage::{
        Batch, Db, WriteLock,
        tables::{COUNTERS, PRESENCE, PRESENCE_CHANGES, PresenceRecord},
    },
};

const COUNTER: &str = "presence_position";
/// How long after their last activity a user still counts as `currently_active` (Synapse's
/// `LAST_ACTIVE_GRANULARITY`); activity within it is not written again.
const ACTIVE_GRANULARITY_MS: u64 = 60_000;
/// How often the timer task looks for idle and gone users.
const TIMER_TICK: Duration = Duration::from_millis(500);

const ONLINE: &str = "online";
const UNAVAILABLE: &str = "unavailable";
const OFFLINE: &str = "offline";

/// A user who is not offline, in memory.
struct Live {
    record: PresenceRecord,
    /// Syncs in progress that count for presence.
    syncing: usize,
    /// When the last such sync ended, or the last presence update (ms since the epoch).
    last_sync_ms: u64,
}

struct Inner {
    db: Db,
    notifier: Arc<Notifier>,
    idle_ms: u64,
    offline_ms: u64,
    /// Serialises stream positions, so every change up to the counter is committed; the
    /// read-modify-write, the commit, the in-memory copy and the wake-up all happen inside it.
    write_lock: WriteLock,
    live: Mutex<HashMap<OwnedUserId, Live>>,
}

pub struct Presence {
    enabled: bool,
    inner: Arc<Inner>,
}

fn lock(live: &Mutex<HashMap<OwnedUserId, Live>>) -> MutexGuard<'_, HashMap<OwnedUserId, Live>> {
    // Plain maps and numbers: a panic elsewhere cannot leave them inconsistent.
    live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn offline_record() -> PresenceRecord {
    PresenceRecord {
        state: OFFLINE.to_owned(),
        status_msg: None,
        last_active_ms: 0,
        currently_active: false,
        position: 0,
    }
}

/// A user's presence as clients see it.
#[derive(Debug, Clone)]
pub struct PresenceView {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    /// `None` when the user was never active.
    pub last_active_ago: Option<Duration>,
    pub currently_active: bool,
    /// The stream position of the last change.
    pub position: u64,
}

impl PresenceView {
    fn of(record: &PresenceRecord, now: u64) -> Self {
        Self {
            state: PresenceState::from(record.state.as_str()),
            status_msg: record.status_msg.clone(),
            last_active_ago: (record.last_active_ms > 0)
                .then(|| Duration::from_millis(now.saturating_sub(record.last_active_ms))),
            currently_active: record.currently_active && record.state == ONLINE,
            position: record.position,
        }
    }

    /// The `m.presence` event for `user`.
    pub fn event(&self, user: &UserId) -> serde_json::Value {
        let mut content = serde_json::json!({ "presence": self.state.as_str() });
        if let Some(ago) = self.last_active_ago {
            content["last_active_ago"] = (ago.as_millis() as u64).into();
        }
        if self.state == PresenceState::Online {
            content["currently_active"] = self.currently_active.into();
        }
        if let Some(status) = &self.status_msg {
            content["status_msg"] = status.as_str().into();
        }
        serde_json::json!({ "type": "m.presence", "sender": user, "content": content })
    }
}

/// Marks a sync in progress; dropping it records the end of the sync.
pub struct SyncingGuard {
    inner: Option<(Weak<Inner>, OwnedUserId)>,
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        let Some((inner, user)) = self.inner.take() else { return };
        let Some(inner) = inner.upgrade() else { return };
        if let Some(live) = lock(&inner.live).get_mut(&user) {
            live.syncing = live.syncing.saturating_sub(1);
            live.last_sync_ms = now_ms();
        }
    }
}

impl Presence {
    /// Loads the users who were not offline at the last stop (they count as having synced
    /// now) and starts the timer task, when there is a runtime to run it.
    pub fn new(config: &Config, db: Db, notifier: Arc<Notifier>) -> Result<Self> {
        let now = now_ms();
        let mut live = HashMap::new();
        if config.allow_local_presence {
            for (user, record) in PRESENCE.all(&db)? {
                if record.state != OFFLINE {
                    live.insert(user, Live { record, syncing: 0, last_sync_ms: now });
                }
            }
        }
        let inner = Arc::new(Inner {
            db,
            notifier,
            idle_ms: config.presence_idle_timeout_s.saturating_mul(1000),
            offline_ms: config.presence_offline_timeout_s.saturating_mul(1000),
            write_lock: WriteLock::new(),
            live: Mutex::new(live),
        });
        if config.allow_local_presence
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(timer(Arc::downgrade(&inner)));
        }
        Ok(Self { enabled: config.allow_local_presence, inner })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The newest presence stream position.
    pub async fn position(&self) -> Result<u64> {
        self.inner.db.run(Self::position_in).await
    }

    /// [`position`](Self::position), on the storage threads already.
    pub fn position_in(db: &Db) -> Result<u64> {
        Ok(COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0))
    }

    /// `user`'s presence (offline when unknown or when presence is off).
    pub async fn get(&self, user: &UserId) -> Result<PresenceView> {
        let record = if self.enabled { self.inner.record(user).await? } else { offline_record() };
        Ok(PresenceView::of(&record, now_ms()))
    }

    /// `PUT /presence/{userId}/status`: sets the state and status message. Setting `online`
    /// is activity; the update also counts as a sync for the offline timeout.
    pub async fn set(&self, user: &UserId, state: &PresenceState, status_msg: Option<String>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let state = state_name(state);
        self.inner
            .update(user, true, move |record, now| {
                record.state = state.to_owned();
                record.status_msg = status_msg;
                if state == ONLINE {
                    record.last_active_ms = now;
                    record.currently_active = true;
                } else {
                    record.currently_active = false;
                }
            })
            .await
    }

    /// A sync starts with `set_presence`: `offline` leaves presence alone; otherwise the user
    /// counts as syncing until the guard is dropped, an offline user becomes online (or
    /// unavailable, as asked), and `unavailable` moves an online user to unavailable.
    pub async fn syncing(&self, user: &UserId, set_presence: &PresenceState) -> Result<SyncingGuard> {
        if !self.enabled || *set_presence == PresenceState::Offline {
            return Ok(SyncingGuard { inner: None });
        }
        let wanted = state_name(set_presence);
        let current = self.inner.record(user).await?;
        if matches!((current.state.as_str(), wanted), (OFFLINE, _) | (ONLINE, UNAVAILABLE)) {
            self.inner
                .update(user, true, move |record, now| {
                    record.state = wanted.to_owned();
                    record.currently_active = wanted == ONLINE;
                    if wanted == ONLINE {
                        record.last_active_ms = now;
                    }
                })
                .await?;
        }
        let current = self.inner.record(user).await?;
        let mut live = lock(&self.inner.live);
        let entry =
            live.entry(user.to_owned()).or_insert_with(|| Live { record: current, syncing: 0, last_sync_ms: now_ms() });
        entry.syncing += 1;
        Ok(SyncingGuard { inner: Some((Arc::downgrade(&self.inner), user.to_owned())) })
    }

    /// `user` did something (sent an event): they are online and currently active. Written
    /// only when that changes something clients see, or once per granularity period.
    pub async fn active(&self, user: &UserId) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = now_ms();
        {
            let live = lock(&self.inner.live);
            if let Some(entry) = live.get(user)
                && entry.record.state == ONLINE
                && entry.record.currently_active
                && now.saturating_sub(entry.record.last_active_ms) < ACTIVE_GRANULARITY_MS
            {
                return Ok(());
            }
        }
        self.inner
            .update(user, false, |record, now| {
                record.state = ONLINE.to_owned();
                record.currently_active = true;
                record.last_active_ms = now;
            })
            .await
    }

    /// The presence of a user of another server, as their server sent it (`m.presence`). Not
    /// kept in memory: the timer does not time remote users out, their server tells when they
    /// go offline. Ignored when presence is off.
    pub async fn set_remote(
        &self,
        user: &UserId,
        state: &PresenceState,
        status_msg: Option<String>,
        last_active_ago_ms: u64,
        currently_active: bool,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let state = state_name(state);
        self.inner
            .write(user, None, false, move |record, now| {
                record.state = state.to_owned();
                record.status_msg = status_msg;
                record.last_active_ms = now.saturating_sub(last_active_ago_ms);
                record.currently_active = currently_active && state == ONLINE;
            })
            .await
    }

    /// The users whose presence changed in positions `(since, upto]`, with their presence.
    pub async fn changes(&self, since: u64, upto: u64) -> Result<Vec<(OwnedUserId, PresenceView)>> {
        if !self.enabled || since >= upto {
            return Ok(Vec::new());
        }
        let users: Vec<OwnedUserId> = self
            .inner
            .db
            .run(move |db| {
                let rows = PRESENCE_CHANGES.between(db, since, upto, usize::MAX)?;
                Ok(rows.into_iter().map(|(_, user)| user).collect())
            })
            .await?;
        let now = now_ms();
        let mut out = Vec::new();
        for user in users {
            let record = self.inner.record(&user).await?;
            // A change after the snapshot is sent by the next sync.
            if record.position <= upto {
                out.push((user, PresenceView::of(&record, now)));
            }
        }
        Ok(out)
    }
}

fn state_name(state: &PresenceState) -> &'static str {
    match state {
        PresenceState::Online => ONLINE,
        PresenceState::Unavailable => UNAVAILABLE,
        _ => OFFLINE,
    }
}

impl Inner {
    async fn record(&self, user: &UserId) -> Result<PresenceRecord> {
        if let Some(live) = lock(&self.live).get(user) {
            return Ok(live.record.clone());
        }
        let user = user.to_owned();
        self.db.run(move |db| Ok(PRESENCE.get(db, &user)?.unwrap_or_else(offline_record))).await
    }

    /// [`record`](Self::record) on the storage threads.
    fn record_blocking(&self, db: &Db, user: &UserId) -> Result<PresenceRecord> {
        if let Some(live) = lock(&self.live).get(user) {
            return Ok(live.record.clone());
        }
        Ok(PRESENCE.get(db, &user.to_owned())?.unwrap_or_else(offline_record))
    }

    /// Applies `change` to `user`'s record; when the result differs in what clients see, stores
    /// it at the next stream position and wakes waiting syncs. With `touch`, the update counts
    /// as a sync for the offline timeout. All of it runs inside the write lock on the blocking
    /// pool, so a dropped request leaves neither the memory copy behind the stored record nor
    /// waiting syncs asleep.
    async fn update(
        self: &Arc<Self>,
        user: &UserId,
        touch: bool,
        change: impl FnOnce(&mut PresenceRecord, u64) + Send + 'static,
    ) -> Result<()> {
        self.write(user, Some(touch), true, change).await
    }

    /// [`update`](Self::update); `live` keeps the user in memory (local users: the timer times
    /// them out), which a remote user's change does not.
    async fn write(
        self: &Arc<Self>,
        user: &UserId,
        touch: Option<bool>,
        live: bool,
        change: impl FnOnce(&mut PresenceRecord, u64) + Send + 'static,
    ) -> Result<()> {
        let touch = touch.unwrap_or(false);
        let (inner, user) = (self.clone(), user.to_owned());
        self.write_lock
            .run(&self.db, move |db| {
                let old = inner.record_blocking(db, &user)?;
                let now = now_ms();
                let mut new = old.clone();
                change(&mut new, now);
                if new == old {
                    if live {
                        inner.remember(&user, &new, touch.then_some(now));
                    }
                    return Ok(());
                }
                let position = COUNTERS.get(db, &COUNTER.to_owned())?.unwrap_or(0) + 1;
                let record = PresenceRecord { position, ..new };
                let mut batch = Batch::new();
                batch.put(&COUNTERS, &COUNTER.to_owned(), &position)?;
                if old.position > 0 {
                    batch.delete(&PRESENCE_CHANGES, &old.position);
                }
                batch.put(&PRESENCE_CHANGES, &position, &user)?;
                batch.put(&PRESENCE, &user, &record)?;
                db.write(batch)?;
                if live {
                    inner.remember(&user, &record, touch.then_some(now));
                }
                // The user's room-mates see the change (and the user's own syncs).
                inner.notifier.room_mates_changed(user);
                Ok(())
            })
            .await
    }

    /// Keeps the in-memory copy of a user who is not offline (with `synced_at` as their last
    /// sync, if given); forgets an offline one.
    fn remember(&self, user: &UserId, record: &PresenceRecord, synced_at: Option<u64>) {
        let mut live = lock(&self.live);
        if record.state == OFFLINE {
            if live.get(user).is_some_and(|l| l.syncing == 0) {
                live.remove(user);
            } else if let Some(entry) = live.get_mut(user) {
                entry.record = record.clone();
            }
            return;
        }
        let entry = live.entry(user.to_owned()).or_insert_with(|| Live {
            record: record.clone(),
            syncing: 0,
            last_sync_ms: now_ms(),
        });
        entry.record = record.clone();
        if let Some(now) = synced_at {
            entry.last_sync_ms = entry.last_sync_ms.max(now);
        }
    }

    /// What the timer changes for one user now: idle online users become unavailable, users
    /// who stopped syncing become offline, and `currently_active` lapses.
    fn timed_out(&self, live: &Live, now: u64) -> Option<PresenceRecord> {
        let record = &live.record;
        let mut new = record.clone();
        let inactive = now.saturating_sub(record.last_active_ms);
        if live.syncing == 0 && record.state != OFFLINE && now.saturating_sub(live.last_sync_ms) > self.offline_ms {
            new.state = OFFLINE.to_owned();
        } else if record.state == ONLINE && inactive > self.idle_ms {
            new.state = UNAVAILABLE.to_owned();
        }
        if new.state != ONLINE || inactive > ACTIVE_GRANULARITY_MS {
            new.currently_active = false;
        }
        (new != *record).then_some(new)
    }
}

/// Applies the timeouts every [`TIMER_TICK`] while the services exist.
async fn timer(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = now_ms();
        let due: Vec<(OwnedUserId, PresenceRecord)> = {
            let mut live = lock(&inner.live);
            live.retain(|_, l| l.record.state != OFFLINE || l.syncing > 0);
            live.iter().filter_map(|(user, l)| inner.timed_out(l, now).map(|record| (user.clone(), record))).collect()
        };
        for (user, record) in due {
            let result = inner
                .update(&user, false, move |current, _| {
                    // Only if nothing changed it in between.
                    if current.position == record.position {
                        *current = record;
                    }
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(%user, "cannot apply a presence timeout: {e}");
            }
        }
    }
}
