//! `GET /_trellis/admin/v1/encryption` (Trellis's own; Synapse has no encryption at rest): the
//! state of encryption at rest and of a key rotation, for admins.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::Value;

use super::auth::Admin;
use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_trellis/admin/v1/encryption", get(status))
}

async fn status(State(services): State<Arc<Services>>, _admin: Admin) -> Json<Value> {
    Json(crate::service::admin::encryption::status(&services))
}
