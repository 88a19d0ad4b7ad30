//! The client-server API, one file per spec module.

pub mod account;
pub mod account_data;
pub mod device;
pub mod discovery;
pub mod media;
pub mod profile;
pub mod register;
pub mod session;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = register::routes(router);
    let router = session::routes(router);
    let router = account::routes(router);
    let router = device::routes(router);
    let router = profile::routes(router);
    let router = media::routes(router);
    account_data::routes(router)
}
