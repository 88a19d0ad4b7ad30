//! The fixed-duration send mode (`--send-seconds S`): `--connections C` concurrent connections,
//! each sending `m.room.message` as fast as the server answers for S seconds, as `--users`
//! users into `--rooms` rooms (connection i sends as user i mod U, into the rooms in turn), like
//! a wrk run. It reports requests/s, p50/p99 latency, errors and, with `--pid`, the server's CPU
//! time per send (user + system time from `/proc/PID/stat`). `--repeat N` runs N times back to
//! back on the same rooms, so history grows, and reports each run's rate relative to the first
//! (the flat-cost check: a send should not get dearer as the room's history grows). The CPU time
//! is split into the storage engine's background threads (RocksDB's flushes and compactions,
//! threads named `rocksdb:*`) and the rest, to tell a growing cost in the send path from one in
//! compaction.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    Options,
    client::{Client, User, urlencode},
    report::{Report, percentile},
};

/// Linux reports process times in clock ticks of `USER_HZ`, 100 on every architecture it runs
/// on (the kernel's ABI, whatever its internal tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of process `pid` so far, in seconds (fields 14 and 15 of
/// `/proc/PID/stat`, counted after the command name, which may hold spaces).
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?)
}

/// User plus system CPU time, in seconds, of a process's or a thread's `stat` file.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// CPU seconds so far of process `pid`'s live threads whose name starts with `prefix`
/// (`/proc/PID/task/TID/stat`). Threads that have exited are not counted, so this is for
/// long-lived threads such as RocksDB's background pool.
fn thread_cpu_seconds(pid: Option<u32>, prefix: &str) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{}/task", pid?)).ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((head, _)) = stat.rsplit_once(')') else { continue };
        let name = head.split_once('(').map_or("", |(_, name)| name);
        if !name.starts_with(prefix) {
            continue;
        }
        total += stat_cpu_seconds(&stat).unwrap_or(0.0);
    }
    Some(total)
}

