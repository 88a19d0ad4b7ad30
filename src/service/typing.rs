//! Typing notifications. They are ephemeral, so they live in memory: per room, who is typing
//! until when. Every change (start, stop, expiry) takes the next value of a serial, which sync
//! tokens carry (the `t` part), and wakes waiting syncs; an expiry is applied by a timer task.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use super::notifier::{Notifier, WakeKey};

/// The longest a typing notification lasts without being renewed.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct State {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

/// A room's entry stays after everyone stopped: its `changed` serial tells a sync that has not
/// seen the stop yet to send the empty list.
#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The serial of the room's last change.
    changed: u64,
}

pub struct Typing {
    state: Arc<Mutex<State>>,
    notifier: Arc<Notifier>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Plain maps and numbers: a panic elsewhere cannot leave them inconsistent.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Typing {
    pub fn new(notifier: Arc<Notifier>) -> Self {
        Self { state: Arc::default(), notifier }
    }

    /// The serial of the newest change.
    pub fn serial(&self) -> u64 {
        lock(&self.state).serial
    }

    /// `user` starts typing in `room` for `timeout` (at most two minutes), or stops (`None`).
    pub fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut state = lock(&self.state);
            let State { serial, rooms } = &mut *state;
            let typing = rooms.entry(room.to_owned()).or_default();
            let changed = match timeout {
                Some(timeout) => {
                    let timeout = timeout.min(MAX_TIMEOUT);
                    let was_typing = typing.users.insert(user.to_owned(), Instant::now() + timeout).is_some();
                    self.expire_after(room, timeout);
                    !was_typing
                }
                None => typing.users.remove(user).is_some(),
            };
            if changed {
                *serial += 1;
                typing.changed = *serial;
            }
            changed
        };
        if changed {
            self.notifier.wake(&[WakeKey::Room(room.to_owned())]);
        }
    }

    /// Removes the room's expired entries once `after` has passed.
    fn expire_after(&self, room: &RoomId, after: Duration) {
        let (state, notifier, room) = (self.state.clone(), self.notifier.clone(), room.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let changed = {
                let mut state = lock(&state);
                let State { serial, rooms } = &mut *state;
                let Some(typing) = rooms.get_mut(&room) else { return };
                let now = Instant::now();
                let before = typing.users.len();
                typing.users.retain(|_, until| *until > now);
                let changed = typing.users.len() != before;
                if changed {
                    *serial += 1;
                    typing.changed = *serial;
                }
                changed
            };
            if changed {
                notifier.wake(&[WakeKey::Room(room)]);
            }
        });
    }

    /// The rooms whose typing changed after serial `since`, with who is typing in each now (for
    /// application services that follow every room).
    pub fn changed_since(&self, since: u64) -> Vec<(OwnedRoomId, Vec<OwnedUserId>)> {
        let state = lock(&self.state);
        let now = Instant::now();
        state
            .rooms
            .iter()
            .filter(|(_, typing)| typing.changed > since)
            .map(|(room, typing)| {
                let mut users: Vec<OwnedUserId> =
                    typing.users.iter().filter(|(_, until)| **until > now).map(|(user, _)| user.clone()).collect();
                users.sort();
                (room.clone(), users)
            })
            .collect()
    }

    /// Who is typing in `room`, if that changed after serial `since` (always, without `since`,
    /// when someone is typing).
    pub fn typing_since(&self, room: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let state = lock(&self.state);
        let typing = state.rooms.get(room)?;
        let now = Instant::now();
        let mut users: Vec<OwnedUserId> =
            typing.users.iter().filter(|(_, until)| **until > now).map(|(user, _)| user.clone()).collect();
        users.sort();
        match since {
            Some(since) if typing.changed > since => Some(users),
            None if !users.is_empty() => Some(users),
            _ => None,
        }
    }
}
