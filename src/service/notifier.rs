//! Wakes long-polling syncs, and only those a change can concern. A waiting `/sync` (or sliding
//! sync) registers the keys it listens to — its user, its device, and each room it is joined
//! to — before it reads the streams; a writer, once its batch is committed, wakes the keys its
//! change concerns. So an event in a busy room wakes that room's members' syncs and no other:
//! idle long-polls cost nothing while they wait.
//!
//! - **No lost wake-up.** A waiter registers before it reads; a change committed after the read
//!   finds the registration and leaves a permit (`Notify::notify_one`), so the wait that follows
//!   returns at once.
//! - **Cancel-safe.** A [`Registration`] removes itself from every key when dropped, so a
//!   request future dropped mid-wait leaves nothing behind.
//! - **Room-mates.** Device-list and presence changes of a user concern everyone sharing a room
//!   with them: writers call [`Notifier::room_mates_changed`], and a resolver task
//!   ([`run_room_mates`]) turns the user into the rooms they are joined to (a local user's room
//!   list; for a remote user, the rooms with waiters they are joined to) and wakes those.
//! - **Senders.** The federation and application service senders follow every stream: they keep
//!   a global watch channel ([`Notifier::subscribe`]) that every change pokes.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use tokio::sync::{Notify, watch};

/// The newest committed position of each stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamPositions {
    /// Room events (the rooms service's stream positions).
    pub events: u64,
    /// Account data changes (their own counter).
    pub account_data: u64,
}

/// What a waiting sync listens to, and what a change wakes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WakeKey {
    /// Events, typing and receipts of a room (its joined members listen).
    Room(OwnedRoomId),
    /// A user's account data, memberships (invites, joins by another device, kicks), presence
    /// and own device list, and to-device messages for all their devices.
    User(OwnedUserId),
    /// To-device messages and key counts of one device.
    Device(OwnedUserId, OwnedDeviceId),
}

/// One waiting request.
#[derive(Default)]
struct Waiter {
    notify: Notify,
    woken: AtomicBool,
}

impl Waiter {
    /// Wakes the waiter once; returns whether this call did.
    fn wake(&self) -> bool {
        let first = !self.woken.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_one();
        }
        first
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_key: HashMap<WakeKey, HashMap<u64, Arc<Waiter>>>,
    /// Every waiter, for shutdown.
    all: HashMap<u64, Arc<Waiter>>,
}

pub struct Notifier {
    sender: watch::Sender<StreamPositions>,
    shutting_down: AtomicBool,
    registry: Mutex<Registry>,
    /// Users whose room-mates are to be woken, for the resolver task.
    room_mates: Mutex<HashSet<OwnedUserId>>,
    room_mates_wake: Notify,
    /// Waiters woken by a change (each at most once per registration).
    woken: AtomicU64,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

/// A waiting sync's registration; dropping it unregisters every key.
pub struct Registration<'a> {
    notifier: &'a Notifier,
    id: u64,
    keys: Vec<WakeKey>,
    waiter: Arc<Waiter>,
}

