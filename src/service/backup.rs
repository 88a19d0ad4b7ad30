//! Server-side key backup (`/room_keys`): versions with their algorithm, and encrypted session
//! keys per room and session. Keys go only to the current version; a session already backed up
//! is replaced only by a better copy (verified first, then the lower first message index, then
//! the lower forwarded count), as the spec says. Every change to a version's keys changes its
//! etag.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    storage::{
        Batch, Db, ScanDirection, WriteLock,
        key_tables::{BACKUP_KEYS, BACKUP_VERSIONS, BackupVersion},
    },
};

pub struct Backup {
    db: Db,
    /// Serialises changes (version numbers, etags, which copy of a session wins).
    lock: WriteLock,
}

/// What the server compares to decide which copy of a session to keep.
#[derive(Deserialize)]
struct Ranking {
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
}

/// Whether `new` should replace `old` in the backup.
fn better(new: &RawValue, old: &RawValue) -> bool {
    let (Ok(new), Ok(old)) = (serde_json::from_str::<Ranking>(new.get()), serde_json::from_str::<Ranking>(old.get()))
    else {
        return true;
    };
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

/// A version number from a request; anything else is an unknown version.
pub fn parse_version(version: &str) -> Result<u64> {
    version.parse().map_err(|_| Error::not_found("Unknown backup version"))
}

/// Information about one backup version.
pub struct VersionInfo {
    pub version: u64,
    pub algorithm: Box<RawValue>,
    pub etag: u64,
    pub count: u64,
}

/// Which keys an operation touches: all, one room's, or one session's.
pub enum Scope {
    All,
    Room(String),
    Session(String, String),
}

fn latest(db: &Db, user: &UserId) -> Result<Option<(u64, BackupVersion)>> {
    let rows =
        BACKUP_VERSIONS
            .scan_from(db, &(user.to_owned(), u64::MAX), ScanDirection::Reverse, usize::MAX, |(u, _)| u == user)?;
    Ok(rows.into_iter().find(|(_, v)| !v.deleted).map(|((_, version), v)| (version, v)))
}

fn live_version(db: &Db, user: &UserId, version: u64) -> Result<BackupVersion> {
    BACKUP_VERSIONS
        .get(db, &(user.to_owned(), version))?
        .filter(|v| !v.deleted)
        .ok_or_else(|| Error::not_found("Unknown backup version"))
}

fn count(db: &Db, user: &UserId, version: u64) -> Result<u64> {
    Ok(BACKUP_KEYS.scan_prefix(db, &(user.to_owned(), version))?.len() as u64)
}

/// A row key of `BACKUP_KEYS`: (user, version, room, session).
type BackupKeyRow = (ruma::OwnedUserId, u64, String, String);

fn keys_in(db: &Db, user: &UserId, version: u64, scope: &Scope) -> Result<Vec<(BackupKeyRow, Box<RawValue>)>> {
    let user = user.to_owned();
    Ok(match scope {
        Scope::All => BACKUP_KEYS.scan_prefix(db, &(user, version))?,
        Scope::Room(room) => BACKUP_KEYS.scan_prefix(db, &(user, version, room.clone()))?,
        Scope::Session(room, session) => {
            let key = (user, version, room.clone(), session.clone());
            BACKUP_KEYS.get(db, &key)?.map(|value| vec![(key, value)]).unwrap_or_default()
        }
    })
}

impl Backup {
    pub fn new(db: Db) -> Self {
        Self { db, lock: WriteLock::new() }
    }

    pub async fn create_version(&self, user: &UserId, algorithm: Box<RawValue>) -> Result<u64> {
        let user = user.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let newest =
                    BACKUP_VERSIONS
                        .scan_from(db, &(user.clone(), u64::MAX), ScanDirection::Reverse, 1, |(u, _)| *u == user)?;
                let version = newest.first().map_or(1, |((_, v), _)| v + 1);
                let mut batch = Batch::new();
                batch.put(&BACKUP_VERSIONS, &(user, version), &BackupVersion { algorithm, etag: 0, deleted: false })?;
                db.write(batch)?;
                Ok(version)
            })
            .await
    }

    /// A version's information; `None` asks for the current (newest) version.
    pub async fn info(&self, user: &UserId, version: Option<u64>) -> Result<VersionInfo> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                let (version, record) = match version {
                    Some(version) => (version, live_version(db, &user, version)?),
                    None => latest(db, &user)?.ok_or_else(|| Error::not_found("No backup version exists"))?,
                };
                Ok(VersionInfo {
                    version,
                    algorithm: record.algorithm,
                    etag: record.etag,
                    count: count(db, &user, version)?,
                })
            })
            .await
    }

    /// Replaces a version's `auth_data`; the algorithm itself cannot change.
    pub async fn update_version(&self, user: &UserId, version: u64, algorithm: Box<RawValue>) -> Result<()> {
        #[derive(Deserialize)]
        struct Named {
            algorithm: String,
        }
        let user = user.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut record = live_version(db, &user, version)?;
                let old: Named =
                    serde_json::from_str(record.algorithm.get()).map_err(|e| Error::internal(e.to_string()))?;
                let new: Named = serde_json::from_str(algorithm.get()).map_err(|e| Error::bad_json(e.to_string()))?;
                if old.algorithm != new.algorithm {
                    return Err(Error::invalid_param("The algorithm of a backup version cannot change"));
                }
                record.algorithm = algorithm;
                let mut batch = Batch::new();
                batch.put(&BACKUP_VERSIONS, &(user, version), &record)?;
                Ok(db.write(batch)?)
            })
            .await
    }

    /// Deletes a version and its keys; its number is never used again.
    pub async fn delete_version(&self, user: &UserId, version: u64) -> Result<()> {
        let user = user.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut record = live_version(db, &user, version)?;
                let mut batch = Batch::new();
                for (key, _) in keys_in(db, &user, version, &Scope::All)? {
                    batch.delete(&BACKUP_KEYS, &key);
                }
                record.deleted = true;
                batch.put(&BACKUP_VERSIONS, &(user, version), &record)?;
                Ok(db.write(batch)?)
            })
            .await
    }

    /// Backs up session keys into the current version; returns (count, etag).
    pub async fn put_keys(
        &self,
        user: &UserId,
        version: u64,
        keys: Vec<(String, String, Box<RawValue>)>,
    ) -> Result<(u64, u64)> {
        let user = user.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let current = latest(db, &user)?;
                let (current_version, mut record) = match current {
                    Some((current_version, record)) if current_version == version => (current_version, record),
                    Some((current_version, _)) => {
                        let data = ruma::api::error::WrongRoomKeysVersionErrorData::new(current_version.to_string());
                        return Err(Error::new(
                            StatusCode::FORBIDDEN,
                            ErrorKind::WrongRoomKeysVersion(data),
                            "That is not the current backup version",
                        ));
                    }
                    None => return Err(Error::not_found("No backup version exists")),
                };
                let mut batch = Batch::new();
                let mut changed = false;
                for (room, session, data) in keys {
                    let key = (user.clone(), current_version, room, session);
                    let replace = match BACKUP_KEYS.get(db, &key)? {
                        Some(old) => better(&data, &old),
                        None => true,
                    };
                    if replace {
                        batch.put(&BACKUP_KEYS, &key, &data)?;
                        changed = true;
                    }
                }
                if changed {
                    record.etag += 1;
                    batch.put(&BACKUP_VERSIONS, &(user.clone(), current_version), &record)?;
                }
                db.write(batch)?;
                Ok((count(db, &user, current_version)?, record.etag))
            })
            .await
    }

    /// Backed-up keys of a version: room -> session -> key data.
    pub async fn get_keys(
        &self,
        user: &UserId,
        version: u64,
        scope: Scope,
    ) -> Result<BTreeMap<String, BTreeMap<String, Box<RawValue>>>> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                live_version(db, &user, version)?;
                let mut out: BTreeMap<String, BTreeMap<String, Box<RawValue>>> = BTreeMap::new();
                for ((_, _, room, session), data) in keys_in(db, &user, version, &scope)? {
                    out.entry(room).or_default().insert(session, data);
                }
                Ok(out)
            })
            .await
    }

    /// Deletes backed-up keys; returns (count, etag).
    pub async fn delete_keys(&self, user: &UserId, version: u64, scope: Scope) -> Result<(u64, u64)> {
        let user = user.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut record = live_version(db, &user, version)?;
                let keys = keys_in(db, &user, version, &scope)?;
                let mut batch = Batch::new();
                if !keys.is_empty() {
                    for (key, _) in keys {
                        batch.delete(&BACKUP_KEYS, &key);
                    }
                    record.etag += 1;
                    batch.put(&BACKUP_VERSIONS, &(user.clone(), version), &record)?;
                }
                db.write(batch)?;
                Ok((count(db, &user, version)?, record.etag))
            })
            .await
    }
}
