//! Erasing a user's media: every file they uploaded, its thumbnails and its metadata (a file
//! another upload shares, being content-addressed, stays for that upload), and their
//! reservations.

use ruma::UserId;

use super::{Media, admin::remove_local};
use crate::{
    Result,
    storage::{
        Batch,
        tables::{MEDIA, MEDIA_PENDING, MEDIA_PENDING_BY_USER},
    },
};

impl Media {
    /// Deletes every piece of media `user` uploaded or reserved. Returns how many were deleted.
    pub async fn delete_media_of(&self, user: &UserId) -> Result<usize> {
        let (user, store, server) = (user.to_owned(), self.store.clone(), self.config.server_name.to_string());
        self.claims
            .run(&self.db, move |db| {
                let ids: Vec<String> = MEDIA
                    .all(db)?
                    .into_iter()
                    .filter(|(_, record)| record.uploader.as_ref() == Some(&user))
                    .map(|(media_id, _)| media_id)
                    .collect();
                let mut batch = Batch::new();
                for ((owner, media_id), _) in MEDIA_PENDING_BY_USER.scan_prefix(db, &(user.clone(),))? {
                    batch.delete(&MEDIA_PENDING, &media_id);
                    batch.delete(&MEDIA_PENDING_BY_USER, &(owner, media_id));
                }
                let (deleted, files) = remove_local(db, &mut batch, &server, ids)?;
                db.write(batch)?;
                for file in files {
                    store.remove(&file)?;
                }
                Ok(deleted.len())
            })
            .await
    }
}
