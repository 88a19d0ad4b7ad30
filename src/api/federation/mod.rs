//! The server-server API: server discovery, the version endpoint and the server's key
//! (`discovery.rs`), the notary key queries (`keys.rs`), queries about local users
//! (`query.rs`), and the `X-Matrix` authentication of signed requests (`auth.rs`). The signed
//! event exchange arrives with rooms.

pub(crate) mod auth;
pub mod discovery;
pub mod join;
pub mod keys;
pub mod query;
pub mod transactions;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = join::routes(query::routes(keys::routes(discovery::routes(router))));
    transactions::routes(router)
}
