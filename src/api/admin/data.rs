//! Trellis's own admin endpoints for data protection (Synapse has no equivalent, so they live
//! under `/_trellis/admin/v1`): `POST backup` takes an online backup of the database and media
//! into a directory on the server's machine, `POST users/{userId}/export` writes a user's data
//! export there. Both answer when the work is done, with a summary; `trellis backup create` and
//! `trellis export-user` call them when the server runs.

use std::{path::PathBuf, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::post,
};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Admin, AdminJson, local_user};
use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_trellis/admin/v1/backup", post(backup))
        .route("/_trellis/admin/v1/users/{user_id}/export", post(export_user))
}

/// The body of both endpoints: an absolute directory on the server's machine that does not
/// exist yet or is empty.
#[derive(Deserialize)]
struct Target {
    directory: PathBuf,
}

fn summary(value: impl serde::Serialize) -> Result<Json<Value>> {
    serde_json::to_value(value).map(Json).map_err(|e| Error::internal(e.to_string()))
}

/// `POST /_trellis/admin/v1/backup`.
async fn backup(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    AdminJson(target): AdminJson<Target>,
) -> Result<Json<Value>> {
    summary(services.server_backups.create(target.directory).await?)
}

/// `POST /_trellis/admin/v1/users/{userId}/export`.
async fn export_user(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
    AdminJson(target): AdminJson<Target>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &user_id)?;
    summary(crate::service::user_export::export(&services, &user, target.directory).await?)
}
