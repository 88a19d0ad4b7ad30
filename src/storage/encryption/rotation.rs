//! Key rotation: re-encrypts every value and media file under the active key in the background,
//! in bounded batches, with a cursor written with each batch so a restart resumes where it
//! stopped. When everything is under the new key, the old key's check record is deleted: from
//! then on the old key is no longer needed (nor accepted as needed) at start-up.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    ENCRYPTION_TABLE, KeyId,
    engine::EncryptedEngine,
    files,
    startup::{ROTATION_RECORD, key_record},
};
use crate::storage::{StorageError, WriteOp};

/// Rows read per batch; a batch holds the writers back only while it rewrites these.
const BATCH_ROWS: usize = 500;
/// Rest between batches, so a rotation never saturates the disk.
const PAUSE: Duration = Duration::from_millis(2);
/// Suffix of a media file being re-encrypted (removed if found at start-up).
const ROTATING_SUFFIX: &str = ".rotating";

/// Where a rotation stands (stored as JSON in the `encryption` table; no user content).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationState {
    /// The id of the key being replaced.
    pub from: String,
    /// The table being re-encrypted (tables go in name order); `None` before the first.
    #[serde(default)]
    pub table: Option<String>,
    /// The last key (hex) of `table` done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// Values rewritten so far.
    #[serde(default)]
    pub values: u64,
    /// Whether every table is done (then media files are).
    #[serde(default)]
    pub tables_done: bool,
    /// Media files rewritten so far.
    #[serde(default)]
    pub files: u64,
}

impl RotationState {
    pub fn new(from: KeyId) -> Self {
        Self { from: from.to_string(), table: None, after: None, values: 0, tables_done: false, files: 0 }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes).map_err(|e| StorageError(format!("damaged key rotation record: {e}")))
    }

    pub fn record(&self) -> Result<WriteOp, StorageError> {
        let value = serde_json::to_vec(self).map_err(|e| StorageError(e.to_string()))?;
        Ok(WriteOp { table: ENCRYPTION_TABLE, key: ROTATION_RECORD.to_vec(), value: Some(value) })
    }

    pub(super) fn after_key(&self) -> Option<Vec<u8>> {
        self.after.as_deref().and_then(|hex_key| hex::decode(hex_key).ok())
    }

    pub(super) fn set_after(&mut self, key: &[u8]) {
        self.after = Some(hex::encode(key));
    }
}

/// Runs the rotation the engine has pending (if any) to the end: every table of `tables`, then
/// the media files under `media_root`.
pub fn run(engine: &EncryptedEngine, tables: &[&'static str], media_root: &Path) -> Result<(), StorageError> {
    let Some(mut state) = engine.rotation() else { return Ok(()) };
    let active = engine.keyring().active_id();
    tracing::info!(from = %state.from, to = %active, values = state.values, "encryption key rotation running");
    let mut tables: Vec<&'static str> = tables.iter().copied().filter(|t| *t != ENCRYPTION_TABLE).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut last_log = Instant::now();
    if !state.tables_done {
        for table in tables {
            if state.table.as_deref().is_some_and(|current| table < current) {
                continue;
            }
            if state.table.as_deref() != Some(table) {
                state.table = Some(table.to_owned());
                state.after = None;
            }
            while !engine.rotate_batch(table, &mut state, BATCH_ROWS)? {
                if last_log.elapsed() > Duration::from_secs(10) {
                    tracing::info!(table, values = state.values, "encryption key rotation: re-encrypting values");
                    last_log = Instant::now();
                }
                std::thread::sleep(PAUSE);
            }
        }
        state.tables_done = true;
        engine.raw().write(vec![state.record()?])?;
        engine.set_rotation(Some(state.clone()));
        tracing::info!(values = state.values, "encryption key rotation: every database value re-encrypted");
    }
    let files = rotate_files(engine, media_root)
        .map_err(|e| StorageError(format!("re-encrypting media files under {}: {e}", media_root.display())))?;
    state.files += files;
    let from = KeyId::parse(&state.from).ok_or_else(|| StorageError("damaged key rotation record".into()))?;
    engine.raw().write(vec![
        WriteOp { table: ENCRYPTION_TABLE, key: key_record(from), value: None },
        WriteOp { table: ENCRYPTION_TABLE, key: ROTATION_RECORD.to_vec(), value: None },
    ])?;
    engine.raw().flush()?;
    engine.set_rotation(None);
    tracing::info!(
        from = %from,
        to = %active,
        values = state.values,
        files = state.files,
        "encryption key rotation finished: everything is encrypted with key {active}; the old key is no longer \
         needed and can be removed from the configuration"
    );
    Ok(())
}

/// Re-encrypts the media files under `root` that are not under the active key; returns how
/// many. A file's name is its path below its store's root (`root`, or `root/remote`) without
/// the separators.
fn rotate_files(engine: &EncryptedEngine, root: &Path) -> std::io::Result<u64> {
    let mut done = 0;
    for store in files::media_stores(root) {
        for (path, name) in files::store_files(&store)? {
            // Left by a rotation stopped half-way.
            if name.ends_with(ROTATING_SUFFIX) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if rotate_file(engine, &path, &name)? {
                done += 1;
            }
        }
    }
    Ok(done)
}

/// Re-encrypts one file if it is not under the active key: into a temporary file beside it,
/// synced, then renamed over it.
fn rotate_file(engine: &EncryptedEngine, path: &Path, name: &str) -> std::io::Result<bool> {
    use std::io::Read;
    let keyring = engine.keyring();
    let mut input = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut header = [0u8; files::HEADER_LEN];
    input.read_exact(&mut header)?;
    if files::key_id(&header) == Some(keyring.active_id()) {
        return Ok(false);
    }
    let input = std::io::Cursor::new(header).chain(input);
    let tmp = path.with_file_name(format!(
        "{}{ROTATING_SUFFIX}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        files::reseal(keyring, name, input, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if !path.exists() {
            // Removed meanwhile (an evicted remote file): do not bring it back.
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        std::fs::rename(&tmp, path)?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
