//! Encryption at rest (`encryption_at_rest`): the keys, and how values, index terms and media
//! files are sealed with them.
//!
//! - **Master keys** (32 bytes) come from a file or an environment variable, never the config.
//!   Each has a key id (the first 4 bytes of an HMAC of a fixed label under the key), stored
//!   with everything it seals, so a value or file says which key opens it. Two subkeys are
//!   derived from each master key with HMAC-SHA256: one for database values, one for files.
//! - **Values** are sealed with XChaCha20-Poly1305 under a random 192-bit nonce:
//!   `0xEA | key id (4) | nonce (24) | ciphertext | tag (16)`, with the table name and the row's
//!   key as associated data, so a value copied to another row or table fails to open.
//!   [`engine::EncryptedEngine`] does this for every table below the typed tables.
//! - **Index terms** (words of the search index and the user directory, reaction keys, URLs of
//!   previews, media hashes) are keys, which stay plaintext for ordered scans; where they hold
//!   user content the code that encodes them asks [`crate::storage::Db::term`], which replaces
//!   them by a keyed hash (HMAC-SHA256 under the *index key*, cut to 128 bits, hex). The index
//!   key is random, made when the database is created and stored sealed like any value, so key
//!   rotation re-seals it without rewriting the index.
//! - **Files** ([`files`]) are sealed in 64 KiB chunks (the STREAM construction).
//! - [`startup`] decides at start-up, before anything is written, whether the keys given fit
//!   the database; [`rotation`] re-encrypts everything under a new key in the background.

pub mod engine;
pub mod files;
pub mod migration;
pub mod rotation;
pub mod startup;

use std::{fmt, path::Path};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::StorageError;
use crate::config::Config;

/// The table holding the key-check records, the sealed index key and the rotation cursor. Its
/// values are written raw (they seal themselves); it holds no user content.
pub const ENCRYPTION_TABLE: &str = "encryption";
pub const ENCRYPTION_TABLES: &[&str] = &[ENCRYPTION_TABLE];

/// The environment variables that carry keys (instead of `encryption_key_file` and
/// `encryption_old_key_file`).
pub const KEY_ENV: &str = "TRELLIS_ENCRYPTION_KEY";
pub const OLD_KEY_ENV: &str = "TRELLIS_ENCRYPTION_OLD_KEY";

const VALUE_MAGIC: u8 = 0xEA;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const VALUE_OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `parts` under `key` (the key derivation and the keyed hash of terms).
fn prf(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Which master key sealed a value or file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A master key with its derived ciphers. Its bytes are never printed.
pub struct MasterKey {
    pub id: KeyId,
    values: XChaCha20Poly1305,
    files: XChaCha20Poly1305,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let id = prf(bytes, &[b"trellis key id v1"]);
        let values = XChaCha20Poly1305::new(&prf(bytes, &[b"trellis value key v1"]).into());
        let files = XChaCha20Poly1305::new(&prf(bytes, &[b"trellis file key v1"]).into());
        Self { id: KeyId([id[0], id[1], id[2], id[3]]), values, files }
    }

    /// A key written as 64 hex digits or as base64 of 32 bytes (surrounding whitespace is
    /// ignored); `source` names where it came from in the error.
    pub fn parse(text: &str, source: &str) -> Result<Self, StorageError> {
        use base64::Engine as _;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .ok()
        };
        let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            StorageError(format!(
                "encryption key from {source} is not 32 bytes written as 64 hex digits or base64 \
                 (make one with `openssl rand -hex 32`)"
            ))
        })?;
        Ok(Self::from_bytes(&bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

/// The keys a configuration gives: the current one and, during a rotation, the old one.
#[derive(Debug)]
pub struct ConfiguredKeys {
    pub current: MasterKey,
    pub old: Option<MasterKey>,
}

/// Reads the keys the config names. `None` when encryption at rest is off. A key given twice
/// (file and environment), or encryption on without a key, is an error.
pub fn load_keys(config: &Config) -> Result<Option<ConfiguredKeys>, StorageError> {
    if !config.encryption_at_rest {
        if config.encryption_key_file.is_some() || config.encryption_key_env.is_some() {
            tracing::warn!("an encryption key is given but encryption_at_rest is off: the key is not used");
        }
        return Ok(None);
    }
    let read = |file: Option<&Path>, env: Option<&str>, file_key: &str, env_name: &str| match (file, env) {
        (Some(_), Some(_)) => {
            Err(StorageError(format!("encryption key given twice: both `{file_key}` and {env_name} are set; keep one")))
        }
        (Some(path), None) => {
            warn_if_readable_by_others(path);
            let text = std::fs::read_to_string(path).map_err(|e| {
                StorageError(format!("cannot read the encryption key file {} (`{file_key}`): {e}", path.display()))
            })?;
            MasterKey::parse(&text, &format!("{} (`{file_key}`)", path.display())).map(Some)
        }
        (None, Some(text)) => MasterKey::parse(text, env_name).map(Some),
        (None, None) => Ok(None),
    };
    let current = read(
        config.encryption_key_file.as_deref(),
        config.encryption_key_env.as_ref().map(|s| s.0.as_str()),
        "encryption_key_file",
        KEY_ENV,
    )?
    .ok_or_else(|| {
        StorageError(format!(
            "encryption_at_rest is on but no encryption key was given: set `encryption_key_file` or the \
             environment variable {KEY_ENV}; nothing was changed on disk"
        ))
    })?;
    let old = read(
        config.encryption_old_key_file.as_deref(),
        config.encryption_old_key_env.as_ref().map(|s| s.0.as_str()),
        "encryption_old_key_file",
        OLD_KEY_ENV,
    )?;
    if old.as_ref().is_some_and(|old| old.id == current.id) {
        return Err(StorageError("the old encryption key is the same as the current one".into()));
    }
    Ok(Some(ConfiguredKeys { current, old }))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the encryption key file is readable by other users; chmod 600 it");
        }
    }
}

