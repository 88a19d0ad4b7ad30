//! MSC3757 (owned state) in the auth rules of its room versions (`org.matrix.msc3757.10` and
//! `.11`, see `versions.rs`), without forking ruma.
//!
//! Ruma 0.17 refuses every state key that starts with `@` and is not the sender. MSC3757 lets
//! `@user:server` and `@user:server_suffix` be written by that user, or by a user with more
//! power than that user; a key that starts with `@` but names no valid user is refused
//! (Synapse answers `400 M_BAD_JSON`). Relaxing a rule cannot be done by checking more after
//! ruma, so in these versions ruma is shown the event with the sender as its state key (its
//! other rules use the key only to choose `state_default` over `events_default`), and the owner
//! rule is checked here.
//!
//! State resolution also runs ruma's rules on each conflicted event and files it under the key
//! it sees. There, an owned key the owner rule accepts (checked against the event's own auth
//! events; ruma offers no hook into its partially resolved state) is shown behind an escape
//! character ([`ESCAPE`]), the same way for every event of that key, and the resolved map's
//! keys are unescaped afterwards; keys of the states to resolve are escaped alike.

use ruma::{
    Int, OwnedUserId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{
        self, Event,
        events::{RoomCreateEvent, RoomPowerLevelsEvent},
    },
};

use super::{Pdu, versions::owned_state};

/// The start of a refusal for a key that starts with `@` but names no user: a local client
/// gets `400 M_BAD_JSON` for it, as from Synapse.
pub const MALFORMED_KEY: &str = "State key neither equals a valid user ID, nor starts with one plus an underscore";

/// The escape character in front of owned keys while ruma resolves state (see the module doc).
const ESCAPE: char = '\u{1}';

/// The user a state key starting with `@` belongs to, as MSC3757 (and Synapse) reads it: up to
/// the first `_` after the first `:`, or the whole key. `None` if that is not a valid user ID.
pub fn owner(state_key: &str) -> Option<OwnedUserId> {
    let colon = 1 + state_key.get(1..)?.find(':')?;
    let end = state_key[colon + 1..].find('_').map_or(state_key.len(), |i| colon + 1 + i);
    UserId::parse(&state_key[..end]).ok()
}

/// Whether MSC3757's owner rule decides this event in place of ruma's `@` rule.
fn owner_rule_applies(rules: &RoomVersionRules, pdu: &Pdu) -> bool {
    owned_state(rules)
        && pdu.kind != TimelineEventType::RoomMember
        && pdu.state_key.as_deref().is_some_and(|key| key.starts_with('@') && key != pdu.sender.as_str())
}

/// Ruma's state-dependent auth rules, with MSC3757's owner rule in place of the `@` rule in the
/// versions that have it (the owner rule after ruma's, as Synapse orders them).
pub(super) fn check_state_dependent<E: Event>(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<E>,
) -> Result<(), String> {
    if !owner_rule_applies(rules, pdu) {
        return state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state);
    }
    let mut shown = pdu.clone();
    shown.state_key = Some(pdu.sender.to_string());
    state_res::check_state_dependent_auth_rules(&rules.authorization, &shown, &fetch_state)?;
    check_owner(rules, pdu, &fetch_state)
}

/// The owner rule: the key names a valid user, who is the sender or has less power.
fn check_owner<E: Event>(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_state: &impl Fn(&StateEventType, &str) -> Option<E>,
) -> Result<(), String> {
    let key = pdu.state_key.as_deref().unwrap_or_default();
    let Some(owner) = owner(key) else {
        return Err(MALFORMED_KEY.to_owned());
    };
    if owner == pdu.sender {
        return Ok(());
    }
    if power_level(rules, &pdu.sender, fetch_state)? > power_level(rules, &owner, fetch_state)? {
        Ok(())
    } else {
        Err("You are not allowed to set others' state".to_owned())
    }
}

