//! Messages: `send` (idempotent per device and transaction ID), `redact`, `/messages`, `/event`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::{
        Direction,
        client::{
            message::get_message_events, message::send_message_event, redact::redact_event, room::get_room_event,
        },
    },
    events::TimelineEventType,
    serde::Raw,
};
use serde_json::Value;

use crate::service::rate_limit::UserAction;
use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        admin::moderation,
        rooms::{NewEvent, Transaction, attach_relations},
    },
    storage::ScanDirection,
};

/// Largest page `/messages` returns.
const MAX_MESSAGES_LIMIT: usize = 1000;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send).ruma(redact).ruma(messages).ruma(event)
}

pub fn raw_event<T>(value: &Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(value).unwrap_or_default())
}

/// Timeline events for `user` in the client format, with their bundled aggregations
/// (`unsigned.m.relations`) and the user's membership at each (`unsigned.membership`, MSC4115,
/// as Synapse sends it).
pub(super) async fn client_events(
    services: &Services,
    user: &ruma::UserId,
    events: &[&crate::service::rooms::StoredEvent],
) -> Result<Vec<Value>> {
    let ids = events.iter().map(|e| e.pdu.event_id.clone()).collect();
    let mut bundles = services.rooms.bundled_relations(user, ids).await?;
    let memberships =
        services.rooms.memberships_after(user, events.iter().map(|e| e.meta.state_after).collect()).await?;
    Ok(events
        .iter()
        .zip(memberships)
        .map(|(stored, membership)| {
            let mut event = stored.pdu.to_client_event();
            if let Some(bundle) = bundles.remove(stored.pdu.event_id.as_str()) {
                attach_relations(&mut event, bundle);
            }
            if let Some(object) = event.as_object_mut() {
                let unsigned = object.entry("unsigned").or_insert_with(|| serde_json::json!({}));
                if let Some(unsigned) = unsigned.as_object_mut() {
                    unsigned.insert("membership".to_owned(), membership.into());
                }
            }
            event
        })
        .collect())
}

async fn send(
    services: Arc<Services>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let device = sender.device_id.as_str();
    let txn_key = Transaction::key_for("send", &body.room_id, body.txn_id.as_str());
    // Whether this is a retry is decided under the room's lock, with the send itself (one
    // storage trip); a retry is answered even when the sender is rate limited.
    if let Err(limited) = services.rate_limits.user(sender, UserAction::Message) {
        return match services.rooms.transaction(&sender.user_id, device, &txn_key).await? {
            Some(event_id) => Ok(send_message_event::v3::Response::new(event_id)),
            None => Err(limited),
        };
    }
    let content: Value = serde_json::from_str(body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    if body.event_type.to_string() == "m.room.redaction"
        && let Some(redacts) = content.get("redacts").and_then(Value::as_str)
        && let Ok(redacts) = ruma::EventId::parse(redacts)
    {
        moderation::check_redaction(&services, sender, &redacts).await?;
    } else {
        moderation::check_event(sender, &body.event_type.to_string(), None)?;
    }
    if moderation::shadow_banned(sender) {
        return Ok(send_message_event::v3::Response::new(moderation::fake_event_id()?));
    }
    let kind = TimelineEventType::from(body.event_type.to_string());
    let transaction = Transaction { device: device.to_owned(), key: txn_key, client_txn: body.txn_id.to_string() };
    let mut event = NewEvent::message(kind, content);
    // Timestamp massaging (`?ts=`) is for application services only; others' is ignored.
    if sender.appservice.is_some() {
        event.timestamp = body.timestamp.map(|ts| ts.get().into());
    }
    let accepted = services.rooms.send_with_transaction(&body.room_id, &sender.user_id, event, transaction).await?;
    // Sending a message is activity for presence, as in Synapse.
    services.presence.active(&sender.user_id).await?;
    Ok(send_message_event::v3::Response::new(accepted.event_id))
}

async fn redact(
    services: Arc<Services>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let device = sender.device_id.as_str();
    let txn = Transaction::key_for("redact", &body.room_id, body.txn_id.as_str());
    if let Some(event_id) = services.rooms.transaction(&sender.user_id, device, &txn).await? {
        return Ok(redact_event::v3::Response::new(event_id));
    }
    services.rate_limits.user(sender, UserAction::Message)?;
    moderation::check_redaction(&services, sender, &body.event_id).await?;
    if moderation::shadow_banned(sender) {
        return Ok(redact_event::v3::Response::new(moderation::fake_event_id()?));
    }
    // An event this server does not have may still be redacted: it may be on another server of
    // the room (Synapse allows it; Complement's `TestFederationRedactSendsWithoutEvent`). One it
    // has must be of this room.
    if services.rooms.event_for(&sender.user_id, &body.event_id).await?.is_some_and(|e| e.pdu.room_id != body.room_id) {
        return Err(Error::not_found("Unknown event"));
    }
    let mut content = serde_json::json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = Value::String(reason.clone());
    }
    let event = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content,
        state_key: None,
        redacts: Some(body.event_id.clone()),
        timestamp: None,
    };
    let transaction = Transaction { device: device.to_owned(), key: txn, client_txn: body.txn_id.to_string() };
    let accepted = services.rooms.send_with_transaction(&body.room_id, &sender.user_id, event, transaction).await?;
    Ok(redact_event::v3::Response::new(accepted.event_id))
}

