//! The room facts push rule evaluation needs, read from the room's state after a new event (the
//! local joined members and their display names, the joined member count, the power levels),
//! handed to [`crate::service::push::evaluate`] inside the event's write batch.
//!
//! Reading them means loading every member event of the room, so they are cached per room,
//! keyed by the state group they were read from: a message (no state change) in a big room
//! reuses them and costs only the rule evaluations. State group ids are never reused within a
//! process (they come from an increasing allocator), so a cached entry can only be stale if its
//! group is not the room's current one, and then it is read again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedUserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::PushConditionPowerLevelsCtx,
    room_version_rules::RoomVersionRules,
    state_res::events::RoomCreateEvent,
};

use super::{RoomCore, accept::membership_in, pdu::Pdu, state::ShortStateMap};
use crate::{
    Result,
    service::push::evaluate::{Recipient, RoomFacts, record_notifications},
    storage::{Batch, Db},
};

/// The most rooms whose facts are kept; past it the cache starts over.
const CACHED_ROOMS: usize = 10_000;

/// What push evaluation needs from one state of a room.
pub(super) struct RoomPushFacts {
    joined_members: u64,
    /// Every joined local member, with their display name in the room.
    local_joined: Vec<Recipient>,
    power_levels: PushConditionPowerLevelsCtx,
}

/// Push facts by short room ID, with the state group they were read from.
#[derive(Default)]
pub(super) struct PushFactsCache(Mutex<HashMap<u64, (u64, Arc<RoomPushFacts>)>>);

impl PushFactsCache {
    fn get(&self, short_room: u64, group: u64) -> Option<Arc<RoomPushFacts>> {
        let map = self.0.lock().ok()?;
        map.get(&short_room).filter(|(cached, _)| *cached == group).map(|(_, facts)| facts.clone())
    }

    fn put(&self, short_room: u64, group: u64, facts: Arc<RoomPushFacts>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHED_ROOMS {
                map.clear();
            }
            map.insert(short_room, (group, facts));
        }
    }
}

/// The display name a member event gives, or the user's localpart.
fn display_name_in(event: &Pdu, user: &OwnedUserId) -> String {
    event.content_value()["displayname"].as_str().map_or_else(|| user.localpart().to_owned(), str::to_owned)
}

impl RoomCore {
    /// Evaluates push rules for the local recipients of `pdu` (accepted at `position`, with
    /// `state` the room's state after it, stored as state group `group`) and adds the
    /// notifications to `batch`. Returns whether a notification was queued for a push gateway.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_push(
        &self,
        db: &Db,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        (short_event, pdu): (u64, &Pdu),
        new_key: Option<&(u64, (StateEventType, String))>,
        (state, group): (&ShortStateMap, u64),
        (short_room, position): (u64, u64),
    ) -> Result<bool> {
        let facts = match self.push_facts.get(short_room, group) {
            Some(facts) => facts,
            None => {
                let facts = Arc::new(self.read_push_facts(db, rules, (short_event, pdu), new_key, state)?);
                self.push_facts.put(short_room, group, facts.clone());
                facts
            }
        };
        let mut recipients: Vec<Recipient> =
            facts.local_joined.iter().filter(|r| r.user != pdu.sender).cloned().collect();
        // A local user being invited by this very event, so `.m.rule.invite_for_me` can apply.
        if pdu.kind == ruma::events::TimelineEventType::RoomMember
            && membership_in(&pdu.content) == "invite"
            && let Some(Ok(user)) = pdu.state_key.as_deref().map(OwnedUserId::try_from)
            && user.server_name() == self.server_name
            && user != pdu.sender
        {
            let display_name = display_name_in(pdu, &user);
            recipients.push(Recipient { user, display_name });
        }
        if recipients.is_empty() {
            return Ok(false);
        }
        let room = RoomFacts {
            room_id: pdu.room_id.clone(),
            joined_members: facts.joined_members,
            power_levels: Some(facts.power_levels.clone()),
        };
        record_notifications(db, batch, &pdu.to_client_event(), position, &room, &recipients)
    }

    /// Reads the push facts of a room state from its member, power levels and create events.
    fn read_push_facts(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        (short_event, pdu): (u64, &Pdu),
        new_key: Option<&(u64, (StateEventType, String))>,
        state: &ShortStateMap,
    ) -> Result<RoomPushFacts> {
        // The new event and its state key may exist only in the uncommitted batch.
        let load = |short: u64| -> Result<Pdu> {
            if short == short_event { Ok(pdu.clone()) } else { self.event_by_short(db, short, rules) }
        };
        let mut joined_members = 0u64;
        let mut local_joined = Vec::new();
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
                    if membership_in(&event.content) != "join" {
                        continue;
                    }
                    joined_members += 1;
                    let Ok(user) = OwnedUserId::try_from(member) else { continue };
                    if user.server_name() == self.server_name {
                        let display_name = display_name_in(&event, &user);
                        local_joined.push(Recipient { user, display_name });
                    }
                }
                _ => {}
            }
        }
        let content =
            power_levels.and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok());
        let creators =
            create.and_then(|c| RoomCreateEvent::new(c).creators(&rules.authorization).ok()).unwrap_or_default();
        let levels = RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators);
        Ok(RoomPushFacts { joined_members, local_joined, power_levels: levels.into() })
    }
}
