//! Federation tables: the signing keys of other servers, and the newest key document each
//! server (or a notary for it) signed, which this server serves again as a notary.

use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// (server name, key ID such as `ed25519:abc`) -> the public key and how long it is valid.
pub const SERVER_SIGNING_KEYS: Table<(String, String), ServerKeyRecord> = Table::new("server_signing_keys");
/// Server name -> the newest verified key document of that server, with its signatures, as
/// `/_matrix/key/v2/server` returned it (served again by `/_matrix/key/v2/query`).
pub const SERVER_KEY_DOCUMENTS: Table<String, serde_json::Value> = Table::new("server_key_documents");

pub const FEDERATION_TABLES: &[&str] = &[SERVER_SIGNING_KEYS.name, SERVER_KEY_DOCUMENTS.name];

/// One verify key of another server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeyRecord {
    /// The public key, unpadded base64 as the key document gives it.
    pub key: String,
    /// Until when (ms since the epoch) the key may be used: the document's `valid_until_ts`,
    /// at most seven days after it was fetched (the spec's cap for room versions 5 and up).
    pub valid_until_ts: u64,
    /// When the server stopped using the key (from `old_verify_keys`); signatures made before
    /// stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_ts: Option<u64>,
}
impl JsonValue for ServerKeyRecord {}
