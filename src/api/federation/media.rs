//! This server's media for other servers: `GET /_matrix/federation/v1/media/download/{mediaId}`
//! and `/thumbnail/{mediaId}`, answered as `multipart/mixed` (an empty JSON metadata part, then
//! the file), as spec v1.11 says. Only local media is served; remote media this server has
//! cached is not handed on.
//!
//! The answer is written here rather than by ruma's response type: ruma 0.17 ends the body with
//! `--boundary` instead of the close delimiter `--boundary--` (RFC 2046), which strict
//! multipart readers (Go's, so Complement's) refuse.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, header};
use ruma::api::{
    Metadata,
    federation::authenticated_media::{get_content, get_content_thumbnail},
    path_builder::PathBuilder,
};

use crate::{
    Result,
    api::{
        client::media::{thumbnail_spec, with_headers},
        extract::Ruma,
    },
    service::{
        Services,
        media::{Access, Content},
        random_string,
    },
};

pub fn routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    for path in <get_content::v1::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, get(download));
    }
    for path in <get_content_thumbnail::v1::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, get(thumbnail));
    }
    router
}

async fn download(State(services): State<Arc<Services>>, request: Ruma<get_content::v1::Request>) -> Result<Response> {
    let origin = request.origin()?;
    let body = &request.body;
    tracing::debug!(%origin, media_id = %body.media_id, "media download over federation");
    let content = services
        .media
        .get(&services.config.server_name, &body.media_id, Access::Authenticated, body.timeout_ms)
        .await?;
    let filename = content.filename.clone();
    Ok(multipart(content, filename))
}

async fn thumbnail(
    State(services): State<Arc<Services>>,
    request: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    let origin = request.origin()?;
    let body = &request.body;
    tracing::debug!(%origin, media_id = %body.media_id, "media thumbnail over federation");
    let spec = thumbnail_spec(body.method.as_ref(), body.width, body.height, body.animated)?;
    let content = services
        .media
        .thumbnail(&services.config.server_name, &body.media_id, Access::Authenticated, body.timeout_ms, spec)
        .await?;
    Ok(multipart(content, None))
}

/// The `multipart/mixed` answer: the metadata part (`{}`), then the file with its type and
/// disposition.
fn multipart(content: Content, filename: Option<String>) -> Response {
    let (file, content_type, disposition) = with_headers(content, filename);
    // Alphanumeric, so it never needs quoting; 32 random characters never occur in the file by
    // chance.
    let boundary = random_string(32);
    // Header values cannot hold line breaks (the type came from an uploader).
    let content_type: String = content_type.chars().filter(|c| !c.is_control()).collect();
    let mut body = Vec::with_capacity(file.len() + 256);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {content_type}\r\n").as_bytes());
    body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut response = Body::from(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
