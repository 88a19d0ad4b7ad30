//! The typed configuration. The file format is Conduit's (a `[global]` table), so a Conduit
//! admin's file keeps working; Trellis adds keys Conduit lacks (shared-secret registration, a TLS
//! listener for federation, outbound federation settings for tests and split-horizon DNS).
//!
//! Loading: the file (from `--config`, `TRELLIS_CONFIG` or `CONDUIT_CONFIG`) is parsed, then
//! `TRELLIS_<KEY>` / `CONDUIT_<KEY>` environment variables override keys, then the result is
//! deserialized into [`Config`]. Unknown keys produce warnings; a missing required key, a wrong
//! type or an unreadable file is an error that names the key (and its line in the file).

pub mod appservice;
pub mod limits;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

/// Environment variable prefixes that override config keys, in increasing priority.
const ENV_PREFIXES: [&str; 2] = ["CONDUIT_", "TRELLIS_"];
/// Environment variables with these prefixes that are not config keys.
/// (`TRELLIS_ADMIN_TOKEN` and `TRELLIS_ADMIN_URL` are read by the `backup` and `export-user`
/// commands; the encryption keys must never come from the config.)
const ENV_NOT_KEYS: [&str; 6] = ["CONFIG", "BIN", "ADMIN_TOKEN", "ADMIN_URL", "ENCRYPTION_KEY", "ENCRYPTION_OLD_KEY"];

/// Keys Conduit accepts that Trellis reads but does not act on (yet); they warn once at start-up
/// instead of as unknown keys.
const CONDUIT_KEYS_WITHOUT_EFFECT: &[&str] = &[
    "allow_check_for_updates",
    "enable_lightning_bolt",
    "conduit_cache_capacity_modifier",
    "pdu_cache_capacity",
    "cleanup_second_interval",
    "max_concurrent_requests",
    "max_fetch_prev_events",
    "allow_jaeger",
    "tracing_flame",
    "proxy",
    "jwt_secret",
    "turn_username",
    "turn_password",
    "turn_uris",
    "turn_secret",
    "turn_ttl",
    "media.retention",
    "emergency_password",
];

#[derive(Debug, Clone, Deserialize)]
struct ConfigFile {
    global: Config,
}

