//! Online backups of the whole server (database and media) while it runs, their restore into
//! an empty data directory, and scheduled backups with retention (`[global.backup]`).
//!
//! A backup is a directory: `db/` (a consistent copy of the database taken by the storage
//! engine's checkpoint, one point in time, while writes go on), `media/` (the media files,
//! copied after the database copy, so every file the copied database refers to is there), and
//! `manifest.json` (see [`manifest`]), written last. Backups are incremental against the newest
//! complete backup of the same server in the same parent directory: a database file the engine
//! never changes once written (RocksDB's SST files) and a media file (named by its SHA-256) that
//! the earlier backup has with the same path, size and SHA-256 (in its manifest and on disk) is
//! hard-linked from it instead of being stored again. Every file is still read and hashed:
//! incremental saves space and writes, not reads, and never carries a damaged file over.
//!
//! All file work here blocks: [`ServerBackups::create`] runs it on the blocking pool; the
//! command line calls the blocking functions directly.

pub mod manifest;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;

use self::manifest::{FORMAT_VERSION, FileEntry, MANIFEST, Manifest, copy_hashing, hash_file, io_failure, rfc3339};
use crate::{
    Error,
    config::Config,
    service::now_ms,
    storage::{Db, SCHEMA_VERSION},
};

/// Why a backup, verification or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request cannot be satisfied as asked (a bad directory, another server's backup, a
    /// corrupted file).
    #[error("{0}")]
    Invalid(String),
    /// Something failed on the way (disk full, permissions).
    #[error("{0}")]
    Failed(String),
}

impl From<BackupError> for Error {
    fn from(error: BackupError) -> Self {
        match error {
            BackupError::Invalid(message) => Error::invalid_param(message),
            BackupError::Failed(message) => Error::internal(message),
        }
    }
}

/// The prefix of scheduled backups' directory names; retention only ever deletes these.
pub const SCHEDULED_PREFIX: &str = "trellis-backup-";

/// What a finished backup holds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub directory: PathBuf,
    pub created: String,
    pub schema_version: u64,
    pub files: usize,
    pub bytes: u64,
    /// Files hard-linked from `incremental_base` rather than stored again.
    pub linked_files: usize,
    pub linked_bytes: u64,
    pub incremental_base: Option<String>,
}

impl Summary {
    fn of(directory: &Path, manifest: &Manifest) -> Self {
        let linked: Vec<&FileEntry> = manifest.files.iter().filter(|f| f.linked).collect();
        Self {
            directory: directory.to_owned(),
            created: manifest.created.clone(),
            schema_version: manifest.schema_version,
            files: manifest.files.len(),
            bytes: manifest.total_bytes(),
            linked_files: linked.len(),
            linked_bytes: linked.iter().map(|f| f.size).sum(),
            incremental_base: manifest.incremental_base.clone(),
        }
    }
}

/// Online backups of a running server; one at a time.
pub struct ServerBackups {
    db: Db,
    config: Arc<Config>,
    /// Held by the blocking work itself, so a backup whose request went away still keeps the
    /// next one waiting until it has finished.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl ServerBackups {
    pub fn new(db: Db, config: Arc<Config>) -> Self {
        Self { db, config, running: Arc::default() }
    }

    /// Takes a backup into `to` (absolute; absent or empty) on the blocking pool. A second
    /// request waits for the first to finish. The work finishes even if the caller goes away.
    pub async fn create(&self, to: PathBuf) -> crate::Result<Summary> {
        if !to.is_absolute() {
            return Err(Error::invalid_param("The backup directory must be an absolute path"));
        }
        let guard = self.running.clone().lock_owned().await;
        let (db, config) = (self.db.clone(), self.config.clone());
        let summary = tokio::task::spawn_blocking(move || {
            let summary = create(&db, &config, &to);
            drop(guard);
            summary
        })
        .await
        .map_err(|e| Error::internal(format!("backup task failed: {e}")))??;
        Ok(summary)
    }

