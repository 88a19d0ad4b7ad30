//! Reading relations: `/relations` (an event's children, optionally of one relation type and
//! event type, paginated by stream position, with MSC3981 recursion), `/threads` (a room's
//! thread roots, newest activity first), and the bundled aggregations (`unsigned.m.relations`:
//! `m.thread`, `m.replace`, `m.reference`) added to events served to clients. Everything is
//! read from the relations index (`relations.rs`); only events the user may see are returned
//! or counted in, and each read is bounded.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, RoomId, UserId, room_version_rules::RoomVersionRules};
use serde_json::{Value, json};

use super::{
    Pdu, RoomCore, Rooms,
    read::VisibilityMemo,
    relations::{THREAD, relation_of},
};
use crate::{
    Error, Result,
    storage::{
        Db, ScanDirection,
        relation_tables::{RELATIONS, RELATIONS_BY_TYPE, ROOM_THREADS, RelationRow, THREAD_SUMMARIES},
        room_tables::EVENT_META,
    },
};

/// Index rows one `/relations` or `/threads` page reads at most.
const MAX_SCANNED: usize = 1_000;
/// Index rows read per storage scan.
const PAGE: usize = 100;
/// How deep `recurse` follows relations of relations (the spec asks for at least 3).
pub const RECURSION_DEPTH: u64 = 3;
/// Edits looked at, newest first, for a bundled `m.replace`.
const MAX_EDITS: usize = 20;
/// References listed in a bundled `m.reference`.
const MAX_REFERENCES: usize = 100;

/// What `/relations` asks for. Positions are stream positions; `from` is exclusive.
#[derive(Debug, Clone)]
pub struct RelationsQuery {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<u64>,
    /// Backwards: only positions above it; forwards: only positions up to it.
    pub to: Option<u64>,
    pub forward: bool,
    pub limit: usize,
    pub recurse: bool,
}

/// One page of `/relations`: client events with their bundled aggregations.
#[derive(Debug, Clone)]
pub struct RelationsPage {
    pub chunk: Vec<Value>,
    /// The position to continue from, when there may be more.
    pub next: Option<u64>,
}

/// A child found in the index.
struct Child {
    position: u64,
    row: RelationRow,
}

impl RoomCore {
    /// Up to `n` children of `parent` (of one relation type, if given) from position `start`
    /// (inclusive) in `direction`.
    fn children_page(
        &self,
        db: &Db,
        parent: u64,
        rel_type: Option<&str>,
        start: u64,
        direction: ScanDirection,
        n: usize,
    ) -> Result<Vec<Child>> {
        let Some(rel_type) = rel_type else {
            let rows = RELATIONS.scan_from(db, &(parent, start), direction, n, |(p, _)| *p == parent)?;
            return Ok(rows.into_iter().map(|((_, position), row)| Child { position, row }).collect());
        };
        let rows =
            RELATIONS_BY_TYPE.scan_from(db, &(parent, rel_type.to_owned(), start), direction, n, |(p, t, _)| {
                *p == parent && t == rel_type
            })?;
        let mut out = Vec::with_capacity(rows.len());
        for ((_, _, position), _) in rows {
            if let Some(row) = RELATIONS.get(db, &(parent, position))? {
                out.push(Child { position, row });
            }
        }
        Ok(out)
    }

    /// Every child of `parent` and (with `depth` > 1) of its children, to `depth` levels, at
    /// most [`MAX_SCANNED`] in all.
    fn descendants(&self, db: &Db, parent: u64, depth: u64) -> Result<Vec<Child>> {
        let mut found = Vec::new();
        let mut frontier = vec![parent];
        for _ in 0..depth {
            let mut next = Vec::new();
            for node in frontier {
                let budget = MAX_SCANNED.saturating_sub(found.len());
                if budget == 0 {
                    return Ok(found);
                }
                let rows = RELATIONS.scan_from(db, &(node, 0), ScanDirection::Forward, budget, |(p, _)| *p == node)?;
                for ((_, position), row) in rows {
                    next.push(row.child);
                    found.push(Child { position, row });
                }
            }
            frontier = next;
        }
        Ok(found)
    }

