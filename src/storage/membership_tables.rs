//! Out-of-band memberships: a local user's invite to a room this server is not in, received
//! over federation, and the leave that rejects it. The room's events are not here (only the
//! invite, as its server sent it, and the stripped state it came with), so these rows stand
//! in for the room in `/sync` until the user joins.

use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// (user, room) -> the out-of-band invite (and, once rejected, the leave). It is current only
/// while `USER_ROOMS` names its event ([`OutOfBand::event_id`]); a join through the room's
/// events replaces it there.
pub const OUT_OF_BAND_MEMBERSHIPS: Table<(ruma::OwnedUserId, ruma::OwnedRoomId), OutOfBand> =
    Table::new("out_of_band_memberships");

pub const MEMBERSHIP_TABLES: &[&str] = &[OUT_OF_BAND_MEMBERSHIPS.name];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutOfBand {
    pub room_version: ruma::RoomVersionId,
    /// The invite event, signed by its server and this one.
    pub invite: serde_json::Value,
    /// The stripped state events (`type`, `state_key`, `sender`, `content`) the inviting server
    /// sent with it.
    pub stripped_state: Vec<serde_json::Value>,
    /// The leave that rejected the invite, once there is one: the event the room's server
    /// accepted, or this server's own when none could be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<serde_json::Value>,
    /// The ID of the newest of the two, which `USER_ROOMS` names while this row is current.
    pub event_id: String,
}
impl JsonValue for OutOfBand {}

impl OutOfBand {
    /// The user who sent the invite.
    pub fn inviter(&self) -> Option<ruma::OwnedUserId> {
        self.invite["sender"].as_str().and_then(|sender| ruma::OwnedUserId::try_from(sender).ok())
    }
}