    /// Takes a scheduled backup into `[global.backup] directory` and deletes the oldest beyond
    /// `keep`.
    async fn scheduled(&self) -> crate::Result<Summary> {
        let Some(parent) = self.config.backup.directory.clone() else {
            return Err(Error::internal("no backup directory is configured"));
        };
        let parent = std::path::absolute(&parent).map_err(|e| Error::internal(e.to_string()))?;
        let name = format!("{SCHEDULED_PREFIX}{}", rfc3339(now_ms()).replace(':', ""));
        let summary = self.create(parent.join(name)).await?;
        let keep = self.config.backup.keep;
        tokio::task::spawn_blocking(move || prune(&parent, keep))
            .await
            .map_err(|e| Error::internal(format!("backup retention failed: {e}")))??;
        Ok(summary)
    }

    /// Runs scheduled backups every `interval_secs` while the server runs, if configured.
    pub fn spawn_schedule(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.config.backup.directory.as_ref()?;
        let interval = Duration::from_secs(self.config.backup.interval_secs.max(1));
        let backups = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match backups.scheduled().await {
                    Ok(summary) => tracing::info!(
                        directory = %summary.directory.display(),
                        files = summary.files,
                        bytes = summary.bytes,
                        linked_files = summary.linked_files,
                        "scheduled backup done"
                    ),
                    Err(error) => tracing::error!(%error, "scheduled backup failed"),
                }
            }
        }))
    }
}

/// Takes a backup of `db` and the media directory into `to` (blocking). `to` must be absent
/// or an empty directory, and outside the database and media directories. On failure the
/// partial backup is removed.
pub fn create(db: &Db, config: &Config, to: &Path) -> Result<Summary, BackupError> {
    let media_dir = config.media.directory(&config.database_path);
    let to = std::path::absolute(to).map_err(|e| io_failure(to, e))?;
    for (inside, what) in [(&config.database_path, "database"), (&media_dir, "media")] {
        if let Ok(inside) = std::path::absolute(inside)
            && to.starts_with(&inside)
        {
            return Err(BackupError::Invalid(format!(
                "the backup directory {} is inside the {what} directory {}",
                to.display(),
                inside.display()
            )));
        }
    }
    if to.exists() && !to.is_dir() {
        return Err(BackupError::Invalid(format!("the backup directory {} is not a directory", to.display())));
    }
    if to.exists() && !is_empty_dir(&to)? {
        return Err(BackupError::Invalid(format!("the backup directory {} exists and is not empty", to.display())));
    }
    let created_dir = !to.exists();
    std::fs::create_dir_all(&to).map_err(|e| io_failure(&to, e))?;
    let result = fill(db, config, &media_dir, &to);
    if result.is_err() {
        // Leave nothing that looks like a backup; an empty directory the caller made stays.
        let _ = std::fs::remove_dir_all(to.join("db"));
        let _ = std::fs::remove_dir_all(to.join("media"));
        if created_dir {
            let _ = std::fs::remove_dir(&to);
        }
    }
    result
}