/// The whole configuration of one Trellis server (the file's `[global]` table).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The server's name: the part after `:` in user IDs. Cannot change once the database exists.
    pub server_name: OwnedServerName,
    /// Only `"rocksdb"` is supported.
    #[serde(default = "default_database_backend")]
    pub database_backend: String,
    /// Directory of the RocksDB database.
    pub database_path: PathBuf,
    /// Address of the client (and, without `federation_listener`, federation) HTTP listener.
    #[serde(default = "default_address")]
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: u32,
    #[serde(default)]
    pub allow_registration: bool,
    /// When set, registration requires this token (`m.login.registration_token`).
    pub registration_token: Option<String>,
    /// Secret for Synapse's admin registration API (`/_synapse/admin/v1/register`).
    pub registration_shared_secret: Option<String>,
    /// Application service registration files (Synapse's YAML format), read at start-up.
    #[serde(default)]
    pub app_service_config_files: Vec<PathBuf>,
    /// Application service transactions: the longest wait between retries, in seconds.
    #[serde(default = "default_appservice_max_backoff_secs")]
    pub appservice_max_backoff_secs: u64,
    /// Application service transactions: how far (in room events of the whole server) a
    /// service that does not take its transactions may fall behind; older events are dropped
    /// for it, with a warning in the log.
    #[serde(default = "default_appservice_max_backlog_events")]
    pub appservice_max_backlog_events: u64,
    /// The registrations read from `app_service_config_files`, checked.
    #[serde(skip)]
    pub appservices: Vec<appservice::AppServiceRegistration>,
    #[serde(default)]
    pub allow_guest_registration: bool,
    /// MSC4306's default push rules: an event in a thread notifies only the users subscribed
    /// to the thread (mentions still do, by the override rules), as Synapse's
    /// `experimental_features.msc4306_enabled`.
    #[serde(default)]
    pub thread_subscription_push_rules: bool,
    /// Whether a logged-in device may ask for a login token for a new device
    /// (`/login/get_token`, after the user's password), as Element's QR code sign-in does.
    #[serde(default = "default_true")]
    pub login_via_existing_session: bool,
    #[serde(default = "default_true")]
    pub allow_federation: bool,
    /// Notaries asked for another server's signing keys when that server cannot be asked
    /// itself. None by default (Conduit's default is `["matrix.org"]`).
    #[serde(default)]
    pub trusted_servers: Vec<OwnedServerName>,
    #[serde(default = "default_room_version")]
    pub default_room_version: RoomVersionId,
    #[serde(default = "default_true")]
    pub allow_encryption: bool,
    #[serde(default = "default_true")]
    pub allow_room_creation: bool,
    #[serde(default = "default_true")]
    pub allow_unstable_room_versions: bool,
    /// A `tracing` filter directive, such as `"info"` or `"warn,trellis=debug"`.
    #[serde(default = "default_log")]
    pub log: String,
    #[serde(default)]
    pub well_known: WellKnown,
    /// Conduit's TLS table: serve the main listener over TLS with these files.
    pub tls: Option<TlsFiles>,
    /// A separate HTTPS listener for the federation API (so no reverse proxy is required).
    pub federation_listener: Option<FederationListener>,
    /// An extra CA certificate (PEM) trusted for outbound federation, besides the system roots.
    pub federation_ca_file: Option<PathBuf>,
    /// Whether outbound federation checks the peer's certificate. Only turn off for tests.
    #[serde(default = "default_true")]
    pub federation_verify_certificates: bool,
    /// Allow outbound federation to loopback, private, link-local addresses. Off by default; for
    /// tests and closed networks.
    #[serde(default)]
    pub federation_allow_private_addresses: bool,
    /// Server name to `host:port` map that overrides federation discovery (well-known, SRV).
    #[serde(default)]
    pub federation_server_addresses: BTreeMap<String, String>,
    /// Size of the RocksDB block cache shared by all tables, in MiB (Conduit's key).
    #[serde(default = "default_db_cache_capacity_mb")]
    pub db_cache_capacity_mb: f64,
    /// The most memory RocksDB's memtables (writes not yet flushed) use across all tables, in
    /// MiB; counted against the block cache (`db_cache_capacity_mb`).
    #[serde(default = "default_rocksdb_write_buffer_mb")]
    pub rocksdb_write_buffer_mb: f64,
    /// Size of the cache of parsed events that serving events reads from, in MiB (0 turns it off).
    #[serde(default = "default_event_cache_capacity_mb")]
    pub event_cache_capacity_mb: f64,
    /// Threads that run database reads and writes (conduwuit's and Tuwunel's key); 0 picks four
    /// per core, at least 16.
    #[serde(default)]
    pub db_pool_workers: usize,
    /// Upper bound on files RocksDB keeps open (Conduit's key).
    #[serde(default = "default_rocksdb_max_open_files")]
    pub rocksdb_max_open_files: i32,
    /// Whether a write is synced to disk (the RocksDB write-ahead log, fdatasync) before it is
    /// acknowledged, so it survives a power cut; concurrent writers share one sync. With false,
    /// writes survive a crash of the process but not of the machine, and are faster.
    #[serde(default = "default_true")]
    pub rocksdb_durable_writes: bool,
    /// Encryption at rest: database values and media files are encrypted with the key from
    /// `encryption_key_file` or the environment variable `TRELLIS_ENCRYPTION_KEY` (never this
    /// file). See "Encryption at rest" in docs/admin-guide.md.
    #[serde(default)]
    pub encryption_at_rest: bool,
    /// File holding the encryption key: 32 bytes as 64 hex digits or base64.
    #[serde(default)]
    pub encryption_key_file: Option<PathBuf>,
    /// File holding the previous key while a key rotation runs (or `TRELLIS_ENCRYPTION_OLD_KEY`).
    #[serde(default)]
    pub encryption_old_key_file: Option<PathBuf>,
    /// The key from `TRELLIS_ENCRYPTION_KEY` (not a config key).
    #[serde(skip)]
    pub encryption_key_env: Option<crate::storage::encryption::Secret>,
    /// The old key from `TRELLIS_ENCRYPTION_OLD_KEY` (not a config key).
    #[serde(skip)]
    pub encryption_old_key_env: Option<crate::storage::encryption::Secret>,
    /// Lifetime of access tokens issued together with a refresh token, in seconds.
    #[serde(default = "default_refreshable_access_token_lifetime_secs")]
    pub refreshable_access_token_lifetime_secs: u64,
    /// Push gateway delivery: the longest wait between retries of a notification, in seconds.
    #[serde(default = "default_push_max_backoff_secs")]
    pub push_max_backoff_secs: u64,
    /// Push gateway delivery: how long a notification is retried before it is dropped, in seconds.
    #[serde(default = "default_push_give_up_secs")]
    pub push_give_up_secs: u64,
    /// Address ranges push gateways may not be reached at, checked when a pusher is set and on
    /// every delivery. Setting it replaces the default (the URL preview default: every
    /// non-public range).
    #[serde(default = "default_url_preview_denylist")]
    pub push_ip_range_denylist: Vec<ipnet::IpNet>,
    /// Ranges push gateways may be reached at even when the deny list covers them (a gateway on
    /// the same host or network: `["127.0.0.1/32"]`).
    #[serde(default)]
    pub push_ip_range_allowlist: Vec<ipnet::IpNet>,
    /// Whether local users' presence is tracked and shown (Conduit's key); when false, presence
    /// updates are accepted and ignored, everyone reads as offline and syncs carry no presence.
    #[serde(default = "default_true")]
    pub allow_local_presence: bool,
    /// Seconds without activity after which an online user becomes unavailable (Conduit's key).
    #[serde(default = "default_presence_idle_timeout_s")]
    pub presence_idle_timeout_s: u64,
    /// Seconds after a user's last sync (or presence update) after which they become offline
    /// (Conduit's key; Synapse's 30 seconds by default, where Conduit counts 30 minutes).
    #[serde(default = "default_presence_offline_timeout_s")]
    pub presence_offline_timeout_s: u64,
    /// The media repository (Conduit's `[global.media]` table, with Trellis's additions).
    #[serde(default)]
    pub media: MediaConfig,
    /// URL previews (`/preview_url`).
    #[serde(default)]
    pub url_preview: UrlPreviewConfig,
    /// The user directory (`/user_directory/search`; Synapse's `user_directory` section).
    #[serde(default)]
    pub user_directory: UserDirectoryConfig,
    /// Server notices (Synapse's `server_notices` section): off unless a localpart is set.
    #[serde(default)]
    pub server_notices: ServerNoticesConfig,
    /// How log lines are written: `"full"` (the default), `"compact"` or `"json"`.
    #[serde(default)]
    pub log_format: limits::LogFormat,
    /// The Prometheus metrics listener (`[global.metrics]`).
    #[serde(default)]
    pub metrics: limits::MetricsConfig,
    /// Rate limits, named as Synapse's `rc_*` settings (see `limits`). Events a user sends.
    #[serde(default = "limits::default_message")]
    pub rc_message: limits::RateLimit,
    /// Registrations per client address.
    #[serde(default = "limits::default_registration")]
    pub rc_registration: limits::RateLimit,
    #[serde(default)]
    pub rc_login: limits::LoginLimits,
    #[serde(default)]
    pub rc_joins: limits::JoinLimits,
    #[serde(default)]
    pub rc_invites: limits::InviteLimits,
    /// Rooms a user creates.
    #[serde(default = "limits::default_room_creation")]
    pub rc_room_creation: limits::RateLimit,
    /// Media a user uploads or reserves (`/upload`, `/create`).
    #[serde(default = "limits::default_media_create")]
    pub rc_media_create: limits::RateLimit,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or CIDR ranges,
    /// `["127.0.0.1", "10.0.0.0/8"]`); empty (the default): the TCP peer is the client.
    #[serde(default, deserialize_with = "limits::trusted_proxies")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Scheduled online backups (`[global.backup]`); off unless `directory` is set.
    #[serde(default)]
    pub backup: BackupConfig,
}

