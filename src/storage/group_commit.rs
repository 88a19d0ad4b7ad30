//! Group commit of deferred writes: a batch written without a sync of the write-ahead log is
//! made durable by one shared sync, which a dedicated thread runs for every batch written
//! before it started.
//!
//! Why: a room's sends are serialised by the room's write lock, so when each send synced its
//! own batch under that lock, sends into one room never shared a sync. A deferred write
//! ([`Db::write_deferred`](super::Db::write_deferred)) goes to the log (and the memtables) at
//! once, unsynced, under the caller's lock; the caller releases the lock and waits for
//! [`GroupCommit::durable`]; meanwhile the next send of the room is written, and one sync covers
//! both. The syncer coalesces: whenever batches are waiting it takes the newest ticket, syncs
//! the log once ([`Engine::sync_wal`]) and releases every ticket up to it.
//!
//! A batch written but not synced is readable by anyone who reads its rows, and a machine crash
//! before the sync loses it. So the caller hands in what makes the batch visible (for an event,
//! releasing its stream position, which /sync, /messages, the notifier and the federation
//! sender read up to): it runs only after the sync, on the syncer's thread, in ticket order.
//! What the log loses in a crash is always a suffix of it (it is written in order and replayed
//! up to the first missing record), so a later batch that built on an unsynced one (the next
//! event of a room naming it as prev event) is never kept without it.
//!
//! A failed sync fails every waiter it was to cover (their requests get an error); their
//! batches stay invisible, and the syncer tries again while batches wait.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard, Weak},
    time::Duration,
};

use tokio::sync::watch;

use super::{StorageError, engine::Engine};

/// What runs once the batch it was written with is durable.
pub type AfterSync = Box<dyn FnOnce() + Send>;

/// A deferred batch's place in the order of syncs: durable once the syncer reaches it.
/// Ticket 0 is durable from the start (a write that was synced, or an engine without a log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// How far the syncer got, as waiters see it.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Every ticket up to this one was covered by a sync that failed (and not by a later one
    /// that succeeded).
    failed: u64,
}

#[derive(Default)]
struct State {
    /// The newest ticket handed out.
    written: u64,
    /// The newest ticket a successful sync covered.
    synced: u64,
    /// What to run after the sync covering each ticket, in ticket order.
    after: VecDeque<(u64, AfterSync)>,
    /// Set when the database handle goes away: the thread syncs what is left and ends.
    closed: bool,
    /// Syncs run by the syncer (for logs and tests).
    syncs: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a ticket is handed out or the handle closes.
    work: Condvar,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain numbers and closures not yet run: a panic elsewhere leaves nothing half-changed.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The syncer of one database: a thread and the tickets it syncs.
pub struct GroupCommit {
    shared: Arc<Shared>,
}

/// Counters of the syncer since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Deferred batches written.
    pub batches: u64,
    /// Syncs the syncer ran for them (each covering every batch written before it started).
    pub syncs: u64,
}

impl GroupCommit {
    /// Starts the syncer thread over `engine`. The thread holds the engine weakly, and ends when
    /// this handle is dropped (after a last sync of what is pending).
    pub fn start(engine: Weak<dyn Engine>) -> Result<Self, StorageError> {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new(), progress });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || run(&thread_shared, &engine))
            .map_err(|e| StorageError(format!("cannot start the log syncer: {e}")))?;
        Ok(Self { shared })
    }

    /// Hands out the ticket of a batch just written without a sync; `after` runs once a sync
    /// covers it. Call it after the write has returned, so the next sync started covers it.
    pub fn written(&self, after: AfterSync) -> Ticket {
        let mut state = self.shared.state();
        state.written += 1;
        let ticket = state.written;
        state.after.push_back((ticket, after));
        drop(state);
        self.shared.work.notify_one();
        Ticket(ticket)
    }

    /// The ticket of the newest batch written so far: waiting for it waits until everything
    /// written before now is durable (for an answer that repeats one given to another request).
    pub fn newest(&self) -> Ticket {
        Ticket(self.shared.state().written)
    }

    /// Waits until a sync covers `ticket`. Cancel-safe: the sync happens whether anyone waits.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StorageError> {
        if ticket.0 == 0 {
            return Ok(());
        }
        let mut progress = self.shared.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.synced >= ticket.0 || p.failed >= ticket.0)
            .await
            .map_err(|_| StorageError("the log syncer stopped".into()))?;
        if reached.synced >= ticket.0 { Ok(()) } else { Err(StorageError("syncing the write-ahead log failed".into())) }
    }

    pub fn stats(&self) -> GroupCommitStats {
        let state = self.shared.state();
        GroupCommitStats { batches: state.written, syncs: state.syncs }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.work.notify_one();
    }
}

