//! Joining a room through another server: `make_join` for a template, the event completed and
//! signed here, `send_join` for the state before it, and then the state's events as outliers
//! and the join itself through the one acceptance path on that state (which creates the room
//! here when it is new). The servers offered are tried in turn; a server that is not in the
//! room, cannot authorise a restricted join, or cannot be reached gives way to the next.
//! Also aliases of other servers, asked of them with `query/directory`.

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId,
    RoomVersionId, ServerName, UserId,
    api::{
        error::ErrorKind,
        federation::{
            membership::{create_join_event, prepare_join_event},
            query::get_room_information,
        },
    },
    room_version_rules::EventIdFormatVersion,
};
use serde_json::{Map, Value};

use super::{Federation, client::FederationError, gap::Gap};
use crate::{
    Error, Result,
    service::{
        now_ms, random_string,
        rooms::{Outcome, ROOM_VERSIONS, Rooms, pdu::event_id_of},
    },
};

/// Errors of a resident server after which another resident is asked.
const FAIL_OVER_ERRCODES: &[&str] = &["M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN", "M_NOT_FOUND"];

/// Why a join through one server failed: worth asking the next one, or not.
pub(super) enum Attempt {
    Next(Error),
    Stop(Error),
}

fn bad_gateway(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message)
}

/// The error a client sees for a resident server's refusal: the resident's own status and
/// code when it gave a Matrix error, else `502`.
pub(super) fn from_remote(error: FederationError) -> Attempt {
    match error {
        FederationError::Remote { status, errcode, message, .. } if (400..500).contains(&status) => {
            let kind = errcode.as_deref().map_or(ErrorKind::Unknown, kind_of);
            let error = Error::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), kind, message);
            if status == 404 || errcode.as_deref().is_some_and(|code| FAIL_OVER_ERRCODES.contains(&code)) {
                Attempt::Next(error)
            } else {
                Attempt::Stop(error)
            }
        }
        other => Attempt::Next(bad_gateway(other.to_string())),
    }
}

/// The error kinds a resident's refusal is passed on with.
fn kind_of(errcode: &str) -> ErrorKind {
    match errcode {
        "M_FORBIDDEN" => ErrorKind::Forbidden,
        "M_NOT_FOUND" => ErrorKind::NotFound,
        "M_UNABLE_TO_AUTHORISE_JOIN" => ErrorKind::UnableToAuthorizeJoin,
        "M_UNABLE_TO_GRANT_JOIN" => ErrorKind::UnableToGrantJoin,
        "M_BAD_JSON" => ErrorKind::BadJson,
        _ => ErrorKind::Unknown,
    }
}

/// Parses a JSON object another server sent.
pub(super) fn object(raw: &serde_json::value::RawValue, what: &str) -> std::result::Result<CanonicalJsonObject, Error> {
    serde_json::from_str(raw.get()).map_err(|e| bad_gateway(format!("the resident server sent an invalid {what}: {e}")))
}

