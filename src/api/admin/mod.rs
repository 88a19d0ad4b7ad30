//! Admin APIs, in Synapse's shape so admins keep their tools (synadm, synapse-admin):
//! shared-secret registration (`synapse_register.rs`, which Complement also uses), the server
//! version, users (`users.rs`), shadow-bans, locks and suspensions (`moderation.rs`, with the
//! spec's own lock and suspend endpoints), rooms (`rooms.rs`), registration tokens
//! (`registration_tokens.rs`), media (`media.rs`), content reports (`reports.rs`; rooms and
//! users: `target_reports.rs`), server notices (`notices.rs`), and Trellis's own online backup
//! and user export (`data.rs`) and storage report (`storage.rs`), under `/_trellis/admin/v1`. Every endpoint but the version and
//! shared-secret registration needs a server admin's access token (`auth.rs`).

pub mod auth;
pub mod data;
pub mod encryption;
pub mod media;
pub mod moderation;
pub mod notices;
pub mod purge;
pub mod registration_tokens;
pub mod reports;
pub mod rooms;
pub mod storage;
pub mod synapse_register;
pub mod target_reports;
pub mod user_data;
pub mod users;

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = router.route("/_synapse/admin/v1/server_version", get(server_version));
    let router = synapse_register::routes(router);
    let router = users::routes(router);
    let router = moderation::routes(router);
    let router = encryption::routes(router);
    let router = user_data::routes(router);
    let router = purge::routes(router);
    let router = rooms::routes(router);
    let router = media::routes(router);
    let router = registration_tokens::routes(router);
    let router = reports::routes(router);
    let router = target_reports::routes(router);
    let router = data::routes(router);
    let router = storage::routes(router);
    notices::routes(router)
}

/// `GET /_synapse/admin/v1/server_version`, open to anyone, as in Synapse.
async fn server_version() -> Json<Value> {
    Json(json!({"server_version": format!("Trellis {}", env!("CARGO_PKG_VERSION"))}))
}
