//! Rate limits (Synapse's `rc_*`): a token bucket per user, client address, account or room for
//! each limited action. A refused action is `M_LIMIT_EXCEEDED` (429) with `retry_after_ms` and a
//! `Retry-After` header. Buckets live in memory; a full bucket is the same as none, so the maps
//! drop full buckets when they grow, and never hold more than [`MAX_KEYS`] keys per limit.
//!
//! A small keyed bucket map rather than a crate (`governor`): Synapse's limits are fractional
//! rates with a burst (0.003 a second, 5 at once) and the wait must be reported, which this
//! does in a few lines without another dependency tree.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter};

use super::sessions::Authenticated;
use crate::{
    Error, Result,
    config::{Config, limits::RateLimit},
};

/// Keys one limit keeps at most; past this, the least-recently used half is dropped (those
/// keys start again with a full burst, which loosens the limit for them, never tightens it).
pub const MAX_KEYS: usize = 100_000;

/// The actions a user is limited in, each with its own bucket per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    /// Sending an event (message, state, redaction).
    Message,
    /// Joining a room this server is in.
    JoinLocal,
    /// Joining a room through another server.
    JoinRemote,
    CreateRoom,
    /// Uploading media or reserving a media ID.
    MediaCreate,
}

/// One bucket: how full it was at `updated`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of one limit, by key.
pub struct KeyedLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyedLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one action from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.at(key, Instant::now(), true)
    }

    /// Whether `key` could act now, without taking anything.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        self.at(key, Instant::now(), false)
    }

    fn at(&self, key: &str, now: Instant, take: bool) -> Result<(), Duration> {
        let RateLimit { per_second, burst_count } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = match buckets.get(key) {
            Some(bucket) => {
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                (bucket.tokens + elapsed * per_second).min(burst_count)
            }
            None => burst_count,
        };
        if current < 1.0 {
            let wait = (1.0 - current) / per_second;
            return Err(Duration::from_secs_f64(wait.min(86_400.0)));
        }
        if take {
            if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
                shrink(&mut buckets, self.limit, now);
            }
            buckets.insert(key.to_owned(), Bucket { tokens: current - 1.0, updated: now });
        }
        Ok(())
    }

    /// Keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the buckets that have refilled; if that frees too little, the least recently used half.
fn shrink(buckets: &mut HashMap<String, Bucket>, limit: RateLimit, now: Instant) {
    buckets.retain(|_, bucket| {
        bucket.tokens + now.saturating_duration_since(bucket.updated).as_secs_f64() * limit.per_second
            < limit.burst_count
    });
    if buckets.len() >= MAX_KEYS / 2 {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
        ages.sort_unstable();
        let cutoff = ages[ages.len() / 2];
        buckets.retain(|_, bucket| bucket.updated > cutoff);
    }
}

/// `M_LIMIT_EXCEEDED` telling the client to wait `wait`.
pub fn limit_exceeded(wait: Duration) -> Error {
    let mut data = LimitExceededErrorData::new();
    // At least a millisecond, so a client never reads "retry after 0" and spins.
    data.retry_after = Some(RetryAfter::Delay(wait.max(Duration::from_millis(1))));
    Error::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::LimitExceeded(data), "Too many requests")
}

/// Every limit of the server.
pub struct RateLimits {
    message: KeyedLimiter,
    join_local: KeyedLimiter,
    join_remote: KeyedLimiter,
    room_creation: KeyedLimiter,
    media_create: KeyedLimiter,
    invite_room: KeyedLimiter,
    invite_target: KeyedLimiter,
    invite_issuer: KeyedLimiter,
    registration: KeyedLimiter,
    login_address: KeyedLimiter,
    login_account: KeyedLimiter,
    login_failed: KeyedLimiter,
}

impl RateLimits {
    pub fn new(config: &Config) -> Self {
        Self {
            message: KeyedLimiter::new(config.rc_message),
            join_local: KeyedLimiter::new(config.rc_joins.local),
            join_remote: KeyedLimiter::new(config.rc_joins.remote),
            room_creation: KeyedLimiter::new(config.rc_room_creation),
            media_create: KeyedLimiter::new(config.rc_media_create),
            invite_room: KeyedLimiter::new(config.rc_invites.per_room),
            invite_target: KeyedLimiter::new(config.rc_invites.per_user),
            invite_issuer: KeyedLimiter::new(config.rc_invites.per_issuer),
            registration: KeyedLimiter::new(config.rc_registration),
            login_address: KeyedLimiter::new(config.rc_login.address),
            login_account: KeyedLimiter::new(config.rc_login.account),
            login_failed: KeyedLimiter::new(config.rc_login.failed_attempts),
        }
    }

