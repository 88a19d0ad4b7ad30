//! Room state: `state/{type}/{key}` PUT and GET, and `/state`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    api::{
        client::state::{get_state_event_for_key, get_state_events, send_state_event},
        error::ErrorKind,
    },
    events::{StateEventType, TimelineEventType},
};
use serde_json::Value;

use crate::service::rate_limit::UserAction;
use crate::{
    Error, Result,
    api::{
        RumaRouter,
        client::{membership::visible_state, message::raw_event},
        extract::Ruma,
    },
    service::{Services, admin::moderation, rooms::NewEvent},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(put_state).ruma(get_state).ruma(all_state)
}

/// Content checks the spec asks of the server for some state types.
async fn validate(services: &Services, room_id: &ruma::RoomId, kind: &StateEventType, content: &Value) -> Result<()> {
    use ruma::events::room::{
        canonical_alias::RoomCanonicalAliasEventContent, history_visibility::RoomHistoryVisibilityEventContent,
        join_rules::RoomJoinRulesEventContent, name::RoomNameEventContent, power_levels::RoomPowerLevelsEventContent,
        topic::RoomTopicEventContent,
    };
    fn parse<T: serde::de::DeserializeOwned>(content: &Value, kind: &StateEventType) -> Result<T> {
        serde_json::from_value(content.clone()).map_err(|e| Error::bad_json(format!("Invalid {kind} content: {e}")))
    }
    match kind {
        StateEventType::RoomPowerLevels => {
            parse::<RoomPowerLevelsEventContent>(content, kind)?;
        }
        StateEventType::RoomJoinRules => {
            parse::<RoomJoinRulesEventContent>(content, kind)?;
        }
        StateEventType::RoomHistoryVisibility => {
            parse::<RoomHistoryVisibilityEventContent>(content, kind)?;
        }
        StateEventType::RoomName => {
            parse::<RoomNameEventContent>(content, kind)?;
        }
        StateEventType::RoomTopic => {
            parse::<RoomTopicEventContent>(content, kind)?;
        }
        StateEventType::RoomEncryption if !services.config.allow_encryption => {
            return Err(Error::forbidden("Encryption is disabled on this server"));
        }
        StateEventType::RoomCanonicalAlias => {
            // An alias that is no alias is a bad parameter, as Synapse answers (Complement's
            // `TestRoomCanonicalAlias`), not bad JSON.
            let content = serde_json::from_value::<RoomCanonicalAliasEventContent>(content.clone())
                .map_err(|e| Error::invalid_param(format!("Invalid {kind} content: {e}")))?;
            // Every alias named must exist and point at this room.
            for alias in content.alias.iter().chain(content.alt_aliases.iter()) {
                let points_here = match services.rooms.resolve_alias(alias).await? {
                    Some(record) => record.room_id == room_id,
                    None => false,
                };
                if !points_here {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::BadAlias,
                        format!("{alias} does not point to this room"),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

async fn put_state(
    services: Arc<Services>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let content: Value = serde_json::from_str(body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("State content must be a JSON object"));
    }
    validate(&services, &body.room_id, &body.event_type, &content).await?;
    services.rate_limits.user(sender, UserAction::Message)?;
    let is_member = body.event_type == StateEventType::RoomMember;
    let membership = content.get("membership").and_then(Value::as_str).filter(|_| is_member);
    moderation::check_event(sender, &body.event_type.to_string(), membership)?;
    // Synapse lets a shadow-banned user's membership changes through, except invites.
    if moderation::shadow_banned(sender) && (!is_member || membership == Some("invite")) {
        return Ok(send_state_event::v3::Response::new(moderation::fake_event_id()?));
    }
    if sender.guest && body.event_type == StateEventType::RoomMember && content["membership"] == "join" {
        services.rooms.check_guest_join(&body.room_id, &sender.user_id).await?;
    }
    // An invite sent as a member state event obeys the invitee's invite permission config
    // (spec v1.18) as `/invite` does.
    if body.event_type == StateEventType::RoomMember
        && content["membership"] == "invite"
        && let Ok(invitee) = ruma::UserId::parse(body.state_key.as_str())
        && invitee.server_name() == services.config.server_name
    {
        services.account_data.invite_decision(&invitee, &sender.user_id).await?.check()?;
    }
    let kind = TimelineEventType::from(body.event_type.to_string());
    // Setting state to what it already is changes nothing: return the existing event (Synapse
    // does the same, and clients rely on such PUTs being idempotent).
    if let Some(current) = services.rooms.state_event(&body.room_id, &body.event_type, &body.state_key).await?
        && current.content_value() == content
        && current.sender == sender.user_id
    {
        return Ok(send_state_event::v3::Response::new(current.event_id));
    }
    let mut event = NewEvent::state(kind, body.state_key.clone(), content);
    // Timestamp massaging (`?ts=`) is for application services only; others' is ignored.
    if sender.appservice.is_some() {
        event.timestamp = body.timestamp.map(|ts| ts.get().into());
    }
    let accepted = services.rooms.send(&body.room_id, &sender.user_id, event).await?;
    Ok(send_state_event::v3::Response::new(accepted.event_id))
}

async fn get_state(
    services: Arc<Services>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if services.rooms.version(&body.room_id).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let state = visible_state(&services, &sender.user_id, &body.room_id).await?;
    let kind = body.event_type.to_string();
    let event = state
        .into_iter()
        .find(|pdu| pdu.kind.to_string() == kind && pdu.state_key.as_deref() == Some(body.state_key.as_str()))
        .ok_or_else(|| Error::not_found("No such state event"))?;
    let value = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event.to_client_event(),
        _ => event.content_value(),
    };
    let raw = serde_json::value::to_raw_value(&value).map_err(|e| Error::internal(e.to_string()))?;
    Ok(get_state_event_for_key::v3::Response::new(raw))
}

async fn all_state(
    services: Arc<Services>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    if services.rooms.version(room_id).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let state = visible_state(&services, &sender.user_id, room_id).await?;
    Ok(get_state_events::v3::Response::new(state.iter().map(|pdu| raw_event(&pdu.to_client_event())).collect()))
}
