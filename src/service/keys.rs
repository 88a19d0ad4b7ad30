//! End-to-end encryption keys: device keys, one-time and fallback keys (claimed one-time key
//! first, then the fallback key, which is then marked used), cross-signing keys with their
//! signature checks, signatures uploaded separately, and the stream of users whose keys changed
//! (for `/keys/changes` and sync's `device_lists`).

mod erasure;
mod remote;

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    signatures::{PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, value::RawValue};

use super::notifier::Notifier;
use crate::{
    Error, Result,
    storage::{
        Batch, Db, IdAllocator, ScanDirection, WriteLock,
        key_tables::{
            CROSS_SIGNING_KEYS, DEVICE_KEYS, FALLBACK_KEYS, FallbackKey, KEY_CHANGES, KEY_SIGNATURES,
            ONE_TIME_KEY_ORDER, ONE_TIME_KEYS,
        },
        tables::DEVICES,
    },
};

pub use remote::{FederatedDevice, RemoteUpdate};

pub struct Keys {
    db: Db,
    changes: Arc<KeyChangeStream>,
    notifier: Arc<Notifier>,
    /// Serialises claims, uploads and signature changes so a one-time key is handed out once
    /// and a check-then-write never sees a stale key. Held until the write is done, even when
    /// the request is dropped.
    lock: WriteLock,
}

/// Records in `batch` that `user`'s keys or devices changed.
/// The caller keeps the returned reservation until the batch is written: until then readers do
/// not look at or past its position. Call it only inside blocking work (`Db::run`,
/// `WriteLock::run`): that work runs to its end even when the request is dropped, so the
/// reservation is always released, and release it before waking syncs, or a woken sync would
/// still not see the change.
pub fn record_key_change<'a>(changes: &'a KeyChangeStream, batch: &mut Batch, user: &UserId) -> Result<Reserved<'a>> {
    let reserved = changes.reserve(user);
    batch.put(&KEY_CHANGES, &reserved.position, &user.to_owned())?;
    Ok(reserved)
}

/// Positions of the key-change stream. Writes with positions commit concurrently, so position 7
/// may land before 6: readers (sync, `/keys/changes`) only look up to the newest position below
/// which every position is committed, or they could skip 6 for good.
/// Releasing a position wakes the room-mates of the users whose changes the bound passed (only
/// then can a woken sync read them).
pub struct KeyChangeStream {
    ids: IdAllocator,
    in_flight: std::sync::Mutex<KeysInFlight>,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct KeysInFlight {
    positions: std::collections::BTreeSet<u64>,
    /// The user of each released position above the bound.
    released: BTreeMap<u64, OwnedUserId>,
}

/// A reserved key-change position; dropping it (after the write, or on failure) releases it.
pub struct Reserved<'a> {
    pub position: u64,
    user: OwnedUserId,
    stream: &'a KeyChangeStream,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let users = {
            let mut in_flight = self.stream.in_flight();
            in_flight.positions.remove(&self.position);
            in_flight.released.insert(self.position, self.user.clone());
            let bound = self.stream.bound(&in_flight);
            let above = in_flight.released.split_off(&(bound + 1));
            std::mem::replace(&mut in_flight.released, above)
        };
        // An abandoned position wakes its user's room-mates for nothing: harmless.
        for user in users.into_values() {
            self.stream.notifier.room_mates_changed(user);
        }
    }
}

impl KeyChangeStream {
    pub fn new(db: &Db, notifier: Arc<Notifier>) -> Result<Self> {
        Ok(Self { ids: IdAllocator::after_last_key(db, &KEY_CHANGES)?, in_flight: Default::default(), notifier })
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, KeysInFlight> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reserve(&self, user: &UserId) -> Reserved<'_> {
        let mut in_flight = self.in_flight();
        let position = self.ids.next();
        in_flight.positions.insert(position);
        Reserved { position, user: user.to_owned(), stream: self }
    }

    /// The newest position below which (inclusive) every position is committed or abandoned.
    pub fn committed(&self) -> u64 {
        self.bound(&self.in_flight())
    }

    fn bound(&self, in_flight: &KeysInFlight) -> u64 {
        match in_flight.positions.first() {
            Some(first) => first.saturating_sub(1),
            None => self.ids.peek().saturating_sub(1),
        }
    }
}

