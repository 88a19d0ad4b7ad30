//! Which rooms a request covers and in which order: the user's rooms (joined, invited,
//! knocked, and those left since the connection's last answer) with the facts lists filter on,
//! ordered by bump stamp (newest first); each list's filters; the rooms within its ranges.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedRoomId, RoomId, UInt, UserId, api::client::sync::sync_events::v5::request::ListFilters};

use super::{Context, ExtraFilters};
use crate::{
    Result,
    service::{
        Services,
        rooms::sliding_read::{ListRooms, PreviousListRooms, SlidingFacts},
    },
    storage::room_tables::UserMembership,
};

/// One of the user's rooms, with what lists are filtered and ordered by.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub room_id: OwnedRoomId,
    /// `join`, `invite`, `knock`, `leave` or `ban`.
    pub membership: String,
    /// The stream position of the user's membership event.
    pub membership_position: u64,
    pub facts: SlidingFacts,
    pub is_dm: bool,
    /// What the room is ordered by: its newest bump event, or for an invite or knock the
    /// membership event.
    pub bump_stamp: u64,
    /// The invite or knock this server holds for a room it is not in (over federation).
    pub out_of_band: bool,
}

/// The rooms `m.direct` names, whoever with.
pub(crate) async fn direct_rooms(services: &Services, user: &UserId) -> Result<HashSet<OwnedRoomId>> {
    let Some(raw) = services.account_data.get(user, None, "m.direct").await? else { return Ok(HashSet::new()) };
    let content: HashMap<String, Vec<String>> = serde_json::from_str(raw.get()).unwrap_or_default();
    Ok(content.into_values().flatten().filter_map(|room| OwnedRoomId::try_from(room).ok()).collect())
}

/// The user's rooms a list may show, newest bump first, and the rooms as read (kept with the
/// answer, so the next one reads only the rooms that changed).
pub(crate) async fn candidates(ctx: &Context<'_>) -> Result<(Vec<Candidate>, Arc<ListRooms>)> {
    let services = ctx.services;
    // A leave is shown once to a connection that knew the room, then the room goes.
    let sent: HashMap<OwnedRoomId, String> = ctx
        .since
        .map(|since| since.rooms.iter().map(|(room, sent)| (room.clone(), sent.membership.clone())).collect())
        .unwrap_or_default();
    let keep = move |room_id: &RoomId, record: &UserMembership| match record.membership.as_str() {
        "join" | "invite" | "knock" => true,
        "leave" | "ban" => !record.forgotten && sent.get(room_id).is_some_and(|sent| *sent != record.membership),
        _ => false,
    };
    let previous = ctx.since.map(|since| PreviousListRooms { at: since.token.events, rooms: since.list_rooms.clone() });
    let facts = services.sliding_sync.facts.clone();
    let read = Arc::new(services.rooms.sliding_rooms(ctx.user, ctx.now.events, previous, keep, facts).await?);
    let mut out = Vec::with_capacity(read.len());
    for (room_id, room) in read.iter() {
        let record = &room.membership;
        let mut is_dm = ctx.direct.contains(room_id);
        if record.membership == "invite" {
            let inviter = room.inviter.as_deref();
            if inviter.is_some_and(|inviter| ctx.ignored.iter().any(|ignored| ignored.as_str() == inviter)) {
                continue;
            }
            is_dm |= room.invite_direct;
        }
        let bump_stamp = match record.membership.as_str() {
            "invite" | "knock" => record.position,
            _ => room.facts.bump_stamp.unwrap_or(record.position),
        };
        out.push(Candidate {
            room_id: room_id.clone(),
            membership: record.membership.clone(),
            membership_position: record.position,
            facts: room.facts.clone(),
            is_dm,
            bump_stamp,
            out_of_band: room.out_of_band,
        });
    }
    out.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
    Ok((out, read))
}

/// Tags per room, read once per request when a list filters on them.
#[derive(Default)]
pub(crate) struct TagCache(HashMap<OwnedRoomId, HashSet<String>>);

