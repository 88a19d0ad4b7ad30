//! Spaces across servers: a local user's `/hierarchy` walk asks other servers
//! (`/_matrix/federation/v1/hierarchy/{roomId}`) about the rooms this server does not know,
//! through the servers the space's link names.

use ruma::{OwnedRoomId, OwnedServerName, RoomId, UserId, api::federation::space::get_hierarchy};

use crate::{
    Result,
    service::{
        Services,
        rooms::hierarchy::{HierarchyPage, HierarchyQuery, RemoteRoom},
    },
};

impl super::Federation {
    /// A room of another server as the first of `via` that answers describes it.
    pub async fn remote_hierarchy(
        &self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
    ) -> Option<RemoteRoom> {
        for server in via {
            if *server == self.server_name {
                continue;
            }
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match self.client.send(server, request).await {
                Ok(response) if response.room.summary.room_id == room_id => {
                    return Some(RemoteRoom {
                        summary: response.room.summary,
                        children_state: response.room.children_state,
                    });
                }
                Ok(_) => tracing::debug!(%room_id, %server, "a hierarchy answer about another room"),
                Err(error) => tracing::debug!(%room_id, %server, %error, "no hierarchy from this server"),
            }
        }
        None
    }
}

/// The rooms under a space for `user`, rooms of other servers included.
pub async fn hierarchy(
    services: &Services,
    user: &UserId,
    root: &RoomId,
    query: &HierarchyQuery,
) -> Result<HierarchyPage> {
    let suggested_only = query.suggested_only;
    let fetch = |room: OwnedRoomId, via: Vec<OwnedServerName>| {
        Box::pin(async move { services.federation.remote_hierarchy(&room, &via, suggested_only).await })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Option<RemoteRoom>> + Send + '_>>
    };
    services.rooms.hierarchy(user, root, query, &fetch).await
}
