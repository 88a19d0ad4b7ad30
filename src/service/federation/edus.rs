//! The EDUs of inbound transactions, dispatched to the local services: `m.typing`,
//! `m.receipt` (threaded too), `m.presence`, `m.direct_to_device` (each `message_id` delivered
//! once per origin), `m.device_list_update` and `m.signing_key_update`.
//!
//! Every EDU speaks for users of its origin: an entry about a user of another server is
//! dropped, as is one about a room whose server ACL denies the origin, or a room the user is
//! not joined to. A malformed EDU is dropped alone; EDUs never fail a transaction.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId, presence::PresenceState,
};
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use crate::{
    Result,
    service::{Services, to_device::Target},
};

/// How long a remote user's typing lasts unless their server renews or stops it.
const REMOTE_TYPING: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Edu {
    edu_type: String,
    #[serde(default)]
    content: Value,
}

/// Handles one EDU of a transaction from `origin`. Failures are logged, never returned: the
/// sender cannot do anything about them.
pub async fn receive(services: &Services, origin: &ServerName, raw: &RawValue) {
    let Ok(edu) = serde_json::from_str::<Edu>(raw.get()) else {
        tracing::debug!(%origin, "an EDU of a transaction is not an object with an edu_type");
        return;
    };
    let result = match edu.edu_type.as_str() {
        "m.typing" => typing(services, origin, edu.content).await,
        "m.receipt" => receipts(services, origin, edu.content).await,
        "m.presence" => presence(services, origin, edu.content).await,
        "m.direct_to_device" => to_device(services, origin, edu.content).await,
        "m.device_list_update" => device_list_update(services, origin, edu.content).await,
        "m.signing_key_update" => signing_key_update(services, origin, edu.content).await,
        other => {
            tracing::debug!(%origin, edu_type = %other, "EDU of an unknown type ignored");
            Ok(())
        }
    };
    if let Err(error) = result {
        tracing::debug!(%origin, edu_type = %edu.edu_type, %error, "EDU dropped");
    }
}

fn parse<T: serde::de::DeserializeOwned>(content: Value) -> Result<T> {
    serde_json::from_value(content).map_err(|e| crate::Error::bad_json(e.to_string()))
}

fn refused(why: String) -> crate::Error {
    crate::Error::forbidden(why)
}

/// Checks that `user` belongs to `origin`.
fn speaks_for(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() == origin { Ok(()) } else { Err(refused(format!("{origin} cannot speak for {user}"))) }
}

/// Checks that the room's server ACL allows `origin` and that `user` is joined to the room.
async fn in_room(services: &Services, origin: &ServerName, room: &RoomId, user: &UserId) -> Result<()> {
    if !services.rooms.server_allowed(room, origin).await? {
        return Err(refused(format!("The server ACL of {room} denies {origin}")));
    }
    let member = services.rooms.state_event(room, &ruma::events::StateEventType::RoomMember, user.as_str()).await?;
    let joined = member
        .and_then(|pdu| serde_json::from_str::<Value>(pdu.content.get()).ok())
        .is_some_and(|content| content["membership"] == "join");
    if joined { Ok(()) } else { Err(refused(format!("{user} is not joined to {room}"))) }
}

#[derive(Deserialize)]
struct Typing {
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    typing: bool,
}

async fn typing(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    let typing: Typing = parse(content)?;
    speaks_for(origin, &typing.user_id)?;
    in_room(services, origin, &typing.room_id, &typing.user_id).await?;
    services.typing.set(&typing.room_id, &typing.user_id, typing.typing.then_some(REMOTE_TYPING));
    Ok(())
}

#[derive(Deserialize)]
struct ReceiptData {
    #[serde(default)]
    data: Value,
    event_ids: Vec<OwnedEventId>,
}

