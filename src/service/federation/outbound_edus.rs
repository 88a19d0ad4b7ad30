//! EDUs this server sends about its users. Typing is queued as it happens ([`typing`]); the
//! rest follow their streams from cursors stored with the queued EDUs (in `OUTBOUND_CURSOR`),
//! as the event follower does, so a crash loses nothing and sends nothing twice:
//! - receipts (`m.read` only; private receipts stay here) to the servers in the room;
//! - presence, when presence is on, to the servers sharing a room with the user;
//! - device list changes (`m.device_list_update`, `m.signing_key_update`) to the servers
//!   sharing a room with the user;
//! - to-device messages for users of other servers, moved from the to-device service's
//!   outbound table into the queue of their server.
//!
//! A new database (or one from before this follower) starts at the streams' current positions.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ruma::{OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use super::sender::Sender;
use crate::{
    Result,
    service::Services,
    storage::{Batch, federation_send_tables::OUTBOUND_CURSOR},
};

/// How many stream positions one step reads.
const STEP: usize = 200;

/// `user` started (`true`) or stopped typing in `room`: an `m.typing` EDU for the room's
/// other servers.
pub async fn typing(services: &Services, room: &RoomId, user: &UserId, typing: bool) -> Result<()> {
    if !services.config.allow_federation {
        return Ok(());
    }
    let edu = json!({
        "edu_type": "m.typing",
        "content": { "room_id": room, "user_id": user, "typing": typing },
    });
    let edus = services.rooms.servers_in_room(room).await?.into_iter().map(|server| (server, edu.clone())).collect();
    services.federation.sender.queue_edus(edus, Batch::new()).await
}

/// Queues what changed in the receipt, presence, key-change and to-device streams.
pub(super) async fn queue_changes(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    receipts(services, sender).await?;
    presence(services, sender).await?;
    device_lists(services, sender).await?;
    to_device(services, sender).await
}

/// The stored cursor `name`, or (first time) `current`, stored.
async fn cursor(services: &Services, name: &'static str, current: u64) -> Result<u64> {
    let stored = services.db.run(move |db| Ok(OUTBOUND_CURSOR.get(db, &name.to_owned())?)).await?;
    match stored {
        Some(cursor) => Ok(cursor),
        None => {
            let mut batch = Batch::new();
            batch.put(&OUTBOUND_CURSOR, &name.to_owned(), &current)?;
            services.db.run(move |db| Ok(db.write(batch)?)).await?;
            Ok(current)
        }
    }
}

fn with_cursor(name: &'static str, position: u64) -> Result<Batch> {
    let mut batch = Batch::new();
    batch.put(&OUTBOUND_CURSOR, &name.to_owned(), &position)?;
    Ok(batch)
}

/// The other servers sharing a joined room with a local user.
async fn servers_sharing(services: &Services, user: &UserId) -> Result<BTreeSet<OwnedServerName>> {
    let mut servers = BTreeSet::new();
    for (room, membership) in services.rooms.user_rooms(user).await? {
        if membership.membership == "join" {
            servers.extend(services.rooms.servers_in_room(&room).await?);
        }
    }
    Ok(servers)
}

fn is_local(services: &Services, user: &UserId) -> bool {
    user.server_name() == services.config.server_name
}

async fn receipts(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    const NAME: &str = "receipts";
    let upto = services.receipts.position().await?;
    let mut since = cursor(services, NAME, upto).await?;
    while since < upto {
        let (changes, last) = services.receipts.public_changes(since, upto, STEP).await?;
        let mut edus = Vec::new();
        for (room, user, record) in changes.into_iter().filter(|(_, user, _)| is_local(services, user)) {
            let mut data = json!({ "ts": record.ts });
            if let Some(thread) = &record.thread_id {
                data["thread_id"] = json!(thread);
            }
            let receipt = json!({ "data": data, "event_ids": [record.event_id] });
            let edu = json!({
                "edu_type": "m.receipt",
                "content": { room.as_str(): { "m.read": { user.as_str(): receipt } } },
            });
            for server in services.rooms.servers_in_room(&room).await? {
                edus.push((server, edu.clone()));
            }
        }
        sender.queue_edus(edus, with_cursor(NAME, last)?).await?;
        since = last;
    }
    Ok(())
}

async fn presence(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    const NAME: &str = "presence";
    if !services.presence.enabled() {
        return Ok(());
    }
    let upto = services.presence.position().await?;
    let since = cursor(services, NAME, upto).await?;
    if since >= upto {
        return Ok(());
    }
    let mut pushes: BTreeMap<OwnedServerName, Vec<Value>> = BTreeMap::new();
    for (user, view) in services.presence.changes(since, upto).await? {
        if !is_local(services, &user) {
            continue;
        }
        let mut update = json!({
            "user_id": user,
            "presence": view.state.as_str(),
            "last_active_ago": view.last_active_ago.map_or(0, |ago| ago.as_millis() as u64),
            "currently_active": view.currently_active,
        });
        if let Some(status) = &view.status_msg {
            update["status_msg"] = json!(status);
        }
        for server in servers_sharing(services, &user).await? {
            pushes.entry(server).or_default().push(update.clone());
        }
    }
    let edus = pushes
        .into_iter()
        .flat_map(|(server, updates)| {
            updates
                .chunks(50)
                .map(|chunk| (server.clone(), json!({ "edu_type": "m.presence", "content": { "push": chunk } })))
                .collect::<Vec<_>>()
        })
        .collect();
    sender.queue_edus(edus, with_cursor(NAME, upto)?).await
}

async fn device_lists(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    const NAME: &str = "device_lists";
    let upto = services.keys.current_position();
    let since = cursor(services, NAME, upto).await?;
    if since >= upto {
        return Ok(());
    }
    let users: Vec<_> =
        services.keys.changed_users(since, upto).await?.into_iter().filter(|user| is_local(services, user)).collect();
    for user in users {
        let (announcements, batch) = services.keys.announcements(&user).await?;
        let servers = if announcements.is_empty() { BTreeSet::new() } else { servers_sharing(services, &user).await? };
        let edus =
            servers.iter().flat_map(|server| announcements.iter().map(|edu| (server.clone(), edu.clone()))).collect();
        sender.queue_edus(edus, batch).await?;
    }
    sender.queue_edus(Vec::new(), with_cursor(NAME, upto)?).await
}

async fn to_device(services: &Services, sender: &Arc<Sender>) -> Result<()> {
    loop {
        let (edus, batch, moved) = services.to_device.outbound_edus(STEP).await?;
        let edus = edus
            .into_iter()
            .filter_map(|(destination, edu)| Some((OwnedServerName::try_from(destination).ok()?, edu)))
            .collect();
        sender.queue_edus(edus, batch).await?;
        if moved < STEP {
            return Ok(());
        }
    }
}
