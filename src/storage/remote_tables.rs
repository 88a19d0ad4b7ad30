//! Caches of other servers' data: media fetched from them (originals and thumbnails), kept
//! within `media.remote_cache_max_size`, and the profiles of their users.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// Cached remote media. Key: `{server}/{media ID}` for an original,
/// `{server}/{media ID}/{method}/{width}x{height}/{animated}` for a thumbnail as requested.
pub const REMOTE_MEDIA: Table<String, RemoteMediaRecord> = Table::new("remote_media");

/// A user of another server -> that user's profile as their server last answered it.
pub const REMOTE_PROFILES: Table<OwnedUserId, RemoteProfileRecord> = Table::new("remote_profiles");

pub const REMOTE_TABLES: &[&str] = &[REMOTE_MEDIA.name, REMOTE_PROFILES.name];

/// A cached profile of another server's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteProfileRecord {
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
    pub fetched_ms: u64,
}
impl JsonValue for RemoteProfileRecord {}

/// One cached file of another server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteMediaRecord {
    /// SHA-256 of the file in the remote media store (hex).
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// When it was last served (ms since the epoch); the least recently used go first.
    pub last_used_ms: u64,
}
impl JsonValue for RemoteMediaRecord {}
