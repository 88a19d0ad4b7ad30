//! Room state as layered diffs: a state group is a diff against a parent group, and every
//! `MAX_CHAIN` diffs a full snapshot starts a new chain, so loading any group reads a bounded
//! number of rows. Loaded groups are cached in memory.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use crate::{
    Error, Result,
    storage::{
        Batch, Db, IdAllocator,
        room_tables::{STATE_GROUPS, StateGroup},
    },
};

/// Short state key -> short event id.
pub type ShortStateMap = BTreeMap<u64, u64>;

/// Diffs in a chain before a full snapshot is written instead.
const MAX_CHAIN: u32 = 24;
/// Loaded groups kept in memory.
const CACHE_GROUPS: usize = 512;

pub struct StateGroups {
    allocator: IdAllocator,
    cache: Mutex<HashMap<u64, Arc<ShortStateMap>>>,
    /// Chain lengths of groups made recently, so a group can have a parent whose batch has not
    /// been committed yet (the event's state and the room's resolved state share one batch).
    chain_lengths: Mutex<HashMap<u64, u32>>,
}

impl StateGroups {
    pub fn new(db: &Db) -> Result<Self> {
        Ok(Self {
            allocator: IdAllocator::after_last_key(db, &STATE_GROUPS)?,
            cache: Mutex::new(HashMap::new()),
            chain_lengths: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, group: u64) -> Option<Arc<ShortStateMap>> {
        self.cache.lock().ok()?.get(&group).cloned()
    }

    fn remember(&self, group: u64, map: Arc<ShortStateMap>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_GROUPS {
                cache.clear();
            }
            cache.insert(group, map);
        }
    }

    /// The full state of a group.
    pub fn load(&self, db: &Db, group: u64) -> Result<Arc<ShortStateMap>> {
        if let Some(map) = self.cached(group) {
            return Ok(map);
        }
        let mut chain = Vec::new();
        let mut next = Some(group);
        let mut base: Option<Arc<ShortStateMap>> = None;
        while let Some(id) = next {
            if id != group
                && let Some(map) = self.cached(id)
            {
                base = Some(map);
                break;
            }
            let diff =
                STATE_GROUPS.get(db, &id)?.ok_or_else(|| Error::internal(format!("state group {id} missing")))?;
            next = diff.parent;
            chain.push(diff);
        }
        let mut map = base.map(|m| (*m).clone()).unwrap_or_default();
        for diff in chain.iter().rev() {
            for key in &diff.removed {
                map.remove(key);
            }
            map.extend(diff.added.iter().copied());
        }
        let map = Arc::new(map);
        self.remember(group, map.clone());
        Ok(map)
    }

    /// Stores `state` as a new group (a diff against `parent` when the chain allows) in `batch`.
    pub fn store(&self, db: &Db, batch: &mut Batch, parent: Option<u64>, state: Arc<ShortStateMap>) -> Result<u64> {
        let group = self.allocator.next();
        let record = match parent {
            Some(parent_id) => {
                let parent_chain = match self.chain_lengths.lock().ok().and_then(|m| m.get(&parent_id).copied()) {
                    Some(length) => length,
                    None => {
                        STATE_GROUPS
                            .get(db, &parent_id)?
                            .ok_or_else(|| Error::internal("parent state group missing"))?
                            .chain_length
                    }
                };
                if parent_chain < MAX_CHAIN {
                    let parent_map = self.load(db, parent_id)?;
                    let added =
                        state.iter().filter(|(k, v)| parent_map.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
                    let removed = parent_map.keys().filter(|k| !state.contains_key(k)).copied().collect();
                    StateGroup { parent: Some(parent_id), chain_length: parent_chain + 1, added, removed }
                } else {
                    full_snapshot(&state)
                }
            }
            None => full_snapshot(&state),
        };
        batch.put(&STATE_GROUPS, &group, &record)?;
        if let Ok(mut lengths) = self.chain_lengths.lock() {
            if lengths.len() >= CACHE_GROUPS {
                lengths.clear();
            }
            lengths.insert(group, record.chain_length);
        }
        self.remember(group, state);
        Ok(group)
    }
}

fn full_snapshot(state: &ShortStateMap) -> StateGroup {
    StateGroup {
        parent: None,
        chain_length: 0,
        added: state.iter().map(|(k, v)| (*k, *v)).collect(),
        removed: Vec::new(),
    }
}
