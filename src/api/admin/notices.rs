//! `POST /_synapse/admin/v1/send_server_notice` (and `PUT .../{txnId}`): a server notice to one
//! user (see `service::admin::notices`). `400 M_INVALID_PARAM` when notices are off.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    routing::{post, put},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::{Admin, AdminJson, local_user};
use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/send_server_notice", post(send))
        .route("/_synapse/admin/v1/send_server_notice/{txn_id}", put(send))
}

#[derive(Deserialize)]
struct Notice {
    user_id: String,
    content: Map<String, Value>,
    #[serde(default = "message_type", rename = "type")]
    kind: String,
}

fn message_type() -> String {
    "m.room.message".to_owned()
}

async fn send(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    AdminJson(body): AdminJson<Notice>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &body.user_id)?;
    // In a task of its own: a client that goes away does not stop a notice half-way.
    let task = tokio::spawn(async move {
        let notices = &services.server_notices;
        notices.send(&services, &user, &body.kind, body.content).await
    });
    let event_id = task.await.map_err(|e| Error::internal(format!("server notice task failed: {e}")))??;
    Ok(Json(json!({"event_id": event_id})))
}
