//! Tables of the media admin API (Synapse's `/_synapse/admin/v1/media/...`): quarantined media
//! (local and other servers') and quarantined content, local media protected from quarantine,
//! and when local media was last downloaded (for deleting media unused since a date).

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// (origin server, media ID) -> who quarantined it. Quarantined media is not served, and
/// other servers' quarantined media is not fetched, whether it is cached or not.
pub const MEDIA_QUARANTINE: Table<(String, String), QuarantineRecord> = Table::new("media_quarantine");

/// Content quarantined with some media: `Db::term` of its SHA-256 (keyed with encryption at
/// rest) -> who quarantined it. Local media uploaded later with the same content is
/// quarantined at once.
pub const MEDIA_QUARANTINED_CONTENT: Table<String, QuarantineRecord> = Table::new("media_quarantined_content");

/// Local media ID -> nothing: media admins protected from quarantine.
pub const MEDIA_PROTECTED: Table<String, ()> = Table::new("media_protected");

/// Local media ID -> when it was last downloaded (ms since the epoch; refreshed at most once a
/// minute).
pub const MEDIA_LAST_ACCESS: Table<String, u64> = Table::new("media_last_access");

pub const MEDIA_ADMIN_TABLES: &[&str] =
    &[MEDIA_QUARANTINE.name, MEDIA_QUARANTINED_CONTENT.name, MEDIA_PROTECTED.name, MEDIA_LAST_ACCESS.name];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub by: OwnedUserId,
    pub ts: u64,
}
impl JsonValue for QuarantineRecord {}