/// A pagination token: a stream position, or a sync token (`next_batch`), which the spec also
/// allows and which stands for "everything up to its room-event position was delivered".
pub(super) enum Token {
    Position(u64),
    Sync(u64),
}

pub(super) fn parse_token(token: &str) -> Result<Token> {
    if let Ok(position) = token.parse() {
        return Ok(Token::Position(position));
    }
    crate::service::sync::SyncToken::parse(token)
        .map(|token| Token::Sync(token.events))
        .map_err(|_| Error::invalid_param("Invalid pagination token"))
}

/// MSC3874's `org.matrix.msc3874.rel_types` and `not_rel_types` in a `/messages` filter: only
/// events with (or without) one of these relation types. Ruma's filter type has them only behind
/// its `unstable-msc3874` feature, so they are read from the query string here.
#[derive(Default, Clone)]
struct RelTypeFilter {
    rel_types: Option<Vec<String>>,
    not_rel_types: Vec<String>,
}

impl RelTypeFilter {
    fn from_query(query: Option<&str>) -> Self {
        let filter =
            query.into_iter().flat_map(|q| url::form_urlencoded::parse(q.as_bytes())).find(|(k, _)| k == "filter");
        let Some(Ok(json)) = filter.map(|(_, v)| serde_json::from_str::<Value>(&v)) else { return Self::default() };
        let strings = |key: &str| {
            json.get(key)
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
        };
        Self {
            rel_types: strings("org.matrix.msc3874.rel_types"),
            not_rel_types: strings("org.matrix.msc3874.not_rel_types").unwrap_or_default(),
        }
    }

    fn allows(&self, pdu: &crate::service::rooms::Pdu) -> bool {
        if self.rel_types.is_none() && self.not_rel_types.is_empty() {
            return true;
        }
        let content: Option<Value> = serde_json::from_str(pdu.content.get()).ok();
        let rel_type = content.as_ref().and_then(|c| c.pointer("/m.relates_to/rel_type")).and_then(Value::as_str);
        let listed = |types: &[String]| rel_type.is_some_and(|rel| types.iter().any(|t| t == rel));
        self.rel_types.as_deref().is_none_or(listed) && !listed(&self.not_rel_types)
    }
}

