//! Server-side search: `POST /search` (`room_events`). The search itself is
//! `Rooms::search` (`service/rooms/search.rs`); this handler adds each result's context,
//! groupings and room state.
//!
//! Ruma's response type leaves out an empty `results` list, which clients (and Complement)
//! expect to find, so this route is plain axum around the same `Ruma<T>` extractor and answers
//! ruma's response serialised with `results` always present.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::{Json, Router, extract::State, routing::post};
use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedUserId,
    api::client::search::search_events::v3::{
        self as search, EventContextResult, GroupingKey, OrderBy, ResultCategories, ResultGroup, ResultGroupMap,
        ResultRoomEvents, SearchResult, UserProfile,
    },
};

use crate::{
    Error, Result,
    api::{
        client::{context::filter_accepts, message::raw_event},
        extract::Ruma,
    },
    service::{
        Services,
        rooms::{Pdu, SearchHit, SearchOrder, SearchQuery},
    },
};

/// Results per page when the filter sets no `limit`, and the most honoured.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// Most context events per side.
const MAX_CONTEXT: u64 = 100;

pub fn routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    use ruma::api::{Metadata, path_builder::PathBuilder};
    for path in <search::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, post(search_events));
    }
    router
}

async fn search_events(
    State(services): State<Arc<Services>>,
    request: Ruma<search::Request>,
) -> Result<Json<serde_json::Value>> {
    let user = request.sender()?.user_id.clone();
    let next_batch = request.body.next_batch.clone();
    let Some(criteria) = request.body.search_categories.room_events.clone() else {
        // No category asked for: nothing to search.
        return Ok(Json(serde_json::json!({ "search_categories": {} })));
    };
    let order = match &criteria.order_by {
        None | Some(OrderBy::Rank) => SearchOrder::Rank,
        Some(OrderBy::Recent) => SearchOrder::Recent,
        Some(other) => return Err(Error::bad_json(format!("Unknown order_by {}", other.as_str()))),
    };
    let filter = criteria.filter.clone();
    let limit = filter.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT) as usize;
    let keep_filter = filter.clone();
    let query = SearchQuery {
        user: user.clone(),
        search_term: criteria.search_term.clone(),
        keys: criteria.keys.iter().flatten().map(|k| k.as_str().to_owned()).collect(),
        rooms: filter.rooms.clone(),
        not_rooms: filter.not_rooms.clone(),
        keep: Box::new(move |pdu: &Pdu| filter_accepts(&keep_filter, pdu)),
        order,
        from: next_batch,
        limit,
    };
    let page = services.rooms.search(query).await?;

    // Context only when asked for (ruma cannot tell `{}` from no `event_context`, so a
    // request for the default limits gets none).
    let context = &criteria.event_context;
    let with_context = !context.is_default();
    let mut results = Vec::with_capacity(page.hits.len());
    for hit in &page.hits {
        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        result.result = Some(raw_event(&hit.event.pdu.to_client_event()));
        if with_context {
            result.context = event_context(&services, &user, hit, context).await?;
        }
        results.push(result);
    }

    let mut room_events = ResultRoomEvents::new();
    room_events.count = Some(ruma::UInt::new_saturating(page.count as u64));
    room_events.next_batch = page.next_batch.clone();
    room_events.highlights = page.highlights.clone();
    room_events.results = results;
    room_events.groups.extend(groupings(&criteria.groupings.group_by, &page.hits, page.next_batch.as_deref()));
    if criteria.include_state == Some(true) {
        let rooms: BTreeSet<OwnedRoomId> = page.hits.iter().map(|h| h.event.pdu.room_id.clone()).collect();
        for room in rooms {
            // Only the state of rooms the user is in now.
            if services.rooms.membership(&user, &room).await?.is_some_and(|m| m.membership == "join") {
                let state = services.rooms.current_state(&room).await?;
                room_events.state.insert(room, state.iter().map(|pdu| raw_event(&pdu.to_client_event())).collect());
            }
        }
    }
    let mut categories = ResultCategories::new();
    categories.room_events = room_events;
    let mut body = serde_json::to_value(&categories).map_err(|e| Error::internal(e.to_string()))?;
    let room_events = body
        .as_object_mut()
        .map(|o| o.entry("room_events").or_insert_with(|| serde_json::json!({})))
        .and_then(|v| v.as_object_mut());
    if let Some(room_events) = room_events {
        room_events.entry("results").or_insert_with(|| serde_json::json!([]));
        room_events.entry("count").or_insert_with(|| serde_json::json!(0));
    }
    Ok(Json(serde_json::json!({ "search_categories": body })))
}

