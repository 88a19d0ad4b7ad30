//! Spaces: the rooms under a space (`/hierarchy`, walked depth first as Synapse does) and one
//! room's summary (`/room_summary`, MSC3266), for rooms this server knows. A room is shown to a
//! user who is in it or invited, or who could join or peek: public, knockable, world-readable,
//! or restricted to a room the user is in. Rooms this server does not know are asked of the
//! servers their `m.space.child` link names (`via`), through the [`RemoteFetch`] the caller
//! gives; other servers ask this one through [`Rooms::hierarchy_for_server`].

use std::{collections::HashSet, future::Future, pin::Pin};

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UInt, UserId,
    events::{
        room::{encryption::RoomEncryptionEventContent, join_rules::RoomJoinRulesEventContent},
        space::child::HierarchySpaceChildEvent,
    },
    room::{JoinRuleSummary, RoomSummary, RoomType},
    serde::Raw,
};
use serde_json::{Value, json};

use super::{Pdu, Rooms, membership_of, public::PublicRoom};
use crate::{Error, Result};

/// Rooms per page when the client names no limit, and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// The deepest a walk goes, and the most rooms it looks at, whatever the client asks.
const MAX_DEPTH: usize = 50;
const MAX_ROOMS_WALKED: usize = 1_000;

/// What a `/hierarchy` request asks for.
#[derive(Debug, Clone, Default)]
pub struct HierarchyQuery {
    pub max_depth: Option<usize>,
    pub suggested_only: bool,
    pub limit: Option<usize>,
    /// The `next_batch` of the previous page: how many rooms it had shown.
    pub from: Option<String>,
}

/// One room of the hierarchy, with the links to its children when it is a space.
pub struct HierarchyRoom {
    pub summary: RoomSummary,
    pub children_state: Vec<Raw<HierarchySpaceChildEvent>>,
}

/// A room of another server as its server describes it (`/_matrix/federation/v1/hierarchy`).
pub struct RemoteRoom {
    pub summary: RoomSummary,
    pub children_state: Vec<Raw<HierarchySpaceChildEvent>>,
}

/// Asks other servers (the `via` of the link) about a room this server does not know.
pub type RemoteFetch<'a> = &'a (
        dyn Fn(OwnedRoomId, Vec<OwnedServerName>) -> Pin<Box<dyn Future<Output = Option<RemoteRoom>> + Send + 'a>>
            + Send
            + Sync
    );

/// What another server gets for a room: its summary and links, the children it may see, and
/// those it may not.
pub struct ServerHierarchy {
    pub room: HierarchyRoom,
    pub children: Vec<RoomSummary>,
    pub inaccessible_children: Vec<OwnedRoomId>,
}

pub struct HierarchyPage {
    pub rooms: Vec<HierarchyRoom>,
    pub next_batch: Option<String>,
}

/// A room as the current state tells it, with what the summary and the walk need.
struct Described {
    summary: RoomSummary,
    /// The rooms a restricted join rule names.
    allowed: Vec<OwnedRoomId>,
    is_space: bool,
    /// Valid `m.space.child` links, in the spec's order.
    children: Vec<Child>,
}

struct Child {
    room_id: OwnedRoomId,
    /// Servers to ask about the child.
    via: Vec<OwnedServerName>,
    suggested: bool,
    order: Option<String>,
    ts: u64,
    event: Value,
}

/// The spec's `order` key: at most 50 characters between U+0020 and U+007E.
fn valid_order(order: &str) -> bool {
    order.len() <= 50 && order.chars().all(|c| (' '..='~').contains(&c))
}

fn describe(room_id: &RoomId, version: Option<ruma::RoomVersionId>, state: &[Pdu]) -> Described {
    let public = PublicRoom::from_state(room_id, state);
    let mut join_rule = JoinRuleSummary::Invite;
    let mut allowed = Vec::new();
    let mut encryption = None;
    let mut children = Vec::new();
    for pdu in state {
        match (pdu.kind.to_string().as_str(), pdu.state_key.as_deref()) {
            ("m.room.join_rules", Some("")) => {
                if let Ok(content) = serde_json::from_str::<RoomJoinRulesEventContent>(pdu.content.get()) {
                    join_rule = JoinRuleSummary::from(content.join_rule);
                }
                if let JoinRuleSummary::Restricted(restricted) | JoinRuleSummary::KnockRestricted(restricted) =
                    &join_rule
                {
                    allowed = restricted.allowed_room_ids.clone();
                }
            }
            ("m.room.encryption", Some("")) => {
                encryption = serde_json::from_str::<RoomEncryptionEventContent>(pdu.content.get())
                    .ok()
                    .map(|content| content.algorithm);
            }
            ("m.space.child", Some(child)) => {
                let ts = u64::from(pdu.origin_server_ts.get());
                children.extend(child_link(child, pdu.content_value(), &json!(pdu.sender), ts));
            }
            _ => {}
        }
    }
    sort_children(&mut children);
    let mut summary = RoomSummary::new(
        room_id.to_owned(),
        join_rule,
        public.guest_can_join,
        UInt::try_from(public.num_joined_members).unwrap_or(UInt::MAX),
        public.world_readable,
    );
    summary.name = public.name;
    summary.topic = public.topic;
    summary.canonical_alias = public.canonical_alias.and_then(|alias| alias.try_into().ok());
    summary.avatar_url = public.avatar_url.map(Into::into);
    summary.room_type = public.room_type.as_deref().map(RoomType::from);
    summary.encryption = encryption;
    summary.room_version = version;
    Described { summary, allowed, is_space: public.room_type.as_deref() == Some("m.space"), children }
}

