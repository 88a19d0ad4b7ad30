//! Synapse's admin API for content reports (`/_synapse/admin/v1/event_reports`): the list
//! (newest first by default, with `dir`, `from`, `limit`, `room_id` and `user_id`), one report
//! with the reported event, and deleting one.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use ruma::OwnedEventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{auth::Admin, users::number};
use crate::{
    Error, Result,
    service::{Services, rooms::reports::EventReport},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/event_reports", get(list))
        .route("/_synapse/admin/v1/event_reports/{report_id}", get(read).delete(remove))
}

async fn report_json(services: &Services, report: &EventReport, with_event: bool) -> Result<Value> {
    let event = match OwnedEventId::try_from(report.event_id.as_str()) {
        Ok(id) => services.rooms.pdu_json(&id).await?,
        Err(_) => None,
    };
    let room = crate::service::admin::rooms::details(services, &report.room_id).await?;
    let mut body = json!({
        "id": report.id(),
        "received_ts": report.report.get("received_ts"),
        "room_id": report.room_id,
        "name": room.as_ref().and_then(|r| r.get("name")).cloned(),
        "canonical_alias": room.as_ref().and_then(|r| r.get("canonical_alias")).cloned(),
        "event_id": report.event_id,
        "user_id": report.reporter,
        "reason": report.report.get("reason"),
        "score": null,
        "sender": event.as_ref().and_then(|e| e.get("sender")).map(|s| json!(s)),
    });
    if with_event {
        body["event_json"] = json!(event);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

async fn list(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    let from = number(query.from.as_deref(), "from", 0)?;
    let limit = number(query.limit.as_deref(), "limit", 100)?;
    let mut reports = services.rooms.event_reports().await?;
    reports.retain(|report| {
        query.room_id.as_deref().is_none_or(|room| report.room_id.as_str() == room)
            && query.user_id.as_deref().is_none_or(|user| report.reporter.as_str().contains(user))
    });
    let received = |report: &EventReport| report.report.get("received_ts").and_then(Value::as_u64).unwrap_or(0);
    reports.sort_by_key(|report| (received(report), report.id()));
    match query.dir.as_deref() {
        None | Some("b") => reports.reverse(),
        Some("f") => {}
        Some(_) => return Err(Error::invalid_param("dir must be f or b")),
    }
    let total = reports.len();
    let mut page = Vec::new();
    for report in reports.iter().skip(from).take(limit) {
        page.push(report_json(&services, report, false).await?);
    }
    let mut body = json!({"event_reports": page, "total": total});
    if from + limit < total {
        body["next_token"] = json!(from + limit);
    }
    Ok(Json(body))
}

fn report_id(raw: &str) -> Result<u64> {
    raw.parse().map_err(|_| Error::invalid_param("The report ID must be a non-negative integer"))
}

async fn read(State(services): State<Arc<Services>>, _admin: Admin, Path(raw): Path<String>) -> Result<Json<Value>> {
    let id = report_id(&raw)?;
    let reports = services.rooms.event_reports().await?;
    let report =
        reports.iter().find(|report| report.id() == id).ok_or_else(|| Error::not_found("Event report not found"))?;
    Ok(Json(report_json(&services, report, true).await?))
}

async fn remove(State(services): State<Arc<Services>>, _admin: Admin, Path(raw): Path<String>) -> Result<Json<Value>> {
    let id = report_id(&raw)?;
    if !services.rooms.delete_event_report(id).await? {
        return Err(Error::not_found("Event report not found"));
    }
    Ok(Json(json!({})))
}