/// The events around a result, with the senders' profiles as of them when asked for.
async fn event_context(
    services: &Services,
    user: &ruma::UserId,
    hit: &SearchHit,
    wanted: &search::EventContext,
) -> Result<EventContextResult> {
    let before = u64::from(wanted.before_limit).min(MAX_CONTEXT) as usize;
    let after = u64::from(wanted.after_limit).min(MAX_CONTEXT) as usize;
    let pdu = &hit.event.pdu;
    let context = services
        .rooms
        .event_context_with_senders(user, &pdu.room_id, &pdu.event_id, (before, after), wanted.include_profile)
        .await?;
    let mut result = EventContextResult::new();
    result.start = Some(context.start.to_string());
    result.end = Some(context.end.to_string());
    result.events_before = context.before.iter().map(|e| raw_event(&e.pdu.to_client_event())).collect();
    result.events_after = context.after.iter().map(|e| raw_event(&e.pdu.to_client_event())).collect();
    if wanted.include_profile {
        let senders: BTreeSet<&OwnedUserId> =
            context.before.iter().chain(context.after.iter()).map(|e| &e.pdu.sender).chain([&pdu.sender]).collect();
        for member in &context.state {
            let Some(sender) = member.state_key.as_deref().and_then(|k| senders.iter().find(|s| s.as_str() == k))
            else {
                continue;
            };
            if member.kind.to_string() != "m.room.member" {
                continue;
            }
            let content = member.content_value();
            let mut profile = UserProfile::new();
            profile.displayname = content.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
            profile.avatar_url =
                content.get("avatar_url").and_then(|v| v.as_str()).filter(|u| !u.is_empty()).map(OwnedMxcUri::from);
            result.profile_info.insert((*sender).clone(), profile);
        }
    }
    Ok(result)
}

/// The page's results grouped by room or sender, each group in the order it first appears.
fn groupings(group_by: &[search::Grouping], hits: &[SearchHit], next_batch: Option<&str>) -> Vec<ResultGroupMap> {
    let mut maps = Vec::new();
    for grouping in group_by {
        let key_of: fn(&SearchHit) -> String = match &grouping.key {
            Some(GroupingKey::RoomId) => |hit| hit.event.pdu.room_id.to_string(),
            Some(GroupingKey::Sender) => |hit| hit.event.pdu.sender.to_string(),
            _ => continue,
        };
        let mut groups: BTreeMap<String, ResultGroup> = BTreeMap::new();
        for hit in hits {
            let count = groups.len();
            let group = groups.entry(key_of(hit)).or_insert_with(|| {
                let mut group = ResultGroup::new();
                group.order = Some(ruma::UInt::new_saturating(count as u64 + 1));
                group.next_batch = next_batch.map(str::to_owned);
                group
            });
            group.results.push(hit.event.pdu.event_id.clone());
        }
        match grouping.key {
            Some(GroupingKey::RoomId) => maps.push(ResultGroupMap::RoomId(
                groups.into_iter().filter_map(|(k, v)| Some((OwnedRoomId::try_from(k).ok()?, v))).collect(),
            )),
            Some(GroupingKey::Sender) => maps.push(ResultGroupMap::Sender(
                groups.into_iter().filter_map(|(k, v)| Some((OwnedUserId::try_from(k).ok()?, v))).collect(),
            )),
            _ => {}
        }
    }
    maps
}
