//! Who may invite a user: the user's invite permission config in their account data. Both the
//! stable `m.invite_permission_config` (spec v1.18: `default_action: "block"` refuses every
//! invite) and MSC4155's `org.matrix.msc4155.invite_permission_config` (lists of users and
//! servers, with `*` and `?` globs, to allow, ignore or block), as Synapse reads them:
//! - user rules come before server rules; at each level, allow before ignore before block;
//! - a blocked invite is refused with 403 `M_INVITE_BLOCKED`, locally and over federation;
//! - an ignored invite is made, but the invitee's syncs do not show it.

use ruma::{UserId, api::error::ErrorKind};
use serde_json::Value;

use super::account_data::AccountData;
use crate::{Error, Result};

pub const STABLE_TYPE: &str = "m.invite_permission_config";
pub const UNSTABLE_TYPE: &str = "org.matrix.msc4155.invite_permission_config";

/// What to do with an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Ignore,
    Block,
}

impl Decision {
    /// The error a blocked invite gets; `Ok` otherwise.
    pub fn check(self) -> Result<()> {
        if self == Decision::Block {
            return Err(Error::new(
                http::StatusCode::FORBIDDEN,
                ErrorKind::InviteBlocked,
                "This user does not accept invites from you",
            ));
        }
        Ok(())
    }
}

impl AccountData {
    /// What `invitee`'s invite permission config says of an invite from `inviter`.
    pub async fn invite_decision(&self, invitee: &UserId, inviter: &UserId) -> Result<Decision> {
        let read = |raw: Option<Box<serde_json::value::RawValue>>| {
            raw.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok()).unwrap_or(Value::Null)
        };
        let stable = read(self.get(invitee, None, STABLE_TYPE).await?);
        let unstable = read(self.get(invitee, None, UNSTABLE_TYPE).await?);
        Ok(decide(&stable, &unstable, inviter))
    }
}

/// The decision for an invite from `inviter`, given the two configs (`null` when unset).
pub fn decide(stable: &Value, unstable: &Value, inviter: &UserId) -> Decision {
    let list = |key: &str| -> Vec<&str> {
        unstable
            .get(key)
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let matches = |key: &str, name: &str| list(key).iter().any(|pattern| glob(pattern, name));
    let (user, server) = (inviter.as_str(), inviter.server_name().as_str());
    let rules = [
        ("allowed_users", user, Decision::Allow),
        ("ignored_users", user, Decision::Ignore),
        ("blocked_users", user, Decision::Block),
        ("allowed_servers", server, Decision::Allow),
        ("ignored_servers", server, Decision::Ignore),
        ("blocked_servers", server, Decision::Block),
    ];
    if let Some((_, _, decision)) = rules.iter().find(|(key, name, _)| matches(key, name)) {
        return *decision;
    }
    if stable.get("default_action").and_then(Value::as_str) == Some("block") {
        return Decision::Block;
    }
    Decision::Allow
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one.
fn glob(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point for the last `*` (linear in practice).
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn globs_and_precedence() {
        assert!(glob("hs*", "hs2"));
        assert!(glob("@user-?*", "@user-12:hs1"));
        assert!(!glob("@user-?*", "@user-"));
        assert!(!glob("hs?", "hs12"));
        let bob = ruma::user_id!("@bob:hs2");
        let config = json!({"allowed_users": ["@bob:hs2"], "blocked_servers": ["hs2"]});
        assert_eq!(decide(&Value::Null, &config, bob), Decision::Allow);
        let config = json!({"blocked_users": ["@bob:hs2"], "allowed_servers": ["hs2"]});
        assert_eq!(decide(&Value::Null, &config, bob), Decision::Block);
        let config = json!({"ignored_users": ["@bob:hs2"], "blocked_users": ["@bob:hs2"]});
        assert_eq!(decide(&Value::Null, &config, bob), Decision::Ignore);
        let nulls = json!({"allowed_users": null, "blocked_servers": null});
        assert_eq!(decide(&Value::Null, &nulls, bob), Decision::Allow);
        assert_eq!(decide(&json!({"default_action": "block"}), &Value::Null, bob), Decision::Block);
    }
}