async fn messages(
    services: Arc<Services>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let direction = match body.dir {
        Direction::Backward => ScanDirection::Reverse,
        Direction::Forward => ScanDirection::Forward,
    };
    // `from` is exclusive: going backwards from a sync token starts after its position.
    let from = body.from.as_deref().map(parse_token).transpose()?.map(|token| match (token, direction) {
        (Token::Sync(position), ScanDirection::Reverse) => position.saturating_add(1),
        (Token::Sync(position) | Token::Position(position), _) => position,
    });
    let to = body.to.as_deref().map(parse_token).transpose()?.map(|(Token::Sync(p) | Token::Position(p))| p);
    let limit = u64::from(body.limit).clamp(1, MAX_MESSAGES_LIMIT as u64) as usize;
    // Without `from`, backwards pagination starts at the newest event.
    let from = match (from, direction) {
        (None, ScanDirection::Reverse) => Some(services.rooms.current_position() + 1),
        (from, _) => from,
    };
    // An unknown room is a room the user is not in, as Synapse answers (Complement's
    // `TestFetchMessagesFromNonExistentRoom`): 403, which also tells nothing of which rooms exist.
    if services.rooms.version(&body.room_id).await?.is_none() {
        return Err(Error::forbidden("You are not in this room"));
    }
    let membership = services.rooms.membership(&sender.user_id, &body.room_id).await?;
    if membership.is_none() && !services.rooms.is_world_readable(&body.room_id).await? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    // A forgotten room's history is no longer the user's to page through (Synapse; Complement's
    // `TestRoomForget`); rejoining clears the mark.
    if membership.as_ref().is_some_and(|m| m.forgotten) {
        return Err(Error::forbidden("You have forgotten this room"));
    }
    let filter = body.filter.clone();
    let relations = RelTypeFilter::from_query(request.raw_query.as_deref());
    let ignored = services.account_data.ignored_users(&sender.user_id).await?;
    let keep = move |pdu: &crate::service::rooms::Pdu| {
        let kind = pdu.kind.to_string();
        !ignored.contains(&pdu.sender)
            && relations.allows(pdu)
            && filter.types.as_ref().is_none_or(|types| types.iter().any(|t| type_matches(t, &kind)))
            && !filter.not_types.iter().any(|t| type_matches(t, &kind))
            && filter.senders.as_ref().is_none_or(|s| s.contains(&pdu.sender))
            && !filter.not_senders.contains(&pdu.sender)
            && crate::service::sync::filter::url_allowed(&filter, &pdu.content)
    };
    // Going backwards past the start of the local history, other servers of the room are asked
    // for more (backfill).
    let scan = services.timeline_with_backfill(&sender.user_id, &body.room_id, from, direction, limit, keep).await?;
    let (events, next) = (scan.events, scan.next);
    let returned = events.len();
    let events: Vec<_> = events
        .into_iter()
        .take_while(|e| {
            let position = e.meta.position.unwrap_or_default();
            match (to, direction) {
                (Some(to), ScanDirection::Reverse) => position > to,
                (Some(to), ScanDirection::Forward) => position <= to,
                (None, _) => true,
            }
        })
        .collect();
    let found = events.len();
    // Done when the page stopped at `to`, or the scan (which may stop early, see
    // `timeline_filtered`) went past it.
    let reached_to = match (to, next) {
        (Some(_), _) if found < returned => true,
        (Some(to), Some(next)) => match direction {
            ScanDirection::Reverse => next <= to.saturating_add(1),
            ScanDirection::Forward => next >= to,
        },
        _ => false,
    };
    let mut response = get_message_events::v3::Response::new();
    response.start = from.map(|p| p.to_string()).unwrap_or_else(|| "0".to_owned());
    // A page that holds events has an `end`, even when its scan reached the start (or the
    // newest event) of the room: as Synapse answers, and Complement's `TestRoomImageRoundtrip`
    // expects of a `contains_url` page; the next page is then empty and has none. An empty
    // page at the end of the room has none.
    let next = next.or(if found > 0 { scan.last_read } else { None });
    response.end = if reached_to { None } else { next.map(|p| p.to_string()) };
    if !body.filter.lazy_load_options.is_disabled() {
        let mut senders: Vec<&ruma::UserId> = events.iter().map(|e| e.pdu.sender_user()).collect();
        senders.sort();
        senders.dedup();
        for user in senders {
            if let Some(member) = services
                .rooms
                .state_event(&body.room_id, &ruma::events::StateEventType::RoomMember, user.as_str())
                .await?
            {
                response.state.push(raw_event(&member.to_client_event()));
            }
        }
    }
    let stored: Vec<_> = events.iter().collect();
    response.chunk = client_events(&services, &sender.user_id, &stored).await?.iter().map(raw_event).collect();
    Ok(response)
}

/// Filter type patterns may end in `*`.
fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

async fn event(
    services: Arc<Services>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let event = services
        .rooms
        .event_for(&sender.user_id, &body.event_id)
        .await?
        .filter(|e| e.pdu.room_id == body.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let mut client_event = client_events(&services, &sender.user_id, &[&event])
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| event.pdu.to_client_event());
    // The sending device sees its transaction ID, as in `/sync` (Complement's TestTxnInEvent).
    if event.pdu.sender == sender.user_id {
        let event_id = event.pdu.event_id.to_string();
        if let Some((device, txn)) = services.rooms.transaction_ids(vec![event_id.clone()]).await?.remove(&event_id)
            && device == sender.device_id.as_str()
        {
            client_event["unsigned"]["transaction_id"] = Value::String(txn);
        }
    }
    Ok(get_room_event::v3::Response::new(raw_event(&client_event)))
}
