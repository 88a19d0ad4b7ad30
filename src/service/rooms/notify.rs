//! The room facts push rule evaluation needs, read from the room's state after a new event (the
//! local joined members and their display names, the joined member count, the power levels),
//! handed to [`crate::service::push::evaluate`] inside the event's write batch.
//!
//! Reading them means loading every member event of the room, so they are cached per room,
//! keyed by the state group they were read from: a message (no state change) in a big room
//! reuses them and costs only the rule evaluations, and a state change (a join) updates them by
//! the keys it changed. State group ids are never reused within a
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
    service::push::{
        evaluate::{Audience, EventNotifications, RoomFacts, evaluate_notifications},
        recipients::{Recipient, RoomRecipients},
    },
    storage::Db,
};

/// The most rooms whose facts are kept; past it the cache starts over.
const CACHED_ROOMS: usize = 10_000;

/// What push evaluation needs from one state of a room.
#[derive(Clone)]
pub(super) struct RoomPushFacts {
    joined_members: u64,
    /// Every joined local member, with their display name in the room.
    local_joined: RoomRecipients,
    power_levels: PushConditionPowerLevelsCtx,
}

/// Push facts by short room ID, with the state group they were read from; and the special
/// members of each, with the state group and profile generation they were read under.
#[derive(Default)]
pub(super) struct PushFactsCache {
    facts: Mutex<HashMap<u64, (u64, Arc<RoomPushFacts>)>>,
    special: Mutex<HashMap<u64, SpecialMembers>>,
}

/// A room's special members, with the (state group, profile generation) they were read under.
type SpecialMembers = ((u64, u64), Arc<Vec<OwnedUserId>>);

impl PushFactsCache {
    fn special(&self, short_room: u64, read_under: (u64, u64)) -> Option<Arc<Vec<OwnedUserId>>> {
        let map = self.special.lock().ok()?;
        map.get(&short_room).filter(|(under, _)| *under == read_under).map(|(_, special)| special.clone())
    }

    fn put_special(&self, short_room: u64, read_under: (u64, u64), special: Arc<Vec<OwnedUserId>>) {
        if let Ok(mut map) = self.special.lock() {
            if map.len() >= CACHED_ROOMS {
                map.clear();
            }
            map.insert(short_room, (read_under, special));
        }
    }

    /// Forgets everything (after events were pruned on disk).
    pub(super) fn clear(&self) {
        if let Ok(mut map) = self.facts.lock() {
            map.clear();
        }
        if let Ok(mut map) = self.special.lock() {
            map.clear();
        }
    }

    fn get(&self, short_room: u64) -> Option<(u64, Arc<RoomPushFacts>)> {
        self.facts.lock().ok()?.get(&short_room).cloned()
    }

    /// Removes the room's facts (to update them in place) and returns them.
    fn take(&self, short_room: u64) -> Option<Arc<RoomPushFacts>> {
        self.facts.lock().ok()?.remove(&short_room).map(|(_, facts)| facts)
    }

    fn put(&self, short_room: u64, group: u64, facts: Arc<RoomPushFacts>) {
        if let Ok(mut map) = self.facts.lock() {
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

/// An event push evaluation reads: the new event (borrowed) or a stored one (shared with the
/// event cache), never a copy.
enum Loaded<'a> {
    New(&'a Pdu),
    Stored(Arc<Pdu>),
}

impl std::ops::Deref for Loaded<'_> {
    type Target = Pdu;
    fn deref(&self) -> &Pdu {
        match self {
            Loaded::New(pdu) => pdu,
            Loaded::Stored(pdu) => pdu,
        }
    }
}

/// How the room's current state came from the previous one: the state group before and the
/// keys that changed (set to an event, or removed). With it, cached facts are updated by the
/// change instead of being read again from every member event.
pub(super) struct CurrentStateChange<'a> {
    pub previous_group: u64,
    pub previous: &'a ShortStateMap,
    pub changes: &'a [(u64, Option<u64>)],
}

/// The new event as push evaluation sees it: its short id, the PDU, and its state key (which
/// may exist only in the uncommitted batch).
pub(super) type NewEventRef<'a> = ((u64, &'a Pdu), Option<&'a (u64, (StateEventType, String))>);

