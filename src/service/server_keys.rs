//! The server's ed25519 signing key: made at first start and kept in the database. Signs events,
//! the key document served at `/_matrix/key/v2/server`, notary answers and outbound federation
//! requests, and verifies this server's own signatures. Keys of other servers are kept by
//! `federation/keys.rs`.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet},
};

use super::{now_ms, random_string};
use crate::{
    Error, Result,
    storage::{Batch, Db, tables::META},
};

const KEY_SIGNING_KEY: &str = "signing_key";
/// How long others may cache our key document.
const KEY_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

pub struct ServerKeys {
    server_name: OwnedServerName,
    key_pair: Ed25519KeyPair,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    /// PKCS#8 document, base64.
    pkcs8: String,
    /// Key version, the part after `ed25519:` in the key ID.
    version: String,
}

impl ServerKeys {
    /// Loads the signing key, generating and storing one on first start.
    pub fn load_or_create(db: &Db, server_name: OwnedServerName) -> Result<Self> {
        let key = KEY_SIGNING_KEY.to_owned();
        let stored = match META.get(db, &key)? {
            Some(value) => serde_json::from_value::<StoredKey>(value)
                .map_err(|e| Error::internal(format!("stored signing key is invalid: {e}")))?,
            None => {
                let document = Ed25519KeyPair::generate();
                let stored = StoredKey {
                    pkcs8: Base64::<ruma::serde::base64::Standard, _>::new(document.to_vec()).encode(),
                    version: format!("a_{}", random_string(4)),
                };
                let mut batch = Batch::new();
                let value = serde_json::to_value(&stored).map_err(|e| Error::internal(e.to_string()))?;
                batch.put(&META, &key, &value)?;
                db.write(batch)?;
                tracing::info!(version = %stored.version, "generated the server signing key");
                stored
            }
        };
        let document = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(&stored.pkcs8)
            .map_err(|e| Error::internal(format!("stored signing key is not base64: {e}")))?;
        let key_pair = Ed25519KeyPair::from_der(document.as_bytes(), stored.version)
            .map_err(|e| Error::internal(format!("stored signing key is invalid: {e}")))?;
        Ok(Self { server_name, key_pair })
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    fn public_key_base64(&self) -> Base64 {
        Base64::new(self.key_pair.public_key().to_vec())
    }

    /// This server's own public key, as a key map for signature checks.
    pub fn public_key_map(&self) -> PublicKeyMap {
        let set: PublicKeySet = BTreeMap::from([(self.key_id(), self.public_key_base64())]);
        BTreeMap::from([(self.server_name.to_string(), set)])
    }

    /// The signed key document of `/_matrix/key/v2/server`.
    pub fn key_document(&self) -> Result<CanonicalJsonObject> {
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(
            self.key_id(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                "key".to_owned(),
                CanonicalJsonValue::String(self.public_key_base64().encode()),
            )])),
        );
        let mut document = CanonicalJsonObject::from([
            ("server_name".to_owned(), CanonicalJsonValue::String(self.server_name.to_string())),
            ("verify_keys".to_owned(), CanonicalJsonValue::Object(verify_keys)),
            ("old_verify_keys".to_owned(), CanonicalJsonValue::Object(CanonicalJsonObject::new())),
            (
                "valid_until_ts".to_owned(),
                CanonicalJsonValue::Integer((now_ms() + KEY_VALIDITY_MS).try_into().unwrap_or_default()),
            ),
        ]);
        ruma::signatures::sign_json(self.server_name.as_str(), &self.key_pair, &mut document)
            .map_err(|e| Error::internal(format!("cannot sign the key document: {e}")))?;
        Ok(document)
    }
}
