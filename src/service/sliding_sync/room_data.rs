//! What one room's entry in an answer holds. A room the connection has not been sent (or was
//! sent with another configuration or membership) is sent whole, marked `initial`: its newest
//! `timeline_limit` events, its `required_state` at the end of that timeline, its name, avatar,
//! heroes, counts. A room sent before gets only what changed since: the events after what it
//! was sent, the required state that changed, and the counts; and nothing at all when nothing
//! changed. Invites carry their stripped state (`invite_state`).

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use ruma::{
    OwnedMxcUri, OwnedUserId, UInt,
    api::client::{
        filter::EventFormat,
        sync::sync_events::{
            UnreadNotificationsCount,
            v5::response::{Hero, Room},
        },
    },
    events::{AnyStrippedStateEvent, StateEventType},
    serde::Raw,
};

use super::{Context, RoomConfig, RoomSent, lists::Candidate};
use crate::{
    Result,
    service::{
        push::counts::unread_counts,
        rooms::{EventPredicate, Pdu, StateSelection},
        sync::{raw_json, sync_event, timeline_events},
    },
};

fn uint(n: u64) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

/// Which state events `required_state` asks for.
struct RequiredState {
    /// `["*", "*"]`.
    everything: bool,
    /// Types asked for with every state key (`[type, "*"]`).
    whole_types: HashSet<String>,
    /// State keys asked for of every type (`["*", key]`).
    any_type_keys: HashSet<String>,
    /// Exact `(type, state key)` pairs, `$ME` replaced by the user.
    pairs: HashSet<(String, String)>,
    /// `["m.room.member", "$LAZY"]`: the members who sent the timeline's events.
    lazy: bool,
}

const MEMBER: &str = "m.room.member";

impl RequiredState {
    fn new(asked: &BTreeSet<(String, String)>, user: &str) -> Self {
        let mut out = Self {
            everything: false,
            whole_types: HashSet::new(),
            any_type_keys: HashSet::new(),
            pairs: HashSet::new(),
            lazy: false,
        };
        for (kind, key) in asked {
            let key = if key == "$ME" { user.to_owned() } else { key.clone() };
            match (kind.as_str(), key.as_str()) {
                ("*", "*") => out.everything = true,
                (MEMBER, "$LAZY") => out.lazy = true,
                ("*", _) => {
                    out.any_type_keys.insert(key);
                }
                (_, "*") => {
                    out.whole_types.insert(kind.clone());
                }
                _ => {
                    out.pairs.insert((kind.clone(), key));
                }
            }
        }
        out
    }

    fn wants_type(&self, kind: &str) -> bool {
        self.everything
            || self.whole_types.contains(kind)
            || !self.any_type_keys.is_empty()
            || (kind == MEMBER && self.lazy)
            || self.pairs.iter().any(|(k, _)| k == kind)
    }

    /// Whether every member event is wanted (else only those of [`Self::members`]).
    fn all_members(&self) -> bool {
        self.everything || self.whole_types.contains(MEMBER)
    }

    /// The members asked for by name, and the lazy ones.
    fn members(&self, lazy: &HashSet<String>) -> HashSet<String> {
        let mut members: HashSet<String> =
            self.pairs.iter().filter(|(kind, _)| kind == MEMBER).map(|(_, key)| key.clone()).collect();
        members.extend(self.any_type_keys.iter().cloned());
        if self.lazy {
            members.extend(lazy.iter().cloned());
        }
        members
    }

    fn wants(&self, kind: &str, key: &str, lazy: &HashSet<String>) -> bool {
        self.everything
            || self.whole_types.contains(kind)
            || self.any_type_keys.contains(key)
            || self.pairs.contains(&(kind.to_owned(), key.to_owned()))
            || (kind == MEMBER && self.lazy && lazy.contains(key))
    }
}

