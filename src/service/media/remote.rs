//! Media of other servers: fetched through the authenticated federation endpoints
//! (`/_matrix/federation/v1/media/{download,thumbnail}/{mediaId}`, multipart answers), falling
//! back to the legacy `/_matrix/media/v3/*` endpoints for servers that do not have them, and
//! kept in an on-disk cache (its own content-addressed store, `remote/` inside the media
//! directory) bounded by `media.remote_cache_max_size`, least recently used removed first.
//!
//! A cached record whose file has gone (removed by a concurrent eviction) is a miss: the media
//! is fetched again.

use std::time::Duration;

use http::StatusCode;
use ruma::{
    ServerName, UInt,
    api::{
        error::ErrorKind,
        federation::authenticated_media::{FileOrLocation, get_content, get_content_thumbnail},
    },
    http_headers::ContentDisposition,
    media::Method as RumaMethod,
};

use super::{Content, Media, preview::Fetcher, thumbnails::Method, thumbnails::Spec};
use crate::{
    Error, Result,
    service::{federation::client::FederationError, now_ms},
    storage::remote_tables::{REMOTE_MEDIA, RemoteMediaRecord},
};

/// A cache hit refreshes its last use at most this often (it is a write).
const TOUCH_INTERVAL_MS: u64 = 60_000;

/// What is fetched: the original, or a thumbnail.
enum Wanted<'a> {
    Original,
    Thumbnail(&'a Spec),
}

impl Media {
    /// Media of another server, from the cache or fetched from it.
    pub(super) async fn remote_get(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<Content> {
        self.remote(server, media_id, timeout, Wanted::Original).await
    }

    /// A thumbnail of another server's media as that server makes it, cached by the request.
    pub(super) async fn remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
        spec: &Spec,
    ) -> Result<Content> {
        self.remote(server, media_id, timeout, Wanted::Thumbnail(spec)).await
    }

    async fn remote(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
        wanted: Wanted<'_>,
    ) -> Result<Content> {
        if !super::valid_media_id(media_id) {
            return Err(Error::not_found("Media not found"));
        }
        if self.is_quarantined(server, media_id).await? {
            // Neither served from the cache nor fetched again.
            return Err(Error::not_found("Not found"));
        }
        let key = match &wanted {
            Wanted::Original => format!("{server}/{media_id}"),
            Wanted::Thumbnail(spec) => format!(
                "{server}/{media_id}/{}/{}x{}/{}",
                spec.method.as_str(),
                spec.width,
                spec.height,
                u8::from(spec.animated)
            ),
        };
        if let Some(content) = self.cached(&key).await? {
            return Ok(content);
        }
        let content = self.fetch(server, media_id, timeout, &wanted).await?;
        if let Err(error) = self.keep(key, &content).await {
            tracing::warn!(%server, media_id, %error, "remote media not cached");
        }
        Ok(content)
    }

