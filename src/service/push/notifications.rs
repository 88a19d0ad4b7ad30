//! `GET /notifications`: the user's stored notifications (their own, and the room-wide ones of
//! the rooms they are joined to, from their join on), newest first, paged by stream position
//! (`next_token` is the position of the last one returned; the next page holds the older ones),
//! with `read` decided by the user's read receipts in each room.

use std::collections::HashMap;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, UInt, UserId,
    api::client::push::get_notifications::v3::Notification, serde::Raw,
};

use super::counts::receipt_positions;
use crate::{
    Error, Result,
    service::Services,
    storage::{
        ScanDirection,
        push_tables::{NOTIFICATIONS, NotificationRecord, ROOM_DEFAULT_NOTIFICATIONS, ROOM_NOTIFICATIONS},
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
    let before = match from {
        None => u64::MAX,
        Some(token) => token.parse::<u64>().map_err(|_| Error::invalid_param("Invalid from token"))?,
    };
    // Never past the committed stream position: a deferred write's notification rows exist
    // before its sync makes the event visible (see `storage/group_commit.rs`).
    let before = before.min(services.rooms.current_position().saturating_add(1));
    let limit = limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)).clamp(1, MAX_LIMIT);
    let only_highlight = only.is_some_and(|only| only.split(',').any(|o| o == "highlight"));

    // The wanted rows, one more than the limit to know whether another page exists: the
    // user's own notifications, and the room-wide ones of each room they are joined to since
    // they joined (without the events they have an outcome of their own for).
    let want = limit + 1;
    let mut rows = own_rows(services, user, before, want, only_highlight).await?;
    for (room, membership) in services.rooms.user_rooms(user).await? {
        if membership.membership != "join" {
            continue;
        }
        rows.extend(room_rows(services, user, &room, (membership.position, before), want, only_highlight).await?);
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    rows.dedup_by_key(|row| row.0);
    rows.truncate(want);
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

/// Up to `want` of the user's own notifications before `before`, newest first.
async fn own_rows(
    services: &Services,
    user: &UserId,
    mut before: u64,
    want: usize,
    only_highlight: bool,
) -> Result<Vec<(u64, NotificationRecord)>> {
    let mut rows = Vec::new();
    while rows.len() < want && before > 0 {
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
    Ok(rows)
}

/// Up to `want` of the room's notifications in positions `(after, before)` that the user shares
/// (no outcome of their own), newest first.
async fn room_rows(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    (after, mut before): (u64, u64),
    want: usize,
    only_highlight: bool,
) -> Result<Vec<(u64, NotificationRecord)>> {
    let mut rows = Vec::new();
    while rows.len() < want && before > after.saturating_add(1) {
        let (user, room) = (user.to_owned(), room.to_owned());
        let start = (room.clone(), before - 1);
        let chunk = services
            .db
            .run(move |db| {
                let chunk = ROOM_DEFAULT_NOTIFICATIONS
                    .scan_from(db, &start, ScanDirection::Reverse, CHUNK, |k| k.0 == room && k.1 > after)?;
                let mut shared = Vec::with_capacity(chunk.len());
                for ((_, position), record) in &chunk {
                    if !ROOM_NOTIFICATIONS.contains(db, &(user.clone(), room.clone(), *position))? {
                        shared.push((*position, record.clone()));
                    }
                }
                Ok((chunk.len(), chunk.last().map(|((_, position), _)| *position), shared))
            })
            .await?;
        let (scanned, last, shared) = chunk;
        rows.extend(shared.into_iter().filter(|(_, record)| !only_highlight || record.highlight));
        match last {
            Some(last) if scanned == CHUNK => before = last,
            _ => break,
        }
    }
    Ok(rows)
}
