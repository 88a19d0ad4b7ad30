//! Invites and leaves across servers. Served to other servers: invites of local users
//! (`/invite`, checked, countersigned and recorded, out of band when this server is not in the
//! room) and leaves of their users from local rooms (`make_leave` templates, `send_leave`).
//! Asked of other servers for local users: inviting a user of another server (the invitee's
//! server countersigns the invite before it is accepted here) and rejecting an invite to a room
//! this server is not in (through a server of the room, or here alone when none answers).

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
    api::{
        error::ErrorKind,
        federation::membership::{RawStrippedState, create_invite, create_leave_event, prepare_leave_event},
    },
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, PublicKeySet, Verified},
};
use serde_json::{Value, json, value::RawValue};

use super::client::FederationError;
use crate::{
    Error, Result,
    service::{
        Services, now_ms, random_string,
        rooms::{
            NewEvent, Outcome, Pdu,
            out_of_band::{RemoteInvite, event_id_of},
        },
    },
};

fn bad(message: impl Into<String>) -> Error {
    Error::bad_json(message)
}

fn bad_gateway(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message)
}

fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    crate::service::rooms::versions::rules(version).ok_or_else(|| {
        Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        )
    })
}

fn parse_event(raw: &RawValue) -> Result<CanonicalJsonObject> {
    serde_json::from_str(raw.get()).map_err(|e| bad(format!("The event is not a JSON object: {e}")))
}

fn to_raw(json: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(json).map_err(|e| Error::internal(e.to_string()))
}

/// A member event's parts that the handshakes check before trusting it.
struct Member {
    pdu: Pdu,
    target: ruma::OwnedUserId,
    membership: String,
}

/// Reads a member event for `room_id` with ID `event_id` (when given); `400 M_BAD_JSON` for
/// anything else.
fn read_member(
    json: &CanonicalJsonObject,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    event_id: Option<&EventId>,
) -> Result<Member> {
    ruma::state_res::check_pdu_format(json, &rules.event_format).map_err(bad)?;
    let pdu = Pdu::from_json(json.clone(), rules).map_err(bad)?;
    if event_id.is_some_and(|id| id != pdu.event_id) {
        return Err(bad("The event ID in the path is not the event's"));
    }
    if pdu.room_id != room_id {
        return Err(bad("The event belongs to another room"));
    }
    if pdu.kind != TimelineEventType::RoomMember {
        return Err(bad("The event is not a member event"));
    }
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())
        .ok_or_else(|| bad("The member event's state key is not a user ID"))?;
    let membership = pdu.content_value()["membership"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| bad("The member event has no membership"))?;
    Ok(Member { pdu, target, membership })
}

