//! Password hashing and checking (argon2id, default parameters) off the async runtime, one hash
//! per core at a time.
//!
//! A hash fills 19 MiB. Why the limit: a burst of logins waits its turn instead of taking 19 MiB
//! each; the permit travels with the work, so a client that goes away mid-hash does not free a
//! slot before the hash ends. Why the collect after each: mimalloc keeps freed pages until its
//! next activity after a delay, and a server that went quiet after a login kept the 19 MiB
//! resident until a thread ended (see `heap.rs`).

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::{Error, Result};

pub struct PasswordHashing {
    permits: Arc<Semaphore>,
}

impl PasswordHashing {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { permits: Arc::new(Semaphore::new(cores)) }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches the PHC string `hash` (an unreadable hash matches nothing).
    pub async fn matches(&self, password: &str, hash: String) -> Result<bool> {
        let password = password.to_owned();
        self.run(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
    }

    async fn run<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::internal(format!("password hashing closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            crate::heap::release_allocator_pages();
            result
        })
        .await
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_matches_its_password_only() {
        let hashing = PasswordHashing::new();
        let hash = hashing.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(hashing.matches("correct horse", hash.clone()).await.unwrap());
        assert!(!hashing.matches("battery staple", hash).await.unwrap());
        assert!(!hashing.matches("correct horse", "not a hash".to_owned()).await.unwrap());
    }

    #[tokio::test]
    async fn a_dropped_waiter_keeps_its_slot_until_the_hash_ends() {
        let hashing = Arc::new(PasswordHashing { permits: Arc::new(Semaphore::new(1)) });
        let (started_send, started) = tokio::sync::oneshot::channel();
        let (finish_send, finish) = std::sync::mpsc::channel::<()>();
        let first = {
            let hashing = hashing.clone();
            tokio::spawn(async move {
                hashing
                    .run(move || {
                        let _ = started_send.send(());
                        let _ = finish.recv();
                    })
                    .await
            })
        };
        started.await.unwrap();
        first.abort();
        let _ = first.await;
        // The first hash still runs: the only slot is taken.
        assert_eq!(hashing.permits.available_permits(), 0);
        finish_send.send(()).unwrap();
        assert_eq!(hashing.run(|| 7).await.unwrap(), 7);
    }
}
