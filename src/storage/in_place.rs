//! Storage work run in place: a request that makes several short reads in a row (a woken
//! `/sync` of a few rooms) can run them all on one blocking thread instead of handing each read
//! to the storage threads and back. Every hand-over wakes a parked thread and then the task's
//! worker again, which on a small, busy machine costs more than the reads themselves.
//!
//! [`in_place`] moves the current task's worker thread out of the async runtime
//! (`tokio::task::block_in_place`: the runtime hands its other tasks to another thread) and runs
//! the future to completion there; [`Db::run`](super::Db::run) calls inside it run their work
//! directly. The runtime never stalls, as with the storage threads. The future can no longer be
//! dropped half-way (a client going away), so it runs to the end as pool work does.

use std::{cell::Cell, future::Future};

thread_local! {
    /// Set while this thread runs a future with [`in_place`].
    static IN_PLACE: Cell<bool> = const { Cell::new(false) };
}

/// Whether storage work on this thread runs in place (see the module documentation).
pub(super) fn active() -> bool {
    IN_PLACE.with(Cell::get)
}

/// Runs `future` with its storage work in place, on a multi-threaded runtime; elsewhere (a
/// single-threaded test runtime, where the worker cannot be moved out) it is awaited as usual.
pub async fn in_place<F: Future>(future: F) -> F::Output {
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => handle,
        _ => return future.await,
    };
    tokio::task::block_in_place(move || {
        let was = IN_PLACE.with(|flag| flag.replace(true));
        // Restored however the future ends (a panic unwinds through here).
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                IN_PLACE.with(|flag| flag.set(self.0));
            }
        }
        let _restore = Restore(was);
        handle.block_on(future)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_work_runs_on_the_calling_thread_only_inside() {
        assert!(!active());
        let (inside, thread) = in_place(async { (active(), std::thread::current().id()) }).await;
        assert!(inside);
        assert_eq!(thread, std::thread::current().id());
        assert!(!active());
    }

    #[tokio::test]
    async fn a_single_threaded_runtime_awaits_as_usual() {
        assert!(!in_place(async { active() }).await);
    }
}
