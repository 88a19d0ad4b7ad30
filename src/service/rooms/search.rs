//! Server-side search of room events (`POST /search`, `room_events`): the inverted index kept
//! in step with the event writer, and the query over it.
//!
//! - **Index** (`SEARCH_POSTINGS`, see `storage/search_tables.rs` for the tokenizer): one row
//!   per (room, token, stream position) of every timeline event with searchable text, written
//!   in the event's own batch by [`index_event`] (called from `accept.rs`). A redaction by the
//!   event's own sender removes the event's rows in the redaction's batch; other redactions are
//!   only valid if the sender has the power, which is judged when events are served, so a
//!   redacted event is also dropped at query time (its served content no longer has the text).
//! - **Query**: the rooms are the filter's `rooms` (else every room the user has a membership
//!   in) with their predecessors (`m.room.create`'s `predecessor`, followed through upgrades),
//!   minus `not_rooms`. Per room, the newest [`MAX_POSTINGS`] rows of each search term are read
//!   (at most [`MAX_ROWS`] per query) and intersected: an event matches when it holds every
//!   term (in one of the requested keys); the rarest term's rows are the candidates, and a
//!   term whose rows were cut short is looked up per candidate. Matches are ordered by stream position (`recent`) or
//!   by rank, then checked, at most [`MAX_CHECKED`] of them, for history visibility (the rule
//!   `/messages` uses), redaction and the filter's senders and types. `count` is the number of
//!   matches that pass.
//! - **Rank** (BM25-lite): the sum over the terms of `idf × tf·(k1+1) / (tf + k1·(1 − b +
//!   b·len/avglen))` with `k1 = 1.2`, `b = 0.75`, an average length of [`AVERAGE_LENGTH`] words
//!   and `idf = ln(1 + CORPUS / df)`, `df` being the term's rows in the room (capped) and
//!   [`CORPUS`] a fixed stand-in for the room's size; ties go to the newer event.
//! - **Paging**: `next_batch` is `r<position>` for `recent` (the next page holds older events
//!   than that position, so new messages never shift it) and `k<offset>` for `rank`. It is
//!   given whenever a page is full.

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;

use super::{Pdu, RoomCore, Rooms, read::StoredEvent, read::VisibilityMemo};
use crate::{
    Error, Result,
    storage::{
        Batch, Db, ScanDirection,
        room_tables::{EVENT_META, USER_ROOMS},
        search_tables::{FIELD_BODY, FIELD_NAME, FIELD_TOPIC, Posting, SEARCH_POSTINGS, event_postings, words},
    },
};

/// Index rows read per (room, term): the newest ones.
const MAX_POSTINGS: usize = 5_000;
/// Index rows read per query in all, across rooms and terms: once spent, the remaining rooms
/// are not searched.
const MAX_ROWS: usize = 100_000;
/// Matches checked for visibility, redaction and filters per query (and so the largest count).
const MAX_CHECKED: usize = 1_000;
/// Distinct words one search may hold.
const MAX_TERMS: usize = 16;
/// Rooms searched per query, predecessors included.
const MAX_ROOMS: usize = 500;
/// Predecessors followed from one room.
const MAX_PREDECESSORS: usize = 16;
/// Ranking constants (see the module documentation).
const K1: f64 = 1.2;
const B: f64 = 0.75;
const AVERAGE_LENGTH: f64 = 12.0;
const CORPUS: f64 = 10_000.0;

/// Adds a timeline event's postings to the index, in the event's own batch.
pub(super) fn index_event(
    db: &Db,
    batch: &mut Batch,
    short_room: u64,
    position: u64,
    short_event: u64,
    pdu: &Pdu,
) -> Result<()> {
    for (token, posting) in event_postings(&pdu.kind.to_string(), &pdu.content, short_event) {
        batch.put(&SEARCH_POSTINGS, &(short_room, db.term(&token), position), &posting)?;
    }
    Ok(())
}

/// Removes an event's postings (it was redacted by its sender), in the redaction's batch.
pub(super) fn unindex_event(db: &Db, batch: &mut Batch, short_event: u64, pdu: &Pdu) -> Result<()> {
    let Some(meta) = EVENT_META.get(db, &short_event)? else { return Ok(()) };
    let Some(position) = meta.position else { return Ok(()) };
    for (token, _) in event_postings(&pdu.kind.to_string(), &pdu.content, short_event) {
        batch.delete(&SEARCH_POSTINGS, &(meta.room, db.term(&token), position));
    }
    Ok(())
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    Recent,
    Rank,
}

/// A search of room events.
pub struct SearchQuery {
    pub user: OwnedUserId,
    pub search_term: String,
    /// Which keys to search: `content.body`, `content.name`, `content.topic` (all when empty).
    pub keys: Vec<String>,
    pub rooms: Option<Vec<OwnedRoomId>>,
    pub not_rooms: Vec<OwnedRoomId>,
    /// The rest of the client's filter (senders, types).
    pub keep: Box<dyn Fn(&Pdu) -> bool + Send>,
    pub order: SearchOrder,
    /// The `next_batch` of the previous page.
    pub from: Option<String>,
    pub limit: usize,
}

