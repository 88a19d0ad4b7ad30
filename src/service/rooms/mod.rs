//! Rooms: the signed event graph. Every event, built here or (later) received over federation,
//! goes through [`accept`](RoomCore::accept); this module holds the shared core and the async
//! API the handlers call. Writes to one room are serialised by a per-room lock; the work itself
//! runs on the storage threads. A client's message is written under the lock without a sync and
//! answered after a shared sync outside it (`storage/group_commit.rs`; which events qualify is
//! `accept::deferrable`).

mod accept;
pub mod aliases;
pub(crate) mod auth_chain;
mod backfill;
mod build;
mod context;
pub mod create;
mod current_state;
mod device_tracking;
mod directory;
mod erasure;
mod event_cache;
pub mod federation_join;
pub mod federation_read;
pub mod hierarchy;
mod media_refs;
pub mod membership;
mod notify;
pub mod out_of_band;
pub mod owned_state;
pub mod pdu;
pub mod power;
mod prepare;
pub mod public;
mod reach;
mod read;
mod redaction;
mod relations;
pub mod relations_read;
pub mod reports;
mod resolve;
mod search;
mod servers;
mod short;
mod short_sets;
pub mod sliding_read;
mod state;
mod stream;
pub mod stream_read;
mod sync_read;
mod sync_room;
mod upgrade;
mod user_rooms;
pub mod versions;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId, api::error::ErrorKind,
    room_version_rules::RoomVersionRules,
};

pub use accept::{Accepted, Outcome, Transaction};
pub use backfill::HistoryGap;
pub use build::NewEvent;
pub use erasure::PruneMode;
pub use pdu::Pdu;
pub use prepare::Prepared;
pub use read::{PositionReader, StoredEvent, TimelineScan};
pub use relations_read::{RECURSION_DEPTH, RelationsPage, RelationsQuery, attach as attach_relations};
pub use search::{SearchHit, SearchOrder, SearchPage, SearchQuery};
pub use servers::LocalEvent;
pub use sync_read::{EventPredicate, MemberSummary, MembershipChange, StateSelection, SyncStateEvent, TimelineWindow};
pub use sync_room::{RoomSyncQuery, RoomSyncRead, ServedWith, StateChooser, StateQuery};
pub use versions::ROOM_VERSIONS;

/// The `membership` of a member event.
pub fn membership_of(pdu: &Pdu) -> String {
    accept::membership_in(&pdu.content)
}

use super::{federation::keys::RemoteKeys, server_keys::ServerKeys};
use crate::{
    Error, Result,
    storage::{
        Db, WriteLock,
        room_tables::{PDUS, ROOMS, TRANSACTIONS},
    },
};

/// Room versions kept in memory per generation of their cache.
const ROOM_VERSIONS_CACHED: usize = 10_000;

/// What the blocking work shares: storage, keys, interned ids and state groups.
pub struct RoomCore {
    db: Db,
    server_name: OwnedServerName,
    keys: Arc<ServerKeys>,
    interner: short::Interner,
    state: state::StateGroups,
    /// The auth DAG's edges and a bounded cache of auth chains.
    auth_chains: auth_chain::AuthChains,
    /// Stream positions of the timeline.
    positions: Arc<stream::StreamAllocator>,
    /// Woken when an event queued a notification for a push gateway.
    push_wake: Arc<tokio::sync::Notify>,
    /// Push evaluation's facts per room (see `notify.rs`).
    push_facts: notify::PushFactsCache,
    /// Room summaries per current state group (see `sync_read.rs`).
    summaries: sync_read::SummaryCache,
    /// Parsed stored events, bounded in bytes (see `event_cache.rs`).
    events: event_cache::EventCache,
    /// Events some redaction names, and events with relations (see `short_sets.rs`).
    redacted_targets: short_sets::ShortSet,
    relation_parents: short_sets::ShortSet,
    /// Push rules and pushers per user, for evaluation at write time (shared with the services
    /// that change them, which forget a user's entry).
    push_profiles: Arc<crate::service::push::recipients::PushProfiles>,
    /// The newest `origin_server_ts` given to a create event (see `build.rs`).
    last_create_ts: std::sync::atomic::AtomicU64,
    /// Servers joined per state group, for the federation sender (see `servers.rs`).
    servers: servers::ServerCache,
    /// Local users' room lists (see `user_rooms.rs`).
    user_rooms: user_rooms::UserRoomsCache,
    /// Rooms' versions by short room id (a room's version never changes), read on nearly every
    /// event served or written.
    versions: crate::service::recent::RecentMap<u64, RoomVersionId>,
}

