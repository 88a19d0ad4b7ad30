//! State resolution over the states of several state groups, with the room version's
//! algorithm (ruma's `state_res`): for an event with several prev events, and for a room's
//! current state when it has several forward extremities. The event being accepted may take
//! part before its batch is written ([`Pending`]).

use std::collections::HashSet;

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};

use super::{RoomCore, accept::Pending, auth_chain::AuthChain, owned_state, state::ShortStateMap, versions};
use crate::{Error, Result, storage::Db};

impl RoomCore {
    /// State resolution over the states of several groups, with the room version's algorithm.
    pub(super) fn resolve(
        &self,
        db: &Db,
        rules: &RoomVersionRules,
        groups: &[u64],
        pending: Option<&Pending<'_>>,
    ) -> Result<ShortStateMap> {
        let state_res_rules = match &rules.state_res {
            StateResolutionVersion::V2(rules) => *rules,
            // Ruma implements only state resolution v2. Room version 1 specifies v1; resolving
            // its rare forks with v2 gives a valid state, which may differ from other servers'.
            _ => ruma::room_version_rules::StateResolutionV2Rules::V2_0,
        };
        let owned = versions::owned_state(rules);
        let mut maps: Vec<StateMap<OwnedEventId>> = Vec::new();
        let mut chains: Vec<EventIdSet<OwnedEventId>> = Vec::new();
        for group in groups {
            let short_map = self.state.load(db, *group)?;
            let mut map = StateMap::new();
            let mut chain = EventIdSet::new();
            for (key, event) in short_map.iter() {
                let mut names = self.key_names(db, *key, pending)?;
                if owned {
                    names.1 = owned_state::key_for_resolution(&names.0, names.1);
                }
                map.insert(names, self.event_id_of_short(db, *event, pending)?);
                for short in self.auth_chain_of(db, *event, pending)?.iter() {
                    chain.insert(self.event_id_of_short(db, *short, pending)?);
                }
            }
            maps.push(map);
            chains.push(chain);
        }
        let stored = |id: &EventId| match pending {
            Some(p) if p.pdu.event_id == id => Some(p.pdu.clone()),
            _ => self.event_by_id(db, id, rules).ok().flatten(),
        };
        // MSC3757: ruma sees owned keys escaped (see `owned_state.rs`).
        let fetch = |id: &EventId| {
            let pdu = stored(id)?;
            Some(if owned { owned_state::event_for_resolution(rules, pdu, stored) } else { pdu })
        };
        let subgraph = |conflicted: &StateMap<Vec<OwnedEventId>>| self.conflicted_subgraph(db, conflicted, pending);
        let resolved = state_res::resolve(&rules.authorization, &state_res_rules, &maps, chains, fetch, subgraph)
            .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
        let mut out = ShortStateMap::new();
        for ((kind, state_key), event_id) in resolved {
            let state_key = if owned { owned_state::key_from_resolution(&kind, state_key) } else { state_key };
            let key = match pending.and_then(|p| p.state_key.as_ref()) {
                Some((short, (k, s))) if *k == kind && *s == state_key => Some(*short),
                _ => self.interner.short_state_key(db, &kind.to_string(), &state_key)?,
            };
            let event = match pending {
                Some(p) if p.pdu.event_id == event_id => Some(p.short_event),
                _ => self.interner.short_event(db, &event_id)?,
            };
            if let (Some(key), Some(event)) = (key, event) {
                out.insert(key, event);
            }
        }
        Ok(out)
    }

    fn key_names(&self, db: &Db, key: u64, pending: Option<&Pending<'_>>) -> Result<(StateEventType, String)> {
        match pending.and_then(|p| p.state_key.as_ref()) {
            Some((short, names)) if *short == key => Ok(names.clone()),
            _ => {
                let names = self.interner.state_key(db, key)?;
                Ok((names.0.clone(), names.1.clone()))
            }
        }
    }

    fn event_id_of_short(&self, db: &Db, short: u64, pending: Option<&Pending<'_>>) -> Result<OwnedEventId> {
        match pending {
            Some(p) if p.short_event == short => Ok(p.pdu.event_id.clone()),
            _ => self.interner.event_id(db, short),
        }
    }

    fn short_of_event(&self, db: &Db, id: &EventId, pending: Option<&Pending<'_>>) -> Result<Option<u64>> {
        match pending {
            Some(p) if p.pdu.event_id == id => Ok(Some(p.short_event)),
            _ => self.interner.short_event(db, id),
        }
    }

    fn auth_chain_of(&self, db: &Db, short: u64, pending: Option<&Pending<'_>>) -> Result<AuthChain> {
        match pending {
            Some(p) if p.short_event == short => Ok(p.auth_chain.clone()),
            _ => self.auth_chains.chain(db, short),
        }
    }

    /// The conflicted state subgraph (room version 12): the conflicted events and every event on
    /// an auth-event path between two of them. Ruma asks the caller for it and keeps its own
    /// implementation in its tests; ours walks the auth edges once (see `auth_chain.rs`).
    fn conflicted_subgraph(
        &self,
        db: &Db,
        conflicted: &StateMap<Vec<OwnedEventId>>,
        pending: Option<&Pending<'_>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let conflicted_shorts: HashSet<u64> = conflicted
            .values()
            .flatten()
            .filter_map(|id| self.short_of_event(db, id, pending).ok().flatten())
            .collect();
        let pending_edges = pending.map(|p| (p.short_event, p.direct_auth));
        let mut subgraph = EventIdSet::new();
        for short in self.auth_chains.conflicted_subgraph(db, &conflicted_shorts, pending_edges).ok()? {
            subgraph.insert(self.event_id_of_short(db, short, pending).ok()?);
        }
        Some(subgraph)
    }
}
