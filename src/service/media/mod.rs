//! The media repository: uploads (direct, and asynchronous through reserved IDs), downloads,
//! thumbnails and URL previews, for local media.
//!
//! File bytes live in a content-addressed [`store::FileStore`]; metadata (`MediaRecord`: hash,
//! type, name, uploader, whether legacy endpoints may serve it) in the `media` table, written in
//! one batch after the file is durably in place. Thumbnails ([`thumbnails`]) are made on the
//! blocking pool, at most two at a time, and cached by the original's hash and the request.
//! URL previews ([`preview`]) are fetched under the configured network policy and cached.
//!
//! Media of other servers is fetched over federation and cached ([`remote`]). Quarantined media
//! (of any server) is not served and not fetched; what admins do to media is in [`admin`].

pub mod admin;
mod erasure;
pub mod preview;
pub mod remote;
pub mod store;
pub mod thumbnails;

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedMxcUri, ServerName, UInt, UserId,
    api::error::{ErrorKind, LimitExceededErrorData, RetryAfter},
};
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore};

use crate::{
    Error, Result,
    config::Config,
    service::{federation::client::FederationClient, now_ms, random_string},
    storage::{
        Batch, Db, WriteLock,
        media_admin_tables::{MEDIA_LAST_ACCESS, MEDIA_QUARANTINE},
        tables::{
            MEDIA, MEDIA_PENDING, MEDIA_PENDING_BY_USER, MEDIA_THUMBNAILS, MediaRecord, PendingMediaRecord,
            ThumbnailRecord, URL_PREVIEWS, UrlPreviewRecord,
        },
    },
};
use preview::{Fetcher, PreviewError};
use store::FileStore;
use thumbnails::{Outcome, Spec, ThumbnailError};

/// Length of generated media IDs.
const MEDIA_ID_LENGTH: usize = 32;
/// Longest a download waits for reserved media to be uploaded.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Which family of endpoints is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/client/v1/media/*`, with an access token.
    Authenticated,
    /// The unauthenticated `/_matrix/media/v3/*` endpoints: only media from before the freeze.
    Legacy,
}

/// Media content with what is known about it.
#[derive(Debug)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

pub struct Media {
    db: Db,
    config: Arc<Config>,
    store: FileStore,
    fetcher: Fetcher,
    /// Serialises the checks and writes of reservations and uploads to reserved IDs.
    claims: WriteLock,
    /// Woken whenever reserved media is uploaded, for downloads waiting on it.
    uploaded: Arc<Notify>,
    /// Bounds concurrent thumbnailing (CPU and memory heavy).
    thumbnailing: Semaphore,
    /// Bounds concurrent URL preview fetches (each holds up to `url_preview.max_size` bytes).
    previews: Semaphore,
    /// Files of other servers' media ([`remote`]), apart from local media so evicting them
    /// never touches a local file.
    remote_store: FileStore,
    /// Serialises writes to the remote media cache (insertions and evictions).
    remote_cache: WriteLock,
    client: Arc<FederationClient>,
}

impl Media {
    /// Opens the media directory (creating it) and clears leftovers of interrupted uploads.
    pub fn new(config: Arc<Config>, db: Db, client: Arc<FederationClient>) -> std::io::Result<Self> {
        let directory = config.media.directory(&config.database_path);
        let keys = db.encryption_keys();
        let remote_store = FileStore::open(directory.join("remote"), config.media.directory_structure, keys.clone())?;
        let store = FileStore::open(directory, config.media.directory_structure, keys)?;
        Ok(Self {
            remote_store,
            remote_cache: WriteLock::new(),
            client,
            db,
            fetcher: Fetcher::new(config.url_preview.clone(), config.server_name.as_str()),
            config,
            store,
            claims: WriteLock::new(),
            uploaded: Arc::new(Notify::new()),
            thumbnailing: Semaphore::new(2),
            previews: Semaphore::new(8),
        })
    }

    /// The content of a local media file by its SHA-256 (for a user's data export); `None` if
    /// the file is missing.
    pub async fn local_file(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.store.get(sha256).await
    }

