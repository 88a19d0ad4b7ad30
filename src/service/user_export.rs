//! Export of one local user's data (GDPR articles 15 and 20): profile, devices (without tokens
//! or keys), account data, push rules, room memberships, the events they sent as clients see
//! them, and the media they uploaded, written to a directory as one JSON file per kind plus a
//! `media/` folder. The layout is documented in `docs/admin-guide.md` ("Exporting a user's
//! data"); [`FORMAT`] and [`FORMAT_VERSION`] in `export.json` name it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ruma::{OwnedRoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Error, Result,
    service::{Services, now_ms, server_backup::manifest::rfc3339},
    storage::{
        ScanDirection,
        tables::{ACCOUNT_DATA, MEDIA},
    },
};

/// The name of the layout, in `export.json`.
pub const FORMAT: &str = "org.trellis.user_export";
pub const FORMAT_VERSION: u64 = 1;
/// Timeline rows read per call while collecting a user's events.
const PAGE: usize = 500;

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportSummary {
    pub directory: PathBuf,
    pub user_id: String,
    pub devices: usize,
    pub rooms: usize,
    pub events: usize,
    pub media: usize,
    pub media_bytes: u64,
}

/// One file of the export: its name and JSON content.
type ExportFile = (&'static str, Value);

/// Exports `user` (a local user) into `to`, which must be absent or an empty directory.
pub async fn export(services: &Services, user: &UserId, to: PathBuf) -> Result<ExportSummary> {
    if !services.accounts.is_local(user) {
        return Err(Error::invalid_param("Only users of this server can be exported"));
    }
    if !services.accounts.exists(user).await? {
        return Err(Error::not_found("No such user"));
    }
    {
        let to = to.clone();
        tokio::task::spawn_blocking(move || prepare_directory(&to))
            .await
            .map_err(|e| Error::internal(format!("export task failed: {e}")))??;
    }

    let profile = services.profile.all(user).await?;
    let devices: Vec<Value> = services
        .sessions
        .devices(user)
        .await?
        .into_iter()
        .map(|(device_id, record)| {
            // Only what `/devices` shows; token hashes stay on the server.
            json!({
                "device_id": device_id,
                "display_name": record.display_name,
                "last_seen_ip": record.last_seen_ip,
                "last_seen_ts": record.last_seen_ms,
                "created_ts": record.created_ms,
            })
        })
        .collect();
    let account_data = account_data(services, user).await?;
    let push_rules = json!({ "global": services.push.ruleset(user).await? });

    let memberships = services.rooms.user_rooms(user).await?;
    let rooms: Vec<Value> = memberships
        .iter()
        .map(|(room_id, m)| {
            json!({"room_id": room_id, "membership": m.membership, "event_id": m.event_id, "forgotten": m.forgotten})
        })
        .collect();
    let mut events = Vec::new();
    for (room_id, _) in &memberships {
        events.extend(sent_events(services, user, room_id).await?);
    }

    let (media, files) = media(services, user).await?;
    let summary = ExportSummary {
        directory: to.clone(),
        user_id: user.to_string(),
        devices: devices.len(),
        rooms: rooms.len(),
        events: events.len(),
        media: media.len(),
        media_bytes: files.iter().map(|(_, bytes)| bytes.len() as u64).sum(),
    };
    let created_ms = now_ms();
    let index = json!({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "user_id": user,
        "server_name": services.config.server_name,
        "created_ms": created_ms,
        "created": rfc3339(created_ms),
        "trellis_version": env!("CARGO_PKG_VERSION"),
        "files": {
            "profile": "profile.json",
            "devices": "devices.json",
            "account_data": "account_data.json",
            "push_rules": "push_rules.json",
            "rooms": "rooms.json",
            "events": "events.json",
            "media": "media.json",
        },
    });
    let json_files: Vec<ExportFile> = vec![
        ("profile.json", serde_json::to_value(profile).map_err(|e| Error::internal(e.to_string()))?),
        ("devices.json", Value::Array(devices)),
        ("account_data.json", account_data),
        ("push_rules.json", push_rules),
        ("rooms.json", Value::Array(rooms)),
        ("events.json", Value::Array(events)),
        ("media.json", Value::Array(media)),
        // Last: a directory without it is an interrupted export.
        ("export.json", index),
    ];
    tokio::task::spawn_blocking(move || write_all(&to, files, json_files))
        .await
        .map_err(|e| Error::internal(format!("export task failed: {e}")))??;
    Ok(summary)
}

fn prepare_directory(to: &Path) -> Result<()> {
    if !to.is_absolute() {
        return Err(Error::invalid_param("The export directory must be an absolute path"));
    }
    if std::fs::read_dir(to).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::invalid_param(format!("The export directory {} exists and is not empty", to.display())));
    }
    std::fs::create_dir_all(to.join("media"))
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", to.display())))
}

