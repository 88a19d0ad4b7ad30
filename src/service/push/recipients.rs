//! Who push evaluation decides for, and how cheaply: each local recipient's push profile (their
//! parsed rules, whether those are the server defaults, whether they have a pusher), cached in
//! memory and forgotten when the rules or pushers change, and the test that tells whether a
//! recipient with default rules can share the event's generic outcome.
//!
//! Why a generic outcome exists: the server-default rules of two users differ only in the
//! user's own ID (`.m.rule.invite_for_me`, `.m.rule.is_user_mention`), localpart
//! (`.m.rule.contains_user_name`) and display name (`.m.rule.contains_display_name`). For an
//! event that names none of those, every user with default rules gets the same actions, so the
//! rules are matched once per event for all of them ([`Recipient::may_differ`] finds the
//! others, who are evaluated one by one). The unit tests check both halves of that claim
//! against ruma's own evaluation.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedUserId, UserId, push::Ruleset};
use serde_json::value::RawValue;

use super::evaluate::{PUSH_RULES_TYPE, ruleset_from};
use crate::{
    Result,
    storage::{Db, ScanDirection, push_tables::PUSHERS, tables::ACCOUNT_DATA},
};

/// What push evaluation needs to know of a user, whatever the room.
pub struct PushProfile {
    pub ruleset: Ruleset,
    /// Whether the rules are the server defaults (stored or not), so the user can share an
    /// event's generic outcome.
    pub default_rules: bool,
    /// Whether the user has a pusher, so their notifications are queued for delivery.
    pub has_pusher: bool,
}

/// Push profiles by user, read on first use and forgotten by [`PushProfiles::forget`] when
/// the user's push rules or pushers change (every write of either calls it after committing).
#[derive(Default)]
pub struct PushProfiles {
    profiles: Mutex<HashMap<OwnedUserId, Arc<PushProfile>>>,
    /// Counts forgets, so a profile read from storage before a change is not cached after it.
    generation: AtomicU64,
    /// Whether MSC4306's thread subscription rules apply (`thread_subscription_push_rules`).
    pub thread_subscription_rules: bool,
}

/// Users whose profiles are kept; past it the cache starts over.
const CACHED_PROFILES: usize = 50_000;

impl PushProfiles {
    /// No profiles yet; MSC4306's thread subscription rules on or off.
    pub fn with_thread_rules(thread_subscription_rules: bool) -> Self {
        Self { thread_subscription_rules, ..Self::default() }
    }

    /// The user's profile, from the cache or from storage.
    pub fn get(&self, db: &Db, user: &UserId) -> Result<Arc<PushProfile>> {
        if let Ok(profiles) = self.profiles.lock()
            && let Some(profile) = profiles.get(user)
        {
            return Ok(profile.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let profile = Arc::new(read_profile(db, user)?);
        if let Ok(mut profiles) = self.profiles.lock()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if profiles.len() >= CACHED_PROFILES {
                profiles.clear();
            }
            profiles.insert(user.to_owned(), profile.clone());
        }
        Ok(profile)
    }

    /// Changes with every [`forget`](Self::forget): what was derived from profiles under one
    /// generation holds while it lasts.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops the cached profile of `user`; called after a change of their rules or pushers is
    /// committed.
    pub fn forget(&self, user: &UserId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut profiles) = self.profiles.lock() {
            profiles.remove(user);
        }
    }
}

fn read_profile(db: &Db, user: &UserId) -> Result<PushProfile> {
    let key = (user.to_owned(), String::new(), PUSH_RULES_TYPE.to_owned());
    let stored = ACCOUNT_DATA.get(db, &key)?;
    let ruleset = ruleset_from(user, stored.as_deref().map(RawValue::get));
    let default_rules = stored.is_none() || is_server_default(user, &ruleset);
    let owner = user.to_owned();
    let has_pusher = !PUSHERS
        .scan_from(db, &(owner.clone(), String::new(), String::new()), ScanDirection::Forward, 1, |k| k.0 == owner)?
        .is_empty();
    Ok(PushProfile { ruleset, default_rules, has_pusher })
}

/// Whether `ruleset` is exactly the server defaults of `user` (a client may have stored them
/// unchanged, or changed a rule and changed it back).
fn is_server_default(user: &UserId, ruleset: &Ruleset) -> bool {
    match (serde_json::to_value(ruleset), serde_json::to_value(super::defaults::default_ruleset(user))) {
        (Ok(stored), Ok(default)) => stored == default,
        _ => false,
    }
}

/// A local user who may be notified of an event in a room, with what tells whether the event
/// names them.
#[derive(Clone)]
pub struct Recipient {
    pub user: OwnedUserId,
    pub display_name: String,
    /// The first word of the lowercased display name and localpart (`None`: the name cannot be
    /// screened by words, so every event with a body is evaluated for this user).
    display_name_word: Option<Box<str>>,
    localpart_word: Option<Box<str>>,
    /// The user ID has glob characters (possible in historical user IDs), which the default
    /// rules' `state_key` match would treat as wildcards.
    glob_id: bool,
}

impl Recipient {
    pub fn new(user: OwnedUserId, display_name: String) -> Self {
        let display_name_word = first_word(&display_name.to_lowercase());
        let localpart_word = first_word(&user.localpart().to_lowercase());
        let glob_id = user.as_str().contains(['*', '?']);
        Self { user, display_name, display_name_word, localpart_word, glob_id }
    }

