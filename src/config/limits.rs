//! Config of the operational features: rate limits (Synapse's `rc_*` settings, each a table
//! with `per_second` and `burst_count`), the trusted proxies whose `X-Forwarded-For` gives the
//! client address those limits count, the Prometheus metrics listener and the log format.

use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

use super::ConfigError;

/// One token bucket: `burst_count` actions at once, refilled at `per_second` actions a second.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: f64,
}

impl RateLimit {
    pub const fn new(per_second: f64, burst_count: f64) -> Self {
        Self { per_second, burst_count }
    }

    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(ConfigError(format!("config key `{key}.per_second`: must be a number above 0")));
        }
        if !(self.burst_count.is_finite() && self.burst_count >= 1.0) {
            return Err(ConfigError(format!("config key `{key}.burst_count`: must be a number of at least 1")));
        }
        Ok(())
    }
}

/// `rc_login`: every login attempt per client address and per account, and failed attempts
/// per account.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoginLimits {
    #[serde(default = "default_login_address")]
    pub address: RateLimit,
    #[serde(default = "default_login_account")]
    pub account: RateLimit,
    #[serde(default = "default_login_failed")]
    pub failed_attempts: RateLimit,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            address: default_login_address(),
            account: default_login_account(),
            failed_attempts: default_login_failed(),
        }
    }
}

/// `rc_joins`: joins per user to rooms this server is in (`local`) and through other servers
/// (`remote`, which cost a federation handshake).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct JoinLimits {
    #[serde(default = "default_join_local")]
    pub local: RateLimit,
    #[serde(default = "default_join_remote")]
    pub remote: RateLimit,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self { local: default_join_local(), remote: default_join_remote() }
    }
}

/// `rc_invites`: invites sent into one room, received by one user, and sent by one user.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InviteLimits {
    #[serde(default = "default_invite_per_room")]
    pub per_room: RateLimit,
    #[serde(default = "default_invite_per_user")]
    pub per_user: RateLimit,
    #[serde(default = "default_invite_per_issuer")]
    pub per_issuer: RateLimit,
}

impl Default for InviteLimits {
    fn default() -> Self {
        Self {
            per_room: default_invite_per_room(),
            per_user: default_invite_per_user(),
            per_issuer: default_invite_per_issuer(),
        }
    }
}

// Defaults: Synapse's where they fit a small server; the login limits per address and account
// are looser than Synapse's (5 logins, then one per 5 minutes), which locks out a household
// behind one NAT address, while failed attempts stay strict.
pub fn default_message() -> RateLimit {
    RateLimit::new(0.2, 10.0)
}
pub fn default_registration() -> RateLimit {
    RateLimit::new(0.17, 3.0)
}
fn default_login_address() -> RateLimit {
    RateLimit::new(0.05, 10.0)
}
fn default_login_account() -> RateLimit {
    RateLimit::new(0.05, 10.0)
}
fn default_login_failed() -> RateLimit {
    RateLimit::new(0.017, 5.0)
}
fn default_join_local() -> RateLimit {
    RateLimit::new(0.1, 10.0)
}
fn default_join_remote() -> RateLimit {
    RateLimit::new(0.01, 10.0)
}
fn default_invite_per_room() -> RateLimit {
    RateLimit::new(0.3, 10.0)
}
fn default_invite_per_user() -> RateLimit {
    RateLimit::new(0.003, 5.0)
}
fn default_invite_per_issuer() -> RateLimit {
    RateLimit::new(0.3, 10.0)
}
pub fn default_room_creation() -> RateLimit {
    RateLimit::new(0.016, 10.0)
}
pub fn default_media_create() -> RateLimit {
    RateLimit::new(10.0, 50.0)
}

/// Checks every limit of `config` (each `per_second` above 0, each `burst_count` at least 1).
pub fn validate(config: &super::Config) -> Result<(), ConfigError> {
    let limits = [
        ("rc_message", &config.rc_message),
        ("rc_registration", &config.rc_registration),
        ("rc_login.address", &config.rc_login.address),
        ("rc_login.account", &config.rc_login.account),
        ("rc_login.failed_attempts", &config.rc_login.failed_attempts),
        ("rc_joins.local", &config.rc_joins.local),
        ("rc_joins.remote", &config.rc_joins.remote),
        ("rc_invites.per_room", &config.rc_invites.per_room),
        ("rc_invites.per_user", &config.rc_invites.per_user),
        ("rc_invites.per_issuer", &config.rc_invites.per_issuer),
        ("rc_room_creation", &config.rc_room_creation),
        ("rc_media_create", &config.rc_media_create),
    ];
    for (key, limit) in limits {
        limit.check(key)?;
    }
    Ok(())
}

/// The Prometheus metrics listener (`[global.metrics]`): off unless `enabled`, on loopback
/// unless told otherwise.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_metrics_address")]
    pub address: IpAddr,
    #[serde(default = "default_metrics_port")]
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: false, address: default_metrics_address(), port: default_metrics_port() }
    }
}

fn default_metrics_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_metrics_port() -> u16 {
    9148
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured when written to a terminal.
    #[default]
    Full,
    /// Shorter human-readable lines.
    Compact,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `trusted_proxies`: each entry an address (`127.0.0.1`, `::1`) or a CIDR range
/// (`10.0.0.0/8`); an address stands for itself alone.
pub fn trusted_proxies<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry.parse::<ipnet::IpNet>().or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
                serde::de::Error::custom(format!("trusted_proxies: `{entry}` is not an IP address or CIDR range"))
            })
        })
        .collect()
}