/// A user's power level in v10/v11 rooms (MSC3757's bases, without privileged creators).
fn power_level<E: Event>(
    rules: &RoomVersionRules,
    user: &UserId,
    fetch_state: &impl Fn(&StateEventType, &str) -> Option<E>,
) -> Result<Int, String> {
    if let Some(power_levels) = fetch_state(&StateEventType::RoomPowerLevels, "") {
        return RoomPowerLevelsEvent::new(power_levels).user_power_level(user, &rules.authorization);
    }
    let create = fetch_state(&StateEventType::RoomCreate, "").ok_or("no m.room.create event")?;
    let creators = RoomCreateEvent::new(create).creators(&rules.authorization)?;
    Ok(Int::from(if creators.contains(user) { 100 } else { 0 }))
}

/// Whether a key of this type is escaped for state resolution.
fn escaped_kind(kind: &str, key: &str) -> bool {
    kind != "m.room.member" && (key.starts_with('@') || key.starts_with(ESCAPE))
}

/// A key of a state map handed to ruma's state resolution, in an owned-state room.
pub(super) fn key_for_resolution(kind: &StateEventType, key: String) -> String {
    if escaped_kind(&kind.to_string(), &key) { format!("{ESCAPE}{key}") } else { key }
}

/// A key of ruma's resolved state back as the event's own.
pub(super) fn key_from_resolution(kind: &StateEventType, key: String) -> String {
    match key.strip_prefix(ESCAPE) {
        Some(real) if kind.to_string() != "m.room.member" => real.to_owned(),
        _ => key,
    }
}

/// An event as state resolution shows it to ruma in an owned-state room: an owned key that
/// passes the owner rule against the event's own auth events, and any key that starts with the
/// escape character, is escaped; any other `@` key stays as it is (ruma refuses it when it is
/// not the sender's).
pub(super) fn event_for_resolution(
    rules: &RoomVersionRules,
    mut pdu: Pdu,
    fetch_event: impl Fn(&ruma::EventId) -> Option<Pdu>,
) -> Pdu {
    let Some(key) = pdu.state_key.as_deref() else { return pdu };
    if !escaped_kind(&pdu.kind.to_string(), key) {
        return pdu;
    }
    let escape = key.starts_with(ESCAPE) || key == pdu.sender.as_str() || {
        let auth_events: Vec<Pdu> = pdu.auth_events.iter().filter_map(|id| fetch_event(id)).collect();
        let fetch_state = |kind: &StateEventType, key: &str| {
            auth_events
                .iter()
                .find(|e| e.kind.to_string() == kind.to_string() && e.state_key.as_deref() == Some(key))
                .cloned()
        };
        check_owner(rules, &pdu, &fetch_state).is_ok()
    };
    if escape {
        pdu.state_key = Some(format!("{ESCAPE}{key}"));
    }
    pdu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_as_synapse_reads_them() {
        let user = |s: &str| Some(UserId::parse(s).unwrap());
        assert_eq!(owner("@alice:hs1"), user("@alice:hs1"));
        assert_eq!(owner("@alice:hs1_state_key_suffix:!@#$123"), user("@alice:hs1"));
        assert_eq!(owner("@alice:hs1:8448_x"), user("@alice:hs1:8448"));
        // An unseparated suffix runs into the server name, up to its first `_`.
        assert_eq!(owner("@alice:hs1state_key_suffix:!@#$123"), user("@alice:hs1state"));
        assert_eq!(owner("@prefix_@alice:hs1_suffix"), user("@prefix_@alice:hs1"));
        assert_eq!(owner("@oops"), None);
        assert_eq!(owner("@alice:hs1@state_key_suffix:!@#$123"), None);
        assert_eq!(owner("@"), None);
    }

    #[test]
    fn resolution_keys_round_trip() {
        let kind = StateEventType::from("com.example.test");
        for key in ["", "x", "@alice:hs1", "\u{1}@alice:hs1", "\u{1}x"] {
            let shown = key_for_resolution(&kind, key.to_owned());
            assert!(!shown.starts_with('@'));
            assert_eq!(key_from_resolution(&kind, shown), key);
        }
        let member = StateEventType::RoomMember;
        assert_eq!(key_for_resolution(&member, "@alice:hs1".to_owned()), "@alice:hs1");
    }
}