/// An error of another server in a membership handshake, as the local client sees it: the
/// refusal's status when it refused (4xx), `502` when it could not be asked.
fn remote_refusal(server: &ServerName, error: FederationError) -> Error {
    match error {
        FederationError::Remote { status, message, .. } if (400..500).contains(&status) => {
            let kind = match status {
                403 => ErrorKind::Forbidden,
                404 => ErrorKind::NotFound,
                _ => ErrorKind::Unknown,
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Error::new(status, kind, format!("{server} refused: {message}"))
        }
        other => bad_gateway(format!("Could not ask {server}: {other}")),
    }
}

/// An event without its signatures and `unsigned`: what two copies of one event must share.
fn unsigned_part(json: &CanonicalJsonObject) -> CanonicalJsonObject {
    let mut copy = json.clone();
    copy.remove("signatures");
    copy.remove("unsigned");
    copy
}

/// Checks that `server` signed the event (with a key it publishes).
async fn check_signed_by(
    services: &Services,
    server: &ServerName,
    json: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(), String> {
    let Some(CanonicalJsonValue::Object(signatures)) = json.get("signatures") else {
        return Err("the event has no signatures".to_owned());
    };
    let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
        return Err(format!("{server} did not sign the event"));
    };
    let mut set = PublicKeySet::new();
    for key_id in by_key.keys().filter(|id| id.starts_with("ed25519:")) {
        if let Ok(Some(key)) = services.federation.keys.verify_key(server, key_id, None).await {
            set.insert(key_id.clone(), key);
        }
    }
    if set.is_empty() {
        return Err(format!("no key of {server} that signed the event is known"));
    }
    let mut redacted = ruma::canonical_json::redact(json.clone(), &rules.redaction, None).map_err(|e| e.to_string())?;
    if let Some(CanonicalJsonValue::Object(signatures)) = redacted.get_mut("signatures") {
        signatures.retain(|name, _| name == server.as_str());
    }
    let map = PublicKeyMap::from([(server.to_string(), set)]);
    ruma::signatures::verify_json(&map, &redacted).map_err(|e| e.to_string())
}

/// The stripped form (`type`, `state_key`, `sender`, `content`) of an entry of
/// `invite_room_state`: a full PDU (spec 1.16+) of this room, or an already stripped event.
pub(super) fn strip(entry: &RawStrippedState, room_id: &RoomId) -> Option<Value> {
    #[allow(deprecated)]
    let (raw, pdu) = match entry {
        RawStrippedState::Pdu(raw) => (raw.get(), true),
        RawStrippedState::Stripped(raw) => (raw.json().get(), false),
        _ => return None,
    };
    let event: Value = serde_json::from_str(raw).ok()?;
    if pdu && event["room_id"].as_str().is_some_and(|id| id != room_id.as_str()) {
        return None;
    }
    let (kind, state_key) = (event["type"].as_str()?, event["state_key"].as_str()?);
    Some(json!({
        "type": kind,
        "state_key": state_key,
        "sender": event["sender"],
        "content": event.get("content").filter(|c| c.is_object()).cloned().unwrap_or_else(|| json!({})),
    }))
}

/// `403` when the room's `m.room.server_acl` (if this server has the room) denies `origin`.
/// An invite of a local user that `origin` sends (`/invite`): checked (a member invite with
/// that ID for an existing local user, sent by its sender's server and signed by it),
/// countersigned, and recorded — through the room's events when this server is in the room,
/// out of band otherwise. Returns the countersigned event.
pub async fn receive_invite(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    version: RoomVersionId,
    event: &RawValue,
    invite_room_state: &[RawStrippedState],
) -> Result<CanonicalJsonObject> {
    let rules = rules_of(&version)?;
    let mut json = parse_event(event)?;
    let member = read_member(&json, &rules, room_id, Some(event_id))?;
    if member.membership != "invite" {
        return Err(bad("The event is not an invite"));
    }
    if member.target.server_name() != services.config.server_name {
        return Err(bad("The invited user is not a user of this server"));
    }
    if !services.accounts.exists(&member.target).await? {
        return Err(Error::not_found("The invited user does not exist"));
    }
    if member.pdu.sender.server_name() != origin {
        return Err(Error::forbidden("The invite was not sent by its sender's server"));
    }
    services.rooms.check_server_allowed(room_id, origin).await?;
    services.account_data.invite_decision(&member.target, &member.pdu.sender).await?.check()?;
    let keys = services.federation.keys.event_keys(&json, &rules).await;
    match ruma::signatures::verify_event(&keys, &json, &rules) {
        Ok(Verified::All) => {}
        Ok(Verified::Signatures) => return Err(Error::forbidden("The invite's content hash does not match")),
        Err(error) => return Err(Error::forbidden(format!("The invite's signature does not verify: {error}"))),
    }
    services.rooms.countersign(&mut json, &rules)?;

    // In the room already: the invite takes its place among the room's events.
    if services.rooms.version(room_id).await?.is_some() {
        match services.rooms.accept_pdu(room_id, json.clone()).await {
            Ok(Outcome::Accepted(accepted)) if !accepted.soft_failed => return Ok(json),
            Ok(Outcome::AlreadyKnown { .. }) => return Ok(json),
            Ok(Outcome::Rejected { reason, .. }) => {
                return Err(Error::forbidden(format!("The invite is not authorised: {reason}")));
            }
            // Events this server doesn't have (it left the room, or never was in it): out of band.
            Ok(other) => tracing::debug!(%room_id, ?other, "invite recorded out of band"),
            Err(error) if error.kind().is_some() => {
                tracing::debug!(%room_id, %error, "invite recorded out of band");
            }
            Err(error) => return Err(error),
        }
    }
    let stripped_state = invite_room_state.iter().filter_map(|entry| strip(entry, room_id)).collect();
    let invite =
        RemoteInvite { room_version: version, event_id: member.pdu.event_id, event: json.clone(), stripped_state };
    services.rooms.record_remote_invite(&member.target, room_id, invite).await?;
    tracing::info!(%room_id, user = %member.target, %origin, "invite received over federation");
    Ok(json)
}

/// A local user invites a user of another server: the invite is built here (not accepted),
/// the invitee's server countersigns it (`/invite` v2, with the room's stripped state), and
/// only then is it accepted here. When that server refuses or cannot be reached, the client
/// gets the error and nothing is stored.
pub async fn invite_remote(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<String>,
    is_direct: bool,
) -> Result<()> {
    let version = services.rooms.version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = rules_of(&version)?;
    let mut content = json!({"membership": "invite"});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    if is_direct {
        content["is_direct"] = json!(true);
    }
    let event = NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content);
    let json = services.rooms.build_event(room_id, sender, event, None).await?;
    services.rooms.authorise_built(room_id, json.clone()).await?;
    let event_id = event_id_of(&json, &rules)?;

    let state = services.rooms.invite_state(room_id, sender).await?;
    let stripped = state
        .iter()
        .map(|pdu| pdu.raw_json().map(RawStrippedState::Pdu).map_err(Error::internal))
        .collect::<Result<_>>()?;
    let server = target.server_name();
    let request = create_invite::v2::Request::new(room_id.to_owned(), event_id, version, to_raw(&json)?, stripped);
    let response = services.federation.client.send(server, request).await.map_err(|e| remote_refusal(server, e))?;
    let signed = parse_event(&response.event).map_err(|_| bad_gateway(format!("{server} sent back no event")))?;
    if unsigned_part(&signed) != unsigned_part(&json) {
        return Err(bad_gateway(format!("{server} changed the invite it was asked to sign")));
    }
    check_signed_by(services, server, &signed, &rules)
        .await
        .map_err(|e| bad_gateway(format!("{server}'s signature on the invite: {e}")))?;
    match services.rooms.accept_pdu(room_id, signed).await? {
        Outcome::Accepted(accepted) if accepted.soft_failed => {
            Err(Error::forbidden("The invite conflicts with the room's current state"))
        }
        other => other.into_local_result().map(|_| ()),
    }
}

