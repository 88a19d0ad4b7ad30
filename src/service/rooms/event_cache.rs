//! A cache of parsed stored events by short event ID, bounded in bytes (`event_cache_capacity_mb`).
//!
//! Serving an event (a sync, `/messages`, `/context`) used to parse its stored JSON every time;
//! with this cache a read of a known event costs one hash lookup, and no storage read. Every
//! writer that rewrites a stored event in place (an outlier or a rejected event accepted again,
//! erasure and pruning; see `RoomCore::forget_stored`) calls [`EventCache::forget`] after its
//! batch is written. A miss takes a ticket (the cache's generation) before it reads the stored
//! event, and its parse is kept only when no event it could have read stale was forgotten since:
//! a reader that read the old bytes just before a rewrite never puts them back after the rewrite's
//! `forget`. Redactions are applied after the cache (`event_for_client` looks at the redactions of
//! the event each time), so they need nothing here.
//!
//! An entry can also hold the event's stored facts (`EVENT_META`), which the timeline window reads
//! for every event it serves and the auth check for every auth event of a new event: every writer
//! of `EVENT_META` forgets the event after its batch too, and the facts are kept under the same
//! tickets.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde_json::value::RawValue;

use super::Pdu;
use crate::storage::room_tables::EventMeta;

/// Fixed cost counted per entry besides its JSON (the parsed fields, the map and queue slots).
const ENTRY_OVERHEAD: usize = 256;

/// A cached event holds its stored text and, parsed from it, copies of its fields (`content`
/// and `unsigned` as text, the IDs): about this many times the bytes of the text. (The JSON tree
/// is built only for the few uses that need the whole event; see `pdu.rs`.)
const PARSED_FACTOR: usize = 2;

/// How many recent `forget`s are remembered by generation; a miss whose ticket is older than all
/// of them keeps nothing (it costs only a later parse).
const RECENT_FORGETS: usize = 1024;

struct Entry {
    pdu: Arc<Pdu>,
    /// The event's `EVENT_META` row, once a reader asked for it (counted in `ENTRY_OVERHEAD`).
    meta: Option<Box<EventMeta>>,
    bytes: usize,
    /// Read since it was last passed by the eviction hand (second chance).
    used: bool,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Short IDs in insertion order, the eviction hand at the front.
    order: VecDeque<u64>,
    bytes: usize,
    /// Bumped by every `forget` and `clear`.
    generation: u64,
    /// Tickets below this keep nothing (a `clear` happened, or the forgets since were dropped).
    floor: u64,
    /// The most recent forgets: (generation it produced, short ID), oldest first.
    recent: VecDeque<(u64, u64)>,
}

impl Inner {
    /// Whether a parse read under `ticket` may be stale for `short` now.
    fn stale(&self, ticket: u64, short: u64) -> bool {
        if ticket == self.generation {
            return false;
        }
        if ticket < self.floor {
            return true;
        }
        self.recent.iter().rev().take_while(|(generation, _)| *generation > ticket).any(|(_, s)| *s == short)
    }
}

/// What [`EventCache::lookup`] found: the cached event, or a ticket for [`EventCache::put`].
pub(super) enum Lookup {
    Hit(Arc<Pdu>),
    Miss(u64),
}

