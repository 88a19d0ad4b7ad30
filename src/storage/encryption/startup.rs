//! The start-up check of encryption at rest: what the database says about its keys (read from a
//! read-only view, so a refusal changes nothing on disk), and whether the keys given fit it.
//!
//! The `encryption` table holds one key-check record per key the database's data may be under
//! (`key/<id>`: a constant sealed with that key), the sealed index key (`index`) and, while a
//! rotation runs, its cursor (`rotation`).
//!
//! | keys given | database | outcome |
//! | --- | --- | --- |
//! | none | no key records | plaintext, as before |
//! | none | key records | refused: the database is encrypted |
//! | key C | new (empty) | C's key record and a new index key are written |
//! | key C | plaintext data | encrypted in place at start-up ([`super::migration`]) |
//! | key C | records of C only | opened |
//! | C (+ old O) | records of C and O | opened; the rotation O -> C resumes (O required) |
//! | C + old O | records of O only | a rotation O -> C starts |
//! | anything else | | refused: wrong key |

use std::{collections::BTreeMap, path::Path};

use super::rotation::RotationState;
use super::{
    ConfiguredKeys, ENCRYPTION_TABLE, KeyId, Keyring, MasterKey, OLD_KEY_ENV, open_with, seal_with, sealed_key_id,
};
use crate::storage::{StorageError, WriteOp, engine::KeyValue};

pub const KEY_RECORD_PREFIX: &str = "key/";
pub const INDEX_RECORD: &[u8] = b"index";
pub const ROTATION_RECORD: &[u8] = b"rotation";
const KEY_CHECK: &[u8] = b"trellis key check v1";

/// What the database holds about encryption, read before it is opened for writing.
#[derive(Debug, Default)]
pub struct Stored {
    /// Whether the database holds any data (a schema record).
    pub has_data: bool,
    pub key_checks: BTreeMap<KeyId, Vec<u8>>,
    pub index: Option<Vec<u8>>,
    pub rotation: Option<RotationState>,
    /// Whether encrypting a plaintext database in place is unfinished.
    pub migrating: bool,
}

impl Stored {
    /// Reads the `encryption` table's rows (and whether `meta` has any) from `rows`.
    pub fn from_rows(has_data: bool, rows: Vec<KeyValue>) -> Result<Self, StorageError> {
        let mut stored = Self { has_data, ..Self::default() };
        for (key, value) in rows {
            if let Some(id) = key.strip_prefix(KEY_RECORD_PREFIX.as_bytes()) {
                let id = std::str::from_utf8(id).ok().and_then(KeyId::parse);
                let id = id.ok_or_else(|| StorageError("damaged key record in table encryption".into()))?;
                stored.key_checks.insert(id, value);
            } else if key == INDEX_RECORD {
                stored.index = Some(value);
            } else if key == super::migration::MIGRATION_RECORD {
                stored.migrating = true;
            } else if key == ROTATION_RECORD {
                stored.rotation = Some(RotationState::decode(&value)?);
            }
        }
        Ok(stored)
    }
}

pub fn key_record(id: KeyId) -> Vec<u8> {
    format!("{KEY_RECORD_PREFIX}{id}").into_bytes()
}

fn key_check(master: &MasterKey) -> Result<WriteOp, StorageError> {
    let key = key_record(master.id);
    let value = seal_with(master, ENCRYPTION_TABLE, &key, KEY_CHECK)?;
    Ok(WriteOp { table: ENCRYPTION_TABLE, key, value: Some(value) })
}

fn verify(master: &MasterKey, stored: &Stored) -> bool {
    stored
        .key_checks
        .get(&master.id)
        .and_then(|record| open_with(master, ENCRYPTION_TABLE, &key_record(master.id), record))
        .is_some_and(|check| check == KEY_CHECK)
}

fn index_record(master: &MasterKey, index_key: &[u8; 32]) -> Result<WriteOp, StorageError> {
    let value = seal_with(master, ENCRYPTION_TABLE, INDEX_RECORD, index_key)?;
    Ok(WriteOp { table: ENCRYPTION_TABLE, key: INDEX_RECORD.to_vec(), value: Some(value) })
}

/// How to open an encrypted database: its keyring, the records to write once it is open, and
/// the rotation to run (if any).
pub struct Plan {
    pub keyring: Keyring,
    pub writes: Vec<WriteOp>,
    pub rotation: Option<RotationState>,
    /// Whether the plaintext data must be encrypted in place before the database is used.
    pub migrate: bool,
}

