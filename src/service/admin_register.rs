//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`): single-use nonces and
//! the HMAC-SHA1 check over `nonce\0username\0password\0admin|notadmin`. Admin tools and the
//! Complement suite create users this way.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use sha1::Sha1;

use super::random_string;
use crate::{Error, Result};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);
const MAX_NONCES: usize = 10_000;

pub struct AdminRegister {
    shared_secret: Option<String>,
    nonces: Mutex<HashMap<String, Instant>>,
}

impl AdminRegister {
    pub fn new(shared_secret: Option<String>) -> Self {
        Self { shared_secret, nonces: Mutex::new(HashMap::new()) }
    }

    fn secret(&self) -> Result<&str> {
        self.shared_secret.as_deref().ok_or_else(|| {
            Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Shared secret registration is not enabled")
        })
    }

    pub fn new_nonce(&self) -> Result<String> {
        self.secret()?;
        let mut nonces = self.nonces.lock().map_err(|_| Error::internal("poisoned lock"))?;
        nonces.retain(|_, at| at.elapsed() < NONCE_LIFETIME);
        if nonces.len() >= MAX_NONCES {
            return Err(Error::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::Unknown, "Too many pending nonces"));
        }
        let nonce = random_string(32);
        nonces.insert(nonce.clone(), Instant::now());
        Ok(nonce)
    }

    /// Consumes the nonce and checks the MAC (hex). `user_type` is mixed in when given.
    pub fn verify(
        &self,
        nonce: &str,
        username: &str,
        password: &str,
        admin: bool,
        user_type: Option<&str>,
        mac: &str,
    ) -> Result<()> {
        let secret = self.secret()?;
        let fresh = {
            let mut nonces = self.nonces.lock().map_err(|_| Error::internal("poisoned lock"))?;
            nonces.remove(nonce).is_some_and(|at| at.elapsed() < NONCE_LIFETIME)
        };
        if !fresh {
            return Err(Error::bad_json("Unrecognised or expired nonce"));
        }
        let mut expected =
            Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| Error::internal(e.to_string()))?;
        expected.update(nonce.as_bytes());
        expected.update(b"\0");
        expected.update(username.as_bytes());
        expected.update(b"\0");
        expected.update(password.as_bytes());
        expected.update(b"\0");
        expected.update(if admin { b"admin" } else { b"notadmin" });
        if let Some(user_type) = user_type {
            expected.update(b"\0");
            expected.update(user_type.as_bytes());
        }
        let mac = hex::decode(mac).map_err(|_| Error::forbidden("HMAC incorrect"))?;
        expected.verify_slice(&mac).map_err(|_| Error::forbidden("HMAC incorrect"))
    }
}