fn to_canonical(raw: &RawValue) -> Result<CanonicalJsonObject> {
    serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("Keys must be canonical JSON objects: {e}")))
}

/// Checks the form of a one-time or fallback key: an unsigned key (a string) or a key object
/// with a string `key`.
fn check_one_time_key(key_id: &str, raw: &RawValue) -> Result<()> {
    let well_formed = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(_)) => true,
        Ok(Value::Object(object)) => object.get("key").is_some_and(Value::is_string) && to_canonical(raw).is_ok(),
        _ => false,
    };
    if well_formed { Ok(()) } else { Err(Error::bad_json(format!("Key {key_id} is neither a key nor a key object"))) }
}

/// The first ed25519 key of a cross-signing key object: (key ID, public key).
fn ed25519_key(object: &CanonicalJsonObject) -> Option<(String, String)> {
    let CanonicalJsonValue::Object(keys) = object.get("keys")? else { return None };
    keys.iter().find_map(|(id, key)| match key {
        CanonicalJsonValue::String(key) if id.starts_with("ed25519:") => Some((id.clone(), key.clone())),
        _ => None,
    })
}

fn has_usage(object: &CanonicalJsonObject, usage: &str) -> bool {
    matches!(object.get("usage"), Some(CanonicalJsonValue::Array(u)) if u.contains(&CanonicalJsonValue::String(usage.to_owned())))
}

/// Verifies `object`'s signature by `signer` with `key` (an ed25519 key ID and public key).
fn verify_signed_by(object: &CanonicalJsonObject, signer: &UserId, key: &(String, String)) -> bool {
    let Ok(public) = ruma::serde::Base64::parse(&key.1) else { return false };
    let set: PublicKeySet = BTreeMap::from([(key.0.clone(), public)]);
    let map: PublicKeyMap = BTreeMap::from([(signer.to_string(), set)]);
    // Only the signer's signature is checked; signatures by others stay in the object.
    let mut only_signer = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = only_signer.get_mut("signatures") {
        signatures.retain(|entity, _| entity == signer.as_str());
        if let Some(CanonicalJsonValue::Object(by_signer)) = signatures.get_mut(signer.as_str()) {
            by_signer.retain(|id, _| *id == key.0);
        }
    }
    ruma::signatures::verify_json(&map, &only_signer).is_ok()
}

impl Keys {
    pub fn new(db: Db, changes: Arc<KeyChangeStream>, notifier: Arc<Notifier>) -> Self {
        Self { db, changes, notifier, lock: WriteLock::new() }
    }

    /// The newest key-change position (for sync tokens and `/keys/changes`).
    pub fn current_position(&self) -> u64 {
        self.changes.committed()
    }

    /// Stores uploaded keys; returns the device's one-time key counts per algorithm.
    pub async fn upload(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<Box<RawValue>>,
        one_time_keys: Vec<(String, Box<RawValue>)>,
        fallback_keys: Vec<(String, Box<RawValue>)>,
    ) -> Result<BTreeMap<String, u64>> {
        let (user, device) = (user.to_owned(), device.to_owned());
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let mut reserved = None;
                if let Some(keys) = device_keys {
                    let object = to_canonical(&keys)?;
                    let claims = (object.get("user_id"), object.get("device_id"));
                    let expected = (
                        Some(&CanonicalJsonValue::String(user.to_string())),
                        Some(&CanonicalJsonValue::String(device.to_string())),
                    );
                    if claims != expected {
                        return Err(Error::bad_json("device_keys must name the uploading user and device"));
                    }
                    let key = (user.clone(), device.clone());
                    let previous = DEVICE_KEYS.get(db, &key)?;
                    if previous.as_ref().map(|p| p.get()) != Some(keys.get()) {
                        batch.put(&DEVICE_KEYS, &key, &keys)?;
                        reserved = Some(record_key_change(&changes, &mut batch, &user)?);
                    }
                }
                for (key_id, key) in one_time_keys.iter().chain(&fallback_keys) {
                    check_one_time_key(key_id, key)?;
                }
                // The next place in each algorithm's upload order (uploads are serialised by
                // this service's lock, so reading the last place here is safe).
                let mut next_place: BTreeMap<String, u64> = BTreeMap::new();
                for (key_id, key) in one_time_keys {
                    let row = (user.clone(), device.clone(), key_id.clone());
                    match ONE_TIME_KEYS.get(db, &row)? {
                        Some(existing) if existing.get() != key.get() => {
                            return Err(Error::invalid_param(format!(
                                "One-time key {key_id} already exists with other content"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            batch.put(&ONE_TIME_KEYS, &row, &key)?;
                            let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
                            let place = match next_place.get(&algorithm) {
                                Some(place) => *place,
                                None => last_place(db, &user, &device, &algorithm)?.map_or(0, |last| last + 1),
                            };
                            next_place.insert(algorithm.clone(), place + 1);
                            batch.put(
                                &ONE_TIME_KEY_ORDER,
                                &(user.clone(), device.clone(), algorithm, place),
                                &key_id,
                            )?;
                        }
                    }
                }
                for (key_id, key) in fallback_keys {
                    let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
                    let row = (user.clone(), device.clone(), algorithm);
                    batch.put(&FALLBACK_KEYS, &row, &FallbackKey { key_id, key, used: false })?;
                }
                db.write(batch)?;
                // The key-change position is released only now that the batch is written (which
                // wakes the room-mates of a device-list change).
                drop(reserved);
                // The device's key counts changed (sliding sync sends them).
                notifier.wake(&[super::notifier::WakeKey::Device(user.clone(), device.clone())]);
                one_time_key_counts(db, &user, &device)
            })
            .await
    }

    pub async fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.db.run(move |db| one_time_key_counts(db, &user, &device)).await
    }

