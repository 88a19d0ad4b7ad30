//! The extensions of an answer: `to_device` (with its own `since`/`next_batch`), `e2ee` (device
//! list changes, one-time key counts, unused fallback key types), `account_data` (global and
//! per room), `receipts` and `typing`. The per-room ones cover the rooms their `lists` and
//! `rooms` name (by default: every room in the request's list ranges and subscriptions).
//! Incrementally each sends what changed since the connection's last answer, except for rooms
//! sent whole (`initial`) in this answer, which get everything.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::{
    OwnedRoomId,
    api::client::sync::sync_events::v5::{
        request::{self, ExtensionRoomConfig},
        response,
    },
};

use super::Context;
use crate::{
    Result,
    service::sync::{SyncToken, device_lists, key_counts, raw_account_data, raw_json, to_device},
};

/// The rooms this answer covers, for extension scoping.
pub(super) struct Scope<'a> {
    /// The rooms within each list's ranges.
    pub list_rooms: &'a BTreeMap<String, Vec<OwnedRoomId>>,
    /// The rooms subscribed to (that the user may see).
    pub subscribed: &'a [OwnedRoomId],
    /// The rooms sent whole in this answer.
    pub initial: &'a HashSet<OwnedRoomId>,
    /// The rooms the user is joined to: receipts and typing are only shown there.
    pub joined: &'a HashSet<OwnedRoomId>,
}