/// The syncer's loop: wait for written tickets, sync once for all of them, run what waited on
/// them, tell the waiters.
fn run(shared: &Shared, engine: &Weak<dyn Engine>) {
    loop {
        let target = {
            let mut state = shared.state();
            while state.written == state.synced && !state.closed {
                state = shared.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.written == state.synced {
                return;
            }
            state.written
        };
        // Every ticket up to `target` was handed out after its batch's write returned, so this
        // sync, which starts now, covers all of them.
        let synced = match engine.upgrade() {
            Some(engine) => engine.sync_wal(),
            None => Err(StorageError("the database is closed".into())),
        };
        match synced {
            Ok(()) => {
                let after: Vec<AfterSync> = {
                    let mut state = shared.state();
                    state.synced = target;
                    state.syncs += 1;
                    let covered = state.after.iter().take_while(|(ticket, _)| *ticket <= target).count();
                    state.after.drain(..covered).map(|(_, after)| after).collect()
                };
                for after in after {
                    after();
                }
                shared.progress.send_modify(|p| p.synced = target);
            }
            Err(error) => {
                tracing::error!(%error, "syncing the write-ahead log failed; the writes waiting for it are refused");
                shared.progress.send_modify(|p| p.failed = target);
                if shared.state().closed {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::storage::engine::{ScanDirection, ScanIter, WriteOp};

    /// An engine that only counts: batches written, and the count each sync saw.
    #[derive(Default)]
    struct Counting {
        written: AtomicU64,
        synced: AtomicU64,
        syncs: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Engine for Counting {
        fn get(&self, _: &'static str, _: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(None)
        }
        fn scan<'a>(&'a self, _: &'static str, _: &[u8], _: ScanDirection) -> Result<ScanIter<'a>, StorageError> {
            Ok(Box::new(std::iter::empty()))
        }
        fn write(&self, _: Vec<WriteOp>) -> Result<(), StorageError> {
            self.written.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn flush(&self) -> Result<(), StorageError> {
            Ok(())
        }
        fn sync_wal(&self) -> Result<(), StorageError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StorageError("disk gone".into()));
            }
            // A slow disk, so writers pile up behind a sync.
            let seen = self.written.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            self.synced.fetch_max(seen, Ordering::SeqCst);
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_returns_only_after_a_sync_that_saw_its_write_and_syncs_are_shared() {
        let engine = Arc::new(Counting::default());
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let commit = Arc::new(GroupCommit::start(Arc::downgrade(&dyn_engine)).unwrap());
        let ran_after = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (engine, commit, ran_after) = (engine.clone(), commit.clone(), ran_after.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    // The write, and its place among all writes.
                    let mine = engine.written.fetch_add(1, Ordering::SeqCst) + 1;
                    let ran = ran_after.clone();
                    let ticket = commit.written(Box::new(move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                    }));
                    commit.durable(ticket).await.unwrap();
                    // The sync that released us started after our write.
                    assert!(engine.synced.load(Ordering::SeqCst) >= mine, "released before a sync saw the write");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stats = commit.stats();
        assert_eq!(stats.batches, 400);
        assert_eq!(ran_after.load(Ordering::SeqCst), 400, "every after-sync action ran once");
        assert!(stats.syncs < stats.batches, "concurrent writers shared syncs: {stats:?}");
        assert_eq!(stats.syncs, engine.syncs.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_waiters_and_keeps_their_batches_hidden() {
        let engine = Arc::new(Counting::default());
        engine.fail.store(true, Ordering::SeqCst);
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let commit = GroupCommit::start(Arc::downgrade(&dyn_engine)).unwrap();
        let ran = Arc::new(AtomicU64::new(0));
        let counter = ran.clone();
        let ticket = commit.written(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(commit.durable(ticket).await.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing made visible without a sync");
        // The disk comes back: the next sync covers the batch, and it becomes visible.
        engine.fail.store(false, Ordering::SeqCst);
        let next = commit.written(Box::new(|| {}));
        commit.durable(next).await.unwrap();
        commit.durable(ticket).await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
