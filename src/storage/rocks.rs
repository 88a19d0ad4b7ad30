//! The RocksDB engine: one column family per table, a shared LRU block cache, LZ4 (ZSTD for the
//! bottom level) compression and a bounded number of open files.
//!
//! Durability: by default every batch is written with `sync` set, so `write` returns only once
//! the write-ahead log is on stable storage (fdatasync), and an acknowledged write survives a
//! power cut. Concurrent writers share one sync through RocksDB's own group commit: the first
//! writer to arrive becomes the leader of a write group, appends the batches of every writer
//! queued behind it to the log as one record, syncs once and releases them all; writers that
//! arrive during that sync form the next group. `durable_writes = false` writes without the
//! sync: still safe against a crash of the process (the log is in the OS page cache), not
//! against a crash of the machine.
//!
//! Deferred writes ([`Engine::write_unsynced`], then [`Engine::sync_wal`] from the syncer of
//! `group_commit.rs`) rely on the log being recovered as a prefix: a crash loses a suffix of the
//! unsynced records and never keeps a record without those before it. The default recovery mode
//! (point in time) replays the log up to the first damaged record, and with several column
//! families RocksDB syncs the closed logs before a flush writes their data into table files.

use std::{collections::BTreeSet, path::Path};

use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, BoundColumnFamily, Cache, CompactOptions, DBCompressionType,
    DBRecoveryMode, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options, WriteBatch, WriteBufferManager,
    WriteOptions,
    statistics::{StatsLevel, Ticker},
};

use super::{
    StorageError,
    engine::{Engine, KeyValue, ScanDirection, ScanIter, StoreStats, TableStats, WriteOp, WriteStats},
};

type Db = DBWithThreadMode<MultiThreaded>;

pub struct RocksEngine {
    db: Db,
    cache: Cache,
    tables: Vec<String>,
    /// The options the database was opened with; they hold its statistics (write counters).
    options: Options,
    write_options: WriteOptions,
    /// For [`Engine::write_unsynced`]: never sets `sync`.
    unsynced_options: WriteOptions,
    durable_writes: bool,
}

/// Tuning for a small server; the config supplies the cache size, file limit and durability.
pub struct RocksSettings {
    pub cache_capacity_bytes: usize,
    /// The most memory all tables' memtables (writes not yet flushed to files) use together;
    /// it is charged to the block cache, so the cache's capacity bounds both.
    pub write_buffer_bytes: usize,
    pub max_open_files: i32,
    /// Sync the write-ahead log before a write returns (see the module documentation).
    pub durable_writes: bool,
}

