//! Search tables: the inverted index of room events (`/search`) and the word index of the user
//! directory (`/user_directory/search`), with the one tokenizer both use, so that the rows an
//! event or a profile writes (and a migration rebuilds) are derived in one place.
//!
//! Tokens are Unicode words (UAX #29 word boundaries, through `unicode-segmentation`),
//! lowercased; only words with a letter or digit count, and each is cut to
//! [`MAX_TOKEN_CHARS`] characters.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use super::{Db, Table, codec::JsonValue};

/// (short room id, token, stream position) -> the event at that position holds the token: the
/// postings of each room's words, newest last.
pub const SEARCH_POSTINGS: Table<(u64, String, u64), Posting> = Table::new("search_postings");
/// (word, user ID) -> (): a word of a local user's global display name or user ID.
pub const USER_DIRECTORY_WORDS: Table<(String, String), ()> = Table::new("user_directory_words");
/// User ID -> the words the user is listed under (so a new name can remove the old ones).
pub const USER_DIRECTORY: Table<OwnedUserId, DirectoryEntry> = Table::new("user_directory");

pub const SEARCH_TABLES: &[&str] = &[SEARCH_POSTINGS.name, USER_DIRECTORY_WORDS.name, USER_DIRECTORY.name];

/// Longest token kept, in characters; longer words are cut (and so still match their start).
pub const MAX_TOKEN_CHARS: usize = 64;
/// Most distinct tokens indexed per event; the rest of a very long message is not searchable.
pub const MAX_TOKENS_PER_EVENT: usize = 512;

/// The searchable fields, as bits of [`Posting::fields`].
pub const FIELD_BODY: u8 = 1;
pub const FIELD_NAME: u8 = 2;
pub const FIELD_TOPIC: u8 = 4;

/// One event's occurrence of one token.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Posting {
    /// The short event id.
    #[serde(rename = "e")]
    pub event: u64,
    /// Which fields hold the token ([`FIELD_BODY`], [`FIELD_NAME`], [`FIELD_TOPIC`]).
    #[serde(rename = "f")]
    pub fields: u8,
    /// How often the token occurs in the event's indexed text.
    #[serde(rename = "n")]
    pub count: u32,
    /// How many words the event's indexed text has (for length normalisation in ranking).
    #[serde(rename = "l")]
    pub length: u32,
}
impl JsonValue for Posting {}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub words: Vec<String>,
}
impl JsonValue for DirectoryEntry {}

/// The tokens of a text, in order, repeats kept.
pub fn words(text: &str) -> Vec<String> {
    text.unicode_words()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| w.to_lowercase().chars().take(MAX_TOKEN_CHARS).collect())
        .collect()
}

/// The tokens of the user directory: words, also split where a word holds other characters
/// than letters and digits (UAX #29 keeps `alice:example.org` together), so that the parts of a
/// user ID are words of their own.
pub fn directory_words(text: &str) -> Vec<String> {
    words(text)
        .iter()
        .flat_map(|word| word.split(|c: char| !c.is_alphanumeric()).map(str::to_owned).collect::<Vec<_>>())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The tokens of a user: the words of the user ID (`@alice-1:example.org` gives `alice`, `1`,
/// `example`, `org`) and of the global display name, each once.
pub fn user_words(user_id: &str, display_name: Option<&str>) -> Vec<String> {
    let mut out = directory_words(user_id);
    out.extend(display_name.map(directory_words).unwrap_or_default());
    out.sort();
    out.dedup();
    out
}

/// The keys of the user directory for a user's words: the words themselves or, with encryption
/// at rest, the keyed hashes ([`Db::term`]) of every prefix of each word, so that prefix search
/// still works on hashes (at the cost of one row per prefix).
pub fn directory_keys(db: &Db, words: &[String]) -> Vec<String> {
    if !db.hashes_terms() {
        return words.to_vec();
    }
    let mut keys: Vec<String> = words
        .iter()
        .flat_map(|word| word.char_indices().map(|(i, c)| db.term(&word[..i + c.len_utf8()])).collect::<Vec<_>>())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The indexed text of an event: `content.body` of `m.room.message`, `content.name` of
/// `m.room.name`, `content.topic` of `m.room.topic` (as Synapse indexes them). `None` for
/// events with nothing to index.
fn indexed_text(kind: &str, content: &serde_json::value::RawValue) -> Option<(u8, String)> {
    let (field, key) = match kind {
        "m.room.message" => (FIELD_BODY, "body"),
        "m.room.name" => (FIELD_NAME, "name"),
        "m.room.topic" => (FIELD_TOPIC, "topic"),
        _ => return None,
    };
    let content: serde_json::Map<String, serde_json::Value> = serde_json::from_str(content.get()).ok()?;
    Some((field, content.get(key)?.as_str()?.to_owned()))
}

/// The postings of an event (token and posting, without the event's short id, which the
/// caller fills in): empty for an event with nothing to index.
pub fn event_postings(kind: &str, content: &serde_json::value::RawValue, event: u64) -> Vec<(String, Posting)> {
    let Some((field, text)) = indexed_text(kind, content) else { return Vec::new() };
    let tokens = words(&text);
    let length = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let mut counts: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
    for token in tokens {
        if counts.len() >= MAX_TOKENS_PER_EVENT && !counts.contains_key(&token) {
            continue;
        }
        *counts.entry(token).or_default() += 1;
    }
    counts.into_iter().map(|(token, count)| (token, Posting { event, fields: field, count, length })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_unicode_words() {
        assert_eq!(words("Hello, World! It's 4pm — naïve café"), ["hello", "world", "it's", "4pm", "naïve", "café"]);
        assert_eq!(words("...!!"), Vec::<String>::new());
    }

    #[test]
    fn user_words_cover_id_and_name() {
        assert_eq!(user_words("@user-1-alice:hs1", Some("Alice Cooper")), ["1", "alice", "cooper", "hs1", "user"]);
        assert_eq!(directory_words("@user-1-alice:hs1.example"), ["user", "1", "alice", "hs1", "example"]);
    }

    #[test]
    fn postings_count_repeats() {
        let content =
            serde_json::value::to_raw_value(&serde_json::json!({"body": "a b a", "msgtype": "m.text"})).expect("json");
        let postings = event_postings("m.room.message", &content, 7);
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[0].0, "a");
        assert_eq!(postings[0].1.count, 2);
        assert_eq!(postings[0].1.length, 3);
        assert!(event_postings("m.room.member", &content, 7).is_empty());
    }
}
