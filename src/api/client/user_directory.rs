//! The user directory: `POST /user_directory/search` (see `service/user_directory.rs`).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::user_directory::search_users;

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(search)
}

async fn search(
    services: Arc<Services>,
    request: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response> {
    let searcher = request.sender()?.user_id.clone();
    let limit = usize::try_from(u64::from(request.body.limit)).unwrap_or(usize::MAX);
    let (users, limited) =
        services.user_directory.search(&services.rooms, &searcher, &request.body.search_term, limit).await?;
    let results = users
        .into_iter()
        .map(|found| {
            let mut user = search_users::v3::User::new(found.user_id);
            user.display_name = found.display_name;
            user.avatar_url = found.avatar_url;
            user
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited))
}
