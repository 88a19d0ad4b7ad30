//! A staged view of the database: writes collect in memory over a base engine, reads see them
//! (read-your-writes, scans included), and [`Staged::into_batch`] hands everything over as one
//! batch. A change made of several events (a new room's first events) is built on such a view
//! and committed at once, so a failure half-way leaves nothing behind.

use std::{
    collections::BTreeMap,
    iter::Peekable,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    Batch, Db, StorageError,
    engine::{Engine, KeyValue, ScanDirection, ScanIter, WriteOp},
};

type Pending = BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;
/// A staged entry of one table: its key, and its value or `None` for a deletion.
type StagedEntry = (Vec<u8>, Option<Vec<u8>>);

/// Writes staged over a base engine. Cheap to share: [`Staged::db`] gives a [`Db`] over it.
pub struct Staged {
    engine: Arc<StagedEngine>,
    /// The base's encryption at rest: staged handles hash index terms as the base does.
    base: Db,
}

struct StagedEngine {
    base: Arc<dyn Engine>,
    pending: Mutex<Pending>,
}

impl StagedEngine {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map holds plain bytes: a panic elsewhere cannot leave it half-updated.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Staged {
    pub fn new(base: &Db) -> Self {
        Self {
            engine: Arc::new(StagedEngine { base: base.engine.clone(), pending: Mutex::new(BTreeMap::new()) }),
            base: base.clone(),
        }
    }

    /// A database handle whose reads see the staged writes and whose writes are staged.
    pub fn db(&self) -> Db {
        self.base.with_staged_engine(self.engine.clone())
    }

    /// Everything staged, as one batch for the base database.
    pub fn into_batch(self) -> Batch {
        let pending = std::mem::take(&mut *self.engine.pending());
        Batch { ops: pending.into_iter().map(|((table, key), value)| WriteOp { table, key, value }).collect() }
    }
}

impl Engine for StagedEngine {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(value) = self.pending().get(&(table, key.to_vec())) {
            return Ok(value.clone());
        }
        self.base.get(table, key)
    }

    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError> {
        // A snapshot of the staged entries of this table in the scan's range and order.
        let staged: Vec<StagedEntry> = {
            let pending = self.pending();
            let in_table = pending.range((table, Vec::new())..).take_while(|((t, _), _)| *t == table);
            match direction {
                ScanDirection::Forward => in_table
                    .filter(|((_, key), _)| key.as_slice() >= start)
                    .map(|((_, key), value)| (key.clone(), value.clone()))
                    .collect(),
                ScanDirection::Reverse => {
                    let mut entries: Vec<_> = in_table
                        .filter(|((_, key), _)| key.as_slice() <= start)
                        .map(|((_, key), value)| (key.clone(), value.clone()))
                        .collect();
                    entries.reverse();
                    entries
                }
            }
        };
        let base = self.base.scan(table, start, direction)?;
        Ok(Box::new(Merged { base: base.peekable(), staged: staged.into_iter().peekable(), direction }))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut pending = self.pending();
        for op in ops {
            pending.insert((op.table, op.key), op.value);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Merges a base scan with staged entries in the same order; staged entries win, and staged
/// deletions hide base entries.
struct Merged<'a> {
    base: Peekable<ScanIter<'a>>,
    staged: Peekable<std::vec::IntoIter<StagedEntry>>,
    direction: ScanDirection,
}

impl Iterator for Merged<'_> {
    type Item = Result<KeyValue, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_key = match self.base.peek() {
                Some(Ok((key, _))) => Some(key.clone()),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let staged_key = self.staged.peek().map(|(key, _)| key.clone());
            let take_staged = match (&base_key, &staged_key) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(base), Some(staged)) => {
                    if base == staged {
                        // The staged write replaces the stored value.
                        self.base.next();
                        true
                    } else {
                        match self.direction {
                            ScanDirection::Forward => staged < base,
                            ScanDirection::Reverse => staged > base,
                        }
                    }
                }
            };
            if !take_staged {
                return self.base.next();
            }
            match self.staged.next() {
                Some((key, Some(value))) => return Some(Ok((key, value))),
                // A staged deletion: skip it (the stored entry, if any, was consumed above).
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Table, memory::MemoryEngine};

    const T: Table<u64, String> = Table::new("t");

    #[test]
    fn reads_see_staged_writes_and_scans_merge_in_order() {
        let base = Db::with_engine(Arc::new(MemoryEngine::default()));
        let mut batch = Batch::new();
        for key in [1u64, 3, 5, 7] {
            batch.put(&T, &key, &format!("base{key}")).unwrap();
        }
        base.write(batch).unwrap();

        let staged = Staged::new(&base);
        let view = staged.db();
        let mut batch = Batch::new();
        batch.put(&T, &2, &"new2".to_owned()).unwrap();
        batch.put(&T, &5, &"new5".to_owned()).unwrap();
        batch.delete(&T, &3);
        batch.put(&T, &9, &"new9".to_owned()).unwrap();
        view.write(batch).unwrap();

        assert_eq!(T.get(&view, &5).unwrap().as_deref(), Some("new5"));
        assert_eq!(T.get(&view, &3).unwrap(), None);
        assert_eq!(T.get(&base, &3).unwrap().as_deref(), Some("base3"));
        let forward: Vec<u64> = T.all(&view).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(forward, vec![1, 2, 5, 7, 9]);
        let reverse: Vec<(u64, String)> = T.scan_from(&view, &6, ScanDirection::Reverse, 10, |_| true).unwrap();
        assert_eq!(reverse, vec![(5, "new5".to_owned()), (2, "new2".to_owned()), (1, "base1".to_owned())]);

        base.write(staged.into_batch()).unwrap();
        let committed: Vec<u64> = T.all(&base).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(committed, vec![1, 2, 5, 7, 9]);
    }
}