/// An `m.space.child` link, when it is a valid one (a room ID, a non-empty `via`).
fn child_link(state_key: &str, content: Value, sender: &Value, ts: u64) -> Option<Child> {
    let room_id = OwnedRoomId::try_from(state_key).ok()?;
    let via: Vec<OwnedServerName> = content["via"]
        .as_array()?
        .iter()
        .filter_map(|server| server.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
        .collect();
    if via.is_empty() {
        return None;
    }
    Some(Child {
        room_id,
        via,
        suggested: content["suggested"].as_bool().unwrap_or(false),
        order: content["order"].as_str().filter(|o| valid_order(o)).map(ToOwned::to_owned),
        ts,
        event: json!({
            "type": "m.space.child",
            "state_key": state_key,
            "content": content,
            "sender": sender,
            "origin_server_ts": ts,
        }),
    })
}

/// Children with an `order` first, by it; then by the link's age; then by room ID.
fn sort_children(children: &mut [Child]) {
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(b.order.is_none(), &b.order, b.ts, &b.room_id))
    });
}

/// A room of another server in the terms of the walk.
fn describe_remote(remote: RemoteRoom) -> Described {
    let allowed = match &remote.summary.join_rule {
        JoinRuleSummary::Restricted(restricted) | JoinRuleSummary::KnockRestricted(restricted) => {
            restricted.allowed_room_ids.clone()
        }
        _ => Vec::new(),
    };
    let mut children: Vec<Child> = remote
        .children_state
        .iter()
        .filter_map(|raw| {
            let event: Value = serde_json::from_str(raw.json().get()).ok()?;
            let ts = event["origin_server_ts"].as_u64().unwrap_or_default();
            child_link(event["state_key"].as_str()?, event["content"].clone(), &event["sender"], ts)
        })
        .collect();
    sort_children(&mut children);
    let is_space = remote.summary.room_type == Some(RoomType::Space);
    Described { summary: remote.summary, allowed, is_space, children }
}

impl Rooms {
    /// A room as its current state describes it; `None` for a room this server doesn't know.
    async fn described(&self, room_id: &RoomId) -> Result<Option<Described>> {
        let state = self.current_state(room_id).await?;
        if state.is_empty() {
            return Ok(None);
        }
        Ok(Some(describe(room_id, self.version(room_id).await?, &state)))
    }

    /// The user's membership in a room, from its current state.
    async fn current_membership(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        let event = self.state_event(room_id, &"m.room.member".into(), user.as_str()).await?;
        Ok(event.map(|pdu| membership_of(&pdu)))
    }

