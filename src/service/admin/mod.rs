//! What the admin API (Synapse's `/_synapse/admin/...`, `src/api/admin/`) does besides what
//! other services already offer: listing and describing users (`users.rs`) and rooms
//! (`rooms.rs`) for admins, deactivating accounts (shared with the client API) and erasing them (`erasure.rs`), purging history (`purge.rs`), what shadow-bans, locks and suspensions
//! mean for a user's requests (`moderation.rs`), and deleting
//! and blocking rooms, server notices (`notices.rs`), and the storage report per table
//! (`storage.rs`).

pub mod encryption;
pub mod erasure;
pub mod media;
pub mod moderation;
pub mod notices;
pub mod purge;
pub mod rooms;
pub mod storage;
pub mod users;
