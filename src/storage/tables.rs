//! The database schema: every table (one column family each) with its key and value types.
//! Records are stored as JSON values so a field can be added without a migration.

use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Table, codec::JsonValue};

/// Schema version and the server name the database was made for. Key: setting name.
pub const META: Table<String, serde_json::Value> = Table::new("meta");
/// Counters that must survive restarts (stream positions, filter IDs). Key: counter name.
pub const COUNTERS: Table<String, u64> = Table::new("counters");

/// Local accounts. Key: user ID.
pub const USERS: Table<OwnedUserId, UserRecord> = Table::new("users");
/// Profile fields (`displayname`, `avatar_url` and custom ones). Key: (user, field).
pub const PROFILE_FIELDS: Table<(OwnedUserId, String), serde_json::Value> = Table::new("profile_fields");
/// Devices of local users. Key: (user, device).
pub const DEVICES: Table<(OwnedUserId, OwnedDeviceId), DeviceRecord> = Table::new("devices");
/// Access tokens, by the SHA-256 of the token (hex), so a copy of the database leaks no token.
pub const ACCESS_TOKENS: Table<String, AccessTokenRecord> = Table::new("access_tokens");
/// Refresh tokens, by the SHA-256 of the token (hex).
pub const REFRESH_TOKENS: Table<String, RefreshTokenRecord> = Table::new("refresh_tokens");
/// Account data. Key: (user, room ID or "" for global, event type). Value: the content.
pub const ACCOUNT_DATA: Table<(OwnedUserId, String, String), Box<RawValue>> = Table::new("account_data");
/// Change log of account data for incremental sync. Key: (user, stream position).
pub const ACCOUNT_DATA_CHANGES: Table<(OwnedUserId, u64), AccountDataChange> = Table::new("account_data_changes");
/// Local users' presence. Key: user ID.
pub const PRESENCE: Table<OwnedUserId, PresenceRecord> = Table::new("presence");
/// Presence stream: position -> the user whose presence changed then (one row per user, the
/// newest; older rows are deleted with each change).
pub const PRESENCE_CHANGES: Table<u64, OwnedUserId> = Table::new("presence_changes");
/// Stored filters. Key: (user, filter ID).
pub const FILTERS: Table<(OwnedUserId, u64), Box<RawValue>> = Table::new("filters");

/// Local media. Key: media ID (the server name is always ours).
pub const MEDIA: Table<String, MediaRecord> = Table::new("media");
/// Media IDs reserved by `/create` and not uploaded yet. Key: media ID.
pub const MEDIA_PENDING: Table<String, PendingMediaRecord> = Table::new("media_pending");
/// The same reservations by owner, to count them. Key: (user, media ID). Value: expiry (ms).
pub const MEDIA_PENDING_BY_USER: Table<(OwnedUserId, String), u64> = Table::new("media_pending_by_user");
/// Thumbnails made so far. Key: `{SHA-256 of the original}/{method}/{width}x{height}/{animated}`,
/// where width and height are those of the standard size the request rounds up to.
pub const MEDIA_THUMBNAILS: Table<String, ThumbnailRecord> = Table::new("media_thumbnails");
/// Cached URL previews. Key: the URL.
pub const URL_PREVIEWS: Table<String, UrlPreviewRecord> = Table::new("url_previews");

/// Every table, so the engine can open them all.
pub const ALL_TABLES: &[&str] = &[
    META.name,
    COUNTERS.name,
    USERS.name,
    PROFILE_FIELDS.name,
    DEVICES.name,
    ACCESS_TOKENS.name,
    REFRESH_TOKENS.name,
    ACCOUNT_DATA.name,
    ACCOUNT_DATA_CHANGES.name,
    FILTERS.name,
    PRESENCE.name,
    PRESENCE_CHANGES.name,
    MEDIA.name,
    MEDIA_PENDING.name,
    MEDIA_PENDING_BY_USER.name,
    MEDIA_THUMBNAILS.name,
    URL_PREVIEWS.name,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Argon2 PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub guest: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// Shadow-banned by an admin: the account's messages, invites and typing are answered as
    /// if they worked, and dropped (`service/admin/moderation.rs`).
    #[serde(default)]
    pub shadow_banned: bool,
    /// Locked by an admin: every request but logout is refused with `M_USER_LOCKED`.
    #[serde(default)]
    pub locked: bool,
    /// Suspended by an admin: the account may read, leave and redact its own events, not
    /// send, join, invite or change its profile (`M_USER_SUSPENDED`).
    #[serde(default)]
    pub suspended: bool,
}
impl JsonValue for UserRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ms: u64,
    pub last_seen_ms: Option<u64>,
    pub last_seen_ip: Option<String>,
    /// Hash of the device's current access token.
    pub access_token_hash: Option<String>,
    /// Hash of the device's current refresh token, if it uses refresh tokens.
    pub refresh_token_hash: Option<String>,
}
impl JsonValue for DeviceRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Expiry (ms since the epoch) of tokens issued with a refresh token.
    pub expires_ms: Option<u64>,
}
impl JsonValue for AccessTokenRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}
impl JsonValue for RefreshTokenRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountDataChange {
    /// Room ID, or empty for global account data.
    pub room: String,
    pub event_type: String,
}
impl JsonValue for AccountDataChange {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    pub status_msg: Option<String>,
    /// When the user was last active (ms since the epoch).
    pub last_active_ms: u64,
    pub currently_active: bool,
    /// The presence stream position of the last change.
    pub position: u64,
}
impl JsonValue for PresenceRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// SHA-256 of the content (hex): the name of its file in the media directory.
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// Who uploaded it; `None` for media the server stored itself (URL preview images).
    pub uploader: Option<OwnedUserId>,
    pub created_ms: u64,
    /// Whether the legacy unauthenticated endpoints may serve it (uploaded before the freeze).
    #[serde(default)]
    pub legacy_access: bool,
}
impl JsonValue for MediaRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingMediaRecord {
    pub owner: OwnedUserId,
    pub expires_ms: u64,
}
impl JsonValue for PendingMediaRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    /// SHA-256 of the thumbnail's file (hex).
    pub sha256: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
}
impl JsonValue for ThumbnailRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlPreviewRecord {
    pub fetched_ms: u64,
    /// The OpenGraph object returned to clients.
    pub data: serde_json::Map<String, serde_json::Value>,
}
impl JsonValue for UrlPreviewRecord {}
