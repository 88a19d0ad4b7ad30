//! The server-server API: server discovery, the version endpoint and the server's key
//! (`discovery.rs`), the notary key queries (`keys.rs`), queries about local users
//! (`query.rs`), invites and leaves across servers (`membership.rs`), and the `X-Matrix`
//! authentication of signed requests (`auth.rs`).

pub(crate) mod auth;
pub mod discovery;
pub mod join;
pub mod keys;
pub mod membership;
pub mod query;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    membership::routes(join::routes(query::routes(keys::routes(discovery::routes(router)))))
}
