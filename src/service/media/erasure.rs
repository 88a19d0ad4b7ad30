//! Erasing a user's media: every file they uploaded, its thumbnails and its metadata (a file
//! another upload shares, being content-addressed, stays for that upload).

use std::collections::HashSet;

use ruma::UserId;

use super::Media;
use crate::{
    Result,
    storage::{
        Batch, ScanDirection,
        tables::{MEDIA, MEDIA_PENDING, MEDIA_PENDING_BY_USER, MEDIA_THUMBNAILS},
    },
};

impl Media {
    /// Deletes every piece of media `user` uploaded or reserved. Returns how many were deleted.
    pub async fn delete_media_of(&self, user: &UserId) -> Result<usize> {
        let (user, store) = (user.to_owned(), self.store.clone());
        self.claims
            .run(&self.db, move |db| {
                let all = MEDIA.all(db)?;
                let mut batch = Batch::new();
                let mut hashes = HashSet::new();
                let mut deleted = 0;
                for (media_id, record) in &all {
                    if record.uploader.as_ref() == Some(&user) {
                        batch.delete(&MEDIA, media_id);
                        hashes.insert(record.sha256.clone());
                        deleted += 1;
                    }
                }
                for ((owner, media_id), _) in MEDIA_PENDING_BY_USER.scan_prefix(db, &(user.clone(),))? {
                    batch.delete(&MEDIA_PENDING, &media_id);
                    batch.delete(&MEDIA_PENDING_BY_USER, &(owner, media_id));
                }
                // Files still named by another user's upload stay.
                let shared: HashSet<&String> = all
                    .iter()
                    .filter(|(_, record)| record.uploader.as_ref() != Some(&user))
                    .map(|(_, record)| &record.sha256)
                    .collect();
                let mut files = Vec::new();
                for hash in hashes.iter().filter(|hash| !shared.contains(hash)) {
                    files.push(hash.clone());
                    let prefix = format!("{hash}/");
                    let thumbnails =
                        MEDIA_THUMBNAILS
                            .scan_from(db, hash, ScanDirection::Forward, usize::MAX, |key| key.starts_with(&prefix))?;
                    for (key, thumbnail) in thumbnails {
                        batch.delete(&MEDIA_THUMBNAILS, &key);
                        files.push(thumbnail.sha256);
                    }
                }
                db.write(batch)?;
                for file in files {
                    store.remove(&file)?;
                }
                Ok(deleted)
            })
            .await
    }
}