/// One room's part of an answer.
pub(super) struct RoomEntry {
    pub room: Room,
    /// What the connection now holds of the room.
    pub sent: RoomSent,
    /// Whether the room was sent whole.
    pub initial: bool,
    /// For a knock: the room's stripped state for `knock_state`, which ruma 0.17's `Room`
    /// lacks (the handler adds it to the serialized answer).
    pub knock_state: Option<Vec<Raw<AnyStrippedStateEvent>>>,
}

/// The room's entry; `None` when nothing changed since it was last sent.
pub(super) async fn room(
    ctx: &Context<'_>,
    candidate: &Candidate,
    config: &RoomConfig,
    sent: Option<&RoomSent>,
) -> Result<Option<RoomEntry>> {
    let key = config.key();
    let initial = sent.is_none_or(|s| s.config != key || s.membership != candidate.membership);
    let mut record = RoomSent {
        upto: ctx.now.events,
        config: key,
        membership: candidate.membership.clone(),
        lazy_members: if initial { HashSet::new() } else { sent.map(|s| s.lazy_members.clone()).unwrap_or_default() },
    };
    let mut room = Room::new();
    room.bump_stamp = Some(uint(candidate.bump_stamp));
    if matches!(candidate.membership.as_str(), "invite" | "knock") {
        if !initial {
            return Ok(None);
        }
        room.initial = Some(true);
        room.is_dm = Some(candidate.is_dm);
        room.name = candidate.facts.name.clone();
        let stripped = invite_state(ctx, candidate).await?;
        // A knock's stripped state also goes in `invite_state`, as Synapse sends it: MSC4186
        // leaves `knock_state` unspecified and matrix-rust-sdk reads a knock from the user's own
        // member event in `invite_state`. `knock_state` carries the same list.
        let knock_state = (candidate.membership == "knock").then(|| stripped.clone());
        room.invite_state = Some(stripped);
        return Ok(Some(RoomEntry { room, sent: record, initial: true, knock_state }));
    }
    let room_id = &candidate.room_id;
    let services = ctx.services;
    let upto = match candidate.membership.as_str() {
        "leave" | "ban" => candidate.membership_position.min(ctx.now.events),
        _ => ctx.now.events,
    };
    record.upto = upto;
    let after = if initial { None } else { sent.map(|s| s.upto) };
    let receipts_moved = ctx.receipt_rooms.contains(room_id);
    // Nothing new in the room since it was sent (another room's event moved the stream): no
    // need to read its timeline and state again.
    let unchanged = |after: u64| after >= upto || (!candidate.out_of_band && candidate.facts.newest_event <= after);
    if after.is_some_and(unchanged) && !receipts_moved {
        return Ok(None);
    }
    let ignored = ctx.ignored.clone();
    let wanted: EventPredicate = Arc::new(move |pdu: &Pdu| !ignored.contains(&pdu.sender));
    let limit = usize::try_from(config.timeline_limit).unwrap_or(usize::MAX);
    let window = services.rooms.timeline_window(ctx.user, room_id, after, upto, limit, wanted).await?;

    // Required state: at the end of the window, or what changed in it.
    let required = RequiredState::new(&config.required_state, ctx.user.as_str());
    let senders: HashSet<String> = window.events.iter().map(|e| e.pdu.sender.to_string()).collect();
    let new_lazy: HashSet<String> = senders.difference(&record.lazy_members).cloned().collect();
    let members = (!required.all_members()).then(|| required.members(&senders));
    let keep = {
        let required = RequiredState::new(&config.required_state, ctx.user.as_str());
        Arc::new(move |kind: &str| required.wants_type(kind))
    };
    let selection = StateSelection {
        keep,
        lazy_members: members,
        always_members: if required.lazy { new_lazy.clone() } else { HashSet::new() },
    };
    let state = services.rooms.sync_state(room_id, after, upto, selection).await?;
    let state: Vec<&Pdu> = state
        .iter()
        .map(|pdu| &**pdu)
        .filter(|pdu| required.wants(&pdu.kind.to_string(), pdu.state_key.as_deref().unwrap_or(""), &senders))
        .collect();
    if required.lazy {
        record.lazy_members.extend(new_lazy);
    }
    if !initial && window.events.is_empty() && state.is_empty() && !receipts_moved {
        return Ok(None);
    }
    let format = EventFormat::Client;
    room.required_state = state.into_iter().map(|pdu| sync_event(pdu, &format)).collect::<Result<Vec<_>>>()?;
    let first = window.events.first().and_then(|e| e.meta.position);
    // `/messages?dir=b&from=P` returns the events before position P.
    room.prev_batch = Some(first.unwrap_or(upto.saturating_add(1)).to_string());
    room.limited = window.limited;
    room.num_live = Some(uint(match ctx.since {
        Some(since) => {
            window.events.iter().filter(|e| e.meta.position.is_some_and(|p| p > since.token.events)).count() as u64
        }
        None => 0,
    }));
    room.timeline = timeline_events(services, ctx.user, ctx.device, &window.events, &format).await?;
    if initial {
        room.initial = Some(true);
        room.is_dm = Some(candidate.is_dm);
    }
    room.name = candidate.facts.name.clone();
    if let Some(avatar) = &candidate.facts.avatar {
        room.avatar = ruma::JsOption::Some(OwnedMxcUri::from(avatar.as_str()));
    }
    let summary = services.rooms.member_summary(room_id, ctx.user).await?;
    room.joined_count = Some(uint(summary.joined));
    room.invited_count = Some(uint(summary.invited));
    if candidate.facts.name.is_none() {
        room.heroes = Some(heroes(ctx, room_id, summary.heroes).await?);
    }
    if candidate.membership == "join" {
        let counts =
            unread_counts(services, ctx.user, room_id, (candidate.membership_position, ctx.now.events), false).await?;
        let mut unread = UnreadNotificationsCount::new();
        unread.notification_count = Some(uint(counts.main.notifications));
        unread.highlight_count = Some(uint(counts.main.highlights));
        room.unread_notifications = unread;
    }
    Ok(Some(RoomEntry { room, sent: record, initial, knock_state: None }))
}

