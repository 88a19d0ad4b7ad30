//! The homeserver's logic, one service per domain. [`Services`] is built once at start-up and
//! handed to the HTTP layer; nothing here is a global.

pub mod account_data;
pub mod accounts;
pub mod address_guard;
pub mod admin;
pub mod admin_register;
pub mod appservice;
pub mod backup;
pub mod dehydrated;
pub mod expiring_tokens;
pub mod federation;
pub mod invite_filter;
pub mod keys;
pub mod login_tokens;
pub mod media;
pub mod metrics;
mod metrics_proc;
pub mod notifier;
pub mod openid;
mod password_hashing;
pub mod presence;
pub mod profile;
pub mod push;
pub mod rate_limit;
pub mod receipts;
pub(crate) mod recent;
pub mod registration_tokens;
pub mod rooms;
pub mod server_backup;
pub mod server_keys;
pub mod sessions;
pub mod sliding_sync;
pub mod sync;
pub mod tags;
pub mod thread_subscriptions;
pub mod to_device;
pub mod typing;
pub mod uiaa;
pub mod user_directory;
pub mod user_export;

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
    /// Single-use tokens that log a new device in from an existing one.
    pub login_tokens: login_tokens::LoginTokens,
    pub profile: profile::Profiles,
    pub user_directory: user_directory::UserDirectory,
    pub uiaa: uiaa::Uiaa,
    pub registration_tokens: Arc<registration_tokens::RegistrationTokens>,
    /// Room deletions the admin API runs in the background.
    pub room_deletions: admin::rooms::Deletions,
    pub server_notices: admin::notices::Notices,
    pub account_data: account_data::AccountData,
    pub admin_register: admin_register::AdminRegister,
    pub rooms: rooms::Rooms,
    pub keys: keys::Keys,
    pub to_device: to_device::ToDevice,
    pub backup: backup::Backup,
    pub media: media::Media,
    /// Wakes long-polling syncs when a stream moves.
    pub notifier: Arc<notifier::Notifier>,
    /// Typing notifications (in memory).
    pub typing: typing::Typing,
    pub receipts: receipts::Receipts,
    /// Push rules, notifications, pushers.
    pub push: push::Push,
    /// Presence of local users, with its idle and offline timer.
    pub presence: presence::Presence,
    /// Room tags, kept as `m.tag` room account data.
    pub tags: tags::Tags,
    /// Server discovery, signed outbound requests and other servers' keys.
    pub federation: federation::Federation,
    /// Member events each device was sent while lazy-loading (in memory).
    pub lazy_members: sync::LazyMemberCache,
    /// Registered application services.
    pub appservices: appservice::AppServices,
    /// Rate limits (Synapse's `rc_*`), in memory.
    pub rate_limits: rate_limit::RateLimits,
    /// Sliding sync (MSC4186) connections, in memory.
    pub sliding_sync: sliding_sync::SlidingSync,
    /// OpenID tokens for third parties (in memory).
    pub openid: openid::OpenId,
    pub server_backups: Arc<server_backup::ServerBackups>,
}

impl Services {
    /// Builds every service: loads the signing key, opens the media directory.
    pub fn build(config: Config, db: Db) -> crate::Result<Arc<Self>> {
        let config = Arc::new(config);
        let server_keys = Arc::new(server_keys::ServerKeys::load_or_create(&db, config.server_name.clone())?);
        let federation = federation::Federation::new(&config, db.clone(), server_keys.clone())?;
        let media = media::Media::new(config.clone(), db.clone(), federation.client.clone()).map_err(|e| {
            crate::Error::internal(format!(
                "cannot open the media directory {}: {e}",
                config.media.directory(&config.database_path).display()
            ))
        })?;
        let notifier = Arc::new(notifier::Notifier::new());
        let key_changes = Arc::new(keys::KeyChangeStream::new(&db, notifier.clone())?);
        let push_wake = Arc::new(tokio::sync::Notify::new());
        let push_profiles =
            Arc::new(push::recipients::PushProfiles::with_thread_rules(config.thread_subscription_push_rules));
        let registration_tokens =
            Arc::new(registration_tokens::RegistrationTokens::new(db.clone(), non_empty(&config.registration_token)));
        Ok(Arc::new(Self {
            media,
            rooms: rooms::Rooms::new(
                db.clone(),
                config.server_name.clone(),
                server_keys,
                notifier.clone(),
                push_wake.clone(),
                push_profiles.clone(),
                federation.keys.clone(),
                config.event_cache_bytes(),
            )?,
            push: push::Push::new(
                db.clone(),
                push_wake,
                address_guard::AddressGuard::new(
                    config.push_ip_range_denylist.clone(),
                    config.push_ip_range_allowlist.clone(),
                    "Push notifications",
                ),
                push_profiles.clone(),
            ),
            keys: keys::Keys::new(db.clone(), key_changes.clone(), notifier.clone()),
            to_device: to_device::ToDevice::new(
                db.clone(),
                notifier.clone(),
                config.server_name.clone(),
                appservice::to_device_users(&config),
            ),
            backup: backup::Backup::new(db.clone()),
            accounts: accounts::Accounts::new(db.clone(), config.server_name.clone()),
            sessions: sessions::Sessions::new(
                db.clone(),
                config.refreshable_access_token_lifetime_secs,
                key_changes,
                notifier.clone(),
            ),
            profile: profile::Profiles::new(db.clone()),
            user_directory: user_directory::UserDirectory::new(db.clone(), config.user_directory.search_all_users),
            uiaa: uiaa::Uiaa::new(registration_tokens.clone()),
            registration_tokens,
            room_deletions: admin::rooms::Deletions::default(),
            server_notices: admin::notices::Notices::default(),
            account_data: account_data::AccountData::new(db.clone(), notifier.clone(), push_profiles),
            receipts: receipts::Receipts::new(db.clone(), notifier.clone()),
            presence: presence::Presence::new(&config, db.clone(), notifier.clone())?,
            tags: tags::Tags,
            lazy_members: sync::LazyMemberCache::default(),
            appservices: appservice::AppServices::new(&config)?,
            rate_limits: rate_limit::RateLimits::new(&config),
            sliding_sync: sliding_sync::SlidingSync::new(),
            openid: openid::OpenId::default(),
            server_backups: Arc::new(server_backup::ServerBackups::new(db.clone(), config.clone())),
            login_tokens: login_tokens::LoginTokens::default(),
            admin_register: admin_register::AdminRegister::new(non_empty(&config.registration_shared_secret)),
            federation,
            config,
            db,
            typing: typing::Typing::new(notifier.clone()),
            notifier,
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
