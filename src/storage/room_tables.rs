//! The room tables: interned ids, PDUs, the timeline, forward extremities, state as layered
//! diffs, and the per-user and per-room indexes the client API reads.
//!
//! Interned ids ("short ids") are u64s handed out by [`crate::storage::IdAllocator`]; each kind
//! has a table from the short id back to the long one, whose last key seeds the allocator at
//! start-up, so no counter has to be written with every event.

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Table, codec::JsonValue};

/// Event ID -> short event id.
pub const SHORT_EVENT_IDS: Table<String, u64> = Table::new("short_event_ids");
/// Short event id -> event ID.
pub const EVENT_IDS: Table<u64, String> = Table::new("event_ids");
/// Room ID -> short room id.
pub const SHORT_ROOM_IDS: Table<OwnedRoomId, u64> = Table::new("short_room_ids");
/// Short room id -> room ID.
pub const ROOM_IDS: Table<u64, OwnedRoomId> = Table::new("room_ids");
/// (event type, state key) -> short state key.
pub const SHORT_STATE_KEYS: Table<(String, String), u64> = Table::new("short_state_keys");
/// Short state key -> (event type, state key).
pub const STATE_KEYS: Table<u64, (String, String)> = Table::new("state_keys");

/// Short event id -> the PDU as canonical JSON, exactly as signed.
pub const PDUS: Table<u64, Box<RawValue>> = Table::new("pdus");
/// Short event id -> what the server knows about the event.
pub const EVENT_META: Table<u64, EventMeta> = Table::new("event_meta");
/// Short event id -> its direct auth events (short ids): the edges of the auth DAG, from which
/// auth chains are computed (see `service::rooms::auth_chain`). Written when the event is
/// accepted; the index grows with the number of events, not with their chains.
pub const AUTH_EDGES: Table<u64, Vec<u64>> = Table::new("auth_edges");
/// Schema 1's short event id -> full auth chain, whose size grew with the square of a room's
/// auth history. Emptied by the migration to schema 2 and no longer written; still opened so
/// that migration can find it.
pub const LEGACY_AUTH_CHAINS: Table<u64, Vec<u64>> = Table::new("auth_chains");

/// (short room id, stream position) -> short event id: each room's timeline in order.
pub const TIMELINE: Table<(u64, u64), u64> = Table::new("timeline");
/// (short room id, origin_server_ts, stream position) -> short event id: each room's timeline
/// ordered by the events' timestamps, for `/timestamp_to_event`. Written next to [`TIMELINE`].
pub const TIMELINE_BY_TS: Table<(u64, u64, u64), u64> = Table::new("timeline_by_ts");
/// (short room id, stream position) -> (): an event placed after a gap in the room's history
/// (its earlier events are not here; its state came from another server). A sync window that
/// reaches it starts there and is `limited`, so clients page back for what is missing.
pub const TIMELINE_GAPS: Table<(u64, u64), ()> = Table::new("timeline_gaps");
/// (short room id, n) -> short event id: history prepended to a room by backfill, `n` counting
/// backwards from the room's oldest event (1 is the newest of them).
pub const BACKFILL: Table<(u64, u64), u64> = Table::new("backfill");
/// Stream position -> (short room id, short event id): every room's events in arrival order.
pub const EVENT_STREAM: Table<u64, (u64, u64)> = Table::new("event_stream");
/// Schema 1 only: (short room id, short event id) -> (), the room's forward extremities. Every
/// event deleted a row and added one, so the room's prefix filled with tombstones that each
/// later scan walked; they are now a field of [`RoomRecord`], which every event rewrites anyway.
pub const LEGACY_FORWARD_EXTREMITIES: Table<(u64, u64), ()> = Table::new("forward_extremities");

/// State group -> a diff against its parent group (or a full snapshot when it has none).
pub const STATE_GROUPS: Table<u64, StateGroup> = Table::new("state_groups");
/// Short room id -> the room's version, current state group and creation facts.
pub const ROOMS: Table<u64, RoomRecord> = Table::new("rooms");
/// (short room id, short state key) -> short event id: the room's current state, materialised
/// so reading one state event or the whole state never walks diffs.
pub const CURRENT_STATE: Table<(u64, u64), u64> = Table::new("current_state");

