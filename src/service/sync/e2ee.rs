//! The device parts of a sync: to-device messages for the syncing device (acknowledged, so
//! deleted, when a later sync presents a token past them), the users whose device keys changed
//! (those sharing a room with the user) and those who stopped sharing any room with them, and the
//! device's one-time and fallback key counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedRoomId, OwnedUserId, UInt, UserId, api::client::sync::sync_events::DeviceLists,
};

use super::{SyncToken, raw_json};
use crate::{Result, service::Services};

/// To-device messages delivered per sync; the rest come with the next one.
const TO_DEVICE_LIMIT: usize = 100;

/// To-device events for the response, and the to-device position its token carries.
pub(crate) async fn to_device<T>(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    since: Option<SyncToken>,
    now: u64,
) -> Result<(Vec<ruma::serde::Raw<T>>, u64)> {
    let after = since.map_or(0, |s| s.to_device);
    if after > 0 {
        services.to_device.acknowledge(user, device, after).await?;
    }
    // Nothing was queued for anyone after the token.
    let pending = match since {
        Some(_) if after >= now => Vec::new(),
        _ => services.to_device.pending(user, device, after, TO_DEVICE_LIMIT).await?,
    };
    let full = pending.len() >= TO_DEVICE_LIMIT;
    let mut events = Vec::with_capacity(pending.len());
    let mut last = after;
    for (position, message) in pending.into_iter().filter(|(position, _)| *position <= now) {
        events.push(raw_json(&serde_json::json!({
            "type": message.event_type,
            "sender": message.sender,
            "content": message.content,
        }))?);
        last = position;
    }
    // Everything up to `now` was delivered unless the page was full.
    Ok((events, if full { last } else { now.max(after) }))
}

/// A sync's `device_lists` for the window `(since, now]` (see [`device_list_changes`]).
pub(crate) async fn device_lists(
    services: &Services,
    user: &UserId,
    since: SyncToken,
    now: SyncToken,
) -> Result<DeviceLists> {
    let window = DeviceListWindow {
        key_changes: (since.key_changes, now.key_changes),
        events: Some((since.events, now.events)),
    };
    let (changed, left) = device_list_changes(services, user, window).await?;
    let mut lists = DeviceLists::new();
    lists.changed = changed;
    lists.left = left;
    Ok(lists)
}

/// The stream positions a device-list change set spans, each `(after, upto]`. `events` is
/// `None` when only key-change positions are known (`/keys/changes` with plain numbers).
#[derive(Debug, Clone, Copy)]
pub struct DeviceListWindow {
    pub key_changes: (u64, u64),
    pub events: Option<(u64, u64)>,
}

/// The users whose devices `user` must re-fetch (`changed`) or may stop tracking (`left`) after
/// `window`, for sync's `device_lists` and `/keys/changes`:
/// - `changed`: users sharing a room with `user` whose keys changed; users who joined a room
///   `user` is in; and the members of a room `user` joined (the spec's "joining an encrypted
///   room makes its members' devices known to the joiner").
/// - `left`: users who shared a room with `user` and share none now, because either side left,
///   was kicked or was banned. They are not in `changed`.
pub async fn device_list_changes(
    services: &Services,
    user: &UserId,
    window: DeviceListWindow,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    let mut shares: HashMap<OwnedUserId, bool> = HashMap::new();
    let mut changed = BTreeSet::new();
    let mut left = BTreeSet::new();
    let (key_from, key_to) = window.key_changes;
    if key_from < key_to {
        for other in services.keys.changed_users(key_from, key_to).await? {
            if other == user || share_a_room(services, &mut shares, user, &other).await? {
                changed.insert(other);
            }
        }
    }
    if let Some((after, upto)) = window.events.filter(|(after, upto)| after < upto) {
        // Rooms the user is in, or whose membership changed in the window (a leave in it).
        let rooms: Vec<OwnedRoomId> = services
            .rooms
            .user_room_list(user)
            .await?
            .iter()
            .filter(|(_, m)| m.membership == "join" || m.position > after)
            .map(|(room, _)| room.clone())
            .collect();
        // With more events than one scan reads, only key changes are reported; a client that
        // misses a membership-driven change re-queries keys when it next shares a room anyway.
        let changes = services.rooms.membership_changes(rooms, after, upto).await?.unwrap_or_default();
        for change in changes {
            // Only joins start sharing a room, and only departures of a joined member end it
            // (invites, knocks and rejected invites change neither).
            let joined = change.membership == "join";
            let departed =
                matches!(change.membership.as_str(), "leave" | "ban") && change.previous.as_deref() == Some("join");
            if !joined && !departed {
                continue;
            }
            let others = if change.user == user {
                services.rooms.joined_members(&change.room_id).await?
            } else {
                vec![change.user]
            };
            for other in others {
                if other == user {
                    continue;
                }
                let shares = share_a_room(services, &mut shares, user, &other).await?;
                if joined && shares {
                    changed.insert(other);
                } else if departed && !shares {
                    left.insert(other);
                }
            }
        }
    }
    changed.retain(|other| !left.contains(other));
    Ok((changed.into_iter().collect(), left.into_iter().collect()))
}

/// [`Rooms::share_a_room`](crate::service::rooms::Rooms::share_a_room), remembered per user for
/// one change set.
async fn share_a_room(
    services: &Services,
    known: &mut HashMap<OwnedUserId, bool>,
    user: &UserId,
    other: &UserId,
) -> Result<bool> {
    if let Some(shares) = known.get(other) {
        return Ok(*shares);
    }
    let shares = services.rooms.share_a_room(user, other).await?;
    known.insert(other.to_owned(), shares);
    Ok(shares)
}

/// The device's one-time key counts and unused fallback key algorithms.
pub(crate) async fn key_counts(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
) -> Result<(BTreeMap<OneTimeKeyAlgorithm, UInt>, Vec<OneTimeKeyAlgorithm>)> {
    Ok(key_counts_to_ruma(services.keys.key_counts(user, device).await?))
}

/// Key counts as [`Keys::key_counts`](crate::service::keys::Keys::key_counts) reads them, in
/// ruma's types.
pub(crate) fn key_counts_to_ruma(
    (counts, fallback): (BTreeMap<String, u64>, Vec<String>),
) -> (BTreeMap<OneTimeKeyAlgorithm, UInt>, Vec<OneTimeKeyAlgorithm>) {
    let counts = counts
        .into_iter()
        .map(|(algorithm, count)| {
            (OneTimeKeyAlgorithm::from(algorithm.as_str()), UInt::try_from(count).unwrap_or(UInt::MAX))
        })
        .collect();
    let fallback = fallback.iter().map(|algorithm| OneTimeKeyAlgorithm::from(algorithm.as_str())).collect();
    (counts, fallback)
}
