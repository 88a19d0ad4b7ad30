//! Gives memory the allocator holds but no longer uses back to the operating system.
//!
//! glibc's malloc keeps freed memory inside its arenas and returns only the free space at the
//! top of the main heap on its own. Opening RocksDB with one column family per table allocates
//! and frees about 12 MB of short-lived option and cache structures, which stayed resident: a
//! fresh server sat at 18 MiB of anonymous memory, and 11 MiB after `malloc_trim` (see
//! docs/performance.md). After a burst (an initial sync of many rooms) the same happens on a
//! larger scale. So the server trims once start-up has settled and then every
//! [`TRIM_INTERVAL`]; a trim walks the arenas' free chunks and costs about a millisecond.
//! Since the binary moved the Rust heap to mimalloc (see `main.rs`), glibc's heap holds what
//! RocksDB and the other C and C++ libraries allocate, and that is what the trim covers.
//! mimalloc hands freed pages back itself, but only after a delay and only when some thread
//! next calls into it: on a server that went quiet nothing does, so a password hash's 19 MiB
//! stayed resident until a thread ended. Each round therefore also has mimalloc return what is
//! free ([`release_allocator_pages`]), and so does every password hash.
//!
//! Start-up also runs code that the server never runs again (option parsing for a hundred
//! column families, migrations, router building), and the kernel maps 64 KiB of the binary
//! around every page touched: a fresh server had 12-19 MiB of its 37 MB of code resident, of
//! which it needed under 1 MiB while idle. Once start-up has settled ([`STARTUP_SETTLE`] after
//! the listeners opened, so that the background tasks' first rounds and the first requests are
//! over), the process unmaps those clean pages of its own executable (`MADV_DONTNEED`); what
//! later requests run is mapped again from the page cache as they need it.

use std::time::Duration;

/// How often the free memory is given back while the server runs.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// How long after the listeners open the first round runs (see the module documentation).
pub const STARTUP_SETTLE: Duration = Duration::from_secs(2);

/// Returns both allocators' free pages to the OS: glibc's (`malloc_trim`) and mimalloc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
    release_allocator_pages();
}

/// Has mimalloc return the pages freed so far to the OS now rather than at its next activity
/// after its purge delay: this thread's free pages and every arena's purgeable ones.
pub fn release_allocator_pages() {
    // SAFETY: mi_collect only touches mimalloc's own structures, under its own synchronisation;
    // any thread may call it at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Unmaps the resident pages of the binary's own code and constant data. They are clean copies
/// of the file, so nothing is lost: a later access maps the page again from the page cache (or
/// reads it in). Only our own executable's mappings are touched, and of those only private,
/// read-only ones without anonymous pages: a read-only mapping written before it was protected
/// (the relocated `.data.rel.ro`) holds private copies that `MADV_DONTNEED` would throw away.
///
/// Why not `MADV_PAGEOUT`, which this used first: on the 6.18 kernel it returned success and
/// left the pages mapped (13 MiB before, 14 MiB after).
pub fn release_startup_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::env::current_exe() else { return };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
        let exe = exe.to_string_lossy();
        for (start, end) in clean_mappings_of(&smaps, &exe) {
            // SAFETY: the range is a whole private, read-only mapping of our own executable
            // with no anonymous pages, so every resident page equals the file's; nothing writes
            // to a read-only mapping, so none becomes anonymous before this call. Dropping the
            // pages changes no content the process sees.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The address ranges of `path`'s mappings in a `/proc/self/smaps` text that are private, not
/// writable (`r-xp`, `r--p`) and hold no anonymous pages.
fn clean_mappings_of(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut clean = Vec::new();
    // The current mapping's range while it is a candidate, until its `Anonymous:` line.
    let mut candidate = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: range, perms, offset, device, inode, path.
            let perms = fields.next().unwrap_or("");
            let file = fields.nth(3);
            candidate = None;
            if file == Some(path)
                && perms.as_bytes().get(1) == Some(&b'-')
                && perms.ends_with('p')
                && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
            {
                candidate = Some((start, end));
            }
        } else if first == "Anonymous:"
            && let Some(range) = candidate.take()
            && fields.next() == Some("0")
        {
            clean.push(range);
        }
    }
    clean
}

/// Trims [`STARTUP_SETTLE`] from now, on the blocking pool, and then every [`TRIM_INTERVAL`]
/// until aborted. The first round also hands back the code only start-up ran
/// ([`release_startup_code`]).
pub fn spawn_periodic_release() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + STARTUP_SETTLE, TRIM_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            ticks.tick().await;
            let startup = std::mem::take(&mut first);
            let _ = tokio::task::spawn_blocking(move || {
                release_free_memory();
                if startup {
                    release_startup_code();
                }
            })
            .await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::clean_mappings_of;

    #[test]
    fn only_the_executables_clean_read_only_private_mappings_are_released() {
        let smaps = "\
55a9a4f7d000-55a9a57d6000 r--p 00000000 fe:00 5420271    /opt/trellis
Rss:                1816 kB
Anonymous:             0 kB
55a9a57d6000-55a9a7805000 r-xp 00858000 fe:00 5420271    /opt/trellis
Rss:               12204 kB
Anonymous:             0 kB
55a9a7805000-55a9a78e1000 r--p 02887000 fe:00 5420271    /opt/trellis
Rss:                 912 kB
Anonymous:           912 kB
55a9a78e1000-55a9a78e6000 rw-p 02961000 fe:00 5420271    /opt/trellis
Anonymous:            20 kB
7f0000000000-7f0000001000 r-xp 00000000 fe:00 1234       /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000002000-7f0000003000 r-xs 00000000 fe:00 99         /opt/trellis
Anonymous:             0 kB
7f0000004000-7f0000005000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";
        assert_eq!(
            clean_mappings_of(smaps, "/opt/trellis"),
            vec![(0x55a9a4f7d000, 0x55a9a57d6000), (0x55a9a57d6000, 0x55a9a7805000)]
        );
    }
}
