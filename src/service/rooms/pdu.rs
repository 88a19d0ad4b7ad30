//! A PDU as the server handles it: parsed from its exact signed JSON (kept alongside), with the
//! event ID and room ID computed the way its room version says, and the shapes clients see.
//!
//! An event read from storage keeps its JSON as the stored text and builds the tree
//! ([`Pdu::json`]) only when something needs the whole event (signatures, redaction, federation),
//! for that use alone: a tree kept inside a cached event would grow the event cache beyond what
//! it counts. Serving an event to clients needs only the parsed fields and `unsigned`. Why: the
//! tree of a small message event took about three times the memory of its text (a map node
//! sized for eleven entries for each of `content`, `hashes`, `signatures` and `unsigned`), and
//! the event cache holds thousands of events read from storage.

use std::borrow::Cow;

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
    /// Whether the JSON has a `room_id` field (v12 create events have none).
    has_room_id: bool,
    json: PduJson,
}

/// The signed JSON of a [`Pdu`]: as a tree, or as the stored text (a tree is built per use).
#[derive(Debug, Clone)]
enum PduJson {
    Tree(CanonicalJsonObject),
    Stored {
        text: Box<RawValue>,
        /// The `unsigned` object's text, read with the fields (what clients are shown of it).
        unsigned: Option<Box<RawValue>>,
    },
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
    unsigned: Option<std::collections::BTreeMap<String, Value>>,
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
    /// Read only from stored text (see [`PduJson::Stored`]).
    #[serde(default)]
    unsigned: Option<Box<RawValue>>,
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
    /// The text is kept and the tree built only when asked for (see the module documentation);
    /// stored events were canonical JSON when they were accepted.
    pub fn from_stored(json: &RawValue, event_id: OwnedEventId, rules: &RoomVersionRules) -> Result<Self, String> {
        // The fields straight from the text: no detour through a `Value` tree.
        let mut raw: RawPdu = serde_json::from_str(json.get()).map_err(|e| format!("malformed event: {e}"))?;
        let stored = PduJson::Stored { text: json.to_owned(), unsigned: raw.unsigned.take() };
        Self::parse_fields(stored, raw, rules, Some(event_id))
    }

    fn parse(
        json: CanonicalJsonObject,
        rules: &RoomVersionRules,
        known_id: Option<OwnedEventId>,
    ) -> Result<Self, String> {
        let value = serde_json::to_value(&json).map_err(|e| e.to_string())?;
        let mut raw: RawPdu = serde_json::from_value(value).map_err(|e| format!("malformed event: {e}"))?;
        // The tree has `unsigned` itself.
        raw.unsigned = None;
        Self::parse_fields(PduJson::Tree(json), raw, rules, known_id)
    }

