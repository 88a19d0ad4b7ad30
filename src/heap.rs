//! Gives memory the allocator holds but no longer uses back to the operating system.
//!
//! glibc's malloc keeps freed memory inside its arenas and returns only the free space at the
//! top of the main heap on its own. Opening RocksDB with one column family per table allocates
//! and frees about 12 MB of short-lived option and cache structures, which stayed resident: a
//! fresh server sat at 18 MiB of anonymous memory, and 11 MiB after `malloc_trim` (see
//! docs/performance.md). After a burst (an initial sync of many rooms) the same happens on a
//! larger scale. So the server trims once when it has started and then every
//! [`TRIM_INTERVAL`]; a trim walks the arenas' free chunks and costs about a millisecond.
//! Since the binary moved the Rust heap to mimalloc (see `main.rs`), which hands freed pages
//! back on its own after a short delay, glibc's heap holds what RocksDB and the other C and C++
//! libraries allocate, and that is what the trim covers.
//!
//! Start-up also runs code that the server never runs again (option parsing for a hundred
//! column families, migrations, router building), and the kernel maps 64 KiB of the binary
//! around every page touched: a fresh server had 19 MiB of its 33 MB of code resident, of which
//! it needed under 1 MiB while idle. Once, after start-up, those clean code pages are handed back
//! (`MADV_PAGEOUT`); what later requests run is read in again as they need it.

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

/// Hands the pages of the binary's own code and read-only data back to the kernel: they are
/// clean copies of the file, so nothing is lost; a later fault reads a page in again. Only the
/// mappings of our own executable are touched (shared libraries' pages are shared with other
/// processes). Kernels before 5.4 refuse `MADV_PAGEOUT`; the refusal is ignored.
pub fn release_startup_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::env::current_exe() else { return };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
        let exe = exe.to_string_lossy();
        for (start, end) in clean_mappings_of(&maps, &exe) {
            // SAFETY: the range is a whole mapping of our own executable that /proc/self/maps
            // listed as read-only (code or constant data, never written after relocation);
            // MADV_PAGEOUT only drops resident copies of it, it does not change the mapping.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// The address ranges of `path`'s mappings in a `/proc/self/maps` text that are private and not
/// writable (`r-xp`, `r--p`). A read-only mapping that was written before being protected (the
/// relocated `.data.rel.ro`) holds anonymous copies; the kernel keeps those for lack of swap.
fn clean_mappings_of(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let file = fields.nth(3)?;
            if file != path || perms.as_bytes().get(1) != Some(&b'-') || !perms.ends_with('p') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
        })
        .collect()
}

/// Trims now, on the blocking pool, and then every [`TRIM_INTERVAL`] until aborted. The first
/// round also hands back the code only start-up ran ([`release_startup_code`]).
pub fn spawn_periodic_release() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_INTERVAL);
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
    fn only_the_executables_read_only_private_mappings_are_released() {
        let maps = "\
55a9a4f7d000-55a9a57d6000 r--p 00000000 fe:00 5420271    /opt/trellis
55a9a57d6000-55a9a7805000 r-xp 00858000 fe:00 5420271    /opt/trellis
55a9a78e1000-55a9a78e6000 rw-p 02961000 fe:00 5420271    /opt/trellis
7f0000000000-7f0000001000 r-xp 00000000 fe:00 1234       /usr/lib/libc.so.6
7f0000002000-7f0000003000 r-xs 00000000 fe:00 99         /opt/trellis
7f0000004000-7f0000005000 rw-p 00000000 00:00 0
";
        assert_eq!(
            clean_mappings_of(maps, "/opt/trellis"),
            vec![(0x55a9a4f7d000, 0x55a9a57d6000), (0x55a9a57d6000, 0x55a9a7805000)]
        );
    }
}