impl RoomCore {
    /// Evaluates push rules for the local recipients of `pdu`, with `state` the room's state
    /// after it (state group `group`). The notifications are written once the event has its
    /// stream position ([`write_notifications`](crate::service::push::evaluate::write_notifications)).
    pub(super) fn evaluate_push(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        ((short_event, pdu), new_key): NewEventRef<'_>,
        (state, group): (&ShortStateMap, u64),
        change: Option<CurrentStateChange<'_>>,
        short_room: u64,
    ) -> Result<EventNotifications> {
        let new_event = ((short_event, pdu), new_key);
        // The local members whose membership changed, when the facts were updated by the change
        // (the special members are then updated the same way).
        let mut updated_from = None;
        let facts = match self.push_facts.get(short_room) {
            Some((cached, facts)) if cached == group => facts,
            Some((cached, facts)) if change.as_ref().is_some_and(|c| c.previous_group == cached) => {
                let change = change.as_ref().ok_or_else(|| crate::Error::internal("state change vanished"))?;
                // Taken out of the cache first, so the update is made in place (no copy of the
                // room's members per join) unless a reader still holds the old facts. On an
                // error the room's entry is gone, and the next event reads the facts afresh.
                drop(facts);
                let mut facts =
                    self.push_facts.take(short_room).ok_or_else(|| crate::Error::internal("push facts vanished"))?;
                let changed = self.update_push_facts(db, rules, new_event, Arc::make_mut(&mut facts), state, change)?;
                self.push_facts.put(short_room, group, facts.clone());
                updated_from = Some((cached, changed));
                facts
            }
            _ => {
                let facts = Arc::new(self.read_push_facts(db, rules, new_event, state)?);
                self.push_facts.put(short_room, group, facts.clone());
                facts
            }
        };
        // A local user being invited by this very event, so `.m.rule.invite_for_me` can apply.
        let mut invitee = None;
        if pdu.kind == ruma::events::TimelineEventType::RoomMember
            && membership_in(&pdu.content) == "invite"
            && let Some(Ok(user)) = pdu.state_key.as_deref().map(OwnedUserId::try_from)
            && user.server_name() == self.server_name
            && user != pdu.sender
        {
            let display_name = display_name_in(pdu, &user);
            invitee = Some(Recipient::new(user, display_name));
        }
        let room = RoomFacts {
            room_id: pdu.room_id.clone(),
            joined_members: facts.joined_members,
            power_levels: Some(facts.power_levels.clone()),
        };
        let special = self.special_members(db, short_room, group, &facts, updated_from.as_ref())?;
        let audience = Audience { members: &facts.local_joined, special: &special, invitee: invitee.as_ref() };
        let event = if facts.local_joined.is_empty() && invitee.is_none() {
            serde_json::Value::Null
        } else {
            pdu.to_client_event()
        };
        evaluate_notifications(db, &self.push_profiles, &event, &room, &pdu.sender, audience)
    }

    /// The members of a room state whose push profiles single them out (custom rules or a
    /// pusher), kept while neither the state nor any profile changes.
    fn special_members(
        &self,
        db: &Db,
        short_room: u64,
        group: u64,
        facts: &RoomPushFacts,
        updated_from: Option<&(u64, Vec<OwnedUserId>)>,
    ) -> Result<Arc<Vec<OwnedUserId>>> {
        let generation = self.push_profiles.generation();
        if let Some(special) = self.push_facts.special(short_room, (group, generation)) {
            return Ok(special);
        }
        // After a change of a few members (a join) under the same profile generation, the
        // previous state's special members are still special if still joined, and only the
        // changed members' profiles need looking at: no pass over every member per join.
        let previous = updated_from.and_then(|(previous_group, changed)| {
            Some((self.push_facts.special(short_room, (*previous_group, generation))?, changed))
        });
        let special = match previous {
            Some((previous, changed)) => {
                let mut special: Vec<OwnedUserId> = previous
                    .iter()
                    .filter(|user| facts.local_joined.contains(user) && !changed.contains(user))
                    .cloned()
                    .collect();
                for user in changed {
                    if facts.local_joined.contains(user) {
                        let profile = self.push_profiles.get(db, user)?;
                        if !profile.default_rules || profile.has_pusher {
                            special.push(user.clone());
                        }
                    }
                }
                Arc::new(special)
            }
            None => Arc::new(facts.local_joined.special(db, &self.push_profiles)?),
        };
        self.push_facts.put_special(short_room, (group, generation), special.clone());
        Ok(special)
    }

