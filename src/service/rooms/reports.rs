//! Content reports (`/rooms/{roomId}/report/{eventId}`), kept in `EVENT_REPORTS` for the
//! server's admins. A report needs the reporter joined to the room and able to see the event;
//! anything else is `M_NOT_FOUND`, so reports reveal nothing about hidden events.

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use crate::{
    Error, Result,
    service::now_ms,
    storage::{Batch, room_tables::EVENT_REPORTS},
};

/// One stored report.
#[derive(Debug, Clone)]
pub struct EventReport {
    pub room_id: ruma::OwnedRoomId,
    pub event_id: String,
    pub reporter: OwnedUserId,
    /// `reason` and `received_ts`.
    pub report: Value,
}

impl Rooms {
    /// Records a report of an event; a second report by the same user replaces the first.
    pub async fn report_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        reporter: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let not_found = || Error::not_found("The event was not found or you are not joined to the room");
        if self.membership(reporter, room_id).await?.is_none_or(|m| m.membership != "join") {
            return Err(not_found());
        }
        self.event_for(reporter, event_id).await?.filter(|e| e.pdu.room_id == room_id).ok_or_else(not_found)?;
        let key = (room_id.to_owned(), event_id.to_string(), reporter.to_owned());
        let report = json!({"reason": reason, "received_ts": now_ms()});
        self.run(move |_, db| {
            let mut batch = Batch::new();
            batch.put(&EVENT_REPORTS, &key, &report)?;
            Ok(db.write(batch)?)
        })
        .await?;
        tracing::info!(%room_id, %event_id, %reporter, "event reported");
        Ok(())
    }

    /// Every stored report, for admins.
    pub async fn event_reports(&self) -> Result<Vec<EventReport>> {
        self.run(move |_, db| {
            Ok(EVENT_REPORTS
                .all(db)?
                .into_iter()
                .map(|((room_id, event_id, reporter), report)| EventReport { room_id, event_id, reporter, report })
                .collect())
        })
        .await
    }
}
