//! The `trellis` binary: parses the command line, loads the config, sets up logging and runs.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use trellis::{
    cli::{BackupCommand, Cli, Command},
    config::limits::LogFormat,
};

/// The Rust heap is mimalloc's: with glibc's malloc, allocation was the largest single cost of a
/// send (`malloc`, `free` and their consolidation, about 15% of the server's CPU in a 16-room
/// send profile) and grew as the heap fragmented over long runs. mimalloc took 10-20% off the
/// CPU of a send in alternating runs, for about 2 MiB more anonymous memory at idle and 10 MiB
/// more at the 200-room benchmark's peak (see docs/performance.md). Built without transparent
/// huge pages (`no_thp`): with them, an idle server held 28 MiB of anonymous memory instead of
/// 15.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// glibc's malloc, which RocksDB and the other C and C++ libraries still use, set up for a
/// long-running server (see docs/performance.md, "Memory"):
///
/// - Arenas: glibc gives every thread that allocates while others do an arena of its own, up to
///   eight per core, and memory freed in one arena is not reused by another: with the blocking
///   pool's threads building a sync's rooms side by side, the peak resident memory of the
///   200-room benchmark was 148 MiB with the default and 115 MiB with two arenas, at the same
///   speed. One arena per core, unless `MALLOC_ARENA_MAX` says otherwise.
/// - Large blocks: glibc raises its mmap threshold each time a large block is freed, so later
///   large blocks (RocksDB's memtable arenas, sync answers) come from the heap, where they stay
///   resident after being freed. A fixed threshold of 128 KiB (glibc's starting value) and a
///   trim threshold of the same size took 11-20 MiB off that benchmark's peak in six
///   alternating runs. Unless `GLIBC_TUNABLES` or `MALLOC_MMAP_THRESHOLD_` is set.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if !set("MALLOC_ARENA_MAX") {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
            // SAFETY: called first in `main`, before any other thread exists; mallopt only
            // sets a limit for arenas made later.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
        if !set("GLIBC_TUNABLES") && !set("MALLOC_MMAP_THRESHOLD_") {
            const LARGE_BLOCK: libc::c_int = 128 * 1024;
            // SAFETY: as above; setting either threshold also turns off glibc's adjustment.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK);
                libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE_BLOCK);
            }
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    // Verifying a backup needs no configuration (it may run on another machine).
    if let Some(Command::Backup(BackupCommand::Verify { dir })) = &cli.command {
        return trellis::cli_data::verify(dir);
    }
    let loaded = match cli.load_config() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("trellis: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&loaded.config.log) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("trellis: configuration error: config key `log`: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(filter, loaded.config.log_format);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("trellis: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = loaded.config;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => trellis::server::run(config).await,
            Command::CheckConfig => {
                println!("config is valid");
                Ok(())
            }
            Command::CreateUser { username, password, admin } => {
                trellis::cli::create_user(config, &username, password, admin).await
            }
            Command::Backup(command) => trellis::cli_data::backup(config, command).await,
            Command::ExportUser { user_id, to, server } => {
                trellis::cli_data::export_user(config, &user_id, &to, &server).await
            }
            Command::Storage { compact } => trellis::cli::storage(config, compact).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trellis: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr in the configured format; colours only when stderr is a terminal (a file
/// or a pipe gets plain text) and `NO_COLOR` is not set.
fn init_logging(filter: EnvFilter, format: LogFormat) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Full => builder.init(),
        LogFormat::Compact => builder.compact().init(),
        // One object per line, the event's fields at the top level beside `timestamp`, `level`,
        // `target` and `message`, and the request span (method and endpoint) as `span`.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}
