//! Storage: typed tables over a key-value [`Engine`], RocksDB by default.
//!
//! A [`Table`] names a column family and fixes its key and value types; keys go through
//! order-preserving codecs, values through JSON. A logical change collects its writes in one
//! [`Batch`] and commits it atomically. Engine calls block, so async code runs them through
//! [`Db::run`], which moves the work onto the blocking thread pool.

pub mod admin_tables;
pub mod appservice_tables;
pub mod codec;
pub mod device_list_tables;
pub mod encryption;
pub mod engine;
pub mod erasure_tables;
pub mod federation_send_tables;
pub mod federation_tables;
mod generations;
pub mod group_commit;
mod in_place;
pub mod key_tables;
pub mod media_admin_tables;
pub mod membership_tables;
#[cfg(test)]
pub mod memory;
mod overlay;
pub mod push_tables;
pub mod relation_tables;
mod relations_migration;
pub mod remote_tables;
pub mod report_tables;
mod rocks;
pub mod room_tables;
mod schema;
pub mod search_tables;
pub mod tables;
pub mod thread_subscription_tables;
mod threads;

use std::{
    marker::PhantomData,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use codec::{KeyCodec, ValueCodec};
pub use engine::{Engine, ScanDirection, StoreStats, TableStats, WriteOp, WriteStats};
pub use in_place::in_place;
pub use overlay::Staged;
pub use schema::SCHEMA_VERSION;

use crate::config::Config;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

impl From<StorageError> for crate::Error {
    fn from(error: StorageError) -> Self {
        crate::Error::Storage(error.0)
    }
}

/// A table: a column family with typed keys and values.
pub struct Table<K, V> {
    pub name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: KeyCodec, V: ValueCodec> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self { name, types: PhantomData }
    }

    pub fn get(&self, db: &Db, key: &K) -> Result<Option<V>, StorageError> {
        db.engine.get(self.name, &key.encode())?.map(|bytes| V::decode_value(&bytes)).transpose()
    }

    /// The stored bytes of a value, not decoded (for callers that compare them with a copy).
    pub fn get_bytes(&self, db: &Db, key: &K) -> Result<Option<Vec<u8>>, StorageError> {
        db.engine.get(self.name, &key.encode())
    }

    pub fn contains(&self, db: &Db, key: &K) -> Result<bool, StorageError> {
        Ok(db.engine.get(self.name, &key.encode())?.is_some())
    }

    /// All entries whose key starts with `prefix` (a leading part of the key tuple), in order.
    pub fn scan_prefix<P: KeyCodec>(&self, db: &Db, prefix: &P) -> Result<Vec<(K, V)>, StorageError> {
        let prefix = prefix.encode();
        let mut out = Vec::new();
        for item in db.engine.scan(self.name, &prefix, ScanDirection::Forward)? {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push((K::decode(&key)?, V::decode_value(&value)?));
        }
        Ok(out)
    }

    /// How many entries the table holds, counting at most `cap` (for queue sizes in metrics).
    pub fn count_up_to(&self, db: &Db, cap: usize) -> Result<usize, StorageError> {
        let mut count = 0;
        for item in db.engine.scan(self.name, &[], ScanDirection::Forward)?.take(cap) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// Every entry of the table, in key order (for small tables).
    pub fn all(&self, db: &Db) -> Result<Vec<(K, V)>, StorageError> {
        db.engine
            .scan(self.name, &[], ScanDirection::Forward)?
            .map(|item| {
                let (key, value) = item?;
                Ok((K::decode(&key)?, V::decode_value(&value)?))
            })
            .collect()
    }

    /// Every key of the table, in order, values not decoded (for in-memory indexes built at
    /// start-up).
    pub fn keys(&self, db: &Db) -> Result<Vec<K>, StorageError> {
        db.engine.scan(self.name, &[], ScanDirection::Forward)?.map(|item| K::decode(&item?.0)).collect()
    }

    /// Entries from `start` in `direction` while `keep` accepts their keys, at most `limit`.
    pub fn scan_from(
        &self,
        db: &Db,
        start: &K,
        direction: ScanDirection,
        limit: usize,
        mut keep: impl FnMut(&K) -> bool,
    ) -> Result<Vec<(K, V)>, StorageError> {
        let mut out = Vec::new();
        for item in db.engine.scan(self.name, &start.encode(), direction)? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let key = K::decode(&key)?;
            if !keep(&key) {
                break;
            }
            out.push((key, V::decode_value(&value)?));
        }
        Ok(out)
    }
}