    /// Whether `user` (or anyone, without a user) may see the room's summary.
    async fn may_see(&self, user: Option<&UserId>, room: &Described) -> Result<bool> {
        let room_id = &room.summary.room_id;
        if let Some(user) = user
            && matches!(self.current_membership(room_id, user).await?.as_deref(), Some("join" | "invite" | "knock"))
        {
            return Ok(true);
        }
        if room.summary.world_readable
            || matches!(room.summary.join_rule, JoinRuleSummary::Public | JoinRuleSummary::Knock)
        {
            return Ok(true);
        }
        let Some(user) = user else { return Ok(false) };
        if matches!(room.summary.join_rule, JoinRuleSummary::Restricted(_) | JoinRuleSummary::KnockRestricted(_)) {
            for allowed in &room.allowed {
                if self.current_membership(allowed, user).await?.as_deref() == Some("join") {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A room's summary for `user` (anyone when `None`) and their membership, or `404` when
    /// the room is unknown or not theirs to see (the two are not told apart).
    pub async fn room_summary(&self, user: Option<&UserId>, room_id: &RoomId) -> Result<(RoomSummary, Option<String>)> {
        let not_found = || Error::not_found("Room not found, or not visible to you");
        let room = self.described(room_id).await?.ok_or_else(not_found)?;
        if !self.may_see(user, &room).await? {
            return Err(not_found());
        }
        let membership = match user {
            Some(user) => self.current_membership(room_id, user).await?,
            None => None,
        };
        Ok((room.summary, membership))
    }

    /// The rooms under a space, depth first from `root` (included), that `user` may see.
    /// `403` when the root itself is not theirs to see.
    pub async fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        query: &HierarchyQuery,
        remote: RemoteFetch<'_>,
    ) -> Result<HierarchyPage> {
        let skip: usize = match &query.from {
            Some(from) => from.parse().map_err(|_| Error::invalid_param("Invalid `from` token"))?,
            None => 0,
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let max_depth = query.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        let forbidden = || Error::forbidden("You cannot see this space");
        let root_room = match self.described(root).await? {
            Some(room) => room,
            // A space this server is not in: asked of the server in its ID, if it has one.
            None => {
                let via = root.server_name().map(|server| vec![server.to_owned()]).unwrap_or_default();
                remote(root.to_owned(), via).await.map(describe_remote).ok_or_else(forbidden)?
            }
        };
        if !self.may_see(Some(user), &root_room).await? {
            return Err(forbidden());
        }

        let mut rooms = Vec::new();
        let mut shown = 0;
        let mut seen: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
        // (room, depth); children are pushed in reverse so the first is walked first.
        let mut stack = vec![(root_room, 0usize)];
        let mut walked = 0;
        while let Some((room, depth)) = stack.pop() {
            walked += 1;
            if walked > MAX_ROOMS_WALKED {
                break;
            }
            let children: Vec<&Child> = if room.is_space {
                room.children.iter().filter(|child| child.suggested || !query.suggested_only).collect()
            } else {
                Vec::new()
            };
            let children_state: Vec<Raw<HierarchySpaceChildEvent>> = children
                .iter()
                .map(|child| Raw::new(&child.event).map(Raw::cast_unchecked))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::internal(e.to_string()))?;
            let mut next = Vec::new();
            if depth < max_depth {
                for child in &children {
                    if !seen.insert(child.room_id.clone()) {
                        continue;
                    }
                    let described = match self.described(&child.room_id).await? {
                        Some(described) => described,
                        None => match remote(child.room_id.clone(), child.via.clone()).await {
                            Some(found) => describe_remote(found),
                            None => continue,
                        },
                    };
                    if self.may_see(Some(user), &described).await? {
                        next.push((described, depth + 1));
                    }
                }
            }
            if shown >= skip {
                if rooms.len() == limit {
                    return Ok(HierarchyPage { rooms, next_batch: Some(shown.to_string()) });
                }
                rooms.push(HierarchyRoom { summary: room.summary, children_state });
            }
            shown += 1;
            stack.extend(next.into_iter().rev());
        }
        Ok(HierarchyPage { rooms, next_batch: None })
    }
}

impl Rooms {
    /// Whether another server may be told about a room: anyone may see it (public, knockable,
    /// world-readable), `origin` has a user joined to it, or it is restricted to a room where
    /// `origin` has a user joined.
    async fn server_may_see(&self, origin: &ServerName, room: &Described) -> Result<bool> {
        if self.may_see(None, room).await?
            || self.joined_servers(&room.summary.room_id).await?.iter().any(|s| s == origin)
        {
            return Ok(true);
        }
        for allowed in &room.allowed {
            if self.joined_servers(allowed).await?.iter().any(|s| s == origin) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A room as `origin` asks for it (`/_matrix/federation/v1/hierarchy`): its summary and
    /// links, the summaries of the children this server knows and `origin` may see, and those
    /// it may not. `404` when the room is unknown here or not `origin`'s to see.
    pub async fn hierarchy_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<ServerHierarchy> {
        let not_found = || Error::not_found("Room not found, or not visible to your server");
        let room = self.described(room_id).await?.ok_or_else(not_found)?;
        if !self.server_may_see(origin, &room).await? {
            return Err(not_found());
        }
        let links: Vec<&Child> = if room.is_space {
            room.children.iter().filter(|child| child.suggested || !suggested_only).collect()
        } else {
            Vec::new()
        };
        let children_state = links
            .iter()
            .map(|child| Raw::new(&child.event).map(Raw::cast_unchecked))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::internal(e.to_string()))?;
        let (mut children, mut inaccessible_children) = (Vec::new(), Vec::new());
        for child in &links {
            let Some(described) = self.described(&child.room_id).await? else { continue };
            if self.server_may_see(origin, &described).await? {
                children.push(described.summary);
            } else {
                inaccessible_children.push(child.room_id.clone());
            }
        }
        Ok(ServerHierarchy {
            room: HierarchyRoom { summary: room.summary, children_state },
            children,
            inaccessible_children,
        })
    }
}
