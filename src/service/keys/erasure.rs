//! Erasing a user's keys: device keys, one-time and fallback keys of any device left, the
//! cross-signing keys and the signatures on them, key backups, the dehydrated device and the
//! to-device messages waiting for them; other users see the change in their device lists.

use ruma::UserId;

use super::{Keys, record_key_change};
use crate::{
    Result,
    storage::{
        Batch, Db, KeyCodec, Table, ValueCodec,
        key_tables::{
            BACKUP_KEYS, BACKUP_VERSIONS, CROSS_SIGNING_KEYS, DEHYDRATED_DEVICES, DEVICE_KEYS, FALLBACK_KEYS,
            KEY_SIGNATURES, ONE_TIME_KEY_ORDER, ONE_TIME_KEYS, TO_DEVICE, TO_DEVICE_TRANSACTIONS,
        },
    },
};

/// Deletes every row of `table` whose key starts with `user`.
fn delete_user_rows<K: KeyCodec, V: ValueCodec>(
    db: &Db,
    batch: &mut Batch,
    table: &Table<K, V>,
    user: &ruma::OwnedUserId,
) -> Result<()> {
    for (key, _) in table.scan_prefix(db, &(user.clone(),))? {
        batch.delete(table, &key);
    }
    Ok(())
}

impl Keys {
    /// Deletes every key of `user` (account erasure), in one batch.
    pub async fn erase(&self, user: &UserId) -> Result<()> {
        let (user, changes) = (user.to_owned(), self.changes.clone());
        let notifier = self.notifier.clone();
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                delete_user_rows(db, &mut batch, &DEVICE_KEYS, &user)?;
                delete_user_rows(db, &mut batch, &ONE_TIME_KEYS, &user)?;
                delete_user_rows(db, &mut batch, &ONE_TIME_KEY_ORDER, &user)?;
                delete_user_rows(db, &mut batch, &FALLBACK_KEYS, &user)?;
                delete_user_rows(db, &mut batch, &CROSS_SIGNING_KEYS, &user)?;
                delete_user_rows(db, &mut batch, &KEY_SIGNATURES, &user)?;
                delete_user_rows(db, &mut batch, &BACKUP_VERSIONS, &user)?;
                delete_user_rows(db, &mut batch, &BACKUP_KEYS, &user)?;
                delete_user_rows(db, &mut batch, &TO_DEVICE, &user)?;
                delete_user_rows(db, &mut batch, &TO_DEVICE_TRANSACTIONS, &user)?;
                batch.delete(&DEHYDRATED_DEVICES, &user);
                let reserved = record_key_change(&changes, &mut batch, &user)?;
                db.write(batch)?;
                drop(reserved);
                notifier.poke();
                Ok(())
            })
            .await
    }
}
