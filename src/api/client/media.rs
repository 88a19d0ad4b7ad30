//! The content repository: uploads (`/_matrix/media/v3/upload`, and asynchronous uploads through
//! `/_matrix/media/v1/create`), the authenticated endpoints of spec v1.11
//! (`/_matrix/client/v1/media/{config,download,thumbnail,preview_url}`) and the legacy
//! `/_matrix/media/v3/*` ones, which serve only media from before the freeze.
//!
//! Every response of these routes carries headers that keep served files from running as web
//! pages of the server's origin: `Content-Security-Policy: sandbox`, `X-Content-Type-Options:
//! nosniff` and `Cross-Origin-Resource-Policy: cross-origin`; downloads are `inline` only for the
//! spec's list of safe content types, `attachment` otherwise.
#![allow(deprecated)] // The legacy endpoints' request types are deprecated since v1.11, not gone.

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, middleware::map_response, response::Response, routing::put};
use http::{HeaderValue, header};
use ruma::{
    ServerName, UInt,
    api::client::{
        authenticated_media,
        media::{
            create_content, create_content_async, create_mxc_uri, get_content, get_content_as_filename,
            get_content_thumbnail, get_media_config, get_media_preview, is_safe_inline_content_type,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method as RumaMethod,
};

use crate::service::rate_limit::UserAction;
use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        media::{
            Access, Content,
            thumbnails::{Method, Spec},
        },
    },
};

/// The sandboxing policy for served media, as Synapse sends it.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                                       style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let media = Router::new()
        .ruma(upload)
        .ruma(create_uri)
        .ruma(config)
        .ruma(legacy_config)
        .ruma(download)
        .ruma(download_as)
        .ruma(legacy_download)
        .ruma(legacy_download_as)
        .ruma(thumbnail)
        .ruma(legacy_thumbnail)
        .ruma(preview)
        .ruma(legacy_preview);
    let media = upload_to_uri_routes(media).layer(map_response(safe_headers));
    router.merge(media)
}

async fn safe_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response
}

async fn upload(
    services: Arc<Services>,
    request: Ruma<create_content::v3::Request>,
) -> Result<create_content::v3::Response> {
    crate::service::admin::moderation::check_not_suspended(request.sender()?, "Uploading media")?;
    services.rate_limits.user(request.sender()?, UserAction::MediaCreate)?;
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    let uri = services.media.create(Some(&sender), body.file, body.content_type, body.filename).await?;
    Ok(create_content::v3::Response::new(uri))
}

async fn create_uri(
    services: Arc<Services>,
    request: Ruma<create_mxc_uri::v1::Request>,
) -> Result<create_mxc_uri::v1::Response> {
    crate::service::admin::moderation::check_not_suspended(request.sender()?, "Uploading media")?;
    services.rate_limits.user(request.sender()?, UserAction::MediaCreate)?;
    let (uri, expires) = services.media.reserve(&request.sender()?.user_id).await?;
    let mut response = create_mxc_uri::v1::Response::new(uri);
    response.unused_expires_at = Some(expires);
    Ok(response)
}

/// Ruma's response type for this endpoint has no constructor for servers, so this route is
/// plain axum around the same extractor; the response is the spec's empty object.
fn upload_to_uri_routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    use ruma::api::{Metadata, path_builder::PathBuilder};
    for path in <create_content_async::v3::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, put(upload_to_uri));
    }
    router
}

async fn upload_to_uri(
    State(services): State<Arc<Services>>,
    request: Ruma<create_content_async::v3::Request>,
) -> Result<Json<serde_json::Value>> {
    crate::service::admin::moderation::check_not_suspended(request.sender()?, "Uploading media")?;
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    services
        .media
        .upload_reserved(&sender, &body.server_name, &body.media_id, body.file, body.content_type, body.filename)
        .await?;
    Ok(Json(serde_json::json!({})))
}