/// A local user rejects an invite to a room this server is not in, or rescinds a knock on
/// one: a leave through the inviting server (then the room's own), or, when none of them can be reached or agrees, a
/// leave recorded here alone, so the user is rid of the invite whatever the other servers do.
pub async fn reject_remote_invite(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<String>,
) -> Result<()> {
    let record =
        services.rooms.out_of_band(user, room_id).await?.ok_or_else(|| Error::not_found("No invite to this room"))?;
    let rules = rules_of(&record.room_version)?;
    let invite: CanonicalJsonObject =
        serde_json::from_value(record.invite.clone()).map_err(|e| Error::internal(format!("stored invite: {e}")))?;
    let own = &services.config.server_name;
    let mut servers: Vec<ruma::OwnedServerName> = Vec::new();
    let inviter = record.inviter();
    // A knock's "inviter" is the knocker: the servers of the room's stripped state (its
    // creator's, its admins') are in the room too, and a room ID names none from version 12.
    let senders: Vec<ruma::OwnedUserId> = record
        .stripped_state
        .iter()
        .filter_map(|event| event["sender"].as_str().and_then(|sender| ruma::OwnedUserId::try_from(sender).ok()))
        .collect();
    let candidates = inviter.iter().chain(&senders).map(|u| u.server_name()).chain(room_id.server_name());
    for server in candidates {
        if server != own && !servers.iter().any(|s| s == server) {
            servers.push(server.to_owned());
        }
    }
    for server in &servers {
        match leave_via(services, server, room_id, user, reason.clone(), &record.room_version).await {
            Ok((leave, event_id)) => {
                tracing::info!(%room_id, %user, %server, "invite rejected over federation");
                return services.rooms.record_out_of_band_leave(user, room_id, leave, event_id).await;
            }
            Err(error) => tracing::warn!(%room_id, %user, %server, %error, "could not reject the invite through it"),
        }
    }
    let (leave, event_id) = services.rooms.own_rejection(user, &invite, &rules)?;
    tracing::info!(%room_id, %user, "invite rejected here only: no server of the room answered");
    services.rooms.record_out_of_band_leave(user, room_id, leave, event_id).await
}

/// Leaves a room through `server`: `make_leave`, sign, `send_leave` (v2). Returns the
/// leave event and its ID.
async fn leave_via(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<String>,
    known_version: &RoomVersionId,
) -> Result<(CanonicalJsonObject, OwnedEventId)> {
    let request = prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    let response = services.federation.client.send(server, request).await.map_err(|e| remote_refusal(server, e))?;
    let version = response.room_version.unwrap_or_else(|| known_version.clone());
    let rules = rules_of(&version)?;
    let mut template = parse_event(&response.event)?;
    for field in ["signatures", "hashes", "unsigned"] {
        template.remove(field);
    }
    if rules.event_id_format == EventIdFormatVersion::V1 && !template.contains_key("event_id") {
        let id = format!("${}:{}", random_string(18), services.config.server_name);
        template.insert("event_id".into(), CanonicalJsonValue::String(id));
    }
    template.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().unwrap_or_default()));
    if let Some(reason) = reason
        && let Some(CanonicalJsonValue::Object(content)) = template.get_mut("content")
    {
        content.insert("reason".into(), CanonicalJsonValue::String(reason));
    }
    services.rooms.sign_as_this_server(&mut template, &rules)?;
    let member = read_member(&template, &rules, room_id, None).map_err(|e| bad_gateway(format!("{server}: {e}")))?;
    if member.membership != "leave" || member.target != user || member.pdu.sender != user {
        return Err(bad_gateway(format!("{server} sent a template that is not this user's leave")));
    }
    let event_id = member.pdu.event_id;
    let request = create_leave_event::v2::Request::new(room_id.to_owned(), event_id.clone(), to_raw(&template)?);
    // Only v2: ruma defines no v1 `send_leave` request, and every server of the stable room
    // versions serves v2 (the v1 fallback would need one written here).
    services.federation.client.send(server, request).await.map_err(|e| remote_refusal(server, e))?;
    Ok((template, event_id))
}

