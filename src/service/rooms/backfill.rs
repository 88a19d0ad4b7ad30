//! History prepended to a room: events older than everything the room's timeline holds, as
//! federation brings them when `/messages` runs out of local history (backfill). They are
//! authorised like any event, against their auth events and the state before them, but are
//! never soft-failed against today's state, take no stream position (a sync never shows them)
//! and change neither the room's current state nor its forward extremities. Their order is a
//! count backwards from the room's oldest event (`backfill` table), which `/messages` continues
//! into when it reaches the start of the live timeline.

use std::sync::Arc;

use ruma::{OwnedEventId, RoomId};

use super::{
    Accepted, Outcome, RoomCore, Rooms,
    prepare::{Origin, Prepared},
};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, ScanDirection,
        room_tables::{BACKFILL, EVENT_META, ROOMS, TIMELINE},
    },
};

/// Set on a timeline cursor that points into the backfilled part of a room (the rest of the
/// value is the count backwards); live cursors are stream positions, far below it.
pub const BACKFILL_CURSOR: u64 = 1 << 63;

impl RoomCore {
    /// Stores an event older than the room's timeline. The state before it comes from its prev
    /// events when they are known, or else from `state_before` (event IDs of stored events,
    /// as federation's `/state_ids` gives them); without either it is `MissingEvents`.
    pub(super) fn commit_backfilled(
        &self,
        db: &Db,
        prepared: Prepared,
        state_before: Option<Vec<OwnedEventId>>,
    ) -> Result<Outcome> {
        let Prepared { pdu, rules, .. } = prepared;
        let event_id = pdu.event_id.clone();
        if self.placed_already(db, &pdu)? {
            return Ok(Outcome::AlreadyKnown { event_id });
        }
        let short_room = self.interner.short_room(db, &pdu.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let mut record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if let Some(outcome) = self.auth_events_outcome(db, &rules, &pdu, Origin::Remote)? {
            return Ok(outcome);
        }

        // The state before it: from its prev events, or as given.
        let prev_groups = self.prev_state_groups(db, &pdu)?;
        let mut batch = Batch::new();
        let (before_group, state_before) = match (prev_groups.as_deref(), state_before) {
            (Ok([group]), _) => (*group, self.state.load(db, *group)?),
            (Ok(many), _) if !many.is_empty() => {
                let state = Arc::new(self.resolve(db, &rules, many, None)?);
                (self.state.store(db, &mut batch, None, state.clone())?, state)
            }
            (_, Some(ids)) => match self.state_from_ids(db, &rules, ids)? {
                Ok(state) => {
                    let state = Arc::new(state);
                    (self.state.store(db, &mut batch, None, state.clone())?, state)
                }
                Err(missing) => return Ok(Outcome::MissingEvents { event_id, missing }),
            },
            (Err(missing), None) => return Ok(Outcome::MissingEvents { event_id, missing: missing.clone() }),
            (Ok(_), None) => return Err(super::prepare::bad_event("event has no prev_events")),
        };
        if let Err(reason) = self.check_against(db, &rules, &pdu, &state_before) {
            // The state group it names must be stored with it.
            db.write(std::mem::take(&mut batch))?;
            self.store_rejected(db, &pdu, Some(before_group))?;
            return Ok(Outcome::Rejected { event_id, reason });
        }

        let (short_event, mut meta) =
            self.store_off_timeline(db, &mut batch, &pdu, Some((before_group, before_group)))?;
        if let Some(key) = meta.state_key {
            meta.state_after = self.state.store_change(db, &mut batch, before_group, &[(key, Some(short_event))])?.0;
            batch.put(&EVENT_META, &short_event, &meta)?;
        }
        record.backfilled += 1;
        batch.put(&BACKFILL, &(short_room, record.backfilled), &short_event)?;
        batch.put(&ROOMS, &short_room, &record)?;
        db.write(batch)?;
        self.forget_stored(short_event);
        crate::service::metrics::global().event_persisted("backfill");
        Ok(Outcome::Accepted(Accepted { event_id, position: None, soft_failed: false, durable: Default::default() }))
    }
}

impl Rooms {
    /// Stores an event from another server older than this room's timeline (see the module
    /// comment); `state_before` is the state at it when its prev events are not stored.
    pub async fn accept_backfilled(
        &self,
        room_id: &RoomId,
        json: ruma::CanonicalJsonObject,
        state_before: Option<Vec<OwnedEventId>>,
    ) -> Result<Outcome> {
        let prepared = self.prepare_remote(room_id, None, json).await?;
        let lock = self.lock_for(room_id)?;
        self.run_locked(&lock, move |core, db| core.commit_backfilled(db, prepared, state_before)).await
    }
}

/// Where a room's history runs out: its oldest event, whose prev events are not in the
/// timeline (typical after joining over federation), with the room's version.
#[derive(Debug, Clone)]
pub struct HistoryGap {
    pub oldest: OwnedEventId,
    pub version: ruma::RoomVersionId,
}

impl Rooms {
    /// The gap at the start of a room's history, if its oldest event has prev events this
    /// server does not have in its timeline (unknown, or outliers); `None` when the history
    /// reaches the create event or the room is unknown.
    pub async fn history_gap(&self, room_id: &RoomId) -> Result<Option<HistoryGap>> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let Some((short_room, version)) = core.version_of(db, &room_id)? else { return Ok(None) };
            let Some(record) = ROOMS.get(db, &short_room)? else { return Ok(None) };
            let oldest = match record.backfilled {
                0 => TIMELINE
                    .scan_from(db, &(short_room, 0), ScanDirection::Forward, 1, |(room, _)| *room == short_room)?
                    .first()
                    .map(|(_, short)| *short),
                n => BACKFILL.get(db, &(short_room, n))?,
            };
            let Some(oldest) = oldest else { return Ok(None) };
            let rules = core.rules_of_room(db, short_room)?;
            let pdu = core.event_by_short(db, oldest, &rules)?;
            for prev in &pdu.prev_events {
                let placed = match core.interner.short_event(db, prev)? {
                    Some(short) => EVENT_META.get(db, &short)?.is_some_and(|meta| !meta.is_outlier()),
                    None => false,
                };
                if !placed {
                    return Ok(Some(HistoryGap { oldest: pdu.event_id, version }));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Which of `ids` this server has stored (in the timeline or not), in order.
    pub async fn known_events(&self, ids: Vec<OwnedEventId>) -> Result<Vec<bool>> {
        self.run(move |core, db| {
            ids.iter()
                .map(|id| {
                    Ok(match core.interner.short_event(db, id)? {
                        Some(short) => EVENT_META.contains(db, &short)?,
                        None => false,
                    })
                })
                .collect()
        })
        .await
    }

    /// Whether an event is in the room's timeline (live or backfilled), so backfill skips it.
    pub async fn is_placed(&self, event_id: &ruma::EventId) -> Result<bool> {
        let event_id = event_id.to_owned();
        self.run(move |core, db| {
            Ok(match core.interner.short_event(db, &event_id)? {
                Some(short) => EVENT_META.get(db, &short)?.is_some_and(|meta| !meta.is_outlier()),
                None => false,
            })
        })
        .await
    }
}
