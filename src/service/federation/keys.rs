//! The signing keys of other servers: fetched from the server itself
//! (`/_matrix/key/v2/server`, which must be signed by the keys it lists), else from the notaries
//! in `trusted_servers` (`/_matrix/key/v2/query`, signed by the server and by the notary);
//! stored in `server_signing_keys` (with the newest document in `server_key_documents`) and
//! cached in memory. [`RemoteKeys::verify_key`] is what signature checks call: a key unknown,
//! or past its validity at the time asked about, is fetched again (at most once every
//! [`REFETCH_INTERVAL`] per server). Also the notary side: the key documents this server
//! serves at `/_matrix/key/v2/query`, countersigned with its own key.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName,
    api::federation::{
        authentication::XMatrix,
        discovery::{ServerSigningKeys, get_remote_server_keys, get_server_keys},
    },
    room_version_rules::RoomVersionRules,
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};

use super::client::{FederationClient, FederationError};
use crate::{
    Error, Result,
    service::{now_ms, server_keys::ServerKeys},
    storage::{
        Batch, Db,
        federation_tables::{SERVER_KEY_DOCUMENTS, SERVER_SIGNING_KEYS, ServerKeyRecord},
    },
};

/// A server whose keys were asked for is not asked again sooner than this.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Servers whose last fetch attempt is remembered before unused entries are dropped.
const FETCH_LOCK_LIMIT: usize = 10_000;
/// The longest validity a fetched key gets, whatever its `valid_until_ts` says (the spec's
/// cap for room versions 5 and up).
const MAX_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

type KeyMap = BTreeMap<String, ServerKeyRecord>;

pub struct RemoteKeys {
    db: Db,
    server_name: OwnedServerName,
    own: Arc<ServerKeys>,
    client: Arc<FederationClient>,
    trusted_servers: Vec<OwnedServerName>,
    /// Keys by server, loaded from storage on first use.
    cache: RwLock<HashMap<OwnedServerName, Arc<KeyMap>>>,
    /// Per server: a lock held while its keys are fetched, and when they last were.
    fetches: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl RemoteKeys {
    pub(crate) fn new(
        db: Db,
        server_name: OwnedServerName,
        own: Arc<ServerKeys>,
        client: Arc<FederationClient>,
        trusted_servers: Vec<OwnedServerName>,
    ) -> Self {
        Self {
            db,
            server_name,
            own,
            client,
            trusted_servers,
            cache: RwLock::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
        }
    }

    /// The public key `key_id` of `server`, if it is known (fetched when needed) and usable at
    /// `at_ts` (ms): a current key valid until then, or an old key expired after then. With
    /// `at_ts = None` validity is not checked (room versions 1 to 4).
    pub async fn verify_key(&self, server: &ServerName, key_id: &str, at_ts: Option<u64>) -> Result<Option<Base64>> {
        if server == self.server_name {
            let own = self.own.public_key_map();
            return Ok(own.get(server.as_str()).and_then(|keys| keys.get(key_id)).cloned());
        }
        if let Some(key) = usable(&*self.keys_of(server).await?, key_id, at_ts) {
            return Ok(Some(key));
        }
        self.refresh(server, |keys| usable(keys, key_id, at_ts).is_some()).await;
        Ok(usable(&*self.keys_of(server).await?, key_id, at_ts))
    }

    /// A public key map holding `key_id` of `server` when [`Self::verify_key`] finds it.
    pub async fn public_key_map(&self, server: &ServerName, key_id: &str, at_ts: Option<u64>) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        if let Some(key) = self.verify_key(server, key_id, at_ts).await? {
            map.insert(server.to_string(), PublicKeySet::from([(key_id.to_owned(), key)]));
        }
        Ok(map)
    }