/// What every membership template (`make_leave`, `make_knock`) asks first: the user is of
/// `origin`, the room is known and this server is in it, and the room's ACL lets `origin` in.
/// Returns the room's version.
pub(super) async fn check_template_request(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
) -> Result<RoomVersionId> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not a user of the requesting server"));
    }
    let version = services.rooms.version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !services.rooms.is_resident(room_id).await? {
        return Err(Error::not_found("This server is not in that room"));
    }
    services.rooms.check_server_allowed(room_id, origin).await?;
    Ok(version)
}

/// A `make_leave` template for a user of `origin`: the leave built on the room's current
/// extremities, checked against the auth rules, without signatures or hashes.
pub async fn make_leave(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(RoomVersionId, CanonicalJsonObject)> {
    let version = check_template_request(services, origin, room_id, user).await?;
    let event = NewEvent::state(TimelineEventType::RoomMember, user.as_str(), json!({"membership": "leave"}));
    let mut json = services.rooms.build_event(room_id, user, event, None).await?;
    services.rooms.authorise_built(room_id, json.clone()).await?;
    json.remove("signatures");
    json.remove("hashes");
    Ok((version, json))
}

/// A leave that `origin` sends for one of its users (`send_leave`): a member event of this
/// room with the path's ID, whose sender leaves themself; anything else is `400`. Then the
/// ordinary acceptance path (shared with `send_join`).
pub async fn receive_leave(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    event: &RawValue,
) -> Result<()> {
    services.rooms.check_server_allowed(room_id, origin).await?;
    // A leave refused earlier and sent again is refused again there.
    services.rooms.accept_membership_from(origin, room_id, event_id, event, "leave").await?;
    // The room's other servers hear of it from this one, as of a join through `send_join`.
    services.federation.sender.relay(&services.rooms, room_id, event_id, origin).await
}

/// A leave of a local user with an out-of-band invite, arriving from another server outside
/// any room this server is in (a transaction's PDU for such a room): when the invite's own
/// sender kicks the invitee, the invite is rescinded and `/sync` shows the leave. Anyone else's
/// kick is not for this server to judge (it has none of the room's state) and is ignored.
/// Returns whether it was taken.
pub async fn receive_rescission(services: &Services, origin: &ServerName, event: CanonicalJsonObject) -> Result<bool> {
    let room_id = match event.get("room_id") {
        Some(CanonicalJsonValue::String(id)) => {
            ruma::OwnedRoomId::try_from(id.as_str()).map_err(|e| bad(e.to_string()))?
        }
        _ => return Err(bad("The event has no room ID")),
    };
    let Some(target) = event.get("state_key").and_then(|key| match key {
        CanonicalJsonValue::String(key) => UserId::parse(key.as_str()).ok(),
        _ => None,
    }) else {
        return Ok(false);
    };
    let Some(record) = services.rooms.out_of_band(&target, &room_id).await? else { return Ok(false) };
    if record.leave.is_some() {
        return Ok(false);
    }
    let rules = rules_of(&record.room_version)?;
    let member = read_member(&event, &rules, &room_id, None)?;
    if member.membership != "leave" || record.inviter().as_deref() != Some(member.pdu.sender.as_ref()) {
        return Ok(false);
    }
    if member.pdu.sender.server_name() != origin {
        return Err(Error::forbidden("The event was not sent by its sender's server"));
    }
    let keys = services.federation.keys.event_keys(&event, &rules).await;
    if !matches!(ruma::signatures::verify_event(&keys, &event, &rules), Ok(Verified::All)) {
        return Err(Error::forbidden("The event's signatures or hashes do not verify"));
    }
    services.rooms.record_out_of_band_leave(&target, &room_id, event, member.pdu.event_id).await?;
    tracing::info!(%room_id, user = %target, "out-of-band invite rescinded by its sender");
    Ok(true)
}

/// Rejects every out-of-band invite of a user (account deactivation); failures are logged.
pub async fn reject_all_remote_invites(services: &Services, user: &UserId) -> Result<()> {
    for (room_id, membership) in services.rooms.user_rooms(user).await? {
        if membership.membership != "invite" || services.rooms.out_of_band(user, &room_id).await?.is_none() {
            continue;
        }
        if let Err(error) = reject_remote_invite(services, &room_id, user, None).await {
            tracing::warn!(%room_id, %user, %error, "could not reject an invite on deactivation");
        }
    }
    Ok(())
}