    fn parse_fields(
        json: PduJson,
        raw: RawPdu,
        rules: &RoomVersionRules,
        known_id: Option<OwnedEventId>,
    ) -> Result<Self, String> {
        let event_id = match (known_id, &json) {
            (Some(id), _) => id,
            (None, PduJson::Tree(tree)) => event_id_of(tree, rules)?,
            (None, PduJson::Stored { .. }) => return Err("a stored event needs its event ID".to_owned()),
        };
        let has_room_id = raw.room_id.is_some();
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
            has_room_id,
            json,
        })
    }

    /// The event's signed JSON as a tree: the event's own, or one built from the stored text
    /// for this use (bind it when it is needed more than once).
    pub fn json(&self) -> Cow<'_, CanonicalJsonObject> {
        match &self.json {
            PduJson::Tree(tree) => Cow::Borrowed(tree),
            PduJson::Stored { text, .. } => Cow::Owned(parse_stored(text)),
        }
    }

    /// The tree to change in place: from here on the event is a tree (the stored text is
    /// dropped, being out of date after the change).
    pub fn json_mut(&mut self) -> &mut CanonicalJsonObject {
        if let PduJson::Stored { text, .. } = &self.json {
            self.json = PduJson::Tree(parse_stored(text));
        }
        match &mut self.json {
            PduJson::Tree(tree) => tree,
            // Made a tree just above.
            PduJson::Stored { .. } => unreachable!("the event's JSON was made a tree"),
        }
    }

    /// The event's signed JSON as text: the stored text itself, or the tree written out.
    pub fn raw_json(&self) -> Result<Box<RawValue>, String> {
        match &self.json {
            PduJson::Tree(tree) => serde_json::value::to_raw_value(tree).map_err(|e| e.to_string()),
            PduJson::Stored { text, .. } => Ok(text.clone()),
        }
    }

    /// Whether the event's `unsigned` object has `key` (read without building the event's tree).
    pub fn unsigned_has(&self, key: &str) -> bool {
        match &self.json {
            PduJson::Tree(tree) => {
                matches!(tree.get("unsigned"), Some(CanonicalJsonValue::Object(unsigned)) if unsigned.contains_key(key))
            }
            PduJson::Stored { unsigned, .. } => unsigned.as_ref().is_some_and(|unsigned| {
                serde_json::from_str::<std::collections::HashMap<String, serde::de::IgnoredAny>>(unsigned.get())
                    .is_ok_and(|entries| entries.contains_key(key))
            }),
        }
    }

    /// The stored `unsigned` object's entries, for what clients are shown; `None` without one.
    fn stored_unsigned(&self) -> Result<Option<std::collections::BTreeMap<String, Value>>, String> {
        match &self.json {
            PduJson::Tree(tree) => match tree.get("unsigned") {
                Some(CanonicalJsonValue::Object(unsigned)) => {
                    let mut entries = std::collections::BTreeMap::new();
                    for (key, value) in unsigned {
                        entries.insert(key.clone(), serde_json::to_value(value).map_err(|e| e.to_string())?);
                    }
                    Ok(Some(entries))
                }
                Some(_) => Ok(Some(Default::default())),
                None => Ok(None),
            },
            PduJson::Stored { unsigned: None, .. } => Ok(None),
            // Not an object (never written by us): shown as empty, as from the tree.
            PduJson::Stored { unsigned: Some(unsigned), .. } => {
                Ok(Some(serde_json::from_str(unsigned.get()).unwrap_or_default()))
            }
        }
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
        let stored = self.stored_unsigned()?;
        let had_unsigned = stored.is_some();
        let mut unsigned = stored.unwrap_or_default();
        for (key, value) in extra {
            unsigned.insert((*key).to_owned(), Value::String((*value).to_owned()));
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
            unsigned: (!unsigned.is_empty() || had_unsigned).then_some(unsigned),
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
        if let Ok(Some(unsigned)) = self.stored_unsigned() {
            event.insert("unsigned".into(), Value::Object(unsigned.into_iter().collect()));
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

/// The tree of a stored event's text. The text was canonical JSON when the event was accepted;
/// if it no longer parses (a damaged database), the event shows as an empty object, which fails
/// every signature and hash check, and the damage is logged.
fn parse_stored(text: &RawValue) -> CanonicalJsonObject {
    serde_json::from_str(text.get()).unwrap_or_else(|e| {
        tracing::error!("a stored event's JSON does not parse as canonical JSON: {e}");
        CanonicalJsonObject::new()
    })
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    /// The `room_id` field itself: absent on v12 create events, whose room ID is derived.
    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id.then_some(&*self.room_id)
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

    /// An event read from storage (text, tree on demand) shows the same as the same event
    /// parsed as a tree, and a change made through `json_mut` is what it then writes out.
    #[test]
    fn a_stored_event_is_the_same_as_its_tree() {
        let event = json!({"type": "m.room.member", "state_key": "@b:x", "sender": "@b:x",
            "content": {"membership": "join"}, "unsigned": {"prev_content": {"membership": "invite"}, "age_ts": 5},
            "auth_events": [], "prev_events": [], "depth": 3, "origin_server_ts": 1_700_000_000_000_u64,
            "room_id": "!r:x", "hashes": {"sha256": "abc"}, "signatures": {"x": {"ed25519:k": "sig"}}});
        let tree: ruma::CanonicalJsonObject = serde_json::from_value(event).expect("canonical");
        let text = serde_json::value::to_raw_value(&tree).expect("text");
        let rules = RoomVersionRules::V11;
        let mut stored = Pdu::from_stored(&text, "$e".try_into().expect("id"), &rules).expect("stored");
        let mut parsed = Pdu::from_json(tree.clone(), &rules).expect("tree");
        parsed.event_id = stored.event_id.clone();
        assert_eq!(*stored.json(), tree);
        assert!(stored.unsigned_has("age_ts") && parsed.unsigned_has("age_ts"));
        assert!(!stored.unsigned_has("redacted_because") && !parsed.unsigned_has("redacted_because"));
        assert_eq!(stored.raw_json().expect("raw").get(), text.get());
        let extra = [("transaction_id", "t1")];
        assert_eq!(
            stored.client_json(true, &extra).expect("a").get(),
            parsed.client_json(true, &extra).expect("b").get()
        );
        assert_eq!(stored.to_client_event(), parsed.to_client_event());
        use ruma::state_res::Event;
        assert!(stored.room_id().is_some());

        stored.json_mut().insert("depth".to_owned(), ruma::CanonicalJsonValue::Integer(4_u32.into()));
        let written: serde_json::Value = serde_json::from_str(stored.raw_json().expect("raw").get()).expect("json");
        assert_eq!(written["depth"], 4);
        assert_eq!(written["signatures"]["x"]["ed25519:k"], "sig");
    }
}
