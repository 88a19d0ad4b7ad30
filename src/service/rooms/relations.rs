//! The relations index, written where events are committed (`accept.rs`): each event with an
//! `m.relates_to` naming an event of the same room gets a row under its parent (all relations,
//! and per relation type), and an `m.thread` child updates its thread's summary. A redaction
//! that applies to a child (its sender redacting their own event, or one with the power to
//! redact others') removes the child's rows and takes it out of its thread's summary, in the
//! redaction's batch, so aggregations never count redacted events.

use http::StatusCode;
use ruma::{EventId, api::error::ErrorKind, events::TimelineEventType, room_version_rules::RoomVersionRules};
use serde_json::Value;

use super::{Pdu, RoomCore, state::ShortStateMap};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, ScanDirection,
        relation_tables::{
            self, ANNOTATIONS, RELATIONS, RELATIONS_BY_TYPE, ROOM_THREADS, RelationRow, THREAD_SUMMARIES,
        },
        room_tables::EVENT_META,
    },
};

pub(super) const THREAD: &str = "m.thread";

/// The relation an event's content declares: (relation type, parent event ID).
pub(super) fn relation_of(content: &Value) -> Option<(String, ruma::OwnedEventId)> {
    let (rel_type, parent) = relation_tables::relation_of(content)?;
    Some((rel_type, EventId::parse(parent).ok()?))
}

