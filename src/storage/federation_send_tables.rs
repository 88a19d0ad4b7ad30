//! Federation transaction tables: the outbound queue of PDUs and EDUs per destination server,
//! the transaction being attempted for each destination (so a retry repeats its ID), the
//! position of the event stream up to which local events have been queued, and the answers
//! given to other servers' transactions (so a repeated transaction is not processed twice).

use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// (destination server, sequence) -> what is queued for it, oldest first. Removed only once the
/// destination answered a transaction holding it with 200.
pub const OUTBOUND_QUEUE: Table<(String, u64), Queued> = Table::new("federation_outbound_queue");
/// Destination server -> the transaction being attempted: its ID and the queue entries it
/// holds, kept until the destination answers 200 so every retry sends the same transaction.
pub const OUTBOUND_TRANSACTIONS: Table<String, PendingTransaction> = Table::new("federation_outbound_transactions");
/// Name -> event stream position. `queued`: local events up to this position are in the queue.
pub const OUTBOUND_CURSOR: Table<String, u64> = Table::new("federation_outbound_cursor");
/// (origin server, transaction ID) -> the answer given to that transaction.
pub const INBOUND_TRANSACTIONS: Table<(String, String), InboundAnswer> = Table::new("federation_inbound_transactions");

pub const FEDERATION_SEND_TABLES: &[&str] =
    &[OUTBOUND_QUEUE.name, OUTBOUND_TRANSACTIONS.name, OUTBOUND_CURSOR.name, INBOUND_TRANSACTIONS.name];

/// One queue entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queued {
    /// A PDU, by event ID (its JSON is read from the room tables when sent).
    Pdu(String),
    /// An EDU, as sent.
    Edu(serde_json::Value),
}
impl JsonValue for Queued {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTransaction {
    pub txn_id: String,
    /// The sequences of the queue entries it holds.
    pub sequences: Vec<u64>,
}
impl JsonValue for PendingTransaction {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundAnswer {
    /// The response body given (`{"pdus": {...}}`).
    pub response: serde_json::Value,
    /// When it was given (ms since the epoch).
    pub at_ms: u64,
}
impl JsonValue for InboundAnswer {}
