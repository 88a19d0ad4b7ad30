//! Trellis's storage report for admins (no Synapse equivalent, so under `/_trellis/admin/v1`):
//! `GET storage/tables` gives each table's size on disk and in memory and the bytes per stored
//! event; `POST storage/compact` compacts every table first (slow on a large database) and
//! answers with the report after it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};

use super::auth::Admin;
use crate::{
    Result,
    service::{
        Services,
        admin::storage::{StorageReport, compact_and_report, storage_report},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_trellis/admin/v1/storage/tables", get(tables))
        .route("/_trellis/admin/v1/storage/compact", post(compact))
}

/// `GET /_trellis/admin/v1/storage/tables`.
async fn tables(State(services): State<Arc<Services>>, _admin: Admin) -> Result<Json<StorageReport>> {
    Ok(Json(storage_report(&services).await?))
}

/// `POST /_trellis/admin/v1/storage/compact`.
async fn compact(State(services): State<Arc<Services>>, _admin: Admin) -> Result<Json<StorageReport>> {
    Ok(Json(compact_and_report(&services).await?))
}