impl RocksEngine {
    pub fn open(path: &Path, tables: &[&'static str], settings: &RocksSettings) -> Result<Self, StorageError> {
        let cache = Cache::new_lru_cache(settings.cache_capacity_bytes);
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);

        let mut table_options = Options::default();
        table_options.set_block_based_table_factory(&block);
        table_options.set_compression_type(DBCompressionType::Lz4);
        table_options.set_bottommost_compression_type(DBCompressionType::Zstd);
        table_options.optimize_level_style_compaction(16 * 1024 * 1024);
        // Level 0 is compacted at four files, RocksDB's default, not the two the call above
        // sets: in a table keyed by event IDs (random) every level-0 file overlaps all of
        // level 1, so each level-0 compaction rewrites level 1; at four files it happens half
        // as often. Background CPU per send about a third lower (docs/performance.md).
        table_options.set_level_zero_file_num_compaction_trigger(4);

        let mut db_options = table_options.clone();
        // One memory budget across the ~100 tables: without a write buffer manager each table
        // may hold several memtables of its own (up to 6 of 4 MiB after
        // `optimize_level_style_compaction`); with it, the largest memtable is flushed once
        // all of them together reach `write_buffer_bytes`, and their memory counts against the
        // block cache.
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(settings.write_buffer_bytes, false, cache.clone());
        db_options.set_write_buffer_manager(&write_buffers);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_open_files(settings.max_open_files);
        db_options.set_keep_log_file_num(3);
        // RocksDB's default, said here because deferred writes rely on it (see the module doc).
        db_options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        // At open RocksDB starts this many threads less one for every column family to open its
        // table files, whether or not it has any: with the default of 16, every start created
        // and ended about 1,600 threads for our hundred-odd tables. Files are opened on first
        // use through the table cache anyway.
        db_options.set_max_file_opening_threads(1);
        // Tickers only (no histograms or timers): the write and sync counts `write_stats` reports
        // cost a per-core counter increment each.
        db_options.enable_statistics();
        db_options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        // RocksDB otherwise keeps a snapshot of those statistics in memory every 10 minutes, up
        // to 1 MB, which nothing here reads: a long-running server grew by it.
        db_options.set_stats_persist_period_sec(0);

        // Tables a newer build created must be opened too, or RocksDB refuses the database.
        let mut names: BTreeSet<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        if let Ok(existing) = Db::list_cf(&db_options, path) {
            names.extend(existing);
        }
        let tables: Vec<String> = names.iter().cloned().collect();
        let existing: BTreeSet<String> = Db::list_cf(&db_options, path).unwrap_or_default().into_iter().collect();
        if tables.iter().any(|name| !existing.contains(name)) {
            // New tables are made first, with one growing MANIFEST (below, each would write a
            // snapshot of all the others).
            let descriptors =
                names.iter().map(|name| rocksdb::ColumnFamilyDescriptor::new(name, table_options.clone()));
            drop(
                Db::open_cf_descriptors(&db_options, path, descriptors)
                    .map_err(|e| StorageError(format!("cannot open RocksDB at {}: {e}", path.display())))?,
            );
        }
        // A new MANIFEST (holding only the files alive then) on every change of the file set,
        // instead of one growing log of every change: the log keeps the first and last key of
        // each file ever written, and keys hold user content (search words, reaction keys),
        // which an erasure must be able to remove from disk (see `compact_all`). A MANIFEST
        // snapshot is a few kilobytes per table, written at each flush or compaction.
        db_options.set_max_manifest_file_size(0);
        let descriptors =
            names.into_iter().map(|name| rocksdb::ColumnFamilyDescriptor::new(name, table_options.clone()));
        let db = Db::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|e| StorageError(format!("cannot open RocksDB at {}: {e}", path.display())))?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(settings.durable_writes);
        let unsynced_options = WriteOptions::default();
        Ok(Self {
            db,
            cache,
            tables,
            options: db_options,
            write_options,
            unsynced_options,
            durable_writes: settings.durable_writes,
        })
    }

    /// Reads up to `limit` rows of `table` from a read-only view of the database at `path`,
    /// without writing anything there (no log, no new files); empty when the table does not
    /// exist. For checks that must run before the database is opened for writing.
    pub fn peek(path: &Path, table: &str, limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let options = Options::default();
        let existing = Db::list_cf(&options, path)
            .map_err(|e| StorageError(format!("cannot read RocksDB at {}: {e}", path.display())))?;
        if !existing.iter().any(|name| name == table) {
            return Ok(Vec::new());
        }
        let db = Db::open_cf_for_read_only(&options, path, [table], false)
            .map_err(|e| StorageError(format!("cannot open RocksDB at {} to read: {e}", path.display())))?;
        let cf = db.cf_handle(table).ok_or_else(|| StorageError(format!("table {table} is not open")))?;
        db.iterator_cf(&cf, IteratorMode::Start)
            .take(limit)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(rocks_error))
            .collect()
    }

    fn batch(&self, ops: Vec<WriteOp>) -> Result<WriteBatch, StorageError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            let cf = self.cf(op.table)?;
            match op.value {
                Some(value) => batch.put_cf(&cf, op.key, value),
                None => batch.delete_cf(&cf, op.key),
            }
        }
        Ok(batch)
    }

    fn cf(&self, table: &'static str) -> Result<std::sync::Arc<BoundColumnFamily<'_>>, StorageError> {
        self.db.cf_handle(table).ok_or_else(|| StorageError(format!("table {table} is not open")))
    }
}