impl RoomCore {
    /// The spec's checks of a relation a local client sends (under the room's lock): a thread
    /// may not start from an event that itself relates to another (`400 M_UNKNOWN`), and a user
    /// may not send a second identical annotation of an event (`400 M_DUPLICATE_ANNOTATION`)
    /// unless the first was redacted.
    pub(super) fn check_new_relation(&self, db: &Db, pdu: &Pdu, rules: &RoomVersionRules) -> Result<()> {
        let content = pdu.content_value();
        let Some((rel_type, parent)) = relation_of(&content) else { return Ok(()) };
        let Some(short_parent) = self.interner.short_event(db, &parent)? else { return Ok(()) };
        if rel_type == THREAD
            && EVENT_META.get(db, &short_parent)?.is_some()
            && relation_tables::relation_of(&self.event_by_short(db, short_parent, rules)?.content_value()).is_some()
        {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Cannot start a thread from an event with a relation",
            ));
        }
        if let Some(key) = relation_tables::annotation_key(&content)
            && ANNOTATIONS.contains(db, &(short_parent, pdu.sender.to_string(), pdu.kind.to_string(), db.term(&key)))?
        {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::DuplicateAnnotation,
                "You already sent this annotation of that event",
            ));
        }
        Ok(())
    }

    /// Indexes a committed timeline event under the event it relates to, if that event is known
    /// and in the same room (inside the event's batch; the room's lock is held).
    pub(super) fn index_relation(
        &self,
        db: &Db,
        batch: &mut Batch,
        (short_event, pdu): (u64, &Pdu),
        short_room: u64,
        position: u64,
    ) -> Result<()> {
        let content = pdu.content_value();
        let Some((rel_type, parent)) = relation_of(&content) else { return Ok(()) };
        let Some(short_parent) = self.interner.short_event(db, &parent)? else { return Ok(()) };
        if short_parent == short_event || EVENT_META.get(db, &short_parent)?.is_none_or(|meta| meta.room != short_room)
        {
            return Ok(());
        }
        let row = RelationRow {
            child: short_event,
            rel_type: rel_type.clone(),
            event_type: pdu.kind.to_string(),
            sender: pdu.sender.to_string(),
        };
        batch.put(&RELATIONS, &(short_parent, position), &row)?;
        // Before the batch is written (see `short_sets.rs`).
        self.relation_parents.add(short_parent);
        batch.put(&RELATIONS_BY_TYPE, &(short_parent, rel_type.clone(), position), &short_event)?;
        if let Some(key) = relation_tables::annotation_key(&content) {
            let key = db.term(&key);
            batch.put(&ANNOTATIONS, &(short_parent, row.sender.clone(), row.event_type.clone(), key), &short_event)?;
        }
        if rel_type == THREAD {
            let mut summary = THREAD_SUMMARIES.get(db, &short_parent)?.unwrap_or_default();
            if summary.count > 0 {
                batch.delete(&ROOM_THREADS, &(short_room, summary.latest_position, short_parent));
            }
            summary.room = short_room;
            summary.count += 1;
            summary.latest = short_event;
            summary.latest_position = position;
            *summary.participants.entry(pdu.sender.to_string()).or_default() += 1;
            batch.put(&ROOM_THREADS, &(short_room, position, short_parent), &())?;
            batch.put(&THREAD_SUMMARIES, &short_parent, &summary)?;
        }
        Ok(())
    }

    /// Takes the event a redaction redacts out of the relations index, when the redaction
    /// applies (judged as serving does, by the state after the redaction, `state`).
    pub(super) fn unindex_redacted(
        &self,
        db: &Db,
        batch: &mut Batch,
        redaction: &Pdu,
        state: &ShortStateMap,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let Some(target) = &redaction.redacts else { return Ok(()) };
        let Some(short_target) = self.interner.short_event(db, target)? else { return Ok(()) };
        let Some(meta) = EVENT_META.get(db, &short_target)? else { return Ok(()) };
        let Some(position) = meta.position else { return Ok(()) };
        let child = self.event_by_short(db, short_target, rules)?;
        let content = child.content_value();
        let Some((_, parent)) = relation_of(&content) else { return Ok(()) };
        let Some(short_parent) = self.interner.short_event(db, &parent)? else { return Ok(()) };
        if RELATIONS.get(db, &(short_parent, position))?.is_none_or(|row| row.child != short_target) {
            return Ok(());
        }
        if redaction.sender != child.sender
            && !self.power_levels_in(db, state, rules)?.user_can_redact_event_of_other(&redaction.sender)
        {
            return Ok(());
        }
        self.unindex_relation(db, batch, short_target, position, &child)
    }

    /// Takes an event out of the relations index (it is redacted or pruned), if it is there.
    pub(super) fn unindex_relation(
        &self,
        db: &Db,
        batch: &mut Batch,
        short_target: u64,
        position: u64,
        child: &Pdu,
    ) -> Result<()> {
        let content = child.content_value();
        let Some((rel_type, parent)) = relation_of(&content) else { return Ok(()) };
        let Some(short_parent) = self.interner.short_event(db, &parent)? else { return Ok(()) };
        if RELATIONS.get(db, &(short_parent, position))?.is_none_or(|row| row.child != short_target) {
            return Ok(());
        }
        batch.delete(&RELATIONS, &(short_parent, position));
        batch.delete(&RELATIONS_BY_TYPE, &(short_parent, rel_type.clone(), position));
        if let Some(key) = relation_tables::annotation_key(&content) {
            batch
                .delete(&ANNOTATIONS, &(short_parent, child.sender.to_string(), child.kind.to_string(), db.term(&key)));
        }
        if rel_type != THREAD {
            return Ok(());
        }
        let Some(mut summary) = THREAD_SUMMARIES.get(db, &short_parent)? else { return Ok(()) };
        summary.count = summary.count.saturating_sub(1);
        let sender = child.sender.to_string();
        if let Some(sent) = summary.participants.get_mut(&sender) {
            *sent = sent.saturating_sub(1);
            if *sent == 0 {
                summary.participants.remove(&sender);
            }
        }
        batch.delete(&ROOM_THREADS, &(summary.room, summary.latest_position, short_parent));
        if summary.count == 0 {
            batch.delete(&THREAD_SUMMARIES, &short_parent);
            return Ok(());
        }
        if summary.latest == short_target {
            // The newest reply left: the one before it (the batch has not removed its row yet).
            let start = (short_parent, THREAD.to_owned(), position.saturating_sub(1));
            let previous = RELATIONS_BY_TYPE
                .scan_from(db, &start, ScanDirection::Reverse, 2, |(p, t, _)| *p == short_parent && t == THREAD)?;
            match previous.into_iter().find(|(_, child)| *child != short_target) {
                Some(((_, _, at), child)) => {
                    summary.latest = child;
                    summary.latest_position = at;
                }
                None => {
                    batch.delete(&THREAD_SUMMARIES, &short_parent);
                    return Ok(());
                }
            }
        }
        batch.put(&ROOM_THREADS, &(summary.room, summary.latest_position, short_parent), &())?;
        batch.put(&THREAD_SUMMARIES, &short_parent, &summary)?;
        Ok(())
    }
}

/// Whether an event type is a redaction (for the commit path).
pub(super) fn is_redaction(kind: &TimelineEventType) -> bool {
    *kind == TimelineEventType::RoomRedaction
}