    /// The cached copy, if any (refreshing its last use).
    async fn cached(&self, key: &str) -> Result<Option<Content>> {
        let lookup = key.to_owned();
        let Some(record) = self.db.run(move |db| Ok(REMOTE_MEDIA.get(db, &lookup)?)).await? else {
            return Ok(None);
        };
        let Some(bytes) = self.remote_store.get(&record.sha256).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if now.saturating_sub(record.last_used_ms) > TOUCH_INTERVAL_MS {
            let key = key.to_owned();
            let touched = RemoteMediaRecord { last_used_ms: now, ..record.clone() };
            self.remote_cache
                .run(&self.db, move |db| {
                    // Only if it is still there: an eviction in between must not be undone.
                    if REMOTE_MEDIA.contains(db, &key)? {
                        let mut batch = crate::storage::Batch::new();
                        batch.put(&REMOTE_MEDIA, &key, &touched)?;
                        db.write(batch)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(Some(Content { bytes, content_type: record.content_type, filename: record.filename }))
    }

    /// Stores fetched content in the cache, then removes the least recently used entries until
    /// the cache fits its bound again.
    async fn keep(&self, key: String, content: &Content) -> Result<()> {
        let max = self.config.media.remote_cache_max_size;
        let size = content.bytes.len() as u64;
        if size > max {
            return Ok(());
        }
        let store = self.remote_store.clone();
        let bytes = content.bytes.clone();
        let sha256 = tokio::task::spawn_blocking(move || store.put(&bytes))
            .await
            .map_err(|e| Error::internal(format!("media write task failed: {e}")))??;
        let record = RemoteMediaRecord {
            sha256,
            size,
            content_type: content.content_type.clone(),
            filename: content.filename.clone(),
            last_used_ms: now_ms(),
        };
        let store = self.remote_store.clone();
        self.remote_cache
            .run(&self.db, move |db| {
                let mut entries: Vec<(String, RemoteMediaRecord)> =
                    REMOTE_MEDIA.all(db)?.into_iter().filter(|(k, _)| *k != key).collect();
                let mut total = size + entries.iter().map(|(_, r)| r.size).sum::<u64>();
                entries.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_used_ms));
                let mut batch = crate::storage::Batch::new();
                batch.put(&REMOTE_MEDIA, &key, &record)?;
                let mut evicted = Vec::new();
                while total > max {
                    let Some((old_key, old)) = entries.pop() else { break };
                    batch.delete(&REMOTE_MEDIA, &old_key);
                    total = total.saturating_sub(old.size);
                    evicted.push(old.sha256);
                }
                db.write(batch)?;
                // A file stays while another entry (or the new one) has the same content.
                for sha256 in evicted {
                    if sha256 != record.sha256 && !entries.iter().any(|(_, r)| r.sha256 == sha256) {
                        store.remove(&sha256)?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Asks `server` for the media: the federation endpoint, then the legacy one.
    async fn fetch(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
        wanted: &Wanted<'_>,
    ) -> Result<Content> {
        let limit = self.config.max_request_size as usize;
        let client = &self.client;
        let answer = match wanted {
            Wanted::Original => {
                let mut request = get_content::v1::Request::new(media_id.to_owned());
                request.timeout_ms = timeout;
                client.send_limited(server, request, limit).await.map(|response| response.content)
            }
            Wanted::Thumbnail(spec) => {
                let mut request = get_content_thumbnail::v1::Request::new(
                    media_id.to_owned(),
                    UInt::from(spec.width),
                    UInt::from(spec.height),
                );
                request.method = Some(ruma_method(spec.method));
                request.animated = Some(spec.animated);
                request.timeout_ms = timeout;
                client.send_limited(server, request, limit).await.map(|response| response.content)
            }
        };
        match answer {
            Ok(FileOrLocation::File(content)) => Ok(Content {
                filename: content.content_disposition.and_then(|d| d.filename),
                content_type: content.content_type,
                bytes: content.file,
            }),
            Ok(FileOrLocation::Location(url)) => self.fetch_location(server, &url).await,
            Ok(_) => {
                Err(bad_gateway(format!("{server} answered with a kind of media content this server does not know")))
            }
            Err(error) if unrecognized(&error) => {
                tracing::debug!(%server, %error, "no federation media endpoint; trying the legacy one");
                self.fetch_legacy(server, media_id, timeout, wanted, limit).await
            }
            Err(error) => Err(remote_error(server, error)),
        }
    }

    /// The legacy unauthenticated download of servers from before spec v1.11.
    async fn fetch_legacy(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
        wanted: &Wanted<'_>,
        limit: usize,
    ) -> Result<Content> {
        let timeout_ms = timeout.as_millis();
        let path = match wanted {
            Wanted::Original => {
                format!("/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false&timeout_ms={timeout_ms}")
            }
            Wanted::Thumbnail(spec) => format!(
                "/_matrix/media/v3/thumbnail/{server}/{media_id}?allow_remote=false&timeout_ms={timeout_ms}\
                 &width={}&height={}&method={}&animated={}",
                spec.width,
                spec.height,
                spec.method.as_str(),
                spec.animated
            ),
        };
        let response =
            self.client.get_unsigned(server, &path, limit).await.map_err(|error| remote_error(server, error))?;
        let header = |name: http::HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok());
        let content_type = header(http::header::CONTENT_TYPE).map(ToOwned::to_owned);
        let filename = header(http::header::CONTENT_DISPOSITION)
            .and_then(|value| value.parse::<ContentDisposition>().ok())
            .and_then(|disposition| disposition.filename);
        Ok(Content { bytes: response.into_body(), content_type, filename })
    }

    /// Media the server answered with a URL for (a redirect to its storage): fetched under the
    /// URL preview network policy, which keeps it off private addresses.
    async fn fetch_location(&self, server: &ServerName, url: &str) -> Result<Content> {
        let url = Fetcher::parse_url(url)
            .map_err(|e| bad_gateway(format!("{server} sent an unusable media location: {e:?}")))?;
        let fetched = self
            .fetcher
            .fetch(url, false)
            .await
            .map_err(|e| bad_gateway(format!("Could not fetch the media of {server}: {e:?}")))?;
        if fetched.truncated {
            return Err(Error::new(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, "The remote media is too large"));
        }
        Ok(Content { bytes: fetched.body, content_type: fetched.content_type, filename: None })
    }
}

fn ruma_method(method: Method) -> RumaMethod {
    match method {
        Method::Scale => RumaMethod::Scale,
        Method::Crop => RumaMethod::Crop,
    }
}

/// Whether the server does not know the federation media endpoints (servers from before
/// spec v1.11 answer `404`/`405` without a Matrix error, or `M_UNRECOGNIZED`).
fn unrecognized(error: &FederationError) -> bool {
    match error {
        FederationError::Remote { errcode: Some(code), .. } => code == "M_UNRECOGNIZED",
        FederationError::Remote { status, errcode: None, .. } => matches!(status, 400 | 404 | 405 | 501),
        _ => false,
    }
}

fn bad_gateway(message: String) -> Error {
    Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message)
}

/// The remote server's refusal as the client sees it: `404` stays not found, a media not yet
/// uploaded stays so, anything else is `502`.
fn remote_error(server: &ServerName, error: FederationError) -> Error {
    match error {
        FederationError::Remote { status: 404, .. } => Error::not_found("Media not found"),
        FederationError::Remote { status: 504, errcode: Some(code), .. } if code == "M_NOT_YET_UPLOADED" => {
            Error::new(StatusCode::GATEWAY_TIMEOUT, ErrorKind::NotYetUploaded, "The media has not been uploaded yet")
        }
        FederationError::Remote { status: 413, .. } => {
            Error::new(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, "The remote media is too large")
        }
        FederationError::Invalid(message) if message.contains("too large") => {
            Error::new(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, "The remote media is too large")
        }
        other => bad_gateway(format!("Could not fetch the media from {server}: {other}")),
    }
}
