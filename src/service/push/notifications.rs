//! `GET /notifications`: the user's stored notifications, newest first, paged by stream
//! position (`next_token` is the position of the last one returned; the next page holds the
//! older ones), with `read` decided by the user's read receipts in each room.

use std::collections::HashMap;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, UInt, UserId,
    api::client::push::get_notifications::v3::Notification, serde::Raw,
};

use super::counts::receipt_positions;
use crate::{
    Error, Result,
    service::Services,
    storage::{
        ScanDirection,
        push_tables::{NOTIFICATIONS, NotificationRecord},
    },
};

/// Notifications per page when the client names no limit, and the most it may ask for.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Rows read from storage at a time while filtering (`only=highlight`).
const CHUNK: usize = 64;

/// A page of `user`'s notifications before the `from` token, and the token of the next page.
pub async fn page(
    services: &Services,
    user: &UserId,
    from: Option<&str>,
    limit: Option<UInt>,
    only: Option<&str>,
) -> Result<(Vec<Notification>, Option<String>)> {
    let mut before = match from {
        None => u64::MAX,
        Some(token) => token.parse::<u64>().map_err(|_| Error::invalid_param("Invalid from token"))?,
    };
    let limit = limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)).clamp(1, MAX_LIMIT);
    let only_highlight = only.is_some_and(|only| only.split(',').any(|o| o == "highlight"));

    // The wanted rows, one more than the limit to know whether another page exists.
    let mut rows: Vec<(u64, NotificationRecord)> = Vec::new();
    while rows.len() <= limit && before > 0 {
        let owner = user.to_owned();
        let start = (owner.clone(), before - 1);
        let chunk = services
            .db
            .run(move |db| Ok(NOTIFICATIONS.scan_from(db, &start, ScanDirection::Reverse, CHUNK, |k| k.0 == owner)?))
            .await?;
        let exhausted = chunk.len() < CHUNK;
        for ((_, position), record) in chunk {
            before = position;
            if !only_highlight || record.highlight {
                rows.push((position, record));
            }
        }
        if exhausted {
            break;
        }
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_token = if more { rows.last().map(|(position, _)| position.to_string()) } else { None };

    let mut receipts: HashMap<OwnedRoomId, HashMap<String, u64>> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (position, record) in rows {
        let Ok(event_id) = OwnedEventId::try_from(record.event_id.as_str()) else { continue };
        // An event the user may no longer see is left out.
        let Some(event) = services.rooms.event_for(user, &event_id).await? else { continue };
        if !receipts.contains_key(&record.room_id) {
            let positions = receipt_positions(services, user, &record.room_id).await?;
            receipts.insert(record.room_id.clone(), positions);
        }
        let room_receipts = &receipts[&record.room_id];
        let thread = record.thread.as_deref().unwrap_or("main");
        let read_upto =
            room_receipts.get("").copied().unwrap_or(0).max(room_receipts.get(thread).copied().unwrap_or(0));
        let raw = Raw::new(&event.pdu.to_client_event())
            .map_err(|e| Error::internal(format!("cannot serialise event: {e}")))?
            .cast_unchecked();
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(record.ts).unwrap_or(UInt::MAX));
        out.push(Notification::new(record.actions, raw, position <= read_upto, record.room_id, ts));
    }
    Ok((out, next_token))
}
