//! The top-level `presence` part of a sync: the presence of the user and of the users who share
//! a joined room with them. An initial sync sends everyone who is not offline; an incremental
//! one sends the users whose presence changed between the two tokens' presence positions.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId, api::client::filter::Filter, events::presence::PresenceEvent, serde::Raw};

use super::{filter, raw_json};
use crate::{Result, service::Services};

pub(super) async fn collect(
    services: &Services,
    user: &UserId,
    filter: &Filter,
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<Raw<PresenceEvent>>> {
    if !services.presence.enabled() || !filter::account_data_allowed(filter, "m.presence") {
        return Ok(Vec::new());
    }
    let mut updates = Vec::new();
    match since {
        None => {
            let joined = services
                .rooms
                .user_rooms(user)
                .await?
                .into_iter()
                .filter(|(_, m)| m.membership == "join")
                .map(|(r, _)| r);
            let mut users: BTreeSet<OwnedUserId> = services.rooms.joined_members_of(joined.collect()).await?;
            users.insert(user.to_owned());
            for other in users {
                let view = services.presence.get(&other).await?;
                if view.position > 0 && view.position <= upto && view.state != ruma::presence::PresenceState::Offline {
                    updates.push((other, view));
                }
            }
        }
        Some(since) => {
            for (other, view) in services.presence.changes(since, upto).await? {
                if other == user || services.rooms.share_a_room(user, &other).await? {
                    updates.push((other, view));
                }
            }
        }
    }
    let limit = filter.limit.map_or(usize::MAX, |l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX));
    updates
        .into_iter()
        .filter(|(sender, _)| filter::senders_allowed(filter, sender))
        .take(limit)
        .map(|(sender, view)| raw_json(&view.event(&sender)))
        .collect()
}