impl Scope<'_> {
    /// The rooms an extension with these `lists` and `rooms` covers.
    fn rooms(&self, lists: Option<&Vec<String>>, rooms: Option<&Vec<ExtensionRoomConfig>>) -> BTreeSet<OwnedRoomId> {
        let mut out = BTreeSet::new();
        let all_lists = lists.is_none_or(|names| names.iter().any(|n| n == "*"));
        for (name, list) in self.list_rooms {
            if all_lists || lists.is_some_and(|names| names.contains(name)) {
                out.extend(list.iter().cloned());
            }
        }
        match rooms {
            None => out.extend(self.subscribed.iter().cloned()),
            Some(configs) => {
                for config in configs {
                    match config {
                        ExtensionRoomConfig::AllSubscribed => out.extend(self.subscribed.iter().cloned()),
                        // A room named by ID: if this answer covers it at all.
                        ExtensionRoomConfig::Room(room)
                            if self.subscribed.contains(room)
                                || self.list_rooms.values().any(|rooms| rooms.contains(room)) =>
                        {
                            out.insert(room.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

pub(super) async fn collect(
    ctx: &Context<'_>,
    asked: &request::Extensions,
    scope: &Scope<'_>,
) -> Result<response::Extensions> {
    let mut out = response::Extensions::default();
    if asked.to_device.enabled == Some(true) {
        out.to_device = Some(to_device_part(ctx, &asked.to_device).await?);
    }
    if asked.e2ee.enabled == Some(true) {
        out.e2ee = e2ee_part(ctx).await?;
    }
    if asked.account_data.enabled == Some(true) {
        let rooms = scope.rooms(asked.account_data.lists.as_ref(), asked.account_data.rooms.as_ref());
        out.account_data = account_data_part(ctx, &rooms, scope.initial).await?;
    }
    if asked.receipts.enabled == Some(true) {
        let mut rooms = scope.rooms(asked.receipts.lists.as_ref(), asked.receipts.rooms.as_ref());
        rooms.retain(|room| scope.joined.contains(room));
        out.receipts = receipts_part(ctx, rooms, scope.initial).await?;
    }
    if asked.typing.enabled == Some(true) {
        let mut rooms = scope.rooms(asked.typing.lists.as_ref(), asked.typing.rooms.as_ref());
        rooms.retain(|room| scope.joined.contains(room));
        out.typing = typing_part(ctx, &rooms, scope.initial)?;
    }
    Ok(out)
}

/// To-device messages after the extension's `since` (or the connection's last answer), which
/// acknowledges (deletes) those up to it.
async fn to_device_part(ctx: &Context<'_>, asked: &request::ToDevice) -> Result<response::ToDevice> {
    let since = match asked.since.as_deref().map(str::parse::<u64>) {
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return Err(crate::Error::invalid_param("Invalid to_device since token")),
        None => ctx.since.map(|answer| answer.token.to_device),
    };
    let token = since.map(|since| SyncToken { to_device: since.min(ctx.now.to_device), ..SyncToken::default() });
    let (events, position) = to_device(ctx.services, ctx.user, ctx.device, token, ctx.now.to_device).await?;
    let mut part = response::ToDevice::default();
    part.next_batch = position.to_string();
    part.events = events;
    Ok(part)
}

async fn e2ee_part(ctx: &Context<'_>) -> Result<response::E2EE> {
    let mut part = response::E2EE::default();
    if let Some(since) = ctx.since {
        part.device_lists = device_lists(ctx.services, ctx.user, since.token, ctx.now).await?;
    }
    let (counts, fallback) = key_counts(ctx.services, ctx.user, ctx.device).await?;
    part.device_one_time_keys_count = counts;
    part.device_unused_fallback_key_types = Some(fallback);
    Ok(part)
}

async fn account_data_part(
    ctx: &Context<'_>,
    rooms: &BTreeSet<OwnedRoomId>,
    initial: &HashSet<OwnedRoomId>,
) -> Result<response::AccountData> {
    let data = &ctx.services.account_data;
    let since = ctx.since.map(|answer| answer.token.account_data);
    let mut entries = data.changes(ctx.user, since, ctx.now.account_data).await?;
    // Rooms sent whole get all their account data.
    if since.is_some() && rooms.iter().any(|room| initial.contains(room)) {
        let all = data.changes(ctx.user, None, ctx.now.account_data).await?;
        let known: HashSet<(String, String)> = entries.iter().map(|e| (e.room.clone(), e.event_type.clone())).collect();
        entries.extend(all.into_iter().filter(|e| {
            !e.room.is_empty()
                && OwnedRoomId::try_from(e.room.as_str()).is_ok_and(|room| initial.contains(&room))
                && !known.contains(&(e.room.clone(), e.event_type.clone()))
        }));
    }
    let mut part = response::AccountData::default();
    let mut push_rules_sent = false;
    for entry in &entries {
        if entry.room.is_empty() {
            push_rules_sent |= entry.event_type == crate::service::push::PUSH_RULES_TYPE;
            part.global.push(raw_account_data(entry)?);
        } else if let Ok(room) = OwnedRoomId::try_from(entry.room.as_str())
            && rooms.contains(&room)
        {
            part.rooms.entry(room).or_default().push(raw_account_data(entry)?);
        }
    }
    // A new connection gets the push rules, the defaults when the user never changed them (as
    // `/sync` does).
    if since.is_none() && !push_rules_sent {
        let ruleset = ctx.services.push.ruleset(ctx.user).await?;
        let event =
            serde_json::json!({ "type": crate::service::push::PUSH_RULES_TYPE, "content": { "global": ruleset } });
        part.global.push(raw_json(&event)?);
    }
    Ok(part)
}

async fn receipts_part(
    ctx: &Context<'_>,
    rooms: BTreeSet<OwnedRoomId>,
    initial: &HashSet<OwnedRoomId>,
) -> Result<response::Receipts> {
    let receipts = &ctx.services.receipts;
    let (whole, changed): (Vec<_>, Vec<_>) =
        rooms.into_iter().partition(|room| ctx.since.is_none() || initial.contains(room));
    let mut all = receipts.for_sync(ctx.user, whole, None, ctx.now.receipts).await?;
    if let Some(since) = ctx.since {
        all.extend(receipts.for_sync(ctx.user, changed, Some(since.token.receipts), ctx.now.receipts).await?);
    }
    let mut part = response::Receipts::default();
    for (room, content) in all {
        part.rooms.insert(room, raw_json(&serde_json::json!({ "type": "m.receipt", "content": content }))?);
    }
    Ok(part)
}

fn typing_part(
    ctx: &Context<'_>,
    rooms: &BTreeSet<OwnedRoomId>,
    initial: &HashSet<OwnedRoomId>,
) -> Result<response::Typing> {
    let mut part = response::Typing::default();
    for room in rooms {
        let since = if initial.contains(room) { None } else { ctx.since.map(|answer| answer.token.typing) };
        if let Some(users) = ctx.services.typing.typing_since(room, since) {
            let event = serde_json::json!({ "type": "m.typing", "content": { "user_ids": users } });
            part.rooms.insert(room.clone(), raw_json(&event)?);
        }
    }
    Ok(part)
}