async fn config(
    services: Arc<Services>,
    _: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> Result<authenticated_media::get_media_config::v1::Response> {
    Ok(authenticated_media::get_media_config::v1::Response::new(services.media.upload_limit()))
}

async fn legacy_config(
    services: Arc<Services>,
    _: Ruma<get_media_config::v3::Request>,
) -> Result<get_media_config::v3::Response> {
    Ok(get_media_config::v3::Response::new(services.media.upload_limit()))
}

/// Fetches content and works out the headers it is served with.
async fn serve(
    services: &Services,
    server_name: &ServerName,
    media_id: &str,
    filename: Option<String>,
    access: Access,
    timeout: Duration,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let content = services.media.get(server_name, media_id, access, timeout).await?;
    let filename = filename.or(content.filename.clone());
    Ok(with_headers(content, filename))
}

pub(crate) fn with_headers(content: Content, filename: Option<String>) -> (Vec<u8>, String, ContentDisposition) {
    let content_type = content.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let disposition = if is_safe_inline_content_type(&essence) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    (content.bytes, content_type, ContentDisposition::new(disposition).with_filename(filename))
}

async fn download(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content::v1::Request>,
) -> Result<authenticated_media::get_content::v1::Response> {
    let body = &request.body;
    let (file, content_type, disposition) =
        serve(&services, &body.server_name, &body.media_id, None, Access::Authenticated, body.timeout_ms).await?;
    Ok(authenticated_media::get_content::v1::Response::new(file, content_type, disposition))
}

async fn download_as(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_as_filename::v1::Request>,
) -> Result<authenticated_media::get_content_as_filename::v1::Response> {
    let body = &request.body;
    let filename = Some(body.filename.clone());
    let (file, content_type, disposition) =
        serve(&services, &body.server_name, &body.media_id, filename, Access::Authenticated, body.timeout_ms).await?;
    Ok(authenticated_media::get_content_as_filename::v1::Response::new(file, content_type, disposition))
}

async fn legacy_download(
    services: Arc<Services>,
    request: Ruma<get_content::v3::Request>,
) -> Result<get_content::v3::Response> {
    let body = &request.body;
    let (file, content_type, disposition) =
        serve(&services, &body.server_name, &body.media_id, None, Access::Legacy, body.timeout_ms).await?;
    Ok(get_content::v3::Response::new(file, content_type, disposition))
}

async fn legacy_download_as(
    services: Arc<Services>,
    request: Ruma<get_content_as_filename::v3::Request>,
) -> Result<get_content_as_filename::v3::Response> {
    let body = &request.body;
    let filename = Some(body.filename.clone());
    let (file, content_type, disposition) =
        serve(&services, &body.server_name, &body.media_id, filename, Access::Legacy, body.timeout_ms).await?;
    Ok(get_content_as_filename::v3::Response::new(file, content_type, disposition))
}

/// The thumbnail request in the service's terms.
pub(crate) fn thumbnail_spec(
    method: Option<&RumaMethod>,
    width: UInt,
    height: UInt,
    animated: Option<bool>,
) -> Result<Spec> {
    let method = match method {
        None | Some(RumaMethod::Scale) => Method::Scale,
        Some(RumaMethod::Crop) => Method::Crop,
        Some(other) => return Err(Error::invalid_param(format!("Unknown thumbnail method {other}"))),
    };
    // Sizes beyond u32 are clamped: nothing is ever larger than the original anyway.
    let clamp = |v: UInt| u32::try_from(u64::from(v)).unwrap_or(u32::MAX);
    Ok(Spec { width: clamp(width), height: clamp(height), method, animated: animated.unwrap_or(false) })
}

async fn serve_thumbnail(
    services: &Services,
    server_name: &ServerName,
    media_id: &str,
    access: Access,
    timeout: Duration,
    spec: Spec,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let content = services.media.thumbnail(server_name, media_id, access, timeout, spec).await?;
    Ok(with_headers(content, None))
}

async fn thumbnail(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_thumbnail::v1::Request>,
) -> Result<authenticated_media::get_content_thumbnail::v1::Response> {
    let body = &request.body;
    let spec = thumbnail_spec(body.method.as_ref(), body.width, body.height, body.animated)?;
    let (file, content_type, disposition) =
        serve_thumbnail(&services, &body.server_name, &body.media_id, Access::Authenticated, body.timeout_ms, spec)
            .await?;
    Ok(authenticated_media::get_content_thumbnail::v1::Response::new(file, content_type, disposition))
}

async fn legacy_thumbnail(
    services: Arc<Services>,
    request: Ruma<get_content_thumbnail::v3::Request>,
) -> Result<get_content_thumbnail::v3::Response> {
    let body = &request.body;
    let spec = thumbnail_spec(body.method.as_ref(), body.width, body.height, body.animated)?;
    let (file, content_type, disposition) =
        serve_thumbnail(&services, &body.server_name, &body.media_id, Access::Legacy, body.timeout_ms, spec).await?;
    Ok(get_content_thumbnail::v3::Response::new(file, content_type, disposition))
}

async fn preview(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> Result<authenticated_media::get_media_preview::v1::Response> {
    let data = services.media.preview(&request.body.url).await?;
    authenticated_media::get_media_preview::v1::Response::from_serialize(&data)
        .map_err(|e| Error::internal(format!("could not serialize a URL preview: {e}")))
}

async fn legacy_preview(
    services: Arc<Services>,
    request: Ruma<get_media_preview::v3::Request>,
) -> Result<get_media_preview::v3::Response> {
    let data = services.media.preview(&request.body.url).await?;
    get_media_preview::v3::Response::from_serialize(&data)
        .map_err(|e| Error::internal(format!("could not serialize a URL preview: {e}")))
}