pub struct Rooms {
    core: Arc<RoomCore>,
    locks: Mutex<HashMap<OwnedRoomId, WriteLock>>,
    /// Serialises alias changes so an alias is never given twice.
    alias_lock: WriteLock,
    /// Upgrades in progress or just done, so one room is upgraded once per request burst.
    upgrades: upgrade::RecentUpgrades,
    /// Other servers' signing keys, which events from them are verified with.
    remote_keys: Arc<RemoteKeys>,
}

impl RoomCore {
    fn rules_of_room(&self, db: &Db, short_room: u64) -> Result<RoomVersionRules> {
        let version = self.room_version(db, short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        crate::service::rooms::versions::rules(&version)
            .ok_or_else(|| Error::internal("unsupported room version stored"))
    }

    /// A room's version, from memory once read from the committed store (never from a staged
    /// view of a room being created, which may still be dropped).
    fn room_version(&self, db: &Db, short_room: u64) -> Result<Option<RoomVersionId>> {
        if let Some(version) = self.versions.get(&short_room) {
            return Ok(Some(version));
        }
        let Some(record) = ROOMS.get(db, &short_room)? else { return Ok(None) };
        if db.same_store(&self.db) {
            self.versions.insert(short_room, record.version.clone());
        }
        Ok(Some(record.version))
    }

    fn event_by_short(&self, db: &Db, short: u64, rules: &RoomVersionRules) -> Result<Pdu> {
        Ok((*self.shared_event_by_short(db, short, rules)?).clone())
    }

    /// The stored event, parsed once and then served from [`event_cache::EventCache`] until a
    /// writer rewrites it (see [`forget_stored`](Self::forget_stored)).
    fn shared_event_by_short(&self, db: &Db, short: u64, rules: &RoomVersionRules) -> Result<Arc<Pdu>> {
        self.shared_event_with(db, short, || Ok(rules.clone()))
    }

    /// [`shared_event_by_short`](Self::shared_event_by_short) where the room's rules are looked
    /// up only when the event must be parsed (not for a cached one).
    fn shared_event_with(
        &self,
        db: &Db,
        short: u64,
        rules: impl FnOnce() -> Result<RoomVersionRules>,
    ) -> Result<Arc<Pdu>> {
        // A hit reads nothing from storage; a miss takes its ticket before the read.
        let ticket = match self.events.lookup(short) {
            event_cache::Lookup::Hit(pdu) => return Ok(pdu),
            event_cache::Lookup::Miss(ticket) => ticket,
        };
        let json = PDUS.get(db, &short)?.ok_or_else(|| Error::internal(format!("event {short} missing")))?;
        let event_id = self.interner.event_id(db, short)?;
        let pdu = Pdu::from_stored(&json, event_id, &rules()?)
            .map_err(|e| Error::internal(format!("stored event is invalid: {e}")))?;
        let pdu = Arc::new(pdu);
        self.events.put(short, &json, pdu.clone(), ticket);
        Ok(pdu)
    }

    /// [`event_by_id`](Self::event_by_id), shared with the event cache (no copy).
    fn shared_event_by_id(&self, db: &Db, event_id: &EventId, rules: &RoomVersionRules) -> Result<Option<Arc<Pdu>>> {
        let Some(short) = self.interner.short_event(db, event_id)? else { return Ok(None) };
        // A cached event is stored (`PDUS` rows are rewritten, never removed), so a hit needs
        // no read: the auth check of every event in a v12 room asks for the create event so.
        if let event_cache::Lookup::Hit(pdu) = self.events.lookup(short) {
            return Ok(Some(pdu));
        }
        if PDUS.contains(db, &short)? { Ok(Some(self.shared_event_by_short(db, short, rules)?)) } else { Ok(None) }
    }

    /// Called by every writer of `PDUS` after its batch is written: the stored form of `short`
    /// may have changed (an outlier or rejected event stored again, erasure, pruning), so the
    /// event cache must read it again.
    fn forget_stored(&self, short: u64) {
        self.events.forget(short);
    }

    /// The stored event `event_id` (a copy), if this server has it.
    fn event_by_id(&self, db: &Db, event_id: &EventId, rules: &RoomVersionRules) -> Result<Option<Pdu>> {
        Ok(self.shared_event_by_id(db, event_id, rules)?.map(|pdu| (*pdu).clone()))
    }

    /// The event a client transaction already produced.
    fn transaction_event(&self, db: &Db, sender: &UserId, device: &str, key: &str) -> Result<Option<OwnedEventId>> {
        let key = (sender.to_owned(), device.to_owned(), key.to_owned());
        TRANSACTIONS
            .get(db, &key)?
            .map(|id| OwnedEventId::try_from(id).map_err(|e| Error::internal(e.to_string())))
            .transpose()
    }

    fn version_of(&self, db: &Db, room_id: &RoomId) -> Result<Option<(u64, RoomVersionId)>> {
        let Some(short) = self.interner.short_room(db, room_id)? else { return Ok(None) };
        Ok(self.room_version(db, short)?.map(|version| (short, version)))
    }
}

impl Rooms {
    // Each argument is a distinct shared service or setting; a struct for them would be one more
    // type used once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        keys: Arc<ServerKeys>,
        notifier: Arc<crate::service::notifier::Notifier>,
        push_wake: Arc<tokio::sync::Notify>,
        push_profiles: Arc<crate::service::push::recipients::PushProfiles>,
        remote_keys: Arc<RemoteKeys>,
        event_cache_bytes: usize,
    ) -> Result<Self> {
        let redacted_targets = short_sets::ShortSet::load(&db, &crate::storage::room_tables::REDACTIONS)?;
        let relation_parents = short_sets::ShortSet::load(&db, &crate::storage::relation_tables::RELATIONS)?;
        let core = RoomCore {
            interner: short::Interner::new(&db)?,
            state: state::StateGroups::new(&db)?,
            auth_chains: auth_chain::AuthChains::new(),
            positions: Arc::new(stream::StreamAllocator::new(&db, notifier)?),
            db,
            server_name,
            keys,
            push_wake,
            push_facts: notify::PushFactsCache::default(),
            summaries: Default::default(),
            events: event_cache::EventCache::new(event_cache_bytes),
            redacted_targets,
            relation_parents,
            push_profiles,
            last_create_ts: std::sync::atomic::AtomicU64::new(0),
            servers: Default::default(),
            user_rooms: Default::default(),
            versions: crate::service::recent::RecentMap::new(ROOM_VERSIONS_CACHED),
        };
        Ok(Self {
            core: Arc::new(core),
            locks: Mutex::new(HashMap::new()),
            alias_lock: WriteLock::new(),
            upgrades: upgrade::RecentUpgrades::default(),
            remote_keys,
        })
    }

