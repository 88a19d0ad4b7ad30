//! Room creation as `/createRoom` specifies it: the create event, the creator's join, power
//! levels, the canonical alias, the preset's events, `initial_state`, name, topic, invites, in
//! that order, each through the acceptance path, and all written in one batch.

use http::StatusCode;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, api::error::ErrorKind,
    events::TimelineEventType,
};
use serde_json::{Map, Value, json};

use super::{NewEvent, RoomCore, Rooms, pdu::event_id_of};
use crate::{
    Error, Result,
    service::random_string,
    storage::{
        Batch, Db, Staged,
        room_tables::{ALIASES, AliasRecord, PUBLIC_ROOMS, ROOM_ALIASES},
    },
};

/// The presets of `/createRoom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything `/createRoom` asked for, checked by the handler.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    pub version: RoomVersionId,
    pub preset: Preset,
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
    pub alias: Option<OwnedRoomAliasId>,
    /// (type, state key, content) in request order.
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// The creator's member event content (display name and avatar).
    pub creator_member: Map<String, Value>,
    /// Whether to publish the room in the public room directory.
    pub publish: bool,
}

impl RoomSpec {
    /// A room of `version` and `preset` with nothing else asked for.
    pub fn new(version: RoomVersionId, preset: Preset) -> Self {
        Self {
            version,
            preset,
            creation_content: Map::new(),
            power_level_override: None,
            alias: None,
            initial_state: Vec::new(),
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            creator_member: Map::new(),
            publish: false,
        }
    }
}

fn is_v12_or_later(version: &RoomVersionId) -> bool {
    crate::service::rooms::versions::rules(version)
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators)
}

/// Before v11 the create event names its creator; from v11 the sender is the creator.
fn has_creator_field(version: &RoomVersionId) -> bool {
    crate::service::rooms::versions::rules(version).is_some_and(|rules| !rules.authorization.use_room_create_sender)
}

/// The power levels a new room starts with (what Synapse uses, so clients see familiar rooms).
fn default_power_levels(spec: &RoomSpec, creator: &UserId) -> Map<String, Value> {
    let v12 = is_v12_or_later(&spec.version);
    let mut users = Map::new();
    if !v12 {
        users.insert(creator.to_string(), json!(100));
        if spec.preset == Preset::TrustedPrivateChat {
            for invitee in &spec.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    // From v12 creators have infinite power; tombstones must need more than `state_default`.
    let tombstone = if v12 { 150 } else { 100 };
    let invite = if spec.preset == Preset::PublicChat { 50 } else { 0 };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite,
        "historical": 100,
    });
    if let (Some(object), Some(overrides)) = (content.as_object_mut(), &spec.power_level_override) {
        for (key, value) in overrides {
            object.insert(key.clone(), value.clone());
        }
    }
    content.as_object().cloned().unwrap_or_default()
}

impl RoomCore {
    pub(super) fn build_and_accept(
        &self,
        db: &Db,
        room_id: &RoomId,
        version: &RoomVersionId,
        sender: &UserId,
        event: NewEvent,
    ) -> Result<()> {
        let json = self.build(db, Some(room_id), version, sender, event, None)?;
        self.accept(db, Some(room_id), version, json)?;
        Ok(())
    }

    /// Accepts a new room's create event and returns the room ID: derived from the create
    /// event from v12, random before.
    pub(super) fn accept_create(
        &self,
        db: &Db,
        version: &RoomVersionId,
        creator: &UserId,
        create: NewEvent,
    ) -> Result<OwnedRoomId> {
        let rules = crate::service::rooms::versions::rules(version)
            .ok_or_else(|| Error::internal("unsupported room version"))?;
        if rules.authorization.room_create_event_id_as_room_id {
            let json = self.build(db, None, version, creator, create, None)?;
            let event_id = event_id_of(&json, &rules).map_err(Error::internal)?;
            let room_id = OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                .map_err(|e| Error::internal(e.to_string()))?;
            self.accept(db, Some(&room_id), version, json)?;
            Ok(room_id)
        } else {
            let room_id = OwnedRoomId::try_from(format!("!{}:{}", random_string(18), self.server_name))
                .map_err(|e| Error::internal(e.to_string()))?;
            self.build_and_accept(db, &room_id, version, creator, create)?;
            Ok(room_id)
        }
    }