    /// An event for a client with its bundled aggregations, if `user` may see it.
    fn visible_client_event(
        &self,
        db: &Db,
        user: &UserId,
        short: u64,
        rules: &RoomVersionRules,
        memo: &mut VisibilityMemo,
    ) -> Result<Option<Value>> {
        let Some(meta) = EVENT_META.get(db, &short)? else { return Ok(None) };
        if !meta.is_served() || !self.can_see_with(db, user, meta.room, &meta, memo)? {
            return Ok(None);
        }
        let pdu = self.served_event(db, user, short, &meta, rules, memo)?;
        let mut event = pdu.to_client_event();
        if let Some(bundle) = self.bundle(db, user, short, &pdu, rules, memo)? {
            attach(&mut event, bundle);
        }
        Ok(Some(event))
    }

    /// The bundled aggregations of an event as `user` sees them, if it has any.
    fn bundle(
        &self,
        db: &Db,
        user: &UserId,
        short: u64,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        memo: &mut VisibilityMemo,
    ) -> Result<Option<Value>> {
        // A redacted event keeps no aggregations.
        if pdu.unsigned_has("redacted_because") {
            return Ok(None);
        }
        let mut relations = serde_json::Map::new();
        if let Some(summary) = THREAD_SUMMARIES.get(db, &short)?
            && summary.count > 0
            && let Some(meta) = EVENT_META.get(db, &summary.latest)?
            && meta.is_served()
            && self.can_see_with(db, user, meta.room, &meta, memo)?
        {
            let latest = self.served_event(db, user, summary.latest, &meta, rules, memo)?;
            let mut latest_event = latest.to_client_event();
            if let Some(edit) = self.edit_of(db, user, summary.latest, &latest, rules, memo)? {
                attach(&mut latest_event, json!({ "m.replace": edit }));
            }
            let participated = pdu.sender == user || summary.participants.contains_key(user.as_str());
            relations.insert(
                THREAD.to_owned(),
                json!({
                    "latest_event": latest_event,
                    "count": summary.count,
                    "current_user_participated": participated,
                }),
            );
        }
        if let Some(edit) = self.edit_of(db, user, short, pdu, rules, memo)? {
            relations.insert("m.replace".to_owned(), edit);
        }
        let references =
            self.children_page(db, short, Some("m.reference"), 0, ScanDirection::Forward, MAX_REFERENCES)?;
        let mut chunk = Vec::new();
        for child in references {
            if let Some(meta) = EVENT_META.get(db, &child.row.child)?
                && meta.is_served()
                && self.can_see_with(db, user, meta.room, &meta, memo)?
            {
                chunk.push(json!({ "event_id": self.interner.event_id(db, child.row.child)? }));
            }
        }
        if !chunk.is_empty() {
            relations.insert("m.reference".to_owned(), json!({ "chunk": chunk }));
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }

    /// The most recent valid replacement of an event (by `origin_server_ts`, then event ID):
    /// same sender, same type, neither a state event, the original not itself an edit, and
    /// with `m.new_content` (unless encrypted).
    fn edit_of(
        &self,
        db: &Db,
        user: &UserId,
        short: u64,
        original: &Pdu,
        rules: &RoomVersionRules,
        memo: &mut VisibilityMemo,
    ) -> Result<Option<Value>> {
        if original.is_state() || relation_of(&original.content_value()).is_some_and(|(t, _)| t == "m.replace") {
            return Ok(None);
        }
        let edits = self.children_page(db, short, Some("m.replace"), u64::MAX, ScanDirection::Reverse, MAX_EDITS)?;
        let mut best: Option<Arc<Pdu>> = None;
        for child in edits {
            if child.row.sender != original.sender.as_str() || child.row.event_type != original.kind.to_string() {
                continue;
            }
            let Some(meta) = EVENT_META.get(db, &child.row.child)? else { continue };
            if !meta.is_served() || !self.can_see_with(db, user, meta.room, &meta, memo)? {
                continue;
            }
            let edit = self.served_event(db, user, child.row.child, &meta, rules, memo)?;
            let content = edit.content_value();
            let encrypted = edit.kind.to_string() == "m.room.encrypted";
            if edit.is_state() || (!encrypted && !content.get("m.new_content").is_some_and(Value::is_object)) {
                continue;
            }
            let newer = best.as_ref().is_none_or(|b| {
                (edit.origin_server_ts, edit.event_id.as_str()) > (b.origin_server_ts, b.event_id.as_str())
            });
            if newer {
                best = Some(edit);
            }
        }
        Ok(best.map(|edit| edit.to_client_event()))
    }
}

/// Puts bundled aggregations into an event's `unsigned.m.relations`.
pub fn attach(event: &mut Value, relations: Value) {
    let Some(object) = event.as_object_mut() else { return };
    let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
    if let Some(unsigned) = unsigned.as_object_mut() {
        unsigned.insert("m.relations".to_owned(), relations);
    }
}

impl Rooms {
    /// A user who is not a member of a room that is not world-readable, or of a room this server
    /// does not know, gets `M_FORBIDDEN` (as Synapse answers both).
    async fn check_room_access(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        if self.version(room_id).await?.is_none()
            || (self.membership(user, room_id).await?.is_none() && !self.is_world_readable(room_id).await?)
        {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        Ok(())
    }

    /// The children of an event `user` may see (`M_NOT_FOUND` if it is unknown, in another
    /// room, or hidden from them), one page of them.
    pub async fn relations(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        query: RelationsQuery,
    ) -> Result<RelationsPage> {
        self.check_room_access(user, room_id).await?;
        let parent = self
            .event_for(user, event_id)
            .await?
            .filter(|e| e.pdu.room_id == room_id)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let user = user.to_owned();
        self.run(move |core, db| {
            let short_parent = core
                .interner
                .short_event(db, &parent.pdu.event_id)?
                .ok_or_else(|| Error::not_found("Event not found"))?;
            let rules = core.rules_of_room(db, parent.meta.room)?;
            let mut memo = VisibilityMemo::default();
            let direction = if query.forward { ScanDirection::Forward } else { ScanDirection::Reverse };
            let within = |position: u64| match (query.from, query.to, query.forward) {
                (Some(from), _, true) if position <= from => false,
                (Some(from), _, false) if position >= from => false,
                (_, Some(to), true) => position <= to,
                (_, Some(to), false) => position > to,
                _ => true,
            };
            let wanted = |row: &RelationRow| {
                query.rel_type.as_ref().is_none_or(|t| *t == row.rel_type)
                    && query.event_type.as_ref().is_none_or(|t| *t == row.event_type)
            };
            let mut chunk = Vec::new();
            let mut last = None;
            let mut take = |core: &RoomCore, child: &Child, chunk: &mut Vec<Value>| -> Result<bool> {
                if wanted(&child.row)
                    && let Some(event) = core.visible_client_event(db, &user, child.row.child, &rules, &mut memo)?
                {
                    chunk.push(event);
                }
                Ok(chunk.len() >= query.limit)
            };
            if query.recurse {
                let mut all = core.descendants(db, short_parent, RECURSION_DEPTH)?;
                all.retain(|child| within(child.position));
                all.sort_by_key(|child| child.position);
                if !query.forward {
                    all.reverse();
                }
                let total = all.len();
                for (i, child) in all.iter().enumerate() {
                    if take(core, child, &mut chunk)? {
                        let next = (i + 1 < total).then_some(child.position);
                        return Ok(RelationsPage { chunk, next });
                    }
                }
                return Ok(RelationsPage { chunk, next: None });
            }
            let mut cursor = match (query.from, query.forward) {
                (Some(from), true) => from.saturating_add(1),
                (Some(0), false) => return Ok(RelationsPage { chunk, next: None }),
                (Some(from), false) => from - 1,
                (None, true) => 0,
                (None, false) => u64::MAX,
            };
            let mut scanned = 0;
            while scanned < MAX_SCANNED {
                let rows = core.children_page(db, short_parent, query.rel_type.as_deref(), cursor, direction, PAGE)?;
                scanned += rows.len();
                for child in &rows {
                    last = Some(child.position);
                    if !within(child.position) {
                        return Ok(RelationsPage { chunk, next: None });
                    }
                    if take(core, child, &mut chunk)? {
                        return Ok(RelationsPage { chunk, next: Some(child.position) });
                    }
                }
                let Some(end) = rows.last() else { break };
                if rows.len() < PAGE {
                    break;
                }
                cursor = match direction {
                    ScanDirection::Forward => end.position.saturating_add(1),
                    ScanDirection::Reverse if end.position == 0 => break,
                    ScanDirection::Reverse => end.position - 1,
                };
            }
            // The scan budget ran out: the client goes on from the last row read.
            let next = if scanned >= MAX_SCANNED { last } else { None };
            Ok(RelationsPage { chunk, next })
        })
        .await
    }

    /// The thread roots of a room `user` may see, newest activity first (with
    /// `participated_only`, only threads they started or replied to), from the activity
    /// position `from` (exclusive); returns them with the position to continue from.
    pub async fn threads(
        &self,
        user: &UserId,
        room_id: &RoomId,
        participated_only: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        self.check_room_access(user, room_id).await?;
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules = core.rules_of_room(db, short_room)?;
            let mut memo = VisibilityMemo::default();
            let mut out = Vec::new();
            let mut cursor = match from {
                Some(0) => return Ok((out, None)),
                Some(from) => (short_room, from - 1, u64::MAX),
                None => (short_room, u64::MAX, u64::MAX),
            };
            let mut scanned = 0;
            while scanned < MAX_SCANNED {
                let rows =
                    ROOM_THREADS.scan_from(db, &cursor, ScanDirection::Reverse, PAGE, |(r, _, _)| *r == short_room)?;
                scanned += rows.len();
                for ((_, position, root), ()) in &rows {
                    if participated_only {
                        let summary = THREAD_SUMMARIES.get(db, root)?.unwrap_or_default();
                        let root_sender = core.event_by_short(db, *root, &rules)?.sender;
                        if root_sender != user && !summary.participants.contains_key(user.as_str()) {
                            continue;
                        }
                    }
                    if let Some(event) = core.visible_client_event(db, &user, *root, &rules, &mut memo)? {
                        out.push(event);
                        if out.len() >= limit {
                            return Ok((out, Some(*position)));
                        }
                    }
                }
                let Some(((_, position, _), ())) = rows.last() else { break };
                if rows.len() < PAGE || *position == 0 {
                    break;
                }
                cursor = (short_room, position - 1, u64::MAX);
                if scanned >= MAX_SCANNED {
                    return Ok((out, Some(*position)));
                }
            }
            Ok((out, None))
        })
        .await
    }