impl TagCache {
    async fn tags(&mut self, ctx: &Context<'_>, room: &RoomId) -> Result<HashSet<String>> {
        if let Some(tags) = self.0.get(room) {
            return Ok(tags.clone());
        }
        let tags: HashSet<String> =
            ctx.services.tags.get(&ctx.services.account_data, ctx.user, room).await?.keys().cloned().collect();
        self.0.insert(room.to_owned(), tags.clone());
        Ok(tags)
    }
}

/// The candidates one list shows, in order.
pub(crate) async fn apply(
    ctx: &Context<'_>,
    candidates: &[Candidate],
    filters: Option<&ListFilters>,
    extra: &ExtraFilters,
    tags: &mut TagCache,
) -> Result<Vec<OwnedRoomId>> {
    let spaces: Option<HashSet<OwnedRoomId>> = if extra.spaces.is_empty() {
        None
    } else {
        let mut children = HashSet::new();
        for space in extra.spaces.iter().filter_map(|s| OwnedRoomId::try_from(s.as_str()).ok()) {
            // Only spaces the user is in say which rooms they hold.
            if candidates.iter().any(|c| c.room_id == space && c.membership == "join") {
                children.extend(ctx.services.rooms.space_children(&space).await?);
            }
        }
        Some(children)
    };
    let mut out = Vec::new();
    for candidate in candidates {
        if let Some(filters) = filters {
            if filters.is_dm.is_some_and(|dm| dm != candidate.is_dm) {
                continue;
            }
            if filters.is_encrypted.is_some_and(|encrypted| encrypted != candidate.facts.encrypted) {
                continue;
            }
            if filters.is_invite.is_some_and(|invite| invite != (candidate.membership == "invite")) {
                continue;
            }
            let room_type = candidate.facts.room_type.as_deref();
            // An invite over federation: its type is unknown, so type filters let it through.
            if !candidate.out_of_band {
                if !filters.room_types.is_empty() && !filters.room_types.iter().any(|t| t.as_str() == room_type) {
                    continue;
                }
                if filters.not_room_types.iter().any(|t| t.as_str() == room_type) {
                    continue;
                }
            }
        }
        if spaces.as_ref().is_some_and(|children| !children.contains(&candidate.room_id)) {
            continue;
        }
        if !extra.tags.is_empty() || !extra.not_tags.is_empty() {
            let room_tags = tags.tags(ctx, &candidate.room_id).await?;
            if extra.not_tags.iter().any(|tag| room_tags.contains(tag)) {
                continue;
            }
            if !extra.tags.is_empty() && !extra.tags.iter().any(|tag| room_tags.contains(tag)) {
                continue;
            }
        }
        out.push(candidate.room_id.clone());
    }
    Ok(out)
}

/// The rooms within `ranges` (inclusive, as the MSC has them), each once, in list order.
pub(crate) fn in_ranges(ordered: &[OwnedRoomId], ranges: &[(UInt, UInt)]) -> Vec<OwnedRoomId> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (start, end) in ranges {
        let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
        let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
        if start > end || start >= ordered.len() {
            continue;
        }
        for room in &ordered[start..=end.min(ordered.len() - 1)] {
            if seen.insert(room.clone()) {
                out.push(room.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ruma::{OwnedRoomId, UInt};

    use super::in_ranges;

    #[test]
    fn ranges_are_inclusive_and_clamped() {
        let rooms: Vec<OwnedRoomId> =
            (0..5).map(|i| OwnedRoomId::try_from(format!("!r{i}:x")).expect("valid room ID")).collect();
        let r = |a: u32, b: u32| (UInt::from(a), UInt::from(b));
        assert_eq!(in_ranges(&rooms, &[r(0, 1)]), rooms[0..2].to_vec());
        assert_eq!(in_ranges(&rooms, &[r(3, 99)]), rooms[3..].to_vec());
        assert_eq!(in_ranges(&rooms, &[r(0, 1), r(1, 2)]), rooms[0..3].to_vec());
        assert!(in_ranges(&rooms, &[r(7, 9), r(2, 1)]).is_empty());
    }
}
