//! Devices and their tokens: login creates a device with an access token (and optionally a
//! refresh token), every request's token is checked here, logout removes the device.
//!
//! Every change to a user's devices (login, refresh, logout, rename, last-seen) reads and
//! writes the device record inside one per-user [`WriteLock`], so they never overwrite each
//! other: a refresh racing a logout cannot leave a token behind, and a last-seen update cannot
//! bring back a deleted device or an old token. A token is valid only while its device exists
//! and names it as its current token.
//!
//! Tokens are random and only their SHA-256 is stored, so a copy of the database or a log line
//! never holds a usable token.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use super::notifier::Notifier;
use super::recent::RecentMap;
use super::{now_ms, random_string};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, WriteLock,
        key_tables::{DEVICE_KEYS, FALLBACK_KEYS, ONE_TIME_KEY_ORDER, ONE_TIME_KEYS},
        tables::{
            ACCESS_TOKENS, AccessTokenRecord, DEVICES, DeviceRecord, REFRESH_TOKENS, RefreshTokenRecord, USERS,
            UserRecord,
        },
    },
};

/// Resolved access tokens kept in memory per generation of the cache (see [`RecentMap`]).
const TOKENS_CACHED: usize = 4096;

/// A resolved access token: its record and its user's, with the write generations of the rows
/// they were read from (the token's, its user's devices', the user's) taken before the reads.
#[derive(Clone)]
struct CachedToken {
    generations: [u64; 3],
    record: AccessTokenRecord,
    user: UserRecord,
}

/// The write generations a [`CachedToken`] is kept under.
fn token_generations(db: &Db, hash: &str, user: &OwnedUserId) -> [u64; 3] {
    let [devices, user] = user_generations(db, user);
    [db.generation(&ACCESS_TOKENS, &hash.to_owned()), devices, user]
}

/// The write generations of a token's user's rows: their devices', and their own.
fn user_generations(db: &Db, user: &OwnedUserId) -> [u64; 2] {
    [db.generation(&DEVICES, &(user.clone(),)), db.generation(&USERS, user)]
}

/// A token's record, its user's and the generations they were read under.
type ResolvedToken = (AccessTokenRecord, Option<UserRecord>, [u64; 3]);

/// Reads the token of `hash`: `None` unless its device exists and names it as its current
/// token; else its record, its user's (`None` for a user who is gone) and the write generations
/// of the rows read, each taken before its rows were read.
fn resolve_token(db: &Db, hash: &str) -> Result<Option<ResolvedToken>> {
    let token_generation = db.generation(&ACCESS_TOKENS, &hash.to_owned());
    let Some(record) = ACCESS_TOKENS.get(db, &hash.to_owned())? else { return Ok(None) };
    let [devices_generation, user_generation] = user_generations(db, &record.user_id);
    let device = DEVICES.get(db, &(record.user_id.clone(), record.device_id.clone()))?;
    if device.is_none_or(|device| device.access_token_hash.as_deref() != Some(hash)) {
        return Ok(None);
    }
    let user = USERS.get(db, &record.user_id)?;
    Ok(Some((record, user, [token_generation, devices_generation, user_generation])))
}

/// How often a device's "last seen" is written at most.
const LAST_SEEN_RESOLUTION_MS: u64 = 60_000;
/// How many locks users' device changes are spread over.
const LOCK_STRIPES: usize = 64;

pub struct Sessions {
    db: Db,
    /// Deleting a device changes its user's device list (see `keys`).
    key_changes: Arc<super::keys::KeyChangeStream>,
    /// Woken when a device list changes.
    notifier: Arc<Notifier>,
    refreshable_lifetime: Duration,
    /// When each device's last-seen time was last written, to bound those writes.
    last_seen_written: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), u64>>,
    /// Serialise changes to one user's devices and tokens (a user always maps to one stripe).
    locks: Vec<WriteLock>,
    hasher: RandomState,
    /// Resolved access tokens, so most requests authenticate without a storage read.
    tokens: RecentMap<String, CachedToken>,
}

/// The identity behind a valid access token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub guest: bool,
    pub admin: bool,
    /// The application service acting, when the request carried its `as_token`.
    pub appservice: Option<super::appservice::AppService>,
    /// Shadow-banned by an admin (see `service/admin/moderation.rs`).
    pub shadow_banned: bool,
    /// Suspended by an admin (see `service/admin/moderation.rs`).
    pub suspended: bool,
}

/// Tokens handed to a client at login, registration or refresh.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_device_id() -> OwnedDeviceId {
    random_string(10).to_uppercase().into()
}

