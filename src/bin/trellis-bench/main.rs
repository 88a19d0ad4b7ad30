//! `trellis-bench`: a load benchmark for any Matrix homeserver, through the client-server API
//! only. It creates users (Synapse's shared-secret registration, which Trellis also serves) and
//! rooms, then measures: room creation and join rates; message send throughput and latency with
//! concurrent senders; send-to-receive latency through `/sync` long-polling; initial `/sync`
//! time for a user in R rooms of E events; incremental `/sync` cost; and the server's resident
//! memory from `/proc/<pid>/status` when `--pid` is given. `--room-members N` fills every room
//! with idle local members up to N before the sends, to compare send rates by room size.
//! `--sliding-sync` adds the same first-answer and send-to-receive figures through simplified
//! sliding sync (MSC4186). `--send-seconds S` replaces the standard run with a fixed-duration
//! many-connection send load (`--connections`, `--repeat`; `send_load.rs`), and
//! `--storage-report` ends either with the server's disk bytes per event and per table
//! (`storage.rs`). `--smoke` also checks that every
//! message sent is received exactly once through `/sync`, and exits non-zero otherwise.

mod client;
mod fanout;
mod large_account;
mod members;
mod report;
mod send_load;
mod sliding;
mod storage;

use std::{
    collections::HashSet,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::{Value, json};

use crate::{
    client::{Client, User, bodies_in, urlencode},
    members::add_members,
    report::{Report, latencies, rate, record_latencies, rss_kib},
    send_load::send_load,
    sliding::sliding_sync,
    storage::storage_report,
};

#[derive(Parser, Clone)]
#[command(name = "trellis-bench", about = "Load benchmark for Matrix homeservers (client-server API only)")]
pub(crate) struct Options {
    /// Base URL of the homeserver's client API, e.g. http://127.0.0.1:6167.
    #[arg(long)]
    pub(crate) url: String,
    /// The server's registration shared secret (Synapse's admin registration API).
    #[arg(long)]
    pub(crate) registration_secret: String,
    /// Users to create; each sends messages concurrently.
    #[arg(long, default_value_t = 4)]
    pub(crate) users: usize,
    /// Rooms to create; every user joins every room.
    #[arg(long, default_value_t = 4)]
    pub(crate) rooms: usize,
    /// Members every room has during the sends (at least the senders and the reader): the rest
    /// are idle local users, registered and joined before the sends, so send rates of small and
    /// large rooms can be compared.
    #[arg(long, default_value_t = 0)]
    pub(crate) room_members: usize,
    /// Messages each user sends in the throughput phase.
    #[arg(long, default_value_t = 50)]
    pub(crate) messages: usize,
    /// Send-to-receive round trips measured through /sync.
    #[arg(long, default_value_t = 20)]
    pub(crate) round_trips: usize,
    /// Incremental /sync calls measured.
    #[arg(long, default_value_t = 20)]
    pub(crate) incremental_syncs: usize,
    /// PID of the server process, to report its resident memory.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Seconds to leave a just-started server alone before reading its idle memory (with
    /// `--pid`), so that the figure is of a server at rest rather than of its start-up.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) settle_seconds: f64,
    /// Fail (exit 1) if any request fails or a message is not received exactly once.
    #[arg(long)]
    pub(crate) smoke: bool,
    /// Prefix of the user names this run creates (runs against one server must differ).
    #[arg(long, default_value = "bench")]
    pub(crate) prefix: String,
    /// Also measure simplified sliding sync (MSC4186): the first answer for the reader's list
    /// (range 0-19, timeline_limit 1) and send-to-receive latency through its long-polling,
    /// next to the /sync figures.
    #[arg(long)]
    pub(crate) sliding_sync: bool,
    /// Register the benchmark's users as server admins. Admins are exempt from rate limits, so
    /// a run with this flag against one without (on a server whose limits are lifted high
    /// enough never to refuse) shows what checking the limits costs.
    #[arg(long)]
    pub(crate) admin_users: bool,
    /// Fixed-duration send mode instead of the standard run: each of `--connections` connections
    /// sends messages for this many seconds (see `send_load.rs`).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) send_seconds: f64,
    /// Concurrent connections of the fixed-duration send mode.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Runs of the fixed-duration send mode, back to back on the same rooms.
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: usize,
    /// After the run, compact the database and report bytes per stored event and per table
    /// (Trellis's storage admin API; other servers get "not available").
    #[arg(long)]
    pub(crate) storage_report: bool,
    /// Run the fan-out scenario instead (`fanout.rs`): N idle users long-poll /sync while
    /// `--users` senders send into one busy room of `--fanout-members` long-polling members.
    #[arg(long)]
    pub(crate) fanout_clients: Option<usize>,
    /// Members of the fan-out scenario's busy room (the first `--users` of them send).
    #[arg(long, default_value_t = 10)]
    pub(crate) fanout_members: usize,
    /// Members of each idle room of the fan-out scenario.
    #[arg(long, default_value_t = 10)]
    pub(crate) fanout_idle_room_size: usize,
    /// Messages per second sent into the busy room (all senders together).
    #[arg(long, default_value_t = 50)]
    pub(crate) fanout_rate: usize,
    /// Seconds each fan-out phase sends for.
    #[arg(long, default_value_t = 20)]
    pub(crate) fanout_seconds: u64,
    /// Also write the figures as JSON ({metric: {"value": number, "unit": text}}) to this file.
    #[arg(long)]
    pub(crate) json: Option<std::path::PathBuf>,
    /// Instead of the standard run, the large-account scenario: ROOMS:MEMBERS (e.g. 300:300)
    /// users all joined to every room, then the initial /sync of one of them, with and without
    /// Element's filter (see `large_account.rs`).
    #[arg(long, value_name = "ROOMS:MEMBERS")]
    pub(crate) large_account: Option<String>,
    /// Initial syncs measured per filter in the large-account scenario.
    #[arg(long, default_value_t = 3)]
    pub(crate) large_account_syncs: usize,
}

async fn run(options: Options) -> Result<Report, String> {
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().map_err(|e| e.to_string())?,
        base: options.url.trim_end_matches('/').to_owned(),
        failures: Arc::new(AtomicU64::new(0)),
        admin_users: options.admin_users,
    };
    if let Some(idle) = options.fanout_clients {
        return fanout::run(&client, &options, idle).await;
    }
    if let Some(spec) = &options.large_account {
        return large_account::large_account(&client, &options, spec).await;
    }
    let mut report = Report::default();
    if options.send_seconds > 0.0 {
        send_load(&client, &options, &mut report).await?;
        if options.storage_report {
            storage_report(&client, &options, &mut report).await?;
        }
        let failures = client.failures.load(Ordering::Relaxed);
        report.add("failed requests", failures.to_string());
        if options.smoke && failures > 0 {
            return Err(format!("{failures} requests failed"));
        }
        return Ok(report);
    }
    if options.pid.is_some() && options.settle_seconds > 0.0 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(options.settle_seconds)).await;
    }
    let peak = Arc::new(AtomicU64::new(rss_kib(options.pid).unwrap_or(0)));
    if let Some(idle) = rss_kib(options.pid) {
        report.add("memory at idle (RSS)", format!("{:.1} MiB", idle as f64 / 1024.0));
        report.figure("memory at idle", idle as f64 / 1024.0, "MiB");
    }
    let sampler = options.pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_kib(Some(pid)) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });

    eprintln!("[1/6] registering {} users", options.users + 1);
    let started = Instant::now();
    let mut users = Vec::new();
    for i in 0..options.users {
        let user = client
            .register(&options.registration_secret, &format!("{}_{i}", options.prefix))
            .await
            .ok_or("registration failed")?;
        users.push(user);
    }
    let reader = client
        .register(&options.registration_secret, &format!("{}_reader", options.prefix))
        .await
        .ok_or("registration failed")?;
    report.add("registrations", rate(options.users + 1, started.elapsed()));

    eprintln!("[2/6] creating {} rooms and joining everyone", options.rooms);
    let started = Instant::now();
    let mut rooms = Vec::new();
    for _ in 0..options.rooms {
        rooms.push(client.create_room(&users[0].token).await?);
    }
    report.add("room creation", rate(options.rooms, started.elapsed()));
    report.figure("room creation", options.rooms as f64 / started.elapsed().as_secs_f64().max(1e-9), "rooms/s");
    let started = Instant::now();
    let mut joins = 0;
    for user in users.iter().skip(1).chain(std::iter::once(&reader)) {
        for room in &rooms {
            client.join(&user.token, room).await;
            joins += 1;
        }
    }
    report.add("joins", rate(joins, started.elapsed()));
    report.figure("joins", joins as f64 / started.elapsed().as_secs_f64().max(1e-9), "joins/s");
    let extra_members = options.room_members.saturating_sub(options.users + 1);
    if extra_members > 0 {
        eprintln!("[2/6] adding {extra_members} idle members to every room");
        let started = Instant::now();
        add_members(&client, &options, &rooms, extra_members).await?;
        report.add(
            "room members",
            format!(
                "{} per room ({:.1} s to register and join)",
                options.room_members,
                started.elapsed().as_secs_f64()
            ),
        );
        report.figure("room members", options.room_members as f64, "members");
    }
    let reader_start = client.sync(&reader, None, 0).await.ok_or("initial sync failed")?;
    let mut reader_since = reader_start["next_batch"].as_str().ok_or("no next_batch")?.to_owned();

    eprintln!("[3/6] {} senders x {} messages", options.users, options.messages);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, user) in users.into_iter().enumerate() {
        let (client, rooms, messages) = (client.clone(), rooms.clone(), options.messages);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for n in 0..messages {
                let room = &rooms[n % rooms.len()];
                let body = json!({"msgtype": "m.text", "body": format!("bench {index} {n}")});
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/b{index}-{n}", urlencode(room));
                let sent = Instant::now();
                if client.call(reqwest::Method::PUT, &path, Some(&user.token), Some(&body)).await.is_some() {
                    samples.push(sent.elapsed());
                }
            }
            (user, samples)
        }));
    }
    let mut users = Vec::new();
    let mut samples = Vec::new();
    for task in tasks {
        let (user, mut user_samples) = task.await.map_err(|e| e.to_string())?;
        users.push(user);
        samples.append(&mut user_samples);
    }
    let elapsed = started.elapsed();
    report.add("send throughput", rate(samples.len(), elapsed));
    report.figure("send throughput", samples.len() as f64 / elapsed.as_secs_f64().max(1e-9), "messages/s");
    record_latencies(&mut report, "send latency", &mut samples);
    report.add("send latency", latencies(samples));

    // Every message must reach the reader through /sync exactly once.
    let expected: HashSet<String> =
        (0..users.len()).flat_map(|i| (0..options.messages).map(move |n| format!("bench {i} {n}"))).collect();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().filter(|b| expected.contains(*b)).count() < expected.len() && Instant::now() < deadline {
        let response = client.sync(&reader, Some(&reader_since), 1000).await.ok_or("sync failed")?;
        seen.extend(client.bodies_delivered(&reader, &reader_since, &response).await);
        reader_since = response["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    let received = expected.iter().filter(|b| unique.contains(b)).count();
    let duplicates = seen.len() - unique.len();
    report.add("messages received via sync", format!("{received} of {} ({duplicates} duplicates)", expected.len()));
    if options.smoke && (received != expected.len() || duplicates > 0) {
        return Err(format!(
            "lost or duplicated messages: received {received} of {}, {duplicates} duplicates",
            expected.len()
        ));
    }

    eprintln!("[4/6] send-to-receive latency through /sync long-polling");
    let mut round_trips = Vec::new();
    for n in 0..options.round_trips {
        let body = format!("round trip {n}");
        let (poll_client, poll_reader_since) = (client.clone(), reader_since.clone());
        let reader_token = reader.token.clone();
        let waiting = tokio::spawn(async move {
            let reader = User { token: reader_token };
            let mut since = poll_reader_since;
            loop {
                let response = poll_client.sync(&reader, Some(&since), 30_000).await?;
                let bodies = bodies_in(&response);
                since = response["next_batch"].as_str()?.to_owned();
                if bodies.iter().any(|b| b.starts_with("round trip")) {
                    return Some((Instant::now(), since));
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/rt{n}", urlencode(&rooms[0]));
        let sent = Instant::now();
        client
            .call(reqwest::Method::PUT, &path, Some(&users[0].token), Some(&json!({"msgtype": "m.text", "body": body})))
            .await;
        match waiting.await.map_err(|e| e.to_string())? {
            Some((received, since)) => {
                round_trips.push(received.saturating_duration_since(sent));
                reader_since = since;
            }
            None => return Err("the long-poll failed".into()),
        }
    }
    record_latencies(&mut report, "send-to-receive latency", &mut round_trips);
    report.add("send-to-receive latency", latencies(round_trips));

    eprintln!("[5/6] initial sync of a user in {} rooms", options.rooms);
    let started = Instant::now();
    client.sync(&reader, None, 0).await.ok_or("initial sync failed")?;
    report.add("initial sync", format!("{:.1} ms", started.elapsed().as_secs_f64() * 1000.0));
    report.figure("initial sync", started.elapsed().as_secs_f64() * 1000.0, "ms");

    if options.sliding_sync {
        sliding_sync(&client, &options, &reader, &users[0], &rooms, &mut report).await?;
    }

    eprintln!("[6/6] {} incremental syncs with nothing new", options.incremental_syncs);
    let mut incremental = Vec::new();
    for _ in 0..options.incremental_syncs {
        let started = Instant::now();
        let response = client.sync(&reader, Some(&reader_since), 0).await.ok_or("sync failed")?;
        incremental.push(started.elapsed());
        reader_since = response["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
    }
    record_latencies(&mut report, "incremental sync", &mut incremental);
    report.add("incremental sync", latencies(incremental));

    if let Some(sampler) = sampler {
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed) as f64 / 1024.0;
        report.add("memory at peak (RSS)", format!("{peak:.1} MiB"));
        report.figure("memory at peak", peak, "MiB");
    }
    if options.storage_report {
        storage_report(&client, &options, &mut report).await?;
    }
    let failures = client.failures.load(Ordering::Relaxed);
    report.add("failed requests", failures.to_string());
    if options.smoke && failures > 0 {
        return Err(format!("{failures} requests failed"));
    }
    Ok(report)
}

fn main() -> ExitCode {
    let options = Options::parse();
    let json_path = options.json.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("trellis-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(report) => {
            report.print();
            if let Some(path) = json_path
                && let Err(error) = std::fs::write(&path, Value::Object(report.figures).to_string())
            {
                eprintln!("trellis-bench: cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("trellis-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
