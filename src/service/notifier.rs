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
    /// How many times the other streams the senders follow (receipts, presence, device lists,
    /// to-device messages, typing) were poked: a sender that saw this count last time has
    /// nothing new in them.
    pub pokes: u64,
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
    /// Joined rooms listened to as one set per user's room list (see
    /// [`Registration::listen_rooms`]), by subscription ID.
    subscriptions: HashMap<u64, Subscription>,
    /// The subscriptions of each room, and of each user.
    room_subscriptions: HashMap<OwnedRoomId, HashSet<u64>>,
    user_subscriptions: HashMap<OwnedUserId, Vec<u64>>,
    /// Rooms indexed for subscriptions without waiters (kept for the user's next sync).
    idle_rooms: usize,
}

/// A user's joined rooms, listened to by the syncs that read the same room list. A long-polling
/// client registers again right after each answer: its next registration finds the rooms
/// already indexed and costs one lookup instead of one entry per room.
struct Subscription {
    user: OwnedUserId,
    /// The room list the rooms come from (compared by identity: a changed list is a new one).
    list: RoomList,
    rooms: Vec<OwnedRoomId>,
    waiters: HashMap<u64, Arc<Waiter>>,
}

/// A user's memberships, as the rooms service shares them (`Rooms::user_room_list`).
pub type RoomList = Arc<Vec<(OwnedRoomId, crate::storage::room_tables::UserMembership)>>;

/// Rooms of idle subscriptions kept at most (about 100 bytes each).
const MAX_IDLE_ROOMS: usize = 100_000;

impl Registry {
    fn remove_subscription(&mut self, id: u64) {
        let Some(subscription) = self.subscriptions.remove(&id) else { return };
        if subscription.waiters.is_empty() {
            self.idle_rooms -= subscription.rooms.len();
        }
        if let Some(ids) = self.user_subscriptions.get_mut(&subscription.user) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.user_subscriptions.remove(&subscription.user);
            }
        }
        for room in &subscription.rooms {
            if let Some(ids) = self.room_subscriptions.get_mut(room) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.room_subscriptions.remove(room);
                }
            }
        }
    }

    /// Drops every subscription without waiters.
    fn remove_idle_subscriptions(&mut self) {
        let idle: Vec<u64> =
            self.subscriptions.iter().filter(|(_, s)| s.waiters.is_empty()).map(|(id, _)| *id).collect();
        for id in idle {
            self.remove_subscription(id);
        }
    }
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
    /// The room subscription it waits on, if any.
    subscription: Option<u64>,
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

    /// Listens to the joined rooms of `user`'s room list, as [`listen`](Self::listen) with a
    /// [`WakeKey::Room`] each would, through the subscription of that list (made on the first
    /// registration that brings it). Call it once per registration.
    pub fn listen_rooms(&mut self, user: &ruma::UserId, list: RoomList) {
        let mut registry = self.notifier.registry();
        let mine: Vec<u64> = registry.user_subscriptions.get(user).cloned().unwrap_or_default();
        let found =
            mine.iter().copied().find(|id| registry.subscriptions.get(id).is_some_and(|s| Arc::ptr_eq(&s.list, &list)));
        let id = match found {
            Some(id) => id,
            None => {
                // The user's subscriptions to older lists that nothing waits on are done with.
                let stale = mine
                    .iter()
                    .copied()
                    .filter(|id| registry.subscriptions.get(id).is_some_and(|s| s.waiters.is_empty()));
                for id in stale.collect::<Vec<_>>() {
                    registry.remove_subscription(id);
                }
                if registry.idle_rooms > MAX_IDLE_ROOMS {
                    registry.remove_idle_subscriptions();
                }
                registry.next_id += 1;
                let id = registry.next_id;
                let rooms: Vec<OwnedRoomId> =
                    list.iter().filter(|(_, m)| m.membership == "join").map(|(room, _)| room.clone()).collect();
                for room in &rooms {
                    registry.room_subscriptions.entry(room.clone()).or_default().insert(id);
                }
                registry.idle_rooms += rooms.len();
                let subscription = Subscription { user: user.to_owned(), list, rooms, waiters: HashMap::new() };
                registry.subscriptions.insert(id, subscription);
                registry.user_subscriptions.entry(user.to_owned()).or_default().push(id);
                id
            }
        };
        let Some(subscription) = registry.subscriptions.get_mut(&id) else { return };
        let was_idle = subscription.waiters.is_empty();
        subscription.waiters.insert(self.id, self.waiter.clone());
        let rooms = subscription.rooms.len();
        if was_idle {
            registry.idle_rooms -= rooms;
        }
        self.subscription = Some(id);
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
        if let Some(id) = self.subscription
            && let Some(subscription) = registry.subscriptions.get_mut(&id)
        {
            subscription.waiters.remove(&self.id);
            if subscription.waiters.is_empty() {
                let rooms = subscription.rooms.len();
                registry.idle_rooms += rooms;
            }
        }
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
        let mut registration = Registration { notifier: self, id, keys: Vec::new(), waiter, subscription: None };
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
        let registry = self.registry();
        let keyed = registry.by_key.keys().filter_map(|key| match key {
            WakeKey::Room(room) => Some(room),
            _ => None,
        });
        let subscribed = registry.subscriptions.values().filter(|s| !s.waiters.is_empty()).flat_map(|s| &s.rooms);
        let rooms: HashSet<&OwnedRoomId> = keyed.chain(subscribed).collect();
        rooms.into_iter().cloned().collect()
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
        self.sender.send_modify(|positions| positions.pokes = positions.pokes.wrapping_add(1));
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
                if let WakeKey::Room(room) = key {
                    for id in registry.room_subscriptions.get(room).into_iter().flatten() {
                        let waiters = registry.subscriptions.get(id).into_iter().flat_map(|s| s.waiters.values());
                        woken += waiters.filter(|waiter| waiter.wake()).count() as u64;
                    }
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
