//! The storage report for admins: the size of every table (SST bytes on disk, the engine's
//! estimate of live data, bytes still in memtables, estimated keys), totals, and the number of
//! stored events to divide by; and a full compaction on request. Served by the admin API
//! (`/_trellis/admin/v1/storage/...`) and `trellis storage` on a stopped server's database.

use serde::Serialize;

use crate::{
    Result,
    service::Services,
    storage::{Db, StorageError, TableStats, room_tables::PDUS},
};

/// One table's sizes.
#[derive(Debug, Clone, Serialize)]
pub struct TableSize {
    pub table: String,
    pub disk_bytes: u64,
    pub live_bytes: u64,
    pub memory_bytes: u64,
    pub estimated_keys: u64,
}

/// The whole store's sizes, largest tables first.
#[derive(Debug, Clone, Serialize)]
pub struct StorageReport {
    /// Events stored (every PDU the server keeps: messages, state, outliers).
    pub stored_events: u64,
    pub disk_bytes: u64,
    pub live_bytes: u64,
    pub memory_bytes: u64,
    /// `disk_bytes` divided by `stored_events` (0 without events).
    pub disk_bytes_per_event: u64,
    /// Bytes of the shared read cache in use.
    pub cache_bytes: u64,
    /// Tables holding anything, by `disk_bytes + memory_bytes`, largest first.
    pub tables: Vec<TableSize>,
}

/// Reads the engine's statistics and counts the stored events. Blocking: scans the event table's
/// keys.
pub fn report(db: &Db) -> std::result::Result<StorageReport, StorageError> {
    let stats = db.store_stats().ok_or_else(|| StorageError("this storage engine keeps no statistics".into()))?;
    let stored_events = PDUS.count_up_to(db, usize::MAX)? as u64;
    let mut tables: Vec<TableSize> = stats
        .tables
        .into_iter()
        .filter(|t| t.disk_bytes + t.memory_bytes + t.estimated_keys > 0)
        .map(|TableStats { table, estimated_keys, disk_bytes, live_bytes, memory_bytes }| TableSize {
            table,
            disk_bytes,
            live_bytes,
            memory_bytes,
            estimated_keys,
        })
        .collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.disk_bytes + t.memory_bytes));
    let disk_bytes = tables.iter().map(|t| t.disk_bytes).sum();
    Ok(StorageReport {
        stored_events,
        disk_bytes,
        live_bytes: tables.iter().map(|t| t.live_bytes).sum(),
        memory_bytes: tables.iter().map(|t| t.memory_bytes).sum(),
        disk_bytes_per_event: disk_bytes.checked_div(stored_events).unwrap_or(0),
        cache_bytes: stats.cache_bytes,
        tables,
    })
}

/// The storage report of the running server.
pub async fn storage_report(services: &Services) -> Result<StorageReport> {
    services.db.run(|db| Ok(report(db)?)).await
}

/// Flushes and compacts every table (as after an erasure), then reports the sizes.
pub async fn compact_and_report(services: &Services) -> Result<StorageReport> {
    super::erasure::compact(services).await?;
    storage_report(services).await
}
