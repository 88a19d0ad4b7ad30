//! The encrypting [`Engine`] wrapper: every value written through it is sealed for its table
//! and key, every value read is opened, so all tables are covered without table code knowing.
//! Keys pass through unchanged (ordered scans need them). The `encryption` table's own records
//! seal themselves and pass through raw.
//!
//! Writers share a gate that a rotation batch takes alone while it re-reads and rewrites its
//! rows, so a rotation never writes back a value older than one a writer just stored.

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use serde::Serialize;

use super::{ENCRYPTION_TABLE, Keyring, rotation::RotationState, sealed_key_id, startup::Plan};
use crate::storage::{
    StorageError,
    engine::{Engine, ScanDirection, ScanIter, StoreStats, WriteOp, WriteStats},
};

pub struct EncryptedEngine {
    inner: Arc<dyn Engine>,
    keyring: Arc<Keyring>,
    gate: RwLock<()>,
    /// The rotation in progress, as last written (for the status endpoint).
    rotation: Mutex<Option<RotationState>>,
}

/// What an admin sees of encryption at rest.
#[derive(Debug, Clone, Serialize)]
pub struct EncryptionStatus {
    pub active_key_id: String,
    /// The rotation in progress, `None` when every value and file is under the active key.
    pub rotation: Option<RotationState>,
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError("encryption gate poisoned".into())
}

impl EncryptedEngine {
    /// Wraps `inner` with the keyring of `plan`, writing the plan's records (key check, index
    /// key, rotation cursor) first.
    pub fn open(inner: Arc<dyn Engine>, plan: Plan) -> Result<Self, StorageError> {
        if !plan.writes.is_empty() {
            inner.write(plan.writes)?;
        }
        Ok(Self { inner, keyring: Arc::new(plan.keyring), gate: RwLock::new(()), rotation: Mutex::new(plan.rotation) })
    }

    /// A wrapper over `inner` with a given keyring (unit tests).
    #[cfg(test)]
    pub fn with_keyring(inner: Arc<dyn Engine>, keyring: Keyring) -> Self {
        Self { inner, keyring: Arc::new(keyring), gate: RwLock::new(()), rotation: Mutex::new(None) }
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The engine below, for the `encryption` table's raw records.
    pub(super) fn raw(&self) -> &dyn Engine {
        self.inner.as_ref()
    }

    pub fn rotation(&self) -> Option<RotationState> {
        self.rotation.lock().ok().and_then(|r| r.clone())
    }

    pub(super) fn set_rotation(&self, state: Option<RotationState>) {
        if let Ok(mut slot) = self.rotation.lock() {
            *slot = state;
        }
    }

    pub fn status(&self) -> EncryptionStatus {
        EncryptionStatus { active_key_id: self.keyring.active_id().to_string(), rotation: self.rotation() }
    }

    /// Re-seals under the active key at most `limit` rows of `table` after the state's cursor,
    /// and writes the moved cursor in the same batch. Returns whether the table is done.
    pub(super) fn rotate_batch(
        &self,
        table: &'static str,
        state: &mut RotationState,
        limit: usize,
    ) -> Result<bool, StorageError> {
        let active = self.keyring.active_id();
        let after = state.after_key();
        let mut candidates = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        for item in self.inner.scan(table, after.as_deref().unwrap_or_default(), ScanDirection::Forward)? {
            let (key, value) = item?;
            if after.as_deref() == Some(key.as_slice()) {
                continue;
            }
            scanned += 1;
            if sealed_key_id(&value) != Some(active) {
                candidates.push(key.clone());
            }
            last = Some(key);
            if scanned >= limit {
                break;
            }
        }
        let done = scanned < limit;
        let _alone = self.gate.write().map_err(poisoned)?;
        let mut ops = Vec::with_capacity(candidates.len() + 1);
        for key in candidates {
            // Read again under the gate: a writer may have replaced or deleted the row.
            let Some(value) = self.inner.get(table, &key)? else { continue };
            if sealed_key_id(&value) == Some(active) {
                continue;
            }
            let plaintext = self.keyring.open(table, &key, &value)?;
            let value = self.keyring.seal(table, &key, &plaintext)?;
            ops.push(WriteOp { table, key, value: Some(value) });
        }
        state.values += ops.len() as u64;
        if let Some(last) = last {
            state.set_after(&last);
        }
        ops.push(state.record()?);
        self.inner.write(ops)?;
        drop(_alone);
        self.set_rotation(Some(state.clone()));
        Ok(done)
    }
}

impl Engine for EncryptedEngine {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.inner.get(table, key)?;
        if table == ENCRYPTION_TABLE {
            return Ok(value);
        }
        value.map(|stored| self.keyring.open(table, key, &stored)).transpose()
    }

    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError> {
        let inner = self.inner.scan(table, start, direction)?;
        if table == ENCRYPTION_TABLE {
            return Ok(inner);
        }
        let keyring = &self.keyring;
        Ok(Box::new(inner.map(move |item| {
            let (key, stored) = item?;
            let value = keyring.open(table, &key, &stored)?;
            Ok((key, value))
        })))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let sealed = self.seal_ops(ops)?;
        let _shared = self.gate.read().map_err(poisoned)?;
        self.inner.write(sealed)
    }

    fn write_unsynced(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let sealed = self.seal_ops(ops)?;
        let _shared = self.gate.read().map_err(poisoned)?;
        self.inner.write_unsynced(sealed)
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        self.inner.sync_wal()
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }

    fn compact_all(&self) -> Result<(), StorageError> {
        self.inner.compact_all()
    }

    fn write_stats(&self) -> Option<WriteStats> {
        self.inner.write_stats()
    }

    fn store_stats(&self) -> Option<StoreStats> {
        self.inner.store_stats()
    }

    /// The copy holds the sealed values: restoring it needs the key that was active when it
    /// was taken.
    fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        self.inner.checkpoint(dir)
    }

    fn mutable_copy_file(&self, name: &str) -> bool {
        self.inner.mutable_copy_file(name)
    }
}

impl EncryptedEngine {
    /// The writes with their values sealed (the encryption table's own rows stay plain).
    fn seal_ops(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOp>, StorageError> {
        ops.into_iter()
            .map(|op| match op.value {
                Some(value) if op.table != ENCRYPTION_TABLE => {
                    let value = self.keyring.seal(op.table, &op.key, &value)?;
                    Ok(WriteOp { value: Some(value), ..op })
                }
                _ => Ok(op),
            })
            .collect::<Result<Vec<_>, StorageError>>()
    }
}
