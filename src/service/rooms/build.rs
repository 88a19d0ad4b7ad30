//! Building this server's own events: prev events from the room's forward extremities (or
//! given ones), depth, the auth events the spec selects from the state before the event, the
//! reference formats of the room version, then content hash and signature.

use std::sync::{Arc, atomic::Ordering};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, RoomVersionId, UserId,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};
use serde_json::Value;

use super::{RoomCore, state::ShortStateMap};
use crate::{
    Error, Result,
    service::{now_ms, random_string},
    storage::{
        Db,
        room_tables::{EVENT_META, ROOMS},
    },
};

/// At most this many prev events are referenced.
const MAX_PREV_EVENTS: usize = 20;

/// An event this server is about to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: Value,
    pub state_key: Option<String>,
    /// For redactions: the event redacted (a top-level field before v11, in content from v11).
    pub redacts: Option<OwnedEventId>,
    /// The `origin_server_ts` to give it instead of now: an application service's timestamp
    /// massaging (`?ts=`).
    pub timestamp: Option<u64>,
}

impl NewEvent {
    pub fn state(kind: TimelineEventType, state_key: impl Into<String>, content: Value) -> Self {
        Self { kind, content, state_key: Some(state_key.into()), redacts: None, timestamp: None }
    }
    pub fn message(kind: TimelineEventType, content: Value) -> Self {
        Self { kind, content, state_key: None, redacts: None, timestamp: None }
    }
}

fn to_canonical(value: Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value).map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

/// Before v11, `redacts` is a top-level field; from v11 it is in the content.
fn has_top_level_redacts(rules: &RoomVersionRules) -> bool {
    !rules.redaction.content_field_redacts
}

