//! What the media admin API does to the media repository: describing local and cached remote
//! media, quarantining (local media and other servers', cached or not, and all media of the
//! same content; protected local media never), protecting, deleting local media by ID or by last use, and purging the remote cache.
//! Every write to local media's metadata happens under the `claims` lock, so a quarantine, a
//! protection, a download's last-use mark and a deletion never undo one another.

use std::collections::{HashMap, HashSet};

use ruma::{ServerName, UserId};

use super::Media;
use crate::{
    Result,
    service::now_ms,
    storage::{
        Batch, Db, ScanDirection,
        media_admin_tables::{
            MEDIA_LAST_ACCESS, MEDIA_PROTECTED, MEDIA_QUARANTINE, MEDIA_QUARANTINED_CONTENT, QuarantineRecord,
        },
        remote_tables::{REMOTE_MEDIA, RemoteMediaRecord},
        tables::{MEDIA, MEDIA_THUMBNAILS, MediaRecord},
    },
};

/// A download refreshes the media's last use at most this often (it is a write).
const TOUCH_INTERVAL_MS: u64 = 60_000;

/// Local media as the admin API describes it.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub media_id: String,
    pub record: MediaRecord,
    pub last_access_ms: Option<u64>,
    pub quarantined_by: Option<String>,
    pub protected: bool,
}

/// Cached media of another server as the admin API describes it.
#[derive(Debug, Clone)]
pub struct RemoteMedia {
    pub record: RemoteMediaRecord,
    pub quarantined_by: Option<String>,
}

/// What [`Media::delete_unused`] deletes.
#[derive(Debug, Clone)]
pub struct Unused {
    /// Last downloaded (or, never downloaded, uploaded) before this (ms since the epoch).
    pub before_ms: u64,
    /// Larger than this many bytes.
    pub size_gt: u64,
    /// Media IDs kept whatever their age (avatars).
    pub keep: HashSet<String>,
}

impl Media {
    fn describe(db: &Db, server: &str, media_id: String, record: MediaRecord) -> Result<LocalMedia> {
        let quarantine = MEDIA_QUARANTINE.get(db, &(server.to_owned(), media_id.clone()))?;
        Ok(LocalMedia {
            last_access_ms: MEDIA_LAST_ACCESS.get(db, &media_id)?,
            protected: MEDIA_PROTECTED.contains(db, &media_id)?,
            quarantined_by: quarantine.map(|q| q.by.to_string()),
            media_id,
            record,
        })
    }

    /// Every piece of media `user` uploaded (in no particular order).
    pub async fn media_of_user(&self, user: &UserId) -> Result<Vec<LocalMedia>> {
        let (user, server) = (user.to_owned(), self.config.server_name.to_string());
        self.db
            .run(move |db| {
                MEDIA
                    .all(db)?
                    .into_iter()
                    .filter(|(_, record)| record.uploader.as_ref() == Some(&user))
                    .map(|(media_id, record)| Self::describe(db, &server, media_id, record))
                    .collect()
            })
            .await
    }

    /// One piece of local media, if it exists.
    pub async fn local_media(&self, media_id: &str) -> Result<Option<LocalMedia>> {
        let (media_id, server) = (media_id.to_owned(), self.config.server_name.to_string());
        self.db
            .run(move |db| match MEDIA.get(db, &media_id)? {
                Some(record) => Self::describe(db, &server, media_id, record).map(Some),
                None => Ok(None),
            })
            .await
    }

    /// Another server's media, if it is cached here.
    pub async fn cached_remote_media(&self, server: &ServerName, media_id: &str) -> Result<Option<RemoteMedia>> {
        let quarantine_key = (server.to_string(), media_id.to_owned());
        let key = format!("{server}/{media_id}");
        self.db
            .run(move |db| {
                let Some(record) = REMOTE_MEDIA.get(db, &key)? else { return Ok(None) };
                let quarantined_by = MEDIA_QUARANTINE.get(db, &quarantine_key)?.map(|q| q.by.to_string());
                Ok(Some(RemoteMedia { record, quarantined_by }))
            })
            .await
    }

    /// Whether the media (of any server) is quarantined.
    pub(super) async fn is_quarantined(&self, server: &ServerName, media_id: &str) -> Result<bool> {
        let key = (server.to_string(), media_id.to_owned());
        self.db.run(move |db| Ok(MEDIA_QUARANTINE.contains(db, &key)?)).await
    }

