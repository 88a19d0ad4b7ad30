//! Knocking across servers (room versions 7 and up). Served to other servers: `make_knock`
//! templates and `send_knock` (only a knock of the sender's own user; the room's stripped
//! state in return), through the same checks and acceptance path as `send_join`/`send_leave`.
//! Asked of other servers for local users: a knock on a room this server is not in goes
//! through `make_knock`/`send_knock` of a server of the room, and is recorded out of band so
//! `/sync` shows it under `rooms.knock`. The room's answer (an invite, or a kick) arrives as it
//! would for any out-of-band membership.

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, EventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::{
        error::{ErrorKind, IncompatibleRoomVersionErrorData},
        federation::membership::{RawStrippedState, create_knock_event, prepare_knock_event},
    },
    events::TimelineEventType,
};
use serde_json::{Map, Value, json, value::RawValue};

use super::{
    join::{Attempt, from_remote, object},
    membership::strip,
};
use crate::{
    Error, Result,
    service::{
        Services,
        rooms::{NewEvent, ROOM_VERSIONS, out_of_band::RemoteInvite},
    },
};

fn forbidden_version(version: &RoomVersionId) -> Error {
    Error::forbidden(format!("Room version {version} does not support knocking"))
}

fn knocking(version: &RoomVersionId) -> bool {
    crate::service::rooms::versions::rules(version).is_some_and(|rules| rules.authorization.knocking)
}

/// A `make_knock` template for a user of `origin`: `400 M_INCOMPATIBLE_ROOM_VERSION` when the
/// knocking server does not speak the room's version, `403` when the version has no knocking
/// or the auth rules refuse the knock (the join rule, a ban, already in the room), `404` when
/// this server is not in the room.
pub async fn make_knock(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    supported: &[RoomVersionId],
) -> Result<(RoomVersionId, CanonicalJsonObject)> {
    let version = super::membership::check_template_request(services, origin, room_id, user).await?;
    if !supported.contains(&version) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone())),
            format!("The room is version {version}, which your server does not support"),
        ));
    }
    if !knocking(&version) {
        return Err(forbidden_version(&version));
    }
    let event = NewEvent::state(TimelineEventType::RoomMember, user.as_str(), json!({"membership": "knock"}));
    let mut json = services.rooms.build_event(room_id, user, event, None).await?;
    services.rooms.authorise_built(room_id, json.clone()).await?;
    for key in ["signatures", "hashes", "unsigned"] {
        json.remove(key);
    }
    Ok((version, json))
}

/// A knock that `origin` sends for one of its users (`send_knock`): anything but a knock of its
/// sender is `400`; then the acceptance path shared with `send_join`, the relay to the room's
/// other servers, and the room's stripped state (as full PDUs) for the knocking server.
pub async fn receive_knock(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    event: &RawValue,
) -> Result<Vec<RawStrippedState>> {
    services.rooms.check_server_allowed(room_id, origin).await?;
    let version = services.rooms.version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !knocking(&version) {
        return Err(forbidden_version(&version));
    }
    let knock = services.rooms.accept_membership_from(origin, room_id, event_id, event, "knock").await?;
    services.federation.sender.relay(&services.rooms, room_id, event_id, origin).await?;
    let user = match knock.get("sender") {
        Some(ruma::CanonicalJsonValue::String(sender)) => UserId::parse(sender.as_str()).ok(),
        _ => None,
    }
    .ok_or_else(|| Error::internal("an accepted knock without a sender"))?;
    let state = services.rooms.invite_state(room_id, &user).await?;
    state.iter().map(|pdu| pdu.raw_json().map(RawStrippedState::Pdu).map_err(Error::internal)).collect()
}

/// A local user knocks on a room this server is not in, through the first of `servers` that
/// can do it. `content` is the member event's content besides `membership` (reason, profile).
pub async fn knock_remote(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
    content: Map<String, Value>,
) -> Result<()> {
    let mut last_error = None;
    let mut tried: Vec<&OwnedServerName> = Vec::new();
    for server in servers {
        if *server == services.config.server_name || tried.contains(&server) {
            continue;
        }
        tried.push(server);
        match knock_through(services, user, room_id, server, &content).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Stop(error)) => return Err(error),
            Err(Attempt::Next(error)) => {
                tracing::info!(%room_id, %server, %error, "knocking through this server failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::not_found("No server to knock on this room through is known")))
}

async fn knock_through(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    content: &Map<String, Value>,
) -> std::result::Result<(), Attempt> {
    let client = &services.federation.client;
    let mut request = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    request.ver = ROOM_VERSIONS.iter().filter(|version| knocking(version)).cloned().collect();
    let template = client.send(server, request).await.map_err(from_remote)?;
    let version = template.room_version;
    if !ROOM_VERSIONS.contains(&version) || !knocking(&version) {
        return Err(Attempt::Stop(forbidden_version(&version)));
    }
    let template = object(&template.event, "knock template").map_err(Attempt::Next)?;
    let (event_id, event) = services.federation.complete_membership(&version, template, user, content, "knock")?;
    let raw = serde_json::value::to_raw_value(&event).map_err(|e| Attempt::Stop(Error::internal(e.to_string())))?;
    let answer = client
        .send(server, create_knock_event::v1::Request::new(room_id.to_owned(), event_id.clone(), raw))
        .await
        .map_err(from_remote)?;
    let stripped_state = answer.knock_room_state.iter().filter_map(|entry| strip(entry, room_id)).collect();
    let knock = RemoteInvite { room_version: version, event_id, event, stripped_state };
    services.rooms.record_remote_knock(user, room_id, knock).await.map_err(Attempt::Stop)?;
    tracing::info!(%room_id, %user, %server, "knocked over federation");
    Ok(())
}
