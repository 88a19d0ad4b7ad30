//! Content reports (`/rooms/{roomId}/report/{eventId}`), kept in `EVENT_REPORTS` for the
//! server's admins. A report needs the reporter joined to the room and able to see the event;
//! anything else is `M_NOT_FOUND`, so reports reveal nothing about hidden events.
//!
//! Room reports (`/rooms/{roomId}/report`, spec v1.13) and user reports
//! (`/users/{userId}/report`, v1.14) go to `ROOM_REPORTS` and `USER_REPORTS`. As in Synapse, a room
//! this server does not know is `M_NOT_FOUND`, and a report of a user who is not a local account
//! is accepted and dropped, so it says nothing about who exists. Admins read and delete them
//! (`target_reports`, `delete_target_report`).

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use crate::{
    Error, Result,
    service::now_ms,
    storage::{
        Batch,
        report_tables::{ROOM_REPORTS, USER_REPORTS},
        room_tables::EVENT_REPORTS,
    },
};

/// The longest reason kept (Synapse refuses longer ones with `M_BAD_JSON`).
const MAX_REASON_CHARS: usize = 1000;

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

    /// Records a report of a whole room; a second report by the same user replaces the first.
    pub async fn report_room(&self, room_id: &RoomId, reporter: &UserId, reason: String) -> Result<()> {
        check_reason(&reason)?;
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Room does not exist"));
        }
        let key = (room_id.to_owned(), reporter.to_owned());
        let report = json!({"reason": reason, "received_ts": now_ms()});
        self.run(move |_, db| {
            let mut batch = Batch::new();
            batch.put(&ROOM_REPORTS, &key, &report)?;
            Ok(db.write(batch)?)
        })
        .await?;
        tracing::info!(%room_id, %reporter, "room reported");
        Ok(())
    }

    /// Records a report of a user of this server (`exists` says whether the account exists);
    /// reports of anyone else are dropped without an error.
    pub async fn report_user(&self, user: &UserId, exists: bool, reporter: &UserId, reason: String) -> Result<()> {
        check_reason(&reason)?;
        if !exists {
            return Ok(());
        }
        let key = (user.to_owned(), reporter.to_owned());
        let report = json!({"reason": reason, "received_ts": now_ms()});
        self.run(move |_, db| {
            let mut batch = Batch::new();
            batch.put(&USER_REPORTS, &key, &report)?;
            Ok(db.write(batch)?)
        })
        .await?;
        tracing::info!(user = %user, %reporter, "user reported");
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

fn check_reason(reason: &str) -> Result<()> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Error::bad_json(format!("The reason must be at most {MAX_REASON_CHARS} characters")));
    }
    Ok(())
}

impl EventReport {
    /// A stable number for the report (Synapse's admin API names reports by integers): the
    /// first 48 bits of a SHA-256 of its room, event and reporter, so no counter is shared.
    pub fn id(&self) -> u64 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}|{}|{}", self.room_id, self.event_id, self.reporter));
        digest[..6].iter().fold(0u64, |id, byte| (id << 8) | u64::from(*byte))
    }
}

impl Rooms {
    /// Deletes the report with this [`EventReport::id`]; false when there is none.
    pub async fn delete_event_report(&self, id: u64) -> Result<bool> {
        let Some(report) = self.event_reports().await?.into_iter().find(|report| report.id() == id) else {
            return Ok(false);
        };
        let key = (report.room_id, report.event_id, report.reporter);
        self.run(move |_, db| {
            let mut batch = Batch::new();
            batch.delete(&EVENT_REPORTS, &key);
            Ok(db.write(batch)?)
        })
        .await?;
        Ok(true)
    }
}

/// What a room or user report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportTarget {
    Room,
    User,
}

/// One stored report of a room or a user.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// The reported room or user ID.
    pub target: String,
    pub reporter: OwnedUserId,
    /// `reason` and `received_ts`.
    pub report: Value,
}

impl TargetReport {
    /// A stable number for the report, as [`EventReport::id`] (the kind is part of the hash).
    pub fn id(&self, kind: ReportTarget) -> u64 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{kind:?}|{}|{}", self.target, self.reporter));
        digest[..6].iter().fold(0u64, |id, byte| (id << 8) | u64::from(*byte))
    }
}

impl Rooms {
    /// Every stored report of a room (`Room`) or of a user (`User`), for admins.
    pub async fn target_reports(&self, kind: ReportTarget) -> Result<Vec<TargetReport>> {
        self.run(move |_, db| {
            let reports = match kind {
                ReportTarget::Room => ROOM_REPORTS
                    .all(db)?
                    .into_iter()
                    .map(|((room, reporter), report)| TargetReport { target: room.to_string(), reporter, report })
                    .collect(),
                ReportTarget::User => USER_REPORTS
                    .all(db)?
                    .into_iter()
                    .map(|((user, reporter), report)| TargetReport { target: user.to_string(), reporter, report })
                    .collect(),
            };
            Ok(reports)
        })
        .await
    }

    /// Deletes the room or user report with this [`TargetReport::id`]; false when there is none.
    pub async fn delete_target_report(&self, kind: ReportTarget, id: u64) -> Result<bool> {
        let reports = self.target_reports(kind).await?;
        let Some(report) = reports.into_iter().find(|report| report.id(kind) == id) else { return Ok(false) };
        let bad_target = || Error::internal("stored report of an invalid ID");
        self.run(move |_, db| {
            let mut batch = Batch::new();
            match kind {
                ReportTarget::Room => {
                    let room = ruma::OwnedRoomId::try_from(report.target).map_err(|_| bad_target())?;
                    batch.delete(&ROOM_REPORTS, &(room, report.reporter));
                }
                ReportTarget::User => {
                    let user = OwnedUserId::try_from(report.target).map_err(|_| bad_target())?;
                    batch.delete(&USER_REPORTS, &(user, report.reporter));
                }
            }
            Ok(db.write(batch)?)
        })
        .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, events::TimelineEventType, user_id};
    use serde_json::json;

    use crate::{
        config::Config,
        service::{
            Services,
            rooms::{
                NewEvent,
                create::{Preset, RoomSpec},
            },
        },
        storage::Db,
    };

    #[tokio::test]
    async fn reports_are_stored_for_admins() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[global]\nserver_name = \"localhost\"\ndatabase_path = \"{}\"\n", dir.path().display());
        let config = Config::from_toml(&text, "test.toml", Vec::new()).unwrap().config;
        let db = Db::open(&config).unwrap();
        let services = Services::build(config, db).unwrap();
        let (alice, bob) = (user_id!("@alice:localhost"), user_id!("@bob:localhost"));
        let spec = RoomSpec::new(RoomVersionId::V11, Preset::PrivateChat);
        let rooms = &services.rooms;
        let room = rooms.create_room(alice, spec).await.unwrap();
        let message = NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": "x"}));
        let event = rooms.send(&room, alice, message).await.unwrap().event_id;

        rooms.report_event(&room, &event, alice, Some("spam".to_owned())).await.unwrap();
        // Bob is not in the room: nothing is stored.
        assert!(rooms.report_event(&room, &event, bob, None).await.is_err());
        let reports = rooms.event_reports().await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].room_id, room);
        assert_eq!(reports[0].event_id, event.as_str());
        assert_eq!(reports[0].reporter, alice);
        assert_eq!(reports[0].report["reason"], "spam");
        assert!(reports[0].report["received_ts"].as_u64().is_some_and(|ts| ts > 0));
    }
}
