//! HTTP handlers, one file per spec module. Handlers parse a ruma request (through
//! [`extract::Ruma`]), call services and return a ruma response; they never touch storage.

pub mod admin;
pub mod appservice_auth;
pub mod client;
pub mod client_address;
pub mod extract;
pub mod federation;
mod guest;
pub mod observe;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    routing::{MethodFilter, on},
};
use http::{HeaderName, Method, StatusCode, header};
use ruma::api::{IncomingRequest, path_builder::PathBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{Error, Result, service::Services};
use extract::{AuthPolicy, Ruma, RumaResponse};

/// The routers of the two listeners.
pub struct Routers {
    /// The main listener: client and admin APIs, and federation when it is enabled (for
    /// deployments that put everything behind one reverse proxy, as Conduit's do).
    pub main: Router,
    /// The dedicated federation listener: the federation API only.
    pub federation: Router,
}

pub fn routers(services: Arc<Services>) -> Routers {
    let mut main = admin::routes(client::routes(Router::new()));
    if services.config.allow_federation {
        main = federation::routes(main);
    }
    let federation = federation::routes(Router::new());
    Routers { main: finish(main, services.clone()), federation: finish(federation, services) }
}

/// Adds what every listener shares: Matrix errors for unknown paths and methods, CORS, request
/// logging and metrics.
fn finish(router: Router<Arc<Services>>, services: Arc<Services>) -> Router {
    router
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request") })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed for this endpoint")
        })
        .layer(DefaultBodyLimit::disable())
        // The client's address behind trusted reverse proxies (`trusted_proxies`).
        .layer(axum::middleware::from_fn_with_state(services.clone(), client_address::client_address))
        .layer(cors())
        // A span, a debug line and metrics per request (route template, status, time, user).
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(services)
}

/// CORS as the client-server spec requires: any origin, the API's methods and headers.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([HeaderName::from_static("x-requested-with"), header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(86400))
}

/// Registers a handler for a ruma request type under every path ruma knows for it (stable,
/// legacy `r0` and unstable).
pub(crate) trait RumaRouter {
    fn ruma<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        Req::OutgoingResponse: Send,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static;
}

impl RumaRouter for Router<Arc<Services>> {
    fn ruma<Req, F, Fut>(self, handler: F) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        Req::OutgoingResponse: Send,
        F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static,
    {
        let method = MethodFilter::try_from(Req::METHOD).unwrap_or(MethodFilter::GET);
        let mut router = self;
        let mut paths: Vec<String> = Vec::new();
        for path in Req::PATH_BUILDER.all_paths() {
            paths.push(path.to_owned());
            // An empty state key: clients send `.../state/{type}/` or `.../state/{type}`.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                paths.extend([prefix.to_owned(), format!("{prefix}/")]);
            }
        }
        for path in paths {
            let handler = handler.clone();
            router = router.route(
                &path,
                on(method, move |State(services): State<Arc<Services>>, request: Ruma<Req>| async move {
                    handler(services, request).await.map(RumaResponse)
                }),
            );
        }
        router
    }
}