/// (short room id, server name) -> how many of that server's users are joined to the room in
/// its current state; rows with no joined user are deleted. Which servers an event goes to,
/// and whether this server is in a room, are read here (kept with [`CURRENT_STATE`]).
pub const ROOM_SERVERS: Table<(u64, String), u64> = Table::new("room_servers");
/// (user, room) -> the user's current membership in the room (local users).
pub const USER_ROOMS: Table<(OwnedUserId, OwnedRoomId), UserMembership> = Table::new("user_rooms");
/// (user, device, transaction ID) -> event ID, for idempotent sends.
pub const TRANSACTIONS: Table<(OwnedUserId, String, String), String> = Table::new("transactions");
/// (room, receipt type, user, thread or "") -> the user's newest receipt of that type.
pub const RECEIPTS: Table<(OwnedRoomId, String, OwnedUserId, String), ReceiptRecord> = Table::new("receipts");
/// Receipt stream position -> which receipt was written (for incremental syncs).
pub const RECEIPT_CHANGES: Table<u64, ReceiptChange> = Table::new("receipt_changes");
/// Event ID -> (device, transaction ID) of local events sent with a transaction ID, for
/// `unsigned.transaction_id` in the sender's device's syncs.
pub const EVENT_TRANSACTIONS: Table<String, (String, String)> = Table::new("event_transactions");
/// Room alias -> room.
pub const ALIASES: Table<String, AliasRecord> = Table::new("aliases");
/// (room, alias) -> (): the local aliases of a room.
pub const ROOM_ALIASES: Table<(OwnedRoomId, String), ()> = Table::new("room_aliases");
/// Room -> (): rooms published in the public room directory.
pub const PUBLIC_ROOMS: Table<OwnedRoomId, ()> = Table::new("public_rooms");
/// (redacted short event, redaction short event) -> (): redactions, applied when serving.
pub const REDACTIONS: Table<(u64, u64), ()> = Table::new("redactions");
/// (room, event, reporter) -> the report, kept for admins.
pub const EVENT_REPORTS: Table<(OwnedRoomId, String, OwnedUserId), serde_json::Value> = Table::new("event_reports");

pub const ROOM_TABLES: &[&str] = &[
    SHORT_EVENT_IDS.name,
    EVENT_IDS.name,
    SHORT_ROOM_IDS.name,
    ROOM_IDS.name,
    SHORT_STATE_KEYS.name,
    STATE_KEYS.name,
    PDUS.name,
    EVENT_META.name,
    AUTH_EDGES.name,
    LEGACY_AUTH_CHAINS.name,
    TIMELINE.name,
    TIMELINE_GAPS.name,
    BACKFILL.name,
    TIMELINE_BY_TS.name,
    EVENT_STREAM.name,
    LEGACY_FORWARD_EXTREMITIES.name,
    STATE_GROUPS.name,
    ROOMS.name,
    CURRENT_STATE.name,
    ROOM_SERVERS.name,
    USER_ROOMS.name,
    TRANSACTIONS.name,
    EVENT_TRANSACTIONS.name,
    RECEIPTS.name,
    RECEIPT_CHANGES.name,
    ALIASES.name,
    ROOM_ALIASES.name,
    PUBLIC_ROOMS.name,
    EVENT_REPORTS.name,
    REDACTIONS.name,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room: u64,
    /// Stream position in the timeline; `None` for outliers (known, not in the timeline).
    pub position: Option<u64>,
    /// The state group of the room after this event.
    pub state_after: u64,
    /// The state group before this event (what history visibility is judged by).
    #[serde(default)]
    pub state_before: Option<u64>,
    /// The short state key, for state events.
    #[serde(default)]
    pub state_key: Option<u64>,
    pub depth: u64,
    /// Accepted but failed auth against the current state: stored, never served.
    #[serde(default)]
    pub soft_failed: bool,
    /// Refused by the auth rules (an event from another server): stored so it is not fetched
    /// again, never served, never used to authorise another event. `state_after` is then the
    /// state before it, or 0 when that was never known.
    #[serde(default)]
    pub rejected: bool,
}
impl JsonValue for EventMeta {}

impl EventMeta {
    /// The state group after this event, if known (not for a rejected event whose state was
    /// never computed).
    pub fn state_after_known(&self) -> Option<u64> {
        (self.state_after != 0).then_some(self.state_after)
    }

    /// An outlier: stored without state and outside the timeline (see `store_outlier`).
    pub fn is_outlier(&self) -> bool {
        self.position.is_none() && !self.soft_failed && !self.rejected && self.state_after == 0
    }

    /// Whether clients may be shown this event at all (history visibility aside).
    pub fn is_served(&self) -> bool {
        !self.soft_failed && !self.rejected && self.state_after != 0
    }
}

/// A state snapshot as a diff against `parent`: the state is the parent's with `removed` short
/// state keys dropped and `added` (short state key, short event id) pairs set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateGroup {
    pub parent: Option<u64>,
    /// How many diffs lie between this group and a full snapshot; bounded, so loading any
    /// group costs a bounded number of reads.
    pub chain_length: u32,
    pub added: Vec<(u64, u64)>,
    pub removed: Vec<u64>,
}
impl JsonValue for StateGroup {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: RoomVersionId,
    /// State group of the room's current state.
    pub current_state_group: u64,
    /// The room's forward extremities (short event ids): the events nothing refers to yet,
    /// which the next event of this server names as its prev events.
    #[serde(default)]
    pub extremities: Vec<u64>,
    /// How many events backfill has prepended to the timeline (see `BACKFILL`).
    #[serde(default)]
    pub backfilled: u64,
}
impl JsonValue for RoomRecord {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMembership {
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    pub event_id: String,
    /// Stream position of the membership event.
    pub position: u64,
    /// Set by `/forget` after leaving.
    #[serde(default)]
    pub forgotten: bool,
}
impl JsonValue for UserMembership {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}
impl JsonValue for AliasRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub event_id: String,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Receipt stream position of this write.
    pub position: u64,
}
impl JsonValue for ReceiptRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptChange {
    pub room: OwnedRoomId,
    pub receipt_type: String,
    pub user: OwnedUserId,
    /// The thread, or empty.
    pub thread: String,
}
impl JsonValue for ReceiptChange {}
