//! The public room directory (`/publicRooms`): the published rooms that can be joined or read
//! by anyone (as Synapse lists them), each summarised from its current state, filtered by a
//! search term and room types, ordered by joined members, and paged by offset tokens.

use ruma::{OwnedRoomId, RoomId};
use serde_json::Value;

use super::{Pdu, Rooms, membership_of};
use crate::{Error, Result};

/// Largest page served.
pub const MAX_PUBLIC_ROOMS_LIMIT: usize = 500;

/// One room of the directory, as its current state describes it.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub num_joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: String,
    pub room_type: Option<String>,
}

/// What a directory query asks for.
#[derive(Debug, Clone, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<usize>,
    pub since: Option<String>,
    /// Case-insensitive search in name, topic and canonical alias.
    pub search_term: Option<String>,
    /// Room types to keep (`None` stands for rooms without a type); empty keeps all.
    pub room_types: Vec<Option<String>>,
    /// Rooms listed besides the published ones (application services' network lists).
    pub extra_rooms: Vec<OwnedRoomId>,
    /// List only `extra_rooms` (one network's list), not the published rooms.
    pub only_extra: bool,
}

/// A page of the directory.
#[derive(Debug, Clone)]
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoom>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: u64,
}

fn string_field(content: &Value, field: &str) -> Option<String> {
    content.get(field).and_then(Value::as_str).map(str::to_owned)
}

impl PublicRoom {
    /// The entry a room's current state describes.
    pub fn from_state(room_id: &RoomId, state: &[Pdu]) -> Self {
        let mut room = PublicRoom {
            room_id: room_id.to_owned(),
            name: None,
            topic: None,
            canonical_alias: None,
            avatar_url: None,
            num_joined_members: 0,
            world_readable: false,
            guest_can_join: false,
            join_rule: "invite".to_owned(),
            room_type: None,
        };
        for pdu in state {
            let content = pdu.content_value();
            match (pdu.kind.to_string().as_str(), pdu.state_key.as_deref()) {
                ("m.room.member", _) if membership_of(pdu) == "join" => room.num_joined_members += 1,
                ("m.room.name", Some("")) => room.name = string_field(&content, "name").filter(|n| !n.is_empty()),
                ("m.room.topic", Some("")) => room.topic = string_field(&content, "topic").filter(|t| !t.is_empty()),
                ("m.room.canonical_alias", Some("")) => room.canonical_alias = string_field(&content, "alias"),
                ("m.room.avatar", Some("")) => {
                    room.avatar_url = string_field(&content, "url").filter(|u| !u.is_empty())
                }
                ("m.room.history_visibility", Some("")) => {
                    room.world_readable =
                        string_field(&content, "history_visibility").as_deref() == Some("world_readable");
                }
                ("m.room.guest_access", Some("")) => {
                    room.guest_can_join = string_field(&content, "guest_access").as_deref() == Some("can_join");
                }
                ("m.room.join_rules", Some("")) => {
                    room.join_rule = string_field(&content, "join_rule").unwrap_or_else(|| "invite".to_owned());
                }
                ("m.room.create", Some("")) => room.room_type = string_field(&content, "type"),
                _ => {}
            }
        }
        room
    }

    fn matches(&self, query: &PublicRoomsQuery) -> bool {
        if !query.room_types.is_empty() && !query.room_types.contains(&self.room_type) {
            return false;
        }
        let Some(term) = query.search_term.as_deref().map(str::trim).filter(|t| !t.is_empty()) else { return true };
        let term = term.to_lowercase();
        [&self.name, &self.topic, &self.canonical_alias]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(&term))
    }

    /// Synapse lists published rooms that can be joined or knocked on, or read, by anyone.
    fn listable(&self) -> bool {
        matches!(self.join_rule.as_str(), "public" | "knock" | "knock_restricted") || self.world_readable
    }
}

/// `since` tokens are offsets into the ordered list.
fn parse_since(since: &str) -> Result<usize> {
    since.parse().map_err(|_| Error::invalid_param("Invalid `since` token"))
}

impl Rooms {
    /// A room's directory entry, from its current state.
    pub async fn public_room_summary(&self, room_id: &RoomId) -> Result<Option<PublicRoom>> {
        let state = self.current_state(room_id).await?;
        Ok((!state.is_empty()).then(|| PublicRoom::from_state(room_id, &state)))
    }

    /// A page of the public room directory.
    pub async fn public_rooms(&self, query: &PublicRoomsQuery) -> Result<PublicRoomsPage> {
        let offset = query.since.as_deref().map(parse_since).transpose()?.unwrap_or(0);
        let limit = query.limit.unwrap_or(MAX_PUBLIC_ROOMS_LIMIT).clamp(1, MAX_PUBLIC_ROOMS_LIMIT);
        let mut rooms = Vec::new();
        let mut total = 0;
        let mut listed = if query.only_extra { Vec::new() } else { self.published_rooms().await? };
        listed.extend(query.extra_rooms.iter().cloned());
        listed.sort();
        listed.dedup();
        for room_id in listed {
            let Some(room) = self.public_room_summary(&room_id).await? else { continue };
            if !room.listable() {
                continue;
            }
            total += 1;
            if room.matches(query) {
                rooms.push(room);
            }
        }
        // Largest rooms first; the room ID keeps the order stable between pages.
        rooms.sort_by(|a, b| b.num_joined_members.cmp(&a.num_joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
        let next_batch = (offset.saturating_add(limit) < rooms.len()).then(|| (offset + limit).to_string());
        let prev_batch = (offset > 0).then(|| offset.saturating_sub(limit).to_string());
        let chunk = rooms.into_iter().skip(offset).take(limit).collect();
        Ok(PublicRoomsPage { chunk, next_batch, prev_batch, total_room_count_estimate: total })
    }
}
