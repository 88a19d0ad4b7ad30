//! The key-value engine contract every table sits on: point reads, ordered scans and atomic
//! batches over named tables. RocksDB implements it today; a networked engine can later, so no
//! engine type appears above `storage`.

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

    /// Applies all writes atomically: after a crash either all or none are visible.
    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError>;

    fn put(&self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(vec![WriteOp { table, key: key.to_vec(), value: Some(value.to_vec()) }])
    }

    fn delete(&self, table: &'static str, key: &[u8]) -> Result<(), StorageError> {
        self.write(vec![WriteOp { table, key: key.to_vec(), value: None }])
    }

    /// Makes everything written so far durable in the engine's own files (for shutdown).
    fn flush(&self) -> Result<(), StorageError>;
}
