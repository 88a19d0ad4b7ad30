//! The homeserver's logic, one service per domain. [`Services`] is built once at start-up and
//! handed to the HTTP layer; nothing here is a global.

pub mod account_data;
pub mod accounts;
pub mod admin_register;
pub mod media;
pub mod profile;
pub mod sessions;
pub mod uiaa;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{config::Config, storage::Db};

pub struct Services {
    pub config: Arc<Config>,
    pub db: Db,
    pub accounts: accounts::Accounts,
    pub sessions: sessions::Sessions,
    pub profile: profile::Profiles,
    pub uiaa: uiaa::Uiaa,
    pub account_data: account_data::AccountData,
    pub admin_register: admin_register::AdminRegister,
    pub media: media::Media,
}

impl Services {
    /// Builds every service; fails only when the media directory cannot be created.
    pub fn build(config: Config, db: Db) -> Result<Arc<Self>, String> {
        let config = Arc::new(config);
        let media = media::Media::new(config.clone(), db.clone()).map_err(|e| {
            format!("cannot open the media directory {}: {e}", config.media.directory(&config.database_path).display())
        })?;
        Ok(Arc::new(Self {
            media,
            accounts: accounts::Accounts::new(db.clone(), config.server_name.clone()),
            sessions: sessions::Sessions::new(db.clone(), config.refreshable_access_token_lifetime_secs),
            profile: profile::Profiles::new(db.clone()),
            uiaa: uiaa::Uiaa::new(non_empty(&config.registration_token)),
            account_data: account_data::AccountData::new(db.clone()),
            admin_register: admin_register::AdminRegister::new(non_empty(&config.registration_shared_secret)),
            config,
            db,
        }))
    }
}

/// An empty secret in the config means "not set": an empty key would protect nothing.
fn non_empty(secret: &Option<String>) -> Option<String> {
    secret.clone().filter(|s| !s.is_empty())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// A random string of `len` characters from `[A-Za-z0-9]`, from the OS-seeded CSPRNG.
pub fn random_string(len: usize) -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}
