//! The room facts push rule evaluation needs, read from the room's state after a new event (the
//! local joined members and their display names, the joined member count, the power levels),
//! handed to [`crate::service::push::evaluate`] inside the event's write batch.

use ruma::{
    OwnedUserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    room_version_rules::RoomVersionRules,
    state_res::events::RoomCreateEvent,
};

use super::{RoomCore, accept::membership_in, pdu::Pdu, state::ShortStateMap};
use crate::{
    Result,
    service::push::evaluate::{Recipient, RoomFacts, record_notifications},
    storage::{Batch, Db},
};

impl RoomCore {
    /// Evaluates push rules for the local recipients of `pdu` (accepted at `position`, with
    /// `state` the room's state after it) and adds the notifications to `batch`. Returns whether
    /// a notification was queued for a push gateway.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_push(
        &self,
        db: &Db,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        (short_event, pdu): (u64, &Pdu),
        new_key: Option<&(u64, (StateEventType, String))>,
        state: &ShortStateMap,
        position: u64,
    ) -> Result<bool> {
        // The new event and its state key may exist only in the uncommitted batch.
        let load = |short: u64| -> Result<Pdu> {
            if short == short_event { Ok(pdu.clone()) } else { self.event_by_short(db, short, rules) }
        };
        let mut joined_members = 0u64;
        let mut recipients = Vec::new();
        let (mut power_levels, mut create) = (None, None);
        for (key, short) in state.iter() {
            let names = match new_key {
                Some((new, names)) if new == key => names.clone(),
                _ => (*self.interner.state_key(db, *key)?).clone(),
            };
            match (&names.0, names.1.as_str()) {
                (StateEventType::RoomPowerLevels, "") => power_levels = Some(load(*short)?),
                (StateEventType::RoomCreate, "") => create = Some(load(*short)?),
                (StateEventType::RoomMember, member) => {
                    let event = load(*short)?;
                    let membership = membership_in(&event.content);
                    if membership == "join" {
                        joined_members += 1;
                    }
                    let Ok(user) = OwnedUserId::try_from(member) else { continue };
                    // Joined local members other than the sender, and a local user being
                    // invited by this very event (so `.m.rule.invite_for_me` can apply).
                    let invited_now = membership == "invite" && *short == short_event;
                    if user.server_name() != self.server_name
                        || user == pdu.sender
                        || !(membership == "join" || invited_now)
                    {
                        continue;
                    }
                    let display_name = event.content_value()["displayname"]
                        .as_str()
                        .map_or_else(|| user.localpart().to_owned(), str::to_owned);
                    recipients.push(Recipient { user, display_name });
                }
                _ => {}
            }
        }
        if recipients.is_empty() {
            return Ok(false);
        }
        let content =
            power_levels.and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok());
        let creators =
            create.and_then(|c| RoomCreateEvent::new(c).creators(&rules.authorization).ok()).unwrap_or_default();
        let levels = RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators);
        let facts = RoomFacts { room_id: pdu.room_id.clone(), joined_members, power_levels: Some(levels.into()) };
        record_notifications(db, batch, &pdu.to_client_event(), position, &facts, &recipients)
    }
}