    /// The bundled aggregations of events `user` is being served, by event ID (events without
    /// any are left out).
    pub async fn bundled_relations(
        &self,
        user: &UserId,
        event_ids: Vec<OwnedEventId>,
    ) -> Result<HashMap<String, Value>> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let user = user.to_owned();
        self.run(move |core, db| {
            let mut events = Vec::with_capacity(event_ids.len());
            for event_id in event_ids {
                if let Some(short) = core.interner.short_event(db, &event_id)? {
                    events.push((short, event_id));
                }
            }
            core.bundles_of(db, &user, events)
        })
        .await
    }
}

impl RoomCore {
    /// The bundled aggregations of these events (short ID, event ID) as `user` is served them.
    pub(super) fn bundles_of(
        &self,
        db: &Db,
        user: &UserId,
        events: Vec<(u64, OwnedEventId)>,
    ) -> Result<HashMap<String, Value>> {
        let mut out = HashMap::new();
        let mut memos: HashMap<u64, VisibilityMemo> = HashMap::new();
        for (short, event_id) in events {
            // Most events have no children, and most of those were never a parent.
            if !self.relation_parents.may_contain(short) {
                continue;
            }
            let Some(meta) = EVENT_META.get(db, &short)? else { continue };
            let has_children =
                !RELATIONS.scan_from(db, &(short, 0), ScanDirection::Forward, 1, |(p, _)| *p == short)?.is_empty();
            if !has_children {
                continue;
            }
            let rules = self.rules_of_room(db, meta.room)?;
            let memo = memos.entry(meta.room).or_default();
            let pdu = self.served_event(db, user, short, &meta, &rules, memo)?;
            if let Some(bundle) = self.bundle(db, user, short, &pdu, &rules, memo)? {
                out.insert(event_id.to_string(), bundle);
            }
        }
        Ok(out)
    }
}