fn fill(db: &Db, config: &Config, media_dir: &Path, to: &Path) -> Result<Summary, BackupError> {
    let base = newest_backup_beside(to, config.server_name.as_str());
    let base_files = base.as_ref().map(|(_, manifest)| manifest.by_path()).unwrap_or_default();
    let created_ms = now_ms();
    let db_dir = to.join("db");
    db.checkpoint(&db_dir).map_err(|e| BackupError::Failed(e.0))?;

    let mut files = Vec::new();
    // Makes `target` a hard link to the earlier backup's file of the same path when that file
    // holds exactly the bytes just hashed (its size and SHA-256 in its manifest and on disk:
    // a damaged earlier file is never carried over). Returns whether it did.
    let reuse = |relative: &str, target: &Path, size: u64, sha256: &str| -> Result<bool, BackupError> {
        let Some((base_dir, _)) = &base else { return Ok(false) };
        let Some(earlier) = base_files.get(relative) else { return Ok(false) };
        if earlier.size != size || earlier.sha256 != sha256 {
            return Ok(false);
        }
        let earlier_path = base_dir.join(relative);
        if same_file(&earlier_path, target) {
            return Ok(true);
        }
        if !hash_file(&earlier_path).is_ok_and(|(s, h)| s == size && h == sha256) {
            return Ok(false);
        }
        // Link beside the target, then rename over it: the target is never half there.
        let link = target.with_extension("link");
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_failure(parent, e))?;
        }
        let _ = std::fs::remove_file(&link);
        if std::fs::hard_link(&earlier_path, &link).is_err() {
            return Ok(false);
        }
        std::fs::rename(&link, target).map_err(|e| io_failure(target, e))?;
        Ok(true)
    };

    let mut db_names: Vec<String> = std::fs::read_dir(&db_dir)
        .map_err(|e| io_failure(&db_dir, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    db_names.sort();
    for name in db_names {
        let path = db_dir.join(&name);
        let relative = format!("db/{name}");
        let (size, sha256) = hash_file(&path).map_err(|e| io_failure(&path, e))?;
        let linked = !db.mutable_copy_file(&name) && reuse(&relative, &path, size, &sha256)?;
        let entry = FileEntry { path: relative, size, sha256, linked };
        files.push(entry);
    }

    for relative in media_files(media_dir)? {
        let from = media_dir.join(&relative);
        let target = to.join("media").join(&relative);
        let key = format!("media/{relative}");
        let (size, sha256) = match hash_file(&from) {
            Ok(hashed) => hashed,
            // Deleted since the listing (remote media evicted from the cache).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_failure(&from, error)),
        };
        let entry = if reuse(&key, &target, size, &sha256)? {
            FileEntry { path: key, size, sha256, linked: true }
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_failure(parent, e))?;
            }
            match copy_hashing(&from, &target) {
                Ok((size, sha256)) => FileEntry { path: key, size, sha256, linked: false },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&target);
                    continue;
                }
                Err(error) => return Err(io_failure(&from, error)),
            }
        };
        files.push(entry);
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        schema_version: SCHEMA_VERSION,
        server_name: config.server_name.to_string(),
        created_ms,
        created: rfc3339(created_ms),
        trellis_version: env!("CARGO_PKG_VERSION").to_owned(),
        incremental_base: base.as_ref().and_then(|(dir, _)| dir.file_name()).map(|n| n.to_string_lossy().into_owned()),
        files,
    };
    manifest.write(to)?;
    Ok(Summary::of(to, &manifest))
}