    /// Whether the event may give this user other actions than the generic outcome, were their
    /// rules the defaults: it mentions them, is about their membership, or its body has their
    /// display name's or localpart's first word. A superset of the users the default rules
    /// single out (see the module comment); they are evaluated one by one.
    pub fn may_differ(&self, screen: &EventScreen) -> bool {
        if self.glob_id || screen.named_ids.contains(self.user.as_str()) {
            return true;
        }
        let Some(words) = &screen.body_words else { return false };
        let names_in_body = |word: &Option<Box<str>>| word.as_deref().is_none_or(|w| words.contains(w));
        names_in_body(&self.display_name_word) || names_in_body(&self.localpart_word)
    }
}

/// The ASCII word characters of ruma's word matching (`content.body` patterns and display
/// names): anything else is a word boundary.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first word of a lowercased name, when a match of the name at word boundaries must
/// start with that whole word. `None` when it need not: the name is empty, does not start with
/// a word character, or has glob characters (ruma reads display names and localparts as globs).
fn first_word(name: &str) -> Option<Box<str>> {
    if name.contains(['*', '?']) || !name.starts_with(is_word_char) {
        return None;
    }
    name.split(|c: char| !is_word_char(c)).next().map(Into::into)
}

/// What one event offers for telling which recipients it names.
pub struct EventScreen {
    /// The words of the lowercased `content.body`, if the event has one.
    body_words: Option<HashSet<String>>,
    /// User IDs the event names: `content.m.mentions.user_ids` and the `state_key`.
    named_ids: HashSet<String>,
}

impl EventScreen {
    /// `event` as clients see it.
    pub fn of(event: &serde_json::Value) -> Self {
        let content = &event["content"];
        let body_words = content["body"].as_str().map(|body| {
            body.to_lowercase().split(|c: char| !is_word_char(c)).filter(|w| !w.is_empty()).map(str::to_owned).collect()
        });
        let mut named_ids: HashSet<String> = content["m.mentions"]["user_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect();
        if let Some(state_key) = event["state_key"].as_str() {
            named_ids.insert(state_key.to_owned());
        }
        Self { body_words, named_ids }
    }
}

/// The local joined members of one state of a room, indexed so that an event finds the
/// members it may name without looking at the others: by the first words of their display
/// names and localparts, plus those whose names words cannot screen.
#[derive(Clone, Default)]
pub struct RoomRecipients {
    members: HashMap<OwnedUserId, Recipient>,
    by_word: HashMap<Box<str>, Vec<OwnedUserId>>,
    /// Members whose display name or localpart has no screening word, or whose ID has glob
    /// characters: evaluated for every event with a body.
    unscreenable: HashSet<OwnedUserId>,
}

impl RoomRecipients {
    pub fn insert(&mut self, recipient: Recipient) {
        self.remove(&recipient.user.clone());
        let user = &recipient.user;
        for word in [&recipient.display_name_word, &recipient.localpart_word] {
            match word {
                Some(word) => {
                    let users = self.by_word.entry(word.clone()).or_default();
                    if !users.contains(user) {
                        users.push(user.clone());
                    }
                }
                None => {
                    self.unscreenable.insert(user.clone());
                }
            }
        }
        if recipient.glob_id {
            self.unscreenable.insert(user.clone());
        }
        self.members.insert(user.clone(), recipient);
    }

    pub fn remove(&mut self, user: &UserId) {
        let Some(recipient) = self.members.remove(user) else { return };
        for word in [&recipient.display_name_word, &recipient.localpart_word].into_iter().flatten() {
            if let Some(users) = self.by_word.get_mut(word) {
                users.retain(|u| u != user);
                if users.is_empty() {
                    self.by_word.remove(word);
                }
            }
        }
        self.unscreenable.remove(user);
    }

    pub fn contains(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members whose profiles single them out for every event: custom rules or a pusher.
    pub fn special(&self, db: &Db, profiles: &PushProfiles) -> Result<Vec<OwnedUserId>> {
        let mut special = Vec::new();
        for user in self.members.keys() {
            let profile = profiles.get(db, user)?;
            if !profile.default_rules || profile.has_pusher {
                special.push(user.clone());
            }
        }
        Ok(special)
    }

    /// The members the event may name (a superset; see [`Recipient::may_differ`]).
    pub fn named<'a>(&'a self, screen: &'a EventScreen) -> impl Iterator<Item = &'a Recipient> + 'a {
        let by_id = screen
            .named_ids
            .iter()
            .filter_map(|id| <&UserId>::try_from(id.as_str()).ok())
            .filter_map(|user| self.members.get_key_value(user));
        let by_word = screen
            .body_words
            .iter()
            .flatten()
            .filter_map(|word| self.by_word.get(word.as_str()))
            .flatten()
            .filter_map(|user| self.members.get_key_value(user));
        let unscreenable = screen
            .body_words
            .is_some()
            .then_some(&self.unscreenable)
            .into_iter()
            .flatten()
            .filter_map(|user| self.members.get_key_value(user));
        by_id.chain(by_word).chain(unscreenable).map(|(_, recipient)| recipient)
    }

    pub fn get(&self, user: &UserId) -> Option<&Recipient> {
        self.members.get(user)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Recipient> {
        self.members.values()
    }
}

#[cfg(test)]
mod tests;
