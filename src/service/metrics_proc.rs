//! The process's own resource use, read from `/proc/self` (Linux only; elsewhere nothing).

/// What the metrics show of the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_secs: u64,
}

/// Reads `/proc/self/stat` (and `/proc/stat` for the boot time); `None` where there is no such
/// file.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
        text.lines().find_map(|line| line.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))
    });
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|dir| dir.count() as u64).unwrap_or(0);
    parse_stat(&stat, ticks.max(1) as u64, page.max(1) as u64, boot_time.unwrap_or(0), open_fds)
}

/// Parses `/proc/self/stat`: fields after the command name (which may hold spaces and
/// parentheses, so it ends at the last `)`), numbered as in proc(5).
fn parse_stat(stat: &str, ticks: u64, page: u64, boot_time: u64, open_fds: u64) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_ticks = field(14)? + field(15)?;
    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / ticks as f64,
        threads: field(20)?,
        start_time_secs: boot_time + field(22)? / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name() {
        let line = "4242 (trellis (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 \
                    104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(line, 100, 4096, 1_700_000_000, 9).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.threads, 7);
        assert_eq!(stats.start_time_secs, 1_700_000_010);
        assert_eq!(stats.virtual_bytes, 104_857_600);
        assert_eq!(stats.resident_bytes, 2560 * 4096);
        assert_eq!(stats.open_fds, 9);
    }

    #[test]
    fn this_process_reads() {
        if cfg!(target_os = "linux") {
            let stats = read().expect("/proc/self/stat");
            assert!(stats.resident_bytes > 0 && stats.threads >= 1 && stats.open_fds > 0);
        }
    }
}
