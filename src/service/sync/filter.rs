//! Sync filters: resolving the `filter` parameter (inline JSON or the ID of a stored filter)
//! and the matching rules of the spec's filters: event type patterns with `*` wildcards, senders,
//! rooms, and the timeline limit.

use ruma::{
    RoomId, UserId,
    api::client::{
        filter::{Filter, FilterDefinition, RoomEventFilter, UrlFilter},
        sync::sync_events::v3,
    },
};

use crate::{Error, Result, service::account_data::AccountData};

/// Timeline events per room when the filter names no limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The largest timeline limit honoured.
const MAX_TIMELINE_LIMIT: usize = 500;

/// The filter a sync request names, or the empty filter.
pub async fn resolve(
    account_data: &AccountData,
    user: &UserId,
    filter: Option<v3::Filter>,
) -> Result<FilterDefinition> {
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(v3::Filter::FilterDefinition(definition)) => Ok(definition),
        Some(v3::Filter::FilterId(id)) => {
            if id.trim_start().starts_with('{') {
                return Err(Error::invalid_param("The filter is not a valid filter definition"));
            }
            let unknown = || Error::invalid_param("Unknown filter ID");
            let id: u64 = id.parse().map_err(|_| unknown())?;
            let json = account_data.filter(user, id).await?.ok_or_else(unknown)?;
            serde_json::from_str(json.get()).map_err(|e| Error::internal(format!("stored filter is invalid: {e}")))
        }
        Some(_) => Err(Error::invalid_param("Unsupported filter")),
    }
}

/// The timeline limit of a filter.
pub fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter.limit.map_or(DEFAULT_TIMELINE_LIMIT, |limit| {
        usize::try_from(u64::from(limit)).unwrap_or(MAX_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT)
    })
}

/// An event type pattern: `*` matches any sequence of characters.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    let (pattern, kind) = (pattern.as_bytes(), kind.as_bytes());
    let (mut p, mut k) = (0, 0);
    // Where the last `*` was, and the position in `kind` it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while k < kind.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, k));
            p += 1;
        } else if p < pattern.len() && pattern[p] == kind[k] {
            p += 1;
            k += 1;
        } else if let Some((star_p, star_k)) = star {
            p = star_p + 1;
            k = star_k + 1;
            star = Some((star_p, star_k + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

fn types_allow(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    types.is_none_or(|types| types.iter().any(|t| type_matches(t, kind)))
        && !not_types.iter().any(|t| type_matches(t, kind))
}

/// Whether a room event filter accepts an event of `kind` from `sender`.
pub fn room_event_allowed(filter: &RoomEventFilter, kind: &str, sender: &UserId) -> bool {
    types_allow(filter.types.as_deref(), &filter.not_types, kind)
        && filter.senders.as_ref().is_none_or(|senders| senders.iter().any(|s| s == sender))
        && !filter.not_senders.iter().any(|s| s == sender)
}

/// Whether a room event filter's `contains_url` accepts an event with this content: `true`
/// keeps only events whose content has a string `url`, `false` only those without (as Synapse
/// reads it).
pub fn url_allowed(filter: &RoomEventFilter, content: &serde_json::value::RawValue) -> bool {
    let Some(wanted) = filter.url_filter else { return true };
    #[derive(serde::Deserialize)]
    struct Url<'a> {
        #[serde(borrow)]
        url: Option<&'a serde_json::value::RawValue>,
    }
    let has_url = serde_json::from_str::<Url<'_>>(content.get())
        .ok()
        .and_then(|c| c.url)
        .is_some_and(|url| url.get().starts_with('"'));
    has_url == (wanted == UrlFilter::EventsWithUrl)
}

/// Whether a room event filter's event types accept `kind` (for account data, where there is
/// no sender).
pub fn room_event_type_allowed(filter: &RoomEventFilter, kind: &str) -> bool {
    types_allow(filter.types.as_deref(), &filter.not_types, kind)
}

/// Whether a room event filter's own room lists accept `room`.
pub fn room_event_room_allowed(filter: &RoomEventFilter, room: &RoomId) -> bool {
    filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room))
        && !filter.not_rooms.iter().any(|r| r == room)
}

/// Whether the filter's room lists accept `room` at all.
pub fn room_allowed(filter: &FilterDefinition, room: &RoomId) -> bool {
    filter.room.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room))
        && !filter.room.not_rooms.iter().any(|r| r == room)
}

/// Whether a (global) account data filter accepts `kind`.
pub fn account_data_allowed(filter: &Filter, kind: &str) -> bool {
    types_allow(filter.types.as_deref(), &filter.not_types, kind)
}

/// Whether a (global) filter's sender lists accept `sender` (presence).
pub fn senders_allowed(filter: &Filter, sender: &UserId) -> bool {
    filter.senders.as_ref().is_none_or(|senders| senders.iter().any(|s| s == sender))
        && !filter.not_senders.iter().any(|s| s == sender)
}

#[cfg(test)]
mod tests {
    use super::type_matches;

    #[test]
    fn wildcards() {
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
        assert!(type_matches("m.room.*", "m.room.name"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("m.*.name", "m.room.name"));
        assert!(type_matches("*name", "m.room.name"));
        assert!(!type_matches("m.room.*", "m.call.invite"));
        assert!(!type_matches("m.*.topic", "m.room.name"));
        assert!(type_matches("m.**", "m.x"));
    }
}