/// Scheduled online backups of the database and media (see `service::server_backup`).
#[derive(Debug, Clone, Deserialize)]
pub struct BackupConfig {
    /// Where scheduled backups go, one subdirectory each (`trellis-backup-<UTC time>`); none
    /// are taken without it.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Seconds between scheduled backups (the first one is taken this long after start-up).
    #[serde(default = "default_backup_interval_secs")]
    pub interval_secs: u64,
    /// How many scheduled backups to keep; older ones in `directory` are deleted after each
    /// new one succeeds.
    #[serde(default = "default_backup_keep")]
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self { directory: None, interval_secs: default_backup_interval_secs(), keep: default_backup_keep() }
    }
}

fn default_backup_interval_secs() -> u64 {
    24 * 60 * 60
}

fn default_backup_keep() -> usize {
    7
}

/// Who the user directory lists.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserDirectoryConfig {
    /// When true, every local user can be found (Synapse's key); when false (the default), only
    /// users who share a room with the searcher or are joined to a public room.
    #[serde(default)]
    pub search_all_users: bool,
}

/// Server notices: messages from the server's admins to a user, in a room of its own.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerNoticesConfig {
    /// The localpart of the user notices come from; notices are off without it.
    #[serde(default)]
    pub system_mxid_localpart: Option<String>,
    #[serde(default = "default_notices_name")]
    pub system_mxid_display_name: String,
    #[serde(default)]
    pub system_mxid_avatar_url: Option<String>,
    #[serde(default = "default_notices_name")]
    pub room_name: String,
}