/// The media files under `dir`, as `/`-separated paths relative to it, without the directory
/// of unfinished uploads.
fn media_files(dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = dir.join(&relative);
        for entry in std::fs::read_dir(&here).map_err(|e| io_failure(&here, e))? {
            let entry = entry.map_err(|e| io_failure(&here, e))?;
            let name = entry.file_name();
            let child = relative.join(&name);
            let kind = entry.file_type().map_err(|e| io_failure(&entry.path(), e))?;
            if kind.is_dir() {
                if !(relative.as_os_str().is_empty() && name == "tmp") {
                    pending.push(child);
                }
            } else if kind.is_file()
                && let Some(text) = child.to_str()
            {
                out.push(text.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether two paths name the same file (hard links to one inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn is_empty_dir(path: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(io_failure(path, error)),
    }
}

/// The newest complete backup of `server_name` in the same parent directory as `to`.
fn newest_backup_beside(to: &Path, server_name: &str) -> Option<(PathBuf, Manifest)> {
    let parent = to.parent()?;
    std::fs::read_dir(parent)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path != to && path.join(MANIFEST).is_file())
        .filter_map(|path| Manifest::read(&path).ok().map(|manifest| (path, manifest)))
        .filter(|(_, manifest)| manifest.server_name == server_name && manifest.format_version == FORMAT_VERSION)
        .max_by_key(|(_, manifest)| manifest.created_ms)
}

/// Deletes the oldest scheduled backups in `parent` beyond the newest `keep` complete ones, and
/// interrupted scheduled backups (no manifest) older than the newest complete one.
pub fn prune(parent: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut scheduled: Vec<(PathBuf, bool)> = std::fs::read_dir(parent)
        .map_err(|e| io_failure(parent, e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(SCHEDULED_PREFIX)))
        .map(|path| {
            let complete = path.join(MANIFEST).is_file();
            (path, complete)
        })
        .collect();
    // The names end in the UTC time, so they sort oldest first.
    scheduled.sort();
    let newest_complete = scheduled.iter().rposition(|(_, complete)| *complete);
    let complete = scheduled.iter().filter(|(_, complete)| *complete).count();
    let mut excess = complete.saturating_sub(keep);
    let mut removed = Vec::new();
    for (index, (path, complete)) in scheduled.into_iter().enumerate() {
        if complete && excess > 0 {
            excess -= 1;
            removed.push(path);
        } else if !complete && newest_complete.is_some_and(|newest| index < newest) {
            removed.push(path);
        }
    }
    for path in &removed {
        std::fs::remove_dir_all(path).map_err(|e| io_failure(path, e))?;
        tracing::info!(directory = %path.display(), "deleted an old scheduled backup");
    }
    Ok(removed)
}

/// Restores the backup in `from` into the config's (empty) database and media directories
/// (blocking). Refuses a backup that fails verification, belongs to another server name, or
/// holds a newer schema than this Trellis knows.
pub fn restore(config: &Config, from: &Path) -> Result<Summary, BackupError> {
    let verified = manifest::verify(from)?;
    let manifest = verified.manifest;
    if manifest.server_name != config.server_name.as_str() {
        return Err(BackupError::Invalid(format!(
            "the backup in {} is of server_name \"{}\", but the config says \"{}\"; a server name cannot \
             change, so restore it with a config for \"{}\"",
            from.display(),
            manifest.server_name,
            config.server_name,
            manifest.server_name
        )));
    }
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(BackupError::Invalid(format!(
            "the backup in {} has database schema version {}, newer than this Trellis knows ({SCHEMA_VERSION}); \
             restore it with the Trellis version that made it ({}) or newer",
            from.display(),
            manifest.schema_version,
            manifest.trellis_version
        )));
    }
    let db_dir = config.database_path.clone();
    let media_dir = config.media.directory(&db_dir);
    for (dir, key) in [(&db_dir, "database_path"), (&media_dir, "media.path")] {
        if !is_empty_dir(dir)? {
            return Err(BackupError::Invalid(format!(
                "{key} {} is not empty; restore only into an empty directory (move the old one aside first)",
                dir.display()
            )));
        }
    }
    let copied = copy_into(from, &manifest, &db_dir, &media_dir);
    if copied.is_err() {
        // Both were empty or absent: what is there now is this restore's partial copy.
        clear_dir(&media_dir);
        clear_dir(&db_dir);
    }
    copied?;
    std::fs::create_dir_all(&db_dir).map_err(|e| io_failure(&db_dir, e))?;
    Ok(Summary::of(from, &manifest))
}

/// Removes everything inside `dir` (best effort), keeping `dir` itself.
fn clear_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let _ = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
    }
}

fn copy_into(from: &Path, manifest: &Manifest, db_dir: &Path, media_dir: &Path) -> Result<(), BackupError> {
    for entry in &manifest.files {
        let source = manifest::resolve(from, &entry.path)?;
        let target = match (entry.path.strip_prefix("db/"), entry.path.strip_prefix("media/")) {
            (Some(rest), _) => db_dir.join(rest),
            (_, Some(rest)) => media_dir.join(rest),
            _ => continue,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_failure(parent, e))?;
        }
        let (size, sha256) = copy_hashing(&source, &target).map_err(|e| io_failure(&source, e))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(BackupError::Invalid(format!(
                "backup file {} changed while it was restored; restore again into an empty directory",
                entry.path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_complete_backups_and_nothing_else_of_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, complete: bool| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            if complete {
                std::fs::write(path.join(MANIFEST), b"{}").unwrap();
            }
        };
        make("trellis-backup-2026-01-01T000000Z", true);
        make("trellis-backup-2026-01-02T000000Z", false);
        make("trellis-backup-2026-01-03T000000Z", true);
        make("trellis-backup-2026-01-04T000000Z", true);
        make("trellis-backup-2026-01-05T000000Z", false);
        make("manual", true);
        let removed = prune(dir.path(), 2).unwrap();
        let names: Vec<String> =
            removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["trellis-backup-2026-01-01T000000Z", "trellis-backup-2026-01-02T000000Z"]);
        // The newest (perhaps still running) unfinished one and other directories stay.
        for kept in ["trellis-backup-2026-01-03T000000Z", "trellis-backup-2026-01-05T000000Z", "manual"] {
            assert!(dir.path().join(kept).is_dir(), "{kept}");
        }
    }
}