fn rocks_error(error: rocksdb::Error) -> StorageError {
    StorageError(error.to_string())
}

impl Engine for RocksEngine {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(&self.cf(table)?, key).map_err(rocks_error)
    }

    fn scan<'a>(
        &'a self,
        table: &'static str,
        start: &[u8],
        direction: ScanDirection,
    ) -> Result<ScanIter<'a>, StorageError> {
        let mode = match direction {
            ScanDirection::Forward => IteratorMode::From(start, Direction::Forward),
            ScanDirection::Reverse => IteratorMode::From(start, Direction::Reverse),
        };
        let iter = self.db.iterator_cf(&self.cf(table)?, mode);
        Ok(Box::new(iter.map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(rocks_error))))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.db.write_opt(self.batch(ops)?, &self.write_options).map_err(rocks_error)
    }

    fn write_unsynced(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.db.write_opt(self.batch(ops)?, &self.unsynced_options).map_err(rocks_error)
    }

    /// `SyncWAL`: syncs every live log file up to what was written before the call. Concurrent
    /// calls do not share a sync (each waits for the previous one, then syncs again), hence
    /// the one syncer thread of `group_commit.rs`.
    fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(rocks_error)
    }

    fn write_stats(&self) -> Option<WriteStats> {
        // A write group's leader counts itself as "done by self", its followers as "done by
        // other"; the log is synced once per group when the group asks for it.
        let groups = self.options.get_ticker_count(Ticker::WriteDoneBySelf);
        Some(WriteStats {
            durable: self.durable_writes,
            batches: groups + self.options.get_ticker_count(Ticker::WriteDoneByOther),
            groups,
            syncs: self.options.get_ticker_count(Ticker::WalFileSynced),
        })
    }

    fn store_stats(&self) -> Option<StoreStats> {
        let property = |cf: &std::sync::Arc<BoundColumnFamily>, name: &str| {
            self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0)
        };
        let tables = self
            .tables
            .iter()
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                Some(TableStats {
                    table: name.clone(),
                    estimated_keys: property(&cf, "rocksdb.estimate-num-keys"),
                    disk_bytes: property(&cf, "rocksdb.total-sst-files-size"),
                    live_bytes: property(&cf, "rocksdb.estimate-live-data-size"),
                    memory_bytes: property(&cf, "rocksdb.cur-size-all-mem-tables"),
                })
            })
            .collect();
        Some(StoreStats { tables, cache_bytes: self.cache.get_usage() as u64 })
    }

    /// A RocksDB checkpoint: the live files are hard-linked when `dir` is on the same file
    /// system (copied otherwise), the memtables flushed first, so the copy is one point in time.
    fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(rocks_error)?;
        checkpoint
            .create_checkpoint(dir)
            .map_err(|e| StorageError(format!("cannot create a checkpoint in {}: {e}", dir.display())))
    }

    /// SST and blob files are immutable and their numbers never reused; the manifest, the
    /// options, `CURRENT` and the write-ahead logs are rewritten or truncated per copy.
    fn mutable_copy_file(&self, name: &str) -> bool {
        !(name.ends_with(".sst") || name.ends_with(".blob"))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(rocks_error)?;
        for name in &self.tables {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(&cf).map_err(rocks_error)?;
            }
        }
        Ok(())
    }

    fn compact_all(&self) -> Result<(), StorageError> {
        // Flushing every table moves all values out of the write-ahead log, whose files are then
        // obsolete and deleted; compacting every table down to its bottom level, bottom level
        // included, rewrites each file without the values deleted or overwritten since. The
        // caller then writes and flushes once more, so the MANIFEST is started over from the
        // files alive after the compaction.
        self.flush()?;
        let mut options = CompactOptions::default();
        options.set_exclusive_manual_compaction(true);
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for name in &self.tables {
            let Some(cf) = self.db.cf_handle(name) else { continue };
            // A table without files has nothing to rewrite.
            if self.db.property_int_value_cf(&cf, "rocksdb.total-sst-files-size").map_err(rocks_error)? == Some(0) {
                continue;
            }
            self.db.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        self.flush()
    }
}
