//! A bounded in-memory map that keeps what was used recently, for caches of facts that never
//! change once stored (a state group's state, a room's version), or of copies kept under a
//! write generation (a resolved access token). It holds two generations:
//! new entries go into the current one, and when it is full it becomes the previous one and the
//! older entries are dropped. A hit in the previous generation moves the entry back into the
//! current one, so whatever is still in use survives a rotation. Unlike clearing a full map,
//! a working set smaller than one generation is never dropped all at once.

use std::{borrow::Borrow, collections::HashMap, hash::Hash, sync::Mutex};

pub(crate) struct RecentMap<K, V> {
    per_generation: usize,
    generations: Mutex<Generations<K, V>>,
}

struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> RecentMap<K, V> {
    /// A map of at most `2 * per_generation` entries.
    pub(crate) fn new(per_generation: usize) -> Self {
        let generations = Generations { current: HashMap::new(), previous: HashMap::new() };
        Self { per_generation: per_generation.max(1), generations: Mutex::new(generations) }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut generations = self.generations.lock().ok()?;
        if let Some(value) = generations.current.get(key) {
            return Some(value.clone());
        }
        let (key, value) = generations.previous.remove_entry(key)?;
        self.insert_into(&mut generations, key, value.clone());
        Some(value)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        if let Ok(mut generations) = self.generations.lock() {
            generations.previous.remove(&key);
            self.insert_into(&mut generations, key, value);
        }
    }

    fn insert_into(&self, generations: &mut Generations<K, V>, key: K, value: V) {
        if generations.current.len() >= self.per_generation && !generations.current.contains_key(&key) {
            generations.previous = std::mem::take(&mut generations.current);
        }
        generations.current.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::RecentMap;

    #[test]
    fn entries_in_use_survive_rotations_and_unused_ones_go() {
        let map = RecentMap::new(2);
        map.insert(1, "one");
        map.insert(2, "two");
        // The first generation is full: 1 and 2 move to the previous one.
        map.insert(3, "three");
        // 1 is used again, so it comes back into the current generation (which is then full).
        assert_eq!(map.get(&1), Some("one"));
        // A rotation: 3 and 1 are the previous generation, 2 is dropped.
        map.insert(4, "four");
        assert_eq!(map.get(&2), None);
        assert_eq!(map.get(&1), Some("one"));
        assert_eq!(map.get(&3), Some("three"));
        assert_eq!(map.get(&4), Some("four"));
    }

    #[test]
    fn a_working_set_of_one_generation_is_never_dropped() {
        let map = RecentMap::new(4);
        for round in 0..50 {
            // Four entries in use, and a stream of entries used once.
            for key in 0..4 {
                if map.get(&key).is_none() {
                    assert!(round < 2, "key {key} dropped in round {round}");
                    map.insert(key, key);
                }
            }
            map.insert(1000 + round, round);
        }
    }

    #[test]
    fn inserting_again_replaces_the_value() {
        let map = RecentMap::new(1);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 3);
        assert_eq!(map.get("a"), Some(3));
        assert_eq!(map.get("b"), Some(2));
    }
}
