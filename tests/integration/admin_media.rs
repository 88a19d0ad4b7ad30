//! Synapse's media admin API over HTTP, as an admin and a client see it: a user's media listed
//! with paging and orders, quarantined (download and thumbnail answer `404`, the same content
//! uploaded again too) and released,
//! protected from quarantine, described, deleted by ID, by last use and by user (with
//! encryption at rest on, the sealed files go too); a room's media listed and quarantined,
//! other servers' media included and then not fetched; deleting a room with
//! `new_room_user_id` moving its members to a new room; and synadm driving the list, the
//! quarantine and the deletes.

use std::{io::Cursor, path::Path};

use image::{ImageFormat, Rgba, RgbaImage};
use serde_json::{Value, json};

use crate::{
    admin_api::{synadm, synadm_available},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, register_admin, send_event},
};

fn png(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, shade, 255]));
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).expect("encode test image");
    out
}

/// Uploads `bytes` as `session`; returns the media ID.
async fn upload(server: &TestServer, session: &Session, bytes: Vec<u8>, name: &str) -> String {
    let response = server
        .http
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(&session.access_token)
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    let uri = body["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix("mxc://localhost/").expect("local mxc URI").to_owned()
}

/// Downloads (or thumbnails) media as `session`: status, and bytes or the error body.
async fn download(server: &TestServer, session: &Session, path: &str) -> (u16, Vec<u8>) {
    let response = server
        .http
        .get(server.url(&format!("/_matrix/client/v1/media/{path}")))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .expect("download sent");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

fn error_code(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).unwrap_or(Value::Null)["errcode"].clone()
}

/// Regular files in the local media store (not temporary files, not the remote cache).
fn stored_files(media: &Path) -> usize {
    fn walk(dir: &Path, count: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "tmp" && name != "remote" {
                walk(&path, count);
            } else if path.is_file() {
                *count += 1;
            }
        }
    }
    let mut count = 0;
    walk(media, &mut count);
    count
}

fn ids(list: &Value) -> Vec<String> {
    list["media"].as_array().expect("media").iter().map(|m| m["media_id"].as_str().expect("id").to_owned()).collect()
}

/// Config lines turning encryption at rest on, with a key file in `dir` (outside the data).
fn encryption_at_rest(dir: &Path) -> String {
    let key = dir.join("key");
    std::fs::write(&key, "3333333333333333333333333333333333333333333333333333333333333333\n").expect("key");
    let mut permissions = std::fs::metadata(&key).expect("key").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&key, permissions).expect("key mode");
    format!("encryption_at_rest = true\nencryption_key_file = \"{}\"\n", key.display())
}

