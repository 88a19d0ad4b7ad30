//! OpenID tokens (`/user/{userId}/openid/request_token`): short-lived tokens a user hands to a
//! third party (a widget, an integration manager), which asks this server who they belong to
//! (`/_matrix/federation/v1/openid/userinfo`). Kept in memory: they live an hour, and a restart
//! only makes the user ask for a new one.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ruma::{OwnedUserId, UserId};

use crate::service::{now_ms, random_string};

/// How long a token stays valid.
pub const LIFETIME: Duration = Duration::from_secs(3600);
/// Tokens kept at most (expired ones are dropped first; beyond this the oldest go).
const MAX_TOKENS: usize = 100_000;

#[derive(Default)]
pub struct OpenId {
    /// token -> (user, expiry in ms since the epoch)
    tokens: Mutex<HashMap<String, (OwnedUserId, u64)>>,
}

impl OpenId {
    /// A new token for `user`.
    pub fn issue(&self, user: &UserId) -> String {
        let token = random_string(32);
        let now = now_ms();
        let expires = now.saturating_add(LIFETIME.as_millis() as u64);
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= MAX_TOKENS {
                tokens.retain(|_, (_, expiry)| *expiry > now);
                if tokens.len() >= MAX_TOKENS
                    && let Some(oldest) = tokens.iter().min_by_key(|(_, (_, expiry))| *expiry).map(|(t, _)| t.clone())
                {
                    tokens.remove(&oldest);
                }
            }
            tokens.insert(token.clone(), (user.to_owned(), expires));
        }
        token
    }

    /// The user a token belongs to, while it is valid.
    pub fn user_of(&self, token: &str) -> Option<OwnedUserId> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, expiry)| *expiry > now_ms()).map(|(user, _)| user.clone())
    }
}
