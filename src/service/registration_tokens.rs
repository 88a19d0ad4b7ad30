//! Registration tokens (`m.login.registration_token`): the one in the config
//! (`registration_token`), and those admins create, change and delete through Synapse's admin
//! API (`registration_tokens` table), each with an optional number of uses and expiry. A use is
//! counted when the token stage of a registration succeeds, under a lock with the check, so two
//! registrations cannot both take a token's last use.

use crate::{
    Error, Result,
    service::{now_ms, random_string, uiaa::constant_time_eq},
    storage::{
        Batch, Db, WriteLock,
        admin_tables::{REGISTRATION_TOKENS, RegistrationTokenRecord},
    },
};

/// Characters Synapse allows in a token.
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
}

/// A token as the admin API shows it.
#[derive(Debug, Clone)]
pub struct RegistrationToken {
    pub token: String,
    pub record: RegistrationTokenRecord,
}

impl RegistrationToken {
    pub fn valid_at(&self, now: u64) -> bool {
        self.record.expiry_time.is_none_or(|expiry| expiry > now)
            && self.record.uses_allowed.is_none_or(|allowed| self.record.completed < allowed)
    }
}

pub struct RegistrationTokens {
    db: Db,
    configured: Option<String>,
    lock: WriteLock,
}

impl RegistrationTokens {
    pub fn new(db: Db, configured: Option<String>) -> Self {
        Self { db, configured, lock: WriteLock::new() }
    }

    /// Whether registration asks for a token: one is configured or an admin made one.
    pub async fn required(&self) -> Result<bool> {
        if self.configured.is_some() {
            return Ok(true);
        }
        self.db
            .run(|db| {
                Ok(!REGISTRATION_TOKENS
                    .scan_from(db, &String::new(), crate::storage::ScanDirection::Forward, 1, |_| true)?
                    .is_empty())
            })
            .await
    }

    /// Whether `token` would let a registration through now.
    pub async fn valid(&self, token: &str) -> Result<bool> {
        if self.configured.as_deref().is_some_and(|configured| constant_time_eq(configured, token)) {
            return Ok(true);
        }
        Ok(self.get(token).await?.is_some_and(|t| t.valid_at(now_ms())))
    }

    /// Takes one use of `token` if it is valid; false when it is not.
    pub async fn consume(&self, token: &str) -> Result<bool> {
        if self.configured.as_deref().is_some_and(|configured| constant_time_eq(configured, token)) {
            return Ok(true);
        }
        let token = token.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let Some(mut record) = REGISTRATION_TOKENS.get(db, &token)? else { return Ok(false) };
                if !(RegistrationToken { token: token.clone(), record: record.clone() }).valid_at(now_ms()) {
                    return Ok(false);
                }
                record.completed += 1;
                let mut batch = Batch::new();
                batch.put(&REGISTRATION_TOKENS, &token, &record)?;
                db.write(batch)?;
                Ok(true)
            })
            .await
    }

    pub async fn list(&self) -> Result<Vec<RegistrationToken>> {
        self.db
            .run(|db| {
                Ok(REGISTRATION_TOKENS
                    .all(db)?
                    .into_iter()
                    .map(|(token, record)| RegistrationToken { token, record })
                    .collect())
            })
            .await
    }

    pub async fn get(&self, token: &str) -> Result<Option<RegistrationToken>> {
        let token = token.to_owned();
        self.db
            .run(move |db| Ok(REGISTRATION_TOKENS.get(db, &token)?.map(|record| RegistrationToken { token, record })))
            .await
    }

    /// Creates a token: `token`, or a random one of `length` characters (16 by default).
    pub async fn create(
        &self,
        token: Option<String>,
        length: Option<usize>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<RegistrationToken> {
        let token = match token {
            Some(token) if valid_token(&token) => token,
            Some(_) => {
                return Err(Error::invalid_param(
                    "A token is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'",
                ));
            }
            None => {
                let length = length.unwrap_or(16);
                if !(1..=64).contains(&length) {
                    return Err(Error::invalid_param("length must be between 1 and 64"));
                }
                random_string(length)
            }
        };
        if expiry_time.is_some_and(|expiry| expiry < now_ms()) {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        let record = RegistrationTokenRecord { uses_allowed, completed: 0, expiry_time };
        let (key, value) = (token.clone(), record.clone());
        let created = self
            .lock
            .run(&self.db, move |db| {
                if REGISTRATION_TOKENS.get(db, &key)?.is_some() {
                    return Ok(false);
                }
                let mut batch = Batch::new();
                batch.put(&REGISTRATION_TOKENS, &key, &value)?;
                db.write(batch)?;
                Ok(true)
            })
            .await?;
        if !created {
            return Err(Error::invalid_param("That token already exists"));
        }
        Ok(RegistrationToken { token, record })
    }

    /// Changes a token's number of uses and expiry (each `Some` is set; `Some(None)` clears).
    pub async fn update(
        &self,
        token: &str,
        uses_allowed: Option<Option<u64>>,
        expiry_time: Option<Option<u64>>,
    ) -> Result<RegistrationToken> {
        let token = token.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut record = REGISTRATION_TOKENS
                    .get(db, &token)?
                    .ok_or_else(|| Error::not_found("No such registration token"))?;
                if let Some(uses_allowed) = uses_allowed {
                    record.uses_allowed = uses_allowed;
                }
                if let Some(expiry_time) = expiry_time {
                    record.expiry_time = expiry_time;
                }
                let mut batch = Batch::new();
                batch.put(&REGISTRATION_TOKENS, &token, &record)?;
                db.write(batch)?;
                Ok(RegistrationToken { token, record })
            })
            .await
    }

    pub async fn delete(&self, token: &str) -> Result<()> {
        let token = token.to_owned();
        self.lock
            .run(&self.db, move |db| {
                if REGISTRATION_TOKENS.get(db, &token)?.is_none() {
                    return Err(Error::not_found("No such registration token"));
                }
                let mut batch = Batch::new();
                batch.delete(&REGISTRATION_TOKENS, &token);
                Ok(db.write(batch)?)
            })
            .await
    }
}
