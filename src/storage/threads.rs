//! The storage threads: a fixed set of threads that run the database's blocking work
//! ([`Db::run`](super::Db::run)), so that reads and writes never stall the async runtime.
//!
//! Why not tokio's blocking pool: it starts a thread for every piece of work that finds no idle
//! thread, up to 512, and ends them after 10 s idle; under load a 2-core server ran 20 to 30,
//! and a burst could start hundreds, each with its own allocator heap and stack. A fixed set
//! fed from one queue bounds that and stays warm. Not fewer: with four threads the p99 of
//! sends into 16 rooms rose by 3-4 ms, as short reads queued behind longer writes where the
//! kernel would have interleaved them, so the default is four per core and at least 16. Work
//! that is not the database's (password hashing, media files, backups) stays on tokio's pool,
//! so a slow job there never holds up a read.
//!
//! Work handed over runs to its end even when the future waiting for it is dropped, as with
//! `spawn_blocking`; a panic in it is reported to the waiter as an error and the thread lives
//! on. When the last handle on the threads goes away they finish the queued work and end.

use std::{
    collections::VecDeque,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is only pushed to and popped from: a panic elsewhere leaves it whole.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A handle on the storage threads; they end when it is dropped.
pub struct StorageThreads {
    shared: Arc<Shared>,
}

/// How many threads to run when the config leaves it to us (see the module documentation).
pub fn default_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).max(16)
}

impl StorageThreads {
    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        for index in 0..count.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("trellis-storage-{index}")).spawn(move || serve(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Runs `work` on one of the threads and waits for its result without blocking.
    pub async fn run<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
        let (send, receive) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| panic_message(&*panic));
            // The waiter may be gone (its request was dropped); the work is done either way.
            let _ = send.send(result);
        });
        {
            let mut queue = self.shared.queue();
            queue.jobs.push_back(job);
        }
        self.shared.ready.notify_one();
        match receive.await {
            Ok(result) => result,
            Err(_) => Err("storage thread ended before the work ran".to_owned()),
        }
    }
}

impl Drop for StorageThreads {
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.ready.notify_all();
    }
}

/// One thread's loop: take the oldest job, run it; end once closed and nothing is left.
fn serve(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        job();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("storage work panicked: {text}")
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_storage_threads_and_returns_its_result() {
        let threads = StorageThreads::start(2).unwrap();
        let name = threads.run(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert!(name.unwrap().starts_with("trellis-storage-"));
        assert_eq!(threads.run(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_thread_lives_on() {
        let threads = StorageThreads::start(1).unwrap();
        let error = threads.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(error.contains("boom"), "{error}");
        assert_eq!(threads.run(|| 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn work_whose_waiter_went_away_still_runs_to_the_end() {
        let threads = StorageThreads::start(1).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let (started_send, started) = std::sync::mpsc::channel();
        let counter = done.clone();
        let waiter = threads.run(move || {
            let _ = started_send.send(());
            std::thread::sleep(Duration::from_millis(50));
            counter.fetch_add(1, Ordering::SeqCst);
        });
        // Polled once (so the job is queued), then dropped as a request's future would be.
        let _ = tokio::time::timeout(Duration::from_millis(1), waiter).await;
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        // The next job runs after it on the one thread, so it sees the count.
        assert_eq!(threads.run(move || done.load(Ordering::SeqCst)).await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_at_once_all_get_their_own_result() {
        let threads = Arc::new(StorageThreads::start(3).unwrap());
        let waiters: Vec<_> = (0..200u64)
            .map(|n| {
                let threads = threads.clone();
                tokio::spawn(async move { threads.run(move || n * 2).await })
            })
            .collect();
        for (n, waiter) in waiters.into_iter().enumerate() {
            assert_eq!(waiter.await.unwrap().unwrap(), n as u64 * 2);
        }
    }
}
