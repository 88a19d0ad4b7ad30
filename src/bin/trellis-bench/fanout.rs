//! The fan-out scenario (`--fanout-clients N`, #19): one busy room whose members long-poll
//! `/sync` while senders send into it at a fixed rate, measured twice: alone, then with N idle
//! users long-polling too (in idle rooms of `--fanout-idle-room-size` members each, where
//! nothing happens). It reports the busy members' send-to-receive latency and the server's CPU
//! time during each phase (`/proc/PID/stat` utime+stime, with `--pid`), so what the idle
//! long-polls cost shows as the difference. It also counts idle long-polls that returned before
//! their timeout (none should: nothing concerns them).
//!
//! Every long-poll holds a connection: raise the open-file limit (`ulimit -n`) of both the
//! server and the benchmark above twice N.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{
    Options,
    client::{Client, User, bodies_in, urlencode},
    report::{Report, latencies, record_latencies},
};

/// How long an idle user's long-poll waits (below the client's 120 s request timeout).
const IDLE_POLL_MS: u64 = 90_000;
/// Registrations, joins and initial syncs in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 8;

/// The server's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    crate::send_load::cpu_seconds(pid).map(Duration::from_secs_f64)
}

async fn register_many(client: &Client, options: &Options, label: &str, count: usize) -> Result<Vec<User>, String> {
    let names: Vec<String> = (0..count).map(|i| format!("{}_{label}{i}", options.prefix)).collect();
    let users: Vec<Option<User>> = stream::iter(names)
        .map(|name| async move { client.register(&options.registration_secret, &name).await })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    users.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| "registration failed".to_owned())
}

async fn join_all(client: &Client, users: &[&User], room: &str) {
    stream::iter(users)
        .for_each_concurrent(SETUP_CONCURRENCY, |user| async move {
            client.join(&user.token, room).await;
        })
        .await;
}

async fn since_now(client: &Client, user: &User) -> Result<String, String> {
    let body = client.sync(user, None, 0).await.ok_or("initial sync failed")?;
    Ok(body["next_batch"].as_str().ok_or("no next_batch")?.to_owned())
}

/// Messages sent (body → when its send started) and received (one latency per member that
/// received a message another member sent).
#[derive(Default)]
struct Samples {
    sent: std::collections::HashMap<String, Instant>,
    received: Vec<Duration>,
}

/// One measured phase: the busy members long-poll while the senders send `rate` messages a
/// second for `seconds`. Returns the latencies and the server's CPU time meanwhile.
async fn busy_phase(
    client: &Client,
    options: &Options,
    members: &[Arc<User>],
    room: &str,
    phase: &str,
) -> Result<(Vec<Duration>, Option<Duration>, usize), String> {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut polls = Vec::new();
    for (index, member) in members.iter().enumerate() {
        let since = since_now(client, member).await?;
        let (client, member, samples, stop) = (client.clone(), member.clone(), samples.clone(), stop.clone());
        polls.push(tokio::spawn(async move {
            let mut since = since;
            while !stop.load(Ordering::Relaxed) {
                let Some(response) = client.sync(&member, Some(&since), 5_000).await else { break };
                let now = Instant::now();
                let Some(next) = response["next_batch"].as_str() else { break };
                since = next.to_owned();
                let mut samples = samples.lock().await;
                for body in bodies_in(&response) {
                    // Another member's message: "fanout <phase> <sender> <n>".
                    let own = body.split(' ').nth(2) == Some(index.to_string().as_str());
                    if let Some(sent) = samples.sent.get(&body).copied()
                        && !own
                    {
                        samples.received.push(now.saturating_duration_since(sent));
                    }
                }
            }
        }));
    }
    // Let every member's first long-poll reach the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let senders = options.users.clamp(1, members.len());
    let interval = Duration::from_secs_f64(senders as f64 / options.fanout_rate.max(1) as f64);
    let cpu_before = cpu_time(options.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, sender) in members.iter().take(senders).enumerate() {
        let (client, sender, samples, room) = (client.clone(), sender.clone(), samples.clone(), room.to_owned());
        let (seconds, phase) = (options.fanout_seconds, phase.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(seconds) {
                ticker.tick().await;
                let body = format!("fanout {phase} {index} {n}");
                let path =
                    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/f{phase}-{index}-{n}", urlencode(&room));
                samples.lock().await.sent.insert(body.clone(), Instant::now());
                client
                    .call(
                        reqwest::Method::PUT,
                        &path,
                        Some(&sender.token),
                        Some(&json!({"msgtype": "m.text", "body": body})),
                    )
                    .await;
                n += 1;
            }
            n
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.map_err(|e| e.to_string())?;
    }
    let cpu = cpu_before.zip(cpu_time(options.pid)).map(|(before, after)| after.saturating_sub(before));
    // The last messages' deliveries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for poll in polls {
        poll.abort();
    }
    let received = std::mem::take(&mut samples.lock().await.received);
    Ok((received, cpu, sent))
}

