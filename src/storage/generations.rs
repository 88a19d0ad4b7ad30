//! Write generations: counters that [`Db::write`](super::Db::write) moves on for the rows of the
//! tables services keep copies of in memory, so a cache can tell that its copy may be stale
//! without reading the table. A counter covers the rows whose key starts with the same first
//! component (a user, for `user_rooms`), hashed into a few slots: rows of other users that share
//! a slot only cost a cache miss.
//!
//! A reader takes the generation *before* it reads the table and keeps its copy under it; the
//! writer moves the generation on *after* its batch is committed (and before it wakes anyone).
//! A copy read while a batch commits is therefore kept under the old generation and never served
//! after the write.

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

use super::{
    WriteOp,
    room_tables::USER_ROOMS,
    tables::{ACCESS_TOKENS, DEVICES, USERS},
};

/// The tables with generations. Their keys must start with a string component.
/// `user_rooms`: the rooms service's room lists; the other three: resolved access tokens.
const TABLES: &[&str] = &[USER_ROOMS.name, ACCESS_TOKENS.name, DEVICES.name, USERS.name];

const SLOTS: usize = 64;

pub(super) struct Generations {
    slots: [AtomicU64; SLOTS],
    hasher: std::hash::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| AtomicU64::new(0)), hasher: std::hash::RandomState::new() }
    }
}

impl Generations {
    /// The slot of a row of `table` whose encoded key starts with `key` (only its first string
    /// component counts), or `None` for a table without generations.
    fn slot(&self, table: &str, key: &[u8]) -> Option<usize> {
        if !TABLES.contains(&table) {
            return None;
        }
        // A string component ends with 0x00 0x01 (a zero byte inside is 0x00 0xFF).
        let end = key.windows(2).position(|pair| pair == [0x00, 0x01]).map_or(key.len(), |at| at + 2);
        let mut hasher = self.hasher.build_hasher();
        hasher.write(table.as_bytes());
        hasher.write(&key[..end]);
        Some((hasher.finish() % SLOTS as u64) as usize)
    }

    /// The slots a batch's writes touch, as a bit set (before the batch is written).
    pub(super) fn touched(&self, ops: &[WriteOp]) -> u64 {
        ops.iter().filter_map(|op| self.slot(op.table, &op.key)).fold(0, |set, slot| set | (1 << slot))
    }

    /// Moves the touched slots on (after the batch is written).
    pub(super) fn advance(&self, touched: u64) {
        for slot in 0..SLOTS {
            if touched & (1 << slot) != 0 {
                self.slots[slot].fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The generation of the rows of `table` whose key starts with the encoded `prefix`.
    pub(super) fn get(&self, table: &str, prefix: &[u8]) -> u64 {
        self.slot(table, prefix).map_or(0, |slot| self.slots[slot].load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::KeyCodec;

    #[test]
    fn a_write_moves_only_its_users_slot_on() {
        let generations = Generations::default();
        let alice = ("@alice:x".to_owned(),).encode();
        let before = generations.get(USER_ROOMS.name, &alice);
        let key = ("@alice:x".to_owned(), "!room:x".to_owned()).encode();
        let touched = generations.touched(&[WriteOp { table: USER_ROOMS.name, key, value: None }]);
        assert_ne!(touched, 0);
        generations.advance(touched);
        assert_eq!(generations.get(USER_ROOMS.name, &alice), before + 1);
        // Other tables have no generations.
        let other = generations.touched(&[WriteOp { table: "pdus", key: alice.clone(), value: None }]);
        assert_eq!(other, 0);
    }
}
