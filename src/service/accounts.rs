//! Local accounts: user ID rules, creation, passwords (argon2) and deactivation.

use http::StatusCode;
use ruma::{OwnedServerName, OwnedUserId, UserId, api::error::ErrorKind};

use super::{now_ms, password_hashing::PasswordHashing};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, WriteLock,
        tables::{COUNTERS, USERS, UserRecord},
    },
};

/// A change to the moderation flags of an account (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct Moderation {
    pub shadow_banned: Option<bool>,
    pub locked: Option<bool>,
    pub suspended: Option<bool>,
}

pub struct Accounts {
    db: Db,
    server_name: OwnedServerName,
    /// Serialises account creation and changes so two requests cannot both claim one user ID
    /// or overwrite each other's change to a record.
    lock: WriteLock,
    passwords: PasswordHashing,
}

/// What kind of account to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Admin,
    Guest,
}

impl Accounts {
    pub fn new(db: Db, server_name: OwnedServerName) -> Self {
        Self { db, server_name, lock: WriteLock::new(), passwords: PasswordHashing::new() }
    }

    /// Whether `user` belongs to this server.
    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// Checks a localpart a user asked for: the spec's character set (lower case), not reserved,
    /// and the whole ID within 255 bytes. Returns the full user ID.
    pub fn user_id_for_new_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| Error::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, why);
        if localpart.is_empty() {
            return Err(invalid("The username is empty"));
        }
        if !localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
        {
            return Err(invalid("Usernames may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'"));
        }
        // Like Synapse: a leading underscore is reserved for application services, and numeric
        // localparts for guests.
        if localpart.starts_with('_') {
            return Err(invalid("Usernames starting with '_' are reserved"));
        }
        if localpart.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("Numeric usernames are reserved for guest accounts"));
        }
        let user_id = UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| invalid(&format!("Invalid username: {e}")))?;
        if user_id.as_str().len() > 255 {
            return Err(invalid("The user ID would be longer than 255 bytes"));
        }
        Ok(user_id)
    }

    /// Resolves what a client typed to log in (a localpart or a full user ID) to a local user.
    pub fn parse_login_user(&self, user: &str) -> Result<OwnedUserId> {
        let user_id = if user.starts_with('@') {
            UserId::parse(user.to_lowercase())
        } else {
            UserId::parse(format!("@{}:{}", user.to_lowercase(), self.server_name))
        }
        .map_err(|_| Error::forbidden("Invalid username or password"))?;
        if user_id.server_name() != self.server_name {
            return Err(Error::forbidden("That user is not on this server"));
        }
        Ok(user_id)
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        let user_id = user_id.to_owned();
        self.db.run(move |db| Ok(USERS.get(db, &user_id)?)).await
    }

    pub async fn exists(&self, user_id: &UserId) -> Result<bool> {
        let user_id = user_id.to_owned();
        self.db.run(move |db| Ok(USERS.contains(db, &user_id)?)).await
    }

    /// Creates an account; `M_USER_IN_USE` when the ID is taken (deactivated IDs stay taken).
    pub async fn create(&self, user_id: &UserId, password: Option<&str>, kind: AccountKind) -> Result<()> {
        let password_hash = match password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let user_id = user_id.to_owned();
        self.lock
            .run(&self.db, move |db| {
                if USERS.contains(db, &user_id)? {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::UserInUse,
                        "That user ID is already taken",
                    ));
                }
                let record = UserRecord {
                    password_hash,
                    created_ms: now_ms(),
                    admin: kind == AccountKind::Admin,
                    guest: kind == AccountKind::Guest,
                    deactivated: false,
                    shadow_banned: false,
                    locked: false,
                    suspended: false,
                };
                let mut batch = Batch::new();
                batch.put(&USERS, &user_id, &record)?;
                crate::service::user_directory::reindex_user(db, &mut batch, &user_id, None)?;
                Ok(db.write(batch)?)
            })
            .await
    }

    /// A fresh numeric localpart for a guest account.
    pub async fn next_guest_user_id(&self) -> Result<OwnedUserId> {
        let server_name = self.server_name.clone();
        self.lock
            .run(&self.db, move |db| {
                let key = "guest_localpart".to_owned();
                let next = COUNTERS.get(db, &key)?.unwrap_or(1);
                let mut batch = Batch::new();
                batch.put(&COUNTERS, &key, &(next + 1))?;
                db.write(batch)?;
                UserId::parse(format!("@{next}:{server_name}")).map_err(|e| Error::internal(e.to_string()))
            })
            .await
    }

    /// Checks a password; a wrong password, unknown or password-less user is `M_FORBIDDEN`, a
    /// deactivated one `M_USER_DEACTIVATED`.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let wrong = || Error::forbidden("Invalid username or password");
        let record = self.get(user_id).await?.ok_or_else(wrong)?;
        if record.deactivated {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let hash = record.password_hash.ok_or_else(wrong)?;
        if self.passwords.matches(password, hash).await? { Ok(()) } else { Err(wrong()) }
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self.passwords.hash(password).await?;
        self.update(user_id, move |record| record.password_hash = Some(hash)).await
    }

    pub async fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<()> {
        self.update(user_id, move |record| record.admin = admin).await
    }

    /// Sets the account's moderation flags an admin controls (`None`: left as it is).
    pub async fn set_moderation(&self, user_id: &UserId, flags: Moderation) -> Result<()> {
        self.update(user_id, move |record| {
            record.shadow_banned = flags.shadow_banned.unwrap_or(record.shadow_banned);
            record.locked = flags.locked.unwrap_or(record.locked);
            record.suspended = flags.suspended.unwrap_or(record.suspended);
        })
        .await
    }

    /// Marks the account deactivated and removes its password; the caller ends its sessions.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.update(user_id, |record| {
            record.deactivated = true;
            record.password_hash = None;
        })
        .await
    }

    /// Lets a deactivated account log in again (an admin's doing; the password is set apart).
    pub async fn reactivate(&self, user_id: &UserId) -> Result<()> {
        self.update(user_id, |record| record.deactivated = false).await
    }

    async fn update(&self, user_id: &UserId, change: impl FnOnce(&mut UserRecord) + Send + 'static) -> Result<()> {
        let user_id = user_id.to_owned();
        self.lock
            .run(&self.db, move |db| {
                let mut record = USERS.get(db, &user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
                change(&mut record);
                let mut batch = Batch::new();
                batch.put(&USERS, &user_id, &record)?;
                Ok(db.write(batch)?)
            })
            .await
    }
}
