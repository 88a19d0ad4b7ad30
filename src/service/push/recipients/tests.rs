//! The generic outcome against ruma's own evaluation: for every recipient with default rules,
//! what `evaluate_notifications` stores must be what the user's own server-default rules give.

use std::sync::Arc;

use ruma::{
    OwnedUserId, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    owned_room_id,
    push::{FlattenedJson, PushConditionRoomCtx},
    room_version_rules::RoomVersionRules,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{EventScreen, PushProfiles, Recipient, RoomRecipients};
use crate::{
    service::push::defaults::{default_ruleset, has_mentions},
    service::push::evaluate::{
        Audience, GENERIC_LOCALPART, RoomFacts, complete_now, evaluate_notifications, first_match,
    },
    storage::{Db, memory::MemoryEngine},
};

fn user(id: &str) -> OwnedUserId {
    OwnedUserId::try_from(id).unwrap()
}

/// The server-default rules of two users differ only where they name the user.
#[test]
fn default_rules_differ_only_by_the_users_identity() {
    let alice = user("@zq7alice:example.org");
    let generic = user(&format!("@{GENERIC_LOCALPART}:trellis.invalid"));
    let of = |user: &UserId| serde_json::to_string(&default_ruleset(user)).unwrap();
    let alice_rules =
        of(&alice).replace(alice.as_str(), generic.as_str()).replace(alice.localpart(), GENERIC_LOCALPART);
    assert_eq!(alice_rules, of(&generic));
    assert!(of(&alice).contains("zq7alice"), "the defaults name the user");
}

fn recipients() -> Vec<Recipient> {
    [
        ("@alice:hs", "Alice"),
        ("@bob:hs", "Bob Smith"),
        ("@carol:hs", "carol"),
        ("@dave_2:hs", "[bot] Dave"),
        ("@erin:hs", "*"),
        ("@frank:hs", ""),
        ("@grace:hs", "Grâce Hopper"),
        ("@heidi:hs", "héidi"),
        ("@ivan:hs", "Ivan?"),
        ("@judy:hs", "judy_j"),
        ("@mallory:hs", "Mallory-Ann"),
        ("@oscar.o:hs", "O"),
    ]
    .into_iter()
    .map(|(id, name)| Recipient::new(user(id), name.to_owned()))
    .collect()
}

fn events() -> Vec<Value> {
    let message = |body: &str| json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": body}});
    let mut events: Vec<Value> = [
        "hello",
        "hi alice",
        "ALICE!",
        "bob smith, are you there?",
        "bob smithers",
        "bobsmith",
        "Bob",
        "carol",
        "carols",
        "_carol",
        "[bot] dave please",
        "dave",
        "anything at all",
        "",
        "Grâce Hopper was here",
        "grâce",
        "HÉIDI",
        "heidi",
        "ivan? ivanx",
        "judy_j and judy",
        "judy_jx",
        "mallory-ann",
        "mallory",
        "o",
        "o.o",
        "oscar.o",
        "oscar",
        "@room hello",
        "hey @room",
        "trellis.generic.recipient hi alice",
        "Trellis.Generic.Recipient",
    ]
    .into_iter()
    .map(message)
    .collect();
    events.push(json!({"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "alice notice"}}));
    events.push(json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "hi alice and Bob Smith",
        "m.mentions": {"user_ids": ["@carol:hs"]}}}));
    events.push(
        json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "@room alice", "m.mentions": {}}}),
    );
    events.push(json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "x",
        "m.mentions": {"user_ids": ["@carol:hs", "@nobody:hs"]}}}));
    events.push(json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "x",
        "m.mentions": {"room": true}}}));
    events.push(json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "* edited alice",
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}}));
    events.push(json!({"type": "m.room.member", "state_key": "@bob:hs", "content": {"membership": "invite"}}));
    events.push(json!({"type": "m.room.member", "state_key": "@zed:hs", "content": {"membership": "join"}}));
    events.push(json!({"type": "m.reaction", "content": {"m.relates_to": {"rel_type": "m.annotation",
        "event_id": "$x", "key": "alice"}}}));
    events.push(json!({"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "alice"}}));
    events.push(json!({"type": "m.room.tombstone", "state_key": "", "content": {"body": "alice",
        "replacement_room": "!new:hs"}}));
    events.push(json!({"type": "m.call.invite", "content": {"call_id": "c"}}));
    events.push(json!({"type": "org.example.custom", "content": {"body": "bob smith"}}));
    for (i, event) in events.iter_mut().enumerate() {
        event["sender"] = json!("@sender:hs");
        event["event_id"] = json!(format!("$e{i}"));
        event["room_id"] = json!("!room:hs");
        event["origin_server_ts"] = json!(1);
    }
    events
}

/// For every event, room size and recipient with default rules: the stored outcome is ruma's.
#[test]
fn the_shared_outcome_is_what_each_users_default_rules_give() {
    let db = Db::with_engine(Arc::new(MemoryEngine::default()));
    let profiles = PushProfiles::default();
    let recipients = recipients();
    let mut members = RoomRecipients::default();
    for recipient in &recipients {
        members.insert(recipient.clone());
    }
    members.insert(Recipient::new(user("@sender:hs"), "Sender".to_owned()));
    let special = members.special(&db, &profiles).unwrap();
    assert!(special.is_empty(), "nobody has custom rules or a pusher");
    let rules = RoomVersionRules::V11;
    let levels: RoomPowerLevelsEventContent = serde_json::from_value(json!({"users": {"@sender:hs": 100}})).unwrap();
    let power_levels = RoomPowerLevels::new(RoomPowerLevelsSource::from(Some(levels)), &rules.authorization, vec![]);
    let mut checked = 0;
    for joined_members in [2u64, 3, 1000] {
        let room = RoomFacts {
            room_id: owned_room_id!("!room:hs"),
            joined_members,
            power_levels: Some(power_levels.clone().into()),
        };
        for event in events() {
            let audience = Audience { members: &members, special: &special, invitee: None };
            let decided = evaluate_notifications(&db, &profiles, &event, &room, &user("@sender:hs"), audience).unwrap();
            let raw: Raw<Value> = Raw::new(&event).unwrap();
            let flattened = FlattenedJson::from_raw(&raw);
            for recipient in &recipients {
                let mut ctx = PushConditionRoomCtx::new(
                    room.room_id.clone(),
                    joined_members.try_into().unwrap(),
                    recipient.user.clone(),
                    recipient.display_name.clone(),
                );
                ctx.power_levels = room.power_levels.clone();
                let ruleset = default_ruleset(&recipient.user);
                let expected =
                    complete_now(first_match(&ruleset, (&flattened, has_mentions(&event)), &ctx, None)).unwrap();
                let expected: Vec<_> = if expected.iter().any(|a| a.should_notify()) { expected } else { Vec::new() };
                let stored = decided.outcome_of(&recipient.user).map(<[_]>::to_vec).unwrap_or_default();
                assert_eq!(
                    serde_json::to_value(&stored).unwrap(),
                    serde_json::to_value(&expected).unwrap(),
                    "{} in a room of {joined_members} for {event}",
                    recipient.user
                );
                checked += 1;
            }
            assert!(decided.outcome_of(&user("@sender:hs")).is_none(), "the sender is not notified of {event}");
        }
    }
    assert!(checked > 1000);
}

/// Screening: a name in the body, a mention and the state key single a user out; other text
/// does not.
#[test]
fn screening_singles_out_named_users_only() {
    let recipients = recipients();
    let mut members = RoomRecipients::default();
    for recipient in &recipients {
        members.insert(recipient.clone());
    }
    // Both ways of finding the named members agree: one by one, and through the room's index.
    let named = |event: Value| -> Vec<&str> {
        let screen = EventScreen::of(&event);
        let one_by_one: Vec<&str> =
            recipients.iter().filter(|r| r.may_differ(&screen)).map(|r| r.user.as_str()).collect();
        let mut indexed: Vec<&str> = members.named(&screen).map(|r| r.user.as_str()).collect();
        indexed.sort();
        indexed.dedup();
        let mut sorted = one_by_one.clone();
        sorted.sort();
        assert_eq!(indexed, sorted, "{event}");
        one_by_one
    };
    // Names that words cannot screen (`[bot] Dave`, `*`, the empty name, `Ivan?`) are always
    // evaluated when there is a body.
    let always = ["@dave_2:hs", "@erin:hs", "@frank:hs", "@ivan:hs"];
    let with_always = |mut users: Vec<&'static str>| {
        users.extend(always);
        users.sort();
        users
    };
    let mut got = named(json!({"content": {"body": "Hello BOB, hi carol."}}));
    got.sort();
    assert_eq!(got, with_always(vec!["@bob:hs", "@carol:hs"]));
    let mut got = named(json!({"content": {"body": "nothing here"}}));
    got.sort();
    assert_eq!(got, with_always(vec![]));
    assert_eq!(named(json!({"content": {"m.mentions": {"user_ids": ["@alice:hs"]}}})), vec!["@alice:hs"]);
    assert_eq!(named(json!({"state_key": "@judy:hs", "content": {}})), vec!["@judy:hs"]);
    assert!(named(json!({"content": {"key": "alice"}})).is_empty());

    // A member who leaves (or is renamed) is no longer found by their old words.
    let mut members = RoomRecipients::default();
    members.insert(Recipient::new(user("@bob:hs"), "Bob Smith".to_owned()));
    members.insert(Recipient::new(user("@bobby:hs"), "Bob".to_owned()));
    let screen = EventScreen::of(&json!({"content": {"body": "bob?"}}));
    assert_eq!(members.named(&screen).count(), 2);
    members.insert(Recipient::new(user("@bobby:hs"), "Robert".to_owned()));
    assert_eq!(members.named(&screen).map(|r| r.user.as_str()).collect::<Vec<_>>(), ["@bob:hs"]);
    members.remove(&user("@bob:hs"));
    assert_eq!(members.named(&screen).count(), 0);
    assert_eq!(members.len(), 1);
}

/// The legacy mention rules Synapse keeps: a name in the body highlights, unless the event says
/// whom it mentions with `m.mentions`.
#[test]
fn names_in_the_body_highlight_unless_the_event_has_mentions() {
    let bob = user("@bob:hs");
    let ruleset = default_ruleset(&bob);
    let mut ctx = PushConditionRoomCtx::new(owned_room_id!("!r:hs"), 3u32.into(), bob.clone(), "Bobby".to_owned());
    let rules = RoomVersionRules::V11;
    let none: Option<RoomPowerLevelsEventContent> = None;
    let power_levels = RoomPowerLevels::new(RoomPowerLevelsSource::from(none), &rules.authorization, vec![]);
    ctx.power_levels = Some(power_levels.into());
    let highlight = |content: Value| {
        let event = json!({"type": "m.room.message", "sender": "@alice:hs", "content": content});
        let raw: Raw<Value> = Raw::new(&event).unwrap();
        let flattened = FlattenedJson::from_raw(&raw);
        let actions = complete_now(first_match(&ruleset, (&flattened, has_mentions(&event)), &ctx, None)).unwrap();
        actions.iter().any(|a| a.is_highlight())
    };
    assert!(highlight(json!({"msgtype": "m.text", "body": "hi Bobby"})), "display name");
    assert!(highlight(json!({"msgtype": "m.text", "body": "hi bob!"})), "localpart");
    assert!(!highlight(json!({"msgtype": "m.text", "body": "hi bobcat"})));
    assert!(!highlight(json!({"msgtype": "m.text", "body": "hi Bobby", "m.mentions": {}})), "m.mentions says who");
    assert!(highlight(json!({"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": ["@bob:hs"]}})));
}