/// The machine's 1-minute load average, for the notes next to a figure.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// One run's figures.
struct Run {
    sent: usize,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu_seconds: Option<f64>,
    /// The part of `cpu_seconds` spent in RocksDB's background threads.
    storage_background_seconds: Option<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Registers the users, creates the rooms, joins everyone to every room, then runs the sends
/// `--repeat` times.
pub(crate) async fn send_load(client: &Client, options: &Options, report: &mut Report) -> Result<(), String> {
    let users = options.users.max(1);
    eprintln!("[1/2] registering {users} users, creating {} rooms and joining", options.rooms);
    let mut senders = Vec::new();
    for i in 0..users {
        let user = client
            .register(&options.registration_secret, &format!("{}_{i}", options.prefix))
            .await
            .ok_or("registration failed")?;
        senders.push(Arc::new(user));
    }
    let mut rooms = Vec::new();
    for _ in 0..options.rooms.max(1) {
        rooms.push(client.create_room(&senders[0].token).await?);
    }
    for user in senders.iter().skip(1) {
        for room in &rooms {
            client.join(&user.token, room).await.ok_or("join failed")?;
        }
    }
    let rooms = Arc::new(rooms);
    let setup_failures = client.failures.load(Ordering::Relaxed);

    let repeat = options.repeat.max(1);
    let mut runs: Vec<Run> = Vec::new();
    for run in 0..repeat {
        let load = load_average().map_or("?".to_owned(), |l| format!("{l:.2}"));
        eprintln!(
            "[2/2] run {}/{repeat}: {} connections, {} users, {} rooms, {} s (load average {load})",
            run + 1,
            options.connections,
            users,
            rooms.len(),
            options.send_seconds
        );
        let current = one_run(client, options, &senders, &rooms, run).await?;
        let first_rate = runs.first().map_or(current.rate(), Run::rate);
        let mut latencies = current.latencies.clone();
        latencies.sort();
        let cpu = current.cpu_seconds.map(|cpu| cpu * 1000.0 / current.sent.max(1) as f64);
        let background = current.storage_background_seconds.map(|cpu| cpu * 1000.0 / current.sent.max(1) as f64);
        report.add(
            &format!("send load run {}", run + 1),
            format!(
                "{:.1} requests/s ({:.2} of the first), p50 {:.1} ms, p99 {:.1} ms, {} errors{}{}, load average {load}",
                current.rate(),
                current.rate() / first_rate.max(1e-9),
                percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
                percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
                current.errors,
                cpu.map_or(String::new(), |cpu| format!(", server CPU {cpu:.2} ms/send")),
                background.map_or(String::new(), |cpu| format!(" (RocksDB background threads {cpu:.3})")),
            ),
        );
        let name = if run == 0 { "send load".to_owned() } else { format!("send load run {}", run + 1) };
        report.figure(&format!("{name} rate"), current.rate(), "requests/s");
        report.figure(&format!("{name} p50"), percentile(&latencies, 0.50).as_secs_f64() * 1000.0, "ms");
        report.figure(&format!("{name} p99"), percentile(&latencies, 0.99).as_secs_f64() * 1000.0, "ms");
        report.figure(&format!("{name} errors"), current.errors as f64, "requests");
        if let Some(cpu) = cpu {
            report.figure(&format!("{name} server CPU per send"), cpu, "ms");
        }
        if let Some(background) = background {
            report.figure(&format!("{name} storage background CPU per send"), background, "ms");
        }
        if run > 0 {
            report.figure(&format!("{name} rate / first"), current.rate() / first_rate.max(1e-9), "ratio");
        }
        runs.push(current);
    }
    if repeat > 1 {
        let first = runs[0].rate();
        let worst = runs.iter().map(Run::rate).fold(f64::INFINITY, f64::min);
        // A run faster than the first is no growing cost; a slower one must stay within 10%.
        let within = worst / first.max(1e-9) >= 0.90;
        report.add(
            "send load flat cost",
            format!(
                "slowest run {:.2} of the first; no run more than 10% slower than the first: {}",
                worst / first.max(1e-9),
                if within { "yes" } else { "no" }
            ),
        );
        report.figure("send load slowest / first", worst / first.max(1e-9), "ratio");
    }
    let total_sent: usize = runs.iter().map(|r| r.sent).sum();
    report.add("messages sent", total_sent.to_string());
    report.figure("messages sent", total_sent as f64, "messages");
    report.add("failed setup requests", setup_failures.to_string());
    Ok(())
}

/// One run of `--send-seconds`: every connection sends until the deadline.
async fn one_run(
    client: &Client,
    options: &Options,
    senders: &[Arc<User>],
    rooms: &Arc<Vec<String>>,
    run: usize,
) -> Result<Run, String> {
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(options.pid);
    let background_before = thread_cpu_seconds(options.pid, "rocksdb:");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.send_seconds);
    let mut tasks = Vec::new();
    for connection in 0..options.connections.max(1) {
        let (client, rooms, errors) = (client.clone(), rooms.clone(), errors.clone());
        let user = senders[connection % senders.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let room = &rooms[(connection + n) % rooms.len()];
                let body = json!({"msgtype": "m.text", "body": format!("load {run} {connection} {n}")});
                let path =
                    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/l{run}-{connection}-{n}", urlencode(room));
                let sent = Instant::now();
                if client.call(reqwest::Method::PUT, &path, Some(&user.token), Some(&body)).await.is_some() {
                    latencies.push(sent.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.append(&mut task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    let cpu_seconds = cpu_before.zip(cpu_seconds(options.pid)).map(|(before, after)| after - before);
    let storage_background_seconds =
        background_before.zip(thread_cpu_seconds(options.pid, "rocksdb:")).map(|(before, after)| after - before);
    Ok(Run {
        sent: latencies.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies,
        cpu_seconds,
        storage_background_seconds,
    })
}
