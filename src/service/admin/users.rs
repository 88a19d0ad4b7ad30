//! Users for the admin API: the list with Synapse's filters and paging, one user's details,
//! and deactivation (also what the client API's `/account/deactivate` does).

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{
    Result,
    service::Services,
    storage::tables::{USERS, UserRecord},
};

/// What `GET /_synapse/admin/v2/users` filters on.
#[derive(Debug, Default)]
pub struct UserFilter {
    /// Part of the user ID or display name, case-insensitive.
    pub name: Option<String>,
    /// Part of the user ID only.
    pub user_id: Option<String>,
    pub guests: bool,
    pub deactivated: bool,
    /// `Some(true)`: only admins; `Some(false)`: only non-admins.
    pub admins: Option<bool>,
    /// Whether locked users are listed (Synapse leaves them out unless asked).
    pub locked: bool,
}

/// A user as the admin API lists it.
pub async fn user_json(services: &Services, user_id: &UserId, record: &UserRecord) -> Result<Value> {
    let profile = services.profile.all(user_id).await?;
    Ok(json!({
        "name": user_id,
        "user_type": null,
        "is_guest": record.guest,
        "admin": record.admin,
        "deactivated": record.deactivated,
        "erased": super::erasure::is_erased(services, user_id).await?,
        "shadow_banned": record.shadow_banned,
        "locked": record.locked,
        "suspended": record.suspended,
        "displayname": profile.get("displayname").cloned().unwrap_or(Value::Null),
        "avatar_url": profile.get("avatar_url").cloned().unwrap_or(Value::Null),
        "creation_ts": record.created_ms,
        "approved": true,
        "appservice_id": services.appservices.all().iter().find(|s| crate::service::appservice::wants_user(s, user_id.as_str())).map(|s| s.id().to_owned()),
        "threepids": [],
        "external_ids": [],
        "consent_version": null,
        "consent_server_notice_sent": null,
        "last_seen_ts": null,
    }))
}

/// One page of users in user ID order: those after `from` entries, at most `limit`, with the
/// total that match.
pub async fn list(services: &Services, filter: &UserFilter, from: usize, limit: usize) -> Result<(Vec<Value>, usize)> {
    let all: Vec<(OwnedUserId, UserRecord)> = services.db.run(|db| Ok(USERS.all(db)?)).await?;
    let mut matching = Vec::new();
    for (user_id, record) in all {
        if (record.guest && !filter.guests) || (record.deactivated && !filter.deactivated) {
            continue;
        }
        if (record.locked && !filter.locked) || filter.admins.is_some_and(|admins| admins != record.admin) {
            continue;
        }
        if let Some(part) = &filter.user_id
            && !user_id.as_str().to_lowercase().contains(&part.to_lowercase())
        {
            continue;
        }
        if let Some(part) = &filter.name {
            let part = part.to_lowercase();
            let name = services.profile.field(&user_id, "displayname").await?;
            let in_name = name.as_ref().and_then(Value::as_str).is_some_and(|n| n.to_lowercase().contains(&part));
            if !in_name && !user_id.as_str().to_lowercase().contains(&part) {
                continue;
            }
        }
        matching.push((user_id, record));
    }
    let total = matching.len();
    let mut page = Vec::new();
    for (user_id, record) in matching.iter().skip(from).take(limit) {
        page.push(user_json(services, user_id, record).await?);
    }
    Ok((page, total))
}

/// Deactivates an account: no more logins, every device and pusher gone, every room left and
/// invite rejected (on other servers too); with `erase`, the account's data is erased as well
/// (see `erasure.rs`).
pub async fn deactivate(services: &Services, user_id: &UserId, erase: bool) -> Result<()> {
    services.accounts.deactivate(user_id).await?;
    services.sessions.delete_all_devices_except(user_id, None).await?;
    services.push.remove_device_pushers(user_id, |_| true).await?;
    if erase {
        // Before leaving: the leave events carry no profile then.
        super::erasure::erase_account(services, user_id).await?;
    }
    services.rooms.leave_all_rooms(user_id).await?;
    crate::service::federation::membership::reject_all_remote_invites(services, user_id).await?;
    tracing::info!(%user_id, erase, "deactivated account");
    Ok(())
}
