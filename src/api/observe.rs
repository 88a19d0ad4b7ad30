//! What every request leaves behind: a `request` span around its handling (so the handler's own
//! log lines say which endpoint they belong to), one debug line when it is answered (method,
//! path template, status, duration and the user or server that sent it) and the request
//! metrics. The path template is the route (`/_matrix/client/v3/rooms/{room_id}/...`), never
//! the path itself, which may hold user IDs; the query, which may hold a token, is never read.
//! Also the metrics listener's router.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use crate::service::{Services, metrics};

/// The requester, filled in by the extractor once it has authenticated the request.
#[derive(Clone, Default)]
pub struct RequestUser(Arc<OnceLock<String>>);

impl RequestUser {
    /// Records who sent the request (a user ID, or the origin server of a federation request).
    pub fn set(&self, who: &str) {
        let _ = self.0.set(who.to_owned());
    }
}

/// The middleware (see the module documentation).
pub async fn observe(mut request: Request, next: Next) -> Response {
    let endpoint = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let user = RequestUser::default();
    request.extensions_mut().insert(user.clone());
    let span = tracing::info_span!("request", method = %request.method(), endpoint = %endpoint);
    let mut answer =
        Answered { method: request.method().clone(), endpoint, user, started: Instant::now(), status: None };
    let response = next.run(request).instrument(span).await;
    answer.status = Some(response.status());
    response
}

/// Logs and counts the request when dropped: when it is answered, or when the client went away
/// first (then with status 499, as nginx logs it).
struct Answered {
    method: Method,
    endpoint: String,
    user: RequestUser,
    started: Instant,
    status: Option<StatusCode>,
}

impl Drop for Answered {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let status = self.status.map_or(499, |status| status.as_u16());
        metrics::global().request(self.method.as_str(), &self.endpoint, status, took);
        tracing::debug!(
            method = %self.method,
            endpoint = %self.endpoint,
            status,
            duration_ms = duration_ms(took),
            user = %self.user.0.get().map_or("-", String::as_str),
            "request"
        );
    }
}

fn duration_ms(took: Duration) -> f64 {
    (took.as_micros() as f64 / 1000.0 * 10.0).round() / 10.0
}

/// The metrics listener: `GET /metrics` in Prometheus's text format, nothing else.
pub fn metrics_router(services: Arc<Services>) -> Router {
    Router::new().route("/metrics", get(scrape)).fallback(|| async { StatusCode::NOT_FOUND }).with_state(services)
}

async fn scrape(State(services): State<Arc<Services>>) -> Response {
    match metrics::global().scrape(&services).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}