fn ids(stored: &Stored) -> String {
    stored.key_checks.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Decides whether `keys` fit the database described by `stored` (see the module
/// documentation). Errors say what is wrong and that nothing was changed.
pub fn plan(keys: Option<ConfiguredKeys>, stored: &Stored, path: &Path) -> Result<Option<Plan>, StorageError> {
    let unchanged = "nothing was changed on disk";
    let Some(ConfiguredKeys { current, old }) = keys else {
        if stored.key_checks.is_empty() {
            return Ok(None);
        }
        return Err(StorageError(format!(
            "the database at {} is encrypted at rest (key id {}), but no encryption key was given: set \
             `encryption_at_rest = true` and give the key with `encryption_key_file` or {}; {unchanged}",
            path.display(),
            ids(stored),
            super::KEY_ENV
        )));
    };
    if stored.key_checks.is_empty() {
        let mut index_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut index_key);
        let mut writes = vec![key_check(&current)?, index_record(&current, &index_key)?];
        if stored.has_data {
            writes.push(super::migration::record());
        }
        tracing::info!(key_id = %current.id, "encryption at rest: database encrypted with key {}", current.id);
        let keyring = Keyring { active: current, old: None, index_key };
        return Ok(Some(Plan { keyring, writes, rotation: None, migrate: stored.has_data }));
    }
    let wrong_key = |detail: &str| {
        StorageError(format!("wrong encryption key for the database at {}: {detail}; {unchanged}", path.display()))
    };
    let open_index = |keyring_keys: &[&MasterKey]| -> Result<[u8; 32], StorageError> {
        let record = stored.index.as_ref().ok_or_else(|| StorageError("the sealed index key is missing".into()))?;
        let id = sealed_key_id(record).ok_or_else(|| StorageError("the sealed index key is damaged".into()))?;
        let master = keyring_keys.iter().find(|k| k.id == id).ok_or_else(|| {
            StorageError(format!("the index key is sealed with key {id}, which was not given; {unchanged}"))
        })?;
        open_with(master, ENCRYPTION_TABLE, INDEX_RECORD, record)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| StorageError("the sealed index key fails authentication".into()))
    };
    if stored.migrating && !stored.key_checks.contains_key(&current.id) {
        return Err(wrong_key(&format!(
            "the key given has id {}, the encryption of the plaintext database was started with key id {} \
             and is not finished; give that key",
            current.id,
            ids(stored)
        )));
    }
    if stored.key_checks.contains_key(&current.id) {
        if !verify(&current, stored) {
            return Err(wrong_key(&format!("the key with id {} fails its check record", current.id)));
        }
        let others: Vec<KeyId> = stored.key_checks.keys().copied().filter(|id| *id != current.id).collect();
        if others.is_empty() {
            if let Some(old) = &old {
                tracing::warn!(old_key_id = %old.id, "the old encryption key is no longer needed (no rotation is running); remove it");
            }
            let index_key = open_index(&[&current])?;
            return Ok(Some(Plan {
                keyring: Keyring { active: current, old: None, index_key },
                writes: vec![],
                rotation: None,
                migrate: stored.migrating,
            }));
        }
        let old = match old {
            Some(old) if others == [old.id] && verify(&old, stored) => old,
            _ => {
                return Err(StorageError(format!(
                    "a rotation of the encryption key from key {} to key {} is not finished: give the old key \
                     too (`encryption_old_key_file` or {OLD_KEY_ENV}) until the server logs that the rotation \
                     finished; {unchanged}",
                    others.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    current.id
                )));
            }
        };
        let index_key = open_index(&[&current, &old])?;
        let rotation = stored.rotation.clone().unwrap_or_else(|| RotationState::new(old.id));
        let mut writes = Vec::new();
        if stored.rotation.is_none() {
            writes.push(rotation.record()?);
        }
        return Ok(Some(Plan {
            keyring: Keyring { active: current, old: Some(old), index_key },
            writes,
            rotation: Some(rotation),
            migrate: false,
        }));
    }
    match old {
        Some(old) if stored.key_checks.len() == 1 && stored.key_checks.contains_key(&old.id) => {
            if !verify(&old, stored) {
                return Err(wrong_key(&format!("the old key with id {} fails its check record", old.id)));
            }
            let index_key = open_index(&[&old])?;
            let rotation = RotationState::new(old.id);
            let writes = vec![key_check(&current)?, index_record(&current, &index_key)?, rotation.record()?];
            tracing::info!(from = %old.id, to = %current.id, "encryption key rotation starts");
            Ok(Some(Plan {
                keyring: Keyring { active: current, old: Some(old), index_key },
                writes,
                rotation: Some(rotation),
                migrate: false,
            }))
        }
        _ => Err(wrong_key(&format!(
            "the key given has id {}, the database's data is encrypted with key id {} (to rotate to a new key, \
             give the old key as `encryption_old_key_file` or {OLD_KEY_ENV})",
            current.id,
            ids(stored)
        ))),
    }
}
