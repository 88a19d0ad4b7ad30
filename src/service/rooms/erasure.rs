//! Erased users' events. A user erased at deactivation (GDPR article 17) keeps their events in
//! the rooms' graphs, but they are served redacted to anyone who was not joined to the room
//! when an event was sent, as Synapse does (`synapse/visibility.py`); members who were there
//! still read them. Other servers are always served them redacted (`federation_read.rs`).
//!
//! An admin may go further and *prune*: every event the user sent is rewritten on disk to its
//! redacted form (the room version's redaction algorithm keeps the hashes and signatures
//! valid, so the event stays in the DAG and other servers still accept it), and every copy
//! derived from its content goes: search postings, relation and thread rows, the
//! `unsigned.prev_content` later state events copied from it, pending application service
//! transactions, and the in-memory caches built from room state. Purges of history use the
//! same machinery ([`PruneMode::Remove`]), which also takes the events out of the timeline.

use std::{collections::HashSet, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    room_version_rules::RoomVersionRules,
};

use super::{Pdu, RoomCore, Rooms, read::VisibilityMemo};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, ScanDirection,
        appservice_tables::APPSERVICE_SENDERS,
        erasure_tables::ERASED_USERS,
        room_tables::{BACKFILL, EVENT_META, EVENT_STREAM, EventMeta, PDUS, TIMELINE, TIMELINE_BY_TS, USER_ROOMS},
    },
};

/// Timeline rows pruned under one hold of the room's write lock.
const PRUNE_PAGE: usize = 200;

/// Which events of a room to prune.
pub type PrunePick = dyn Fn(&Pdu, &EventMeta) -> bool + Send + Sync;

/// What pruning does to an event it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMode {
    /// Rewrite it to its redacted form: it stays in the timeline (an erased user's events).
    Redact,
    /// Rewrite it to its redacted form and take it out of the timeline (a purge of history):
    /// only its bare form stays, for the room's graph.
    Remove,
}

impl RoomCore {
    /// Whether `sender` was erased (through `memo`, one read per sender).
    fn sender_erased(&self, db: &Db, sender: &UserId, memo: &mut VisibilityMemo) -> Result<bool> {
        if let Some(erased) = memo.erased.get(sender) {
            return Ok(*erased);
        }
        let erased = self.erased_sender(db, sender)?;
        memo.erased.insert(sender.to_owned(), erased);
        Ok(erased)
    }

    /// Whether `sender` is a local user who was erased.
    pub(super) fn erased_sender(&self, db: &Db, sender: &UserId) -> Result<bool> {
        Ok(sender.server_name() == self.server_name && ERASED_USERS.contains(db, &sender.to_owned())?)
    }

    /// An event as `viewer` is served it, once history visibility let them see it: as clients
    /// see it (redactions applied), and pruned to its redacted form when its sender was erased
    /// and `viewer` was not joined to the room when it was sent. Shared with the event cache when
    /// served unchanged (no copy).
    pub(super) fn served_event(
        &self,
        db: &Db,
        viewer: &UserId,
        short: u64,
        meta: &EventMeta,
        rules: &RoomVersionRules,
        memo: &mut VisibilityMemo,
    ) -> Result<Arc<Pdu>> {
        let pdu = self.shared_event_for_client(db, short, rules)?;
        if pdu.sender == viewer || !self.sender_erased(db, &pdu.sender, memo)? {
            return Ok(pdu);
        }
        let before = meta.state_before.unwrap_or(meta.state_after);
        if self.membership_in_group(db, viewer, before, memo)?.as_deref() == Some("join") {
            return Ok(pdu);
        }
        pruned(&pdu, rules).map(Arc::new)
    }

    /// Rewrites one stored event to its redacted form and removes what was derived from its
    /// content (search postings, relation rows); with [`PruneMode::Remove`] its timeline rows
    /// too (`row` is its live position, or its backfill number). One batch.
    fn prune_stored_event(
        &self,
        db: &Db,
        (short, row, backfilled): (u64, u64, bool),
        pdu: &Pdu,
        rules: &RoomVersionRules,
        mode: PruneMode,
    ) -> Result<()> {
        let json = pdu.json();
        let redacted = ruma::canonical_json::redact(json.clone().into_owned(), &rules.redaction, None)
            .map_err(|e| Error::internal(format!("cannot redact event: {e}")))?;
        let mut batch = Batch::new();
        if redacted != *json {
            super::search::unindex_event(db, &mut batch, short, pdu)?;
            if let Some(position) = EVENT_META.get(db, &short)?.and_then(|meta| meta.position) {
                self.unindex_relation(db, &mut batch, short, position, pdu)?;
            }
            batch.put(&PDUS, &short, &raw(&redacted)?)?;
        }
        if mode == PruneMode::Remove {
            let Some(short_room) = EVENT_META.get(db, &short)?.map(|meta| meta.room) else { return Ok(()) };
            if backfilled {
                batch.delete(&BACKFILL, &(short_room, row));
            } else {
                batch.delete(&TIMELINE, &(short_room, row));
                batch.delete(&TIMELINE_BY_TS, &(short_room, u64::from(pdu.origin_server_ts.get()), row));
                batch.delete(&EVENT_STREAM, &row);
            }
        }
        db.write(batch)?;
        self.forget_stored(short);
        Ok(())
    }

