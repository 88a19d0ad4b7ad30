//! What the three moderation states an admin puts on an account mean for its requests (the
//! flags themselves live in the account's `UserRecord`; the admin endpoints are in
//! `api/admin/moderation.rs`). Handlers call these before they act:
//!
//! - **Shadow-banned** (Synapse's behaviour): sending messages and state, redacting, inviting,
//!   typing, upgrading a room, and the invites of a new room are answered as if they worked
//!   (a made-up event ID where one is expected) and dropped, so nobody else sees them. Joins,
//!   leaves and profile changes work, but a profile change is not copied into the rooms and a
//!   join carries no per-room profile. Synapse also sleeps 1-10 s before answering; Trellis
//!   does not hold the connection.
//! - **Locked** (spec "Account locking"): refused at authentication, see
//!   `Sessions::authenticate`.
//! - **Suspended** (spec "Account suspension", and what Synapse refuses): `M_USER_SUSPENDED`
//!   for sending events other than redactions of its own events and leaving (or kicking, as
//!   Synapse allows every `leave`), joining, knocking, inviting, creating or upgrading rooms,
//!   changing the profile, and uploading media. Reading, syncing, keys, leaving, logging out
//!   and deactivating work.

use ruma::{EventId, OwnedEventId, OwnedRoomId, ServerName};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    service::{Services, random_string, sessions::Authenticated},
};

/// Whether the caller's actions are to be answered and dropped.
pub fn shadow_banned(sender: &Authenticated) -> bool {
    sender.shadow_banned
}

/// An event ID in the shape of a real one (room versions 4 and later), for an event a
/// shadow-banned user "sent".
pub fn fake_event_id() -> Result<OwnedEventId> {
    EventId::new_v2_or_v3(&random_string(43)).map_err(|e| Error::internal(format!("made-up event ID: {e}")))
}

/// A room ID in the shape of a real one, for a room a shadow-banned user "upgraded" to.
pub fn fake_room_id(server_name: &ServerName) -> OwnedRoomId {
    ruma::RoomId::new_v1(server_name)
}

/// `M_USER_SUSPENDED` when the caller is suspended.
pub fn check_not_suspended(sender: &Authenticated, what: &str) -> Result<()> {
    if sender.suspended {
        return Err(Error::user_suspended(format!("{what} is not allowed while the account is suspended")));
    }
    Ok(())
}

/// Whether a suspended caller may send an event of `kind` (with this `membership`, for member
/// events): only leaving. Redactions go through [`check_redaction`].
pub fn check_event(sender: &Authenticated, kind: &str, membership: Option<&str>) -> Result<()> {
    if !sender.suspended {
        return Ok(());
    }
    match (kind, membership) {
        ("m.room.member", Some("leave")) => Ok(()),
        ("m.room.member", _) => Err(Error::user_suspended("Changing membership while suspended is not allowed")),
        ("m.room.redaction", _) => Ok(()),
        _ => Err(Error::user_suspended("Sending events while suspended is not allowed")),
    }
}

/// A suspended caller may redact only its own events.
pub async fn check_redaction(services: &Services, sender: &Authenticated, event_id: &EventId) -> Result<()> {
    if !sender.suspended {
        return Ok(());
    }
    let event = services.rooms.event_for(&sender.user_id, event_id).await?;
    if event.is_some_and(|event| event.pdu.sender != sender.user_id) {
        return Err(Error::user_suspended("Only your own events may be redacted while suspended"));
    }
    Ok(())
}

/// A shadow-banned user's join or knock carries no per-room profile (as in Synapse): the
/// global one is filled in instead.
pub fn strip_room_profile(sender: &Authenticated, extra: &mut Map<String, Value>) {
    if sender.shadow_banned {
        extra.remove("displayname");
        extra.remove("avatar_url");
    }
}