fn write_all(to: &Path, media: Vec<(String, Vec<u8>)>, json_files: Vec<ExportFile>) -> Result<()> {
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))
    };
    for (name, bytes) in &media {
        write(to.join("media").join(name), bytes)?;
    }
    for (name, value) in json_files {
        let text = serde_json::to_vec_pretty(&value).map_err(|e| Error::internal(e.to_string()))?;
        write(to.join(name), &text)?;
    }
    Ok(())
}

/// `{"global": {type: content}, "rooms": {room_id: {type: content}}}`.
async fn account_data(services: &Services, user: &UserId) -> Result<Value> {
    let user = user.to_owned();
    let rows = services.db.run(move |db| Ok(ACCOUNT_DATA.scan_prefix(db, &(user,))?)).await?;
    let mut global = serde_json::Map::new();
    let mut rooms: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for ((_, room, kind), content) in rows {
        let content: Value = serde_json::from_str(content.get()).unwrap_or(Value::Null);
        match room.is_empty() {
            true => global.insert(kind, content),
            false => rooms.entry(room).or_default().insert(kind, content),
        };
    }
    Ok(json!({"global": global, "rooms": rooms}))
}

/// The events `user` sent in `room_id` that they can see, oldest first, as clients see them.
async fn sent_events(services: &Services, user: &UserId, room_id: &OwnedRoomId) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    // A room known only by an invite over federation has no timeline here.
    if services.rooms.version(room_id).await?.is_none() {
        return Ok(out);
    }
    let mut from = None;
    loop {
        let sender = user.to_owned();
        let (page, next) = services
            .rooms
            .timeline_filtered(user, room_id, from, ScanDirection::Forward, PAGE, move |pdu| {
                pdu.sender_user() == sender
            })
            .await?;
        out.extend(page.iter().map(|event| event.pdu.to_client_event()));
        match next {
            Some(position) if Some(position) != from => from = Some(position),
            _ => break,
        }
    }
    Ok(out)
}

/// The metadata of every file `user` uploaded, and the files (`media/<media_id>`).
async fn media(services: &Services, user: &UserId) -> Result<(Vec<Value>, Vec<(String, Vec<u8>)>)> {
    let owner = user.to_owned();
    // Media is keyed by ID with no index by uploader: an export reads the whole table once.
    let records = services
        .db
        .run(move |db| {
            Ok(MEDIA
                .all(db)?
                .into_iter()
                .filter(|(_, record)| record.uploader.as_ref() == Some(&owner))
                .collect::<Vec<_>>())
        })
        .await?;
    let server = services.config.server_name.clone();
    let mut metadata = Vec::new();
    let mut files = Vec::new();
    for (media_id, record) in records {
        // Media IDs are URL-safe letters, digits, `_` and `-`, so they are safe file names.
        if media_id.is_empty() || !media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            continue;
        }
        let bytes = services.media.local_file(&record.sha256).await?;
        metadata.push(json!({
            "media_id": media_id,
            "content_uri": format!("mxc://{server}/{media_id}"),
            "content_type": record.content_type,
            "filename": record.filename,
            "size": record.size,
            "sha256": record.sha256,
            "created_ts": record.created_ms,
            "file": bytes.as_ref().map(|_| format!("media/{media_id}")),
        }));
        if let Some(bytes) = bytes {
            files.push((media_id, bytes));
        }
    }
    Ok((metadata, files))
}