impl<V: ValueCodec> Table<u64, V> {
    /// The entries of a table keyed by stream position with positions in `(after, upto]`,
    /// oldest first, at most `limit`.
    pub fn between(&self, db: &Db, after: u64, upto: u64, limit: usize) -> Result<Vec<(u64, V)>, StorageError> {
        self.scan_from(db, &after.saturating_add(1), ScanDirection::Forward, limit, |position| *position <= upto)
    }
}

/// The writes of one logical change, applied atomically by [`Db::write`].
#[derive(Default)]
pub struct Batch {
    ops: Vec<WriteOp>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<K: KeyCodec, V: ValueCodec>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), StorageError> {
        self.ops.push(WriteOp { table: table.name, key: key.encode(), value: Some(value.encode_value()?) });
        Ok(())
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn delete<K: KeyCodec, V: ValueCodec>(&mut self, table: &Table<K, V>, key: &K) {
        self.ops.push(WriteOp { table: table.name, key: key.encode(), value: None });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A handle on the database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    engine: Arc<dyn Engine>,
    /// The same engine, when encryption at rest is on (for its keys and rotation).
    encryption: Option<Arc<encryption::engine::EncryptedEngine>>,
    /// Write generations of the tables services keep copies of (see `generations.rs`).
    generations: Arc<generations::Generations>,
    /// The shared syncer of deferred writes, when writes are durable (see `group_commit.rs`).
    group_commit: Option<Arc<group_commit::GroupCommit>>,
    /// The threads [`Db::run`] hands work to (see `threads.rs`); without them (a database over
    /// a test's engine) tokio's blocking pool runs it.
    threads: Option<Arc<threads::StorageThreads>>,
}

impl Db {
    /// Opens (or creates) the database the config names and checks its schema.
    pub fn open(config: &Config) -> Result<Self, StorageError> {
        let settings = rocks::RocksSettings {
            cache_capacity_bytes: (config.db_cache_capacity_mb.max(8.0) * 1024.0 * 1024.0) as usize,
            write_buffer_bytes: (config.rocksdb_write_buffer_mb.max(1.0) * 1024.0 * 1024.0) as usize,
            max_open_files: config.rocksdb_max_open_files,
            durable_writes: config.rocksdb_durable_writes,
        };
        let all_tables = all_table_names();
        // Encryption at rest: the keys and the database must fit before anything is written.
        let keys = encryption::load_keys(config)?;
        let path = &config.database_path;
        let stored = if Self::database_exists(path) {
            let has_data = !rocks::RocksEngine::peek(path, tables::META.name, 1)?.is_empty();
            let rows = rocks::RocksEngine::peek(path, encryption::ENCRYPTION_TABLE, 1_000)?;
            encryption::startup::Stored::from_rows(has_data, rows)?
        } else {
            encryption::startup::Stored::default()
        };
        let plan = encryption::startup::plan(keys, &stored, path)?;
        let engine: Arc<dyn Engine> = Arc::new(rocks::RocksEngine::open(path, &all_tables, &settings)?);
        let mut db = match plan {
            None => Self { engine, encryption: None, generations: Arc::default(), group_commit: None, threads: None },
            Some(plan) => {
                let migrate = plan.migrate;
                let encrypted = Arc::new(encryption::engine::EncryptedEngine::open(engine, plan)?);
                if migrate {
                    let media = config.media.directory(path);
                    encryption::migration::run(&encrypted, &all_tables, (&media, config.media.directory_structure))?;
                    // Reopened, so RocksDB writes a new MANIFEST (the old one names the smallest
                    // and largest plaintext keys of the files compacted away) and drops the old.
                    drop(encrypted);
                    return Self::open(config);
                }
                tracing::info!(
                    key_id = %encrypted.keyring().active_id(),
                    "encryption at rest: database values and media files are encrypted"
                );
                Self {
                    engine: encrypted.clone(),
                    encryption: Some(encrypted),
                    generations: Arc::default(),
                    group_commit: None,
                    threads: None,
                }
            }
        };
        let thread_count = match config.db_pool_workers {
            0 => threads::default_count(),
            count => count,
        };
        let started = threads::StorageThreads::start(thread_count)
            .map_err(|e| StorageError(format!("cannot start the storage threads: {e}")))?;
        db.threads = Some(Arc::new(started));
        if config.rocksdb_durable_writes {
            db.group_commit = Some(Arc::new(group_commit::GroupCommit::start(Arc::downgrade(&db.engine))?));
        }
        schema::check_and_migrate(&db, config.server_name.as_str())?;
        if config.rocksdb_durable_writes {
            tracing::info!("durable writes: each write is synced to disk before it is acknowledged");
        } else {
            tracing::warn!(
                "rocksdb_durable_writes = false: writes are acknowledged before they reach the disk; \
                 a power cut or kernel crash can lose the last seconds of acknowledged writes"
            );
        }
        Ok(db)
    }

    /// A database over any engine (tests, future engines).
    pub fn with_engine(engine: Arc<dyn Engine>) -> Self {
        Self { engine, encryption: None, generations: Arc::default(), group_commit: None, threads: None }
    }

    /// Whether both handles read the same store (not one of them a staged view).
    pub fn same_store(&self, other: &Db) -> bool {
        Arc::ptr_eq(&self.engine, &other.engine)
    }

    /// A handle over `engine` (a staged view of this database) with this database's encryption
    /// at rest, so index terms are hashed alike.
    fn with_staged_engine(&self, engine: Arc<dyn Engine>) -> Self {
        // A staged view's writes are never deferred: they go to its overlay, not to a log.
        Self {
            engine,
            encryption: self.encryption.clone(),
            generations: self.generations.clone(),
            group_commit: None,
            threads: self.threads.clone(),
        }
    }

    /// What stands for `term` (a word, URL or other user content) in a table's key: the term
    /// itself, or its keyed hash when encryption at rest is on.
    pub fn term(&self, term: &str) -> String {
        match &self.encryption {
            Some(encrypted) => encrypted.keyring().term(term),
            None => term.to_owned(),
        }
    }

    /// Whether [`Db::term`] hashes (so terms match only exactly, not by prefix).
    pub fn hashes_terms(&self) -> bool {
        self.encryption.is_some()
    }

    /// The keys of encryption at rest, for sealing files; `None` when it is off.
    pub fn encryption_keys(&self) -> Option<Arc<encryption::Keyring>> {
        self.encryption.as_ref().map(|e| e.keyring().clone())
    }

    /// Encryption at rest as an admin sees it; `None` when it is off.
    pub fn encryption_status(&self) -> Option<encryption::engine::EncryptionStatus> {
        self.encryption.as_ref().map(|e| e.status())
    }

    /// Starts the pending key rotation (if any) on a thread of its own: every table, then the
    /// media files under `media_root`.
    pub fn spawn_key_rotation(&self, media_root: std::path::PathBuf) {
        let Some(encrypted) = self.encryption.clone() else { return };
        if encrypted.rotation().is_none() {
            return;
        }
        let spawned = std::thread::Builder::new().name("key-rotation".into()).spawn(move || {
            if let Err(error) = encryption::rotation::run(&encrypted, &all_table_names(), &media_root) {
                tracing::error!(%error, "encryption key rotation stopped; it resumes at the next start-up");
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the encryption key rotation");
        }
    }

    pub fn write(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write_ops(batch.ops, |engine, ops| engine.write(ops))
    }

    /// Writes `ops` with `write` and moves on the write generations of the tables they touch.
    fn write_ops(
        &self,
        ops: Vec<WriteOp>,
        write: impl FnOnce(&dyn Engine, Vec<WriteOp>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let touched = self.generations.touched(&ops);
        let written = write(&*self.engine, ops);
        // Moved on even after a failed write: a cache miss costs a read, a stale copy an answer.
        self.generations.advance(touched);
        written
    }

    /// Writes `batch` without waiting for the write-ahead log to reach the disk, and runs `after`
    /// once it has (see `group_commit.rs`): the caller answers its client only after
    /// [`Db::durable`] of the returned ticket, and `after` makes the batch visible to the readers
    /// that hand it out. Without durable writes this is [`Db::write`] followed by `after`. On
    /// failure `after` is dropped without running.
    pub fn write_deferred(
        &self,
        batch: Batch,
        after: impl FnOnce() + Send + 'static,
    ) -> Result<group_commit::Ticket, StorageError> {
        let Some(group_commit) = &self.group_commit else {
            self.write(batch)?;
            after();
            return Ok(group_commit::Ticket::default());
        };
        self.write_ops(batch.ops, |engine, ops| engine.write_unsynced(ops))?;
        Ok(group_commit.written(Box::new(after)))
    }

    /// Waits until the deferred write of `ticket` is durable (see [`Db::write_deferred`]).
    /// Cancel-safe: the sync happens whether anyone waits for it.
    pub async fn durable(&self, ticket: group_commit::Ticket) -> Result<(), StorageError> {
        match &self.group_commit {
            Some(group_commit) => group_commit.durable(ticket).await,
            None => Ok(()),
        }
    }

    /// The ticket of the newest deferred write so far: [`Db::durable`] of it waits until
    /// everything written before now is durable (for an answer that repeats an earlier one).
    pub fn newest_deferred(&self) -> group_commit::Ticket {
        self.group_commit.as_ref().map(|g| g.newest()).unwrap_or_default()
    }

    /// The write generation of `table`'s rows whose key starts with `first` (see
    /// `generations.rs`): take it before reading those rows, and keep a copy of them under it;
    /// while it stays the same, none of them was written. Always 0 for a table without
    /// generations.
    pub fn generation<K: KeyCodec, V: ValueCodec, P: KeyCodec>(&self, table: &Table<K, V>, first: &P) -> u64 {
        self.generations.get(table.name, &first.encode())
    }

    /// Runs blocking storage work on the blocking thread pool, so the async runtime never stalls
    /// (or at once, inside [`in_place`], whose thread is out of the runtime already).
    pub async fn run<R, F>(&self, work: F) -> crate::Result<R>
    where
        F: FnOnce(&Db) -> crate::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        if in_place::active() {
            return work(self);
        }
        let db = self.clone();
        match &self.threads {
            Some(threads) => threads.run(move || work(&db)).await.map_err(crate::Error::internal)?,
            None => tokio::task::spawn_blocking(move || work(&db))
                .await
                .map_err(|e| crate::Error::internal(format!("storage task failed: {e}")))?,
        }
    }

    /// Flushes the engine (for shutdown) and logs its write counters since it was opened.
    pub fn flush(&self) -> Result<(), StorageError> {
        if let Some(stats) = self.engine.write_stats() {
            tracing::info!(
                durable = stats.durable,
                batches = stats.batches,
                write_groups = stats.groups,
                wal_syncs = stats.syncs,
                deferred_batches = self.group_commit.as_ref().map_or(0, |g| g.stats().batches),
                shared_syncs = self.group_commit.as_ref().map_or(0, |g| g.stats().syncs),
                "storage writes since start-up"
            );
        }
        self.engine.flush()
    }

    /// Flushes everything to the engine's files and rewrites them all, so that values deleted
    /// or overwritten before the call are gone from disk (after an erasure or a purge).
    /// Blocking, and slow on a large database.
    pub fn compact_all(&self) -> Result<(), StorageError> {
        self.engine.compact_all()?;
        // One write and flush after the compaction: the engine's record of its files then
        // starts over from the files alive now (see `rocks.rs`), forgetting the first and last
        // keys of the files compacted away.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut batch = Batch::new();
        batch.put(&tables::META, &"last_full_compaction_ms".to_owned(), &serde_json::json!(now as u64))?;
        self.write(batch)?;
        self.engine.flush()
    }

    /// The engine's write counters since it was opened, if it keeps them.
    pub fn write_stats(&self) -> Option<WriteStats> {
        self.engine.write_stats()
    }

    /// The engine's size and key statistics, if it keeps them.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.engine.store_stats()
    }

    /// A consistent online copy of the whole store in `dir` (see [`Engine::checkpoint`]).
    /// Blocking: call it off the async runtime (backups run it on the blocking pool).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        self.engine.checkpoint(dir)
    }

    /// Whether a copied file of this name may differ between two copies (see
    /// [`Engine::mutable_copy_file`]).
    pub fn mutable_copy_file(&self, name: &str) -> bool {
        self.engine.mutable_copy_file(name)
    }

    pub fn database_exists(path: &Path) -> bool {
        path.join("CURRENT").exists()
    }
}

/// Every table of this build, so the engine can open them all.
fn all_table_names() -> Vec<&'static str> {
    tables::ALL_TABLES
        .iter()
        .chain(room_tables::ROOM_TABLES)
        .chain(key_tables::KEY_TABLES)
        .chain(push_tables::PUSH_TABLES)
        .chain(federation_tables::FEDERATION_TABLES)
        .chain(federation_send_tables::FEDERATION_SEND_TABLES)
        .chain(search_tables::SEARCH_TABLES)
        .chain(relation_tables::RELATION_TABLES)
        .chain(appservice_tables::APPSERVICE_TABLES)
        .chain(membership_tables::MEMBERSHIP_TABLES)
        .chain(admin_tables::ADMIN_TABLES)
        .chain(device_list_tables::DEVICE_LIST_TABLES)
        .chain(remote_tables::REMOTE_TABLES)
        .chain(report_tables::REPORT_TABLES)
        .chain(thread_subscription_tables::THREAD_SUBSCRIPTION_TABLES)
        .chain(erasure_tables::ERASURE_TABLES)
        .chain(media_admin_tables::MEDIA_ADMIN_TABLES)
        .chain(encryption::ENCRYPTION_TABLES)
        .copied()
        .collect()
}

