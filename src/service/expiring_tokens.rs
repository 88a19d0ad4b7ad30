//! Short-lived bearer tokens kept in memory (OpenID tokens, login tokens): each is issued for a
//! user, valid for a fixed time, and the number kept is bounded. A restart forgets them, which
//! only makes the user ask again.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ruma::{OwnedUserId, UserId};

use crate::service::{now_ms, random_string};

pub struct ExpiringTokens {
    lifetime: Duration,
    /// Tokens kept at most: expired ones are dropped first, then the oldest.
    max_tokens: usize,
    token_length: usize,
    /// token -> (user, expiry in ms since the epoch)
    tokens: Mutex<HashMap<String, (OwnedUserId, u64)>>,
}

impl ExpiringTokens {
    pub fn new(lifetime: Duration, max_tokens: usize, token_length: usize) -> Self {
        Self { lifetime, max_tokens, token_length, tokens: Mutex::default() }
    }

    /// A new token for `user`.
    pub fn issue(&self, user: &UserId) -> String {
        let token = random_string(self.token_length);
        let now = now_ms();
        let expires = now.saturating_add(u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX));
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= self.max_tokens {
                tokens.retain(|_, (_, expiry)| *expiry > now);
                if tokens.len() >= self.max_tokens
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

    /// Uses up a token: the user it was issued to, while it is valid. Removal and check happen
    /// under one lock, so two uses of the same token cannot both succeed.
    pub fn consume(&self, token: &str) -> Option<OwnedUserId> {
        let mut tokens = self.tokens.lock().ok()?;
        tokens.remove(token).filter(|(_, expiry)| *expiry > now_ms()).map(|(user, _)| user)
    }
}