impl Sessions {
    pub fn new(
        db: Db,
        refreshable_lifetime_secs: u64,
        key_changes: Arc<super::keys::KeyChangeStream>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self {
            db,
            key_changes,
            notifier,
            refreshable_lifetime: Duration::from_secs(refreshable_lifetime_secs.max(1)),
            last_seen_written: Mutex::new(HashMap::new()),
            locks: (0..LOCK_STRIPES).map(|_| WriteLock::new()).collect(),
            hasher: RandomState::new(),
            tokens: RecentMap::new(TOKENS_CACHED),
        }
    }

    /// The lock that serialises changes to `user`'s devices.
    fn lock_for(&self, user: &UserId) -> &WriteLock {
        let index = (self.hasher.hash_one(user.as_str()) % LOCK_STRIPES as u64) as usize;
        &self.locks[index % self.locks.len()]
    }

    /// Starts a session: creates the device (or reuses `device_id`, revoking its old tokens, as
    /// the spec asks of a login that names an existing device) and issues tokens.
    pub async fn login(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        with_refresh_token: bool,
        ip: Option<String>,
    ) -> Result<IssuedTokens> {
        let user_id = user_id.to_owned();
        let device_id = device_id.unwrap_or_else(new_device_id);
        let lifetime = self.refreshable_lifetime;
        self.lock_for(&user_id)
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let key = (user_id.clone(), device_id.clone());
                let existing = DEVICES.get(db, &key)?;
                let mut record = match existing {
                    Some(record) => {
                        revoke_device_tokens(&mut batch, &record);
                        record
                    }
                    None => DeviceRecord {
                        display_name: None,
                        created_ms: now_ms(),
                        last_seen_ms: None,
                        last_seen_ip: None,
                        access_token_hash: None,
                        refresh_token_hash: None,
                    },
                };
                if display_name.is_some() {
                    record.display_name = display_name;
                }
                record.last_seen_ms = Some(now_ms());
                record.last_seen_ip = ip;
                let tokens = issue_tokens(&mut batch, &mut record, &user_id, &device_id, with_refresh_token, lifetime)?;
                batch.put(&DEVICES, &key, &record)?;
                db.write(batch)?;
                Ok(tokens)
            })
            .await
    }

    /// Creates (or replaces) a device that has no access token, such as a dehydrated device.
    pub async fn create_device_without_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        let key = (user_id.to_owned(), device_id.to_owned());
        self.lock_for(user_id)
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                if let Some(old) = DEVICES.get(db, &key)? {
                    revoke_device_tokens(&mut batch, &old);
                }
                let record = DeviceRecord {
                    display_name,
                    created_ms: now_ms(),
                    last_seen_ms: None,
                    last_seen_ip: None,
                    access_token_hash: None,
                    refresh_token_hash: None,
                };
                batch.put(&DEVICES, &key, &record)?;
                Ok(db.write(batch)?)
            })
            .await
    }

    /// Resolves an access token. Unknown or revoked, or its device gone or holding another
    /// token: `M_UNKNOWN_TOKEN`; expired (refreshable tokens): `M_UNKNOWN_TOKEN` with
    /// `soft_logout`, so the client refreshes or logs in again.
    ///
    /// A locked account's token is refused with `M_USER_LOCKED` (and `soft_logout`), unless
    /// `allow_locked` (logging out, the only thing the spec lets a locked account do).
    pub async fn authenticate(&self, token: &str, ip: Option<String>) -> Result<Authenticated> {
        self.authenticate_with(token, ip, false).await
    }

    /// [`Self::authenticate`], letting a locked account through when `allow_locked`.
    pub async fn authenticate_with(
        &self,
        token: &str,
        ip: Option<String>,
        allow_locked: bool,
    ) -> Result<Authenticated> {
        let hash = token_hash(token);
        let (record, user) = match self.cached_token(&hash) {
            Some(token) => (Some(token.record), Some(token.user)),
            None => {
                let key = hash.clone();
                match self.db.run(move |db| resolve_token(db, &key)).await? {
                    Some((record, user, generations)) => {
                        if let Some(user) = &user {
                            let token = CachedToken { generations, record: record.clone(), user: user.clone() };
                            self.tokens.insert(hash, token);
                        }
                        (Some(record), user)
                    }
                    None => (None, None),
                }
            }
        };
        let record = record.ok_or_else(|| Error::unknown_token(false, "Unknown access token"))?;
        if record.expires_ms.is_some_and(|expires| expires <= now_ms()) {
            return Err(Error::unknown_token(true, "Access token has expired"));
        }
        let user = user.ok_or_else(|| Error::unknown_token(false, "Unknown access token"))?;
        if user.deactivated {
            return Err(Error::unknown_token(false, "The account has been deactivated"));
        }
        if user.locked && !allow_locked {
            return Err(Error::user_locked());
        }
        self.note_last_seen(&record.user_id, &record.device_id, ip).await?;
        Ok(Authenticated {
            user_id: record.user_id,
            device_id: record.device_id,
            guest: user.guest,
            admin: user.admin,
            appservice: None,
            shadow_banned: user.shadow_banned,
            suspended: user.suspended,
        })
    }

    /// The resolved token of `hash`, if cached and none of the rows it was read from was
    /// written since.
    fn cached_token(&self, hash: &str) -> Option<CachedToken> {
        let token = self.tokens.get(hash)?;
        (token.generations == token_generations(&self.db, hash, &token.record.user_id)).then_some(token)
    }

    /// Writes a device's last-seen time and address (at most once per resolution period). Only
    /// those fields change, read and written under the user's lock: a device deleted or given a
    /// new token meanwhile stays as it is now.
    async fn note_last_seen(&self, user_id: &UserId, device_id: &DeviceId, ip: Option<String>) -> Result<()> {
        let now = now_ms();
        let key = (user_id.to_owned(), device_id.to_owned());
        {
            let mut written = self.last_seen_written.lock().map_err(|_| Error::internal("poisoned lock"))?;
            match written.get(&key) {
                Some(at) if now.saturating_sub(*at) < LAST_SEEN_RESOLUTION_MS => return Ok(()),
                _ => written.insert(key.clone(), now),
            };
        }
        self.lock_for(user_id)
            .run(&self.db, move |db| {
                if let Some(mut record) = DEVICES.get(db, &key)? {
                    record.last_seen_ms = Some(now);
                    record.last_seen_ip = ip;
                    let mut batch = Batch::new();
                    batch.put(&DEVICES, &key, &record)?;
                    db.write(batch)?;
                }
                Ok(())
            })
            .await
    }

    /// Exchanges a refresh token for new tokens; the old pair stops working at once. The token
    /// is looked up again under its user's lock, so a logout or another refresh that won the
    /// race makes this one fail rather than bring the device back.
    pub async fn refresh(&self, refresh_token: &str) -> Result<(OwnedUserId, IssuedTokens)> {
        let unknown = || Error::unknown_token(false, "Unknown refresh token");
        let hash = token_hash(refresh_token);
        let owner = {
            let hash = hash.clone();
            self.db.run(move |db| Ok(REFRESH_TOKENS.get(db, &hash)?)).await?.ok_or_else(unknown)?.user_id
        };
        let lifetime = self.refreshable_lifetime;
        self.lock_for(&owner)
            .run(&self.db, move |db| {
                let token = REFRESH_TOKENS.get(db, &hash)?.ok_or_else(unknown)?;
                let key = (token.user_id.clone(), token.device_id.clone());
                let mut record = DEVICES.get(db, &key)?.ok_or_else(unknown)?;
                if record.refresh_token_hash.as_deref() != Some(hash.as_str()) {
                    return Err(unknown());
                }
                // A locked account gets no new access token until it is unlocked (spec v1.12).
                if USERS.get(db, &token.user_id)?.is_some_and(|user| user.locked) {
                    return Err(Error::user_locked());
                }
                let mut batch = Batch::new();
                revoke_device_tokens(&mut batch, &record);
                let tokens = issue_tokens(&mut batch, &mut record, &token.user_id, &token.device_id, true, lifetime)?;
                batch.put(&DEVICES, &key, &record)?;
                db.write(batch)?;
                Ok((token.user_id, tokens))
            })
            .await
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>> {
        let user_id = user_id.to_owned();
        self.db
            .run(move |db| {
                Ok(DEVICES
                    .scan_prefix(db, &(user_id,))?
                    .into_iter()
                    .map(|((_, device_id), record)| (device_id, record))
                    .collect())
            })
            .await
    }

    pub async fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceRecord>> {
        let key = (user_id.to_owned(), device_id.to_owned());
        self.db.run(move |db| Ok(DEVICES.get(db, &key)?)).await
    }

    /// Renames a device; `M_NOT_FOUND` if the user has no such device.
    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        let key = (user_id.to_owned(), device_id.to_owned());
        let (key_changes, notifier) = (self.key_changes.clone(), self.notifier.clone());
        self.lock_for(user_id)
            .run(&self.db, move |db| {
                let mut record = DEVICES.get(db, &key)?.ok_or_else(|| Error::not_found("Unknown device"))?;
                if record.display_name == display_name {
                    return Ok(());
                }
                record.display_name = display_name;
                let mut batch = Batch::new();
                batch.put(&DEVICES, &key, &record)?;
                // The display name is part of the device list other users (and servers) see.
                let reserved = super::keys::record_key_change(&key_changes, &mut batch, &key.0)?;
                db.write(batch)?;
                drop(reserved);
                notifier.poke();
                Ok(())
            })
            .await
    }

    /// Deletes devices with their tokens and encryption keys, in one batch, and records the
    /// device list change. Unknown IDs are skipped.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: Vec<OwnedDeviceId>) -> Result<()> {
        self.delete_where(user_id, move |_| Ok(device_ids)).await
    }

    /// Deletes every device of the user except `keep`. The devices are listed under the same
    /// lock as the deletion, so a device logged in meanwhile is either deleted or created after.
    pub async fn delete_all_devices_except(&self, user_id: &UserId, keep: Option<&DeviceId>) -> Result<()> {
        let (user, keep) = (user_id.to_owned(), keep.map(ToOwned::to_owned));
        self.delete_where(user_id, move |db| {
            Ok(DEVICES
                .scan_prefix(db, &(user,))?
                .into_iter()
                .map(|((_, id), _)| id)
                .filter(|id| Some(id) != keep.as_ref())
                .collect())
        })
        .await
    }

    /// Deletes the devices `which` names, all inside the user's lock.
    async fn delete_where(
        &self,
        user_id: &UserId,
        which: impl FnOnce(&Db) -> Result<Vec<OwnedDeviceId>> + Send + 'static,
    ) -> Result<()> {
        let user_id = user_id.to_owned();
        let (key_changes, notifier) = (self.key_changes.clone(), self.notifier.clone());
        self.lock_for(&user_id)
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                for device_id in which(db)? {
                    let key = (user_id.clone(), device_id);
                    if let Some(record) = DEVICES.get(db, &key)? {
                        revoke_device_tokens(&mut batch, &record);
                        batch.delete(&DEVICES, &key);
                        batch.delete(&DEVICE_KEYS, &key);
                        for (row, _) in ONE_TIME_KEY_ORDER.scan_prefix(db, &key)? {
                            batch.delete(&ONE_TIME_KEY_ORDER, &row);
                        }
                        for (row, _) in ONE_TIME_KEYS.scan_prefix(db, &key)? {
                            batch.delete(&ONE_TIME_KEYS, &row);
                        }
                        for (row, _) in FALLBACK_KEYS.scan_prefix(db, &key)? {
                            batch.delete(&FALLBACK_KEYS, &row);
                        }
                    }
                }
                if batch.is_empty() {
                    return Ok(());
                }
                let reserved = super::keys::record_key_change(&key_changes, &mut batch, &user_id)?;
                db.write(batch)?;
                drop(reserved);
                // Device lists changed: wake waiting syncs.
                notifier.poke();
                Ok(())
            })
            .await
    }
}

