//! Ephemeral events for services that ask for them (`receive_ephemeral: true`, MSC2409): typing
//! (`m.typing`) and read receipts (`m.receipt`, public ones) of the rooms the service wants, and
//! presence (`m.presence`) of the users it wants and of users joined to a room it wants, added
//! to its next transaction. Where the sender is in these streams is kept in memory only:
//! after a restart a service gets the changes from then on (they are ephemeral).

use std::collections::HashMap;

use ruma::OwnedRoomId;
use serde_json::{Value, json};

use super::{AppService, matches, wants_user};
use crate::{Result, service::Services};

/// How far a sender has read the typing and receipt streams.
pub struct EphemeralCursor {
    typing: u64,
    receipts: u64,
    presence: u64,
}

impl EphemeralCursor {
    /// Starts at the streams' current positions.
    pub async fn now(services: &Services) -> Result<Self> {
        Ok(Self {
            typing: services.typing.serial(),
            receipts: services.receipts.position().await?,
            presence: services.presence.position().await?,
        })
    }
}

/// Whether the service wants the room's events: the room is in its room namespaces, or a user
/// it wants is joined (asked once per room and pass, kept in `cache`).
pub async fn room_wanted(
    services: &Services,
    service: &AppService,
    room: &OwnedRoomId,
    cache: &mut HashMap<OwnedRoomId, bool>,
) -> Result<bool> {
    if let Some(wanted) = cache.get(room) {
        return Ok(*wanted);
    }
    let wanted = matches(&service.rooms, room.as_str(), false)
        || services.rooms.joined_members(room).await?.iter().any(|member| wants_user(service, member.as_str()));
    cache.insert(room.clone(), wanted);
    Ok(wanted)
}

/// The ephemeral events since `cursor` the service wants, moving the cursor past them.
pub async fn collect(
    services: &Services,
    service: &AppService,
    cursor: &mut EphemeralCursor,
    cache: &mut HashMap<OwnedRoomId, bool>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let typing_serial = services.typing.serial();
    if typing_serial > cursor.typing {
        for (room, users) in services.typing.changed_since(cursor.typing) {
            if room_wanted(services, service, &room, cache).await? {
                out.push(json!({"type": "m.typing", "room_id": room, "content": {"user_ids": users}}));
            }
        }
        cursor.typing = typing_serial;
    }
    let receipts_upto = services.receipts.position().await?;
    if receipts_upto > cursor.receipts {
        let mut rooms = Vec::new();
        for room in services.receipts.rooms_changed(cursor.receipts, receipts_upto).await? {
            if room_wanted(services, service, &room, cache).await? {
                rooms.push(room);
            }
        }
        if !rooms.is_empty() {
            // Read as the service's sender: others' private receipts are left out.
            let receipts =
                services.receipts.for_sync(&service.sender, rooms, Some(cursor.receipts), receipts_upto).await?;
            for (room, content) in receipts {
                out.push(json!({"type": "m.receipt", "room_id": room, "content": content}));
            }
        }
        cursor.receipts = receipts_upto;
    }
    let presence_upto = services.presence.position().await?;
    if presence_upto > cursor.presence {
        for (user, presence) in services.presence.changes(cursor.presence, presence_upto).await? {
            if user_wanted(services, service, &user, cache).await? {
                out.push(presence.event(&user));
            }
        }
        cursor.presence = presence_upto;
    }
    Ok(out)
}

/// Whether the service wants a user's presence: the user is one it wants, or is joined to a
/// room it wants.
async fn user_wanted(
    services: &Services,
    service: &AppService,
    user: &ruma::UserId,
    cache: &mut HashMap<OwnedRoomId, bool>,
) -> Result<bool> {
    if wants_user(service, user.as_str()) {
        return Ok(true);
    }
    for (room, membership) in services.rooms.user_rooms(user).await? {
        if membership.membership == "join" && room_wanted(services, service, &room, cache).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
