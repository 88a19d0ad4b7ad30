//! Interning: event IDs, room IDs and (type, state key) pairs as u64 short ids. Lookups of
//! committed ids are cached.
//!
//! New event and room ids are written in the caller's batch: both are only ever introduced under
//! their room's lock (an event ID names its room, hashed into it from v3; a room ID is new only
//! with its create event), so no two writers can allocate one twice. A (type, state key) pair is
//! shared by every room, so it is allocated under one lock and written through at once, in its
//! own small batch: two rooms introducing the same pair at once get the same id. An id whose
//! event never commits stays, unused and harmless.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, events::StateEventType};

use crate::{
    Error, Result,
    storage::{
        Batch, Db, IdAllocator,
        room_tables::{EVENT_IDS, ROOM_IDS, SHORT_EVENT_IDS, SHORT_ROOM_IDS, SHORT_STATE_KEYS, STATE_KEYS},
    },
};

const CACHE_ENTRIES: usize = 100_000;

pub struct Interner {
    /// The committed store, for state keys written through (see the module comment).
    base: Db,
    /// Serialises the check-then-allocate of state keys.
    state_key_allocation: Mutex<()>,
    events: IdAllocator,
    rooms: IdAllocator,
    state_keys: IdAllocator,
    state_key_names: Mutex<HashMap<u64, Arc<(StateEventType, String)>>>,
    state_key_ids: Mutex<HashMap<(String, String), u64>>,
    event_ids: Mutex<HashMap<u64, OwnedEventId>>,
    /// Committed event IDs' short ids (a short id, once written, never changes or goes away).
    short_events: Mutex<HashMap<OwnedEventId, u64>>,
    /// Committed room IDs' short ids (likewise).
    short_rooms: Mutex<HashMap<OwnedRoomId, u64>>,
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    if let Ok(mut map) = map.lock() {
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, value);
    }
}

impl Interner {
    pub fn new(db: &Db) -> Result<Self> {
        Ok(Self {
            base: db.clone(),
            state_key_allocation: Mutex::new(()),
            events: IdAllocator::after_last_key(db, &EVENT_IDS)?,
            rooms: IdAllocator::after_last_key(db, &ROOM_IDS)?,
            state_keys: IdAllocator::after_last_key(db, &STATE_KEYS)?,
            state_key_names: Mutex::new(HashMap::new()),
            state_key_ids: Mutex::new(HashMap::new()),
            event_ids: Mutex::new(HashMap::new()),
            short_events: Mutex::new(HashMap::new()),
            short_rooms: Mutex::new(HashMap::new()),
        })
    }

    pub fn short_event(&self, db: &Db, event_id: &EventId) -> Result<Option<u64>> {
        self.committed_short(&self.short_events, db, event_id, || Ok(SHORT_EVENT_IDS.get(db, &event_id.to_string())?))
    }

    /// A short id from `cache`, or as `read` finds it. Only what is committed is cached, never
    /// what a staged view (a room being created) holds: that may still be dropped.
    fn committed_short<K, Q>(
        &self,
        cache: &Mutex<HashMap<K, u64>>,
        db: &Db,
        id: &Q,
        read: impl FnOnce() -> Result<Option<u64>>,
    ) -> Result<Option<u64>>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    {
        if let Some(short) = cache.lock().ok().and_then(|m| m.get(id).copied()) {
            return Ok(Some(short));
        }
        let short = read()?;
        if let Some(short) = short
            && db.same_store(&self.base)
        {
            bounded_insert(cache, id.to_owned(), short);
        }
        Ok(short)
    }

    /// The short id of an event, allocating one in `batch` if it has none yet.
    pub fn short_event_or_new(&self, db: &Db, batch: &mut Batch, event_id: &EventId) -> Result<u64> {
        if let Some(short) = self.short_event(db, event_id)? {
            return Ok(short);
        }
        let short = self.events.next();
        batch.put(&SHORT_EVENT_IDS, &event_id.to_string(), &short)?;
        batch.put(&EVENT_IDS, &short, &event_id.to_string())?;
        Ok(short)
    }

    pub fn event_id(&self, db: &Db, short: u64) -> Result<OwnedEventId> {
        if let Some(id) = self.event_ids.lock().ok().and_then(|m| m.get(&short).cloned()) {
            return Ok(id);
        }
        let id = EVENT_IDS.get(db, &short)?.ok_or_else(|| Error::internal(format!("short event {short} unknown")))?;
        let id = OwnedEventId::try_from(id).map_err(|e| Error::internal(e.to_string()))?;
        bounded_insert(&self.event_ids, short, id.clone());
        Ok(id)
    }

    pub fn short_room(&self, db: &Db, room_id: &RoomId) -> Result<Option<u64>> {
        self.committed_short(&self.short_rooms, db, room_id, || Ok(SHORT_ROOM_IDS.get(db, &room_id.to_owned())?))
    }

    pub fn room_id(&self, db: &Db, short: u64) -> Result<OwnedRoomId> {
        ROOM_IDS.get(db, &short)?.ok_or_else(|| Error::internal(format!("short room {short} unknown")))
    }

    pub fn short_room_or_new(&self, db: &Db, batch: &mut Batch, room_id: &RoomId) -> Result<u64> {
        if let Some(short) = self.short_room(db, room_id)? {
            return Ok(short);
        }
        let short = self.rooms.next();
        batch.put(&SHORT_ROOM_IDS, &room_id.to_owned(), &short)?;
        batch.put(&ROOM_IDS, &short, &room_id.to_owned())?;
        Ok(short)
    }

    pub fn short_state_key(&self, db: &Db, kind: &str, state_key: &str) -> Result<Option<u64>> {
        let key = (kind.to_owned(), state_key.to_owned());
        if let Some(short) = self.state_key_ids.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(Some(short));
        }
        let short = SHORT_STATE_KEYS.get(db, &key)?;
        if let Some(short) = short {
            bounded_insert(&self.state_key_ids, key, short);
        }
        Ok(short)
    }

    /// The short id of a (type, state key) pair, allocating and storing one if it has none.
    pub fn short_state_key_or_new(&self, db: &Db, kind: &str, state_key: &str) -> Result<u64> {
        if let Some(short) = self.short_state_key(db, kind, state_key)? {
            return Ok(short);
        }
        let _allocating = self.state_key_allocation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (kind.to_owned(), state_key.to_owned());
        // Checked again under the lock, in the committed store: another room may just have
        // introduced the same pair.
        if let Some(short) = SHORT_STATE_KEYS.get(&self.base, &key)? {
            bounded_insert(&self.state_key_ids, key, short);
            return Ok(short);
        }
        let short = self.state_keys.next();
        let mut batch = Batch::new();
        batch.put(&SHORT_STATE_KEYS, &key, &short)?;
        batch.put(&STATE_KEYS, &short, &key)?;
        self.base.write(batch)?;
        bounded_insert(&self.state_key_ids, key, short);
        Ok(short)
    }

    pub fn state_key(&self, db: &Db, short: u64) -> Result<Arc<(StateEventType, String)>> {
        if let Some(names) = self.state_key_names.lock().ok().and_then(|m| m.get(&short).cloned()) {
            return Ok(names);
        }
        let (kind, state_key) =
            STATE_KEYS.get(db, &short)?.ok_or_else(|| Error::internal(format!("short state key {short} unknown")))?;
        let names = Arc::new((StateEventType::from(kind), state_key));
        bounded_insert(&self.state_key_names, short, names.clone());
        Ok(names)
    }
}
