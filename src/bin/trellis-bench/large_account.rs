//! `--large-account ROOMS:MEMBERS`: the large-account scenario of #19. Registers MEMBERS users,
//! creates ROOMS rooms, joins every user to every room (eight lanes at once, as
//! `--room-members` does), sends a few messages per room, then measures the initial `/sync` of
//! one member: with no filter, and with the filter Element Web's SDK (matrix-js-sdk) uploads
//! (lazy-loaded members, a short timeline), reporting each answer's time and size. The run
//! replaces the standard one.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Options,
    client::{Client, User, urlencode},
    report::{Report, latencies, record_latencies},
};

/// Requests in flight during the setup.
const PARALLEL: usize = 8;

/// Messages sent into each room after the joins.
const MESSAGES_PER_ROOM: usize = 3;

/// matrix-js-sdk's default filter as Element Web starts it: lazy-loaded members
/// (`lazyLoadMembers: true`) and the SDK's default `initialSyncLimit` of 8, with thread
/// notification counts. (Element X uses sliding sync, not this endpoint.)
const ELEMENT_FILTER: &str =
    r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":8,"unread_thread_notifications":true}}}"#;

/// Parses `ROOMS:MEMBERS`.
pub(crate) fn parse(spec: &str) -> Result<(usize, usize), String> {
    let (rooms, members) = spec.split_once(':').ok_or("--large-account takes ROOMS:MEMBERS")?;
    let rooms = rooms.parse().map_err(|_| "--large-account: ROOMS is not a number")?;
    let members: usize = members.parse().map_err(|_| "--large-account: MEMBERS is not a number")?;
    if members == 0 {
        return Err("--large-account: at least one member".into());
    }
    Ok((rooms, members))
}

/// Runs the scenario; `spec` is the flag's value.
pub(crate) async fn large_account(client: &Client, options: &Options, spec: &str) -> Result<Report, String> {
    let (room_count, member_count) = parse(spec)?;
    let mut report = Report::default();
    let setup = Instant::now();

    eprintln!("[1/4] registering {member_count} users");
    let started = Instant::now();
    let members = in_lanes(member_count, |i| {
        let (client, secret, name) =
            (client.clone(), options.registration_secret.clone(), format!("{}_large_{i}", options.prefix));
        async move { client.register(&secret, &name).await.ok_or_else(|| "registration failed".to_owned()) }
    })
    .await?;
    report.add("registrations", format!("{member_count} in {:.1} s", started.elapsed().as_secs_f64()));

    eprintln!("[2/4] creating {room_count} rooms");
    let started = Instant::now();
    let creator = members[0].token.clone();
    let rooms = in_lanes(room_count, |_| {
        let (client, token) = (client.clone(), creator.clone());
        async move { client.create_room(&token).await }
    })
    .await?;
    report.add("room creation", format!("{room_count} in {:.1} s", started.elapsed().as_secs_f64()));

    eprintln!("[3/4] joining {} users to every room", member_count - 1);
    let started = Instant::now();
    let tokens: Vec<String> = members.iter().skip(1).map(|m| m.token.clone()).collect();
    // Lanes take users in turn; each user joins the rooms in order, so rooms grow together.
    in_lanes(tokens.len(), |i| {
        let (client, token, rooms) = (client.clone(), tokens[i].clone(), rooms.clone());
        async move {
            for room in &rooms {
                client.join(&token, room).await.ok_or("join failed")?;
            }
            Ok(())
        }
    })
    .await?;
    let joins = tokens.len() * rooms.len();
    let elapsed = started.elapsed();
    report.add(
        "joins",
        format!("{joins} in {:.1} s ({:.1}/s)", elapsed.as_secs_f64(), joins as f64 / elapsed.as_secs_f64().max(1e-9)),
    );
    report.figure("joins", joins as f64 / elapsed.as_secs_f64().max(1e-9), "joins/s");
    in_lanes(rooms.len(), |i| {
        let (client, token, room) = (client.clone(), creator.clone(), rooms[i].clone());
        async move {
            for n in 0..MESSAGES_PER_ROOM {
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/large{n}", urlencode(&room));
                let body = json!({"msgtype": "m.text", "body": format!("large account {n}")});
                client.call(reqwest::Method::PUT, &path, Some(&token), Some(&body)).await.ok_or("send failed")?;
            }
            Ok(())
        }
    })
    .await?;
    report.add("setup", format!("{:.1} s", setup.elapsed().as_secs_f64()));

    eprintln!("[4/4] initial syncs of a user in {room_count} rooms of {member_count} members");
    let reader = members.last().ok_or("no members")?;
    for (label, filter) in [("no filter", None), ("Element's filter", Some(ELEMENT_FILTER))] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..options.large_account_syncs.max(1) {
            let (elapsed, bytes) = initial_sync(client, reader, filter).await?;
            times.push(elapsed);
            size = bytes;
        }
        let name = format!("initial sync, {label}");
        report.add(&format!("{name}, first"), format!("{:.1} ms", times[0].as_secs_f64() * 1000.0));
        report.figure(&format!("{name}, first"), times[0].as_secs_f64() * 1000.0, "ms");
        record_latencies(&mut report, &name, &mut times);
        report.add(&name, latencies(times));
        report.add(&format!("{name}, answer size"), format!("{:.1} KiB", size as f64 / 1024.0));
        report.figure(&format!("{name}, answer size"), size as f64 / 1024.0, "KiB");
    }
    Ok(report)
}

/// One initial `/sync` (`timeout=0`), its time and the bytes of its answer.
async fn initial_sync(client: &Client, user: &User, filter: Option<&str>) -> Result<(Duration, usize), String> {
    let mut path = format!("{}/_matrix/client/v3/sync?timeout=0", client.base);
    if let Some(filter) = filter {
        path.push_str(&format!("&filter={}", urlencode(filter)));
    }
    let started = Instant::now();
    let response = client.http.get(path).bearer_auth(&user.token).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("initial sync failed: {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((started.elapsed(), body.len()))
}

/// Runs `task(i)` for `i` in `0..count`, [`PARALLEL`] at a time, and returns the results in
/// order.
async fn in_lanes<T, F, Fut>(count: usize, task: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut handles = Vec::with_capacity(count);
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    for i in 0..count {
        let permit = semaphore.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let future = task(i);
        handles.push(tokio::spawn(async move {
            let result = future.await;
            drop(permit);
            result
        }));
    }
    let mut out = Vec::with_capacity(count);
    for handle in handles {
        out.push(handle.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}
