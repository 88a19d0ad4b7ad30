//! The manifest of an online backup (`manifest.json` at its top): format and schema version,
//! server name, time, and every file with its size and SHA-256; and `verify`, which checks a
//! backup's files against it. Blocking file work: run it on the blocking pool.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackupError;

/// The layout version of a backup directory; a newer Trellis may write a higher one, which an
/// older one refuses to restore.
pub const FORMAT_VERSION: u64 = 1;
/// The manifest's file name at the top of a backup directory. It is written last, so a
/// directory without it is an interrupted backup.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u64,
    /// The database schema version the backup holds (`storage::SCHEMA_VERSION` when taken).
    pub schema_version: u64,
    pub server_name: String,
    /// When the database copy was taken, in milliseconds since the Unix epoch and as RFC 3339.
    pub created_ms: u64,
    pub created: String,
    pub trellis_version: String,
    /// The earlier backup (a sibling directory) unchanged files were hard-linked from.
    #[serde(default)]
    pub incremental_base: Option<String>,
    /// Every file, by its path relative to the backup directory (`db/...` or `media/...`).
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Whether the file is a hard link to the same file of `incremental_base`.
    #[serde(default)]
    pub linked: bool,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BackupError::Invalid(format!(
                "{} cannot be read ({e}): {} is not a complete backup",
                path.display(),
                dir.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| BackupError::Invalid(format!("{} is not a valid backup manifest: {e}", path.display())))
    }

    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| BackupError::Failed(e.to_string()))?;
        let path = dir.join(MANIFEST);
        let mut file = File::create(&path).map_err(|e| io_failure(&path, e))?;
        file.write_all(&text).and_then(|()| file.sync_all()).map_err(|e| io_failure(&path, e))
    }

    pub fn by_path(&self) -> BTreeMap<&str, &FileEntry> {
        self.files.iter().map(|entry| (entry.path.as_str(), entry)).collect()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|entry| entry.size).sum()
    }
}

pub(super) fn io_failure(path: &Path, error: std::io::Error) -> BackupError {
    BackupError::Failed(format!("{}: {error}", path.display()))
}

/// Size and SHA-256 (lower-case hex) of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    hash_reader(&mut file, None)
}

/// Copies `from` to `to` (created anew, synced), hashing on the way; returns size and SHA-256.
pub fn copy_hashing(from: &Path, to: &Path) -> std::io::Result<(u64, String)> {
    let mut source = File::open(from)?;
    let mut target = File::create(to)?;
    let result = hash_reader(&mut source, Some(&mut target))?;
    target.sync_all()?;
    Ok(result)
}

fn hash_reader(source: &mut File, mut target: Option<&mut File>) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = source.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        if let Some(target) = target.as_mut() {
            target.write_all(&buffer[..read])?;
        }
        size += read as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A path from a manifest, checked to stay inside the backup directory.
pub fn resolve(dir: &Path, relative: &str) -> Result<PathBuf, BackupError> {
    let path = Path::new(relative);
    let safe = path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
        && (relative.starts_with("db/") || relative.starts_with("media/"));
    if !safe {
        return Err(BackupError::Invalid(format!("the manifest names an invalid path {relative:?}")));
    }
    Ok(dir.join(path))
}

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub manifest: Manifest,
    pub files: usize,
    pub bytes: u64,
}

/// Checks every file of the backup in `dir` against its manifest: present, same size, same
/// SHA-256. The error names every missing or corrupted file.
pub fn verify(dir: &Path) -> Result<Verified, BackupError> {
    let manifest = Manifest::read(dir)?;
    if manifest.format_version > FORMAT_VERSION {
        return Err(BackupError::Invalid(format!(
            "{} has backup format version {}; this Trellis reads up to {FORMAT_VERSION}: use a newer Trellis",
            dir.display(),
            manifest.format_version
        )));
    }
    let mut problems = Vec::new();
    for entry in &manifest.files {
        let path = resolve(dir, &entry.path)?;
        match hash_file(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("backup file {} is missing", entry.path));
            }
            Err(error) => problems.push(format!("backup file {} cannot be read: {error}", entry.path)),
            Ok((size, _)) if size != entry.size => problems.push(format!(
                "backup file {} is corrupted: {size} bytes, the manifest says {}",
                entry.path, entry.size
            )),
            Ok((_, sha256)) if sha256 != entry.sha256 => problems.push(format!(
                "backup file {} is corrupted: its SHA-256 is {sha256}, the manifest says {}",
                entry.path, entry.sha256
            )),
            Ok(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(BackupError::Invalid(format!(
            "backup {} failed verification:\n{}",
            dir.display(),
            problems.join("\n")
        )));
    }
    Ok(Verified { files: manifest.files.len(), bytes: manifest.total_bytes(), manifest })
}

/// RFC 3339 (UTC, second precision) for milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_036_645_000), "2026-11-30T11:04:05Z");
    }

    #[test]
    fn manifest_paths_stay_inside_the_backup() {
        let dir = Path::new("/b");
        assert!(resolve(dir, "db/000012.sst").is_ok());
        assert!(resolve(dir, "media/ab/cd/ef").is_ok());
        assert!(resolve(dir, "db/../../etc/passwd").is_err());
        assert!(resolve(dir, "/etc/passwd").is_err());
        assert!(resolve(dir, "other/x").is_err());
    }
}