fn revoke_device_tokens(batch: &mut Batch, record: &DeviceRecord) {
    if let Some(hash) = &record.access_token_hash {
        batch.delete(&ACCESS_TOKENS, hash);
    }
    if let Some(hash) = &record.refresh_token_hash {
        batch.delete(&REFRESH_TOKENS, hash);
    }
}

fn issue_tokens(
    batch: &mut Batch,
    record: &mut DeviceRecord,
    user_id: &UserId,
    device_id: &DeviceId,
    with_refresh_token: bool,
    lifetime: Duration,
) -> Result<IssuedTokens> {
    let access_token = random_string(40);
    let access_hash = token_hash(&access_token);
    let (refresh_token, expires_in) = if with_refresh_token {
        let refresh_token = random_string(48);
        let refresh_hash = token_hash(&refresh_token);
        batch.put(
            &REFRESH_TOKENS,
            &refresh_hash,
            &RefreshTokenRecord { user_id: user_id.to_owned(), device_id: device_id.to_owned() },
        )?;
        record.refresh_token_hash = Some(refresh_hash);
        (Some(refresh_token), Some(lifetime))
    } else {
        record.refresh_token_hash = None;
        (None, None)
    };
    batch.put(
        &ACCESS_TOKENS,
        &access_hash,
        &AccessTokenRecord {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            expires_ms: expires_in.map(|d| now_ms() + d.as_millis() as u64),
        },
    )?;
    record.access_token_hash = Some(access_hash);
    Ok(IssuedTokens { device_id: device_id.to_owned(), access_token, refresh_token, expires_in })
}
