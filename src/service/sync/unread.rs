//! Unread counts of a joined room, read from the notifications push rule evaluation stored
//! when each event was persisted (`service::push`): `unread_notifications` and, when the
//! timeline filter asks for `unread_thread_notifications`, the counts per thread root.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomId, UInt, api::client::sync::sync_events::UnreadNotificationsCount};

use super::Context;
use crate::{
    Result,
    service::push::counts::{Counts, unread_counts},
};

fn to_ruma(counts: Counts) -> UnreadNotificationsCount {
    let mut out = UnreadNotificationsCount::new();
    out.notification_count = Some(UInt::try_from(counts.notifications).unwrap_or(UInt::MAX));
    out.highlight_count = Some(UInt::try_from(counts.highlights).unwrap_or(UInt::MAX));
    out
}

/// The room's counts (main timeline, or everything without thread counts) and the per-thread
/// counts when the filter asks for them.
pub(super) async fn counts(
    ctx: &Context<'_>,
    room_id: &OwnedRoomId,
    membership_position: Option<u64>,
) -> Result<(UnreadNotificationsCount, BTreeMap<OwnedEventId, UnreadNotificationsCount>)> {
    let by_thread = ctx.filter.room.timeline.unread_thread_notifications;
    let counts =
        unread_counts(ctx.services, ctx.user, room_id, (membership_position.unwrap_or(0), ctx.now.events), by_thread)
            .await?;
    let threads = counts
        .threads
        .into_iter()
        .filter_map(|(root, counts)| Some((OwnedEventId::try_from(root).ok()?, to_ruma(counts))))
        .collect();
    Ok((to_ruma(counts.main), threads))
}
