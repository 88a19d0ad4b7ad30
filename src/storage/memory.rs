//! An in-memory [`Engine`] for unit tests: one ordered map per table behind a mutex, with the
//! same ordering, scan and atomic-batch contract as RocksDB.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use super::{
    StorageError,
    engine::{Engine, KeyValue, ScanDirection, ScanIter, StoreStats, TableStats, WriteOp},
};

type Tables = HashMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub struct MemoryEngine {
    tables: Mutex<Tables>,
}

impl MemoryEngine {
    fn tables(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StorageError> {
        self.tables.lock().map_err(|_| StorageError("memory engine poisoned".into()))
    }
}

impl Engine for MemoryEngine {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tables()?.get(table).and_then(|t| t.get(key).cloned()))
    }

    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError> {
        let tables = self.tables()?;
        let items: Vec<KeyValue> = match tables.get(table) {
            None => Vec::new(),
            Some(t) => match direction {
                ScanDirection::Forward => t.range(start.to_vec()..).map(|(k, v)| (k.clone(), v.clone())).collect(),
                ScanDirection::Reverse => {
                    t.range(..=start.to_vec()).rev().map(|(k, v)| (k.clone(), v.clone())).collect()
                }
            },
        };
        Ok(Box::new(items.into_iter().map(Ok)))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let mut tables = self.tables()?;
        for op in ops {
            let table = tables.entry(op.table).or_default();
            match op.value {
                Some(value) => table.insert(op.key, value),
                None => table.remove(&op.key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Everything is in memory: keys are counted exactly, their bytes are the memory figure.
    fn store_stats(&self) -> Option<StoreStats> {
        let tables = self.tables().ok()?;
        let mut stats: Vec<TableStats> = tables
            .iter()
            .map(|(name, rows)| TableStats {
                table: (*name).to_owned(),
                estimated_keys: rows.len() as u64,
                memory_bytes: rows.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
                ..TableStats::default()
            })
            .collect();
        stats.sort_by(|a, b| a.table.cmp(&b.table));
        Some(StoreStats { tables: stats, cache_bytes: 0 })
    }
}