    /// Algorithms of the device's fallback keys that have not been used.
    pub async fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.db.run(move |db| unused_fallback_key_types(db, &user, &device)).await
    }

    /// [`one_time_key_counts`](Self::one_time_key_counts) and
    /// [`unused_fallback_key_types`](Self::unused_fallback_key_types) in one read (every sync
    /// sends both).
    pub async fn key_counts(&self, user: &UserId, device: &DeviceId) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.db.run(move |db| Self::key_counts_in(db, &user, &device)).await
    }

    /// [`key_counts`](Self::key_counts), on the storage threads already.
    pub fn key_counts_in(db: &Db, user: &UserId, device: &DeviceId) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        Ok((one_time_key_counts(db, user, device)?, unused_fallback_key_types(db, user, device)?))
    }

    /// Claims one key of `algorithm` for a device: a one-time key, else the fallback key.
    pub async fn claim(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<(String, Box<RawValue>)>> {
        let (user, device, algorithm) = (user.to_owned(), device.to_owned(), algorithm.to_owned());
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                // The oldest upload first (MSC4225); places whose key is gone are dropped.
                let order_prefix = (user.clone(), device.clone(), algorithm.clone());
                for (place, key_id) in ONE_TIME_KEY_ORDER.scan_prefix(db, &order_prefix)? {
                    batch.delete(&ONE_TIME_KEY_ORDER, &place);
                    let row = (user.clone(), device.clone(), key_id);
                    if let Some(key) = ONE_TIME_KEYS.get(db, &row)? {
                        batch.delete(&ONE_TIME_KEYS, &row);
                        db.write(batch)?;
                        return Ok(Some((row.2, key)));
                    }
                }
                // Keys uploaded before the order was kept.
                let prefix = (user.clone(), device.clone());
                let start = (user.clone(), device.clone(), format!("{algorithm}:"));
                let candidates = ONE_TIME_KEYS.scan_from(db, &start, ScanDirection::Forward, 1, |(u, d, id)| {
                    *u == prefix.0 && *d == prefix.1 && id.starts_with(&format!("{algorithm}:"))
                })?;
                if let Some((row, key)) = candidates.into_iter().next() {
                    batch.delete(&ONE_TIME_KEYS, &row);
                    db.write(batch)?;
                    return Ok(Some((row.2, key)));
                }
                let row = (user, device, algorithm);
                match FALLBACK_KEYS.get(db, &row)? {
                    Some(mut fallback) => {
                        let claimed = (fallback.key_id.clone(), fallback.key.clone());
                        fallback.used = true;
                        batch.put(&FALLBACK_KEYS, &row, &fallback)?;
                        db.write(batch)?;
                        Ok(Some(claimed))
                    }
                    None => Ok(None),
                }
            })
            .await
    }

    /// Device keys of a user's existing devices (all, or those named), each with the device's
    /// display name in `unsigned` and signatures uploaded later merged in (other users'
    /// signatures only when `viewer` made them).
    pub async fn device_keys(
        &self,
        user: &UserId,
        only: Vec<OwnedDeviceId>,
        viewer: Option<&UserId>,
    ) -> Result<BTreeMap<OwnedDeviceId, Value>> {
        let user = user.to_owned();
        let viewer = viewer.map(ToOwned::to_owned);
        self.db
            .run(move |db| {
                let mut out = BTreeMap::new();
                for ((_, device), raw) in DEVICE_KEYS.scan_prefix(db, &(user.clone(),))? {
                    if !only.is_empty() && !only.contains(&device) {
                        continue;
                    }
                    let Some(record) = DEVICES.get(db, &(user.clone(), device.clone()))? else { continue };
                    let mut keys: Value =
                        serde_json::from_str(raw.get()).map_err(|e| Error::internal(e.to_string()))?;
                    merge_signatures(db, &mut keys, &user, device.as_str(), viewer.as_deref())?;
                    if let Some(object) = keys.as_object_mut() {
                        let unsigned = object.entry("unsigned").or_insert_with(|| Value::Object(Default::default()));
                        if let (Some(unsigned), Some(name)) = (unsigned.as_object_mut(), record.display_name) {
                            unsigned.insert("device_display_name".into(), Value::String(name));
                        }
                    }
                    out.insert(device, keys);
                }
                Ok(out)
            })
            .await
    }

    /// A cross-signing key ("master", "self_signing" or "user_signing") with later signatures
    /// (another user's signature, made with their user-signing key, only when `viewer` made it).
    pub async fn cross_signing_key(&self, user: &UserId, kind: &str, viewer: Option<&UserId>) -> Result<Option<Value>> {
        let key = (user.to_owned(), kind.to_owned());
        let user = user.to_owned();
        let viewer = viewer.map(ToOwned::to_owned);
        self.db
            .run(move |db| {
                let Some(raw) = CROSS_SIGNING_KEYS.get(db, &key)? else { return Ok(None) };
                let mut value: Value = serde_json::from_str(raw.get()).map_err(|e| Error::internal(e.to_string()))?;
                let object = to_canonical(&raw)?;
                if let Some((_, public)) = ed25519_key(&object) {
                    merge_signatures(db, &mut value, &user, &public, viewer.as_deref())?;
                }
                Ok(Some(value))
            })
            .await
    }

    /// Adds to a cross-signing key of a user of another server (as their server gave it) the
    /// signatures `viewer` uploaded for it here: a local user's user-signing signature of a
    /// remote user's master key stays on this server and is shown to that user alone.
    pub async fn add_viewer_signatures(&self, viewer: &UserId, user: &UserId, mut key: Value) -> Result<Value> {
        let (viewer, user) = (viewer.to_owned(), user.to_owned());
        self.db
            .run(move |db| {
                let public = key
                    .get("keys")
                    .and_then(Value::as_object)
                    .and_then(|keys| keys.iter().find(|(id, _)| id.starts_with("ed25519:")))
                    .and_then(|(_, public)| public.as_str())
                    .map(str::to_owned);
                if let Some(public) = public {
                    merge_signatures(db, &mut key, &user, &public, Some(&viewer))?;
                }
                Ok(key)
            })
            .await
    }

    /// Stores cross-signing keys after checking their form and that the self-signing and
    /// user-signing keys are signed by the master key.
    pub async fn set_cross_signing_keys(
        &self,
        user: &UserId,
        master: Option<Box<RawValue>>,
        self_signing: Option<Box<RawValue>>,
        user_signing: Option<Box<RawValue>>,
    ) -> Result<()> {
        let user = user.to_owned();
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        self.lock
            .run(&self.db, move |db| {
                let master_object = match &master {
                    Some(raw) => Some(to_canonical(raw)?),
                    None => CROSS_SIGNING_KEYS
                        .get(db, &(user.clone(), "master".to_owned()))?
                        .map(|r| to_canonical(&r))
                        .transpose()?,
                };
                let mut batch = Batch::new();
                let check_form = |object: &CanonicalJsonObject, usage: &str| -> Result<()> {
                    if object.get("user_id") != Some(&CanonicalJsonValue::String(user.to_string()))
                        || !has_usage(object, usage)
                    {
                        return Err(Error::bad_json(format!(
                            "The {usage} key must have usage {usage} and this user's ID"
                        )));
                    }
                    if ed25519_key(object).is_none() {
                        return Err(Error::bad_json(format!("The {usage} key has no ed25519 key")));
                    }
                    Ok(())
                };
                if let (Some(raw), Some(object)) = (&master, &master_object) {
                    check_form(object, "master")?;
                    batch.put(&CROSS_SIGNING_KEYS, &(user.clone(), "master".to_owned()), raw)?;
                }
                for (raw, usage) in [(&self_signing, "self_signing"), (&user_signing, "user_signing")] {
                    let Some(raw) = raw else { continue };
                    let object = to_canonical(raw)?;
                    check_form(&object, usage)?;
                    let master_key = master_object.as_ref().and_then(ed25519_key).ok_or_else(|| {
                        Error::missing_param(format!("A {usage} key needs a master key to be signed by"))
                    })?;
                    if !verify_signed_by(&object, &user, &master_key) {
                        return Err(Error::invalid_signature(format!(
                            "The {usage} key is not signed by the master key"
                        )));
                    }
                    batch.put(&CROSS_SIGNING_KEYS, &(user.clone(), usage.to_owned()), raw)?;
                }
                let reserved = record_key_change(&changes, &mut batch, &user)?;
                db.write(batch)?;
                drop(reserved);
                // Device lists changed: wake waiting syncs.
                notifier.poke();
                Ok(())
            })
            .await
    }

    /// Whether an upload of cross-signing keys holds nothing new: at least one key, and each key
    /// given equal to the stored key of its kind (a repeat of a self-signing key alone counts, as
    /// in Synapse and Complement's `TestMSC3967`). Such a repeat (a client retrying a lost
    /// response) needs no user-interactive auth.
    pub async fn cross_signing_upload_is_repeat(
        &self,
        user: &UserId,
        master: Option<Box<RawValue>>,
        self_signing: Option<Box<RawValue>>,
        user_signing: Option<Box<RawValue>>,
    ) -> Result<bool> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                if master.is_none() && self_signing.is_none() && user_signing.is_none() {
                    return Ok(false);
                }
                for (kind, uploaded) in
                    [("master", master), ("self_signing", self_signing), ("user_signing", user_signing)]
                {
                    let Some(uploaded) = uploaded else { continue };
                    let Some(stored) = CROSS_SIGNING_KEYS.get(db, &(user.clone(), kind.to_owned()))? else {
                        return Ok(false);
                    };
                    if to_canonical(&stored)? != to_canonical(&uploaded)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .await
    }

    pub async fn has_master_key(&self, user: &UserId) -> Result<bool> {
        let key = (user.to_owned(), "master".to_owned());
        self.db.run(move |db| Ok(CROSS_SIGNING_KEYS.contains(db, &key)?)).await
    }

    /// Checks and stores one signature from `/keys/signatures/upload`: the sender signing their
    /// own device (with their self-signing key) or master key (with a device key), or another
    /// user's master key (with their user-signing key). Errors say why it was refused.
    pub async fn add_signature(
        &self,
        sender: &UserId,
        target: &UserId,
        key_id: &str,
        signed: Box<RawValue>,
    ) -> Result<(), String> {
        let (sender, target, key_id) = (sender.to_owned(), target.to_owned(), key_id.to_owned());
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        let result = self
            .lock
            .run(&self.db, move |db| {
                let object = to_canonical(&signed)?;
                let cross = |user: &OwnedUserId, kind: &str| -> Result<Option<(String, String)>> {
                    Ok(CROSS_SIGNING_KEYS
                        .get(db, &(user.clone(), kind.to_owned()))?
                        .map(|r| to_canonical(&r))
                        .transpose()?
                        .as_ref()
                        .and_then(ed25519_key))
                };
                let signer_keys: Vec<(String, String)> = if target == sender {
                    let own_device = DEVICE_KEYS.get(db, &(sender.clone(), OwnedDeviceId::from(key_id.as_str())))?;
                    if own_device.is_some() {
                        cross(&sender, "self_signing")?.into_iter().collect()
                    } else {
                        // The sender's master key, signed by one of their devices.
                        let mut keys = Vec::new();
                        for (_, raw) in DEVICE_KEYS.scan_prefix(db, &(sender.clone(),))? {
                            if let Some(key) = ed25519_key(&to_canonical(&raw)?) {
                                keys.push(key);
                            }
                        }
                        keys
                    }
                } else {
                    cross(&sender, "user_signing")?.into_iter().collect()
                };
                let Some(signer_key) = signer_keys.into_iter().find(|key| verify_signed_by(&object, &sender, key))
                else {
                    return Ok(Err("No valid signature by a key the sender may sign this with".to_owned()));
                };
                let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
                    return Ok(Err("No signatures".to_owned()));
                };
                let signature = match signatures.get(sender.as_str()) {
                    Some(CanonicalJsonValue::Object(by_sender)) => match by_sender.get(&signer_key.0) {
                        Some(CanonicalJsonValue::String(signature)) => signature.clone(),
                        _ => return Ok(Err("No signature by the signing key".to_owned())),
                    },
                    _ => return Ok(Err("No signature by the sender".to_owned())),
                };
                let mut batch = Batch::new();
                batch.put(&KEY_SIGNATURES, &(target.clone(), key_id, sender.clone(), signer_key.0), &signature)?;
                let reserved = record_key_change(&changes, &mut batch, &target)?;
                db.write(batch)?;
                drop(reserved);
                notifier.poke();
                Ok(Ok(()))
            })
            .await;
        match result {
            Ok(inner) => inner,
            Err(error) => Err(error.to_string()),
        }
    }

    /// Users whose keys changed after position `from` up to `to` (inclusive).
    pub async fn changed_users(&self, from: u64, to: u64) -> Result<Vec<OwnedUserId>> {
        self.db
            .run(move |db| {
                let rows =
                    KEY_CHANGES
                        .scan_from(db, &from.saturating_add(1), ScanDirection::Forward, usize::MAX, |p| *p <= to)?;
                let mut users: Vec<OwnedUserId> = rows.into_iter().map(|(_, user)| user).collect();
                users.sort();
                users.dedup();
                Ok(users)
            })
            .await
    }
}

