//! The first half of accepting an event, which needs no room state and so runs outside the
//! room's lock: the room version, format and size limits, the event's room, and its content
//! hash and signatures. What it returns goes to the commit step (`accept.rs`) under the lock.
//! Federation will fetch signing keys here, before the lock is taken.

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId, RoomVersionId,
    api::error::ErrorKind,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified},
    state_res,
};

use super::{RoomCore, pdu::Pdu};
use crate::{Error, Result};

/// The spec's limit on a whole PDU, signatures included.
const MAX_PDU_BYTES: usize = 65_536;

/// An event whose format, size, hashes and signatures have been checked.
pub struct Prepared {
    pub(super) pdu: Pdu,
    pub(super) rules: RoomVersionRules,
    pub(super) version: RoomVersionId,
}

impl Prepared {
    pub fn event_id(&self) -> &OwnedEventId {
        &self.pdu.event_id
    }
}

/// Where an event comes from: events this server just built and signed need no signature
/// check, and are never stored as rejected.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Local,
    Remote,
}

pub(super) fn bad_event(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
}

impl RoomCore {
    /// Checks an event for everything that needs no room state.
    pub(super) fn prepare(
        &self,
        expected_room: Option<&RoomId>,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
        remote_keys: Option<&PublicKeyMap>,
    ) -> Result<Prepared> {
        let rules = crate::service::rooms::versions::rules(version).ok_or_else(|| {
            Error::new(StatusCode::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion, "Unsupported room version")
        })?;
        // Format and size limits (whole event 65,536 bytes, field limits).
        let size = serde_json::to_vec(&json).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PDU_BYTES {
            return Err(Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                format!("Event is {size} bytes; the limit is {MAX_PDU_BYTES}"),
            ));
        }
        state_res::check_pdu_format(&json, &rules.event_format).map_err(bad_event)?;
        let mut pdu = Pdu::from_json(json, &rules).map_err(bad_event)?;
        if expected_room.is_some_and(|room| room != pdu.room_id) {
            return Err(bad_event("The event belongs to another room"));
        }
        if let Some(keys) = remote_keys {
            // Hashes and signatures. A wrong content hash means the content was tampered with:
            // the spec keeps the event, redacted.
            match ruma::signatures::verify_event(keys, &pdu.json(), &rules) {
                Ok(Verified::All) => {}
                Ok(Verified::Signatures) => {
                    let redacted = ruma::canonical_json::redact(pdu.json().into_owned(), &rules.redaction, None)
                        .map_err(|e| bad_event(format!("cannot redact event: {e}")))?;
                    pdu = Pdu::from_json(redacted, &rules).map_err(bad_event)?;
                }
                Err(error) => {
                    return Err(Error::forbidden(format!("Event not authorised: signature check failed: {error}")));
                }
            }
        }
        Ok(Prepared { pdu, rules, version: version.clone() })
    }
}

/// Events ordered so that each comes after those of its auth events that are among them (the
/// order outliers must be stored in). Cycles, which valid events cannot have, keep their order.
pub(super) fn in_auth_order(events: Vec<Prepared>) -> Vec<Prepared> {
    let mut remaining: Vec<Prepared> = events;
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let pending: std::collections::HashSet<OwnedEventId> =
            remaining.iter().map(|event| event.pdu.event_id.clone()).collect();
        let (ready, blocked): (Vec<Prepared>, Vec<Prepared>) = remaining.into_iter().partition(|event| {
            !event.pdu.auth_events.iter().any(|id| pending.contains(id) && *id != event.pdu.event_id)
        });
        if ready.is_empty() {
            ordered.extend(blocked);
            break;
        }
        // From v12 no event lists the create event among its auth events, yet all need it.
        let (create, rest): (Vec<Prepared>, Vec<Prepared>) =
            ready.into_iter().partition(|event| event.pdu.kind == ruma::events::TimelineEventType::RoomCreate);
        ordered.extend(create);
        ordered.extend(rest);
        remaining = blocked;
    }
    ordered
}