    /// The event `short`: the new one itself (not stored yet), or the stored one, shared.
    fn load_with_new<'a>(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        short: u64,
        new: (u64, &'a Pdu),
    ) -> Result<Loaded<'a>> {
        if short == new.0 {
            Ok(Loaded::New(new.1))
        } else {
            Ok(Loaded::Stored(self.shared_event_by_short(db, short, rules)?))
        }
    }

    fn names_with_new(
        &self,
        db: &Db,
        key: u64,
        new_key: Option<&(u64, (StateEventType, String))>,
    ) -> Result<(StateEventType, String)> {
        match new_key {
            Some((new, names)) if *new == key => Ok(names.clone()),
            _ => Ok((*self.interner.state_key(db, key)?).clone()),
        }
    }

    /// Cached facts brought up to date with a change of a few state keys; returns the local
    /// users whose member event changed.
    fn update_push_facts(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        ((short_event, pdu), new_key): NewEventRef<'_>,
        facts: &mut RoomPushFacts,
        state: &ShortStateMap,
        change: &CurrentStateChange<'_>,
    ) -> Result<Vec<OwnedUserId>> {
        let mut changed = Vec::new();
        let mut levels_changed = false;
        for (key, event) in change.changes {
            let names = self.names_with_new(db, *key, new_key)?;
            match (&names.0, names.1.as_str()) {
                (StateEventType::RoomMember, member) => {
                    let joined_before = match change.previous.get(key) {
                        Some(old) => {
                            membership_in(&self.load_with_new(db, rules, *old, (short_event, pdu))?.content) == "join"
                        }
                        None => false,
                    };
                    let now = match event {
                        Some(new) => Some(self.load_with_new(db, rules, *new, (short_event, pdu))?),
                        None => None,
                    };
                    let joined_now = now.as_ref().is_some_and(|e| membership_in(&e.content) == "join");
                    facts.joined_members =
                        (facts.joined_members + u64::from(joined_now)).saturating_sub(u64::from(joined_before));
                    let Ok(user) = OwnedUserId::try_from(member) else { continue };
                    if user.server_name() != self.server_name {
                        continue;
                    }
                    changed.push(user.clone());
                    match now.filter(|_| joined_now) {
                        Some(event) => {
                            let display_name = display_name_in(&event, &user);
                            facts.local_joined.insert(Recipient::new(user, display_name));
                        }
                        None => {
                            facts.local_joined.remove(&user);
                        }
                    }
                }
                (StateEventType::RoomPowerLevels | StateEventType::RoomCreate, "") => levels_changed = true,
                _ => {}
            }
        }
        if levels_changed {
            facts.power_levels = self.push_power_levels(db, rules, ((short_event, pdu), new_key), state)?;
        }
        Ok(changed)
    }

    /// The power levels push conditions see, from a state's power levels and create events.
    fn push_power_levels(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        ((short_event, pdu), new_key): NewEventRef<'_>,
        state: &ShortStateMap,
    ) -> Result<PushConditionPowerLevelsCtx> {
        let find = |kind: StateEventType| -> Result<Option<Pdu>> {
            let key = match new_key {
                Some((key, (k, s))) if *k == kind && s.is_empty() => Some(*key),
                _ => self.interner.short_state_key(db, &kind.to_string(), "")?,
            };
            match key.and_then(|key| state.get(&key).copied()) {
                Some(short) => Ok(Some(Pdu::clone(&*self.load_with_new(db, rules, short, (short_event, pdu))?))),
                None => Ok(None),
            }
        };
        let power_levels = find(StateEventType::RoomPowerLevels)?;
        let create = find(StateEventType::RoomCreate)?;
        Ok(power_levels_ctx(rules, power_levels, create))
    }

    /// Reads the push facts of a room state from its member, power levels and create events.
    fn read_push_facts(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        ((short_event, pdu), new_key): NewEventRef<'_>,
        state: &ShortStateMap,
    ) -> Result<RoomPushFacts> {
        let mut joined_members = 0u64;
        let mut local_joined = RoomRecipients::default();
        let (mut power_levels, mut create) = (None, None);
        for (key, short) in state.iter() {
            let names = self.names_with_new(db, *key, new_key)?;
            match (&names.0, names.1.as_str()) {
                (StateEventType::RoomPowerLevels, "") => {
                    power_levels = Some(Pdu::clone(&*self.load_with_new(db, rules, *short, (short_event, pdu))?))
                }
                (StateEventType::RoomCreate, "") => {
                    create = Some(Pdu::clone(&*self.load_with_new(db, rules, *short, (short_event, pdu))?))
                }
                (StateEventType::RoomMember, member) => {
                    let event = self.load_with_new(db, rules, *short, (short_event, pdu))?;
                    if membership_in(&event.content) != "join" {
                        continue;
                    }
                    joined_members += 1;
                    let Ok(user) = OwnedUserId::try_from(member) else { continue };
                    if user.server_name() == self.server_name {
                        let display_name = display_name_in(&event, &user);
                        local_joined.insert(Recipient::new(user, display_name));
                    }
                }
                _ => {}
            }
        }
        Ok(RoomPushFacts { joined_members, local_joined, power_levels: power_levels_ctx(rules, power_levels, create) })
    }
}

fn power_levels_ctx(
    rules: &RoomVersionRules,
    power_levels: Option<Pdu>,
    create: Option<Pdu>,
) -> PushConditionPowerLevelsCtx {
    let content = power_levels.and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok());
    let creators = create.and_then(|c| RoomCreateEvent::new(c).creators(&rules.authorization).ok()).unwrap_or_default();
    RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators).into()
}
