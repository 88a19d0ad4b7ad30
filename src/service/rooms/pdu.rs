//! A PDU as the server handles it: parsed from its exact signed JSON (kept alongside), with the
//! event ID and room ID computed the way its room version says, and the shapes clients see.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion, RoomVersionRules},
};
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

/// A parsed PDU and its signed JSON.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: u64,
    pub redacts: Option<OwnedEventId>,
    pub json: CanonicalJsonObject,
}

/// A client event as serialised by [`Pdu::client_json`] (the fields of `to_client_event`, in the
/// same order).
#[derive(serde::Serialize)]
struct ClientEventOut<'a> {
    content: &'a RawValue,
    event_id: &'a str,
    origin_server_ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsigned: Option<std::collections::BTreeMap<&'a str, Value>>,
}

/// `prev_events`/`auth_events` entries: plain IDs (v3+) or `[id, {hashes}]` pairs (v1, v2).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(OwnedEventId),
    Pair(OwnedEventId, serde::de::IgnoredAny),
}

impl EventRef {
    fn id(self) -> OwnedEventId {
        match self {
            EventRef::Id(id) | EventRef::Pair(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct RawPdu {
    #[serde(default)]
    event_id: Option<OwnedEventId>,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: UInt,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    #[serde(default)]
    state_key: Option<String>,
    prev_events: Vec<EventRef>,
    auth_events: Vec<EventRef>,
    depth: UInt,
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

/// The event ID a PDU has under `rules`: its own `event_id` field (v1, v2) or its reference hash.
pub fn event_id_of(json: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, String> {
    match rules.event_id_format {
        EventIdFormatVersion::V1 => match json.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => OwnedEventId::try_from(id.as_str()).map_err(|e| e.to_string()),
            _ => Err("event has no event_id".to_owned()),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(json, rules).map_err(|e| e.to_string())?;
            OwnedEventId::try_from(format!("${hash}")).map_err(|e| e.to_string())
        }
    }
}

impl Pdu {
    /// Parses a PDU of a room with the given rules. Errors are descriptions for the sender.
    pub fn from_json(json: CanonicalJsonObject, rules: &RoomVersionRules) -> Result<Self, String> {
        Self::parse(json, rules, None)
    }

    /// Parses stored PDU JSON whose event ID is already known (no reference hash to compute).
    pub fn from_stored(json: &RawValue, event_id: OwnedEventId, rules: &RoomVersionRules) -> Result<Self, String> {
        // The fields straight from the text: no detour through a `Value` tree.
        let object: CanonicalJsonObject = serde_json::from_str(json.get()).map_err(|e| e.to_string())?;
        let raw: RawPdu = serde_json::from_str(json.get()).map_err(|e| format!("malformed event: {e}"))?;
        Self::parse_fields(object, raw, rules, Some(event_id))
    }

    fn parse(
        json: CanonicalJsonObject,
        rules: &RoomVersionRules,
        known_id: Option<OwnedEventId>,
    ) -> Result<Self, String> {
        let value = serde_json::to_value(&json).map_err(|e| e.to_string())?;
        let raw: RawPdu = serde_json::from_value(value).map_err(|e| format!("malformed event: {e}"))?;
        Self::parse_fields(json, raw, rules, known_id)
    }

    fn parse_fields(
        json: CanonicalJsonObject,
        raw: RawPdu,
        rules: &RoomVersionRules,
        known_id: Option<OwnedEventId>,
    ) -> Result<Self, String> {
        let event_id = match known_id {
            Some(id) => id,
            None => event_id_of(&json, rules)?,
        };
        let room_id = match (raw.room_id, rules.room_id_format) {
            (Some(room_id), _) => room_id,
            // From room version 12 the create event has no room ID: it is derived from its ID.
            (None, RoomIdFormatVersion::V2) if raw.kind == TimelineEventType::RoomCreate => {
                OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..])).map_err(|e| e.to_string())?
            }
            (None, _) => return Err("event has no room_id".to_owned()),
        };
        if let (EventIdFormatVersion::V1, Some(id)) = (rules.event_id_format, &raw.event_id)
            && id != &event_id
        {
            return Err("event_id mismatch".to_owned());
        }
        let redacts = match raw.redacts {
            Some(redacts) => Some(redacts),
            None if raw.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(raw.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id,
            room_id,
            sender: raw.sender,
            origin_server_ts: MilliSecondsSinceUnixEpoch(raw.origin_server_ts),
            kind: raw.kind,
            content: raw.content,
            state_key: raw.state_key,
            prev_events: raw.prev_events.into_iter().map(EventRef::id).collect(),
            auth_events: raw.auth_events.into_iter().map(EventRef::id).collect(),
            depth: raw.depth.into(),
            redacts,
            json,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Null)
    }

    /// The event as clients see it, serialised at once from the stored pieces (`content` is
    /// copied as it is stored): without `room_id` for the sync format, and with `extra` added to
    /// `unsigned` (which a stored entry of the same name is replaced by).
    pub fn client_json(&self, with_room_id: bool, extra: &[(&str, &str)]) -> Result<Box<RawValue>, String> {
        let mut unsigned: std::collections::BTreeMap<&str, Value> = std::collections::BTreeMap::new();
        if let Some(CanonicalJsonValue::Object(stored)) = self.json.get("unsigned") {
            for (key, value) in stored {
                unsigned.insert(key, serde_json::to_value(value).map_err(|e| e.to_string())?);
            }
        }
        for (key, value) in extra {
            unsigned.insert(key, Value::String((*value).to_owned()));
        }
        let event = ClientEventOut {
            content: &self.content,
            event_id: self.event_id.as_str(),
            origin_server_ts: u64::from(self.origin_server_ts.0),
            redacts: self.redacts.as_ref().map(|id| id.as_str()),
            room_id: with_room_id.then(|| self.room_id.as_str()),
            sender: self.sender.as_str(),
            state_key: self.state_key.as_deref(),
            kind: &self.kind,
            unsigned: (!unsigned.is_empty() || self.json.contains_key("unsigned")).then_some(unsigned),
        };
        serde_json::value::to_raw_value(&event).map_err(|e| e.to_string())
    }

    /// What [`client_json`](Self::client_json) gives without `room_id` or `extra`, written
    /// straight from the stored text of an event (no parse into a tree, no `Pdu`), with its
    /// sender; `None` when the text is not of the simple shape this handles (escaped strings in
    /// the fields read, `unsigned` that is not an object, a redaction), and the caller parses
    /// the event instead.
    pub fn stored_client_json(stored: &[u8], event_id: &str) -> Option<(Box<RawValue>, OwnedUserId)> {
        #[derive(Deserialize)]
        struct Stored<'a> {
            #[serde(borrow)]
            content: &'a RawValue,
            origin_server_ts: u64,
            sender: &'a str,
            #[serde(default, borrow)]
            state_key: Option<&'a str>,
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(default, borrow)]
            redacts: Option<&'a str>,
            #[serde(default, borrow)]
            unsigned: Option<&'a RawValue>,
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            content: &'a RawValue,
            event_id: &'a str,
            origin_server_ts: u64,
            sender: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            state_key: Option<&'a str>,
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            unsigned: Option<&'a RawValue>,
        }
        let stored: Stored<'_> = serde_json::from_slice(stored).ok()?;
        // A redaction's `redacts` (in the content from v11) is written by `client_json`.
        if stored.redacts.is_some() || stored.kind == "m.room.redaction" {
            return None;
        }
        // Stored events are canonical JSON (keys sorted, compact), which is what `client_json`
        // writes of `unsigned` too; only an object is copied as it is.
        if stored.unsigned.is_some_and(|unsigned| !unsigned.get().starts_with('{')) {
            return None;
        }
        let sender = OwnedUserId::try_from(stored.sender).ok()?;
        let out = Out {
            content: stored.content,
            event_id,
            origin_server_ts: stored.origin_server_ts,
            sender: stored.sender,
            state_key: stored.state_key,
            kind: stored.kind,
            unsigned: stored.unsigned,
        };
        Some((serde_json::value::to_raw_value(&out).ok()?, sender))
    }

    /// The event as clients see it (the client-server API's `ClientEvent`).
    pub fn to_client_event(&self) -> Value {
        let mut event = serde_json::Map::new();
        event.insert("content".into(), self.content_value());
        event.insert("event_id".into(), Value::String(self.event_id.to_string()));
        event.insert("origin_server_ts".into(), Value::from(u64::from(self.origin_server_ts.0)));
        event.insert("room_id".into(), Value::String(self.room_id.to_string()));
        event.insert("sender".into(), Value::String(self.sender.to_string()));
        event.insert("type".into(), Value::String(self.kind.to_string()));
        if let Some(state_key) = &self.state_key {
            event.insert("state_key".into(), Value::String(state_key.clone()));
        }
        if let Some(redacts) = &self.redacts {
            event.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        if let Some(CanonicalJsonValue::Object(unsigned)) = self.json.get("unsigned") {
            event.insert("unsigned".into(), serde_json::to_value(unsigned).unwrap_or(Value::Null));
        }
        Value::Object(event)
    }

    /// The stripped state form used for invites and knocks.
    pub fn to_stripped_state(&self) -> Value {
        serde_json::json!({
            "content": self.content_value(),
            "sender": self.sender,
            "state_key": self.state_key,
            "type": self.kind.to_string(),
        })
    }

    pub fn sender_user(&self) -> &UserId {
        &self.sender
    }

    pub fn room(&self) -> &RoomId {
        &self.room_id
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    /// The `room_id` field itself: absent on v12 create events, whose room ID is derived.
    fn room_id(&self) -> Option<&RoomId> {
        self.json.contains_key("room_id").then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        // Rejected events are never stored, so any event we hand to state resolution passed.
        false
    }
}

#[cfg(test)]
mod tests {
    use ruma::room_version_rules::RoomVersionRules;
    use serde_json::json;

    use super::Pdu;

    /// `stored_client_json` writes what `client_json` writes of the parsed event, or declines.
    #[test]
    fn stored_client_json_is_client_json() {
        let events = [
            json!({"type": "m.room.member", "state_key": "@b:x", "sender": "@b:x", "content":
                {"membership": "join", "displayname": "B \"q\" \u{2713}"}, "unsigned": {"prev_content":
                {"membership": "invite", "z": [1, {"b": 2, "a": null}]}, "replaces_state": "$p", "age_ts": 5}}),
            json!({"type": "m.room.topic", "state_key": "", "sender": "@a:x", "content": {"topic": "t"}}),
            json!({"type": "m.room.message", "sender": "@a:x", "content": {"body": "hi"}, "unsigned": {}}),
            json!({"type": "o.e", "state_key": "k \"quoted\"", "sender": "@a:x", "content": {}}),
            json!({"type": "m.room.redaction", "redacts": "$t", "sender": "@a:x", "content": {"redacts": "$t"}}),
        ];
        for mut event in events {
            let object = event.as_object_mut().expect("object");
            for (key, value) in [("auth_events", json!([])), ("prev_events", json!([])), ("depth", json!(3))] {
                object.insert(key.to_owned(), value);
            }
            object.insert("origin_server_ts".to_owned(), json!(1_700_000_000_000_u64));
            object.insert("room_id".to_owned(), json!("!r:x"));
            let canonical: ruma::CanonicalJsonObject = serde_json::from_value(event.clone()).expect("canonical");
            let stored = serde_json::value::to_raw_value(&canonical).expect("stored");
            let pdu = Pdu::from_stored(&stored, "$e".try_into().expect("id"), &RoomVersionRules::V11).expect("pdu");
            let parsed = pdu.client_json(false, &[]).expect("client json");
            match Pdu::stored_client_json(stored.get().as_bytes(), "$e") {
                Some((direct, sender)) => {
                    assert_eq!(direct.get(), parsed.get(), "{event}");
                    assert_eq!(sender, pdu.sender);
                }
                None => assert!(
                    event["type"] == "m.room.redaction" || event["state_key"] == "k \"quoted\"",
                    "declined {event}"
                ),
            }
        }
    }
}
