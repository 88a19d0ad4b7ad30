//! Relations and threads: `/relations/{eventId}[/{relType}[/{eventType}]]` and `/threads`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    EventId, RoomId, UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads,
        },
    },
    serde::Raw,
};

use super::message::{Token, parse_token, raw_event};
use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        rooms::{RECURSION_DEPTH, RelationsQuery},
    },
};

/// Page sizes of `/relations` and `/threads`: the default, and the most one page returns.
const DEFAULT_LIMIT: u64 = 5;
const MAX_LIMIT: u64 = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(relating_events)
        .ruma(relating_events_with_rel_type)
        .ruma(relating_events_with_type_and_event_type)
        .ruma(threads)
}

fn limit_of(limit: Option<UInt>) -> usize {
    limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT) as usize
}

/// The parameters every form of `/relations` shares.
struct Params<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

/// What every form of `/relations` answers.
struct Page {
    chunk: Vec<Raw<ruma::events::AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

async fn relations(
    services: &Services,
    user: &ruma::UserId,
    params: Params<'_>,
    rel_type: Option<String>,
    event_type: Option<String>,
) -> Result<Page> {
    let forward = params.dir == Direction::Forward;
    // Tokens are stream positions, or sync tokens (`from` exclusive, as `/messages`).
    let from = params.from.map(parse_token).transpose()?.map(|token| match (token, forward) {
        (Token::Sync(position), false) => position.saturating_add(1),
        (Token::Sync(position) | Token::Position(position), _) => position,
    });
    let to = params.to.map(parse_token).transpose()?.map(|(Token::Sync(p) | Token::Position(p))| p);
    let query = RelationsQuery {
        rel_type,
        event_type,
        from,
        to,
        forward,
        limit: limit_of(params.limit),
        recurse: params.recurse,
    };
    let page = services.rooms.relations(user, params.room_id, params.event_id, query).await?;
    Ok(Page {
        chunk: page.chunk.iter().map(raw_event).collect(),
        next_batch: page.next.map(|p| p.to_string()),
        prev_batch: params.from.map(str::to_owned),
        recursion_depth: params.recurse.then(|| UInt::from(RECURSION_DEPTH as u32)),
    })
}

/// The query the three `/relations` request types share, as [`Params`].
macro_rules! params_of {
    ($body:expr) => {
        Params {
            room_id: &$body.room_id,
            event_id: &$body.event_id,
            from: $body.from.as_deref(),
            to: $body.to.as_deref(),
            dir: $body.dir,
            limit: $body.limit,
            recurse: $body.recurse,
        }
    };
}

/// The response of one of the three `/relations` request types, from a page.
macro_rules! response_of {
    ($response:ty, $page:expr) => {{
        let page = $page;
        let mut response = <$response>::new(page.chunk);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth;
        response
    }};
}

async fn relating_events(
    services: Arc<Services>,
    request: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let sender = request.sender()?;
    let page = relations(&services, &sender.user_id, params_of!(request.body), None, None).await?;
    Ok(response_of!(get_relating_events::v1::Response, page))
}

async fn relating_events_with_rel_type(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let page = relations(&services, &sender.user_id, params_of!(body), Some(body.rel_type.to_string()), None).await?;
    Ok(response_of!(get_relating_events_with_rel_type::v1::Response, page))
}

async fn relating_events_with_type_and_event_type(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (rel_type, event_type) = (Some(body.rel_type.to_string()), Some(body.event_type.to_string()));
    let page = relations(&services, &sender.user_id, params_of!(body), rel_type, event_type).await?;
    Ok(response_of!(get_relating_events_with_rel_type_and_event_type::v1::Response, page))
}

async fn threads(
    services: Arc<Services>,
    request: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let from = body.from.as_deref().map(parse_token).transpose()?.map(|(Token::Sync(p) | Token::Position(p))| p);
    let participated = body.include == get_threads::v1::IncludeThreads::Participated;
    let (roots, next) =
        services.rooms.threads(&sender.user_id, &body.room_id, participated, from, limit_of(body.limit)).await?;
    let mut response = get_threads::v1::Response::new(roots.iter().map(raw_event).collect());
    response.next_batch = next.map(|p| p.to_string());
    Ok(response)
}
