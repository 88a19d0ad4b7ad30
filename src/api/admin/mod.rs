//! Admin APIs. So far: Synapse's shared-secret registration, which admin tools and the
//! Complement suite use to create users.

pub mod synapse_register;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    synapse_register::routes(router)
}