/// The heroes with their display names and avatars from their member events.
async fn heroes(ctx: &Context<'_>, room_id: &ruma::RoomId, users: Vec<OwnedUserId>) -> Result<Vec<Hero>> {
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        let member = ctx.services.rooms.state_event(room_id, &StateEventType::RoomMember, user.as_str()).await?;
        let content = member.map(|pdu| pdu.content_value()).unwrap_or_default();
        let mut hero = Hero::new(user);
        hero.name = content.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
        hero.avatar = content.get("avatar_url").and_then(|v| v.as_str()).map(OwnedMxcUri::from);
        out.push(hero);
    }
    Ok(out)
}

/// The stripped state shown with an invite or a knock: the room's basic state and the user's
/// own membership (for a room over federation, what the other server sent).
async fn invite_state<T>(ctx: &Context<'_>, candidate: &Candidate) -> Result<Vec<Raw<T>>> {
    let room_id = &candidate.room_id;
    if let Some(record) = ctx.services.rooms.out_of_band(ctx.user, room_id).await? {
        let own = |event: &&serde_json::Value| {
            event["type"] == MEMBER && event["state_key"].as_str() == Some(ctx.user.as_str())
        };
        let invite = serde_json::json!({
            "type": record.invite["type"],
            "state_key": record.invite["state_key"],
            "sender": record.invite["sender"],
            "content": record.invite["content"],
        });
        return record.stripped_state.iter().filter(|e| !own(e)).chain([&invite]).map(raw_json).collect();
    }
    ctx.services
        .rooms
        .invite_state(room_id, ctx.user)
        .await?
        .iter()
        .map(|pdu| raw_json(&pdu.to_stripped_state()))
        .collect()
}
