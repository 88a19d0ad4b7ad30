//! End-to-end encryption keys: upload, query, claim, changes, cross-signing keys and
//! signatures. Queries and claims for users of other servers go to their servers
//! (`service::federation::device_lists`).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OneTimeKeyAlgorithm, OwnedOneTimeKeyId, UInt,
    api::client::keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    serde::Raw,
};
use serde_json::{Value, json, value::RawValue};

use crate::{
    Error, Result,
    api::{RumaRouter, client::account::confirm_password, extract::Ruma},
    service::{
        Services, federation,
        sync::{DeviceListWindow, SyncToken, device_list_changes},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(upload).ruma(query).ruma(claim).ruma(changes).ruma(upload_signing_keys).ruma(upload_signatures)
}

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value).map(Raw::from_json).map_err(|e| Error::internal(e.to_string()))
}

/// How long a key query or claim waits for other servers when the client names no timeout.
const DEFAULT_REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn is_remote(services: &Services, user: &ruma::UserId) -> bool {
    user.server_name() != services.config.server_name
}

fn remote_timeout(timeout: Option<std::time::Duration>) -> std::time::Duration {
    timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT).min(std::time::Duration::from_secs(60))
}

async fn upload(services: Arc<Services>, request: Ruma<upload_keys::v3::Request>) -> Result<upload_keys::v3::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let device_keys = body.device_keys.map(|k| k.into_json());
    let one_time: Vec<(String, Box<RawValue>)> =
        body.one_time_keys.into_iter().map(|(id, k)| (id.to_string(), k.into_json())).collect();
    let fallback: Vec<(String, Box<RawValue>)> =
        body.fallback_keys.into_iter().map(|(id, k)| (id.to_string(), k.into_json())).collect();
    let counts = services.keys.upload(&sender.user_id, &sender.device_id, device_keys, one_time, fallback).await?;
    Ok(upload_keys::v3::Response::new(counts_for_response(counts)))
}

pub fn counts_for_response(counts: BTreeMap<String, u64>) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    counts.into_iter().map(|(alg, n)| (OneTimeKeyAlgorithm::from(alg.as_str()), UInt::new_saturating(n))).collect()
}

async fn query(services: Arc<Services>, request: Ruma<get_keys::v3::Request>) -> Result<get_keys::v3::Response> {
    let sender = request.sender()?;
    let mut response = get_keys::v3::Response::new();
    let remote: BTreeMap<_, _> = request
        .body
        .device_keys
        .iter()
        .filter(|(user, _)| is_remote(&services, user))
        .map(|(u, d)| (u.clone(), d.clone()))
        .collect();
    if !remote.is_empty() {
        let timeout = remote_timeout(request.body.timeout);
        let answer = federation::device_lists::query(&services, &sender.user_id, remote, timeout).await?;
        for (user, devices) in answer.device_keys {
            let mut by_device = BTreeMap::new();
            for (device, value) in devices {
                by_device.insert(device, raw(&value)?);
            }
            response.device_keys.insert(user, by_device);
        }
        for (user, key) in answer.master_keys {
            let key = services.keys.add_viewer_signatures(&sender.user_id, &user, key).await?;
            response.master_keys.insert(user, raw(&key)?);
        }
        for (user, key) in answer.self_signing_keys {
            response.self_signing_keys.insert(user, raw(&key)?);
        }
        response.failures = answer.failures;
    }
    for (user, devices) in &request.body.device_keys {
        if is_remote(&services, user) {
            continue;
        }
        let keys = services.keys.device_keys(user, devices.clone(), Some(&sender.user_id)).await?;
        let mut by_device = BTreeMap::new();
        for (device, value) in keys {
            by_device.insert(device, raw(&value)?);
        }
        response.device_keys.insert(user.clone(), by_device);
        if let Some(master) = services.keys.cross_signing_key(user, "master", Some(&sender.user_id)).await? {
            response.master_keys.insert(user.clone(), raw(&master)?);
        }
        if let Some(self_signing) = services.keys.cross_signing_key(user, "self_signing", Some(&sender.user_id)).await?
        {
            response.self_signing_keys.insert(user.clone(), raw(&self_signing)?);
        }
        // A user-signing key is only shown to its owner.
        if *user == sender.user_id
            && let Some(user_signing) =
                services.keys.cross_signing_key(user, "user_signing", Some(&sender.user_id)).await?
        {
            response.user_signing_keys.insert(user.clone(), raw(&user_signing)?);
        }
    }
    Ok(response)
}

