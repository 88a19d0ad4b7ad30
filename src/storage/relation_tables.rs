//! Relation tables: the index of events that relate to other events (`m.relates_to`), written
//! in the child event's own batch; one summary per thread root, with the rows that order a
//! room's threads by their latest activity; and each event's annotations by (sender, type,
//! key). Redacting a child removes its rows (and updates its thread's summary) in the
//! redaction's batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// (short parent event, child's stream position) -> the relation: every child of an event in
/// timeline order, whatever its relation type.
pub const RELATIONS: Table<(u64, u64), RelationRow> = Table::new("relations");
/// (short parent event, relation type, child's stream position) -> short child event: the
/// children of one relation type (edits, references, thread replies) without the others.
pub const RELATIONS_BY_TYPE: Table<(u64, String, u64), u64> = Table::new("relations_by_type");
/// Short thread root -> the thread's summary (latest reply, count, participants).
pub const THREAD_SUMMARIES: Table<u64, ThreadSummary> = Table::new("thread_summaries");
/// (short room, stream position of the thread's latest reply, short root) -> (): a room's
/// threads ordered by latest activity; moved when a reply arrives or the latest is redacted.
pub const ROOM_THREADS: Table<(u64, u64, u64), ()> = Table::new("room_threads");

/// (short parent event, sender, event type, annotation key) -> short child: the annotations
/// (reactions) of an event, so a second identical one is refused.
pub const ANNOTATIONS: Table<(u64, String, String, String), u64> = Table::new("annotations");

pub const RELATION_TABLES: &[&str] =
    &[RELATIONS.name, RELATIONS_BY_TYPE.name, THREAD_SUMMARIES.name, ROOM_THREADS.name, ANNOTATIONS.name];

/// The `key` of an `m.annotation` relation.
pub fn annotation_key(content: &serde_json::Value) -> Option<String> {
    let relates_to = content.get("m.relates_to")?;
    (relates_to.get("rel_type")?.as_str()? == "m.annotation").then_some(())?;
    Some(relates_to.get("key")?.as_str()?.to_owned())
}

/// The relation an event's content declares, as the index keys it: (relation type, parent
/// event ID), when `m.relates_to` has both.
pub fn relation_of(content: &serde_json::Value) -> Option<(String, String)> {
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let parent = relates_to.get("event_id")?.as_str()?;
    Some((rel_type.to_owned(), parent.to_owned()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationRow {
    /// Short id of the child event.
    pub child: u64,
    pub rel_type: String,
    /// The child's event type.
    pub event_type: String,
    /// The child's sender.
    pub sender: String,
}
impl JsonValue for RelationRow {}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub room: u64,
    /// Short id and stream position of the newest reply.
    pub latest: u64,
    pub latest_position: u64,
    /// Replies (`m.thread` children) not redacted.
    pub count: u64,
    /// Senders of the replies, with how many each sent (the root's sender is not counted).
    pub participants: BTreeMap<String, u64>,
}
impl JsonValue for ThreadSummary {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{annotation_key, relation_of};

    #[test]
    fn relations_need_a_type_and_a_parent() {
        let thread = json!({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}});
        assert_eq!(relation_of(&thread), Some(("m.thread".to_owned(), "$root".to_owned())));
        // A rich reply alone is no relation; neither is a malformed one.
        assert_eq!(relation_of(&json!({"m.relates_to": {"m.in_reply_to": {"event_id": "$e"}}})), None);
        assert_eq!(relation_of(&json!({"m.relates_to": {"rel_type": 5, "event_id": "$e"}})), None);
        assert_eq!(relation_of(&json!({"body": "plain"})), None);

        let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "👍"}});
        assert_eq!(annotation_key(&reaction).as_deref(), Some("👍"));
        assert_eq!(annotation_key(&thread), None);
    }
}
