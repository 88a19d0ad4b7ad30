//! Login tokens (`/login/get_token`, v1.7, MSC3882): a logged-in device asks for a short-lived,
//! single-use token that logs a new device in with `m.login.token` (Element's "link new
//! device" by QR code). Kept in memory, as the OpenID tokens are: they live two minutes, and a
//! restart only makes the user ask again.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::expiring_tokens::ExpiringTokens;

/// How long a token stays valid (Synapse's default is five minutes; the spec suggests short).
pub const LIFETIME: Duration = Duration::from_secs(120);

pub struct LoginTokens(ExpiringTokens);

impl Default for LoginTokens {
    fn default() -> Self {
        Self(ExpiringTokens::new(LIFETIME, 10_000, 40))
    }
}

impl LoginTokens {
    /// A new token for `user`.
    pub fn issue(&self, user: &UserId) -> String {
        self.0.issue(user)
    }

    /// Uses up a token: the user it was issued to, while it is valid (at most once).
    pub fn consume(&self, token: &str) -> Option<OwnedUserId> {
        self.0.consume(token)
    }
}
