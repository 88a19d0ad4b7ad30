//! `--sliding-sync`: the first simplified sliding sync answer (MSC4186) and send-to-receive
//! latency through sliding sync long-polling.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Options,
    client::{Client, User, sliding_bodies, urlencode},
    report::{Report, latencies, record_latencies},
};

/// The sliding sync figures (`--sliding-sync`): the first answer for the reader's list of
/// rooms (range 0-19, timeline_limit 1), as Element X asks on start, and send-to-receive
/// latency through sliding sync long-polling.
pub(crate) async fn sliding_sync(
    client: &Client,
    options: &Options,
    reader: &User,
    sender: &User,
    rooms: &[String],
    report: &mut Report,
) -> Result<(), String> {
    eprintln!("[5/6] sliding sync: first answer for a user in {} rooms, then round trips", options.rooms);
    let body = json!({
        "conn_id": "bench",
        "lists": {"all": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}},
    });
    let started = Instant::now();
    let first = client.sliding(reader, None, 0, &body).await.ok_or("sliding sync failed")?;
    report.add("sliding sync first answer", format!("{:.1} ms", started.elapsed().as_secs_f64() * 1000.0));
    report.figure("sliding sync first answer", started.elapsed().as_secs_f64() * 1000.0, "ms");
    if options.smoke && first["lists"]["all"]["count"].as_u64() != Some(rooms.len() as u64) {
        return Err(format!(
            "the sliding sync list counts {} rooms, not {}",
            first["lists"]["all"]["count"],
            rooms.len()
        ));
    }
    let mut pos = first["pos"].as_str().ok_or("no pos")?.to_owned();
    let mut round_trips = Vec::new();
    for n in 0..options.round_trips {
        let (poll_client, poll_pos, poll_body) = (client.clone(), pos.clone(), body.clone());
        let reader_token = reader.token.clone();
        let waiting = tokio::spawn(async move {
            let reader = User { token: reader_token };
            let mut pos = poll_pos;
            loop {
                let answer = poll_client.sliding(&reader, Some(&pos), 30_000, &poll_body).await?;
                pos = answer["pos"].as_str()?.to_owned();
                if sliding_bodies(&answer).iter().any(|b| b.starts_with("sliding round trip")) {
                    return Some((Instant::now(), pos));
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/srt{n}", urlencode(&rooms[0]));
        let message = json!({"msgtype": "m.text", "body": format!("sliding round trip {n}")});
        let sent = Instant::now();
        client.call(reqwest::Method::PUT, &path, Some(&sender.token), Some(&message)).await;
        match waiting.await.map_err(|e| e.to_string())? {
            Some((received, next)) => {
                round_trips.push(received.saturating_duration_since(sent));
                pos = next;
            }
            None => return Err("the sliding sync long-poll failed".into()),
        }
    }
    record_latencies(report, "sliding sync send-to-receive latency", &mut round_trips);
    report.add("sliding sync send-to-receive latency", latencies(round_trips));
    Ok(())
}
