//! Membership changes of local users in local rooms: join, leave, invite, kick, ban, unban,
//! knock. Each is a member event through the acceptance path, so the auth rules decide; this
//! adds what the rules leave to the resident server (restricted joins, what a leave may undo).

use http::StatusCode;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    api::error::ErrorKind,
    events::{StateEventType, TimelineEventType},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Accepted, NewEvent, Rooms};
use crate::{
    Error, Result,
    storage::{admin_tables::BLOCKED_ROOMS, tables::USERS},
};

#[derive(Deserialize)]
struct JoinRules {
    join_rule: String,
    #[serde(default)]
    allow: Vec<AllowRule>,
}

#[derive(Deserialize)]
struct AllowRule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room_id: Option<ruma::OwnedRoomId>,
}

/// A membership change someone asked for.
pub struct MembershipChange<'a> {
    pub sender: &'a UserId,
    pub target: &'a UserId,
    pub membership: &'a str,
    pub reason: Option<String>,
    /// Display name and avatar to put in the member event (for joins).
    pub profile: Map<String, Value>,
}

impl Rooms {
    async fn member_content(&self, change: &MembershipChange<'_>) -> Map<String, Value> {
        let mut content = change.profile.clone();
        content.insert("membership".into(), json!(change.membership));
        if let Some(reason) = &change.reason {
            content.insert("reason".into(), json!(reason));
        }
        content
    }

    /// Sends a member event for a change.
    pub async fn change_membership(&self, room_id: &RoomId, change: MembershipChange<'_>) -> Result<Accepted> {
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room; joining rooms on other servers needs federation"));
        }
        if matches!(change.membership, "join" | "invite" | "knock")
            && change.target.server_name() == self.core.server_name
        {
            self.check_not_blocked(room_id).await?;
        }
        let mut content = self.member_content(&change).await;
        if change.membership == "join" {
            self.check_guest_join(room_id, change.target).await?;
            self.authorise_restricted_join(room_id, change.target, &mut content).await?;
        }
        let event = NewEvent::state(TimelineEventType::RoomMember, change.target.as_str(), Value::Object(content));
        self.send(room_id, change.sender, event).await
    }

    /// `M_FORBIDDEN` when the server's admins blocked the room (admin API): this server's
    /// users may not join, knock or be invited.
    pub async fn check_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        let room = room_id.to_owned();
        let blocked = self.run(move |_, db| Ok(BLOCKED_ROOMS.get(db, &room)?.is_some())).await?;
        if blocked {
            return Err(Error::forbidden("This room has been blocked on this server"));
        }
        Ok(())
    }

    /// A guest may join only a room whose `m.room.guest_access` is `can_join` (a spec MUST);
    /// `M_FORBIDDEN` otherwise. Other users pass.
    pub async fn check_guest_join(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let owned = user.to_owned();
        let guest = self.run(move |_, db| Ok(USERS.get(db, &owned)?.is_some_and(|record| record.guest))).await?;
        if !guest {
            return Ok(());
        }
        let access = self.state_event(room_id, &"m.room.guest_access".into(), "").await?;
        if access.is_some_and(|pdu| pdu.content_value()["guest_access"] == "can_join") {
            Ok(())
        } else {
            Err(Error::forbidden("Guests may not join this room: its guest access is not can_join"))
        }
    }

    /// For restricted join rules (v8+), a user who is not invited may join when they are in a
    /// room the rules allow; the join then names a local user who may invite, as the spec asks.
    async fn authorise_restricted_join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        content: &mut Map<String, Value>,
    ) -> Result<()> {
        if let Some(authoriser) = self.restricted_join_authoriser(room_id, user).await? {
            content.insert("join_authorised_via_users_server".into(), json!(authoriser));
        }
        Ok(())
    }

    /// The local user who authorises `user`'s join under restricted join rules (v8+), local or
    /// remote user alike: `None` when the rules are not restricted or the user is invited or
    /// joined already. Refused with `M_FORBIDDEN` when the user is in no room the rules allow,
    /// `M_UNABLE_TO_AUTHORISE_JOIN` when this server is in none of those rooms (it cannot tell),
    /// and `M_UNABLE_TO_GRANT_JOIN` when no local user may invite.
    pub async fn restricted_join_authoriser(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OwnedUserId>> {
        let Some(rules) = self.state_event(room_id, &"m.room.join_rules".into(), "").await? else { return Ok(None) };
        let Ok(rules) = serde_json::from_str::<JoinRules>(rules.content.get()) else { return Ok(None) };
        if rules.join_rule != "restricted" && rules.join_rule != "knock_restricted" {
            return Ok(None);
        }
        let member = |room: OwnedRoomId| async move {
            let event = self.state_event(&room, &StateEventType::RoomMember, user.as_str()).await?;
            Ok::<_, Error>(event.map(|pdu| super::accept::membership_in(&pdu.content)))
        };
        if member(room_id.to_owned()).await?.is_some_and(|m| m == "join" || m == "invite") {
            return Ok(None);
        }
        // With no room allowed at all (a `knock_restricted` room without an allow list), no
        // server could authorise the join: it is plainly forbidden.
        let (mut allowed, mut known, mut any_room) = (false, false, false);
        for rule in rules.allow.iter().filter(|r| r.kind == "m.room_membership") {
            let Some(allowed_room) = &rule.room_id else { continue };
            any_room = true;
            known |= self.version(allowed_room).await?.is_some();
            if member(allowed_room.clone()).await?.is_some_and(|m| m == "join") {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Err(if known || !any_room || user.server_name() == self.core.server_name {
                Error::forbidden("You are not in any room that this room's join rules allow")
            } else {
                Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::UnableToAuthorizeJoin,
                    "This server is in none of the rooms the join rules allow, so it cannot authorise the join",
                )
            });
        }
        let power_levels = self.power_levels(room_id).await?;
        let members = self.current_state(room_id).await?;
        let authoriser = members.iter().find_map(|pdu| {
            let user = UserId::parse(pdu.state_key.as_deref()?).ok()?;
            let joined =
                pdu.kind == TimelineEventType::RoomMember && super::accept::membership_in(&pdu.content) == "join";
            (joined && user.server_name() == self.core.server_name && power_levels.can_invite(&user)).then_some(user)
        });
        authoriser.map(Some).ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UnableToGrantJoin,
                "No user of this server can authorise your join",
            )
        })
    }
}

impl Rooms {
    /// Sends a fresh join event with the user's new profile into every room they are joined to.
    /// A room that refuses (for example, the user lacks power there) is logged and skipped.
    pub async fn propagate_profile(&self, user: &UserId, profile: Map<String, Value>) -> Result<()> {
        for (room_id, membership) in self.user_rooms(user).await? {
            if membership.membership != "join" {
                continue;
            }
            let change = MembershipChange {
                sender: user,
                target: user,
                membership: "join",
                reason: None,
                profile: profile.clone(),
            };
            if let Err(error) = self.change_membership(&room_id, change).await {
                tracing::warn!(%room_id, %user, %error, "could not update the member event with the new profile");
            }
        }
        Ok(())
    }

    /// Leaves every room and rejects every invite (account deactivation).
    pub async fn leave_all_rooms(&self, user: &UserId) -> Result<()> {
        for (room_id, membership) in self.user_rooms(user).await? {
            if !matches!(membership.membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            let change =
                MembershipChange { sender: user, target: user, membership: "leave", reason: None, profile: Map::new() };
            if let Err(error) = self.change_membership(&room_id, change).await {
                tracing::warn!(%room_id, %user, %error, "could not leave the room on deactivation");
            }
        }
        Ok(())
    }
}