    /// The public keys that verify the signatures an event needs: of each server that
    /// [`required_server_signatures_to_verify_event`] names, every `ed25519` key it signed
    /// with, fetched when unknown. From room version 5 a key must be valid at the event's
    /// `origin_server_ts`. Keys that can't be found are left out, so the signature check that
    /// follows refuses the event and names the server.
    ///
    /// [`required_server_signatures_to_verify_event`]: ruma::signatures::required_server_signatures_to_verify_event
    pub async fn event_keys(&self, event: &CanonicalJsonObject, rules: &RoomVersionRules) -> PublicKeyMap {
        let mut map = PublicKeyMap::new();
        let Ok(servers) = ruma::signatures::required_server_signatures_to_verify_event(event, &rules.signatures) else {
            return map;
        };
        let at_ts = match event.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) if rules.enforce_key_validity => {
                Some(u64::try_from(i64::from(*ts)).unwrap_or(0))
            }
            _ => None,
        };
        let Some(CanonicalJsonValue::Object(signatures)) = event.get("signatures") else { return map };
        for server in servers {
            let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else { continue };
            let mut set = PublicKeySet::new();
            for key_id in by_key.keys().filter(|id| id.starts_with("ed25519:")) {
                if let Ok(Some(key)) = self.verify_key(&server, key_id, at_ts).await {
                    set.insert(key_id.clone(), key);
                }
            }
            if !set.is_empty() {
                map.insert(server.to_string(), set);
            }
        }
        map
    }

    /// Checks an `X-Matrix` authorization of an inbound request against the origin's key.
    /// `Err` is a message for the `401` answer.
    pub async fn verify_request(
        &self,
        authorization: &XMatrix,
        request: &http::Request<&[u8]>,
    ) -> std::result::Result<(), String> {
        let map = self
            .public_key_map(&authorization.origin, authorization.key.as_str(), Some(now_ms()))
            .await
            .map_err(|e| format!("cannot look up the origin's key: {e}"))?;
        if map.is_empty() {
            return Err(format!("Unknown key {} of {}", authorization.key, authorization.origin));
        }
        authorization.verify_http_request(request, &self.server_name, &map).map_err(|e| e.to_string())
    }

    /// All stored keys of `server`.
    pub async fn keys_of(&self, server: &ServerName) -> Result<Arc<KeyMap>> {
        if let Ok(cache) = self.cache.read()
            && let Some(keys) = cache.get(server)
        {
            return Ok(keys.clone());
        }
        let name = server.to_string();
        let keys: KeyMap = self
            .db
            .run(move |db| {
                let rows = SERVER_SIGNING_KEYS.scan_prefix(db, &(name,))?;
                Ok(rows.into_iter().map(|((_, key_id), record)| (key_id, record)).collect())
            })
            .await?;
        let keys = Arc::new(keys);
        // Servers with no keys are not remembered: anyone can name any server.
        if !keys.is_empty()
            && let Ok(mut cache) = self.cache.write()
        {
            cache.insert(server.to_owned(), keys.clone());
        }
        Ok(keys)
    }

    /// Fetches `server`'s keys unless `enough` already holds for the stored ones (another task
    /// may have fetched them meanwhile) or they were fetched less than [`REFETCH_INTERVAL`]
    /// ago. Failures are logged: the caller sees that the key is still missing.
    async fn refresh(&self, server: &ServerName, enough: impl Fn(&KeyMap) -> bool) {
        let Some(lock) = self.fetch_lock(server) else { return };
        let mut last = lock.lock().await;
        if let Ok(keys) = self.keys_of(server).await
            && enough(&keys)
        {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch(server).await {
            tracing::warn!(%server, error = %e, "could not fetch the server's signing keys");
        }
    }

    /// The lock held while `server`'s keys are fetched, with the time of the last attempt.
    /// Entries not in use are dropped when there are many (attempt times are then forgotten).
    fn fetch_lock(&self, server: &ServerName) -> Option<Arc<tokio::sync::Mutex<Option<Instant>>>> {
        let mut fetches = self.fetches.lock().ok()?;
        if fetches.len() >= FETCH_LOCK_LIMIT {
            fetches.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Some(fetches.entry(server.to_owned()).or_default().clone())
    }

    /// Fetches `server`'s keys from the server, else from the trusted notaries, and stores them.
    async fn fetch(&self, server: &ServerName) -> std::result::Result<(), String> {
        let direct = self.fetch_direct(server).await;
        let Err(direct_error) = direct else { return Ok(()) };
        let mut errors = vec![format!("directly: {direct_error}")];
        for notary in &self.trusted_servers {
            if notary == server || *notary == self.server_name {
                continue;
            }
            match self.fetch_from_notary(server, notary).await {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(format!("through {notary}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    async fn fetch_direct(&self, server: &ServerName) -> std::result::Result<(), String> {
        let response =
            self.client.send(server, get_server_keys::v2::Request::new()).await.map_err(|e| e.to_string())?;
        let document = to_object(&response.server_key)?;
        let keys = check_self_signed(server, &document)?;
        self.store(server, document, keys).await.map_err(|e| e.to_string())
    }

    async fn fetch_from_notary(&self, server: &ServerName, notary: &ServerName) -> std::result::Result<(), String> {
        // The notary's own keys, to check its signature (fetched directly, never through
        // another notary).
        let notary_keys = match self.keys_of(notary).await {
            Ok(keys) if has_current_key(&keys) => keys,
            _ => {
                self.fetch_direct(notary).await?;
                self.keys_of(notary).await.map_err(|e| e.to_string())?
            }
        };
        let request = get_remote_server_keys::v2::Request::new(server.to_owned(), MilliSecondsSinceUnixEpoch::now());
        let response = self.client.send(notary, request).await.map_err(|e: FederationError| e.to_string())?;
        let mut stored = false;
        for raw in &response.server_keys {
            let document = to_object(raw)?;
            let keys = check_self_signed(server, &document)?;
            let notary_set: PublicKeySet = notary_keys
                .iter()
                .filter_map(|(id, record)| Some((id.clone(), Base64::parse(&record.key).ok()?)))
                .collect();
            verify_signed_by(&document, notary.as_str(), notary_set)
                .map_err(|e| format!("the notary's signature does not verify: {e}"))?;
            self.store(server, document, keys).await.map_err(|e| e.to_string())?;
            stored = true;
        }
        if stored { Ok(()) } else { Err("the notary has no keys for it".to_owned()) }
    }

    /// Stores a verified key document: its keys merged with those known, and the document.
    async fn store(&self, server: &ServerName, document: CanonicalJsonObject, keys: KeyMap) -> Result<()> {
        let name = server.to_string();
        let document = serde_json::to_value(&document).map_err(|e| Error::internal(e.to_string()))?;
        let merged = self
            .db
            .run(move |db| {
                let mut known: KeyMap = SERVER_SIGNING_KEYS
                    .scan_prefix(db, &(name.clone(),))?
                    .into_iter()
                    .map(|((_, key_id), record)| (key_id, record))
                    .collect();
                let mut batch = Batch::new();
                for (key_id, record) in keys {
                    let merged = match known.get(&key_id) {
                        // A key seen before keeps the longest validity any document gave it;
                        // an expiry, once announced, stays.
                        Some(old) => ServerKeyRecord {
                            key: record.key,
                            valid_until_ts: old.valid_until_ts.max(record.valid_until_ts),
                            expired_ts: record.expired_ts.or(old.expired_ts),
                        },
                        None => record,
                    };
                    if known.get(&key_id) != Some(&merged) {
                        batch.put(&SERVER_SIGNING_KEYS, &(name.clone(), key_id.clone()), &merged)?;
                    }
                    known.insert(key_id, merged);
                }
                batch.put(&SERVER_KEY_DOCUMENTS, &name, &document)?;
                db.write(batch)?;
                Ok(known)
            })
            .await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(server.to_owned(), Arc::new(merged));
        }
        Ok(())
    }

    /// The key documents of `server` this server vouches for as a notary, countersigned: its
    /// own document for itself; for another server the stored one, fetched first when there is
    /// none or it expires before `minimum_valid_until_ts`. Empty when none can be had.
    pub async fn notary_documents(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: u64,
    ) -> Result<Vec<Raw<ServerSigningKeys>>> {
        let document = if server == self.server_name {
            Some(self.own.key_document()?)
        } else {
            let mut stored = self.stored_document(server).await?;
            let fresh = |document: &Option<CanonicalJsonObject>| {
                document.as_ref().and_then(valid_until).is_some_and(|until| until >= minimum_valid_until_ts)
            };
            if !fresh(&stored) {
                if let Some(lock) = self.fetch_lock(server) {
                    let mut last = lock.lock().await;
                    if !last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
                        *last = Some(Instant::now());
                        if let Err(e) = self.fetch_direct(server).await {
                            tracing::info!(%server, error = %e, "notary: could not fetch the server's keys");
                        }
                    }
                }
                stored = self.stored_document(server).await?;
            }
            stored
                .map(|mut document| {
                    // Signatures of the server and of other notaries stay; ours is added.
                    ruma::signatures::sign_json(self.server_name.as_str(), self.own.key_pair(), &mut document)
                        .map_err(|e| Error::internal(format!("cannot sign a key document: {e}")))?;
                    Ok::<_, Error>(document)
                })
                .transpose()?
        };
        document
            .map(|document| {
                let raw = serde_json::value::to_raw_value(&document).map_err(|e| Error::internal(e.to_string()))?;
                Ok(Raw::from_json(raw))
            })
            .into_iter()
            .collect()
    }

    async fn stored_document(&self, server: &ServerName) -> Result<Option<CanonicalJsonObject>> {
        let name = server.to_string();
        let value = self.db.run(move |db| Ok(SERVER_KEY_DOCUMENTS.get(db, &name)?)).await?;
        Ok(value.and_then(|value| serde_json::from_value(value).ok()))
    }
}

/// The key `key_id` in `keys` if it may be used at `at_ts`.
fn usable(keys: &KeyMap, key_id: &str, at_ts: Option<u64>) -> Option<Base64> {
    let record = keys.get(key_id)?;
    let valid = match (at_ts, record.expired_ts) {
        (None, _) => true,
        (Some(at), Some(expired)) => at < expired,
        (Some(at), None) => at <= record.valid_until_ts,
    };
    if valid { Base64::parse(&record.key).ok() } else { None }
}

fn has_current_key(keys: &KeyMap) -> bool {
    let now = now_ms();
    keys.values().any(|record| record.expired_ts.is_none() && record.valid_until_ts >= now)
}

fn to_object(raw: &Raw<ServerSigningKeys>) -> std::result::Result<CanonicalJsonObject, String> {
    serde_json::from_str(raw.json().get()).map_err(|e| format!("the key document is not canonical JSON: {e}"))
}

fn valid_until(document: &CanonicalJsonObject) -> Option<u64> {
    match document.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).ok(),
        _ => None,
    }
}

/// Checks that `document` is `server`'s key document, signed by the keys it lists, and returns
/// its keys with their validity (at most [`MAX_VALIDITY_MS`] from now).
fn check_self_signed(server: &ServerName, document: &CanonicalJsonObject) -> std::result::Result<KeyMap, String> {
    let parsed: ServerSigningKeys = serde_json::from_value(
        serde_json::to_value(document).map_err(|e| format!("the key document is invalid: {e}"))?,
    )
    .map_err(|e| format!("the key document is invalid: {e}"))?;
    if parsed.server_name != server {
        return Err(format!("the key document is for {}, not {server}", parsed.server_name));
    }
    let current: PublicKeySet = parsed.verify_keys.iter().map(|(id, key)| (id.to_string(), key.key.clone())).collect();
    if current.is_empty() {
        return Err("the key document lists no verify keys".to_owned());
    }
    verify_signed_by(document, server.as_str(), current)
        .map_err(|e| format!("the key document's self-signature does not verify: {e}"))?;
    let now = now_ms();
    let valid_until_ts = u64::from(parsed.valid_until_ts.get()).min(now + MAX_VALIDITY_MS);
    let mut keys: KeyMap = parsed
        .verify_keys
        .into_iter()
        .map(|(id, key)| (id.to_string(), ServerKeyRecord { key: key.key.encode(), valid_until_ts, expired_ts: None }))
        .collect();
    for (id, key) in parsed.old_verify_keys {
        let expired = u64::from(key.expired_ts.get());
        keys.entry(id.to_string()).or_insert(ServerKeyRecord {
            key: key.key.encode(),
            valid_until_ts: expired,
            expired_ts: Some(expired),
        });
    }
    Ok(keys)
}

/// Verifies the signatures of `entity` on `object` with `keys` (at least one must be there and
/// verify), ignoring other entities' signatures.
fn verify_signed_by(
    object: &CanonicalJsonObject,
    entity: &str,
    keys: PublicKeySet,
) -> std::result::Result<(), ruma::signatures::VerificationError> {
    let mut only = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = only.get_mut("signatures") {
        signatures.retain(|name, _| name == entity);
    }
    ruma::signatures::verify_json(&PublicKeyMap::from([(entity.to_owned(), keys)]), &only)
}

#[cfg(test)]
mod tests;