impl Default for ServerNoticesConfig {
    fn default() -> Self {
        Self {
            system_mxid_localpart: None,
            system_mxid_display_name: default_notices_name(),
            system_mxid_avatar_url: None,
            room_name: default_notices_name(),
        }
    }
}

fn default_notices_name() -> String {
    "Server Notices".to_owned()
}

/// The media repository: where files go and who may read them how.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaConfig {
    /// Only `"filesystem"` is supported (Conduit's S3 backend is not).
    #[serde(default = "default_media_backend")]
    pub backend: String,
    /// Directory of the media files. Default: `media` inside `database_path`, as Conduit does.
    pub path: Option<PathBuf>,
    /// How files are spread over subdirectories (Conduit's key): `{ depth = 2, length = 2 }`
    /// puts a file whose SHA-256 is `abcd…` at `ab/cd/…`; an empty table `{}` keeps them flat.
    #[serde(default)]
    pub directory_structure: DirectoryStructure,
    /// When true, media uploaded from now on is served only by the authenticated endpoints
    /// (`/_matrix/client/v1/media/*`), as Synapse does once its media is "frozen"; media uploaded
    /// while it was false stays readable through the legacy `/_matrix/media/v3/*` ones too.
    #[serde(default = "default_true")]
    pub freeze_legacy_media: bool,
    /// How many media IDs reserved with `/_matrix/media/v1/create` and not yet uploaded one user
    /// may hold at once.
    #[serde(default = "default_max_pending_uploads")]
    pub max_pending_uploads: usize,
    /// How long a reserved media ID may stay without content before it expires, in seconds.
    #[serde(default = "default_unused_upload_expiry_secs")]
    pub unused_upload_expiry_secs: u64,
    /// Most bytes of other servers' media (originals and thumbnails) kept on disk; the least
    /// recently used go first. `0` keeps nothing (every download is fetched again).
    #[serde(default = "default_remote_cache_max_size")]
    pub remote_cache_max_size: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: default_media_backend(),
            path: None,
            directory_structure: DirectoryStructure::default(),
            freeze_legacy_media: true,
            max_pending_uploads: default_max_pending_uploads(),
            unused_upload_expiry_secs: default_unused_upload_expiry_secs(),
            remote_cache_max_size: default_remote_cache_max_size(),
        }
    }
}

/// 1 GiB of other servers' media.
fn default_remote_cache_max_size() -> u64 {
    1024 * 1024 * 1024
}

impl MediaConfig {
    /// The media directory: `path`, or `media` inside the database directory.
    pub fn directory(&self, database_path: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| database_path.join("media"))
    }
}

/// Subdirectory layout of media files, named by their SHA-256 (64 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DirectoryStructure {
    /// `depth` levels of directories named by `length` hex digits each.
    Deep { depth: u8, length: u8 },
    /// All files in one directory (Conduit's empty table).
    Flat {},
}

impl DirectoryStructure {
    /// Where the media file called `name` (64 hex digits) lives under `root`.
    pub fn path_of(&self, root: &Path, name: &str) -> PathBuf {
        let mut path = root.to_owned();
        let mut rest = name;
        if let DirectoryStructure::Deep { depth, length } = *self {
            for _ in 0..depth {
                let (dir, tail) = rest.split_at(usize::from(length).min(rest.len()));
                path.push(dir);
                rest = tail;
            }
        }
        path.push(rest);
        path
    }
}

impl Default for DirectoryStructure {
    fn default() -> Self {
        DirectoryStructure::Deep { depth: 2, length: 2 }
    }
}

