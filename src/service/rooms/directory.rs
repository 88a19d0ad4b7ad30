//! Room aliases and the public room directory.

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{
        Batch,
        room_tables::{ALIASES, AliasRecord, PUBLIC_ROOMS, ROOM_ALIASES},
    },
};

impl Rooms {
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        let alias = alias.to_string();
        self.run(move |_, db| Ok(ALIASES.get(db, &alias)?)).await
    }

    /// Points a local alias at a room; `M_ROOM_IN_USE` if it is taken.
    pub async fn set_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> Result<()> {
        let (alias, room_id, creator) = (alias.to_string(), room_id.to_owned(), creator.to_owned());
        self.alias_lock
            .run(&self.core.db, move |db| {
                if ALIASES.contains(db, &alias)? {
                    return Err(Error::new(
                        http::StatusCode::CONFLICT,
                        ruma::api::error::ErrorKind::RoomInUse,
                        "That room alias is already taken",
                    ));
                }
                let mut batch = Batch::new();
                batch.put(&ALIASES, &alias, &AliasRecord { room_id: room_id.clone(), creator })?;
                batch.put(&ROOM_ALIASES, &(room_id, alias), &())?;
                Ok(db.write(batch)?)
            })
            .await
    }

    pub async fn remove_alias(&self, alias: &RoomAliasId) -> Result<()> {
        let alias = alias.to_string();
        self.alias_lock
            .run(&self.core.db, move |db| {
                let record = ALIASES.get(db, &alias)?.ok_or_else(|| Error::not_found("Unknown room alias"))?;
                let mut batch = Batch::new();
                batch.delete(&ALIASES, &alias);
                batch.delete(&ROOM_ALIASES, &(record.room_id, alias));
                Ok(db.write(batch)?)
            })
            .await
    }

    pub async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let room_id = room_id.to_owned();
        self.run(move |_, db| {
            Ok(ROOM_ALIASES.scan_prefix(db, &(room_id,))?.into_iter().map(|((_, a), ())| a).collect())
        })
        .await
    }

    pub async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        let room_id = room_id.to_owned();
        self.run(move |_, db| {
            let mut batch = Batch::new();
            if published {
                batch.put(&PUBLIC_ROOMS, &room_id, &())?;
            } else {
                batch.delete(&PUBLIC_ROOMS, &room_id);
            }
            Ok(db.write(batch)?)
        })
        .await
    }

    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        let room_id = room_id.to_owned();
        self.run(move |_, db| Ok(PUBLIC_ROOMS.contains(db, &room_id)?)).await
    }

    pub async fn published_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        self.run(move |_, db| Ok(PUBLIC_ROOMS.all(db)?.into_iter().map(|(room, ())| room).collect())).await
    }
}
