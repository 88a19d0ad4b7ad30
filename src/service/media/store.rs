//! Content-addressed file storage for media: every file is named by the SHA-256 of its bytes
//! (hex), spread over subdirectories as Conduit's `directory_structure` says, so identical
//! uploads share one file.
//!
//! A file is first written to `tmp/` inside the media directory, flushed to disk (`fsync`) and
//! only then renamed to its final name, so a crash never leaves a partial file under a name that
//! metadata could point to. Metadata is written after the rename; a crash in between leaves an
//! unreferenced complete file, never a served half one. Leftover temporary files are removed at
//! start-up.
//!
//! With encryption at rest, a file's name is a keyed hash of its SHA-256 (so names do not reveal
//! which known file the server holds) and its bytes are sealed in chunks (see
//! `storage::encryption::files`), bound to that name.

use std::{
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    config::DirectoryStructure,
    storage::encryption::{Keyring, files},
};

/// The media directory and its layout.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    layout: DirectoryStructure,
    /// The keys of encryption at rest, when it is on.
    keys: Option<Arc<Keyring>>,
}

impl FileStore {
    /// Opens the store at `root`, creating it if needed and clearing old temporary files.
    pub fn open(root: PathBuf, layout: DirectoryStructure, keys: Option<Arc<Keyring>>) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            if let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "could not remove a temporary media file");
            }
        }
        Ok(Self { root, layout, keys })
    }

    /// The SHA-256 of `bytes`, in lower-case hex.
    pub fn hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// The name of the file with this hash (64 hex digits either way).
    fn name_of(&self, sha256: &str) -> String {
        match &self.keys {
            Some(keys) => keys.media_name(sha256),
            None => sha256.to_owned(),
        }
    }

    /// Where the file with this hash lives. `sha256` must be 64 hex digits.
    fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::internal(format!("invalid media hash {sha256:?}")));
        }
        Ok(self.layout.path_of(&self.root, &self.name_of(sha256)))
    }

    /// Stores `bytes` under their hash (blocking: call from the blocking pool) and returns the
    /// hash. A file that already exists is not written again.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha256 = Self::hash(bytes);
        let path = self.path_of(&sha256)?;
        if path.is_file() {
            return Ok(sha256);
        }
        let io = |what: &str, e: std::io::Error| Error::internal(format!("media store: {what}: {e}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create directory", e))?;
        }
        let name = self.name_of(&sha256);
        let tmp = self.root.join("tmp").join(format!("{name}.{}", crate::service::random_string(8)));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            match &self.keys {
                Some(keys) => {
                    let mut out = std::io::BufWriter::new(&mut file);
                    files::seal(keys, &name, bytes, &mut out)?;
                    out.flush()?;
                }
                None => file.write_all(bytes)?,
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(path.parent().unwrap_or(&self.root))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", e));
        }
        Ok(sha256)
    }

    /// Removes the file with this hash (blocking); a missing file is not an error.
    pub fn remove(&self, sha256: &str) -> Result<()> {
        let path = self.path_of(sha256)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(format!("media store: remove {}: {e}", path.display()))),
        }
    }

    /// Reads the file with this hash; `None` if it is missing.
    pub async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path_of(sha256)?;
        if let Some(keys) = self.keys.clone() {
            let name = self.name_of(sha256);
            let read = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path)?;
                let size = file.metadata().map_or(0, |m| m.len() as usize);
                files::open(&keys, &name, std::io::BufReader::new(file), size)
            })
            .await
            .map_err(|e| Error::internal(format!("media read task failed: {e}")))?;
            return match read {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::internal(format!("media store: read {sha256}: {e}"))),
            };
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::internal(format!("media store: read {}: {e}", path.display()))),
        }
    }
}

/// Makes a rename durable by syncing its directory (a no-op where directories can't be opened).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir) {
        Ok(handle) => handle.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_content_addressed_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FileStore::open(dir.path().to_owned(), DirectoryStructure::Deep { depth: 2, length: 2 }, None).unwrap();
        let a = store.put(b"hello").unwrap();
        let b = store.put(b"hello").unwrap();
        assert_eq!(a, b);
        let path = dir.path().join(&a[0..2]).join(&a[2..4]).join(&a[4..]);
        assert_eq!(std::fs::read(path).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let flat = FileStore::open(dir.path().join("flat"), DirectoryStructure::Flat {}, None).unwrap();
        let c = flat.put(b"hello").unwrap();
        assert!(dir.path().join("flat").join(c).is_file());
        assert!(store.path_of("../etc/passwd").is_err());
    }

    #[test]
    fn leftover_temporary_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp").join("half"), b"partial").unwrap();
        FileStore::open(dir.path().to_owned(), DirectoryStructure::Flat {}, None).unwrap();
        assert!(!dir.path().join("tmp").join("half").exists());
    }
}