impl Federation {
    /// Joins `user` to a room this server is not in, through the first of `servers` that can
    /// do it. `content` is the member event's content besides `membership` (profile, reason).
    pub async fn join_remote_room(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        rooms.check_not_blocked(room_id).await?;
        let mut last_error = None;
        let mut tried = Vec::new();
        for server in servers {
            if server == &self.server_name || tried.contains(server) {
                continue;
            }
            tried.push(server.clone());
            match self.join_through(rooms, user, room_id, server, &content).await {
                Ok(event_id) => return Ok(event_id),
                Err(Attempt::Stop(error)) => return Err(error),
                Err(Attempt::Next(error)) => {
                    tracing::info!(%room_id, %server, %error, "joining through this server failed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::not_found("No server to join this room through is known")))
    }

    async fn join_through(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        server: &ServerName,
        content: &Map<String, Value>,
    ) -> std::result::Result<OwnedEventId, Attempt> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = ROOM_VERSIONS.to_vec();
        let template = self.client.send(server, request).await.map_err(from_remote)?;
        // A resident that names no version speaks of version 1, as the spec says.
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        if !ROOM_VERSIONS.contains(&version) {
            return Err(Attempt::Stop(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UnsupportedRoomVersion,
                format!("The room is version {version}, which this server does not support"),
            )));
        }
        let (event_id, event) = self.complete_membership(
            &version,
            object(&template.event, "join template").map_err(Attempt::Next)?,
            user,
            content,
            "join",
        )?;
        let raw = serde_json::value::to_raw_value(&event).map_err(|e| Attempt::Stop(Error::internal(e.to_string())))?;
        let answer = self
            .client
            .send(server, create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw))
            .await
            .map_err(from_remote)?
            .room_state;
        // A restricted join comes back with the resident's signature too.
        let event = match &answer.event {
            Some(signed) => {
                let signed = object(signed, "signed join").map_err(Attempt::Next)?;
                let rules = crate::service::rooms::versions::rules(&version)
                    .ok_or_else(|| Attempt::Stop(Error::internal("unsupported version")))?;
                match event_id_of(&signed, &rules) {
                    Ok(id) if id == event_id => signed,
                    _ => return Err(Attempt::Next(bad_gateway("the resident server changed the join event"))),
                }
            }
            None => event,
        };
        let mut state = Vec::new();
        let mut state_ids = Vec::new();
        let rules = crate::service::rooms::versions::rules(&version)
            .ok_or_else(|| Attempt::Stop(Error::internal("unsupported version")))?;
        for raw in &answer.state {
            let event = object(raw, "state event").map_err(Attempt::Next)?;
            if let Ok(id) = event_id_of(&event, &rules) {
                state_ids.push(id);
            }
            state.push(event);
        }
        let mut events = Vec::with_capacity(answer.auth_chain.len() + state.len());
        for raw in &answer.auth_chain {
            events.push(object(raw, "auth event").map_err(Attempt::Next)?);
        }
        events.extend(state);
        // Events that fail their checks (a bad signature, a key that can't be had, auth events
        // that did) are left out of the state: the join can still stand on the rest.
        let outcomes = rooms.accept_outliers(room_id, Some(version.clone()), events).await.map_err(Attempt::Next)?;
        let stored: std::collections::HashSet<&OwnedEventId> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Accepted(accepted) => Some(&accepted.event_id),
                Outcome::AlreadyKnown { event_id } => Some(event_id),
                Outcome::Rejected { .. } | Outcome::MissingEvents { .. } => None,
            })
            .collect();
        state_ids.retain(|id| stored.contains(id));
        // A rejoin: the history since this server left is pulled first, so the join does not
        // land after a hole in the timeline.
        let transient = std::sync::atomic::AtomicBool::new(false);
        let gap = Gap {
            rooms,
            client: &self.client,
            origin: server,
            room_id,
            version: &version,
            rules: &rules,
            transient: &transient,
        };
        gap.fill_before_join(&event_id).await;
        match rooms.accept_pdu_with_state(room_id, Some(version), event, state_ids).await {
            Ok(Outcome::Accepted(_) | Outcome::AlreadyKnown { .. }) => Ok(event_id),
            Ok(Outcome::Rejected { reason, .. }) => {
                Err(Attempt::Next(Error::forbidden(format!("The room's state does not allow the join: {reason}"))))
            }
            Ok(Outcome::MissingEvents { missing, .. }) => Err(Attempt::Next(bad_gateway(format!(
                "the resident server's state lacks events: {}",
                missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )))),
            Err(error) => Err(Attempt::Next(error)),
        }
    }

    /// Completes a join (or knock, `membership`) template: this server's fields, the content
    /// asked for, the event ID where the version has one in the event, hashes and signature.
    /// Returns the event ID and the signed event.
    pub(super) fn complete_membership(
        &self,
        version: &RoomVersionId,
        mut event: CanonicalJsonObject,
        user: &UserId,
        content: &Map<String, Value>,
        membership: &str,
    ) -> std::result::Result<(OwnedEventId, CanonicalJsonObject), Attempt> {
        let rules = crate::service::rooms::versions::rules(version)
            .ok_or_else(|| Attempt::Stop(Error::internal("unsupported version")))?;
        let is_our_join = event.get("type") == Some(&CanonicalJsonValue::String("m.room.member".into()))
            && event.get("state_key") == Some(&CanonicalJsonValue::String(user.to_string()))
            && event.get("sender") == Some(&CanonicalJsonValue::String(user.to_string()));
        if !is_our_join {
            return Err(Attempt::Next(bad_gateway(format!(
                "the resident server's template is not a {membership} of this user"
            ))));
        }
        let mut merged = match event.remove("content") {
            Some(CanonicalJsonValue::Object(template)) => template,
            _ => CanonicalJsonObject::new(),
        };
        for (key, value) in content {
            if key == "membership" || key == "join_authorised_via_users_server" {
                continue;
            }
            if let Ok(value) = CanonicalJsonValue::try_from(value.clone()) {
                merged.insert(key.clone(), value);
            }
        }
        merged.insert("membership".into(), CanonicalJsonValue::String(membership.into()));
        event.insert("content".into(), CanonicalJsonValue::Object(merged));
        event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now_ms().try_into().unwrap_or_default()));
        if rules.redaction.keep_origin_membership_prev_state {
            event.insert("origin".into(), CanonicalJsonValue::String(self.server_name.to_string()));
        }
        for key in ["signatures", "hashes", "unsigned", "event_id"] {
            event.remove(key);
        }
        if rules.event_id_format == EventIdFormatVersion::V1 {
            let id = format!("${}:{}", random_string(18), self.server_name);
            event.insert("event_id".into(), CanonicalJsonValue::String(id));
        }
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            self.own_keys.key_pair(),
            &mut event,
            &rules.redaction,
        )
        .map_err(|e| Attempt::Next(bad_gateway(format!("cannot sign the {membership} template: {e}"))))?;
        let event_id = event_id_of(&event, &rules).map_err(|e| Attempt::Next(bad_gateway(e)))?;
        Ok((event_id, event))
    }

    /// The room an alias of another server names, and servers in it, asked of that server.
    pub async fn resolve_remote_alias(&self, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let request = get_room_information::v1::Request::new(alias.to_owned());
        match self.client.send(alias.server_name(), request).await {
            Ok(answer) => Ok((answer.room_id, answer.servers)),
            Err(FederationError::Remote { status: 404, .. }) => Err(Error::not_found("Unknown room alias")),
            Err(error) => Err(bad_gateway(format!("Could not ask {} about the alias: {error}", alias.server_name()))),
        }
    }
}
