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
    serde_json::from_value(json).ok()
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