impl RoomCore {
    /// Builds and signs an event. `room` is `None` only for a v12 create event, whose room ID
    /// is derived from it. `prev_events` overrides the forward extremities (tests of forks, and
    /// later federation joins).
    pub(super) fn build(
        &self,
        db: &Db,
        room: Option<&RoomId>,
        version: &RoomVersionId,
        sender: &UserId,
        event: NewEvent,
        prev_events: Option<Vec<OwnedEventId>>,
    ) -> Result<CanonicalJsonObject> {
        let rules = crate::service::rooms::versions::rules(version)
            .ok_or_else(|| Error::internal("unsupported room version"))?;
        let short_room = match room {
            Some(room_id) => self.interner.short_room(db, room_id)?,
            None => None,
        };

        // Prev events and the state they lead to.
        let prev_shorts: Vec<u64> = match (&prev_events, short_room) {
            (Some(ids), _) => {
                let mut shorts = Vec::new();
                for id in ids {
                    shorts.push(
                        self.interner.short_event(db, id)?.ok_or_else(|| Error::not_found("Unknown prev event"))?,
                    );
                }
                shorts
            }
            (None, Some(short_room)) => {
                let record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
                let mut extremities: Vec<(u64, u64)> = Vec::new();
                for short in record.extremities {
                    let depth = EVENT_META.get(db, &short)?.map_or(0, |m| m.depth);
                    extremities.push((depth, short));
                }
                extremities.sort_unstable_by(|a, b| b.cmp(a));
                extremities.into_iter().take(MAX_PREV_EVENTS).map(|(_, short)| short).collect()
            }
            (None, None) => Vec::new(),
        };
        let mut depth = 0;
        let mut groups = Vec::new();
        for short in &prev_shorts {
            let meta = EVENT_META.get(db, short)?.ok_or_else(|| Error::internal("prev event without meta"))?;
            depth = depth.max(meta.depth);
            groups.push(meta.state_after);
        }
        groups.sort_unstable();
        groups.dedup();
        let state: Arc<ShortStateMap> = match (groups.as_slice(), prev_events.is_some(), short_room) {
            ([], _, _) => Arc::new(ShortStateMap::new()),
            // Building on the extremities: the room's current state.
            (_, false, Some(short_room)) => {
                let record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
                self.state.load(db, record.current_state_group)?
            }
            ([group], _, _) => self.state.load(db, *group)?,
            (many, _, _) => Arc::new(self.resolve(db, &rules, many, None)?),
        };

        let mut content = event.content;
        if let (Some(redacts), false) = (&event.redacts, has_top_level_redacts(&rules))
            && let Some(object) = content.as_object_mut()
        {
            object.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        let content_raw = serde_json::value::to_raw_value(&content).map_err(|e| Error::bad_json(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &event.kind,
            sender,
            event.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut auth_shorts = Vec::new();
        for (kind, state_key) in auth_types {
            if let Some(key) = self.interner.short_state_key(db, &kind.to_string(), &state_key)?
                && let Some(event) = state.get(&key)
                && !auth_shorts.contains(event)
            {
                auth_shorts.push(*event);
            }
        }

        let mut json = CanonicalJsonObject::new();
        json.insert("type".into(), CanonicalJsonValue::String(event.kind.to_string()));
        json.insert("content".into(), to_canonical(content)?);
        json.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        let ts = match event.timestamp {
            Some(ts) => ts,
            None if event.kind == TimelineEventType::RoomCreate => self.unique_create_ts(),
            None => now_ms(),
        };
        json.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ts.try_into().unwrap_or_default()));
        json.insert(
            "depth".into(),
            CanonicalJsonValue::Integer((depth + 1).min(i64::MAX as u64).try_into().unwrap_or_default()),
        );
        json.insert("prev_events".into(), self.references(db, &prev_shorts, &rules)?);
        json.insert("auth_events".into(), self.references(db, &auth_shorts, &rules)?);
        if let Some(room_id) = room {
            json.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
        }
        if let Some(state_key) = event.state_key {
            json.insert("state_key".into(), CanonicalJsonValue::String(state_key));
        }
        if let (Some(redacts), true) = (&event.redacts, has_top_level_redacts(&rules)) {
            json.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
        // `origin` is part of the event format until v11 removed it.
        if rules.redaction.keep_origin_membership_prev_state {
            json.insert("origin".into(), CanonicalJsonValue::String(self.server_name.to_string()));
        }
        if rules.event_id_format == EventIdFormatVersion::V1 {
            json.insert(
                "event_id".into(),
                CanonicalJsonValue::String(format!("${}:{}", random_string(18), self.server_name)),
            );
        }
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            self.keys.key_pair(),
            &mut json,
            &rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                "The event would exceed 65,536 bytes",
            ),
            other => Error::internal(format!("cannot sign event: {other}")),
        })?;
        Ok(json)
    }

    /// A timestamp for a create event that no other create event of this server has. From v12
    /// the room ID is the create event's hash: two rooms created by one user in the same
    /// millisecond with the same content would otherwise be one room.
    fn unique_create_ts(&self) -> u64 {
        let now = now_ms();
        let previous = self
            .last_create_ts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)))
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Event references in the room version's format: IDs, or `[id, {"sha256": hash}]` pairs.
    fn references(&self, db: &Db, shorts: &[u64], rules: &RoomVersionRules) -> Result<CanonicalJsonValue> {
        let mut out = Vec::new();
        for short in shorts {
            let id = self.interner.event_id(db, *short)?;
            if rules.event_id_format == EventIdFormatVersion::V1 {
                let pdu = self.event_by_short(db, *short, rules)?;
                let hash =
                    ruma::signatures::reference_hash(&pdu.json(), rules).map_err(|e| Error::internal(e.to_string()))?;
                let hashes = CanonicalJsonObject::from([("sha256".to_owned(), CanonicalJsonValue::String(hash))]);
                out.push(CanonicalJsonValue::Array(vec![
                    CanonicalJsonValue::String(id.to_string()),
                    CanonicalJsonValue::Object(hashes),
                ]));
            } else {
                out.push(CanonicalJsonValue::String(id.to_string()));
            }
        }
        Ok(CanonicalJsonValue::Array(out))
    }
}