/// One result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub event: StoredEvent,
    pub rank: f64,
}

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Matches the user may see, on every page.
    pub count: usize,
    pub next_batch: Option<String>,
    /// The words searched for, for clients to highlight.
    pub highlights: Vec<String>,
}

/// Where a page starts.
enum Cursor {
    Start,
    /// Events older than this stream position (`recent`).
    Before(u64),
    /// After this many results (`rank`).
    Offset(usize),
}

fn parse_cursor(from: Option<&str>, order: SearchOrder) -> Result<Cursor> {
    let Some(from) = from else { return Ok(Cursor::Start) };
    let invalid = || Error::invalid_param("Invalid next_batch");
    match (order, from.split_at_checked(1)) {
        (SearchOrder::Recent, Some(("r", n))) => Ok(Cursor::Before(n.parse().map_err(|_| invalid())?)),
        (SearchOrder::Rank, Some(("k", n))) => Ok(Cursor::Offset(n.parse().map_err(|_| invalid())?)),
        _ => Err(invalid()),
    }
}

fn field_mask(keys: &[String]) -> Result<u8> {
    if keys.is_empty() {
        return Ok(FIELD_BODY | FIELD_NAME | FIELD_TOPIC);
    }
    keys.iter().try_fold(0, |mask, key| match key.as_str() {
        "content.body" => Ok(mask | FIELD_BODY),
        "content.name" => Ok(mask | FIELD_NAME),
        "content.topic" => Ok(mask | FIELD_TOPIC),
        other => Err(Error::bad_json(format!("Unknown search key {other}"))),
    })
}

/// An event holding every term.
struct Candidate {
    short_room: u64,
    position: u64,
    short_event: u64,
    score: f64,
}

#[derive(Deserialize)]
struct CreateContent {
    predecessor: Option<Predecessor>,
}

#[derive(Deserialize)]
struct Predecessor {
    room_id: OwnedRoomId,
}

impl Rooms {
    /// Searches room events; see the module documentation.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage> {
        self.run(move |core, db| core.search(db, query)).await
    }
}

