//! Out-of-band memberships: a local user's invite to a room this server is not in (received
//! over federation, with the stripped state its server sent) and the leave that rejects it.
//! Neither takes a place in a room graph here; each gets a stream position (so `/sync` sees it
//! change) and a `USER_ROOMS` row naming its event. Also the pieces the federation membership
//! handshakes need from the room core: countersigning an event another server signed, and
//! checking a built event against the current state without storing it.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};
use serde_json::Value;

use super::{Rooms, prepare::Origin};
use crate::{
    Error, Result,
    service::now_ms,
    storage::{
        Batch, Db,
        membership_tables::{OUT_OF_BAND_MEMBERSHIPS, OutOfBand},
        room_tables::{EVENT_STREAM, ROOMS, USER_ROOMS, UserMembership},
    },
};

/// An invite received over federation, checked and countersigned, to record (or a knock
/// the room's server accepted).
pub struct RemoteInvite {
    pub room_version: RoomVersionId,
    pub event_id: OwnedEventId,
    pub event: CanonicalJsonObject,
    pub stripped_state: Vec<Value>,
}

/// The event ID of an event in the format of its room version: the `event_id` field (v1, v2)
/// or the reference hash.
pub fn event_id_of(json: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    let id = match rules.event_id_format {
        EventIdFormatVersion::V1 => match json.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => return Err(Error::bad_json("The event has no event_id")),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(json, rules)
                .map_err(|e| Error::bad_json(format!("Cannot hash the event: {e}")))?;
            format!("${hash}")
        }
    };
    OwnedEventId::try_from(id).map_err(|e| Error::bad_json(format!("Invalid event ID: {e}")))
}

impl Rooms {
    /// Records an invite of a local user received over federation for a room this server is
    /// not in: `/sync` shows it under `rooms.invite` with its stripped state. Refused when the
    /// user is joined to the room already. A ban recorded here is no reason to refuse: this
    /// server left with the ban and has not seen the unban that the invite follows.
    pub async fn record_remote_invite(&self, user: &UserId, room_id: &RoomId, invite: RemoteInvite) -> Result<()> {
        self.record_remote_membership(user, room_id, invite, "invite").await
    }

    /// Records a knock of a local user on a room this server is not in, which the room's server
    /// accepted (`send_knock`): `/sync` shows it under `rooms.knock` with the stripped state
    /// that server answered with. The record's `invite` holds the knock.
    pub async fn record_remote_knock(&self, user: &UserId, room_id: &RoomId, knock: RemoteInvite) -> Result<()> {
        self.record_remote_membership(user, room_id, knock, "knock").await
    }

    async fn record_remote_membership(
        &self,
        user: &UserId,
        room_id: &RoomId,
        invite: RemoteInvite,
        membership: &'static str,
    ) -> Result<()> {
        let lock = self.lock_for(room_id)?;
        let key = (user.to_owned(), room_id.to_owned());
        self.run_locked(&lock, move |core, db| {
            if USER_ROOMS.get(db, &key)?.is_some_and(|m| m.membership == "join") {
                return Err(Error::forbidden("The user is already in the room"));
            }
            let event = serde_json::to_value(&invite.event).map_err(|e| Error::internal(e.to_string()))?;
            let record = OutOfBand {
                room_version: invite.room_version,
                invite: event,
                stripped_state: invite.stripped_state,
                leave: None,
                event_id: invite.event_id.to_string(),
            };
            core.write_out_of_band(db, &key, record, membership)
        })
        .await
    }

    /// The user's out-of-band membership in the room, when it is the current one.
    pub async fn out_of_band(&self, user: &UserId, room_id: &RoomId) -> Result<Option<OutOfBand>> {
        let key = (user.to_owned(), room_id.to_owned());
        self.run(move |_, db| current_out_of_band(db, &key)).await
    }

    /// Records the leave that ended an out-of-band invite: the rejection the room's server
    /// accepted, this server's own (see [`own_rejection`](Self::own_rejection)), or the
    /// inviter's rescission.
    pub async fn record_out_of_band_leave(
        &self,
        user: &UserId,
        room_id: &RoomId,
        leave: CanonicalJsonObject,
        event_id: OwnedEventId,
    ) -> Result<()> {
        let lock = self.lock_for(room_id)?;
        let key = (user.to_owned(), room_id.to_owned());
        self.run_locked(&lock, move |core, db| {
            let current = USER_ROOMS.get(db, &key)?;
            let mut record = OUT_OF_BAND_MEMBERSHIPS
                .get(db, &key)?
                .filter(|record| current.is_some_and(|m| m.event_id == record.event_id))
                .ok_or_else(|| Error::not_found("No invite to this room to reject"))?;
            record.leave = Some(serde_json::to_value(&leave).map_err(|e| Error::internal(e.to_string()))?);
            record.event_id = event_id.to_string();
            core.write_out_of_band(db, &key, record, "leave")
        })
        .await
    }