/// URL previews: fetching pages for `/preview_url` safely.
#[derive(Debug, Clone, Deserialize)]
pub struct UrlPreviewConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address ranges previews may not connect to, checked on every resolved address and every
    /// redirect. Setting it replaces the default (loopback, private, link-local, shared,
    /// multicast, documentation and other special ranges, IPv4 and IPv6).
    #[serde(default = "default_url_preview_denylist")]
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Ranges allowed even when the deny list covers them (for example a trusted internal host).
    #[serde(default)]
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
    /// Largest page or image fetched, in bytes.
    #[serde(default = "default_url_preview_max_size")]
    pub max_size: u64,
    /// Time limit for one preview, redirects and image included, in seconds.
    #[serde(default = "default_url_preview_timeout_secs")]
    pub timeout_secs: u64,
    /// Redirects followed at most.
    #[serde(default = "default_url_preview_max_redirects")]
    pub max_redirects: usize,
    /// How long a preview is cached, in seconds.
    #[serde(default = "default_url_preview_cache_secs")]
    pub cache_secs: u64,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ip_range_denylist: default_url_preview_denylist(),
            ip_range_allowlist: Vec::new(),
            max_size: default_url_preview_max_size(),
            timeout_secs: default_url_preview_timeout_secs(),
            max_redirects: default_url_preview_max_redirects(),
            cache_secs: default_url_preview_cache_secs(),
        }
    }
}

/// Ranges no URL preview may reach by default: every address that is not public unicast.
pub const DEFAULT_URL_PREVIEW_DENYLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