impl RoomCore {
    fn search(&self, db: &Db, query: SearchQuery) -> Result<SearchPage> {
        let cursor = parse_cursor(query.from.as_deref(), query.order)?;
        let fields = field_mask(&query.keys)?;
        let mut terms = words(&query.search_term);
        terms.sort();
        terms.dedup();
        if terms.len() > MAX_TERMS {
            return Err(Error::bad_json(format!("At most {MAX_TERMS} words can be searched for at once")));
        }
        let mut page = SearchPage { highlights: terms.clone(), ..SearchPage::default() };
        if terms.is_empty() {
            return Ok(page);
        }
        let mut candidates = Vec::new();
        let mut budget = MAX_ROWS;
        for short_room in self.search_rooms(db, &query)? {
            if budget == 0 {
                break;
            }
            self.room_candidates(db, short_room, (&terms, fields), &mut budget, &mut candidates)?;
        }
        match query.order {
            SearchOrder::Recent => candidates.sort_by_key(|c| std::cmp::Reverse(c.position)),
            SearchOrder::Rank => {
                candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.position.cmp(&a.position)));
            }
        }

        let mut memos: HashMap<u64, VisibilityMemo> = HashMap::new();
        let mut rules = HashMap::new();
        for candidate in candidates.into_iter().take(MAX_CHECKED) {
            let Some(meta) = EVENT_META.get(db, &candidate.short_event)? else { continue };
            let memo = memos.entry(candidate.short_room).or_default();
            if !meta.is_served() || !self.can_see_with(db, &query.user, candidate.short_room, &meta, memo)? {
                continue;
            }
            let room_rules = match rules.get(&candidate.short_room) {
                Some(known) => known,
                None => rules.entry(candidate.short_room).or_insert(self.rules_of_room(db, candidate.short_room)?),
            };
            // An erased sender's event, pruned for this user, has no text to match either.
            let pdu = self.served_event(db, &query.user, candidate.short_event, &meta, room_rules, memo)?;
            // Redacted (by a redaction judged valid when serving): its text is gone.
            if event_postings(&pdu.kind.to_string(), &pdu.content, 0).is_empty() || !(query.keep)(&pdu) {
                continue;
            }
            let index = page.count;
            page.count += 1;
            let in_page = match cursor {
                Cursor::Start => true,
                Cursor::Before(position) => candidate.position < position,
                Cursor::Offset(offset) => index >= offset,
            };
            if in_page && page.hits.len() < query.limit {
                page.hits.push(SearchHit {
                    event: StoredEvent { pdu, meta, short: candidate.short_event },
                    rank: candidate.score,
                });
            }
        }
        if page.hits.len() >= query.limit.max(1) {
            page.next_batch = match (query.order, cursor) {
                (SearchOrder::Recent, _) => {
                    page.hits.last().and_then(|h| h.event.meta.position).map(|p| format!("r{p}"))
                }
                (SearchOrder::Rank, Cursor::Offset(offset)) => Some(format!("k{}", offset + page.hits.len())),
                (SearchOrder::Rank, _) => Some(format!("k{}", page.hits.len())),
            };
        }
        Ok(page)
    }

    /// The rooms to search (short ids): the filter's or the user's, with their predecessors,
    /// without `not_rooms`.
    fn search_rooms(&self, db: &Db, query: &SearchQuery) -> Result<Vec<u64>> {
        let rooms: Vec<OwnedRoomId> = match &query.rooms {
            Some(rooms) => rooms.clone(),
            None => USER_ROOMS
                .scan_prefix(db, &(query.user.clone(),))?
                .into_iter()
                .filter(|(_, m)| !m.forgotten)
                .map(|((_, room), _)| room)
                .collect(),
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for room in rooms {
            let mut next = Some(room);
            let mut hops = 0;
            while let Some(room) = next.take() {
                if out.len() >= MAX_ROOMS || hops > MAX_PREDECESSORS || !seen.insert(room.clone()) {
                    break;
                }
                hops += 1;
                let Some(short_room) = self.interner.short_room(db, &room)? else { break };
                if !query.not_rooms.contains(&room) {
                    out.push(short_room);
                }
                next = self
                    .current_state_event(db, short_room, "m.room.create", "")?
                    .and_then(|pdu| serde_json::from_str::<CreateContent>(pdu.content.get()).ok())
                    .and_then(|content| content.predecessor)
                    .map(|p| p.room_id);
            }
        }
        Ok(out)
    }

    /// The events of one room holding every term, with their scores. The rarest term's rows
    /// (of a term whose rows were all read, if any) are the candidates; another term whose rows were cut by the limits is looked up per
    /// candidate, so an older event holding a rare and a frequent word is still found.
    fn room_candidates(
        &self,
        db: &Db,
        short_room: u64,
        (terms, fields): (&[String], u8),
        budget: &mut usize,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        // Per term: its rows by position, and whether that is all of them.
        let mut lists: Vec<(&String, HashMap<u64, Posting>, bool)> = Vec::with_capacity(terms.len());
        for term in terms {
            let limit = MAX_POSTINGS.min(*budget);
            // The term as the index keys it (a keyed hash with encryption at rest).
            let key_term = db.term(term);
            let rows = SEARCH_POSTINGS.scan_from(
                db,
                &(short_room, key_term.clone(), u64::MAX),
                ScanDirection::Reverse,
                limit,
                |(room, token, _)| *room == short_room && *token == key_term,
            )?;
            *budget -= rows.len();
            let complete = rows.len() < limit;
            let list: HashMap<u64, Posting> =
                rows.into_iter().filter(|(_, p)| p.fields & fields != 0).map(|((_, _, pos), p)| (pos, p)).collect();
            if list.is_empty() && complete {
                return Ok(());
            }
            lists.push((term, list, complete));
        }
        lists.sort_by_key(|(_, list, complete)| (!complete, list.len()));
        let Some(((_, smallest, _), others)) = lists.split_first() else { return Ok(()) };
        for (position, posting) in smallest {
            let mut score = bm25(posting, smallest.len());
            let mut all = true;
            for (term, list, complete) in others {
                let found = match list.get(position) {
                    Some(p) => Some(*p),
                    None if !complete => SEARCH_POSTINGS
                        .get(db, &(short_room, db.term(term), *position))?
                        .filter(|p| p.fields & fields != 0),
                    None => None,
                };
                match found {
                    Some(p) => score += bm25(&p, list.len()),
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                out.push(Candidate { short_room, position: *position, short_event: posting.event, score });
            }
        }
        Ok(())
    }
}

/// One term's share of an event's rank (see the module documentation).
fn bm25(posting: &Posting, document_frequency: usize) -> f64 {
    let tf = f64::from(posting.count);
    let length = f64::from(posting.length);
    let idf = (1.0 + CORPUS / document_frequency.max(1) as f64).ln();
    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / AVERAGE_LENGTH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert!(matches!(parse_cursor(Some("r42"), SearchOrder::Recent), Ok(Cursor::Before(42))));
        assert!(matches!(parse_cursor(Some("k10"), SearchOrder::Rank), Ok(Cursor::Offset(10))));
        assert!(parse_cursor(Some("k10"), SearchOrder::Recent).is_err());
        assert!(parse_cursor(Some("r"), SearchOrder::Recent).is_err());
        assert!(parse_cursor(Some("é"), SearchOrder::Rank).is_err());
    }

    #[test]
    fn rarer_and_repeated_terms_rank_higher() {
        let posting = |count, length| Posting { event: 1, fields: FIELD_BODY, count, length };
        assert!(bm25(&posting(1, 5), 10) > bm25(&posting(1, 5), 1000));
        assert!(bm25(&posting(3, 5), 10) > bm25(&posting(1, 5), 10));
        assert!(bm25(&posting(1, 3), 10) > bm25(&posting(1, 30), 10));
    }
}