    /// Quarantines (`by` an admin) or releases (`by` `None`) media given as (server, media ID),
    /// with every other piece of media of the same content (local, and other servers' cached
    /// here), as Synapse does; local media uploaded later with quarantined content is
    /// quarantined too. Local media must exist, and protected local media is never
    /// quarantined; other servers' media is quarantined whether it is cached or not, so it is
    /// not fetched again. Returns how many pieces of media were (un)quarantined.
    pub async fn set_quarantined(&self, targets: Vec<(String, String)>, by: Option<&UserId>) -> Result<usize> {
        let local = self.config.server_name.to_string();
        let record = by.map(|by| QuarantineRecord { by: by.to_owned(), ts: now_ms() });
        self.claims
            .run(&self.db, move |db| {
                let quarantine = record.is_some();
                let mut rows = HashSet::new();
                let mut hashes = HashSet::new();
                for (server, media_id) in targets {
                    if !super::valid_media_id(&media_id) {
                        continue;
                    }
                    if server == local {
                        let Some(media) = MEDIA.get(db, &media_id)? else { continue };
                        if quarantine && MEDIA_PROTECTED.contains(db, &media_id)? {
                            continue;
                        }
                        hashes.insert(media.sha256);
                    } else if let Some(cached) = REMOTE_MEDIA.get(db, &format!("{server}/{media_id}"))? {
                        hashes.insert(cached.sha256);
                    }
                    rows.insert((server, media_id));
                }
                if !hashes.is_empty() {
                    for (media_id, media) in MEDIA.all(db)? {
                        if hashes.contains(&media.sha256) && !(quarantine && MEDIA_PROTECTED.contains(db, &media_id)?) {
                            rows.insert((local.clone(), media_id));
                        }
                    }
                    // Originals only: thumbnails' keys have more parts.
                    for (key, cached) in REMOTE_MEDIA.all(db)? {
                        if let Some((server, media_id)) = key.split_once('/')
                            && !media_id.contains('/')
                            && hashes.contains(&cached.sha256)
                        {
                            rows.insert((server.to_owned(), media_id.to_owned()));
                        }
                    }
                }
                let mut batch = Batch::new();
                for hash in &hashes {
                    match &record {
                        Some(record) => batch.put(&MEDIA_QUARANTINED_CONTENT, &db.term(hash), record)?,
                        None => batch.delete(&MEDIA_QUARANTINED_CONTENT, &db.term(hash)),
                    }
                }
                let count = rows.len();
                for key in rows {
                    match &record {
                        Some(record) => batch.put(&MEDIA_QUARANTINE, &key, record)?,
                        None => batch.delete(&MEDIA_QUARANTINE, &key),
                    }
                }
                db.write(batch)?;
                Ok(count)
            })
            .await
    }

    /// Stages the quarantine of new local media whose content is quarantined (under the
    /// `claims` lock, with the media's record).
    pub(super) fn quarantine_if_known(
        db: &Db,
        batch: &mut Batch,
        server: &str,
        media_id: &str,
        sha256: &str,
    ) -> Result<()> {
        if let Some(record) = MEDIA_QUARANTINED_CONTENT.get(db, &db.term(sha256))? {
            batch.put(&MEDIA_QUARANTINE, &(server.to_owned(), media_id.to_owned()), &record)?;
        }
        Ok(())
    }

    /// Protects local media from quarantine (or stops protecting it). `false` when there is no
    /// such media.
    pub async fn set_protected(&self, media_id: &str, protected: bool) -> Result<bool> {
        let media_id = media_id.to_owned();
        self.claims
            .run(&self.db, move |db| {
                if !MEDIA.contains(db, &media_id)? {
                    return Ok(false);
                }
                let mut batch = Batch::new();
                if protected {
                    batch.put(&MEDIA_PROTECTED, &media_id, &())?;
                } else {
                    batch.delete(&MEDIA_PROTECTED, &media_id);
                }
                db.write(batch)?;
                Ok(true)
            })
            .await
    }

    /// Marks local media as downloaded now, at most once per [`TOUCH_INTERVAL_MS`]. A failure
    /// is logged, never the download's.
    pub(super) async fn touch(&self, media_id: &str, last_access_ms: Option<u64>) {
        let now = now_ms();
        if last_access_ms.is_some_and(|last| now.saturating_sub(last) < TOUCH_INTERVAL_MS) {
            return;
        }
        let key = media_id.to_owned();
        let touched = self
            .claims
            .run(&self.db, move |db| {
                // Only if it is still there: a deletion in between must not leave a row behind.
                if MEDIA.contains(db, &key)? {
                    let mut batch = Batch::new();
                    batch.put(&MEDIA_LAST_ACCESS, &key, &now)?;
                    db.write(batch)?;
                }
                Ok(())
            })
            .await;
        if let Err(error) = touched {
            tracing::warn!(media_id, %error, "could not record when media was last downloaded");
        }
    }