/// Runs the scenario and reports its figures.
pub(crate) async fn run(client: &Client, options: &Options, idle_count: usize) -> Result<Report, String> {
    let mut report = Report::default();
    let member_count = options.fanout_members.max(2);
    eprintln!("[fanout 1/4] registering {member_count} busy members and {idle_count} idle users");
    let members: Vec<Arc<User>> =
        register_many(client, options, "busy", member_count).await?.into_iter().map(Arc::new).collect();
    let idle = register_many(client, options, "idle", idle_count).await?;

    eprintln!("[fanout 2/4] creating the busy room and the idle rooms");
    let room = client.create_room(&members[0].token).await?;
    join_all(client, &members[1..].iter().map(|m| m.as_ref()).collect::<Vec<_>>(), &room).await;
    let size = options.fanout_idle_room_size.max(1);
    for group in idle.chunks(size) {
        let idle_room = client.create_room(&group[0].token).await?;
        join_all(client, &group[1..].iter().collect::<Vec<_>>(), &idle_room).await;
    }

    let samples_name = |phase: &str| format!("fan-out send-to-receive ({phase})");
    let figures =
        |report: &mut Report, phase: &str, (mut received, cpu, sent): (Vec<Duration>, Option<Duration>, usize)| {
            record_latencies(report, &samples_name(phase), &mut received);
            report.add(&samples_name(phase), latencies(received));
            if let Some(cpu) = cpu {
                let seconds = options.fanout_seconds.max(1) as f64;
                let cpu_ms = cpu.as_secs_f64() * 1000.0;
                report.add(
                    &format!("server CPU ({phase})"),
                    format!(
                        "{:.0} ms in {seconds:.0} s ({:.1}% of a core), {:.2} ms per message",
                        cpu_ms,
                        cpu_ms / seconds / 10.0,
                        cpu_ms / sent.max(1) as f64
                    ),
                );
                report.figure(&format!("server CPU ({phase})"), cpu_ms / seconds / 10.0, "% of a core");
                report.figure(&format!("server CPU per message ({phase})"), cpu_ms / sent.max(1) as f64, "ms");
            }
            report.add(&format!("messages sent ({phase})"), sent.to_string());
        };

    eprintln!("[fanout 3/4] the busy room alone, {} s", options.fanout_seconds);
    let alone = busy_phase(client, options, &members, &room, "alone").await?;
    figures(&mut report, "without idle clients", alone);

    eprintln!("[fanout 4/4] the busy room with {idle_count} idle long-polls, {} s", options.fanout_seconds);
    // Each idle user's first sync brings them online, a presence change their room-mates'
    // syncs would rightly return with: the tokens polled from are taken after all of them.
    let _: Vec<Option<String>> = stream::iter(&idle)
        .map(|user| async move { since_now(client, user).await.ok() })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let tokens: Vec<Option<String>> = stream::iter(&idle)
        .map(|user| async move { since_now(client, user).await.ok() })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let early = Arc::new(AtomicU64::new(0));
    let mut idle_polls = Vec::new();
    for (user, since) in idle.into_iter().zip(tokens) {
        let since = since.ok_or("initial sync failed")?;
        let (client, early) = (client.clone(), early.clone());
        idle_polls.push(tokio::spawn(async move {
            let mut since = since;
            loop {
                let started = Instant::now();
                let Some(response) = client.sync(&user, Some(&since), IDLE_POLL_MS).await else { return };
                if started.elapsed() < Duration::from_millis(IDLE_POLL_MS - 1_000) {
                    early.fetch_add(1, Ordering::Relaxed);
                }
                let Some(next) = response["next_batch"].as_str() else { return };
                since = next.to_owned();
            }
        }));
    }
    // Let the idle long-polls reach their wait (and the server settle after accepting them).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_idle_before = cpu_time(options.pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some((before, after)) = cpu_idle_before.zip(cpu_time(options.pid)) {
        let ms = after.saturating_sub(before).as_secs_f64() * 1000.0 / 2.0;
        report.add("server CPU with idle long-polls only", format!("{ms:.1} ms per s"));
    }
    let busy = busy_phase(client, options, &members, &room, "crowd").await?;
    figures(&mut report, &format!("with {idle_count} idle clients"), busy);
    report.add("idle long-polls that returned early", early.load(Ordering::Relaxed).to_string());
    report.figure("idle long-polls returned early", early.load(Ordering::Relaxed) as f64, "requests");
    for poll in idle_polls {
        poll.abort();
    }
    Ok(report)
}
