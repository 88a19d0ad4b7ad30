//! Gives memory the allocator holds but no longer uses back to the operating system.
//!
//! glibc's malloc keeps freed memory inside its arenas and returns only the free space at the
//! top of the main heap on its own. Opening RocksDB with one column family per table allocates
//! and frees about 12 MB of short-lived option and cache structures, which stayed resident: a
//! fresh server sat at 18 MiB of anonymous memory, and 11 MiB after `malloc_trim` (see
//! docs/performance.md). After a burst (an initial sync of many rooms) the same happens on a
//! larger scale. So the server trims once when it has started and then every
//! [`TRIM_INTERVAL`]; a trim walks the arenas' free chunks and costs about a millisecond.

use std::time::Duration;

/// How often the free memory is given back while the server runs.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// Returns the allocator's free pages to the OS (glibc's `malloc_trim`; nothing elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims now, on the blocking pool, and then every [`TRIM_INTERVAL`] until aborted.
pub fn spawn_periodic_release() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    })
}
