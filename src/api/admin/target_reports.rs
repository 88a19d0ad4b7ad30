//! Admin API for reports of users and of whole rooms, in the shape of the event reports
//! (`reports.rs`): a list (newest first by default, with `dir`, `from`, `limit` and filters),
//! one report, and deleting one.
//!
//! User reports at Synapse's `/_synapse/admin/v1/user_reports` (filters `user_id`, the
//! reporter, and `target_user_id`, both substrings, as Synapse matches them). Synapse has no
//! admin API for room reports, so they are at Trellis's own `/_trellis/admin/v1/room_reports`
//! (filters `room_id`, exact, and `user_id`, a substring of the reporter).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{auth::Admin, users::number};
use crate::{
    Error, Result,
    service::{
        Services,
        rooms::reports::{ReportTarget, TargetReport},
    },
};

const USER_REPORTS: &str = "/_synapse/admin/v1/user_reports";
const ROOM_REPORTS: &str = "/_trellis/admin/v1/room_reports";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(USER_REPORTS, get(list_users))
        .route(&format!("{USER_REPORTS}/{{report_id}}"), get(read_user).delete(remove_user))
        .route(ROOM_REPORTS, get(list_rooms))
        .route(&format!("{ROOM_REPORTS}/{{report_id}}"), get(read_room).delete(remove_room))
}

async fn report_json(services: &Services, kind: ReportTarget, report: &TargetReport) -> Result<Value> {
    let mut body = json!({
        "id": report.id(kind),
        "received_ts": report.report.get("received_ts"),
        "user_id": report.reporter,
        "reason": report.report.get("reason"),
    });
    match kind {
        ReportTarget::User => body["target_user_id"] = json!(report.target),
        ReportTarget::Room => {
            let room = match OwnedRoomId::try_from(report.target.as_str()) {
                Ok(room) => crate::service::admin::rooms::details(services, &room).await?,
                Err(_) => None,
            };
            body["room_id"] = json!(report.target);
            body["name"] = room.as_ref().and_then(|r| r.get("name")).cloned().unwrap_or(Value::Null);
            body["canonical_alias"] =
                room.as_ref().and_then(|r| r.get("canonical_alias")).cloned().unwrap_or(Value::Null);
        }
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
    /// The reporter (a substring).
    #[serde(default)]
    user_id: Option<String>,
    /// User reports: the reported user (a substring).
    #[serde(default)]
    target_user_id: Option<String>,
    /// Room reports: the reported room.
    #[serde(default)]
    room_id: Option<String>,
}

async fn list(services: &Services, kind: ReportTarget, query: ListQuery) -> Result<Json<Value>> {
    let from = number(query.from.as_deref(), "from", 0)?;
    let limit = number(query.limit.as_deref(), "limit", 100)?;
    let mut reports = services.rooms.target_reports(kind).await?;
    reports.retain(|report| {
        let target_matches = match kind {
            ReportTarget::User => query.target_user_id.as_deref().is_none_or(|user| report.target.contains(user)),
            ReportTarget::Room => query.room_id.as_deref().is_none_or(|room| report.target == room),
        };
        target_matches && query.user_id.as_deref().is_none_or(|user| report.reporter.as_str().contains(user))
    });
    let received = |report: &TargetReport| report.report.get("received_ts").and_then(Value::as_u64).unwrap_or(0);
    reports.sort_by_key(|report| (received(report), report.id(kind)));
    match query.dir.as_deref() {
        None | Some("b") => reports.reverse(),
        Some("f") => {}
        Some(_) => return Err(Error::invalid_param("dir must be f or b")),
    }
    let total = reports.len();
    let mut page = Vec::new();
    for report in reports.iter().skip(from).take(limit) {
        page.push(report_json(services, kind, report).await?);
    }
    let key = match kind {
        ReportTarget::User => "user_reports",
        ReportTarget::Room => "room_reports",
    };
    let mut body = json!({key: page, "total": total});
    if from + limit < total {
        body["next_token"] = json!(from + page.len());
    }
    Ok(Json(body))
}

fn report_id(raw: &str) -> Result<u64> {
    raw.parse()
        .map_err(|_| Error::invalid_param("The report_id parameter must be a string representing a positive integer."))
}

async fn read(services: &Services, kind: ReportTarget, raw: &str) -> Result<Json<Value>> {
    let id = report_id(raw)?;
    let reports = services.rooms.target_reports(kind).await?;
    let report = reports.iter().find(|report| report.id(kind) == id).ok_or_else(|| not_found(kind))?;
    Ok(Json(report_json(services, kind, report).await?))
}

async fn remove(services: &Services, kind: ReportTarget, raw: &str) -> Result<Json<Value>> {
    let id = report_id(raw)?;
    if !services.rooms.delete_target_report(kind, id).await? {
        return Err(not_found(kind));
    }
    Ok(Json(json!({})))
}

fn not_found(kind: ReportTarget) -> Error {
    match kind {
        ReportTarget::User => Error::not_found("User report not found"),
        ReportTarget::Room => Error::not_found("Room report not found"),
    }
}

async fn list_users(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    list(&services, ReportTarget::User, query).await
}

async fn list_rooms(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    list(&services, ReportTarget::Room, query).await
}

async fn read_user(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    read(&services, ReportTarget::User, &raw).await
}

async fn read_room(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    read(&services, ReportTarget::Room, &raw).await
}

async fn remove_user(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    remove(&services, ReportTarget::User, &raw).await
}

async fn remove_room(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    remove(&services, ReportTarget::Room, &raw).await
}
