//! OpenID tokens (`/user/{userId}/openid/request_token`): short-lived tokens a user hands to a
//! third party (a widget, an integration manager), which asks this server who they belong to
//! (`/_matrix/federation/v1/openid/userinfo`). Kept in memory: they live an hour, and a restart
//! only makes the user ask for a new one.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::expiring_tokens::ExpiringTokens;

/// How long a token stays valid.
pub const LIFETIME: Duration = Duration::from_secs(3600);

pub struct OpenId(ExpiringTokens);

impl Default for OpenId {
    fn default() -> Self {
        Self(ExpiringTokens::new(LIFETIME, 100_000, 32))
    }
}

impl OpenId {
    /// A new token for `user`.
    pub fn issue(&self, user: &UserId) -> String {
        self.0.issue(user)
    }

    /// The user a token belongs to, while it is valid.
    pub fn user_of(&self, token: &str) -> Option<OwnedUserId> {
        self.0.user_of(token)
    }
}