    /// Redacts the `unsigned.prev_content` a state event copied from the event it replaced, when
    /// `prune` picks that event.
    fn scrub_prev_content(
        &self,
        db: &Db,
        short: u64,
        pdu: &Pdu,
        prune: &PrunePick,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let json = pdu.json();
        let Some(CanonicalJsonValue::Object(unsigned)) = json.get("unsigned") else { return Ok(()) };
        let Some(CanonicalJsonValue::String(replaced)) = unsigned.get("replaces_state") else { return Ok(()) };
        let Ok(replaced) = OwnedEventId::try_from(replaced.as_str()) else { return Ok(()) };
        let Some(short_replaced) = self.interner.short_event(db, &replaced)? else { return Ok(()) };
        let Some(meta) = EVENT_META.get(db, &short_replaced)? else { return Ok(()) };
        if !PDUS.contains(db, &short_replaced)? || !prune(&self.event_by_short(db, short_replaced, rules)?, &meta) {
            return Ok(());
        }
        let Some(CanonicalJsonValue::Object(prev)) = unsigned.get("prev_content") else { return Ok(()) };
        let mut content = prev.clone();
        ruma::canonical_json::redact_content_in_place(&mut content, &rules.redaction, pdu.kind.to_string());
        if &content == prev {
            return Ok(());
        }
        let mut json = json.into_owned();
        if let Some(CanonicalJsonValue::Object(unsigned)) = json.get_mut("unsigned") {
            unsigned.insert("prev_content".to_owned(), CanonicalJsonValue::Object(content));
        }
        let mut batch = Batch::new();
        batch.put(&PDUS, &short, &raw(&json)?)?;
        db.write(batch)?;
        self.forget_stored(short);
        Ok(())
    }

    /// Prunes one page of a room's timeline (live rows from `cursor` forwards, or backfilled
    /// ones when `backfill`): the events `prune` picks, and the prev content other state events
    /// copied from them. Returns the rows read, and adds the pruned events to `pruned`.
    fn prune_page(
        &self,
        db: &Db,
        short_room: u64,
        (backfill, cursor): (bool, u64),
        (prune, mode): (&PrunePick, PruneMode),
        pruned: &mut HashSet<OwnedEventId>,
    ) -> Result<Vec<u64>> {
        let rules = self.rules_of_room(db, short_room)?;
        let table = if backfill { &BACKFILL } else { &TIMELINE };
        let rows: Vec<(u64, u64)> = table
            .scan_from(db, &(short_room, cursor), ScanDirection::Forward, PRUNE_PAGE, |(r, _)| *r == short_room)?
            .into_iter()
            .map(|((_, row), short)| (row, short))
            .collect();
        for (row, short) in &rows {
            let (Some(meta), true) = (EVENT_META.get(db, short)?, PDUS.contains(db, short)?) else { continue };
            let pdu = self.event_by_short(db, *short, &rules)?;
            if prune(&pdu, &meta) {
                self.prune_stored_event(db, (*short, *row, backfill), &pdu, &rules, mode)?;
                pruned.insert(pdu.event_id.clone());
            } else if pdu.state_key.is_some() {
                self.scrub_prev_content(db, *short, &pdu, prune, &rules)?;
            }
        }
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }
}

/// The redacted form of an event, without `redacted_because` (what an erased sender's event
/// looks like).
pub(super) fn pruned(pdu: &Pdu, rules: &RoomVersionRules) -> Result<Pdu> {
    let redacted = ruma::canonical_json::redact(pdu.json().into_owned(), &rules.redaction, None)
        .map_err(|e| Error::internal(format!("cannot redact event: {e}")))?;
    Pdu::from_stored(&raw(&redacted)?, pdu.event_id.clone(), rules).map_err(Error::internal)
}

fn raw(json: &CanonicalJsonObject) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(json).map_err(|e| Error::internal(e.to_string()))
}