    /// Deletes local media by ID: metadata, admin marks, thumbnails, and files no other media
    /// shares. Returns the IDs deleted (those that existed).
    pub async fn delete_local(&self, media_ids: Vec<String>) -> Result<Vec<String>> {
        let (store, server) = (self.store.clone(), self.config.server_name.to_string());
        self.claims
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let (deleted, files) = remove_local(db, &mut batch, &server, media_ids)?;
                db.write(batch)?;
                for file in files {
                    store.remove(&file)?;
                }
                Ok(deleted)
            })
            .await
    }

    /// Deletes local media unused since a date (Synapse's `POST /media/delete`): neither
    /// quarantined nor protected, nor kept. Returns the IDs deleted.
    pub async fn delete_unused(&self, unused: Unused) -> Result<Vec<String>> {
        let (store, server) = (self.store.clone(), self.config.server_name.to_string());
        self.claims
            .run(&self.db, move |db| {
                let mut picked = Vec::new();
                for (media_id, record) in MEDIA.all(db)? {
                    let last = MEDIA_LAST_ACCESS.get(db, &media_id)?;
                    let old = match last {
                        Some(last) => last < unused.before_ms,
                        None => record.created_ms < unused.before_ms,
                    };
                    if old
                        && record.size > unused.size_gt
                        && !unused.keep.contains(&media_id)
                        && !MEDIA_PROTECTED.contains(db, &media_id)?
                        && !MEDIA_QUARANTINE.contains(db, &(server.clone(), media_id.clone()))?
                    {
                        picked.push(media_id);
                    }
                }
                let mut batch = Batch::new();
                let (deleted, files) = remove_local(db, &mut batch, &server, picked)?;
                db.write(batch)?;
                for file in files {
                    store.remove(&file)?;
                }
                Ok(deleted)
            })
            .await
    }

    /// Removes cached media of other servers last used before `before_ms` (Synapse's
    /// `purge_media_cache`). Returns how many entries went.
    pub async fn purge_remote_cache(&self, before_ms: u64) -> Result<usize> {
        let store = self.remote_store.clone();
        self.remote_cache
            .run(&self.db, move |db| {
                let all = REMOTE_MEDIA.all(db)?;
                let mut batch = Batch::new();
                let (mut gone, mut kept) = (Vec::new(), HashSet::new());
                for (key, record) in all {
                    if record.last_used_ms < before_ms {
                        batch.delete(&REMOTE_MEDIA, &key);
                        gone.push(record.sha256);
                    } else {
                        kept.insert(record.sha256);
                    }
                }
                db.write(batch)?;
                let count = gone.len();
                for sha256 in gone.into_iter().collect::<HashSet<_>>() {
                    if !kept.contains(&sha256) {
                        store.remove(&sha256)?;
                    }
                }
                Ok(count)
            })
            .await
    }
}

/// Stages the removal of local media (under the `claims` lock): their records and admin marks,
/// and the thumbnails of originals no remaining media shares. Returns the IDs removed and the
/// files (originals and thumbnails) no remaining record names, to remove once the batch is
/// written.
pub(super) fn remove_local(
    db: &Db,
    batch: &mut Batch,
    server: &str,
    media_ids: Vec<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut deleted = Vec::new();
    let mut hashes = HashSet::new();
    for media_id in media_ids {
        let Some(record) = MEDIA.get(db, &media_id)? else { continue };
        batch.delete(&MEDIA, &media_id);
        batch.delete(&MEDIA_LAST_ACCESS, &media_id);
        batch.delete(&MEDIA_PROTECTED, &media_id);
        batch.delete(&MEDIA_QUARANTINE, &(server.to_owned(), media_id.clone()));
        hashes.insert(record.sha256);
        deleted.push(media_id);
    }
    if deleted.is_empty() {
        return Ok((deleted, Vec::new()));
    }
    let gone: HashSet<&String> = deleted.iter().collect();
    // Files are content-addressed: one stays while any remaining media names it.
    let remaining: HashSet<String> =
        MEDIA.all(db)?.into_iter().filter(|(id, _)| !gone.contains(id)).map(|(_, record)| record.sha256).collect();
    let mut thumbnails_gone: HashMap<String, String> = HashMap::new();
    let mut files = Vec::new();
    for hash in hashes.iter().filter(|hash| !remaining.contains(*hash)) {
        files.push(hash.clone());
        // Thumbnail keys start with the original's hash as `Db::term` gives it (keyed with
        // encryption at rest).
        let prefix = format!("{}/", db.term(hash));
        let thumbnails = MEDIA_THUMBNAILS
            .scan_from(db, &prefix, ScanDirection::Forward, usize::MAX, |key| key.starts_with(&prefix))?;
        for (key, thumbnail) in thumbnails {
            batch.delete(&MEDIA_THUMBNAILS, &key);
            thumbnails_gone.insert(key, thumbnail.sha256);
        }
    }
    if !thumbnails_gone.is_empty() {
        // A thumbnail's file stays while another thumbnail or an original has the same bytes.
        let other_thumbnails: HashSet<String> = MEDIA_THUMBNAILS
            .all(db)?
            .into_iter()
            .filter(|(key, _)| !thumbnails_gone.contains_key(key))
            .map(|(_, thumbnail)| thumbnail.sha256)
            .collect();
        let unique: HashSet<String> = thumbnails_gone.into_values().collect();
        files.extend(unique.into_iter().filter(|sha| !remaining.contains(sha) && !other_thumbnails.contains(sha)));
    }
    Ok((deleted, files))
}
