//! The server-default push rules: the spec's (ruma's `Ruleset::server_default`) plus the three
//! legacy mention rules Synapse still ships and the spec dropped in v1.17:
//! `.m.rule.contains_display_name` and `.m.rule.roomnotif` (override) and
//! `.m.rule.contains_user_name` (content). Clients and bots that mention people by writing
//! their name, without `m.mentions`, depend on them, and Complement's `TestThreadedReceipts`
//! expects their highlights. As in Synapse (MSC3952), they do not apply to an event whose
//! content has `m.mentions`: such a client says exactly whom it mentions.
//!
//! Ruma has no constructors for the legacy rules any more, so they are written here as the
//! spec's JSON (v1.16) and placed where Synapse places them.
//!
//! Also the poll rules of MSC3930 (polls notify like messages; votes do not), which Element's
//! clients expect and Complement's `TestPollsLocalPushRules` checks. Ruma has them only behind
//! its `unstable-msc3930` feature, so they are written here too.

use ruma::{UserId, push::Ruleset};
use serde_json::{Value, json};

/// The legacy mention rules, skipped for events whose content has `m.mentions`.
pub const LEGACY_MENTION_RULES: [&str; 3] =
    [".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"];

/// The server-default rules of `user`.
pub fn default_ruleset(user: &UserId) -> Ruleset {
    let spec = Ruleset::server_default(user);
    with_legacy_rules(user, &spec).unwrap_or(spec)
}

fn with_legacy_rules(user: &UserId, spec: &Ruleset) -> Option<Ruleset> {
    let mut json = serde_json::to_value(spec).ok()?;
    let highlight_with_sound =
        json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let display_name = json!({
        "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
        "conditions": [{"kind": "contains_display_name"}],
        "actions": highlight_with_sound,
    });
    let room_notif = json!({
        "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "@room"},
            {"kind": "sender_notification_permission", "key": "room"}
        ],
        "actions": ["notify", {"set_tweak": "highlight"}],
    });
    let user_name = json!({
        "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
        "pattern": user.localpart(),
        "actions": highlight_with_sound,
    });
    let overrides = json.get_mut("override")?.as_array_mut()?;
    insert_after(overrides, ".m.rule.is_user_mention", display_name);
    insert_after(overrides, ".m.rule.is_room_mention", room_notif);
    let content = json.as_object_mut()?.entry("content").or_insert_with(|| Value::Array(Vec::new()));
    content.as_array_mut()?.insert(0, user_name);
    add_poll_rules(&mut json)?;
    serde_json::from_value(json).ok()
}

/// MSC3930's rules: poll votes are silent (override, after `.m.rule.reaction` as in Synapse),
/// and poll starts and ends notify like messages, with a sound in one-to-one rooms (underride,
/// the one-to-one rules before the general ones).
fn add_poll_rules(json: &mut Value) -> Option<()> {
    let event_type = |pattern: &str| json!({"kind": "event_match", "key": "type", "pattern": pattern});
    let one_to_one = |id: &str, pattern: &str| {
        json!({
            "rule_id": id, "default": true, "enabled": true,
            "conditions": [{"kind": "room_member_count", "is": "2"}, event_type(pattern)],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        })
    };
    let any_room = |id: &str, pattern: &str| json!({"rule_id": id, "default": true, "enabled": true, "conditions": [event_type(pattern)], "actions": ["notify"]});
    let response = json!({
        "rule_id": ".org.matrix.msc3930.rule.poll_response", "default": true, "enabled": true,
        "conditions": [event_type("org.matrix.msc3381.poll.response")],
        "actions": [],
    });
    insert_after(json.get_mut("override")?.as_array_mut()?, ".m.rule.reaction", response);
    let underride = json.get_mut("underride")?.as_array_mut()?;
    let start_one = one_to_one(".org.matrix.msc3930.rule.poll_start_one_to_one", "org.matrix.msc3381.poll.start");
    let end_one = one_to_one(".org.matrix.msc3930.rule.poll_end_one_to_one", "org.matrix.msc3381.poll.end");
    insert_after(underride, ".m.rule.encrypted_room_one_to_one", start_one);
    insert_after(underride, ".org.matrix.msc3930.rule.poll_start_one_to_one", end_one);
    let start = any_room(".org.matrix.msc3930.rule.poll_start", "org.matrix.msc3381.poll.start");
    let end = any_room(".org.matrix.msc3930.rule.poll_end", "org.matrix.msc3381.poll.end");
    insert_after(underride, ".m.rule.encrypted", start);
    insert_after(underride, ".org.matrix.msc3930.rule.poll_start", end);
    Some(())
}

/// Puts `rule` right after the rule `after` (at the end when there is none).
fn insert_after(rules: &mut Vec<Value>, after: &str, rule: Value) {
    let at = rules.iter().position(|r| r["rule_id"] == after).map_or(rules.len(), |i| i + 1);
    rules.insert(at, rule);
}

/// Whether the event (as clients see it) says whom it mentions, which turns the legacy mention
/// rules off.
pub fn has_mentions(event: &Value) -> bool {
    event.get("content").and_then(|content| content.get("m.mentions")).is_some()
}
