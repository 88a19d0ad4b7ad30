//! Events around a point: `/rooms/{roomId}/context/{eventId}` and
//! `/rooms/{roomId}/timestamp_to_event`.

use std::{collections::BTreeSet, sync::Arc};

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{
        Direction,
        client::{context::get_context, filter::RoomEventFilter, room::get_event_by_timestamp},
    },
};

use crate::{
    Result,
    api::{RumaRouter, client::message::raw_event, extract::Ruma},
    service::{Services, rooms::Pdu},
};

/// Largest number of events `/context` returns.
const MAX_CONTEXT_LIMIT: u64 = 1000;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(context).ruma(timestamp_to_event)
}

/// Filter type patterns may end in `*`.
fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

pub(crate) fn filter_accepts(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    filter.types.as_ref().is_none_or(|types| types.iter().any(|t| type_matches(t, &kind)))
        && !filter.not_types.iter().any(|t| type_matches(t, &kind))
        && filter.senders.as_ref().is_none_or(|s| s.contains(&pdu.sender))
        && !filter.not_senders.contains(&pdu.sender)
        && crate::service::sync::filter::url_allowed(filter, &pdu.content)
}

async fn context(
    services: Arc<Services>,
    request: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let limit = u64::from(body.limit).min(MAX_CONTEXT_LIMIT) as usize;
    // As Synapse splits it: the smaller half before the event.
    let before = limit / 2;
    let after = limit - before;
    let filter = &body.filter;
    let ignored = services.account_data.ignored_users(&sender.user_id).await?;
    let keep = |pdu: &Pdu| !ignored.contains(&pdu.sender) && filter_accepts(filter, pdu);
    let context =
        services.rooms.event_context(&sender.user_id, &body.room_id, &body.event_id, before, after, &keep).await?;

    let mut state = context.state;
    if !filter.lazy_load_options.is_disabled() {
        let senders: BTreeSet<String> = context
            .before
            .iter()
            .chain(std::iter::once(&context.event))
            .chain(context.after.iter())
            .map(|e| e.pdu.sender.to_string())
            .collect();
        state.retain(|pdu| {
            pdu.kind.to_string() != "m.room.member" || pdu.state_key.as_ref().is_some_and(|k| senders.contains(k))
        });
    }
    let mut response = get_context::v3::Response::new();
    response.start = Some(context.start.to_string());
    response.end = Some(context.end.to_string());
    let stored: Vec<_> = std::iter::once(&context.event).chain(&context.before).chain(&context.after).collect();
    let mut events = super::message::client_events(&services, &sender.user_id, &stored).await?.into_iter();
    response.event = events.next().map(|e| raw_event(&e));
    response.events_before = events.by_ref().take(context.before.len()).map(|e| raw_event(&e)).collect();
    response.events_after = events.map(|e| raw_event(&e)).collect();
    response.state = state.iter().map(|pdu| raw_event(&pdu.to_client_event())).collect();
    Ok(response)
}

async fn timestamp_to_event(
    services: Arc<Services>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let forward = matches!(body.dir, Direction::Forward);
    let ts = u64::from(body.ts.0);
    let (event_id, event_ts) = crate::service::federation::timestamp::event_at_timestamp(
        &services,
        &sender.user_id,
        &body.room_id,
        ts,
        forward,
    )
    .await?;
    let origin_server_ts = MilliSecondsSinceUnixEpoch(UInt::new_saturating(event_ts));
    Ok(get_event_by_timestamp::v1::Response::new(event_id, origin_server_ts))
}
