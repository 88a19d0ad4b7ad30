//! Lazy-loading members without repeats, as Synapse does: per (user, device), which member
//! event of which room the device was last sent, so a later sync leaves out a member event the
//! device already has (unless the filter asks for `include_redundant_members`). An initial or
//! `full_state` sync starts the device's record afresh. It lives in memory: after a restart a
//! device may get a member event once more, which is harmless.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};

/// Member events per device above which its record is dropped (and rebuilt by later syncs).
const MAX_MEMBERS_PER_DEVICE: usize = 100_000;

/// Room -> member user ID -> the event ID of the member event sent.
type Sent = HashMap<OwnedRoomId, HashMap<String, String>>;

#[derive(Default)]
pub struct LazyMemberCache {
    devices: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), Sent>>,
}

impl LazyMemberCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<(OwnedUserId, OwnedDeviceId), Sent>> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets what the device was sent (initial and `full_state` syncs).
    pub(super) fn reset(&self, user: &UserId, device: &DeviceId) {
        self.lock().remove(&(user.to_owned(), device.to_owned()));
    }

    /// Whether the device was already sent exactly this member event.
    pub(super) fn was_sent(&self, user: &UserId, device: &DeviceId, room: &RoomId, member: &str, event: &str) -> bool {
        self.lock()
            .get(&(user.to_owned(), device.to_owned()))
            .and_then(|rooms| rooms.get(room))
            .and_then(|members| members.get(member))
            .is_some_and(|sent| sent == event)
    }

    /// Records member events sent to the device: (member user ID, event ID).
    pub(super) fn record(&self, user: &UserId, device: &DeviceId, room: &RoomId, sent: Vec<(String, String)>) {
        if sent.is_empty() {
            return;
        }
        let mut devices = self.lock();
        let rooms = devices.entry((user.to_owned(), device.to_owned())).or_default();
        if rooms.values().map(HashMap::len).sum::<usize>() > MAX_MEMBERS_PER_DEVICE {
            rooms.clear();
        }
        rooms.entry(room.to_owned()).or_default().extend(sent);
    }
}
