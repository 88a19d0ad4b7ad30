//! The user directory (`POST /user_directory/search`): a word index of local users (the words of
//! their user ID and global display name), kept in step by account creation and display name
//! changes, and the search over it. Who a searcher may find (users sharing a room with them,
//! users in public rooms, or everyone with `user_directory.search_all_users`) is asked of the
//! rooms service for the few users whose words match.
//!
//! Only global profiles are indexed and returned: a display name set for one room (a member
//! event) is never matched, so the directory cannot reveal it to users outside that room.

use std::collections::BTreeSet;

use ruma::{OwnedMxcUri, OwnedUserId, UserId};

use crate::{
    Result,
    service::rooms::Rooms,
    storage::{
        Batch, Db, ScanDirection,
        search_tables::{
            DirectoryEntry, USER_DIRECTORY, USER_DIRECTORY_WORDS, directory_keys, directory_words, user_words,
        },
        tables::{PROFILE_FIELDS, USERS},
    },
};

/// Index rows read per search term at most; a term matching more users than this (a one-letter
/// prefix on a big server) finds only the first of them, and the answer is `limited`.
const MAX_CANDIDATES: usize = 1_000;
/// The largest `limit` honoured.
const MAX_LIMIT: usize = 100;

/// Rewrites a user's directory words for a new display name, in the caller's batch.
pub fn reindex_user(db: &Db, batch: &mut Batch, user_id: &UserId, display_name: Option<&str>) -> Result<()> {
    let user = user_id.to_owned();
    if let Some(old) = USER_DIRECTORY.get(db, &user)? {
        for key in directory_keys(db, &old.words) {
            batch.delete(&USER_DIRECTORY_WORDS, &(key, user.to_string()));
        }
    }
    let words = user_words(user.as_str(), display_name);
    for key in directory_keys(db, &words) {
        batch.put(&USER_DIRECTORY_WORDS, &(key, user.to_string()), &())?;
    }
    batch.put(&USER_DIRECTORY, &user, &DirectoryEntry { words })?;
    Ok(())
}

/// One user found.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

pub struct UserDirectory {
    db: Db,
    search_all_users: bool,
}

impl UserDirectory {
    pub fn new(db: Db, search_all_users: bool) -> Self {
        Self { db, search_all_users }
    }

    /// Users whose words start with every word of `term`, that `searcher` may find; at most
    /// `limit`, and whether more were found.
    pub async fn search(
        &self,
        rooms: &Rooms,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        let terms = directory_words(term);
        // The longest term is the most selective to look up; the others are checked against
        // each candidate's words.
        let Some(lookup) = terms.iter().max_by_key(|t| t.len()).cloned() else { return Ok((Vec::new(), false)) };
        let limit = limit.clamp(1, MAX_LIMIT);
        let (candidates, truncated) = self
            .db
            .run(move |db| {
                // With encryption at rest every prefix is indexed as a keyed hash: look the
                // term's hash up exactly.
                let (start, exact) = if db.hashes_terms() { (db.term(&lookup), true) } else { (lookup.clone(), false) };
                let rows = USER_DIRECTORY_WORDS.scan_from(
                    db,
                    &(start.clone(), String::new()),
                    ScanDirection::Forward,
                    MAX_CANDIDATES,
                    |(word, _)| if exact { *word == start } else { word.starts_with(start.as_str()) },
                )?;
                let truncated = rows.len() >= MAX_CANDIDATES;
                let mut found = BTreeSet::new();
                for ((_, user), ()) in rows {
                    let Ok(user) = OwnedUserId::try_from(user) else { continue };
                    if found.contains(&user) {
                        continue;
                    }
                    // The words as last written (a stale index row never matches on its own).
                    let Some(entry) = USER_DIRECTORY.get(db, &user)? else { continue };
                    let all_match = terms.iter().all(|t| entry.words.iter().any(|w| w.starts_with(t.as_str())));
                    if all_match && USERS.get(db, &user)?.is_some_and(|record| !record.deactivated) {
                        found.insert(user);
                    }
                }
                Ok((found, truncated))
            })
            .await?;
        let visible: Vec<OwnedUserId> = if self.search_all_users {
            candidates.into_iter().collect()
        } else {
            rooms.users_findable_by(searcher, candidates.into_iter().collect()).await?
        };
        let db = self.db.clone();
        let mut users = db
            .run(move |db| {
                visible
                    .into_iter()
                    .map(|user_id| {
                        let field = |name: &str| PROFILE_FIELDS.get(db, &(user_id.clone(), name.to_owned()));
                        let display_name = field("displayname")?.and_then(|v| v.as_str().map(str::to_owned));
                        let avatar_url = field("avatar_url")?
                            .and_then(|v| v.as_str().filter(|u| !u.is_empty()).map(OwnedMxcUri::from));
                        Ok(DirectoryUser { user_id, display_name, avatar_url })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        // Users with a display name first, then by name and user ID (stable across requests).
        users.sort_by(|a, b| {
            (a.display_name.is_none(), a.display_name.as_deref().map(str::to_lowercase), &a.user_id).cmp(&(
                b.display_name.is_none(),
                b.display_name.as_deref().map(str::to_lowercase),
                &b.user_id,
            ))
        });
        let limited = truncated || users.len() > limit;
        users.truncate(limit);
        Ok((users, limited))
    }
}