async fn receipts(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    // room -> receipt type -> user -> receipt.
    let rooms: BTreeMap<OwnedRoomId, BTreeMap<String, BTreeMap<OwnedUserId, Value>>> = parse(content)?;
    for (room, types) in rooms {
        for (receipt_type, users) in types {
            // Private receipts never leave their server; other types are not known.
            if receipt_type != "m.read" {
                continue;
            }
            for (user, receipt) in users {
                if let Err(error) = receipt_of(services, origin, &room, &user, receipt).await {
                    tracing::debug!(%origin, %room, %user, %error, "receipt dropped");
                }
            }
        }
    }
    Ok(())
}

async fn receipt_of(
    services: &Services,
    origin: &ServerName,
    room: &RoomId,
    user: &UserId,
    receipt: Value,
) -> Result<()> {
    speaks_for(origin, user)?;
    in_room(services, origin, room, user).await?;
    let receipt: ReceiptData = parse(receipt)?;
    let ts = receipt.data["ts"].as_u64().unwrap_or_else(crate::service::now_ms);
    let thread = receipt.data["thread_id"].as_str().filter(|thread| !thread.is_empty());
    // One event per receipt; Synapse sends exactly one.
    let Some(event_id) = receipt.event_ids.last() else { return Ok(()) };
    services.receipts.set_at(room, user, "m.read", event_id, thread, ts).await
}

#[derive(Deserialize)]
struct PresenceUpdates {
    push: Vec<Value>,
}

#[derive(Deserialize)]
struct PresenceUpdate {
    user_id: OwnedUserId,
    presence: PresenceState,
    #[serde(default)]
    status_msg: Option<String>,
    #[serde(default)]
    last_active_ago: u64,
    #[serde(default)]
    currently_active: bool,
}

async fn presence(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    if !services.presence.enabled() {
        return Ok(());
    }
    let updates: PresenceUpdates = parse(content)?;
    for update in updates.push {
        let update: PresenceUpdate = match parse(update) {
            Ok(update) => update,
            Err(error) => {
                tracing::debug!(%origin, %error, "presence update dropped");
                continue;
            }
        };
        if let Err(error) = speaks_for(origin, &update.user_id) {
            tracing::debug!(%origin, %error, "presence update dropped");
            continue;
        }
        services
            .presence
            .set_remote(
                &update.user_id,
                &update.presence,
                update.status_msg,
                update.last_active_ago,
                update.currently_active,
            )
            .await?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct DirectToDevice {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    event_type: String,
    message_id: String,
    messages: BTreeMap<OwnedUserId, BTreeMap<String, Box<RawValue>>>,
}

async fn to_device(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    let message: DirectToDevice = parse(content)?;
    speaks_for(origin, &message.sender)?;
    let mut messages = Vec::new();
    for (user, devices) in message.messages {
        if user.server_name() != services.config.server_name {
            continue;
        }
        for (device, content) in devices {
            let target = match device.as_str() {
                "*" => Target::AllDevices,
                device => Target::Device(OwnedDeviceId::from(device)),
            };
            messages.push((user.clone(), target, content));
        }
    }
    let delivered =
        services.to_device.receive(origin, &message.message_id, &message.sender, &message.event_type, messages).await?;
    if !delivered {
        tracing::debug!(%origin, message_id = %message.message_id, "repeated to-device message ignored");
    }
    Ok(())
}

async fn device_list_update(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    let user: OwnedUserId = parse(content["user_id"].clone())?;
    speaks_for(origin, &user)?;
    if services.keys.apply_device_list_update(content).await? == crate::service::keys::RemoteUpdate::Gap {
        tracing::debug!(%origin, %user, "device list update after a gap; resyncing");
        super::device_lists::resync(services, &user).await;
    }
    Ok(())
}

#[derive(Deserialize)]
struct SigningKeyUpdate {
    user_id: OwnedUserId,
    #[serde(default)]
    master_key: Option<Value>,
    #[serde(default)]
    self_signing_key: Option<Value>,
}

async fn signing_key_update(services: &Services, origin: &ServerName, content: Value) -> Result<()> {
    let update: SigningKeyUpdate = parse(content)?;
    speaks_for(origin, &update.user_id)?;
    services.keys.apply_signing_key_update(&update.user_id, update.master_key, update.self_signing_key).await
}
