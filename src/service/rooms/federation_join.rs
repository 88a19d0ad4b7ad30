//! The resident server's side of another server's membership handshake: the event template
//! it asks for (`make_join`), and the signed event it sends back (`send_join`), which enters
//! the one acceptance path like any remote event. Also what the joining server gets in return:
//! the state before the event and that state's auth chain, as stored PDUs.

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, EventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::error::{ErrorKind, IncompatibleRoomVersionErrorData},
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json, value::RawValue};

use super::{NewEvent, Outcome, Pdu, RoomCore, Rooms, prepare::bad_event};
use crate::{
    Error, Result,
    storage::{
        Db,
        room_tables::{EVENT_META, ROOM_SERVERS, ROOMS},
    },
};

/// What a joining server gets back: the state before its event and that state's auth chain.
pub struct StateForServer {
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
}

/// An event as this server serves it to others: its signed PDU, without what is only local
/// (`unsigned`).
pub fn federation_json(json: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    let mut json = json.clone();
    json.remove("unsigned");
    serde_json::value::to_raw_value(&json).map_err(|e| Error::internal(e.to_string()))
}

impl RoomCore {
    /// The auth rules for an event against the room's current state.
    fn allowed_now(&self, db: &Db, room_id: &RoomId, json: &CanonicalJsonObject) -> Result<Result<(), String>> {
        let (short_room, version) = self.version_of(db, room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = crate::service::rooms::versions::rules(&version)
            .ok_or_else(|| Error::internal("unsupported room version stored"))?;
        let pdu = Pdu::from_json(json.clone(), &rules).map_err(bad_event)?;
        let record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let current = self.state.load(db, record.current_state_group)?;
        Ok(self.check_against(db, &rules, &pdu, &current))
    }

    /// The state before an event and the auth chain of that state and of the event, as stored
    /// PDUs: unlike the `/state` answer (`federation_read.rs`), whole, whatever history
    /// visibility says, since the server asking is joining the room.
    fn state_for_server(&self, db: &Db, event_id: &EventId) -> Result<StateForServer> {
        let short = self.interner.short_event(db, event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let meta = EVENT_META.get(db, &short)?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let rules = self.rules_of_room(db, meta.room)?;
        let state = self.state_before(db, &meta)?;
        let chain = self.chain_union(db, &[state.as_slice(), &[short]].concat())?;
        let raw = |short: &u64| federation_json(&self.event_by_short(db, *short, &rules)?.json());
        Ok(StateForServer {
            state: state.iter().map(raw).collect::<Result<_>>()?,
            auth_chain: chain.iter().map(raw).collect::<Result<_>>()?,
        })
    }
}

impl Rooms {
    /// The other servers with a user joined to the room (current state), sorted.
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let servers = self.joined_servers(room_id).await?;
        Ok(servers.into_iter().filter(|server| *server != self.core.server_name).collect())
    }

    /// Whether a user of this server is joined to the room (only then does this server answer
    /// for it).
    pub async fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let Some(short_room) = core.interner.short_room(db, &room_id)? else { return Ok(false) };
            Ok(ROOM_SERVERS.contains(db, &(short_room, core.server_name.to_string()))?)
        })
        .await
    }

    /// The template of a join for a user of another server (`make_join`): the room's version
    /// and the event without hashes and signatures, built on the current forward extremities.
    /// `404` when this server is not in the room, `400 M_INCOMPATIBLE_ROOM_VERSION` when the
    /// joining server doesn't support its version, `403` when the auth rules would refuse the
    /// join (a ban, an invite-only room), and the restricted-join refusals.
    pub async fn join_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let Some(version) = self.version(room_id).await? else {
            return Err(Error::not_found("This server is not in that room"));
        };
        if !self.is_resident(room_id).await? {
            return Err(Error::not_found("This server is not in that room"));
        }
        if !supported.contains(&version) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone())),
                format!("The room is version {version}, which your server does not support"),
            ));
        }
        let mut content = json!({"membership": "join"});
        if let Some(authoriser) = self.restricted_join_authoriser(room_id, user).await?
            && let Some(object) = content.as_object_mut()
        {
            object.insert("join_authorised_via_users_server".into(), Value::String(authoriser.to_string()));
        }
        // Built and signed as if it were this server's own, so the auth rules can judge it now:
        // a join the room would refuse is refused here rather than at `send_join`.
        let event = NewEvent::state(TimelineEventType::RoomMember, user.as_str(), content);
        let mut built = self.build_event(room_id, user, event, None).await?;
        let (room, check) = (room_id.to_owned(), built.clone());
        if let Err(reason) = self.run(move |core, db| core.allowed_now(db, &room, &check)).await? {
            return Err(Error::forbidden(format!("You may not join this room: {reason}")));
        }
        for key in ["signatures", "hashes", "unsigned", "event_id"] {
            built.remove(key);
        }
        Ok((version, built))
    }

    /// Accepts a membership event another server sends for its own user (`send_join`, and the
    /// same shape for leaves and knocks): it must be an `m.room.member` event of `membership`
    /// for its sender, a user of `origin`, with the ID in the path. A restricted join that
    /// names a user of this server gets this server's signature. Returns the event as stored
    /// (with that signature).
    pub async fn accept_membership_from(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        json: &RawValue,
        membership: &str,
    ) -> Result<CanonicalJsonObject> {
        let Some(version) = self.version(room_id).await? else {
            return Err(Error::not_found("This server is not in that room"));
        };
        let rules = crate::service::rooms::versions::rules(&version)
            .ok_or_else(|| Error::internal("unsupported room version stored"))?;
        let mut object: CanonicalJsonObject =
            serde_json::from_str(json.get()).map_err(|e| bad_event(format!("The event is not a JSON object: {e}")))?;
        let pdu = Pdu::from_json(object.clone(), &rules).map_err(bad_event)?;
        if pdu.event_id != event_id {
            return Err(bad_event(format!("The event's ID is {}, not the one in the path", pdu.event_id)));
        }
        if pdu.room_id != room_id {
            return Err(bad_event("The event belongs to another room"));
        }
        if pdu.kind != TimelineEventType::RoomMember || pdu.state_key.as_deref() != Some(pdu.sender.as_str()) {
            return Err(bad_event(format!("Not a {membership} event of its sender")));
        }
        let actual = super::accept::membership_in(&pdu.content);
        if actual != membership {
            return Err(bad_event(format!("The event's membership is {actual}, not {membership}")));
        }
        if pdu.sender.server_name() != origin {
            return Err(Error::forbidden("The event's sender is not a user of the requesting server"));
        }
        let authoriser = pdu.content_value()["join_authorised_via_users_server"].as_str().map(ToOwned::to_owned);
        if membership == "join"
            && let Some(authoriser) = authoriser.and_then(|user| UserId::parse(user).ok())
            && authoriser.server_name() == self.core.server_name
        {
            // The restricted join names one of our users: the spec has this server sign it.
            self.countersign(&mut object, &rules)?;
        }
        match self.accept_pdu(room_id, object.clone()).await? {
            Outcome::Accepted(accepted) if accepted.soft_failed => {
                Err(Error::forbidden("The event is not allowed by the room's current state"))
            }
            Outcome::Accepted(_) => Ok(object),
            // Sent again: it stands only if it is the sender's member event now (one refused
            // earlier is known too, and must be refused again).
            Outcome::AlreadyKnown { .. } => {
                let current = self.state_event(room_id, &StateEventType::RoomMember, pdu.sender.as_str()).await?;
                if current.is_some_and(|current| current.event_id == pdu.event_id) {
                    Ok(object)
                } else {
                    Err(Error::forbidden(format!("The {membership} is not authorised by the room's state")))
                }
            }
            Outcome::Rejected { reason, .. } => Err(Error::forbidden(format!("Event not authorised: {reason}"))),
            Outcome::MissingEvents { missing, .. } => Err(bad_event(format!(
                "The event refers to events this server does not have: {}",
                missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Adds this server's signature to another server's event (its hashes stay as they are).
    pub fn countersign(&self, event: &mut CanonicalJsonObject, rules: &RoomVersionRules) -> Result<()> {
        ruma::signatures::sign_event(self.core.server_name.as_str(), self.core.keys.key_pair(), event, &rules.redaction)
            .map_err(|e| bad_event(format!("cannot sign the event: {e}")))
    }

    /// The state before an event and that state's auth chain, as stored PDUs (what `send_join`
    /// answers with).
    pub async fn state_for_server(&self, event_id: &EventId) -> Result<StateForServer> {
        let event_id = event_id.to_owned();
        self.run(move |core, db| core.state_for_server(db, &event_id)).await
    }
}
