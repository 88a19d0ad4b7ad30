//! Unread counts of a joined room: the events after the user's read receipt (or, without one,
//! after their membership event), evaluated with the user's push rules (stored `m.push_rules`
//! account data, or the spec's defaults). `notification_count` counts the events whose actions
//! notify, `highlight_count` those that also highlight. At most the newest 100 events are
//! looked at; the room's power levels are not given to the rules yet, so `@room` mentions do
//! not highlight.

use std::sync::Arc;

use ruma::{
    OwnedRoomId, UInt, UserId,
    events::StateEventType,
    push::{PushConditionRoomCtx, Ruleset},
    serde::Raw,
};

use super::{Context, raw_json};
use crate::{
    Result,
    service::{Services, rooms::Pdu},
};

/// The most unread events looked at per room.
const MAX_COUNTED: usize = 100;

#[derive(serde::Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

/// The user's push rules.
pub(super) async fn ruleset(services: &Services, user: &UserId) -> Result<Ruleset> {
    let stored = services.account_data.get(user, None, "m.push_rules").await?;
    Ok(stored
        .and_then(|json| serde_json::from_str::<PushRulesContent>(json.get()).ok())
        .map_or_else(|| Ruleset::server_default(user), |content| content.global))
}

/// (notification count, highlight count) of a room.
pub(super) async fn counts(
    ctx: &Context<'_>,
    room_id: &OwnedRoomId,
    joined_members: u64,
    membership_position: Option<u64>,
) -> Result<(u64, u64)> {
    let rooms = &ctx.services.rooms;
    let mut after = membership_position.unwrap_or(0);
    for event_id in ctx.services.receipts.read_receipts(room_id, ctx.user).await? {
        let Ok(event_id) = ruma::OwnedEventId::try_from(event_id) else { continue };
        if let Some(position) = rooms.event_for(ctx.user, &event_id).await?.and_then(|e| e.meta.position) {
            after = after.max(position);
        }
    }
    let user = ctx.user.to_owned();
    let others: crate::service::rooms::EventPredicate = Arc::new(move |pdu: &Pdu| pdu.sender != user);
    let window = rooms.timeline_window(ctx.user, room_id, Some(after), ctx.now.events, MAX_COUNTED, others).await?;
    if window.events.is_empty() {
        return Ok((0, 0));
    }
    let display_name = rooms
        .state_event(room_id, &StateEventType::RoomMember, ctx.user.as_str())
        .await?
        .and_then(|pdu| pdu.content_value()["displayname"].as_str().map(str::to_owned))
        .unwrap_or_else(|| ctx.user.localpart().to_owned());
    let room_ctx = PushConditionRoomCtx::new(
        room_id.clone(),
        UInt::try_from(joined_members).unwrap_or(UInt::MAX),
        ctx.user.to_owned(),
        display_name,
    );
    let (mut notifications, mut highlights) = (0, 0);
    for event in &window.events {
        let raw: Raw<serde_json::Value> = raw_json(&event.pdu.to_client_event())?;
        let actions = ctx.ruleset.get_actions(&raw, &room_ctx).await;
        if actions.iter().any(|a| a.should_notify()) {
            notifications += 1;
            if actions.iter().any(|a| a.is_highlight()) {
                highlights += 1;
            }
        }
    }
    Ok((notifications, highlights))
}