#[tokio::test]
async fn admins_list_quarantine_protect_and_delete_media_with_encryption_at_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = tempfile::tempdir().expect("tempdir");
    let server =
        TestServer::start_in(dir.path(), "localhost", &encryption_at_rest(keys.path())).expect("server starts");
    let media_dir = dir.path().join("db").join("media");
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;

    // Everything refuses non-admins.
    for (method, path) in [
        ("GET", "/_synapse/admin/v1/users/@alice:localhost/media"),
        ("DELETE", "/_synapse/admin/v1/users/@alice:localhost/media"),
        ("GET", "/_synapse/admin/v1/room/!r:localhost/media"),
        ("POST", "/_synapse/admin/v1/room/!r:localhost/media/quarantine"),
        ("POST", "/_synapse/admin/v1/user/@alice:localhost/media/quarantine"),
        ("POST", "/_synapse/admin/v1/media/quarantine/localhost/abc"),
        ("POST", "/_synapse/admin/v1/media/unquarantine/localhost/abc"),
        ("POST", "/_synapse/admin/v1/media/protect/abc"),
        ("POST", "/_synapse/admin/v1/media/unprotect/abc"),
        ("GET", "/_synapse/admin/v1/media/localhost/abc"),
        ("DELETE", "/_synapse/admin/v1/media/localhost/abc"),
        ("POST", "/_synapse/admin/v1/media/delete?before_ts=40000000000"),
        ("POST", "/_synapse/admin/v1/purge_media_cache?before_ts=40000000000"),
    ] {
        assert_error(&server.call(method, path, alice.token(), Some(json!({}))).await, 403, "M_FORBIDDEN");
        assert_error(&server.call(method, path, None, Some(json!({}))).await, 401, "M_MISSING_TOKEN");
    }

    let empty = stored_files(&media_dir);
    let small = upload(&server, &alice, png(4, 4, 1), "small.png").await;
    let middle = upload(&server, &alice, png(64, 64, 2), "middle.png").await;
    let large = upload(&server, &alice, png(400, 300, 3), "large.png").await;
    assert_eq!(stored_files(&media_dir), empty + 3);

    // Listed newest first, in pages.
    let user_media = "/_synapse/admin/v1/users/@alice:localhost/media";
    let (status, first) = server.get(&format!("{user_media}?limit=2"), admin.token()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["total"], 3);
    assert_eq!(first["next_token"], 2);
    let (_, second) = server.get(&format!("{user_media}?limit=2&from=2"), admin.token()).await;
    assert_eq!(second["total"], 3);
    assert!(second.get("next_token").is_none(), "{second}");
    let mut all = ids(&first);
    all.extend(ids(&second));
    assert_eq!(all.len(), 3);
    let created: Vec<u64> = [&first, &second]
        .iter()
        .flat_map(|page| page["media"].as_array().expect("media").iter().map(|m| m["created_ts"].as_u64().expect("ts")))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    let entry = first["media"][0].clone();
    for field in ["media_id", "media_type", "media_length", "upload_name", "created_ts", "last_access_ts"] {
        assert!(entry.get(field).is_some(), "{field} in {entry}");
    }
    assert_eq!(entry["media_type"], "image/png");
    assert_eq!(entry["quarantined_by"], Value::Null);
    assert_eq!(entry["safe_from_quarantine"], false);
    let (_, by_size) = server.get(&format!("{user_media}?order_by=media_length&dir=f"), admin.token()).await;
    assert_eq!(ids(&by_size), [small.clone(), middle.clone(), large.clone()]);
    let (_, by_size) = server.get(&format!("{user_media}?order_by=media_length&dir=b"), admin.token()).await;
    assert_eq!(ids(&by_size), [large.clone(), middle.clone(), small.clone()]);
    let (_, by_name) = server.get(&format!("{user_media}?order_by=upload_name"), admin.token()).await;
    assert_eq!(ids(&by_name), [large.clone(), middle.clone(), small.clone()]);
    assert_error(&server.get(&format!("{user_media}?order_by=colour"), admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&format!("{user_media}?dir=x"), admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&format!("{user_media}?limit=-1"), admin.token()).await, 400, "M_INVALID_PARAM");
    let elsewhere = "/_synapse/admin/v1/users/@x:elsewhere/media";
    assert_error(&server.get(elsewhere, admin.token()).await, 400, "M_INVALID_PARAM");
    let ghost = "/_synapse/admin/v1/users/@ghost:localhost/media";
    assert_error(&server.get(ghost, admin.token()).await, 404, "M_NOT_FOUND");

    // Quarantined: neither download nor thumbnail; released: served again.
    let thumbnail = format!("thumbnail/localhost/{large}?width=32&height=32&method=scale");
    assert_eq!(download(&server, &bob, &thumbnail).await.0, 200);
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{large}");
    let (status, body) = server.post(&quarantine, admin.token(), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    for path in [format!("download/localhost/{large}"), thumbnail.clone()] {
        let (status, body) = download(&server, &bob, &path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(error_code(&body), "M_NOT_FOUND");
    }
    let (_, listed) = server.get(&format!("{user_media}?order_by=media_length"), admin.token()).await;
    assert_eq!(listed["media"][2]["quarantined_by"], admin.user_id.as_str());
    // The same content uploaded again is quarantined at once.
    let copy = upload(&server, &bob, png(400, 300, 3), "copy.png").await;
    assert_eq!(download(&server, &bob, &format!("download/localhost/{copy}")).await.0, 404);
    let (_, info) = server.get(&format!("/_synapse/admin/v1/media/localhost/{large}"), admin.token()).await;
    assert_eq!(info["media_info"]["quarantined_by"], admin.user_id.as_str());
    assert_eq!(info["media_info"]["user_id"], alice.user_id.as_str());
    assert_eq!(info["media_info"]["upload_name"], "large.png");
    assert_eq!(info["media_info"]["media_origin"], Value::Null);
    let unquarantine = format!("/_synapse/admin/v1/media/unquarantine/localhost/{large}");
    assert_eq!(server.post(&unquarantine, admin.token(), json!({})).await.0, 200);
    let (status, bytes) = download(&server, &bob, &format!("download/localhost/{large}")).await;
    assert_eq!((status, bytes), (200, png(400, 300, 3)));
    assert_eq!(download(&server, &bob, &thumbnail).await.0, 200);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{copy}")).await.0, 200, "released with it");
    // Deleting the copy leaves the file it shares with the original.
    let (status, deleted) =
        server.call("DELETE", &format!("/_synapse/admin/v1/media/localhost/{copy}"), admin.token(), None).await;
    assert_eq!((status, deleted), (200, json!({"deleted_media": [copy], "total": 1})));
    assert_eq!(download(&server, &bob, &format!("download/localhost/{large}")).await.0, 200);
    // The download was recorded as the media's last use.
    let (_, info) = server.get(&format!("/_synapse/admin/v1/media/localhost/{large}"), admin.token()).await;
    assert!(info["media_info"]["last_access_ts"].as_u64().is_some(), "{info}");

    // Protected media is never quarantined, neither by ID nor with the user's media.
    assert_eq!(
        server.post(&format!("/_synapse/admin/v1/media/protect/{middle}"), admin.token(), json!({})).await.0,
        200
    );
    let by_id = format!("/_synapse/admin/v1/media/quarantine/localhost/{middle}");
    assert_eq!(server.post(&by_id, admin.token(), json!({})).await.0, 200);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{middle}")).await.0, 200);
    let (status, counted) =
        server.post("/_synapse/admin/v1/user/@alice:localhost/media/quarantine", admin.token(), json!({})).await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted["num_quarantined"], 2);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{middle}")).await.0, 200);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{small}")).await.0, 404);
    let (_, listed) = server.get(&format!("{user_media}?order_by=media_length"), admin.token()).await;
    assert_eq!(listed["media"][1]["safe_from_quarantine"], true);
    assert_eq!(listed["media"][1]["quarantined_by"], Value::Null);
    let unprotect = format!("/_synapse/admin/v1/media/unprotect/{middle}");
    assert_eq!(server.post(&unprotect, admin.token(), json!({})).await.0, 200);

    // Deleted by ID: gone for downloads, for the admin API and from the disk.
    assert_eq!(server.post(&unquarantine, admin.token(), json!({})).await.0, 200);
    let one = format!("/_synapse/admin/v1/media/localhost/{large}");
    let (status, deleted) = server.call("DELETE", &one, admin.token(), Some(json!({}))).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"deleted_media": [large], "total": 1}));
    assert_eq!(download(&server, &bob, &format!("download/localhost/{large}")).await.0, 404);
    assert_eq!(download(&server, &bob, &thumbnail).await.0, 404);
    assert_error(&server.get(&one, admin.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.call("DELETE", &one, admin.token(), None).await, 404, "M_NOT_FOUND");
    let remote = "/_synapse/admin/v1/media/elsewhere.example/abc";
    assert_eq!(server.call("DELETE", remote, admin.token(), None).await.0, 400);
    assert_eq!(stored_files(&media_dir), empty + 2, "the original and its thumbnail are gone");

    // Deleted by last use: quarantined media and avatars stay, unless avatars are asked for.
    let avatar = upload(&server, &bob, png(8, 8, 9), "avatar.png").await;
    let profile = "/_matrix/client/v3/profile/@bob:localhost/avatar_url";
    assert_eq!(
        server.put(profile, bob.token(), json!({"avatar_url": format!("mxc://localhost/{avatar}")})).await.0,
        200
    );
    let stale = upload(&server, &bob, png(9, 9, 8), "stale.png").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let before = format!("/_synapse/admin/v1/media/delete?before_ts={}", now + 60_000);
    assert_error(
        &server.post("/_synapse/admin/v1/media/delete", admin.token(), json!({})).await,
        400,
        "M_MISSING_PARAM",
    );
    let too_old = server.post("/_synapse/admin/v1/media/delete?before_ts=1000", admin.token(), json!({})).await;
    assert_error(&too_old, 400, "M_INVALID_PARAM");
    let (status, deleted) = server.post(&before, admin.token(), json!({})).await;
    assert_eq!(status, 200, "{deleted}");
    let mut gone: Vec<&str> =
        deleted["deleted_media"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    gone.sort();
    let mut expected = [middle.as_str(), stale.as_str()];
    expected.sort();
    assert_eq!(gone, expected, "the quarantined one ({small}) and the avatar ({avatar}) stay");
    assert_eq!(deleted["total"], 2);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{avatar}")).await.0, 200);
    let all_of_them = format!("{before}&keep_profiles=false");
    let (_, deleted) = server.post(&all_of_them, admin.token(), json!({})).await;
    assert_eq!(deleted["deleted_media"], json!([avatar]));
    assert_eq!(download(&server, &bob, &format!("download/localhost/{avatar}")).await.0, 404);

    // Deleted with the user's media: quarantined or not.
    let (status, deleted) = server.call("DELETE", user_media, admin.token(), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted_media"], json!([small]));
    let (_, listed) = server.get(user_media, admin.token()).await;
    assert_eq!(listed["total"], 0);
    assert_eq!(stored_files(&media_dir), empty, "every file is gone from the disk");
}

/// Quarantined content stays quarantined when encryption at rest is turned on for an existing
/// database (its key becomes a keyed hash with the rest).
#[tokio::test]
async fn quarantined_content_stays_quarantined_when_encryption_at_rest_is_turned_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(dir.path(), "localhost", "").expect("server starts");
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let first = upload(&server, &alice, png(16, 16, 7), "bad.png").await;
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{first}");
    assert_eq!(server.post(&quarantine, admin.token(), json!({})).await.0, 200);
    assert_eq!(server.stop(), Some(0));

    let server = TestServer::start_in(dir.path(), "localhost", &encryption_at_rest(keys.path())).expect("restarts");
    let alice = Session::from_response(&server.login("alice", "pw").await.1);
    let admin = Session::from_response(&server.login("boss", "pw").await.1);
    assert_eq!(download(&server, &alice, &format!("download/localhost/{first}")).await.0, 404);
    let again = upload(&server, &alice, png(16, 16, 7), "bad-again.png").await;
    assert_eq!(download(&server, &alice, &format!("download/localhost/{again}")).await.0, 404, "known content");
    let release = format!("/_synapse/admin/v1/media/unquarantine/localhost/{first}");
    assert_eq!(server.post(&release, admin.token(), json!({})).await.0, 200);
    assert_eq!(download(&server, &alice, &format!("download/localhost/{again}")).await.0, 200);
    let third = upload(&server, &alice, png(16, 16, 7), "fine.png").await;
    assert_eq!(download(&server, &alice, &format!("download/localhost/{third}")).await.0, 200, "released content");
}

async fn sync(server: &TestServer, who: &Session) -> Value {
    let (status, body) = server.get("/_matrix/client/v3/sync?timeout=0", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn room_media_is_listed_and_quarantined_and_room_deletion_moves_members() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Old", "room_alias_name": "old", "invite": [carol.user_id]}),
    )
    .await;
    join(&server, &bob, &room).await;
    let picture = upload(&server, &alice, png(64, 64, 4), "picture.png").await;
    let thumb = upload(&server, &alice, png(8, 8, 5), "thumb.png").await;
    send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "picture.png", "url": format!("mxc://localhost/{picture}"),
               "info": {"thumbnail_url": format!("mxc://localhost/{thumb}")}}),
    )
    .await;
    send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "far.png", "url": "mxc://elsewhere.example/farAway"}),
    )
    .await;

    let listing = format!("/_synapse/admin/v1/room/{}/media", enc(&room));
    assert_error(&server.get(&listing, bob.token()).await, 403, "M_FORBIDDEN");
    let (status, listed) = server.get(&listing, admin.token()).await;
    assert_eq!(status, 200, "{listed}");
    let mut local: Vec<&str> = listed["local"].as_array().expect("local").iter().filter_map(Value::as_str).collect();
    local.sort();
    let (picture_uri, thumb_uri) = (format!("mxc://localhost/{picture}"), format!("mxc://localhost/{thumb}"));
    let mut expected = [picture_uri.as_str(), thumb_uri.as_str()];
    expected.sort();
    assert_eq!(local, expected);
    assert_eq!(listed["remote"], json!(["mxc://elsewhere.example/farAway"]));

    // Quarantining the room's media: this server's and the other server's, which is then
    // answered at once without asking that server.
    let (status, counted) = server.post(&format!("{listing}/quarantine"), admin.token(), json!({})).await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted["num_quarantined"], 3);
    assert_eq!(download(&server, &bob, &format!("download/localhost/{picture}")).await.0, 404);
    let (status, body) = download(&server, &bob, "download/elsewhere.example/farAway").await;
    assert_eq!((status, error_code(&body)), (404, json!("M_NOT_FOUND")));
    let legacy = format!("/_synapse/admin/v1/quarantine_media/{}", enc(&room));
    assert_eq!(server.post(&legacy, admin.token(), json!({})).await.1["num_quarantined"], 3);

    // Deleting the room, moving its members to a new one.
    let delete = format!("/_synapse/admin/v1/rooms/{}", enc(&room));
    let refused =
        server.call("DELETE", &delete, admin.token(), Some(json!({"new_room_user_id": "@x:elsewhere"}))).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");
    let body =
        json!({"new_room_user_id": admin.user_id, "room_name": "Moved here", "message": "The old room is gone."});
    let (status, deleted) = server.call("DELETE", &delete, admin.token(), Some(body)).await;
    assert_eq!(status, 200, "{deleted}");
    let new_room = deleted["new_room_id"].as_str().expect("new_room_id").to_owned();
    let mut kicked: Vec<&str> =
        deleted["kicked_users"].as_array().expect("kicked").iter().filter_map(Value::as_str).collect();
    kicked.sort();
    assert_eq!(kicked, ["@alice:localhost", "@bob:localhost", "@carol:localhost"]);
    assert_eq!(deleted["local_aliases"], json!(["#old:localhost"]));
    let alias = server.get("/_matrix/client/v3/directory/room/%23old:localhost", bob.token()).await;
    assert_eq!(alias.1["room_id"], new_room.as_str(), "the alias points to the new room");

    // Bob's /sync: out of the old room, in the new one with its name and the message.
    let synced = sync(&server, &bob).await;
    assert!(synced["rooms"]["join"].get(&room).is_none(), "{synced}");
    let joined = &synced["rooms"]["join"][&new_room];
    let events: Vec<&Value> = joined["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(joined["state"]["events"].as_array().into_iter().flatten())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.message" && e["content"]["body"] == "The old room is gone."),
        "{joined}"
    );
    assert!(events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Moved here"), "{joined}");
    // Moved members may not speak there.
    let said = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&new_room)),
            bob.token(),
            json!({"msgtype": "m.text", "body": "hello?"}),
        )
        .await;
    assert_error(&said, 403, "M_FORBIDDEN");
    // Carol was only invited: she left the old room and is not put in the new one.
    let synced = sync(&server, &carol).await;
    assert!(synced["rooms"]["join"].get(&new_room).is_none(), "{synced}");
    assert!(synced["rooms"]["invite"].get(&room).is_none(), "{synced}");

    // The v2 delete reports the new room in its status too.
    let other = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let body = json!({"new_room_user_id": admin.user_id});
    let (status, started) =
        server.call("DELETE", &format!("/_synapse/admin/v2/rooms/{}", enc(&other)), admin.token(), Some(body)).await;
    assert_eq!(status, 200, "{started}");
    let delete_id = started["delete_id"].as_str().expect("delete_id").to_owned();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = server.get(&format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}"), admin.token()).await.1;
        if status["status"] == "complete" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "complete", "{status}");
    let moved_to = status["shutdown_room"]["new_room_id"].as_str().expect("new_room_id").to_owned();
    let synced = sync(&server, &alice).await;
    let joined = &synced["rooms"]["join"][&moved_to];
    let default_message =
        "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";
    assert!(
        joined["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["content"]["body"] == default_message),
        "{joined}"
    );
}

