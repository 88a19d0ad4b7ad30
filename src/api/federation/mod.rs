//! The server-server API. So far: server discovery and the version endpoint; the signed event
//! exchange arrives with rooms.

pub mod discovery;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    discovery::routes(router)
}
