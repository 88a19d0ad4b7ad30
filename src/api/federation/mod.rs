//! The server-server API: server discovery, the version endpoint and the server's key
//! (`discovery.rs`), the notary key queries (`keys.rs`), queries about local users
//! (`query.rs`), local media for other servers (`media.rs`), the public room directory
//! (`directory.rs`), space hierarchies (`space.rs`), `/timestamp_to_event` (`timestamp.rs`),
//! OpenID userinfo (`openid.rs`), refused third-party invites (`thirdparty.rs`), joins
//! (`join.rs`), knocks (`knock.rs`), invites and leaves across servers (`membership.rs`), the
//! read side of the event exchange (`events.rs`), and the `X-Matrix` authentication of signed
//! requests (`auth.rs`), and the keys of local users for other servers (`user_keys.rs`).

pub(crate) mod auth;
pub mod directory;
pub mod discovery;
pub mod events;
pub mod join;
pub mod keys;
pub mod knock;
pub mod media;
pub mod membership;
pub mod openid;
pub mod query;
pub mod space;
pub mod thirdparty;
pub mod timestamp;
pub mod transactions;
pub mod user_keys;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = join::routes(query::routes(keys::routes(discovery::routes(router))));
    let router = transactions::routes(events::routes(membership::routes(router)));
    let router = user_keys::routes(router);
    let router = knock::routes(media::routes(router));
    let router = space::routes(directory::routes(router));
    let router = timestamp::routes(router);
    thirdparty::routes(openid::routes(router))
}