    /// Takes one `action` from the sender's bucket, unless the sender is exempt.
    pub fn user(&self, sender: &Authenticated, action: UserAction) -> Result<()> {
        if is_exempt(sender) {
            return Ok(());
        }
        let limiter = match action {
            UserAction::Message => &self.message,
            UserAction::JoinLocal => &self.join_local,
            UserAction::JoinRemote => &self.join_remote,
            UserAction::CreateRoom => &self.room_creation,
            UserAction::MediaCreate => &self.media_create,
        };
        limiter.take(sender.user_id.as_str()).map_err(limit_exceeded)
    }

    /// An invite from `sender` to `target` in `room`: limited per room, per invited user and per
    /// inviter. Nothing is taken unless all three allow it.
    pub fn invite(&self, sender: &Authenticated, room: &str, target: &str) -> Result<()> {
        if is_exempt(sender) {
            return Ok(());
        }
        let issuer = sender.user_id.as_str();
        self.invite_room.peek(room).map_err(limit_exceeded)?;
        self.invite_target.peek(target).map_err(limit_exceeded)?;
        self.invite_issuer.peek(issuer).map_err(limit_exceeded)?;
        // Another request may have taken the last token since the peeks: then this one is
        // refused by its take, and at worst one other bucket lost a token.
        self.invite_room.take(room).map_err(limit_exceeded)?;
        self.invite_target.take(target).map_err(limit_exceeded)?;
        self.invite_issuer.take(issuer).map_err(limit_exceeded)
    }

    /// Whether a registration from `address` may start (taking nothing: the user-interactive
    /// rounds before the account exists are not registrations).
    pub fn check_registration(&self, address: Option<&str>, sender: Option<&Authenticated>) -> Result<()> {
        match address {
            Some(address) if !sender.is_some_and(is_exempt) => self.registration.peek(address).map_err(limit_exceeded),
            _ => Ok(()),
        }
    }

    /// Counts a registration from `address` once the account exists.
    pub fn record_registration(&self, address: Option<&str>, sender: Option<&Authenticated>) {
        if let Some(address) = address
            && !sender.is_some_and(is_exempt)
        {
            let _ = self.registration.take(address);
        }
    }

    /// A login attempt from `address` for `account`: takes from both, and refuses an account
    /// that has failed too often lately.
    pub fn login_attempt(&self, address: Option<&str>, account: &str) -> Result<()> {
        if let Some(address) = address {
            self.login_address.take(address).map_err(limit_exceeded)?;
        }
        self.login_account.take(account).map_err(limit_exceeded)?;
        self.login_failed.peek(account).map_err(limit_exceeded)
    }

    /// Counts a failed login for `account`.
    pub fn login_failed(&self, account: &str) {
        let _ = self.login_failed.take(account);
    }
}

/// Whether `sender` is never limited: server admins, and application services whose
/// registration does not say `rate_limited: true`. (Extend here for other exemptions, such as
/// a per-user override stored by the admin API.)
pub fn is_exempt(sender: &Authenticated) -> bool {
    if sender.admin {
        return true;
    }
    match &sender.appservice {
        Some(service) => service.registration.rate_limited != Some(true),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = KeyedLimiter::new(RateLimit::new(2.0, 3.0));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.at("a", start, true).is_ok());
        }
        let wait = limiter.at("a", start, true).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Another key is untouched.
        assert!(limiter.at("b", start, true).is_ok());
        // Half a second later, one action is back.
        let later = start + Duration::from_millis(500);
        assert!(limiter.at("a", later, false).is_ok());
        assert!(limiter.at("a", later, true).is_ok());
        assert!(limiter.at("a", later, true).is_err());
    }

    #[test]
    fn peek_takes_nothing() {
        let limiter = KeyedLimiter::new(RateLimit::new(0.001, 1.0));
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limiter.at("a", now, false).is_ok());
        }
        assert!(limiter.at("a", now, true).is_ok());
        assert!(limiter.at("a", now, false).is_err());
    }

    /// The cost per request, against a `PUT /send` of about 0.5 ms on the benchmark machine
    /// (2000 messages a second from 4 senders, docs/performance.md): 2% of it is 10 µs. A
    /// debug build measured 2.5 µs here on a loaded machine (release builds are several times
    /// faster); the bound leaves room for a busier machine.
    #[test]
    fn a_check_costs_far_less_than_a_send() {
        let limiter = KeyedLimiter::new(RateLimit::new(1e9, 1e9));
        let keys: Vec<String> = (0..1000).map(|i| format!("@user{i}:example.org")).collect();
        let calls = 200_000;
        let start = Instant::now();
        for i in 0..calls {
            assert!(limiter.take(&keys[i % keys.len()]).is_ok());
        }
        let per_call = start.elapsed() / calls as u32;
        eprintln!("one rate limit check: {per_call:?}");
        assert!(per_call < Duration::from_micros(25), "{per_call:?}");
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = KeyedLimiter::new(RateLimit::new(0.001, 2.0));
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            let _ = limiter.at(&i.to_string(), now, true);
        }
        assert!(limiter.len() <= MAX_KEYS);
    }
}