fn default_url_preview_denylist() -> Vec<ipnet::IpNet> {
    DEFAULT_URL_PREVIEW_DENYLIST.iter().filter_map(|net| net.parse().ok()).collect()
}
fn default_url_preview_max_size() -> u64 {
    10 * 1024 * 1024
}
fn default_url_preview_timeout_secs() -> u64 {
    10
}
fn default_url_preview_max_redirects() -> usize {
    5
}
fn default_url_preview_cache_secs() -> u64 {
    3600
}
fn default_media_backend() -> String {
    "filesystem".to_owned()
}
fn default_max_pending_uploads() -> usize {
    5
}
fn default_unused_upload_expiry_secs() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WellKnown {
    /// Base URL clients should use, served at `/.well-known/matrix/client`.
    pub client: Option<String>,
    /// `host[:port]` other servers should use, served at `/.well-known/matrix/server`.
    pub server: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub certs: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FederationListener {
    #[serde(default = "default_address")]
    pub address: IpAddr,
    #[serde(default = "default_federation_port")]
    pub port: u16,
    /// PEM certificate chain.
    pub certs: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn default_push_max_backoff_secs() -> u64 {
    300
}
fn default_push_give_up_secs() -> u64 {
    86_400
}
fn default_appservice_max_backlog_events() -> u64 {
    100_000
}

fn default_appservice_max_backoff_secs() -> u64 {
    300
}
fn default_database_backend() -> String {
    "rocksdb".to_owned()
}
fn default_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_port() -> u16 {
    6167
}
fn default_federation_port() -> u16 {
    8448
}
fn default_max_request_size() -> u32 {
    20 * 1024 * 1024
}
fn default_true() -> bool {
    true
}
fn default_room_version() -> RoomVersionId {
    RoomVersionId::V12
}
fn default_log() -> String {
    "info".to_owned()
}
fn default_event_cache_capacity_mb() -> f64 {
    32.0
}
fn default_db_cache_capacity_mb() -> f64 {
    300.0
}
fn default_rocksdb_write_buffer_mb() -> f64 {
    32.0
}
fn default_rocksdb_max_open_files() -> i32 {
    512
}
fn default_refreshable_access_token_lifetime_secs() -> u64 {
    300
}
fn default_presence_idle_timeout_s() -> u64 {
    300
}
fn default_presence_offline_timeout_s() -> u64 {
    30
}

/// A configuration that could not be loaded; the message names the file, key and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A loaded configuration with the warnings found while loading it (unknown keys and such),
/// which the caller logs once logging is set up.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// `event_cache_capacity_mb` in bytes (negative or not a number: off).
    pub fn event_cache_bytes(&self) -> usize {
        let bytes = self.event_cache_capacity_mb * 1024.0 * 1024.0;
        if bytes.is_finite() && bytes > 0.0 { bytes as usize } else { 0 }
    }

    /// Loads the file at `path` (if any) and applies overrides from `env`.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let (text, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ConfigError(format!("cannot read config file {}: {error}", path.display())))?;
                (text, path.display().to_string())
            }
            None => (String::new(), "(no file)".to_owned()),
        };
        Self::from_toml(&text, &source, env)
    }

    /// Parses config text (named `source` in messages) and applies overrides from `env`.
    pub fn from_toml(
        text: &str,
        source: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|error| ConfigError(format!("{source}: invalid TOML: {error}")))?;
        let mut warnings = Vec::new();
        let mut from_env = BTreeMap::new();

        let global = root.entry("global").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(global) = global else {
            return Err(ConfigError(format!("{source}: `global` must be a table")));
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let secret = |name: &str| {
            env.iter()
                .find(|(key, value)| key == name && !value.trim().is_empty())
                .map(|(_, value)| crate::storage::encryption::Secret(value.clone()))
        };
        let (key_env, old_key_env) =
            (secret(crate::storage::encryption::KEY_ENV), secret(crate::storage::encryption::OLD_KEY_ENV));
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(name, value)| {
                let prefix = ENV_PREFIXES.iter().position(|p| name.starts_with(p))?;
                Some((prefix, name, value))
            })
            .filter(|(_, name, _)| !ENV_NOT_KEYS.iter().any(|k| name.ends_with(&format!("_{k}"))))
            .map(|(prefix, name, value)| (format!("{prefix}{name}"), value))
            .collect();
        // CONDUIT_ variables first, so TRELLIS_ ones win.
        overrides.sort();
        for (sortable_name, value) in overrides {
            let name = &sortable_name[1..];
            let key = name.split_once('_').map(|(_, k)| k).unwrap_or_default();
            let path = env_key_path(&key.to_ascii_lowercase());
            set_path(global, &path, parse_env_value(&value));
            from_env.insert(path.join("."), name.to_owned());
        }

        // An environment value that reads as a number or boolean (`TRELLIS_REGISTRATION_TOKEN=1234`,
        // `CONDUIT_DEFAULT_ROOM_VERSION=10`) is retried as a string when its key wants one.
        let mut unknown = Vec::new();
        let mut retried = Vec::new();
        let file = loop {
            unknown.clear();
            let deserializer = toml::Value::Table(root.clone());
            let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
            let result: Result<ConfigFile, _> =
                serde_path_to_error::deserialize(serde_ignored::Deserializer::new(deserializer, &mut note_unknown));
            match result {
                Ok(file) => break file,
                Err(error) => {
                    let key = error.path().to_string();
                    let short = key.trim_start_matches("global.").to_owned();
                    if from_env.contains_key(&short)
                        && !retried.contains(&short)
                        && env_value_to_string(&mut root, &short)
                    {
                        retried.push(short);
                        continue;
                    }
                    let message = error.into_inner().to_string();
                    return Err(ConfigError(describe_error(&key, &message, text, source, &from_env)));
                }
            }
        };
        for key in unknown {
            let name = key.trim_start_matches("global.");
            if CONDUIT_KEYS_WITHOUT_EFFECT.iter().any(|k| name == *k || name.starts_with(&format!("{k}."))) {
                warnings.push(format!("config key `{name}` is a Conduit setting Trellis ignores"));
            } else {
                warnings.push(format!("unknown config key `{key}` ({})", locate(&key, text, source, &from_env)));
            }
        }
        let mut config = file.global;
        config.encryption_key_env = key_env;
        config.encryption_old_key_env = old_key_env;
        config.validate()?;
        config.appservices = appservice::load_all(&config.app_service_config_files, &config.server_name)?;
        Ok(Loaded { config, warnings })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        limits::validate(self)?;
        if self.database_backend != "rocksdb" {
            return Err(ConfigError(format!(
                "config key `database_backend`: \"{}\" is not supported; use \"rocksdb\"",
                self.database_backend
            )));
        }
        if self.max_request_size < 1024 {
            return Err(ConfigError("config key `max_request_size`: must be at least 1024".into()));
        }
        if self.backup.directory.is_some() && (self.backup.interval_secs == 0 || self.backup.keep == 0) {
            return Err(ConfigError(
                "config key `backup`: `interval_secs` and `keep` must be at least 1 when `directory` is set".into(),
            ));
        }
        if self.media.backend != "filesystem" {
            return Err(ConfigError(format!(
                "config key `media.backend`: \"{}\" is not supported; use \"filesystem\"",
                self.media.backend
            )));
        }
        if let DirectoryStructure::Deep { depth, length } = self.media.directory_structure
            && (depth == 0 || length == 0 || u32::from(depth) * u32::from(length) >= 64)
        {
            return Err(ConfigError(
                "config key `media.directory_structure`: depth and length must be at least 1, and \
                 depth times length less than 64 (the length of a SHA-256 in hex)"
                    .into(),
            ));
        }
        if let Some(server) = &self.well_known.server
            && OwnedServerName::try_from(server.as_str()).is_err()
        {
            return Err(ConfigError(format!(
                "config key `well_known.server`: \"{server}\" must be a server name with an optional port \
                 (host[:port]), not a URL"
            )));
        }
        if let Some(path) = &self.federation_ca_file
            && !path.is_file()
        {
            return Err(ConfigError(format!("config key `federation_ca_file`: cannot read {}", path.display())));
        }
        Ok(())
    }
}