    fn create_room(&self, db: &Db, creator: &UserId, spec: RoomSpec) -> Result<OwnedRoomId> {
        let version = spec.version.clone();
        let mut create_content = spec.creation_content.clone();
        create_content.insert("room_version".into(), json!(version.as_str()));
        if has_creator_field(&version) {
            create_content.insert("creator".into(), json!(creator));
        } else {
            create_content.remove("creator");
        }
        if is_v12_or_later(&version) && spec.preset == Preset::TrustedPrivateChat {
            let mut creators: Vec<Value> =
                create_content.get("additional_creators").and_then(Value::as_array).cloned().unwrap_or_default();
            for invitee in &spec.invite {
                let invitee = json!(invitee);
                if !creators.contains(&invitee) && invitee != json!(creator) {
                    creators.push(invitee);
                }
            }
            create_content.insert("additional_creators".into(), Value::Array(creators));
        }
        let create = NewEvent::state(TimelineEventType::RoomCreate, "", Value::Object(create_content));

        let room_id = self.accept_create(db, &version, creator, create)?;

        let mut member = spec.creator_member.clone();
        member.insert("membership".into(), json!("join"));
        self.build_and_accept(
            db,
            &room_id,
            &version,
            creator,
            NewEvent::state(TimelineEventType::RoomMember, creator.as_str(), Value::Object(member)),
        )?;
        let power_levels = default_power_levels(&spec, creator);
        self.build_and_accept(
            db,
            &room_id,
            &version,
            creator,
            NewEvent::state(TimelineEventType::RoomPowerLevels, "", Value::Object(power_levels)),
        )?;
        if let Some(alias) = &spec.alias {
            self.build_and_accept(
                db,
                &room_id,
                &version,
                creator,
                NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", json!({"alias": alias})),
            )?;
        }
        // A public chat gets no `m.room.guest_access` (no event means guests may not join), as
        // Synapse does: other servers (Complement's `TestInboundCanReturnMissingEvents`) expect
        // a public room's history to be exactly create, member, power levels, join rules and
        // history visibility.
        let (join_rule, guest_access) = match spec.preset {
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", Some("can_join")),
            Preset::PublicChat => ("public", None),
        };
        let preset_events = [
            Some(("m.room.join_rules", json!({"join_rule": join_rule}))),
            Some(("m.room.history_visibility", json!({"history_visibility": "shared"}))),
            guest_access.map(|access| ("m.room.guest_access", json!({"guest_access": access}))),
        ];
        for (kind, content) in preset_events.into_iter().flatten() {
            // `initial_state` wins over the preset for the same state.
            if spec.initial_state.iter().any(|(k, s, _)| k == kind && s.is_empty()) {
                continue;
            }
            self.build_and_accept(db, &room_id, &version, creator, NewEvent::state(kind.into(), "", content))?;
        }
        for (kind, state_key, content) in &spec.initial_state {
            self.build_and_accept(
                db,
                &room_id,
                &version,
                creator,
                NewEvent::state(kind.as_str().into(), state_key.clone(), content.clone()),
            )?;
        }
        if let Some(name) = &spec.name {
            self.build_and_accept(
                db,
                &room_id,
                &version,
                creator,
                NewEvent::state(TimelineEventType::RoomName, "", json!({"name": name})),
            )?;
        }
        if let Some(topic) = &spec.topic {
            self.build_and_accept(
                db,
                &room_id,
                &version,
                creator,
                // The plain topic also as a rich topic (`m.topic`, spec v1.15), as Synapse writes it.
                NewEvent::state(
                    TimelineEventType::RoomTopic,
                    "",
                    json!({"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}),
                ),
            )?;
        }
        // Users of other servers are invited once the room exists (through their servers).
        for invitee in spec.invite.iter().filter(|user| user.server_name() == self.server_name) {
            let mut content = json!({"membership": "invite"});
            if spec.is_direct {
                content["is_direct"] = json!(true);
            }
            self.build_and_accept(
                db,
                &room_id,
                &version,
                creator,
                NewEvent::state(TimelineEventType::RoomMember, invitee.as_str(), content),
            )?;
        }
        Ok(room_id)
    }
}

impl Rooms {
    /// Creates a room; returns its ID. The room's first events, its alias and its directory
    /// entry are built on a staged view of the database and written in one batch, so a
    /// creation that fails half-way (an `initial_state` event the auth rules refuse, an alias
    /// taken meanwhile) leaves nothing behind.
    pub async fn create_room(&self, creator: &UserId, spec: RoomSpec) -> Result<OwnedRoomId> {
        let has_alias = spec.alias.is_some();
        let creator = creator.to_owned();
        let core = self.core.clone();
        let work = move |db: &Db| core.create_room_staged(db, &creator, spec);
        // With an alias, the alias lock makes its check and its write one step.
        if has_alias { self.alias_lock.run(&self.core.db, work).await } else { self.core.db.run(work).await }
    }
}

impl RoomCore {
    fn create_room_staged(&self, db: &Db, creator: &UserId, spec: RoomSpec) -> Result<OwnedRoomId> {
        if let Some(alias) = &spec.alias
            && ALIASES.contains(db, &alias.to_string())?
        {
            return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::RoomInUse, "That room alias is already taken"));
        }
        self.staged(db, |view| {
            let (alias, publish) = (spec.alias.clone(), spec.publish);
            let room_id = self.create_room(view, creator, spec)?;
            let mut batch = Batch::new();
            if let Some(alias) = alias {
                let record = AliasRecord { room_id: room_id.clone(), creator: creator.to_owned() };
                batch.put(&ALIASES, &alias.to_string(), &record)?;
                batch.put(&ROOM_ALIASES, &(room_id.clone(), alias.to_string()), &())?;
            }
            if publish {
                batch.put(&PUBLIC_ROOMS, &room_id, &())?;
            }
            view.write(batch)?;
            Ok(room_id)
        })
    }

    /// Runs `work` (which may accept several events) on a staged view of the database and
    /// writes everything it did in one batch, or nothing if it fails.
    pub(super) fn staged<R>(&self, db: &Db, work: impl FnOnce(&Db) -> Result<R>) -> Result<R> {
        // Holds the stream's committed bound below every position the new events take until
        // their one batch is written, so no reader passes them while they are staged.
        let hold = self.positions.reserve();
        let staged = Staged::new(db);
        let result = work(&staged.db())?;
        db.write(staged.into_batch())?;
        drop(hold);
        // Events may have queued pushes while staged.
        self.push_wake.notify_one();
        Ok(result)
    }
}
