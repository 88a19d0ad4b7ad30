//! Membership: join (by ID or alias), invite, leave, forget, kick, ban, unban, knock, and the
//! membership lists (`joined_rooms`, `members`, `joined_members`).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomOrAliasId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
    api::error::ErrorKind,
    events::StateEventType,
    serde::Raw,
};
use serde_json::{Map, Value};

use crate::service::{rate_limit::UserAction, sessions::Authenticated};
use crate::{
    Error, Result,
    api::{RumaRouter, client::room::member_profile, extract::Ruma},
    service::{Services, admin::moderation, federation, rooms::membership::MembershipChange},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(join_by_id)
        .ruma(join_by_id_or_alias)
        .ruma(invite)
        .ruma(leave)
        .ruma(forget)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(knock)
        .ruma(joined_rooms)
        .ruma(members)
        .ruma(joined_members)
}

async fn change(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<String>,
) -> Result<()> {
    change_with(services, room_id, (sender, target), membership, reason, Map::new()).await
}

/// A membership change whose event content also carries `extra` keys the client sent (a join
/// or knock body may hold any content; a display name or avatar given there is kept, as Synapse
/// keeps per-room profiles, and otherwise the user's profile fills them in).
async fn change_with(
    services: &Services,
    room_id: &RoomId,
    (sender, target): (&UserId, &UserId),
    membership: &str,
    reason: Option<String>,
    extra: Map<String, Value>,
) -> Result<()> {
    let mut profile = extra;
    if membership == "join" || membership == "knock" {
        for (key, value) in member_profile(services, target).await? {
            profile.entry(key).or_insert(value);
        }
    }
    services.rooms.change_membership(room_id, MembershipChange { sender, target, membership, reason, profile }).await?;
    Ok(())
}

/// The keys of a join or knock body that are content of the member event: everything but what
/// the endpoint itself defines.
fn extra_content(raw_body: &[u8]) -> Map<String, Value> {
    let mut extra: Map<String, Value> = serde_json::from_slice(raw_body).unwrap_or_default();
    for key in ["membership", "reason", "third_party_signed", "join_authorised_via_users_server"] {
        extra.remove(key);
    }
    extra
}

/// The room an ID or alias names, and servers to join it through (an alias's own server names
/// some).
async fn resolve_room(services: &Services, room: &RoomOrAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    match <&RoomId>::try_from(room) {
        Ok(room_id) => Ok((room_id.to_owned(), Vec::new())),
        Err(alias) if alias.server_name() != services.config.server_name => {
            services.federation.resolve_remote_alias(alias).await
        }
        Err(alias) => {
            let record = services
                .resolve_alias_with_appservices(alias)
                .await?
                .ok_or_else(|| Error::not_found("Unknown room alias"))?;
            Ok((record.room_id, Vec::new()))
        }
    }
}

/// Joins a room: here when this server is in it (or it is a room only this server knows),
/// else through other servers: those the client named, those the alias named, those known to
/// be in the room, and the server in the room ID.
async fn join(
    services: &Services,
    room_id: &RoomId,
    sender: &Authenticated,
    (reason, extra): (Option<String>, Map<String, Value>),
    mut servers: Vec<OwnedServerName>,
) -> Result<()> {
    let user = &sender.user_id;
    moderation::check_not_suspended(sender, "Joining rooms")?;
    let mut extra = extra;
    moderation::strip_room_profile(sender, &mut extra);
    let known_servers = services.rooms.servers_in_room(room_id).await?;
    let known = services.rooms.version(room_id).await?.is_some();
    if services.rooms.is_resident(room_id).await? || (known && known_servers.is_empty()) {
        services.rate_limits.user(sender, UserAction::JoinLocal)?;
        match change_with(services, room_id, (user, user), "join", reason.clone(), extra.clone()).await {
            // A restricted join no user of this server may authorise: a resident server with
            // such a user may (Complement's `TestRestrictedRoomsRemoteJoinLocalUser`).
            Err(Error::Matrix { kind: ErrorKind::UnableToGrantJoin, .. }) if !known_servers.is_empty() => {}
            Ok(()) => return crate::service::push::carry_over_room_rule(services, user, room_id).await,
            done => return done,
        }
    }
    services.rate_limits.user(sender, UserAction::JoinRemote)?;
    servers.extend(known_servers);
    // An invite received over federation: its sender's server is in the room.
    if let Some(inviter) = services.rooms.out_of_band(user, room_id).await?.and_then(|record| record.inviter()) {
        servers.push(inviter.server_name().to_owned());
    }
    servers.extend(room_id.server_name().map(ToOwned::to_owned));
    let mut content = extra;
    for (key, value) in member_profile(services, user).await? {
        content.entry(key).or_insert(value);
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), Value::String(reason));
    }
    services.federation.join_remote_room(&services.rooms, user, room_id, &servers, content).await?;
    crate::service::push::carry_over_room_rule(services, user, room_id).await
}

