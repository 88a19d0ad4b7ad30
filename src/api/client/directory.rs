//! The room directory: aliases (`/directory/room/{alias}`, `/rooms/{roomId}/aliases`), a room's
//! visibility in the public directory (`/directory/list/room/{roomId}`) and `/publicRooms`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    OwnedMxcUri, OwnedRoomAliasId, OwnedServerName, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::{Visibility, aliases},
    },
    api::error::ErrorKind,
    directory::{Filter, PublicRoomsChunk, PublicRoomsChunkInit, RoomNetwork},
    room::{JoinRuleKind, RoomType},
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        rooms::{
            aliases::Actor,
            public::{PublicRoom, PublicRoomsPage, PublicRoomsQuery},
        },
        sessions::Authenticated,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(put_alias)
        .ruma(get_alias)
        .ruma(delete_alias)
        .ruma(room_aliases)
        .ruma(get_visibility)
        .ruma(set_visibility)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
}

/// Guests may resolve aliases but not create or delete them (as in Synapse).
fn refuse_guests(sender: &Authenticated) -> Result<()> {
    if sender.guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest accounts cannot manage room aliases",
        ));
    }
    Ok(())
}

async fn put_alias(
    services: Arc<Services>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    let sender = request.sender()?;
    refuse_guests(sender)?;
    let body = &request.body;
    crate::api::appservice_auth::check_alias_allowed(&services, sender, &body.room_alias)?;
    let actor = Actor { user: &sender.user_id, admin: sender.admin };
    services.rooms.create_alias(&body.room_alias, &body.room_id, actor).await?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias(services: Arc<Services>, request: Ruma<get_alias::v3::Request>) -> Result<get_alias::v3::Response> {
    let alias = &request.body.room_alias;
    // An alias of another server is asked of that server.
    if alias.server_name() != services.config.server_name {
        let (room_id, servers) = services.federation.resolve_remote_alias(alias).await?;
        return Ok(get_alias::v3::Response::new(room_id, servers));
    }
    services.resolve_alias_with_appservices(alias).await?;
    let room_id = services.rooms.alias_target(alias).await?;
    let mut servers = vec![services.config.server_name.clone()];
    servers.extend(services.rooms.servers_in_room(&room_id).await?);
    Ok(get_alias::v3::Response::new(room_id, servers))
}

async fn delete_alias(
    services: Arc<Services>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    let sender = request.sender()?;
    refuse_guests(sender)?;
    let actor = Actor { user: &sender.user_id, admin: sender.admin };
    services.rooms.delete_alias(&request.body.room_alias, actor).await?;
    Ok(delete_alias::v3::Response::new())
}

async fn room_aliases(services: Arc<Services>, request: Ruma<aliases::v3::Request>) -> Result<aliases::v3::Response> {
    let sender = request.sender()?;
    let aliases: Vec<OwnedRoomAliasId> = services.rooms.visible_aliases(&request.body.room_id, &sender.user_id).await?;
    Ok(aliases::v3::Response::new(aliases))
}

async fn get_visibility(
    services: Arc<Services>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let published = services.rooms.visibility(&request.body.room_id).await?;
    Ok(get_room_visibility::v3::Response::new(if published { Visibility::Public } else { Visibility::Private }))
}

async fn set_visibility(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let published = match body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be \"public\" or \"private\"")),
    };
    let actor = Actor { user: &sender.user_id, admin: sender.admin };
    services.rooms.set_visibility(&body.room_id, actor, published).await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// The server whose directory is asked for, when it is another one.
fn remote<'a>(services: &Services, server: Option<&'a OwnedServerName>) -> Option<&'a OwnedServerName> {
    server.filter(|server| **server != services.config.server_name)
}

pub(crate) fn limit_of(limit: Option<UInt>) -> Option<usize> {
    limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

pub(crate) fn chunk(room: PublicRoom) -> PublicRoomsChunk {
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(room.num_joined_members),
        room_id: room.room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
    .into();
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.canonical_alias = room.canonical_alias.and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    chunk.avatar_url = room.avatar_url.map(OwnedMxcUri::from);
    chunk.join_rule = JoinRuleKind::from(room.join_rule.as_str());
    chunk.room_type = room.room_type.as_deref().map(RoomType::from);
    chunk
}

pub(crate) fn page_parts(
    page: PublicRoomsPage,
) -> (Vec<PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>) {
    let total = Some(UInt::new_saturating(page.total_room_count_estimate));
    (page.chunk.into_iter().map(chunk).collect(), page.next_batch, page.prev_batch, total)
}

async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let body = &request.body;
    if let Some(server) = remote(&services, body.server.as_ref()) {
        let page = services
            .federation
            .remote_public_rooms(server, body.limit, body.since.clone(), None, RoomNetwork::Matrix)
            .await?;
        let mut response = get_public_rooms::v3::Response::new(page.chunk);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.total_room_count_estimate = page.total_room_count_estimate;
        return Ok(response);
    }
    let query = PublicRoomsQuery { limit: limit_of(body.limit), since: body.since.clone(), ..Default::default() };
    let (chunk, next_batch, prev_batch, total) = page_parts(services.rooms.public_rooms(&query).await?);
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next_batch;
    response.prev_batch = prev_batch;
    response.total_room_count_estimate = total;
    Ok(response)
}

pub(crate) fn query_of(filter: &Filter, limit: Option<UInt>, since: Option<String>) -> PublicRoomsQuery {
    PublicRoomsQuery {
        limit: limit_of(limit),
        since,
        search_term: filter.generic_search_term.clone(),
        room_types: filter.room_types.iter().map(|t| t.as_str().map(str::to_owned)).collect(),
        ..Default::default()
    }
}

async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    request.sender()?;
    let body = &request.body;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    if let Some(server) = remote(&services, body.server.as_ref()) {
        let page = services
            .federation
            .remote_public_rooms(
                server,
                body.limit,
                body.since.clone(),
                Some(body.filter.clone()),
                body.room_network.clone(),
            )
            .await?;
        response.chunk = page.chunk;
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.total_room_count_estimate = page.total_room_count_estimate;
        return Ok(response);
    }
    let mut query = query_of(&body.filter, body.limit, body.since.clone());
    // Application services' network lists: one (`third_party_instance_id`) or all of them.
    match &body.room_network {
        RoomNetwork::ThirdParty(instance) => {
            query.extra_rooms = services.network_rooms(Some(instance)).await?;
            query.only_extra = true;
        }
        RoomNetwork::All => query.extra_rooms = services.network_rooms(None).await?,
        _ => {}
    }
    let (chunk, next_batch, prev_batch, total) = page_parts(services.rooms.public_rooms(&query).await?);
    response.chunk = chunk;
    response.next_batch = next_batch;
    response.prev_batch = prev_batch;
    response.total_room_count_estimate = total;
    Ok(response)
}
