//! The public room directories of other servers, asked for a local client
//! (`/publicRooms?server=`): `GET` (no filter) or `POST` (with one) of their
//! `/_matrix/federation/v1/publicRooms`.

use http::StatusCode;
use ruma::{
    ServerName, UInt,
    api::{
        error::ErrorKind,
        federation::directory::{get_public_rooms, get_public_rooms_filtered},
    },
    directory::{Filter, PublicRoomsChunk, RoomNetwork},
};

use super::{Federation, client::FederationError};
use crate::{Error, Result};

/// A page of another server's directory.
pub struct RemotePage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: Option<UInt>,
}

/// The other server's refusal as the client sees it: its 4xx status, `502` otherwise.
fn remote_error(server: &ServerName, error: FederationError) -> Error {
    match error {
        FederationError::Remote { status, message, .. } if (400..500).contains(&status) => {
            let kind = if status == 404 { ErrorKind::NotFound } else { ErrorKind::Unknown };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Error::new(status, kind, format!("{server} refused: {message}"))
        }
        other => Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("Could not fetch the room directory of {server}: {other}"),
        ),
    }
}

impl Federation {
    /// A page of `server`'s public rooms; `filter` (a search term, room types) sends the
    /// filtered (`POST`) form.
    pub async fn remote_public_rooms(
        &self,
        server: &ServerName,
        limit: Option<UInt>,
        since: Option<String>,
        filter: Option<Filter>,
        network: RoomNetwork,
    ) -> Result<RemotePage> {
        match filter {
            None => {
                let mut request = get_public_rooms::v1::Request::new();
                (request.limit, request.since, request.room_network) = (limit, since, network);
                let response = self.client.send(server, request).await.map_err(|e| remote_error(server, e))?;
                Ok(RemotePage {
                    chunk: response.chunk,
                    next_batch: response.next_batch,
                    prev_batch: response.prev_batch,
                    total_room_count_estimate: response.total_room_count_estimate,
                })
            }
            Some(filter) => {
                let mut request = get_public_rooms_filtered::v1::Request::new();
                (request.limit, request.since, request.filter, request.room_network) = (limit, since, filter, network);
                let response = self.client.send(server, request).await.map_err(|e| remote_error(server, e))?;
                Ok(RemotePage {
                    chunk: response.chunk,
                    next_batch: response.next_batch,
                    prev_batch: response.prev_batch,
                    total_room_count_estimate: response.total_room_count_estimate,
                })
            }
        }
    }
}
