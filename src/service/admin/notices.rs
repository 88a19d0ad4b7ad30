//! Server notices (Synapse's): messages the server's admins send a user through
//! `/_synapse/admin/v1/send_server_notice`, from the configured system user, in a room of the
//! user's own that carries the `m.server_notice` tag. The room is made on the first notice
//! (the user invited, the system user the only one who may send) and reused; a user who left
//! it is invited again. One notice at a time, so two first notices make one room.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::{Map, Value, json};

use crate::{
    Error, Result,
    service::{
        Services,
        accounts::AccountKind,
        rooms::{
            NewEvent,
            create::{Preset, RoomSpec},
            membership::MembershipChange,
        },
    },
    storage::{Batch, admin_tables::SERVER_NOTICE_ROOMS},
};

/// Serialises notices (see the module comment). The admin API runs each notice in a task of its
/// own, so the lock is held until the notice is done even when the client goes away.
#[derive(Default)]
pub struct Notices {
    lock: tokio::sync::Mutex<()>,
}

impl Notices {
    /// The system user notices come from, when notices are on.
    pub fn system_user(services: &Services) -> Option<OwnedUserId> {
        let localpart = services.config.server_notices.system_mxid_localpart.as_deref()?;
        UserId::parse_with_server_name(localpart, &services.config.server_name).ok()
    }

    /// Sends `content` (an event of `kind`) to `user` as a server notice; returns the event ID.
    pub async fn send(
        &self,
        services: &Services,
        user: &UserId,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<ruma::OwnedEventId> {
        let system = Self::system_user(services)
            .ok_or_else(|| Error::invalid_param("Server notices are not enabled on this server"))?;
        if !services.accounts.is_local(user) {
            return Err(Error::invalid_param("Server notices can only be sent to users of this server"));
        }
        let record = services.accounts.get(user).await?.ok_or_else(|| Error::not_found("User not found"))?;
        if record.deactivated {
            return Err(Error::invalid_param("The user is deactivated"));
        }
        let _guard = self.lock.lock().await;
        self.ensure_system_user(services, &system).await?;
        let room = self.room_for(services, &system, user).await?;
        let event = NewEvent::message(TimelineEventType::from(kind), Value::Object(content));
        Ok(services.rooms.send(&room, &system, event).await?.event_id)
    }

    async fn ensure_system_user(&self, services: &Services, system: &UserId) -> Result<()> {
        if services.accounts.exists(system).await? {
            return Ok(());
        }
        services.accounts.create(system, None, AccountKind::User).await?;
        let config = &services.config.server_notices;
        services.profile.set_field(system, "displayname", Some(json!(config.system_mxid_display_name))).await?;
        if let Some(avatar) = &config.system_mxid_avatar_url {
            services.profile.set_field(system, "avatar_url", Some(json!(avatar))).await?;
        }
        Ok(())
    }

    /// The user's notices room, made or rejoined as needed.
    async fn room_for(&self, services: &Services, system: &UserId, user: &UserId) -> Result<OwnedRoomId> {
        let key = user.to_owned();
        let known: Option<OwnedRoomId> = services.db.run(move |db| Ok(SERVER_NOTICE_ROOMS.get(db, &key)?)).await?;
        if let Some(room) = known
            && services.rooms.version(&room).await?.is_some()
        {
            let membership = services.rooms.membership(user, &room).await?.map(|m| m.membership);
            if !matches!(membership.as_deref(), Some("join" | "invite")) {
                let invite = MembershipChange {
                    sender: system,
                    target: user,
                    membership: "invite",
                    reason: None,
                    profile: Map::new(),
                };
                services.rooms.change_membership(&room, invite).await?;
            }
            return Ok(room);
        }
        let room = self.create_room(services, system, user).await?;
        let (key, value) = (user.to_owned(), room.clone());
        services
            .db
            .run(move |db| {
                let mut batch = Batch::new();
                batch.put(&SERVER_NOTICE_ROOMS, &key, &value)?;
                Ok(db.write(batch)?)
            })
            .await?;
        Ok(room)
    }

    async fn create_room(&self, services: &Services, system: &UserId, user: &UserId) -> Result<OwnedRoomId> {
        let config = &services.config.server_notices;
        let mut spec = RoomSpec::new(RoomVersionId::V12, Preset::PrivateChat);
        spec.name = Some(config.room_name.clone());
        spec.invite = vec![user.to_owned()];
        // Only the system user may send (and change anything).
        let mut power = Map::new();
        power.insert("events_default".into(), json!(100));
        power.insert("state_default".into(), json!(100));
        spec.power_level_override = Some(power);
        let mut member = Map::new();
        member.insert("displayname".into(), json!(config.system_mxid_display_name));
        spec.creator_member = member;
        let room = services.rooms.create_room(system, spec).await?;
        tag(services, user, &room).await?;
        tracing::info!(%room, %user, "server notices room created");
        Ok(room)
    }
}

/// Tags the room `m.server_notice` for the user, so clients show it as the server's.
async fn tag(services: &Services, user: &UserId, room: &RoomId) -> Result<()> {
    services.tags.set(&services.account_data, user, room, "m.server_notice", json!({"order": 0.5})).await
}