/// synadm lists a user's media (paged) and a room's, quarantines, and deletes by ID and by date.
#[tokio::test]
async fn synadm_lists_quarantines_and_deletes_media() {
    if !synadm_available() {
        eprintln!("skipped: synadm is not installed next to TRELLIS_PYTHON (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let first = upload(&server, &alice, png(4, 4, 1), "one.png").await;
    // Apart in time, so "newest first" has one answer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = upload(&server, &alice, png(5, 5, 2), "two.png").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let uri = format!("mxc://localhost/{first}");
    send_event(&server, &alice, &room, "m.room.message", json!({"msgtype": "m.image", "body": "one", "url": uri}))
        .await;

    let page = synadm(&server, &admin, dir.path(), &["media", "list", "-u", &alice.user_id, "-l", "1", "--ts"]);
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["next_token"], 1, "{page}");
    assert_eq!(ids(&page), [second.as_str()], "newest first");
    let rest = synadm(&server, &admin, dir.path(), &["media", "list", "-u", &alice.user_id, "-f", "1", "--ts"]);
    assert_eq!(ids(&rest), [first.as_str()]);
    let in_room = synadm(&server, &admin, dir.path(), &["media", "list", "-r", &room]);
    assert_eq!(in_room["local"], json!([uri]), "{in_room}");

    synadm(&server, &admin, dir.path(), &["media", "quarantine", "-i", &first]);
    assert_eq!(download(&server, &alice, &format!("download/localhost/{first}")).await.0, 404);
    synadm(&server, &admin, dir.path(), &["media", "unquarantine", "-i", &first]);
    assert_eq!(download(&server, &alice, &format!("download/localhost/{first}")).await.0, 200);

    let deleted = synadm(&server, &admin, dir.path(), &["media", "delete", "-i", &second]);
    assert_eq!(deleted["deleted_media"], json!([second]), "{deleted}");
    assert_eq!(download(&server, &alice, &format!("download/localhost/{second}")).await.0, 404);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let deleted = synadm(&server, &admin, dir.path(), &["media", "delete", "-t", &(now + 60_000).to_string()]);
    assert_eq!(deleted["deleted_media"], json!([first]), "{deleted}");
    assert_eq!(download(&server, &alice, &format!("download/localhost/{first}")).await.0, 404);
    let listed = synadm(&server, &admin, dir.path(), &["media", "list", "-u", &alice.user_id]);
    assert_eq!(listed["total"], 0, "{listed}");
}
