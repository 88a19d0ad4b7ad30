//! Simplified sliding sync (MSC4186) driven by the room list Element X uses: matrix-sdk-ui's
//! `SyncService` (its `RoomListService` and encryption sync) against the real server. The
//! client finds sliding sync through `/versions`, lists the rooms in bump order, receives a new
//! message live, sees an invite, and decrypts an encrypted message whose key came over the
//! encryption connection's to-device extension.

use std::time::Duration;

use eyeball_im::VectorDiff;
use futures_util::StreamExt;
use imbl::Vector;
use matrix_sdk::{
    Client, Room, RoomState,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::room::create_room,
        events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
    },
    sliding_sync::Version,
};
use matrix_sdk_ui::{
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
};
use tokio::sync::mpsc;

use crate::harness::{TestServer, decrypted_body, encrypted_room_with, room, sync};

async fn named_room(client: &Client, name: &str, public: bool) -> OwnedRoomId {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    if public {
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    }
    client.create_room(request).await.expect("create room").room_id().to_owned()
}

async fn say(client: &Client, room_id: &RoomId, text: &str) {
    room(client, room_id).send(RoomMessageEventContent::text_plain(text)).await.expect("send");
}

/// The room list's names, in order.
fn names(entries: &Vector<RoomListItem>) -> Vec<String> {
    entries.iter().map(|room| room.name().unwrap_or_else(|| room.room_id().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_service_lists_rooms_in_order_live_with_invites_and_decrypts() {
    let server = TestServer::start();
    let alice = server.register_on(server.sliding_client().await, "alice").await;
    assert!(matches!(alice.sliding_sync_version(), Version::Native), "sliding sync found through /versions");
    let bob = server.register("bob").await;
    sync(&bob).await;

    // Created Zulu, Alpha, Mike; then a message in Alpha and one in Zulu. By bump stamp the
    // list is Zulu, Alpha, Mike: neither the creation nor the alphabetical order.
    let zulu = named_room(&alice, "Zulu", false).await;
    let alpha = named_room(&alice, "Alpha", false).await;
    let mike = named_room(&alice, "Mike", true).await;
    bob.join_room_by_id(&mike).await.expect("bob joins Mike");
    say(&alice, &alpha, "in alpha").await;
    say(&alice, &zulu, "in zulu").await;

    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    alice.add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
        let messages_tx = messages_tx.clone();
        async move {
            let _ = messages_tx.send((room.room_id().to_owned(), event.content.body().to_owned()));
        }
    });

    let sync_service = SyncService::builder(alice.clone()).build().await.expect("sync service");
    sync_service.start().await;
    let room_list = sync_service.room_list_service();
    let all_rooms = room_list.all_rooms().await.expect("all rooms");
    let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    let mut stream = Box::pin(stream);
    let mut entries: Vector<RoomListItem> = Vector::new();
    // Applies the list's diffs until `done` holds (or fails after a while).
    let mut wait_for = async |what: &str, done: &dyn Fn(&Vector<RoomListItem>) -> bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&entries) {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(diffs)) => {
                    for diff in diffs {
                        VectorDiff::apply(diff, &mut entries);
                    }
                }
                _ => panic!("{what}: the room list is {:?}", names(&entries)),
            }
        }
    };

    wait_for("the three rooms in bump order", &|e| names(e) == ["Zulu", "Alpha", "Mike"]).await;

    // Bob speaks in Mike: it arrives live and Mike moves to the top.
    say(&bob, &mike, "hello from bob").await;
    wait_for("Mike on top", &|e| names(e).first().map(String::as_str) == Some("Mike")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, messages.recv()).await {
            Ok(Some((room_id, body))) if room_id == mike && body == "hello from bob" => break,
            Ok(Some(_)) => continue,
            _ => panic!("bob's message did not arrive live"),
        }
    }

    // Bob invites alice to a room: the invite shows in the list.
    let mut request = create_room::v3::Request::new();
    request.name = Some("Invitation".to_owned());
    request.invite = vec![alice.user_id().expect("alice").to_owned()];
    let invitation = bob.create_room(request).await.expect("create").room_id().to_owned();
    wait_for("the invite", &|e| {
        e.iter().any(|room| room.room_id() == invitation && room.state() == RoomState::Invited)
    })
    .await;

    // An encrypted room: alice joins, bob's message is decrypted with the room key that came
    // over sliding sync's to-device extension.
    let secret = encrypted_room_with(&bob, &[alice.user_id().expect("alice").to_owned()]).await;
    alice.join_room_by_id(&secret).await.expect("alice joins the encrypted room");
    wait_for("the encrypted room", &|e| e.iter().any(|room| room.room_id() == secret)).await;
    sync(&bob).await;
    let sent = room(&bob, &secret)
        .send(RoomMessageEventContent::text_plain("for alice's eyes only"))
        .await
        .expect("send encrypted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = room(&alice, &secret).event(&sent.response.event_id, None).await;
        if let Ok(event) = &event
            && event.encryption_info().is_some()
        {
            assert_eq!(decrypted_body(event), "for alice's eyes only");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "alice could not decrypt bob's message: {event:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sync_service.stop().await;
}
