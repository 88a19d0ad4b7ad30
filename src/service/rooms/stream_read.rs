//! The event stream read in order, for consumers that follow it from a saved position (the
//! application service senders): each event as clients see it, with its room's aliases.

use crate::{
    Result,
    service::rooms::{Pdu, Rooms},
    storage::room_tables::{EVENT_META, EVENT_STREAM, ROOM_ALIASES},
};

/// One event of the stream with what namespace matching needs of its room.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub position: u64,
    pub pdu: Pdu,
    /// The room's local aliases.
    pub room_aliases: Vec<String>,
}

impl Rooms {
    /// Up to `limit` served events at stream positions `(after, upto]`, oldest first, and the
    /// last position looked at (so a consumer moves past events it skipped).
    pub async fn stream_events(&self, after: u64, upto: u64, limit: usize) -> Result<(Vec<StreamEvent>, u64)> {
        self.run(move |core, db| {
            let entries = EVENT_STREAM.between(db, after, upto, limit)?;
            let last = entries.last().map_or(after, |(position, _)| *position);
            let mut out = Vec::with_capacity(entries.len());
            for (position, (short_room, short_event)) in entries {
                if EVENT_META.get(db, &short_event)?.is_some_and(|meta| !meta.is_served()) {
                    continue;
                }
                let rules = core.rules_of_room(db, short_room)?;
                let pdu = core.event_for_client(db, short_event, &rules)?;
                let room_aliases =
                    ROOM_ALIASES.scan_prefix(db, &(pdu.room_id.clone(),))?.into_iter().map(|((_, a), ())| a).collect();
                out.push(StreamEvent { position, pdu, room_aliases });
            }
            Ok((out, last))
        })
        .await
    }
}