impl Registration<'_> {
    /// Listens to more keys (added before the streams are read, like the first ones).
    pub fn listen(&mut self, keys: impl IntoIterator<Item = WakeKey>) {
        let mut registry = self.notifier.registry();
        for key in keys {
            let waiters = registry.by_key.entry(key.clone()).or_default();
            if waiters.insert(self.id, self.waiter.clone()).is_none() {
                self.keys.push(key);
            }
        }
    }

    /// Waits until a registered key is woken (true) or `deadline` passes (false).
    pub async fn wait_until(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.waiter.notify.notified()).await.is_ok()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut registry = self.notifier.registry();
        for key in &self.keys {
            if let Some(waiters) = registry.by_key.get_mut(key) {
                waiters.remove(&self.id);
                if waiters.is_empty() {
                    registry.by_key.remove(key);
                }
            }
        }
        registry.all.remove(&self.id);
        crate::service::metrics::global().sync_wait_ended();
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self {
            sender: watch::Sender::new(StreamPositions::default()),
            shutting_down: AtomicBool::new(false),
            registry: Mutex::default(),
            room_mates: Mutex::default(),
            room_mates_wake: Notify::new(),
            woken: AtomicU64::new(0),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Plain maps, each change complete before the lock is released.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a waiter listening to `keys`. Call it before reading the streams.
    pub fn register(&self, keys: impl IntoIterator<Item = WakeKey>) -> Registration<'_> {
        let waiter = Arc::new(Waiter::default());
        let id = {
            let mut registry = self.registry();
            registry.next_id += 1;
            let id = registry.next_id;
            registry.all.insert(id, waiter.clone());
            id
        };
        crate::service::metrics::global().sync_wait_started();
        let mut registration = Registration { notifier: self, id, keys: Vec::new(), waiter };
        registration.listen(keys);
        if self.is_shutting_down() {
            registration.waiter.wake();
        }
        registration
    }

    /// Wakes the waiters listening to any of `keys`, and the senders.
    pub fn wake<'k>(&self, keys: impl IntoIterator<Item = &'k WakeKey>) {
        self.wake_quietly(keys);
        self.poke();
    }

    fn count_woken(&self, woken: u64) {
        if woken > 0 {
            self.woken.fetch_add(woken, Ordering::Relaxed);
            crate::service::metrics::global().syncs_woken(woken);
        }
    }

    /// Waiters woken by changes since the start.
    pub fn woken(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }

    /// The rooms some waiter listens to.
    pub fn waiting_rooms(&self) -> Vec<OwnedRoomId> {
        self.registry()
            .by_key
            .keys()
            .filter_map(|key| match key {
                WakeKey::Room(room) => Some(room.clone()),
                _ => None,
            })
            .collect()
    }

    /// A user's device list or presence changed: wakes them and everyone sharing a room with
    /// them, through the resolver task.
    pub fn room_mates_changed(&self, user: OwnedUserId) {
        self.room_mates.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(user);
        self.room_mates_wake.notify_one();
        self.poke();
    }

    /// A receiver for the senders, which follow every stream: it sees every change made after
    /// this call.
    pub fn subscribe(&self) -> watch::Receiver<StreamPositions> {
        self.sender.subscribe()
    }

    /// The server is stopping: wakes every waiting sync, and no sync waits from now on, so
    /// long-polls do not hold the graceful shutdown.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let woken = self.registry().all.values().filter(|waiter| waiter.wake()).count() as u64;
        self.count_woken(woken);
        self.sender.send_modify(|_| {});
        self.room_mates_wake.notify_one();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Wakes the senders only (their streams moved in a way no sync is told of by this call:
    /// the caller wakes the syncs concerned with [`wake`](Self::wake)).
    pub fn poke(&self) {
        self.sender.send_modify(|_| {});
    }

    /// Records that room events up to `position` are committed (for the senders; the rooms'
    /// waiters are woken by the stream allocator).
    pub fn events_committed(&self, position: u64) {
        self.sender.send_if_modified(|positions| {
            let newer = position > positions.events;
            if newer {
                positions.events = position;
            }
            newer
        });
    }

    /// Records that `user`'s account data up to `position` is committed, and wakes them.
    pub fn account_data_committed(&self, user: &ruma::UserId, position: u64) {
        self.wake_quietly(&[WakeKey::User(user.to_owned())]);
        self.sender.send_if_modified(|positions| {
            let newer = position > positions.account_data;
            if newer {
                positions.account_data = position;
            }
            newer
        });
    }

    /// [`wake`](Self::wake) without poking the senders.
    pub fn wake_quietly<'k>(&self, keys: impl IntoIterator<Item = &'k WakeKey>) {
        let mut woken = 0;
        {
            let registry = self.registry();
            for key in keys {
                if let Some(waiters) = registry.by_key.get(key) {
                    woken += waiters.values().filter(|waiter| waiter.wake()).count() as u64;
                }
            }
        }
        self.count_woken(woken);
    }

    /// Takes the users queued by [`room_mates_changed`](Self::room_mates_changed), waiting for
    /// one if there are none (`None` once the server is stopping).
    async fn next_room_mates(&self) -> Option<Vec<OwnedUserId>> {
        loop {
            let notified = self.room_mates_wake.notified();
            if self.is_shutting_down() {
                return None;
            }
            let users: Vec<OwnedUserId> =
                self.room_mates.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain().collect();
            if !users.is_empty() {
                return Some(users);
            }
            notified.await;
        }
    }
}

/// The resolver task: wakes the room-mates of users queued by
/// [`Notifier::room_mates_changed`] until the server stops.
pub async fn run_room_mates(services: Arc<super::Services>) {
    let notifier = services.notifier.clone();
    while let Some(users) = notifier.next_room_mates().await {
        for user in users {
            let mut keys = vec![WakeKey::User(user.clone())];
            match services.rooms.rooms_to_wake_for(&user, notifier.waiting_rooms()).await {
                Ok(rooms) => keys.extend(rooms.into_iter().map(WakeKey::Room)),
                Err(error) => {
                    // Without the rooms, every room with waiters is woken: a spurious wake-up
                    // costs a read, a missed one a stale sync.
                    tracing::warn!(%error, %user, "cannot read a user's rooms to wake their room-mates");
                    keys.extend(notifier.waiting_rooms().into_iter().map(WakeKey::Room));
                }
            }
            notifier.wake_quietly(&keys);
        }
    }
}
