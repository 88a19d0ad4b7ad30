//! The notary endpoints: `GET /_matrix/key/v2/query/{serverName}` and
//! `POST /_matrix/key/v2/query`, answering with the key documents this server has (or can
//! fetch) for other servers, countersigned with its own key.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, now_ms},
};

/// Servers one batch query may ask about.
const MAX_BATCH_SERVERS: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(query_one).ruma(query_batch)
}

async fn query_one(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let body = request.body;
    let minimum = u64::from(body.minimum_valid_until_ts.get());
    let documents = services.federation.keys.notary_documents(&body.server_name, minimum).await?;
    Ok(get_remote_server_keys::v2::Response::new(documents))
}

async fn query_batch(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    let servers = request.body.server_keys;
    if servers.len() > MAX_BATCH_SERVERS {
        return Err(Error::invalid_param(format!("At most {MAX_BATCH_SERVERS} servers per query")));
    }
    // Servers are asked at the same time, so unreachable ones cost one timeout, not one each.
    let mut tasks = tokio::task::JoinSet::new();
    for (server, criteria) in servers {
        // The latest `minimum_valid_until_ts` asked for any of its keys, else now.
        let minimum = criteria
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.get()))
            .max()
            .unwrap_or_else(now_ms);
        let services = services.clone();
        tasks.spawn(async move { services.federation.keys.notary_documents(&server, minimum).await });
    }
    let mut documents = Vec::new();
    while let Some(result) = tasks.join_next().await {
        documents.extend(result.map_err(|e| Error::internal(format!("key query task failed: {e}")))??);
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(documents))
}
