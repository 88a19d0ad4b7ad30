//! Media for the admin API (Synapse's media admin API and a user's media): a user's media in
//! Synapse's orders, the media a room names split into this server's and others', quarantining
//! a room's or a user's media, and the avatars that deleting old media keeps.

use std::{cmp::Ordering, collections::HashSet};

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    service::{Services, media::admin::LocalMedia},
    storage::{room_tables::ROOM_IDS, tables::PROFILE_FIELDS},
};

/// Synapse's `order_by` values for a user's media.
pub const ORDERS: &[&str] = &[
    "media_id",
    "upload_name",
    "created_ts",
    "last_access_ts",
    "media_length",
    "media_type",
    "quarantined_by",
    "safe_from_quarantine",
];

/// A user's media as Synapse lists it.
pub fn to_json(media: &LocalMedia) -> Value {
    json!({
        "media_id": media.media_id,
        "media_type": media.record.content_type.as_deref().unwrap_or("application/octet-stream"),
        "media_length": media.record.size,
        "upload_name": media.record.filename,
        "created_ts": media.record.created_ms,
        "last_access_ts": media.last_access_ms,
        "quarantined_by": media.quarantined_by,
        "safe_from_quarantine": media.protected,
    })
}

/// Orders a user's media by one of [`ORDERS`], then by ascending media ID whatever the
/// direction, as Synapse does (a missing value sorts first).
pub fn order(media: &mut [LocalMedia], order_by: &str, backwards: bool) -> Result<()> {
    if !ORDERS.contains(&order_by) {
        return Err(Error::invalid_param(format!("order_by must be one of {}", ORDERS.join(", "))));
    }
    let primary = |a: &LocalMedia, b: &LocalMedia| -> Ordering {
        match order_by {
            "upload_name" => a.record.filename.cmp(&b.record.filename),
            "created_ts" => a.record.created_ms.cmp(&b.record.created_ms),
            "last_access_ts" => a.last_access_ms.cmp(&b.last_access_ms),
            "media_length" => a.record.size.cmp(&b.record.size),
            "media_type" => a.record.content_type.cmp(&b.record.content_type),
            "quarantined_by" => a.quarantined_by.cmp(&b.quarantined_by),
            "safe_from_quarantine" => a.protected.cmp(&b.protected),
            _ => Ordering::Equal,
        }
    };
    media.sort_by(|a, b| {
        let first = primary(a, b);
        let first = if backwards { first.reverse() } else { first };
        first.then_with(|| a.media_id.cmp(&b.media_id))
    });
    Ok(())
}

/// The `mxc://` URIs a room's events name: (this server's, other servers').
pub async fn media_in_room(services: &Services, room_id: &RoomId) -> Result<(Vec<String>, Vec<String>)> {
    let prefix = format!("mxc://{}/", services.config.server_name);
    let all = services.rooms.media_in_room(room_id).await?;
    Ok(all.into_iter().partition(|uri| uri.starts_with(&prefix)))
}

/// (server, media ID) of an `mxc://` URI.
fn parse_mxc(uri: &str) -> Option<(String, String)> {
    let (server, media_id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    (!server.is_empty() && !media_id.is_empty()).then(|| (server.to_owned(), media_id.to_owned()))
}

/// Quarantines every piece of media a room's events name (this server's and others'); returns
/// how many were quarantined.
pub async fn quarantine_room(services: &Services, room_id: &RoomId, admin: &UserId) -> Result<usize> {
    let uris = services.rooms.media_in_room(room_id).await?;
    let targets = uris.iter().filter_map(|uri| parse_mxc(uri)).collect();
    services.media.set_quarantined(targets, Some(admin)).await
}

/// Quarantines every piece of media a local user uploaded; returns how many were quarantined.
pub async fn quarantine_user(services: &Services, user: &UserId, admin: &UserId) -> Result<usize> {
    let server = services.config.server_name.to_string();
    let targets = services.media.media_of_user(user).await?.into_iter().map(|m| (server.clone(), m.media_id)).collect();
    services.media.set_quarantined(targets, Some(admin)).await
}

/// Local media IDs in use as avatars (users' profiles, rooms' avatars, members' avatars in
/// rooms), which deleting old media keeps unless told otherwise.
pub async fn avatars(services: &Services) -> Result<HashSet<String>> {
    let server = services.config.server_name.to_string();
    let mut uris: Vec<String> = services
        .db
        .run(|db| {
            Ok(PROFILE_FIELDS
                .all(db)?
                .into_iter()
                .filter(|((_, field), _)| field == "avatar_url")
                .filter_map(|(_, value)| value.as_str().map(ToOwned::to_owned))
                .collect())
        })
        .await?;
    let rooms: Vec<OwnedRoomId> =
        services.db.run(|db| Ok(ROOM_IDS.all(db)?.into_iter().map(|(_, id)| id).collect())).await?;
    for room in rooms {
        for pdu in services.rooms.current_state(&room).await? {
            let content = pdu.content_value();
            let field = match pdu.kind.to_string().as_str() {
                "m.room.avatar" => "url",
                "m.room.member" => "avatar_url",
                _ => continue,
            };
            if let Some(uri) = content.get(field).and_then(Value::as_str) {
                uris.push(uri.to_owned());
            }
        }
    }
    Ok(uris
        .iter()
        .filter_map(|uri| parse_mxc(uri))
        .filter(|(origin, _)| *origin == server)
        .map(|(_, media_id)| media_id)
        .collect())
}