async fn join_by_id(
    services: Arc<Services>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let extra = extra_content(&request.raw_body);
    join(&services, &body.room_id, sender, (body.reason.clone(), extra), Vec::new()).await?;
    Ok(join_room_by_id::v3::Response::new(body.room_id.clone()))
}

async fn join_by_id_or_alias(
    services: Arc<Services>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (room_id, mut servers) = resolve_room(&services, &body.room_id_or_alias).await?;
    servers.splice(0..0, body.via.iter().cloned());
    let extra = extra_content(&request.raw_body);
    join(&services, &room_id, sender, (body.reason.clone(), extra), servers).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

async fn invite(services: Arc<Services>, request: Ruma<invite_user::v3::Request>) -> Result<invite_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &body.recipient else {
        return Err(Error::bad_json("Third-party invites are not supported"));
    };
    moderation::check_not_suspended(sender, "Sending invites")?;
    services.rate_limits.invite(sender, body.room_id.as_str(), recipient.user_id.as_str())?;
    // Answered as sent, and dropped (Synapse's shadow-ban).
    if moderation::shadow_banned(sender) {
        return Ok(invite_user::v3::Response::new());
    }
    if recipient.user_id.server_name() != services.config.server_name {
        let (room, target, reason) = (&body.room_id, &recipient.user_id, recipient.reason.clone());
        federation::membership::invite_remote(&services, room, &sender.user_id, target, reason, false).await?;
        return Ok(invite_user::v3::Response::new());
    }
    services.lookup_appservice_user(&recipient.user_id).await?;
    services.account_data.invite_decision(&recipient.user_id, &sender.user_id).await?.check()?;
    change(&services, &body.room_id, &sender.user_id, &recipient.user_id, "invite", recipient.reason.clone()).await?;
    Ok(invite_user::v3::Response::new())
}

async fn leave(services: Arc<Services>, request: Ruma<leave_room::v3::Request>) -> Result<leave_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    // An invite to a room this server is not in is rejected through the room's servers.
    if services.rooms.out_of_band(&sender.user_id, &body.room_id).await?.is_some_and(|record| record.leave.is_none()) {
        federation::membership::reject_remote_invite(&services, &body.room_id, &sender.user_id, body.reason.clone())
            .await?;
        return Ok(leave_room::v3::Response::new());
    }
    change(&services, &body.room_id, &sender.user_id, &sender.user_id, "leave", body.reason.clone()).await?;
    Ok(leave_room::v3::Response::new())
}

async fn forget(services: Arc<Services>, request: Ruma<forget_room::v3::Request>) -> Result<forget_room::v3::Response> {
    let sender = request.sender()?;
    services.rooms.set_forgotten(&sender.user_id, &request.body.room_id).await?;
    Ok(forget_room::v3::Response::new())
}

async fn kick(services: Arc<Services>, request: Ruma<kick_user::v3::Request>) -> Result<kick_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    // The auth rules allow a "kick" of someone who already left or never came; Synapse refuses
    // it (Complement's `TestCannotKickNonPresentUser` and `TestCannotKickLeftUser`), and the
    // event would say nothing.
    let current = services.rooms.state_event(&body.room_id, &StateEventType::RoomMember, body.user_id.as_str()).await?;
    if current
        .is_none_or(|pdu| !matches!(crate::service::rooms::membership_of(&pdu).as_str(), "join" | "invite" | "knock"))
    {
        return Err(Error::forbidden("The target user is not in the room"));
    }
    change(&services, &body.room_id, &sender.user_id, &body.user_id, "leave", body.reason.clone()).await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(services: Arc<Services>, request: Ruma<ban_user::v3::Request>) -> Result<ban_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    moderation::check_event(sender, "m.room.member", Some("ban"))?;
    change(&services, &body.room_id, &sender.user_id, &body.user_id, "ban", body.reason.clone()).await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(services: Arc<Services>, request: Ruma<unban_user::v3::Request>) -> Result<unban_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let current = services.rooms.state_event(&body.room_id, &StateEventType::RoomMember, body.user_id.as_str()).await?;
    if current.is_none_or(|pdu| crate::service::rooms::membership_of(&pdu) != "ban") {
        return Err(Error::forbidden("That user is not banned"));
    }
    change(&services, &body.room_id, &sender.user_id, &body.user_id, "leave", body.reason.clone()).await?;
    Ok(unban_user::v3::Response::new())
}