/// The last place taken in a device's upload order of one-time keys of `algorithm`.
fn last_place(db: &Db, user: &UserId, device: &DeviceId, algorithm: &str) -> Result<Option<u64>> {
    let (user, device) = (user.to_owned(), device.to_owned());
    let end = (user.clone(), device.clone(), algorithm.to_owned(), u64::MAX);
    let last = ONE_TIME_KEY_ORDER
        .scan_from(db, &end, ScanDirection::Reverse, 1, |(u, d, a, _)| *u == user && *d == device && a == algorithm)?;
    Ok(last.first().map(|((_, _, _, place), _)| *place))
}

fn unused_fallback_key_types(db: &Db, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
    Ok(FALLBACK_KEYS
        .scan_prefix(db, &(user.to_owned(), device.to_owned()))?
        .into_iter()
        .filter(|(_, k)| !k.used)
        .map(|((_, _, alg), _)| alg)
        .collect())
}

fn one_time_key_counts(db: &Db, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for ((_, _, key_id), _) in ONE_TIME_KEYS.scan_prefix(db, &(user.to_owned(), device.to_owned()))? {
        let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
        *counts.entry(algorithm).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Adds signatures uploaded through `/keys/signatures/upload` to a key object: the owner's own,
/// and another user's (made with their user-signing key) only for that user as `viewer`, since
/// those are visible to the user who made them alone (spec: cross-signing).
fn merge_signatures(db: &Db, keys: &mut Value, user: &UserId, key_id: &str, viewer: Option<&UserId>) -> Result<()> {
    let mut extra = KEY_SIGNATURES.scan_prefix(db, &(user.to_owned(), key_id.to_owned()))?;
    extra.retain(|((_, _, signer, _), _)| signer == user || Some(signer.as_ref()) == viewer);
    if extra.is_empty() {
        return Ok(());
    }
    let Some(object) = keys.as_object_mut() else { return Ok(()) };
    let signatures = object.entry("signatures").or_insert_with(|| Value::Object(Default::default()));
    for ((_, _, signer, signer_key), signature) in extra {
        if let Some(signatures) = signatures.as_object_mut() {
            let by_signer = signatures.entry(signer.to_string()).or_insert_with(|| Value::Object(Default::default()));
            if let Some(by_signer) = by_signer.as_object_mut() {
                by_signer.insert(signer_key, Value::String(signature));
            }
        }
    }
    Ok(())
}
