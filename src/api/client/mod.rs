//! The client-server API, one file per spec module.

pub mod account;
pub mod account_data;
pub mod appservice;
pub mod backup;
pub mod context;
pub mod dehydrated_device;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod keys;
pub mod media;
pub mod membership;
pub mod message;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipt;
pub mod register;
pub mod relations;
pub mod report;
pub mod room;
pub mod search;
pub mod session;
pub mod sliding_sync;
pub mod space;
pub mod state;
pub mod sync;
pub mod tag;
pub mod thirdparty;
pub mod thread_subscription;
pub mod threepid;
pub mod to_device;
pub mod typing;
pub mod upgrade;
pub mod user_directory;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = register::routes(router);
    let router = appservice::routes(router);
    let router = thirdparty::routes(router);
    let router = session::routes(router);
    let router = account::routes(router);
    let router = device::routes(router);
    let router = profile::routes(router);
    let router = room::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = state::routes(router);
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    let router = dehydrated_device::routes(router);
    let router = media::routes(router);
    let router = directory::routes(router);
    let router = context::routes(router);
    let router = relations::routes(router);
    let router = report::routes(router);
    let router = upgrade::routes(router);
    let router = space::routes(router);
    let router = sync::routes(router);
    let router = sliding_sync::routes(router);
    let router = typing::routes(router);
    let router = receipt::routes(router);
    let router = push::routes(router);
    let router = presence::routes(router);
    let router = search::routes(router);
    let router = user_directory::routes(router);
    let router = tag::routes(router);
    let router = threepid::routes(router);
    let router = thread_subscription::routes(router);
    let router = openid::routes(router);
    account_data::routes(router)
}
