//! Schema 3 -> 4: the relations index (`relation_tables.rs`) for the events stored before it
//! existed. Every timeline event, in stream order, that relates to an event of its room gets its
//! rows, unless a redaction of it applies; thread summaries are built from those rows. The
//! tables are emptied first, so a migration cut short runs again from the start.
//!
//! Whether a redaction applies is judged as closely as storage alone allows: the child's own
//! sender, or a sender whose power in the room's *current* power levels reaches `redact` (the
//! room's creator counts as privileged). The commit path judges it by the state after the
//! redaction; the two differ only when power levels changed since.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::{
    Batch, Db, ScanDirection, StorageError, Table, ValueCodec,
    codec::KeyCodec,
    relation_tables::{
        ANNOTATIONS, RELATIONS, RELATIONS_BY_TYPE, ROOM_THREADS, RelationRow, THREAD_SUMMARIES, ThreadSummary,
        annotation_key, relation_of,
    },
    room_tables::{CURRENT_STATE, EVENT_META, EVENT_STREAM, PDUS, REDACTIONS, SHORT_EVENT_IDS, SHORT_STATE_KEYS},
};

/// Rows read and written per batch.
const PAGE: usize = 1_000;

/// The fields of a stored PDU the index needs.
#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "type")]
    kind: String,
    sender: String,
    #[serde(default)]
    content: Value,
}

/// The fields of a stored event; `None` for one that cannot be read, which is left out of the
/// index rather than keeping the server from starting.
fn fields(db: &Db, short: u64) -> Result<Option<Fields>, StorageError> {
    let Some(json) = PDUS.get(db, &short)? else { return Ok(None) };
    match serde_json::from_str(json.get()) {
        Ok(fields) => Ok(Some(fields)),
        Err(e) => {
            tracing::warn!(short, "stored event left out of the relations index: {e}");
            Ok(None)
        }
    }
}

/// Deletes every row of a table, a page at a time.
fn clear<K: KeyCodec + Default, V: ValueCodec>(db: &Db, table: &Table<K, V>) -> Result<(), StorageError> {
    loop {
        let page = table.scan_from(db, &K::default(), ScanDirection::Forward, PAGE, |_| true)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, _) in &page {
            batch.delete(table, key);
        }
        db.write(batch)?;
    }
}

/// What a room's current state says about redacting others' events.
struct RoomPower {
    users: HashMap<String, i64>,
    users_default: i64,
    redact: i64,
    creator: Option<String>,
}

/// Who may redact others' events, per room, by its current state (read once per room).
#[derive(Default)]
struct Moderators(HashMap<u64, RoomPower>);

impl Moderators {
    fn state_content(db: &Db, room: u64, kind: &str) -> Result<Option<Value>, StorageError> {
        let Some(key) = SHORT_STATE_KEYS.get(db, &(kind.to_owned(), String::new()))? else { return Ok(None) };
        let Some(event) = CURRENT_STATE.get(db, &(room, key))? else { return Ok(None) };
        Ok(fields(db, event)?.map(|f| if kind == "m.room.create" { Value::String(f.sender) } else { f.content }))
    }

    fn room_power(db: &Db, room: u64) -> Result<RoomPower, StorageError> {
        let power = Self::state_content(db, room, "m.room.power_levels")?.unwrap_or(Value::Null);
        let as_int = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        Ok(RoomPower {
            users: power
                .get("users")
                .and_then(Value::as_object)
                .map(|users| users.iter().filter_map(|(u, p)| Some((u.clone(), as_int(p)?))).collect())
                .unwrap_or_default(),
            users_default: power.get("users_default").and_then(as_int).unwrap_or(0),
            redact: power.get("redact").and_then(as_int).unwrap_or(50),
            creator: Self::state_content(db, room, "m.room.create")?.and_then(|c| c.as_str().map(str::to_owned)),
        })
    }

    fn may_redact_others(&mut self, db: &Db, room: u64, user: &str) -> Result<bool, StorageError> {
        let power = match self.0.entry(room) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Self::room_power(db, room)?),
        };
        Ok(power.creator.as_deref() == Some(user)
            || power.users.get(user).copied().unwrap_or(power.users_default) >= power.redact)
    }
}

/// Whether a served redaction of `child` (sent by `sender` in `room`) applies.
fn redacted(db: &Db, moderators: &mut Moderators, room: u64, child: u64, sender: &str) -> Result<bool, StorageError> {
    for ((_, redaction), ()) in REDACTIONS.scan_prefix(db, &(child,))? {
        if !EVENT_META.get(db, &redaction)?.is_some_and(|meta| meta.is_served()) {
            continue;
        }
        let Some(by) = fields(db, redaction)?.map(|f| f.sender) else { continue };
        if by == sender || moderators.may_redact_others(db, room, &by)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn index_relations(db: &Db) -> Result<(), StorageError> {
    clear(db, &RELATIONS)?;
    clear(db, &RELATIONS_BY_TYPE)?;
    clear(db, &THREAD_SUMMARIES)?;
    clear(db, &ROOM_THREADS)?;
    clear(db, &ANNOTATIONS)?;
    let mut summaries: BTreeMap<u64, ThreadSummary> = BTreeMap::new();
    let mut moderators = Moderators::default();
    let mut cursor = 0;
    loop {
        let page = EVENT_STREAM.scan_from(db, &cursor, ScanDirection::Forward, PAGE, |_| true)?;
        let Some(&(last, _)) = page.last() else { break };
        let mut batch = Batch::new();
        for (position, (room, short)) in &page {
            let Some(event) = fields(db, *short)? else { continue };
            let Some((rel_type, parent)) = relation_of(&event.content) else { continue };
            let Some(short_parent) = SHORT_EVENT_IDS.get(db, &parent)? else { continue };
            if short_parent == *short || EVENT_META.get(db, &short_parent)?.is_none_or(|meta| meta.room != *room) {
                continue;
            }
            if redacted(db, &mut moderators, *room, *short, &event.sender)? {
                continue;
            }
            if rel_type == "m.thread" {
                let summary = summaries.entry(short_parent).or_default();
                summary.room = *room;
                summary.count += 1;
                summary.latest = *short;
                summary.latest_position = *position;
                *summary.participants.entry(event.sender.clone()).or_default() += 1;
            }
            batch.put(&RELATIONS_BY_TYPE, &(short_parent, rel_type.clone(), *position), short)?;
            if let Some(key) = annotation_key(&event.content) {
                batch.put(
                    &ANNOTATIONS,
                    &(short_parent, event.sender.clone(), event.kind.clone(), db.term(&key)),
                    short,
                )?;
            }
            let row = RelationRow { child: *short, rel_type, event_type: event.kind, sender: event.sender };
            batch.put(&RELATIONS, &(short_parent, *position), &row)?;
        }
        db.write(batch)?;
        match last.checked_add(1) {
            Some(next) if page.len() == PAGE => cursor = next,
            _ => break,
        }
    }
    let mut batch = Batch::new();
    for (root, summary) in summaries {
        batch.put(&ROOM_THREADS, &(summary.room, summary.latest_position, root), &())?;
        batch.put(&THREAD_SUMMARIES, &root, &summary)?;
        if batch.len() >= PAGE {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)
}