    fn lock_for(&self, room_id: &RoomId) -> Result<WriteLock> {
        let mut locks = self.locks.lock().map_err(|_| Error::internal("poisoned room locks"))?;
        if locks.len() > 10_000 {
            locks.retain(|_, lock| lock.is_shared());
        }
        Ok(locks.entry(room_id.to_owned()).or_default().clone())
    }

    /// Runs blocking work on the room core.
    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&RoomCore, &Db) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let core = self.core.clone();
        self.core.db.run(move |db| work(&core, db)).await
    }

    /// Runs blocking work on the room core while holding `lock` (see [`WriteLock`]).
    async fn run_locked<R: Send + 'static>(
        &self,
        lock: &WriteLock,
        work: impl FnOnce(&RoomCore, &Db) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let core = self.core.clone();
        lock.run(&self.core.db, move |db| work(&core, db)).await
    }

    /// Builds, signs and accepts an event from a local user into an existing room.
    pub async fn send(&self, room_id: &RoomId, sender: &UserId, event: NewEvent) -> Result<Accepted> {
        self.send_with_prev_events(room_id, sender, event, None).await
    }

    /// Like [`send`](Self::send), on given prev events instead of the forward extremities: how a
    /// fork arrives. Used by tests of concurrent events and, later, by federation.
    pub async fn send_with_prev_events(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        prev_events: Option<Vec<OwnedEventId>>,
    ) -> Result<Accepted> {
        self.build_and_accept(room_id, sender, event, prev_events, None).await
    }

    /// Like [`send`](Self::send), for a client request with a transaction ID: the idempotency
    /// record and the event's transaction ID are written in the event's own batch.
    pub async fn send_with_transaction(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        transaction: Transaction,
    ) -> Result<Accepted> {
        self.build_and_accept(room_id, sender, event, None, Some(transaction)).await
    }

    /// Builds a local event under the room's lock and accepts it, with its transaction record
    /// (if any) in the event's own batch.
    async fn build_and_accept(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        prev_events: Option<Vec<OwnedEventId>>,
        transaction: Option<Transaction>,
    ) -> Result<Accepted> {
        let lock = self.lock_for(room_id)?;
        let room_id = room_id.to_owned();
        let sender = sender.to_owned();
        let accepted = self
            .run_locked(&lock, move |core, db| {
                // Idempotency is decided here, under the room's lock and before anything is
                // built: the same request sent many times at once gives one event. That event
                // may still wait for its sync; this answer waits for it too.
                if let Some(txn) = &transaction
                    && let Some(event_id) = core.transaction_event(db, &sender, &txn.device, &txn.key)?
                {
                    let durable = db.newest_deferred();
                    return Ok(Accepted { event_id, position: None, soft_failed: false, durable });
                }
                let (_, version) = core.version_of(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
                let json = core.build(db, Some(&room_id), &version, &sender, event, prev_events)?;
                core.accept_with(db, Some(&room_id), &version, json, transaction.as_ref())
            })
            .await?;
        // Outside the room's lock, so the room's next send is written meanwhile and shares
        // the sync (see `storage/group_commit.rs`).
        self.core.db.durable(accepted.durable).await?;
        Ok(accepted)
    }

    /// The checks of an event from another server that need no room state (`prepare.rs`),
    /// outside the room's lock, with the signing keys it needs fetched first. `version` is the
    /// room's version when the room is not stored yet (a room being joined); otherwise the
    /// stored room says it.
    async fn prepare_remote(
        &self,
        room_id: &RoomId,
        version: Option<RoomVersionId>,
        json: ruma::CanonicalJsonObject,
    ) -> Result<Prepared> {
        let room = room_id.to_owned();
        let version = match version {
            Some(version) => version,
            None => {
                self.run(move |core, db| core.version_of(db, &room))
                    .await?
                    .ok_or_else(|| Error::not_found("Unknown room"))?
                    .1
            }
        };
        let rules = crate::service::rooms::versions::rules(&version).ok_or_else(|| {
            Error::new(http::StatusCode::BAD_REQUEST, ErrorKind::UnsupportedRoomVersion, "Unsupported room version")
        })?;
        let keys = self.remote_keys.event_keys(&json, &rules).await;
        let room = room_id.to_owned();
        self.run(move |core, _| core.prepare(Some(&room), &version, json, Some(&keys))).await
    }

    /// Accepts an event built elsewhere (signed PDU JSON): the federation entry point. The
    /// checks that need no room state run first, outside the room's lock; the rest commits
    /// under it.
    pub async fn accept_pdu(&self, room_id: &RoomId, json: ruma::CanonicalJsonObject) -> Result<Outcome> {
        let prepared = self.prepare_remote(room_id, None, json).await?;
        let lock = self.lock_for(room_id)?;
        self.run_locked(&lock, move |core, db| core.commit(db, prepared, prepare::Origin::Remote, None, None)).await
    }

    /// Accepts an event from another server whose prev events are not all here, with the state
    /// before it as that server gave it (IDs of stored events: `send_join`'s `state`, or
    /// `/state_ids` at a gap). With `version` it may be the join that brings this server into a
    /// room it doesn't know yet, which is then created from it.
    pub async fn accept_pdu_with_state(
        &self,
        room_id: &RoomId,
        version: Option<RoomVersionId>,
        json: ruma::CanonicalJsonObject,
        state_before: Vec<OwnedEventId>,
    ) -> Result<Outcome> {
        let prepared = self.prepare_remote(room_id, version, json).await?;
        let lock = self.lock_for(room_id)?;
        self.run_locked(&lock, move |core, db| {
            core.commit(db, prepared, prepare::Origin::Remote, None, Some(state_before))
        })
        .await
    }

    /// Stores events from another server as outliers (see [`accept_outlier`](Self::accept_outlier)),
    /// each after the auth events it has among them: the state and auth chain of a room being
    /// joined, or the state at a gap. `version` as for
    /// [`accept_pdu_with_state`](Self::accept_pdu_with_state). One outcome per event stored or
    /// refused by the auth rules, in the order tried; events that fail the checks before that
    /// (format, signatures) are left out and logged.
    pub async fn accept_outliers(
        &self,
        room_id: &RoomId,
        version: Option<RoomVersionId>,
        events: Vec<ruma::CanonicalJsonObject>,
    ) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        let mut prepared = Vec::new();
        for json in events {
            match self.prepare_remote(room_id, version.clone(), json).await {
                Ok(event) => prepared.push(event),
                Err(error) => tracing::debug!(%room_id, %error, "event from another server refused"),
            }
        }
        let ordered = prepare::in_auth_order(prepared);
        let lock = self.lock_for(room_id)?;
        for event in ordered {
            outcomes.push(self.run_locked(&lock, move |core, db| core.store_outlier(db, event)).await?);
        }
        Ok(outcomes)
    }

    /// Stores an event from another server as an outlier (see `accept.rs`): an auth or state
    /// event fetched on its own, usable to authorise others, outside the timeline.
    pub async fn accept_outlier(&self, room_id: &RoomId, json: ruma::CanonicalJsonObject) -> Result<Outcome> {
        let prepared = self.prepare_remote(room_id, None, json).await?;
        let lock = self.lock_for(room_id)?;
        self.run_locked(&lock, move |core, db| core.store_outlier(db, prepared)).await
    }

    /// Builds and signs an event on given prev events (or the forward extremities) without
    /// accepting it: an event as another server would send it, for tests of the acceptance
    /// path (and, later, the templates of `make_join`).
    pub async fn build_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        prev_events: Option<Vec<OwnedEventId>>,
    ) -> Result<ruma::CanonicalJsonObject> {
        let lock = self.lock_for(room_id)?;
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        self.run_locked(&lock, move |core, db| {
            let (_, version) = core.version_of(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            core.build(db, Some(&room_id), &version, &sender, event, prev_events)
        })
        .await
    }

    /// Hashes and signs an event with this server's key (tests that alter built events).
    pub fn sign_as_this_server(&self, event: &mut ruma::CanonicalJsonObject, rules: &RoomVersionRules) -> Result<()> {
        ruma::signatures::hash_and_sign_event(
            self.core.server_name.as_str(),
            self.core.keys.key_pair(),
            event,
            &rules.redaction,
        )
        .map_err(|e| Error::internal(format!("cannot sign event: {e}")))
    }

    /// The signed key document of this server.
    pub fn key_document(&self) -> Result<ruma::CanonicalJsonObject> {
        self.core.keys.key_document()
    }
}