    /// The largest upload accepted, in bytes (`m.upload.size`).
    pub fn upload_limit(&self) -> UInt {
        UInt::from(self.config.max_request_size)
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.config.server_name))
    }

    /// Writes the file (on the blocking pool) and returns the record describing it.
    async fn store_file(
        &self,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
        uploader: Option<&UserId>,
    ) -> Result<MediaRecord> {
        let size = bytes.len() as u64;
        let store = self.store.clone();
        let sha256 = tokio::task::spawn_blocking(move || store.put(&bytes))
            .await
            .map_err(|e| Error::internal(format!("media write task failed: {e}")))??;
        Ok(MediaRecord {
            sha256,
            size,
            content_type: content_type.filter(|t| !t.is_empty()),
            filename: filename.filter(|n| !n.is_empty()),
            uploader: uploader.map(ToOwned::to_owned),
            created_ms: now_ms(),
            legacy_access: !self.config.media.freeze_legacy_media,
        })
    }

    /// Stores new content under a fresh media ID (`POST /upload`).
    pub async fn create(
        &self,
        uploader: Option<&UserId>,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<OwnedMxcUri> {
        let record = self.store_file(bytes, content_type, filename, uploader).await?;
        let media_id = random_string(MEDIA_ID_LENGTH);
        let (key, server) = (media_id.clone(), self.config.server_name.to_string());
        // Under `claims`, so content being quarantined meanwhile is seen.
        self.claims
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                batch.put(&MEDIA, &key, &record)?;
                Self::quarantine_if_known(db, &mut batch, &server, &key, &record.sha256)?;
                Ok(db.write(batch)?)
            })
            .await?;
        Ok(self.mxc(&media_id))
    }

    /// Reserves a media ID for content uploaded later (`POST /create`); returns the URI and when
    /// it expires unused.
    pub async fn reserve(&self, owner: &UserId) -> Result<(OwnedMxcUri, MilliSecondsSinceUnixEpoch)> {
        let owner = owner.to_owned();
        let limit = self.config.media.max_pending_uploads;
        let expires_ms = now_ms().saturating_add(self.config.media.unused_upload_expiry_secs.saturating_mul(1000));
        let media_id = random_string(MEDIA_ID_LENGTH);
        let key = media_id.clone();
        self.claims
            .run(&self.db, move |db| {
                let now = now_ms();
                let mut batch = Batch::new();
                let mut live = 0;
                for ((user, id), expiry) in MEDIA_PENDING_BY_USER.scan_prefix(db, &(owner.clone(),))? {
                    if expiry <= now {
                        batch.delete(&MEDIA_PENDING_BY_USER, &(user, id.clone()));
                        batch.delete(&MEDIA_PENDING, &id);
                    } else {
                        live += 1;
                    }
                }
                if live >= limit {
                    db.write(batch)?;
                    let mut data = LimitExceededErrorData::new();
                    data.retry_after = Some(RetryAfter::Delay(Duration::from_secs(60)));
                    return Err(Error::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorKind::LimitExceeded(data),
                        "Too many media IDs reserved and not uploaded yet",
                    ));
                }
                batch.put(&MEDIA_PENDING, &key, &PendingMediaRecord { owner: owner.clone(), expires_ms })?;
                batch.put(&MEDIA_PENDING_BY_USER, &(owner, key.clone()), &expires_ms)?;
                Ok(db.write(batch)?)
            })
            .await?;
        let expires = MilliSecondsSinceUnixEpoch(UInt::new_saturating(expires_ms));
        Ok((self.mxc(&media_id), expires))
    }

    /// Uploads content to a reserved media ID (`PUT /upload/{serverName}/{mediaId}`).
    pub async fn upload_reserved(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        if server_name != self.config.server_name || !valid_media_id(media_id) {
            return Err(Error::not_found("Unknown media ID"));
        }
        // The file is content-addressed, so writing it before the checks is harmless.
        let record = self.store_file(bytes, content_type, filename, Some(uploader)).await?;
        let media_id = media_id.to_owned();
        let uploader = uploader.to_owned();
        let uploaded = self.uploaded.clone();
        let server = self.config.server_name.to_string();
        self.claims
            .run(&self.db, move |db| {
                if MEDIA.contains(db, &media_id)? {
                    return Err(Error::new(
                        StatusCode::CONFLICT,
                        ErrorKind::CannotOverwriteMedia,
                        "Media has already been uploaded to this ID",
                    ));
                }
                let pending = MEDIA_PENDING
                    .get(db, &media_id)?
                    .filter(|p| p.expires_ms > now_ms())
                    .ok_or_else(|| Error::not_found("Unknown or expired media ID"))?;
                if pending.owner != uploader {
                    return Err(Error::forbidden("This media ID was reserved by another user"));
                }
                let mut batch = Batch::new();
                batch.put(&MEDIA, &media_id, &record)?;
                Self::quarantine_if_known(db, &mut batch, &server, &media_id, &record.sha256)?;
                batch.delete(&MEDIA_PENDING, &media_id);
                batch.delete(&MEDIA_PENDING_BY_USER, &(uploader, media_id.clone()));
                db.write(batch)?;
                // Here, so a dropped request cannot leave waiting downloads asleep.
                uploaded.notify_waiters();
                Ok(())
            })
            .await
    }

    /// The record of local media, waiting up to `timeout` for reserved media to be uploaded.
    async fn record(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
    ) -> Result<MediaRecord> {
        if server_name != self.config.server_name || !valid_media_id(media_id) {
            return Err(Error::not_found("Media not found"));
        }
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            // Registered before the check, so an upload between the check and the wait wakes it.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let key = media_id.to_owned();
            let quarantine_key = (server_name.to_string(), media_id.to_owned());
            let (record, pending, quarantined, last_access) = self
                .db
                .run(move |db| {
                    let record = MEDIA.get(db, &key)?;
                    let pending = record.is_none()
                        && MEDIA_PENDING.get(db, &key)?.is_some_and(|pending| pending.expires_ms > now_ms());
                    let quarantined = MEDIA_QUARANTINE.contains(db, &quarantine_key)?;
                    Ok((record, pending, quarantined, MEDIA_LAST_ACCESS.get(db, &key)?))
                })
                .await?;
            if quarantined {
                // Synapse's answer for quarantined media.
                return Err(Error::not_found("Not found"));
            }
            if let Some(record) = record {
                if access == Access::Legacy && !record.legacy_access {
                    // Synapse's answer for frozen media on the legacy endpoints.
                    return Err(Error::not_found(
                        "Media not found: media uploaded since the freeze is served only by the \
                         authenticated endpoints (/_matrix/client/v1/media)",
                    ));
                }
                self.touch(media_id, last_access).await;
                return Ok(record);
            }
            if !pending {
                return Err(Error::not_found("Media not found"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
        }
    }

    async fn file(&self, sha256: &str) -> Result<Vec<u8>> {
        self.store
            .get(sha256)
            .await?
            .ok_or_else(|| Error::internal(format!("media file {sha256} is missing from the media directory")))
    }

    /// Downloads media: local, or another server's (fetched over federation, then cached).
    pub async fn get(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
    ) -> Result<Content> {
        if server_name != self.config.server_name {
            return self.remote_get(server_name, media_id, timeout).await;
        }
        let record = self.record(server_name, media_id, access, timeout).await?;
        let bytes = self.file(&record.sha256).await?;
        Ok(Content { bytes, content_type: record.content_type, filename: record.filename })
    }

    /// A thumbnail of local media, made once and then cached.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
        spec: Spec,
    ) -> Result<Content> {
        if spec.width == 0 || spec.height == 0 {
            return Err(Error::invalid_param("Thumbnail width and height must be positive"));
        }
        if server_name != self.config.server_name {
            return self.remote_thumbnail(server_name, media_id, timeout, &spec).await;
        }
        let record = self.record(server_name, media_id, access, timeout).await?;
        // Keyed by the standard size the request rounds up to: every request that rounds to the
        // same size gets the same thumbnail, so arbitrary sizes do not multiply cache entries.
        let (box_width, box_height) = thumbnails::target_box(&spec);
        // With encryption at rest the original's hash is keyed (`Db::term`), as in file names.
        let key = format!(
            "{}/{}/{box_width}x{box_height}/{}",
            self.db.term(&record.sha256),
            spec.method.as_str(),
            u8::from(spec.animated)
        );
        let lookup = key.clone();
        if let Some(cached) = self.db.run(move |db| Ok(MEDIA_THUMBNAILS.get(db, &lookup)?)).await?
            && let Some(bytes) = self.store.get(&cached.sha256).await?
        {
            return Ok(Content { bytes, content_type: Some(cached.content_type), filename: None });
        }
        // Taken before reading the original, so waiting requests do not hold originals in memory.
        let _permit =
            self.thumbnailing.acquire().await.map_err(|_| Error::internal("thumbnailing is shutting down"))?;
        let original = self.file(&record.sha256).await?;
        let store = self.store.clone();
        let made = tokio::task::spawn_blocking(move || {
            let outcome = thumbnails::make(&original, &spec)?;
            let stored = match &outcome {
                Outcome::Thumbnail(thumbnail) => Some(store.put(&thumbnail.bytes)),
                Outcome::Original => None,
            };
            Ok::<_, ThumbnailError>((outcome, original, stored))
        })
        .await
        .map_err(|e| Error::internal(format!("thumbnail task failed: {e}")))?;
        let (outcome, original, stored) = made.map_err(|error| match error {
            ThumbnailError::TooLarge(message) => Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                format!("The image is too large to thumbnail: {message}"),
            ),
            ThumbnailError::Unsupported(message) => Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                format!("Cannot make a thumbnail of this media: {message}"),
            ),
        })?;
        match (outcome, stored) {
            (Outcome::Thumbnail(thumbnail), Some(sha256)) => {
                let thumbnail_record = ThumbnailRecord {
                    sha256: sha256?,
                    content_type: thumbnail.content_type.to_owned(),
                    width: thumbnail.width,
                    height: thumbnail.height,
                };
                self.db
                    .run(move |db| {
                        let mut batch = Batch::new();
                        batch.put(&MEDIA_THUMBNAILS, &key, &thumbnail_record)?;
                        Ok(db.write(batch)?)
                    })
                    .await?;
                Ok(Content {
                    bytes: thumbnail.bytes,
                    content_type: Some(thumbnail.content_type.into()),
                    filename: None,
                })
            }
            _ => Ok(Content { bytes: original, content_type: record.content_type, filename: None }),
        }
    }

    /// An OpenGraph preview of `url`, cached for `url_preview.cache_secs`.
    pub async fn preview(&self, url: &str) -> Result<Map<String, Value>> {
        let config = self.fetcher.config();
        if !config.enabled {
            return Err(Error::forbidden("URL previews are disabled on this server"));
        }
        let parsed = Fetcher::parse_url(url).map_err(preview_error)?;
        // A URL from a message is user content: keyed with encryption at rest (`Db::term`).
        let key = self.db.term(url);
        let max_age_ms = config.cache_secs.saturating_mul(1000);
        if let Some(cached) = self.db.run(move |db| Ok(URL_PREVIEWS.get(db, &key)?)).await?
            && now_ms().saturating_sub(cached.fetched_ms) < max_age_ms
        {
            return Ok(cached.data);
        }
        let _permit = self.previews.acquire().await.map_err(|_| Error::internal("previews are shutting down"))?;
        let time_limit = Duration::from_secs(config.timeout_secs.max(1));
        let data = tokio::time::timeout(time_limit, self.fetch_preview(parsed))
            .await
            .map_err(|_| preview_error(PreviewError::Fetch("The page took too long to load".into())))??;
        let record = UrlPreviewRecord { fetched_ms: now_ms(), data: data.clone() };
        let key = self.db.term(url);
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                batch.put(&URL_PREVIEWS, &key, &record)?;
                Ok(db.write(batch)?)
            })
            .await?;
        Ok(data)
    }

    async fn fetch_preview(&self, url: reqwest::Url) -> Result<Map<String, Value>> {
        let page = self.fetcher.fetch(url, true).await.map_err(preview_error)?;
        let mime = page.content_type.as_deref().map(essence).unwrap_or_default();
        if mime.starts_with("image/") && !page.truncated {
            return self.preview_image(page.body, &mime, Map::new()).await;
        }
        if mime != "text/html" && mime != "application/xhtml+xml" {
            return Ok(Map::new());
        }
        let (properties, image) = preview::parse_html(&page.body, &page.url);
        let Some(image_url) = image else { return Ok(properties) };
        match self.fetcher.fetch(image_url, false).await {
            Ok(image) => {
                let mime = image.content_type.as_deref().map(essence).unwrap_or_default();
                if mime.starts_with("image/") {
                    return self.preview_image(image.body, &mime, properties).await;
                }
                Ok(properties)
            }
            Err(error) => {
                tracing::debug!(%error, "URL preview image not fetched");
                Ok(properties)
            }
        }
    }

    /// Stores a preview's image as media and describes it in the preview.
    async fn preview_image(
        &self,
        bytes: Vec<u8>,
        mime: &str,
        mut properties: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let dimensions = thumbnails::dimensions(&bytes).ok();
        let size = bytes.len();
        let uri = self.create(None, bytes, Some(mime.to_owned()), None).await?;
        properties.insert("og:image".into(), Value::String(uri.to_string()));
        properties.insert("og:image:type".into(), Value::String(mime.to_owned()));
        properties.insert("matrix:image:size".into(), Value::from(size));
        if let Some((width, height)) = dimensions {
            properties.insert("og:image:width".into(), Value::from(width));
            properties.insert("og:image:height".into(), Value::from(height));
        }
        Ok(properties)
    }
}

/// A content type without its parameters, in lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn preview_error(error: PreviewError) -> Error {
    match error {
        PreviewError::Forbidden(message) => Error::forbidden(message),
        PreviewError::InvalidUrl(message) => Error::invalid_param(message),
        PreviewError::Fetch(message) => Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message),
    }
}

/// Media IDs are `[A-Za-z0-9_-]+`, as the spec requires servers to enforce.
fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
