//! A cache of parsed stored events by short event ID, bounded in bytes (`event_cache_capacity_mb`).
//!
//! Serving an event (a sync, `/messages`, `/context`) used to parse its stored JSON every time;
//! with this cache a read of a known event costs the storage read and a byte comparison. Each
//! entry keeps the exact stored bytes it was parsed from and is used only when the stored bytes
//! read now are the same, so a stored event rewritten in place (erasure, pruning) can never be
//! answered from a stale entry, whatever path rewrote it. Redactions are applied after the cache
//! (`event_for_client` looks at the redactions of the event each time), so they need nothing here.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde_json::value::RawValue;

use super::Pdu;

/// Fixed cost counted per entry besides its JSON (the parsed fields, the map and queue slots).
const ENTRY_OVERHEAD: usize = 256;

/// Parsed JSON takes about this many times the bytes of its text (keys, values and tree nodes).
const PARSED_FACTOR: usize = 3;

struct Entry {
    stored: Box<RawValue>,
    pdu: Arc<Pdu>,
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

    /// The parsed event, when the cached entry was parsed from exactly `stored` (the bytes as
    /// stored).
    pub(super) fn get(&self, short: u64, stored: &[u8]) -> Option<Arc<Pdu>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get_mut(&short)?;
        if entry.stored.get().as_bytes() != stored {
            return None;
        }
        entry.used = true;
        Some(entry.pdu.clone())
    }

    /// Keeps `pdu`, parsed from `stored`, evicting the least recently used entries over capacity.
    pub(super) fn put(&self, short: u64, stored: Box<RawValue>, pdu: Arc<Pdu>) {
        let bytes = stored.get().len() * (1 + PARSED_FACTOR) + ENTRY_OVERHEAD;
        if bytes > self.capacity / 8 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        if let Some(old) = inner.entries.insert(short, Entry { stored, pdu, bytes, used: false }) {
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

    /// Forgets everything.
    pub(super) fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner = Inner::default();
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

    use super::{EventCache, Pdu};

    fn event(body: &str) -> (Box<RawValue>, Arc<Pdu>) {
        let json = serde_json::json!({
            "auth_events": [], "prev_events": [], "depth": 1, "content": { "body": body },
            "origin_server_ts": 1, "room_id": "!r:x", "sender": "@a:x", "type": "m.room.message",
        });
        let raw = serde_json::value::to_raw_value(&json).unwrap();
        let pdu = Pdu::from_stored(&raw, "$e".try_into().unwrap(), &RoomVersionRules::V11).unwrap();
        (raw, Arc::new(pdu))
    }

    #[test]
    fn rewritten_bytes_miss() {
        let cache = EventCache::new(1 << 20);
        let (raw, pdu) = event("hello");
        cache.put(7, raw.clone(), pdu);
        assert!(cache.get(7, raw.get().as_bytes()).is_some());
        let (other, _) = event("redacted");
        assert!(
            cache.get(7, other.get().as_bytes()).is_none(),
            "an entry is used only for the bytes it was parsed from"
        );
        assert!(cache.get(8, raw.get().as_bytes()).is_none());
    }

    #[test]
    fn bounded_in_bytes() {
        let cache = EventCache::new(20_000);
        for short in 0..1000 {
            let (raw, pdu) = event(&format!("message {short}"));
            cache.put(short, raw, pdu);
            assert!(cache.bytes() <= 20_000);
        }
        let (raw, _) = event("message 999");
        assert!(cache.get(999, raw.get().as_bytes()).is_some(), "the newest entry is kept");
        let off = EventCache::new(0);
        let (raw, pdu) = event("x");
        off.put(1, raw.clone(), pdu);
        assert!(off.get(1, raw.get().as_bytes()).is_none());
    }
}
