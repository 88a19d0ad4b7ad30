//! Turning encryption at rest on for a database that already holds plaintext data: at start-up,
//! before the server serves, every value is sealed, the keys that hold user content are
//! replaced by their keyed hashes, the user directory's index is rebuilt, cached URL previews
//! are dropped, and media files are sealed under their keyed names. A `migration` record in the
//! `encryption` table marks the work as unfinished, so a crash resumes it at the next start
//! (a row whose value is still plaintext is a row not yet done). At the end every table is
//! compacted, so RocksDB's files keep no plaintext copy.

use std::path::Path;

use super::{ENCRYPTION_TABLE, engine::EncryptedEngine, files, sealed_key_id};
use crate::{
    config::DirectoryStructure,
    storage::{
        KeyCodec, ScanDirection, StorageError, ValueCodec, WriteOp,
        engine::Engine,
        media_admin_tables::MEDIA_QUARANTINED_CONTENT,
        relation_tables::ANNOTATIONS,
        search_tables::{DirectoryEntry, SEARCH_POSTINGS, USER_DIRECTORY, USER_DIRECTORY_WORDS},
        tables::{MEDIA_THUMBNAILS, URL_PREVIEWS},
    },
};

pub const MIGRATION_RECORD: &[u8] = b"migration";
const BATCH_ROWS: usize = 500;

/// The record that marks a migration as unfinished.
pub fn record() -> WriteOp {
    WriteOp { table: ENCRYPTION_TABLE, key: MIGRATION_RECORD.to_vec(), value: Some(b"{}".to_vec()) }
}

/// The writes that encrypt one plaintext row of `table`.
fn encrypt_row(
    engine: &EncryptedEngine,
    table: &'static str,
    key: Vec<u8>,
    value: &[u8],
) -> Result<Vec<WriteOp>, StorageError> {
    let keyring = engine.keyring();
    let rekeyed = if table == SEARCH_POSTINGS.name {
        let (room, token, position) = <(u64, String, u64)>::decode(&key)?;
        Some((room, keyring.term(&token), position).encode())
    } else if table == ANNOTATIONS.name {
        let (parent, sender, kind, annotation) = <(u64, String, String, String)>::decode(&key)?;
        Some((parent, sender, kind, keyring.term(&annotation)).encode())
    } else if table == MEDIA_THUMBNAILS.name {
        let thumbnail = String::decode(&key)?;
        let (sha256, rest) = thumbnail.split_once('/').unwrap_or((thumbnail.as_str(), ""));
        Some(format!("{}/{rest}", keyring.term(sha256)).encode())
    } else if table == MEDIA_QUARANTINED_CONTENT.name {
        Some(keyring.term(&String::decode(&key)?).encode())
    } else if table == URL_PREVIEWS.name || table == USER_DIRECTORY_WORDS.name {
        // A cache, and an index rebuilt from `USER_DIRECTORY` at the end.
        return Ok(vec![WriteOp { table, key, value: None }]);
    } else {
        None
    };
    Ok(match rekeyed {
        Some(new_key) => vec![
            WriteOp { table, key, value: None },
            WriteOp { table, value: Some(keyring.seal(table, &new_key, value)?), key: new_key },
        ],
        None => vec![WriteOp { table, value: Some(keyring.seal(table, &key, value)?), key }],
    })
}

/// Encrypts everything; `media` is the media directory and its layout.
pub fn run(
    engine: &EncryptedEngine,
    tables: &[&'static str],
    media: (&Path, DirectoryStructure),
) -> Result<(), StorageError> {
    tracing::warn!("encryption at rest: encrypting the existing plaintext database before start-up");
    let raw = engine.raw();
    let mut rows = 0u64;
    for &table in tables.iter().filter(|t| **t != ENCRYPTION_TABLE) {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut ops = Vec::new();
            let mut scanned = 0;
            for item in raw.scan(table, after.as_deref().unwrap_or_default(), ScanDirection::Forward)? {
                let (key, value) = item?;
                if after.as_deref() == Some(key.as_slice()) {
                    continue;
                }
                scanned += 1;
                after = Some(key.clone());
                if sealed_key_id(&value).is_none() {
                    ops.extend(encrypt_row(engine, table, key, &value)?);
                    rows += 1;
                }
                if scanned >= BATCH_ROWS {
                    break;
                }
            }
            if !ops.is_empty() {
                raw.write(ops)?;
            }
            if scanned < BATCH_ROWS {
                break;
            }
        }
        tracing::debug!(table, rows, "encryption at rest: table encrypted");
    }
    // The user directory's words, as keyed hashes of their prefixes.
    let mut ops = Vec::new();
    for item in engine.scan(USER_DIRECTORY.name, &[], ScanDirection::Forward)? {
        let (user, entry) = item?;
        let entry = DirectoryEntry::decode_value(&entry)?;
        let user = String::decode(&user)?;
        for word in &entry.words {
            for (i, c) in word.char_indices() {
                let key = (engine.keyring().term(&word[..i + c.len_utf8()]), user.clone()).encode();
                ops.push(WriteOp { table: USER_DIRECTORY_WORDS.name, key, value: Some(b"null".to_vec()) });
            }
        }
    }
    engine.write(ops)?;
    let files = encrypt_files(engine, media.0, media.1)
        .map_err(|e| StorageError(format!("encrypting the media files under {}: {e}", media.0.display())))?;
    raw.write(vec![WriteOp { table: ENCRYPTION_TABLE, key: MIGRATION_RECORD.to_vec(), value: None }])?;
    engine.compact_all()?;
    tracing::info!(rows, files, "encryption at rest: the existing database and media files are encrypted");
    Ok(())
}

/// Seals every plaintext media file under its keyed name; returns how many.
fn encrypt_files(engine: &EncryptedEngine, root: &Path, layout: DirectoryStructure) -> std::io::Result<u64> {
    let mut done = 0;
    for store in files::media_stores(root) {
        let plain = files::store_files(&store)?
            .into_iter()
            .filter(|(_, name)| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()));
        for (path, sha256) in plain {
            let mut header = [0u8; files::HEADER_LEN];
            let is_sealed = std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
                .is_ok_and(|()| files::key_id(&header).is_some());
            if is_sealed {
                continue;
            }
            let name = engine.keyring().media_name(&sha256);
            let target = layout.path_of(&store, &name);
            if !target.exists() {
                let bytes = std::fs::read(&path)?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let tmp = store.join("tmp").join(format!("{name}.encrypting"));
                std::fs::create_dir_all(store.join("tmp"))?;
                let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                files::seal(engine.keyring(), &name, &bytes, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                std::fs::rename(&tmp, &target)?;
            }
            std::fs::remove_file(&path)?;
            done += 1;
        }
    }
    Ok(done)
}
