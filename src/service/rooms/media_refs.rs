//! The media a room's events point to (Synapse's `GET /_synapse/admin/v1/room/{roomId}/media`
//! and quarantining a room's media): `content.url` and `content.info.thumbnail_url` of every
//! event of the room's timeline, live and backfilled. Encrypted events hide theirs.

use ruma::RoomId;
use serde_json::Value;

use super::Rooms;
use crate::{
    Error, Result,
    storage::{
        ScanDirection,
        room_tables::{BACKFILL, PDUS, TIMELINE},
    },
};

/// Timeline rows read per step on the storage threads.
const PAGE: usize = 500;

impl Rooms {
    /// Every `mxc://` URI the room's events name, in timeline order, without repeats
    /// (`404` for a room this server does not know).
    pub async fn media_in_room(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let room = room_id.to_owned();
        let short_room = self
            .run(move |core, db| core.interner.short_room(db, &room))
            .await?
            .ok_or_else(|| Error::not_found("Room not found"))?;
        let (mut found, mut seen) = (Vec::new(), std::collections::HashSet::new());
        for backfill in [true, false] {
            let mut cursor = 0;
            loop {
                let (uris, last) = self
                    .run(move |core, db| {
                        let rules = core.rules_of_room(db, short_room)?;
                        let table = if backfill { &BACKFILL } else { &TIMELINE };
                        let rows =
                            table.scan_from(db, &(short_room, cursor), ScanDirection::Forward, PAGE, |(r, _)| {
                                *r == short_room
                            })?;
                        let mut uris = Vec::new();
                        for (_, short) in &rows {
                            if !PDUS.contains(db, short)? {
                                continue;
                            }
                            let pdu = core.event_by_short(db, *short, &rules)?;
                            uris.extend(media_of(&pdu.content_value()));
                        }
                        let last = (rows.len() == PAGE).then(|| rows.last().map(|((_, row), _)| *row)).flatten();
                        Ok((uris, last))
                    })
                    .await?;
                for uri in uris {
                    if seen.insert(uri.clone()) {
                        found.push(uri);
                    }
                }
                match last {
                    Some(row) => cursor = row.saturating_add(1),
                    None => break,
                }
            }
        }
        Ok(found)
    }
}

/// The `mxc://` URIs of one event's content.
fn media_of(content: &Value) -> Vec<String> {
    [content.get("url"), content.get("info").and_then(|info| info.get("thumbnail_url"))]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|uri| uri.starts_with("mxc://"))
        .map(ToOwned::to_owned)
        .collect()
}
