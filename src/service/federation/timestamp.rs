//! `/timestamp_to_event` across servers: a local user's question is answered here when this
//! server has an event in that direction, otherwise asked of the room's other servers in turn
//! (`/_matrix/federation/v1/timestamp_to_event`), whose history this server may lack.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UInt, UserId, api::Direction,
    api::federation::event::get_event_by_timestamp,
};

use crate::{Error, Result, service::Services};

/// The event nearest to `ts` in the direction asked for, and its timestamp.
pub async fn event_at_timestamp(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    ts: u64,
    forward: bool,
) -> Result<(OwnedEventId, u64)> {
    if let Some(found) = services.rooms.event_at_timestamp(user, room_id, ts, forward).await? {
        return Ok(found);
    }
    let dir = if forward { Direction::Forward } else { Direction::Backward };
    for server in services.rooms.servers_in_room(room_id).await? {
        let request = get_event_by_timestamp::v1::Request::new(
            room_id.to_owned(),
            MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)),
            dir,
        );
        match services.federation.client.send(&server, request).await {
            Ok(response) => return Ok((response.event_id, u64::from(response.origin_server_ts.0))),
            Err(error) => tracing::debug!(%room_id, %server, %error, "no event at that time from this server"),
        }
    }
    Err(Error::not_found("No event found in that direction from the given timestamp"))
}
