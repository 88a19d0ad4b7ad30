//! Server-side key backup: `/room_keys/version[/{version}]` and `/room_keys/keys` for all
//! rooms, one room or one session.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
        delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
        get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
        get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        backup::{Scope, parse_version},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create_version)
        .ruma(latest_version)
        .ruma(version_info)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_all)
        .ruma(put_room)
        .ruma(put_session)
        .ruma(get_all)
        .ruma(get_room)
        .ruma(get_session)
        .ruma(delete_all)
        .ruma(delete_room)
        .ruma(delete_session)
}

fn uint(n: u64) -> UInt {
    UInt::new_saturating(n)
}

async fn create_version(
    services: Arc<Services>,
    request: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let sender = request.sender()?;
    let version = services.backup.create_version(&sender.user_id, request.body.algorithm.json().to_owned()).await?;
    Ok(create_backup_version::v3::Response::new(version.to_string()))
}

async fn latest_version(
    services: Arc<Services>,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let sender = request.sender()?;
    let info = services.backup.info(&sender.user_id, None).await?;
    Ok(get_latest_backup_info::v3::Response::new(
        Raw::from_json(info.algorithm),
        uint(info.count),
        info.etag.to_string(),
        info.version.to_string(),
    ))
}

async fn version_info(
    services: Arc<Services>,
    request: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let sender = request.sender()?;
    let info = services.backup.info(&sender.user_id, Some(parse_version(&request.body.version)?)).await?;
    Ok(get_backup_info::v3::Response::new(
        Raw::from_json(info.algorithm),
        uint(info.count),
        info.etag.to_string(),
        info.version.to_string(),
    ))
}

async fn update_version(
    services: Arc<Services>,
    request: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let version = parse_version(&body.version)?;
    services.backup.update_version(&sender.user_id, version, body.algorithm.json().to_owned()).await?;
    Ok(update_backup_version::v3::Response::new())
}

async fn delete_version(
    services: Arc<Services>,
    request: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    let sender = request.sender()?;
    services.backup.delete_version(&sender.user_id, parse_version(&request.body.version)?).await?;
    Ok(delete_backup_version::v3::Response::new())
}

async fn put(
    services: &Services,
    user: &ruma::UserId,
    version: &str,
    keys: Vec<(String, String, Box<RawValue>)>,
) -> Result<(String, UInt)> {
    let (count, etag) = services.backup.put_keys(user, parse_version(version)?, keys).await?;
    Ok((etag.to_string(), uint(count)))
}

async fn put_all(
    services: Arc<Services>,
    request: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = body
        .rooms
        .iter()
        .flat_map(|(room, backup)| {
            backup.sessions.iter().map(move |(s, d)| (room.to_string(), s.clone(), d.json().to_owned()))
        })
        .collect();
    let (etag, count) = put(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

async fn put_room(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = body.sessions.iter().map(|(s, d)| (body.room_id.to_string(), s.clone(), d.json().to_owned())).collect();
    let (etag, count) = put(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn put_session(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = vec![(body.room_id.to_string(), body.session_id.clone(), body.session_data.json().to_owned())];
    let (etag, count) = put(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

fn sessions_of(
    sessions: BTreeMap<String, Box<RawValue>>,
) -> BTreeMap<String, Raw<ruma::api::client::backup::KeyBackupData>> {
    sessions.into_iter().map(|(s, d)| (s, Raw::from_json(d))).collect()
}

async fn get_all(
    services: Arc<Services>,
    request: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let sender = request.sender()?;
    let keys = services.backup.get_keys(&sender.user_id, parse_version(&request.body.version)?, Scope::All).await?;
    let mut rooms = BTreeMap::new();
    for (room, sessions) in keys {
        let Ok(room) = OwnedRoomId::try_from(room) else { continue };
        rooms.insert(room, RoomKeyBackup::new(sessions_of(sessions)));
    }
    Ok(get_backup_keys::v3::Response::new(rooms))
}

async fn get_room(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = Scope::Room(body.room_id.to_string());
    let mut keys = services.backup.get_keys(&sender.user_id, parse_version(&body.version)?, scope).await?;
    let sessions = keys.remove(body.room_id.as_str()).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions_of(sessions)))
}

async fn get_session(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = Scope::Session(body.room_id.to_string(), body.session_id.clone());
    let keys = services.backup.get_keys(&sender.user_id, parse_version(&body.version)?, scope).await?;
    let data = keys
        .into_values()
        .flat_map(BTreeMap::into_values)
        .next()
        .ok_or_else(|| Error::not_found("No key is backed up for that session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(Raw::from_json(data)))
}

async fn delete(services: &Services, user: &ruma::UserId, version: &str, scope: Scope) -> Result<(String, UInt)> {
    let (count, etag) = services.backup.delete_keys(user, parse_version(version)?, scope).await?;
    Ok((etag.to_string(), uint(count)))
}

async fn delete_all(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let sender = request.sender()?;
    let (etag, count) = delete(&services, &sender.user_id, &request.body.version, Scope::All).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

async fn delete_room(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (etag, count) =
        delete(&services, &sender.user_id, &body.version, Scope::Room(body.room_id.to_string())).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn delete_session(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = Scope::Session(body.room_id.to_string(), body.session_id.clone());
    let (etag, count) = delete(&services, &sender.user_id, &body.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count))
}