async fn claim(services: Arc<Services>, request: Ruma<claim_keys::v3::Request>) -> Result<claim_keys::v3::Response> {
    request.sender()?;
    let mut claimed = BTreeMap::new();
    let remote: BTreeMap<_, _> = request
        .body
        .one_time_keys
        .iter()
        .filter(|(user, _)| is_remote(&services, user))
        .map(|(u, d)| (u.clone(), d.clone()))
        .collect();
    let mut failures = BTreeMap::new();
    if !remote.is_empty() {
        let timeout = remote_timeout(request.body.timeout);
        let (remote_claimed, remote_failures) = federation::device_lists::claim(&services, remote, timeout).await;
        failures = remote_failures;
        for (user, devices) in remote_claimed {
            let mut by_device = BTreeMap::new();
            for (device, keys) in devices {
                let mut by_id = BTreeMap::new();
                for (key_id, key) in keys {
                    let Ok(key_id) = OwnedOneTimeKeyId::try_from(key_id) else { continue };
                    by_id.insert(key_id, raw(&key)?);
                }
                by_device.insert(device, by_id);
            }
            claimed.insert(user, by_device);
        }
    }
    for (user, devices) in &request.body.one_time_keys {
        if is_remote(&services, user) {
            continue;
        }
        let mut by_device = BTreeMap::new();
        for (device, algorithm) in devices {
            if let Some((key_id, key)) = services.keys.claim(user, device, algorithm.as_str()).await? {
                let key_id = OwnedOneTimeKeyId::try_from(key_id).map_err(|e| Error::internal(e.to_string()))?;
                by_device.insert(device.clone(), BTreeMap::from([(key_id, Raw::from_json(key))]));
            }
        }
        if !by_device.is_empty() {
            claimed.insert(user.clone(), by_device);
        }
    }
    let mut response = claim_keys::v3::Response::new(claimed);
    response.failures = failures;
    Ok(response)
}

/// Key-change positions in tokens: a plain number, or the `k` part of a sync token.
pub fn key_position(token: &str) -> Result<u64> {
    token
        .parse()
        .ok()
        .or_else(|| token.split('_').find_map(|part| part.strip_prefix('k').and_then(|n| n.parse().ok())))
        .ok_or_else(|| Error::invalid_param("Invalid token"))
}

async fn changes(
    services: Arc<Services>,
    request: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let sender = request.sender()?;
    let (from, to) = (&request.body.from, &request.body.to);
    let key_changes = (key_position(from)?, key_position(to)?.min(services.keys.current_position()));
    // Sync tokens also bound the membership changes (joins and leaves) the answer includes.
    let events = match (SyncToken::parse(from), SyncToken::parse(to)) {
        (Ok(from), Ok(to)) => Some((from.events, to.events.min(services.rooms.current_position()))),
        _ => None,
    };
    let window = DeviceListWindow { key_changes, events };
    let (changed, left) = device_list_changes(&services, &sender.user_id, window).await?;
    Ok(get_key_changes::v3::Response::new(changed, left))
}

async fn upload_signing_keys(
    services: Arc<Services>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let to_raw = |key: &Option<Raw<_>>| key.as_ref().map(|k: &Raw<_>| k.json().to_owned());
    // Replacing existing cross-signing keys needs the password; the first upload, and a repeat
    // of the stored keys, do not (spec v1.11).
    if services.keys.has_master_key(&sender.user_id).await?
        && !services
            .keys
            .cross_signing_upload_is_repeat(
                &sender.user_id,
                to_raw(&body.master_key),
                to_raw(&body.self_signing_key),
                to_raw(&body.user_signing_key),
            )
            .await?
    {
        confirm_password(&services, &sender.user_id, body.auth.as_ref()).await?;
    }
    services
        .keys
        .set_cross_signing_keys(
            &sender.user_id,
            to_raw(&body.master_key),
            to_raw(&body.self_signing_key),
            to_raw(&body.user_signing_key),
        )
        .await?;
    Ok(upload_signing_keys::v3::Response::new())
}

async fn upload_signatures(
    services: Arc<Services>,
    request: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let sender = request.sender()?;
    let mut response = upload_signatures::v3::Response::new();
    for (user, signed) in &request.body.signed_keys {
        for (key_id, object) in signed.iter() {
            // A signature of a remote user's key (their master key, with the sender's
            // user-signing key) is stored here like a local one: it is shown to the sender alone
            // and never sent to other servers.
            let outcome = services.keys.add_signature(&sender.user_id, user, key_id, object.to_owned()).await;
            if let Err(message) = outcome {
                // Per-key failures, not a whole-request error, as the spec asks.
                let failure = serde_json::from_value(json!({"errcode": "M_INVALID_SIGNATURE", "error": message}))
                    .map_err(|e| Error::internal(e.to_string()))?;
                response.failures.entry(user.clone()).or_default().insert(key_id.to_owned(), failure);
            }
        }
    }
    Ok(response)
}
