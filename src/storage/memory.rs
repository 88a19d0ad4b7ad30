//! An in-memory engine over a `BTreeMap`, for unit tests of code that sits on tables.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use super::{
    StorageError,
    engine::{Engine, ScanDirection, ScanIter, WriteOp},
};

#[derive(Default)]
pub struct MemoryEngine {
    entries: Mutex<BTreeMap<(&'static str, Vec<u8>), Vec<u8>>>,
}

impl MemoryEngine {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<(&'static str, Vec<u8>), Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries().get(&(table, key.to_vec())).cloned())
    }

    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError> {
        let entries = self.entries();
        let in_table = entries.range((table, Vec::new())..).take_while(|((t, _), _)| *t == table);
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = match direction {
            ScanDirection::Forward => in_table.filter(|((_, k), _)| k.as_slice() >= start).collect::<Vec<_>>(),
            ScanDirection::Reverse => in_table.filter(|((_, k), _)| k.as_slice() <= start).collect::<Vec<_>>(),
        }
        .into_iter()
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect();
        if direction == ScanDirection::Reverse {
            out.reverse();
        }
        Ok(Box::new(out.into_iter().map(Ok)))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut entries = self.entries();
        for op in ops {
            match op.value {
                Some(value) => entries.insert((op.table, op.key), value),
                None => entries.remove(&(op.table, op.key)),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