async fn knock(services: Arc<Services>, request: Ruma<knock_room::v3::Request>) -> Result<knock_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (room_id, alias_servers) = resolve_room(&services, &body.room_id_or_alias).await?;
    moderation::check_not_suspended(sender, "Knocking on rooms")?;
    let (user, mut extra) = (&sender.user_id, extra_content(&request.raw_body));
    moderation::strip_room_profile(sender, &mut extra);
    let known = services.rooms.version(&room_id).await?.is_some();
    if services.rooms.is_resident(&room_id).await?
        || (known && services.rooms.servers_in_room(&room_id).await?.is_empty())
    {
        change_with(&services, &room_id, (user, user), "knock", body.reason.clone(), extra).await?;
        return Ok(knock_room::v3::Response::new(room_id));
    }
    // A room on other servers: through those the client named, the alias named, and the one
    // in the room ID.
    let mut servers = body.via.clone();
    servers.extend(alias_servers);
    servers.extend(room_id.server_name().map(ToOwned::to_owned));
    let mut content = extra;
    for (key, value) in member_profile(&services, user).await? {
        content.entry(key).or_insert(value);
    }
    if let Some(reason) = body.reason.clone() {
        content.insert("reason".into(), Value::String(reason));
    }
    crate::service::federation::knock::knock_remote(&services, user, &room_id, &servers, content).await?;
    Ok(knock_room::v3::Response::new(room_id))
}

async fn joined_rooms(
    services: Arc<Services>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    let sender = request.sender()?;
    let rooms = services.rooms.user_rooms(&sender.user_id).await?;
    Ok(joined_rooms::v3::Response::new(
        rooms.into_iter().filter(|(_, m)| m.membership == "join").map(|(r, _)| r).collect(),
    ))
}

/// The member events a user may read: the current ones while joined, those at the time they
/// left otherwise, all of them in world-readable rooms.
pub async fn visible_state(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
) -> Result<Vec<crate::service::rooms::Pdu>> {
    match services.rooms.membership(user, room_id).await? {
        Some(m) if m.membership == "join" => services.rooms.current_state(room_id).await,
        Some(m) if m.membership == "leave" || m.membership == "ban" => {
            let event_id = ruma::OwnedEventId::try_from(m.event_id).map_err(|e| Error::internal(e.to_string()))?;
            services.rooms.state_at_event(&event_id).await
        }
        _ if services.rooms.is_world_readable(room_id).await? => services.rooms.current_state(room_id).await,
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

async fn members(
    services: Arc<Services>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let state = match &body.at {
        Some(at) => {
            let position: u64 = at.parse().map_err(|_| Error::invalid_param("Invalid `at` token"))?;
            services.rooms.state_at_position(&sender.user_id, &body.room_id, position).await?
        }
        None => visible_state(&services, &sender.user_id, &body.room_id).await?,
    };
    let chunk = state
        .into_iter()
        .filter(|pdu| pdu.kind.to_string() == "m.room.member")
        .filter(|pdu| {
            let membership = crate::service::rooms::membership_of(pdu);
            body.membership.as_ref().is_none_or(|m| m.as_str() == membership)
                && body.not_membership.as_ref().is_none_or(|m| m.as_str() != membership)
        })
        .map(|pdu| Raw::from_json(serde_json::value::to_raw_value(&pdu.to_client_event()).unwrap_or_default()))
        .collect();
    Ok(get_member_events::v3::Response::new(chunk))
}

async fn joined_members(
    services: Arc<Services>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    if services.rooms.membership(&sender.user_id, room_id).await?.is_none_or(|m| m.membership != "join") {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let mut joined = BTreeMap::new();
    for pdu in services.rooms.current_state(room_id).await? {
        if pdu.kind.to_string() != "m.room.member" || crate::service::rooms::membership_of(&pdu) != "join" {
            continue;
        }
        let Some(user) = pdu.state_key.as_deref().and_then(|k| OwnedUserId::try_from(k).ok()) else { continue };
        let content = pdu.content_value();
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = content.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
        member.avatar_url = content.get("avatar_url").and_then(|v| v.as_str()).map(Into::into);
        joined.insert(user, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}
