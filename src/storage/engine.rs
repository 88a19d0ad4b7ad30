//! The key-value engine contract every table sits on: point reads, ordered scans and atomic
//! batches over named tables. RocksDB implements it today; a networked engine can later, so no
//! engine type appears above `storage`.

use std::path::Path;

use crate::storage::StorageError;

/// One write in a batch: a value to store, or `None` to delete the key.
pub struct WriteOp {
    pub table: &'static str,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Where an ordered scan goes from its starting key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanDirection {
    /// Keys >= the start, ascending.
    Forward,
    /// Keys <= the start, descending.
    Reverse,
}

/// Counters of an engine's write path since it was opened (for logs, tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Whether `write` returns only after the batch is on stable storage.
    pub durable: bool,
    /// Batches written (calls of `write` that succeeded).
    pub batches: u64,
    /// Write groups: concurrent batches the engine committed together as one.
    pub groups: u64,
    /// Syncs of the write-ahead log to stable storage: with group commit one per write group
    /// (covering all its batches), plus one when the engine moves to a new log file; zero when
    /// writes are not durable.
    pub syncs: u64,
}

/// Size and key statistics of one table, as the engine estimates them (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    pub table: String,
    /// Estimated number of keys.
    pub estimated_keys: u64,
    /// Bytes in the table's files on disk.
    pub disk_bytes: u64,
    /// Estimated bytes of live data in those files (what a full compaction would leave).
    pub live_bytes: u64,
    /// Bytes of recent writes held in memory.
    pub memory_bytes: u64,
}

/// Size statistics of the whole store (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub tables: Vec<TableStats>,
    /// Bytes of the shared read cache in use.
    pub cache_bytes: u64,
}

pub type KeyValue = (Vec<u8>, Vec<u8>);
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KeyValue, StorageError>> + Send + 'a>;

pub trait Engine: Send + Sync + 'static {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Scans `table` from `start` in `direction`. Callers stop when keys leave their range.
    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError>;

    /// Applies all writes atomically: after a crash either all or none are visible. An engine
    /// opened for durable writes returns only once the batch is on stable storage, so it
    /// survives a power cut too.
    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError>;

    /// Applies all writes atomically, like [`Engine::write`], but returns before they are on
    /// stable storage even on an engine opened for durable writes: they are durable once a
    /// later [`Engine::sync_wal`] returns (see `group_commit.rs`). Readers see them at once.
    fn write_unsynced(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.write(ops)
    }

    /// Makes every write that returned before this call durable (a sync of the write-ahead
    /// log). Nothing to do for an engine whose writes are durable when they return.
    fn sync_wal(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn put(&self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(vec![WriteOp { table, key: key.to_vec(), value: Some(value.to_vec()) }])
    }

    fn delete(&self, table: &'static str, key: &[u8]) -> Result<(), StorageError> {
        self.write(vec![WriteOp { table, key: key.to_vec(), value: None }])
    }

    /// Makes everything written so far durable in the engine's own files (for shutdown).
    fn flush(&self) -> Result<(), StorageError>;

    /// Flushes everything written so far and rewrites every file of every table, so that
    /// deleted and overwritten values no longer exist anywhere on disk (not in the write-ahead
    /// log, not in older files). An engine that keeps nothing on disk has nothing to do.
    fn compact_all(&self) -> Result<(), StorageError> {
        self.flush()
    }

    /// The write path's counters, if the engine keeps them.
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }

    /// Size and key statistics of every table, if the engine keeps them (for metrics and the
    /// admin's storage report; [`Engine::compact_all`] makes them exact).
    fn store_stats(&self) -> Option<StoreStats> {
        None
    }

    /// Writes a consistent copy of the whole store, as of one moment, into `dir` (which must not
    /// exist yet) while writes go on, so that opening `dir` as a database gives that state. The
    /// files in `dir` never change afterwards; files with the same name in two copies of the
    /// same store hold the same bytes unless [`Engine::mutable_copy_file`] says otherwise (for
    /// incremental backups).
    fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let _ = dir;
        Err(StorageError("this storage engine cannot take online copies".into()))
    }

    /// Whether a file of a copy made by [`Engine::checkpoint`] may differ from a file of the
    /// same name in another copy (so an incremental backup must not reuse it by name).
    fn mutable_copy_file(&self, name: &str) -> bool {
        let _ = name;
        true
    }
}
