//! Encrypted messages between matrix-sdk clients: room keys travel as Olm-encrypted to-device
//! messages after a `/keys/query` and `/keys/claim`, and the receiver decrypts the Megolm event.

use matrix_sdk::ruma::{api::client::room::get_room_event, events::room::message::RoomMessageEventContent};

use crate::harness::{TestServer, decrypted_body, encrypted_room, room, sync};

/// Alice sends in an encrypted room; Bob syncs (getting the room key as a to-device message)
/// and decrypts the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_decrypted_by_the_other_user() {
    let server = TestServer::start();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let room_id = encrypted_room(&alice, &[&bob]).await;

    let sent = room(&alice, &room_id)
        .send(RoomMessageEventContent::text_plain("the eagle lands at dawn"))
        .await
        .expect("send");
    sync(&bob).await;

    let event = room(&bob, &room_id).event(&sent.response.event_id, None).await.expect("fetch the event");
    assert_eq!(decrypted_body(&event), "the eagle lands at dawn");
    // What the server stored and serves is ciphertext.
    let request = get_room_event::v3::Request::new(room_id.clone(), sent.response.event_id.clone());
    let stored = bob.send(request).await.expect("GET the event").event;
    assert_eq!(stored.get_field::<String>("type").expect("type").as_deref(), Some("m.room.encrypted"));
    assert!(!stored.json().get().contains("eagle"), "plaintext on the server: {}", stored.json().get());

    // And the other direction.
    let reply = room(&bob, &room_id).send(RoomMessageEventContent::text_plain("copy that")).await.expect("reply");
    sync(&alice).await;
    let event = room(&alice, &room_id).event(&reply.response.event_id, None).await.expect("fetch the reply");
    assert_eq!(decrypted_body(&event), "copy that");
}

/// Bob logs in on a second device after Alice's first message. Alice learns of the device
/// through her sync's `device_lists.changed`, so her next message's room key reaches it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_later_gets_the_keys_for_the_next_message() {
    let server = TestServer::start();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let room_id = encrypted_room(&alice, &[&bob]).await;
    let first = room(&alice, &room_id).send(RoomMessageEventContent::text_plain("first")).await.expect("send");
    sync(&bob).await;
    assert_eq!(
        decrypted_body(&room(&bob, &room_id).event(&first.response.event_id, None).await.expect("fetch")),
        "first"
    );

    let bob_laptop = server.login("bob", "bob's laptop").await;
    // The new device uploads its keys on its first sync.
    sync(&bob_laptop).await;
    let laptop_id = bob_laptop.device_id().expect("device").to_owned();
    // Alice's sync reports Bob's device list as changed; her client then queries his keys.
    sync(&alice).await;
    let second = room(&alice, &room_id)
        .send(RoomMessageEventContent::text_plain("second, for every device"))
        .await
        .expect("send");
    let known = alice.encryption().get_device(bob.user_id().expect("bob"), &laptop_id).await.expect("store");
    assert!(known.is_some(), "Alice knows Bob's new device {laptop_id}");

    sync(&bob_laptop).await;
    let event = room(&bob_laptop, &room_id).event(&second.response.event_id, None).await.expect("fetch on the laptop");
    assert_eq!(decrypted_body(&event), "second, for every device");
    // Bob's first device still decrypts it as well.
    sync(&bob).await;
    let event = room(&bob, &room_id).event(&second.response.event_id, None).await.expect("fetch on the first device");
    assert_eq!(decrypted_body(&event), "second, for every device");
}