/// Parsed events by short event ID, bounded in bytes; second-chance (clock) eviction.
pub(super) struct EventCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl EventCache {
    /// A cache holding at most `capacity` bytes (0 turns it off).
    pub(super) fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner::default()) }
    }

    /// The cached event, or a ticket to take before reading the stored event.
    pub(super) fn lookup(&self, short: u64) -> Lookup {
        let Ok(mut inner) = self.inner.lock() else { return Lookup::Miss(u64::MAX) };
        if self.capacity == 0 {
            return Lookup::Miss(inner.generation);
        }
        match inner.entries.get_mut(&short) {
            Some(entry) => {
                entry.used = true;
                Lookup::Hit(entry.pdu.clone())
            }
            None => Lookup::Miss(inner.generation),
        }
    }

    /// The event's cached `EVENT_META` row, or a ticket to take before reading it.
    pub(super) fn meta(&self, short: u64) -> Result<EventMeta, u64> {
        let Ok(mut inner) = self.inner.lock() else { return Err(u64::MAX) };
        let generation = inner.generation;
        match inner.entries.get_mut(&short) {
            Some(Entry { meta: Some(meta), used, .. }) => {
                *used = true;
                Ok((**meta).clone())
            }
            _ => Err(generation),
        }
    }

    /// Keeps the `EVENT_META` row read after [`meta`](Self::meta) gave `ticket` beside the cached
    /// event (if it is cached), unless the event was forgotten since.
    pub(super) fn put_meta(&self, short: u64, meta: &EventMeta, ticket: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.stale(ticket, short) {
            return;
        }
        if let Some(entry) = inner.entries.get_mut(&short) {
            entry.meta = Some(Box::new(meta.clone()));
        }
    }

    /// Keeps `pdu`, parsed from `stored` as read after [`lookup`](Self::lookup) gave `ticket`,
    /// unless the event was forgotten since; evicts the least recently used entries over
    /// capacity.
    pub(super) fn put(&self, short: u64, stored: &RawValue, pdu: Arc<Pdu>, ticket: u64) {
        let bytes = stored.get().len() * PARSED_FACTOR + ENTRY_OVERHEAD;
        if bytes > self.capacity / 8 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        if inner.stale(ticket, short) {
            return;
        }
        if let Some(old) = inner.entries.insert(short, Entry { pdu, meta: None, bytes, used: false }) {
            inner.bytes -= old.bytes;
        } else {
            inner.order.push_back(short);
        }
        inner.bytes += bytes;
        while inner.bytes > self.capacity {
            let Some(victim) = inner.order.pop_front() else { break };
            match inner.entries.get_mut(&victim) {
                Some(entry) if entry.used => {
                    entry.used = false;
                    inner.order.push_back(victim);
                }
                Some(_) => {
                    if let Some(entry) = inner.entries.remove(&victim) {
                        inner.bytes -= entry.bytes;
                    }
                }
                None => {}
            }
        }
    }

    /// Drops the entry of an event whose stored form was just rewritten (call it after the
    /// batch is written), and keeps misses that may have read the old form from putting it back.
    pub(super) fn forget(&self, short: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        // Its slot in `order` stays; the eviction hand skips slots without an entry.
        if let Some(entry) = inner.entries.remove(&short) {
            inner.bytes -= entry.bytes;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.recent.push_back((generation, short));
        if inner.recent.len() > RECENT_FORGETS
            && let Some((dropped, _)) = inner.recent.pop_front()
        {
            inner.floor = dropped;
        }
    }

    /// Forgets everything (and keeps misses begun before from putting anything back).
    pub(super) fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            let generation = inner.generation + 1;
            *inner = Inner { generation, floor: generation, ..Inner::default() };
        }
    }

    /// Bytes counted now (for tests and metrics).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().map(|inner| inner.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::room_version_rules::RoomVersionRules;
    use serde_json::value::RawValue;

    use super::{EventCache, Lookup, Pdu};

    fn event(body: &str) -> (Box<RawValue>, Arc<Pdu>) {
        let json = serde_json::json!({
            "auth_events": [], "prev_events": [], "depth": 1, "content": { "body": body },
            "origin_server_ts": 1, "room_id": "!r:x", "sender": "@a:x", "type": "m.room.message",
        });
        let raw = serde_json::value::to_raw_value(&json).unwrap();
        let pdu = Pdu::from_stored(&raw, "$e".try_into().unwrap(), &RoomVersionRules::V11).unwrap();
        (raw, Arc::new(pdu))
    }

    fn ticket(cache: &EventCache, short: u64) -> u64 {
        match cache.lookup(short) {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    fn hit(cache: &EventCache, short: u64) -> bool {
        matches!(cache.lookup(short), Lookup::Hit(_))
    }

    #[test]
    fn forgotten_events_miss() {
        let cache = EventCache::new(1 << 20);
        let (raw, pdu) = event("hello");
        let t = ticket(&cache, 7);
        cache.put(7, &raw, pdu.clone(), t);
        assert!(hit(&cache, 7));
        assert!(!hit(&cache, 8));
        cache.forget(7);
        assert!(!hit(&cache, 7), "a rewritten event is read again");
    }

    #[test]
    fn a_read_before_a_rewrite_is_not_kept() {
        let cache = EventCache::new(1 << 20);
        let (raw, pdu) = event("hello");
        let t7 = ticket(&cache, 7);
        let t8 = ticket(&cache, 8);
        // Event 7 is rewritten (and forgotten) between this reader's read and its put.
        cache.forget(7);
        cache.put(7, &raw, pdu.clone(), t7);
        assert!(!hit(&cache, 7), "the old form read before the rewrite is not put back");
        cache.put(8, &raw, pdu.clone(), t8);
        assert!(hit(&cache, 8), "a forget of another event does not stop this one");
        let t9 = ticket(&cache, 9);
        cache.clear();
        cache.put(9, &raw, pdu.clone(), t9);
        assert!(!hit(&cache, 9), "nothing read before a clear is kept");
        let t9 = ticket(&cache, 9);
        cache.put(9, &raw, pdu, t9);
        assert!(hit(&cache, 9));
    }

    fn meta(position: u64) -> crate::storage::room_tables::EventMeta {
        crate::storage::room_tables::EventMeta {
            room: 1,
            position: Some(position),
            state_after: 2,
            state_before: Some(1),
            state_key: None,
            depth: 3,
            soft_failed: false,
            rejected: false,
        }
    }

    #[test]
    fn event_meta_is_kept_beside_the_event_and_forgotten_with_it() {
        let cache = EventCache::new(1 << 20);
        let (raw, pdu) = event("hello");
        // Not cached: nothing kept.
        let Err(t) = cache.meta(7) else { panic!("expected a miss") };
        cache.put_meta(7, &meta(10), t);
        assert!(cache.meta(7).is_err());
        let t = ticket(&cache, 7);
        cache.put(7, &raw, pdu.clone(), t);
        let Err(t) = cache.meta(7) else { panic!("expected a miss") };
        cache.put_meta(7, &meta(10), t);
        assert_eq!(cache.meta(7).map(|m| m.position).ok(), Some(Some(10)));
        cache.forget(7);
        assert!(cache.meta(7).is_err(), "a rewritten event's facts are read again");
        // A read of the facts before a rewrite is not kept after it.
        let t = ticket(&cache, 7);
        cache.put(7, &raw, pdu, t);
        let Err(t) = cache.meta(7) else { panic!("expected a miss") };
        cache.forget(7);
        let t2 = ticket(&cache, 7);
        let (raw, pdu) = event("hello again");
        cache.put(7, &raw, pdu, t2);
        cache.put_meta(7, &meta(10), t);
        assert!(cache.meta(7).is_err(), "the old facts are not put back");
    }

    #[test]
    fn too_many_forgets_keep_nothing_older() {
        let cache = EventCache::new(1 << 20);
        let (raw, pdu) = event("hello");
        let t = ticket(&cache, 5);
        for short in 100..100 + super::RECENT_FORGETS as u64 + 1 {
            cache.forget(short);
        }
        cache.put(5, &raw, pdu, t);
        assert!(!hit(&cache, 5), "forgets dropped from the record may have named it");
    }

    #[test]
    fn bounded_in_bytes() {
        let cache = EventCache::new(20_000);
        for short in 0..1000 {
            let (raw, pdu) = event(&format!("message {short}"));
            let t = ticket(&cache, short);
            cache.put(short, &raw, pdu, t);
            assert!(cache.bytes() <= 20_000);
        }
        assert!(hit(&cache, 999), "the newest entry is kept");
        let off = EventCache::new(0);
        let (raw, pdu) = event("x");
        let t = ticket(&off, 1);
        off.put(1, &raw, pdu, t);
        assert!(!hit(&off, 1));
    }
}
