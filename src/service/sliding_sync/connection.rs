//! Per-connection state of sliding sync, in memory: for each (user, device, `conn_id`), the
//! answers given so far, each under its `pos`. An answer records the stream positions it read
//! up to, what each room was sent up to, and each list's rooms and count, so the next request
//! (naming that `pos`) is answered with only what changed. The last few answers are kept, so a
//! client that never received an answer can repeat its request with the previous `pos`.
//!
//! Bounded: connections idle longer than [`IDLE_EXPIRY`] are dropped, and past
//! [`MAX_CONNECTIONS`] the least recently used one goes. A dropped connection (or a restart)
//! makes its `pos` unknown: the client gets `M_UNKNOWN_POS` and starts afresh.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId, api::error::ErrorKind};

use crate::{
    Error, Result,
    service::{rooms::sliding_read::ListRooms, sync::SyncToken},
};

/// Connections idle longer than this are forgotten.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(30 * 60);
/// The most connections kept across all users.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Answers kept per connection (the newest, and the ones before it a client may repeat).
const KEPT_ANSWERS: usize = 3;

/// What a room was last sent on a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSent {
    /// The stream position its timeline and state were sent up to.
    pub upto: u64,
    /// The room configuration (timeline limit, required state) it was sent with.
    pub config: String,
    /// The membership it was sent with.
    pub membership: String,
    /// Member events sent for `$LAZY` (user IDs).
    pub lazy_members: HashSet<String>,
}

/// What one list showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSent {
    pub count: u64,
    pub rooms: Vec<OwnedRoomId>,
}

/// One answer on a connection.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The stream positions the answer read up to.
    pub token: SyncToken,
    pub rooms: HashMap<OwnedRoomId, RoomSent>,
    pub lists: BTreeMap<String, ListSent>,
    /// The one-time key counts and fallback key types sent (E2EE extension), to tell when they
    /// changed.
    pub key_counts: String,
    /// The user's rooms as read for the lists of this answer (at `token.events`): the next
    /// answer reads again only those with events since, or whose membership changed.
    pub list_rooms: Arc<ListRooms>,
}

struct Connection {
    /// A random name given when the connection starts; it prefixes every `pos`, so a `pos` of
    /// an older connection with the same `conn_id` is unknown.
    generation: String,
    next: u64,
    answers: VecDeque<(u64, Arc<Answer>)>,
    last_used: Instant,
}

type Key = (OwnedUserId, OwnedDeviceId, String);

#[derive(Default)]
pub struct Connections {
    map: Mutex<HashMap<Key, Connection>>,
}

fn unknown_pos() -> Error {
    Error::new(http::StatusCode::BAD_REQUEST, ErrorKind::UnknownPos, "Unknown or expired position; start afresh")
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Connection>> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer `pos` names on the connection, or `M_UNKNOWN_POS`. Without `pos`, `None`:
    /// the connection starts afresh (its older answers are forgotten).
    pub fn resume(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn_id: &str,
        pos: Option<&str>,
    ) -> Result<Option<Arc<Answer>>> {
        let key = (user.to_owned(), device.to_owned(), conn_id.to_owned());
        let mut map = self.lock();
        let Some(pos) = pos else {
            map.remove(&key);
            return Ok(None);
        };
        let (generation, number) = pos.rsplit_once('_').ok_or_else(unknown_pos)?;
        let number: u64 = number.parse().map_err(|_| unknown_pos())?;
        let connection = map.get_mut(&key).filter(|c| c.generation == generation).ok_or_else(unknown_pos)?;
        if connection.last_used.elapsed() > IDLE_EXPIRY {
            map.remove(&key);
            return Err(unknown_pos());
        }
        connection.last_used = Instant::now();
        let answer = connection.answers.iter().find(|(n, _)| *n == number).map(|(_, a)| a.clone());
        answer.map(Some).ok_or_else(unknown_pos)
    }

    /// Records an answer and returns its `pos`.
    pub fn record(&self, user: &UserId, device: &DeviceId, conn_id: &str, answer: Answer) -> String {
        let key = (user.to_owned(), device.to_owned(), conn_id.to_owned());
        let mut map = self.lock();
        let now = Instant::now();
        if !map.contains_key(&key) {
            map.retain(|_, c| now.duration_since(c.last_used) <= IDLE_EXPIRY);
            if map.len() >= MAX_CONNECTIONS
                && let Some(oldest) = map.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let connection = map.entry(key).or_insert_with(|| Connection {
            generation: crate::service::random_string(8),
            next: 1,
            answers: VecDeque::new(),
            last_used: now,
        });
        let number = connection.next;
        connection.next += 1;
        connection.last_used = now;
        connection.answers.push_back((number, Arc::new(answer)));
        while connection.answers.len() > KEPT_ANSWERS {
            connection.answers.pop_front();
        }
        format!("{}_{number}", connection.generation)
    }

    /// How many connections are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_resume_and_expire() {
        let connections = Connections::default();
        let user = ruma::user_id!("@a:x");
        let device = ruma::device_id!("D");
        assert!(connections.resume(user, device, "c", None).unwrap().is_none());
        let first = connections.record(user, device, "c", Answer::default());
        let second = connections.record(user, device, "c", Answer::default());
        assert!(connections.resume(user, device, "c", Some(&first)).unwrap().is_some());
        assert!(connections.resume(user, device, "c", Some(&second)).unwrap().is_some());
        // Another conn_id, a garbled pos, a pos from the future: unknown.
        assert!(connections.resume(user, device, "other", Some(&first)).is_err());
        assert!(connections.resume(user, device, "c", Some("nonsense")).is_err());
        assert!(connections.resume(user, device, "c", Some(&format!("{}9", second))).is_err());
        for _ in 0..KEPT_ANSWERS {
            connections.record(user, device, "c", Answer::default());
        }
        // Only the last few answers are kept.
        assert!(connections.resume(user, device, "c", Some(&first)).is_err());
        // Starting afresh forgets the connection's answers.
        connections.resume(user, device, "c", None).unwrap();
        assert!(connections.resume(user, device, "c", Some(&second)).is_err());
    }
}