    /// A leave of `user` signed by this server that rejects `invite` when no server of the room
    /// can be reached: it refers to the invite (as its only prev and auth event), so it stands
    /// for the user's choice here; the room itself never sees it.
    pub fn own_rejection(
        &self,
        user: &UserId,
        invite: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<(CanonicalJsonObject, OwnedEventId)> {
        let invite_id = event_id_of(invite, rules)?;
        let room_id = invite.get("room_id").cloned().ok_or_else(|| Error::internal("invite without room_id"))?;
        let depth = match invite.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth).saturating_add(1),
            _ => 1,
        };
        let reference = if rules.event_id_format == EventIdFormatVersion::V1 {
            let hash = ruma::signatures::reference_hash(invite, rules).map_err(|e| Error::internal(e.to_string()))?;
            serde_json::json!([invite_id, {"sha256": hash}])
        } else {
            serde_json::json!(invite_id)
        };
        let mut value = serde_json::json!({
            "type": "m.room.member",
            "state_key": user,
            "sender": user,
            "room_id": room_id,
            "content": {"membership": "leave"},
            "origin_server_ts": now_ms(),
            "depth": depth,
            "prev_events": [reference.clone()],
            "auth_events": [reference],
        });
        if rules.event_id_format == EventIdFormatVersion::V1 {
            value["event_id"] =
                Value::String(format!("${}:{}", crate::service::random_string(18), self.core.server_name));
        }
        if rules.redaction.keep_origin_membership_prev_state {
            value["origin"] = Value::String(self.core.server_name.to_string());
        }
        let mut json: CanonicalJsonObject =
            serde_json::from_value(value).map_err(|e| Error::internal(e.to_string()))?;
        self.sign_as_this_server(&mut json, rules)?;
        let event_id = event_id_of(&json, rules)?;
        Ok((json, event_id))
    }

    /// Whether an event built here (by [`build_event`](Self::build_event), not accepted) passes
    /// the auth rules against its auth events and the room's current state: checked before it
    /// is handed to another server (an invite, a `make_leave` template). `M_FORBIDDEN` if not.
    pub async fn authorise_built(&self, room_id: &RoomId, json: CanonicalJsonObject) -> Result<()> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let (short_room, version) =
                core.version_of(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let prepared = core.prepare(Some(&room_id), &version, json, None)?;
            if let Some(outcome) = core.auth_events_outcome(db, &prepared.rules, &prepared.pdu, Origin::Local)? {
                return outcome.into_local_result().map(|_| ());
            }
            let record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let current = core.state.load(db, record.current_state_group)?;
            core.check_against(db, &prepared.rules, &prepared.pdu, &current)
                .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))
        })
        .await
    }
}

impl super::RoomCore {
    /// Writes an out-of-band membership with a new stream position: the `USER_ROOMS` row, the
    /// record, and a stream entry so incremental syncs look at the room.
    fn write_out_of_band(
        &self,
        db: &crate::storage::Db,
        key: &(ruma::OwnedUserId, ruma::OwnedRoomId),
        record: OutOfBand,
        membership: &str,
    ) -> Result<()> {
        let event_id = OwnedEventId::try_from(record.event_id.clone()).map_err(|e| Error::internal(e.to_string()))?;
        let mut batch = Batch::new();
        let short_room = self.interner.short_room_or_new(db, &mut batch, &key.1)?;
        let short_event = self.interner.short_event_or_new(db, &mut batch, &event_id)?;
        // Held until the batch is written: readers never look past an uncommitted position.
        let mut reserved = self.positions.reserve();
        let position = reserved.position;
        batch.put(&EVENT_STREAM, &position, &(short_room, short_event))?;
        let membership = UserMembership {
            membership: membership.to_owned(),
            event_id: record.event_id.clone(),
            position,
            forgotten: false,
        };
        batch.put(&USER_ROOMS, key, &membership)?;
        batch.put(&OUT_OF_BAND_MEMBERSHIPS, key, &record)?;
        db.write(batch)?;
        reserved.wakes(super::stream::wake_keys(&key.1, "m.room.member", Some(key.0.as_str())));
        drop(reserved);
        Ok(())
    }
}

/// [`Rooms::out_of_band`] inside a blocking read: `key` is (user, room).
pub(super) fn current_out_of_band(db: &Db, key: &(OwnedUserId, OwnedRoomId)) -> Result<Option<OutOfBand>> {
    let Some(current) = USER_ROOMS.get(db, key)? else { return Ok(None) };
    Ok(OUT_OF_BAND_MEMBERSHIPS.get(db, key)?.filter(|record| record.event_id == current.event_id))
}
