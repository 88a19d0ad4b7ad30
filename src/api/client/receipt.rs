//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`. `m.fully_read` is room account data; `m.read` and
//! `m.read.private` are receipts.

use std::sync::Arc;

use axum::Router;
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(receipt).ruma(read_markers)
}

/// Receipts and markers need a joined user and an event of the room they may see.
async fn check(services: &Services, user: &UserId, room: &RoomId, event_id: &EventId) -> Result<()> {
    if services.rooms.membership(user, room).await?.is_none_or(|m| m.membership != "join") {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    match services.rooms.event_for(user, event_id).await? {
        Some(event) if event.pdu.room_id == room => Ok(()),
        _ => Err(Error::not_found("Unknown event")),
    }
}

async fn fully_read(services: &Services, user: &UserId, room: &RoomId, event_id: &EventId) -> Result<()> {
    let content = serde_json::value::to_raw_value(&serde_json::json!({ "event_id": event_id }))
        .map_err(|e| Error::internal(e.to_string()))?;
    services.account_data.set(user, Some(room), "m.fully_read", content).await
}

async fn receipt(
    services: Arc<Services>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    check(&services, user, &body.room_id, &body.event_id).await?;
    match &body.receipt_type {
        ReceiptType::FullyRead => fully_read(&services, user, &body.room_id, &body.event_id).await?,
        ReceiptType::Read | ReceiptType::ReadPrivate => {
            let kind = body.receipt_type.as_str();
            services.receipts.set(&body.room_id, user, kind, &body.event_id, body.thread.as_str()).await?;
        }
        _ => return Err(Error::invalid_param("Unknown receipt type")),
    }
    Ok(create_receipt::v3::Response::new())
}

async fn read_markers(
    services: Arc<Services>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    if let Some(event_id) = &body.fully_read {
        check(&services, user, &body.room_id, event_id).await?;
        fully_read(&services, user, &body.room_id, event_id).await?;
    }
    for (kind, event_id) in [("m.read", &body.read_receipt), ("m.read.private", &body.private_read_receipt)] {
        if let Some(event_id) = event_id {
            check(&services, user, &body.room_id, event_id).await?;
            services.receipts.set(&body.room_id, user, kind, event_id, None).await?;
        }
    }
    Ok(set_read_marker::v3::Response::new())
}
