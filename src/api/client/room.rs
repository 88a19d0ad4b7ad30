//! `/createRoom`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    OwnedRoomAliasId, RoomVersionId,
    api::{
        client::room::{
            Visibility,
            create_room::{self, v3::RoomPreset},
        },
        error::ErrorKind,
    },
};
use serde_json::{Map, Value};

use crate::service::rate_limit::UserAction;
use crate::{
    Error, Result,
    api::{RumaRouter, client::discovery::ROOM_VERSIONS, extract::Ruma},
    service::{
        Services, federation,
        rooms::create::{Preset, RoomSpec},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(create_room)
}

/// Checks a room version a client asked for.
pub fn supported_version(services: &Services, version: Option<&RoomVersionId>) -> Result<RoomVersionId> {
    let version = version.cloned().unwrap_or_else(|| services.config.default_room_version.clone());
    if !ROOM_VERSIONS.contains(&version) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        ));
    }
    Ok(version)
}

fn json_object(raw: &serde_json::value::RawValue, what: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(raw.get()).map_err(|_| Error::bad_json(format!("{what} must be a JSON object")))
}

/// The display name and avatar a user's member events carry.
pub async fn member_profile(services: &Services, user: &ruma::UserId) -> Result<Map<String, Value>> {
    let profile = services.profile.all(user).await?;
    Ok(profile.into_iter().filter(|(k, _)| k == "displayname" || k == "avatar_url").collect())
}

#[derive(serde::Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

async fn create_room(
    services: Arc<Services>,
    request: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if !services.config.allow_room_creation {
        return Err(Error::forbidden("Room creation is disabled on this server"));
    }
    crate::service::admin::moderation::check_not_suspended(sender, "Creating rooms")?;
    services.rate_limits.user(sender, UserAction::CreateRoom)?;
    let version = supported_version(&services, body.room_version.as_ref())?;
    let preset = match (&body.preset, &body.visibility) {
        (Some(RoomPreset::PrivateChat), _) => Preset::PrivateChat,
        (Some(RoomPreset::TrustedPrivateChat), _) => Preset::TrustedPrivateChat,
        (Some(RoomPreset::PublicChat), _) => Preset::PublicChat,
        (Some(other), _) => return Err(Error::bad_json(format!("Unknown preset {}", other.as_str()))),
        (None, Visibility::Public) => Preset::PublicChat,
        (None, _) => Preset::PrivateChat,
    };
    let creation_content = match &body.creation_content {
        Some(raw) => json_object(raw.json(), "creation_content")?,
        None => Map::new(),
    };
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => Some(json_object(raw.json(), "power_level_content_override")?),
        None => None,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event: InitialState = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::bad_json(format!("Invalid initial_state event: {e}")))?;
        if event.kind == "m.room.encryption" && !services.config.allow_encryption {
            return Err(Error::forbidden("Encryption is disabled on this server"));
        }
        if matches!(event.kind.as_str(), "m.room.create" | "m.room.member" | "m.room.power_levels") {
            return Err(Error::bad_json(format!("{} cannot be set through initial_state", event.kind)));
        }
        initial_state.push((event.kind, event.state_key, Value::Object(event.content)));
    }
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias =
                OwnedRoomAliasId::try_from(format!("#{name}:{}", services.config.server_name)).map_err(|e| {
                    Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::InvalidParam,
                        format!("Invalid room_alias_name: {e}"),
                    )
                })?;
            if services.rooms.resolve_alias(&alias).await?.is_some() {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::RoomInUse,
                    "That room alias is already taken",
                ));
            }
            crate::api::appservice_auth::check_alias_allowed(&services, sender, &alias)?;
            Some(alias)
        }
        None => None,
    };
    // Local users whose invite permission config blocks the creator are left out of the invites
    // (spec v1.18, MSC4155): the room is still made.
    let mut invite = Vec::with_capacity(body.invite.len());
    // A shadow-banned creator's room is made, without its invites (as in Synapse).
    let invitees = if crate::service::admin::moderation::shadow_banned(sender) { &[][..] } else { &body.invite[..] };
    for invitee in invitees {
        let blocked = invitee.server_name() == services.config.server_name
            && services.account_data.invite_decision(invitee, &sender.user_id).await?
                == crate::service::invite_filter::Decision::Block;
        if !blocked {
            invite.push(invitee.clone());
        }
    }
    let spec = RoomSpec {
        version,
        preset,
        creation_content,
        power_level_override,
        alias,
        initial_state,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite,
        is_direct: body.is_direct,
        creator_member: member_profile(&services, &sender.user_id).await?,
        publish: body.visibility == Visibility::Public,
    };
    let room_id = services.rooms.create_room(&sender.user_id, spec).await?;
    tracing::info!(%room_id, creator = %sender.user_id, "created room");
    // Users of other servers are invited once the room exists, each through their server. One
    // that cannot be invited is logged and skipped: the room is made, and the invite can be
    // sent again.
    for invitee in body.invite.iter().filter(|user| user.server_name() != services.config.server_name) {
        let invite =
            federation::membership::invite_remote(&services, &room_id, &sender.user_id, invitee, None, body.is_direct);
        if let Err(error) = invite.await {
            tracing::warn!(%room_id, %invitee, %error, "could not invite a user of another server");
        }
    }
    Ok(create_room::v3::Response::new(room_id))
}