/// Maps an environment key (lower case, after the prefix) to a path in `[global]`. Conduit's
/// convention joins table and field with `_` (`WELL_KNOWN_CLIENT`); `__` is also accepted as an
/// unambiguous separator. A key that names an existing table's field is preferred.
fn env_key_path(key: &str) -> Vec<String> {
    if key.contains("__") {
        return key.split("__").map(str::to_owned).collect();
    }
    for table in [
        "well_known",
        "tls",
        "federation_listener",
        "federation_server_addresses",
        "media",
        "url_preview",
        "user_directory",
        "metrics",
        "rc_message",
        "rc_registration",
        "rc_room_creation",
        "rc_media_create",
        "backup",
    ] {
        if let Some(field) = key.strip_prefix(table).and_then(|rest| rest.strip_prefix('_'))
            && !field.is_empty()
        {
            return vec![table.to_owned(), field.to_owned()];
        }
    }
    vec![key.to_owned()]
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

/// Turns the non-string value at `key` (dotted, under `[global]`) back into the text it was
/// parsed from. Returns whether anything changed.
fn env_value_to_string(root: &mut toml::Table, key: &str) -> bool {
    let Some(toml::Value::Table(global)) = root.get_mut("global") else { return false };
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    match get_path(global, &path) {
        Some(value) if !value.is_str() => {
            set_path(global, &path, toml::Value::String(value_as_env_text(&value)));
            true
        }
        _ => false,
    }
}

fn get_path(table: &toml::Table, path: &[String]) -> Option<toml::Value> {
    match path {
        [] => None,
        [last] => table.get(last).cloned(),
        [first, rest @ ..] => get_path(table.get(first)?.as_table()?, rest),
    }
}

/// The text an environment variable held, for a value that was parsed from it.
fn value_as_env_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An environment value is read as a TOML value (`8008`, `true`, `["a", "b"]`), and as a plain
/// string when it is not one.
fn parse_env_value(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

/// Turns a serde error at `key` into a message that names the key and where it came from (a
/// line of the file, or an environment variable).
fn describe_error(key: &str, error: &str, text: &str, source: &str, from_env: &BTreeMap<String, String>) -> String {
    let first_line = error.lines().next().unwrap_or(error).trim();
    if let Some(field) = between(first_line, "missing field `", "`") {
        let table = key.trim_end_matches('.');
        let table = if table.is_empty() || table == "." { "global" } else { table };
        return format!("{source}: missing required config key `{field}` in [{table}]");
    }
    format!(
        "config key `{}` ({}): {first_line}",
        key.trim_start_matches("global."),
        locate(key, text, source, from_env)
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Where a dotted key path was set: an environment variable, or a line of the file.
fn locate(key: &str, text: &str, source: &str, from_env: &BTreeMap<String, String>) -> String {
    let short = key.trim_start_matches("global.");
    if let Some(var) = from_env.get(short) {
        return format!("from environment variable {var}");
    }
    let Ok(document) = toml_edit::ImDocument::parse(text) else {
        return source.to_owned();
    };
    let mut item: Option<&toml_edit::Item> = None;
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    for part in key.split('.') {
        let Some(found) = table.get(part) else { break };
        item = Some(found);
        match found.as_table_like() {
            Some(inner) => table = inner,
            None => break,
        }
    }
    let span = item.and_then(|item| {
        table.get_key_value(key.rsplit('.').next().unwrap_or(key)).and_then(|(k, _)| k.span()).or_else(|| item.span())
    });
    match span {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            format!("{source} line {line}")
        }
        None => source.to_owned(),
    }
}

#[cfg(test)]
mod tests;