impl Rooms {
    /// Prunes on disk the events of one room that `prune` picks (see the module documentation),
    /// page by page under the room's write lock. Returns the events pruned.
    pub async fn prune_room(
        &self,
        room_id: &RoomId,
        mode: PruneMode,
        prune: impl Fn(&Pdu, &EventMeta) -> bool + Send + Sync + 'static,
    ) -> Result<HashSet<OwnedEventId>> {
        let prune: Arc<PrunePick> = Arc::new(prune);
        let room = room_id.to_owned();
        let Some(short_room) = self.run(move |core, db| core.interner.short_room(db, &room)).await? else {
            return Ok(HashSet::new());
        };
        let lock = self.lock_for(room_id)?;
        let mut pruned = HashSet::new();
        for backfill in [true, false] {
            let mut cursor = if backfill { 1 } else { 0 };
            loop {
                let (prune, mut seen) = (prune.clone(), std::mem::take(&mut pruned));
                let (rows, seen) = self
                    .run_locked(&lock, move |core, db| {
                        let rows = core.prune_page(db, short_room, (backfill, cursor), (&*prune, mode), &mut seen)?;
                        Ok((rows, seen))
                    })
                    .await?;
                pruned = seen;
                let Some(last) = rows.last() else { break };
                cursor = last.saturating_add(1);
                if rows.len() < PRUNE_PAGE {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// A room's newest live timeline position, and the position of `event` in it (`404` when
    /// the event is not in this room's live timeline).
    pub async fn timeline_positions(
        &self,
        room_id: &RoomId,
        event: Option<OwnedEventId>,
    ) -> Result<(u64, Option<u64>)> {
        let room = room_id.to_owned();
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let newest = TIMELINE
                .scan_from(db, &(short_room, u64::MAX), ScanDirection::Reverse, 1, |(r, _)| *r == short_room)?
                .first()
                .map_or(0, |((_, position), _)| *position);
            let Some(event) = event else { return Ok((newest, None)) };
            let not_here = || Error::not_found("That event is not in the room's timeline");
            let short = core.interner.short_event(db, &event)?.ok_or_else(not_here)?;
            let meta = EVENT_META.get(db, &short)?.filter(|m| m.room == short_room).ok_or_else(not_here)?;
            Ok((newest, Some(meta.position.ok_or_else(not_here)?)))
        })
        .await
    }

    /// Prunes on disk every event `user` sent, in every room they were ever in, and the copies
    /// of them in pending application service transactions; forgets the caches built from room
    /// state. Returns how many events were pruned. The caller compacts the database after.
    pub async fn prune_events_of(&self, user: &UserId) -> Result<usize> {
        let owner = user.to_owned();
        let rooms: Vec<OwnedRoomId> = self
            .run(move |_, db| Ok(USER_ROOMS.scan_prefix(db, &(owner,))?.into_iter().map(|((_, r), _)| r).collect()))
            .await?;
        let mut pruned = HashSet::new();
        for room in rooms {
            let sender: OwnedUserId = user.to_owned();
            pruned.extend(self.prune_room(&room, PruneMode::Redact, move |pdu, _| pdu.sender == sender).await?);
        }
        let count = pruned.len();
        self.forget_pruned(pruned).await?;
        Ok(count)
    }

    /// Replaces pruned events in pending application service transactions by their pruned
    /// form, and clears the caches built from room state.
    pub async fn forget_pruned(&self, pruned: HashSet<OwnedEventId>) -> Result<()> {
        self.core.summaries.clear();
        self.core.push_facts.clear();
        self.core.events.clear();
        if pruned.is_empty() {
            return Ok(());
        }
        self.run(move |core, db| {
            let mut batch = Batch::new();
            for (id, mut sender) in APPSERVICE_SENDERS.all(db)? {
                let Some(pending) = sender.pending.as_mut() else { continue };
                let mut changed = false;
                for event in pending.events.iter_mut() {
                    let Some(event_id) = event.get("event_id").and_then(|v| v.as_str()) else { continue };
                    let Ok(event_id) = OwnedEventId::try_from(event_id) else { continue };
                    if !pruned.contains(&event_id) {
                        continue;
                    }
                    let Some(short) = core.interner.short_event(db, &event_id)? else { continue };
                    let Some(meta) = EVENT_META.get(db, &short)? else { continue };
                    let rules = core.rules_of_room(db, meta.room)?;
                    *event = core.event_for_client(db, short, &rules)?.to_client_event();
                    changed = true;
                }
                if changed {
                    batch.put(&APPSERVICE_SENDERS, &id, &sender)?;
                }
            }
            Ok(db.write(batch)?)
        })
        .await
    }
}