/// Serialises one kind of write (a room's events, a stream counter). The async caller waits for
/// the lock, and the guard then moves into the blocking work, so it is held until that work has
/// finished even when the caller's future is dropped mid-way (a client that went away): a second
/// writer can never enter while the first is still committing.
#[derive(Clone, Default)]
pub struct WriteLock(Arc<tokio::sync::Mutex<()>>);

impl WriteLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` on the storage threads while holding the lock.
    pub async fn run<R, F>(&self, db: &Db, work: F) -> crate::Result<R>
    where
        F: FnOnce(&Db) -> crate::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let guard = self.0.clone().lock_owned().await;
        // From here on nothing awaits before the work is handed to the storage threads, which run
        // it to the end whatever happens to this future.
        db.run(move |db| {
            let result = work(db);
            drop(guard);
            result
        })
        .await
    }

    /// Whether anyone holds or waits for this lock besides `self` (for pruning lock maps).
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// Hands out interned ids (short ids) of one kind. Seeded at start-up from the last key of the
/// table that maps the ids back, so allocation never needs a write of its own: an id whose
/// batch never committed is simply skipped.
pub struct IdAllocator {
    next: AtomicU64,
}

impl IdAllocator {
    pub fn after_last_key<V: ValueCodec>(db: &Db, table: &Table<u64, V>) -> Result<Self, StorageError> {
        let last = table.scan_from(db, &u64::MAX, ScanDirection::Reverse, 1, |_| true)?;
        let next = last.first().map_or(1, |(key, _)| key + 1);
        Ok(Self { next: AtomicU64::new(next) })
    }

    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The next id that will be handed out (for stream positions: one past the newest).
    pub fn peek(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}