/// A secret from the environment, kept out of `Debug` output.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The keys in use once the database is open: the active key (all new writes), the old key
/// while a rotation runs, and the index key of term hashes.
pub struct Keyring {
    active: MasterKey,
    old: Option<MasterKey>,
    index_key: [u8; 32],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring(active {}, old {:?})", self.active.id, self.old.as_ref().map(|k| k.id))
    }
}

fn aad(table: &str, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(12 + table.len() + key.len());
    aad.extend_from_slice(b"trellis-v1\0");
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// Seals `plaintext` for row `key` of `table` under `master`.
fn seal_with(master: &MasterKey, table: &str, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StorageError> {
    let nonce = random_nonce();
    let sealed = master
        .values
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad(table, key) })
        .map_err(|_| StorageError("cannot encrypt a value".into()))?;
    let mut out = Vec::with_capacity(VALUE_OVERHEAD + plaintext.len());
    out.push(VALUE_MAGIC);
    out.extend_from_slice(&master.id.0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key id of a sealed value; `None` for anything that is not one.
pub fn sealed_key_id(stored: &[u8]) -> Option<KeyId> {
    if stored.len() < VALUE_OVERHEAD || stored[0] != VALUE_MAGIC {
        return None;
    }
    Some(KeyId([stored[1], stored[2], stored[3], stored[4]]))
}

/// Opens a sealed value with `master` (whose id it must carry).
fn open_with(master: &MasterKey, table: &str, key: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
    (sealed_key_id(stored)? == master.id).then_some(())?;
    let nonce = &stored[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN];
    let body = &stored[1 + KEY_ID_LEN + NONCE_LEN..];
    master.values.decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: &aad(table, key) }).ok()
}

impl Keyring {
    pub fn active_id(&self) -> KeyId {
        self.active.id
    }

    pub fn old_id(&self) -> Option<KeyId> {
        self.old.as_ref().map(|k| k.id)
    }

    fn key(&self, id: KeyId) -> Option<&MasterKey> {
        if self.active.id == id { Some(&self.active) } else { self.old.as_ref().filter(|k| k.id == id) }
    }

    /// Seals a value for row `key` of `table` under the active key.
    pub fn seal(&self, table: &str, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StorageError> {
        seal_with(&self.active, table, key, plaintext)
    }

    /// Opens a value of row `key` of `table`, under whichever known key sealed it.
    pub fn open(&self, table: &str, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StorageError> {
        let id = sealed_key_id(stored)
            .ok_or_else(|| StorageError(format!("a value in table {table} is not encrypted (or is damaged)")))?;
        let master = self.key(id).ok_or_else(|| {
            StorageError(format!("a value in table {table} is encrypted with key {id}, which was not given"))
        })?;
        open_with(master, table, key, stored).ok_or_else(|| {
            StorageError(format!("a value in table {table} fails authentication (damaged, or moved from another row)"))
        })
    }

    /// The keyed hash that stands for a term (a word, URL, reaction key) in a table's key.
    pub fn term(&self, term: &str) -> String {
        hex::encode(&prf(&self.index_key, &[b"term\0", term.as_bytes()])[..16])
    }

    /// The on-disk name of the media file whose content has this SHA-256 (hex), so the file
    /// name does not reveal the hash of the content.
    pub fn media_name(&self, sha256: &str) -> String {
        hex::encode(prf(&self.index_key, &[b"media\0", sha256.as_bytes()]))
    }

    /// The ciphers of files: the active key's, or the one a file's header names.
    fn file_key(&self, id: KeyId) -> Option<&MasterKey> {
        self.key(id)
    }
}

#[cfg(test)]
mod tests;
