//! Login tokens (`/login/get_token`, v1.7, MSC3882): a logged-in device asks for a short-lived,
//! single-use token that logs a new device in with `m.login.token` (Element's "link new
//! device" by QR code). Kept in memory, as the OpenID tokens are: they live two minutes, and a
//! restart only makes the user ask again.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ruma::{OwnedUserId, UserId};

use crate::service::{now_ms, random_string};

/// How long a token stays valid (Synapse's default is five minutes; the spec suggests short).
pub const LIFETIME: Duration = Duration::from_secs(120);
/// Tokens kept at most; expired ones are dropped first, then the oldest.
const MAX_TOKENS: usize = 10_000;

#[derive(Default)]
pub struct LoginTokens {
    /// token -> (user, expiry in ms since the epoch)
    tokens: Mutex<HashMap<String, (OwnedUserId, u64)>>,
}

impl LoginTokens {
    /// A new token for `user`.
    pub fn issue(&self, user: &UserId) -> String {
        let token = random_string(40);
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

    /// Uses up a token: the user it was issued to, while it is valid. Removal and check happen
    /// under one lock, so two logins with the same token cannot both succeed.
    pub fn consume(&self, token: &str) -> Option<OwnedUserId> {
        let mut tokens = self.tokens.lock().ok()?;
        tokens.remove(token).filter(|(_, expiry)| *expiry > now_ms()).map(|(user, _)| user)
    }
}
