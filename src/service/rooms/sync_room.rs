//! One room of a `/sync` read in a single trip to the storage threads: the user's membership at
//! the last sync, the timeline window, the state the client is owed (chosen from the window),
//! what the window's events are served with (transaction IDs, bundled aggregations, the user's
//! membership at each: [`ServedWith`], which sliding sync reads alone) and the member summary.
//! A woken sync of one busy room used to make eight trips for these; each trip is a hand-over
//! to another thread and back.

use std::collections::HashMap;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::{
    EventPredicate, MemberSummary, RoomCore, Rooms, StateSelection, StoredEvent, SyncStateEvent, TimelineWindow,
};
use crate::{Result, storage::Db};

/// The state a sync wants with a timeline window.
pub struct StateQuery {
    /// The state at this position is compared with the state at `to` (`None`: all of it).
    pub from: Option<u64>,
    pub to: u64,
    pub selection: StateSelection,
    /// Events as stored (`event_format: federation`) instead of the client format.
    pub federation: bool,
}

/// Chooses the state to read once the window is known, and told whether the user has joined
/// since the last sync.
pub type StateChooser = Box<dyn FnOnce(&TimelineWindow, bool) -> StateQuery + Send>;

/// What to read for one room of a sync.
pub struct RoomSyncQuery {
    pub user: OwnedUserId,
    pub room_id: OwnedRoomId,
    /// The last sync's position: the user's membership there says whether they joined since.
    pub since: Option<u64>,
    /// The window `(since, upto]`, at most `limit` events that `wanted` accepts.
    pub upto: u64,
    pub limit: usize,
    pub wanted: EventPredicate,
    pub state: StateChooser,
    /// Bundled aggregations are read (not for `event_format: federation`).
    pub bundles: bool,
    /// The member summary is read (joined rooms).
    pub summary: bool,
}

/// What [`Rooms::sync_room`] read.
pub struct RoomSyncRead {
    /// The user was not joined at `since` (or there is no `since`).
    pub newly_joined: bool,
    pub window: TimelineWindow,
    pub state: Vec<SyncStateEvent>,
    /// What the window's events are served with.
    pub served: ServedWith,
    pub summary: Option<MemberSummary>,
}

/// What a sync serves a timeline window's events with.
pub struct ServedWith {
    /// (device, transaction ID) of the user's own events that have one.
    pub transactions: HashMap<String, (String, String)>,
    /// Bundled aggregations by event ID.
    pub bundles: HashMap<String, Value>,
    /// The user's membership after each event (MSC4115), in the events' order.
    pub memberships: Vec<String>,
}

impl Rooms {
    /// Reads one room of a sync (see the module documentation).
    pub async fn sync_room(&self, query: RoomSyncQuery) -> Result<RoomSyncRead> {
        self.run(move |core, db| {
            let RoomSyncQuery { user, room_id, since, upto, limit, wanted, state, bundles, summary } = query;
            let newly_joined = match since {
                None => true,
                Some(since) => core.membership_at_in(db, &user, &room_id, since)?.as_deref() != Some("join"),
            };
            let window = core.timeline_window_in(db, &user, &room_id, (since, upto), limit, &wanted)?;
            let StateQuery { from, to, selection, federation } = state(&window, newly_joined);
            let state = core.sync_state_events_in(db, &room_id, from, to, &selection, federation)?;
            let served = core.served_with_in(db, &user, &window.events, bundles)?;
            let summary = if summary { Some(core.member_summary_in(db, &room_id, &user)?) } else { None };
            Ok(RoomSyncRead { newly_joined, window, state, served, summary })
        })
        .await
    }

    /// What `user`'s sync serves these events with (see [`ServedWith`]), in one trip; bundled
    /// aggregations only with `bundles` (not for `event_format: federation`).
    pub async fn served_with(&self, user: &UserId, events: Vec<StoredEvent>, bundles: bool) -> Result<ServedWith> {
        let user = user.to_owned();
        self.run(move |core, db| core.served_with_in(db, &user, &events, bundles)).await
    }
}

impl RoomCore {
    fn served_with_in(&self, db: &Db, user: &UserId, events: &[StoredEvent], bundles: bool) -> Result<ServedWith> {
        let own: Vec<String> =
            events.iter().filter(|e| e.pdu.sender == user).map(|e| e.pdu.event_id.to_string()).collect();
        let transactions = if own.is_empty() { HashMap::new() } else { self.transaction_ids_in(db, own)? };
        // Most events were never a parent: those cost nothing.
        let parents: Vec<_> = events
            .iter()
            .filter(|e| bundles && self.relation_parents.may_contain(e.short))
            .map(|e| (e.short, e.pdu.event_id.clone()))
            .collect();
        let bundles = if parents.is_empty() { HashMap::new() } else { self.bundles_of(db, user, parents)? };
        let groups = events.iter().map(|e| e.meta.state_after).collect();
        let memberships = self.memberships_after_in(db, user, groups)?;
        Ok(ServedWith { transactions, bundles, memberships })
    }
}
