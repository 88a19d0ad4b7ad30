//! End-to-end encryption between a matrix-sdk client on Trellis and one on a real Synapse:
//! encrypted messages both ways, a device that logs in later on each side (it gets the room key
//! of messages sent after it came, and the older keys it is entitled to from its user's key
//! backup), and cross-signing verification in both directions.

use matrix_sdk::{
    encryption::recovery::RecoveryState, room::MessagesOptions, ruma::events::room::message::RoomMessageEventContent,
};

use crate::{
    federation::{decrypt_eventually, join_when_invited},
    federation_verify::{bootstrap, ids, own_master_key, verify, wait_for_identity, wait_until_verified},
    harness::{encrypted_room_with, room, sync},
    synapse::trellis_and_synapse,
};

/// Syncs `observer` until it knows the device `device` of `user`.
async fn wait_for_device(
    observer: &matrix_sdk::Client,
    user: &matrix_sdk::ruma::UserId,
    device: &matrix_sdk::ruma::DeviceId,
) {
    for _ in 0..60 {
        sync(observer).await;
        if observer.encryption().get_device(user, device).await.expect("crypto store").is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{:?} never learnt of {user}'s device {device}", observer.user_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trellis_and_synapse_users_exchange_encrypted_messages_and_verify_each_other() {
    let Some(peers) = trellis_and_synapse().await else { return };
    let alice = peers.trellis.register("alice").await;
    let sam = peers.synapse.register("sam").await;
    bootstrap(&alice).await;
    bootstrap(&sam).await;
    // Alice's key backup (on Trellis) keeps the room keys she receives, Sam's included.
    let recovery_key = alice.encryption().recovery().enable().await.expect("enable recovery");
    let ((alice_id, alice_device), (sam_id, sam_device)) = (ids(&alice), ids(&sam));

    let room_id = encrypted_room_with(&alice, std::slice::from_ref(&sam_id)).await;
    join_when_invited(&sam, &room_id, &peers.trellis_name).await;
    sync(&alice).await;

    let sent = room(&alice, &room_id).send(RoomMessageEventContent::text_plain("from Trellis")).await.expect("send");
    assert_eq!(decrypt_eventually(&sam, &room_id, &sent.response.event_id).await, "from Trellis");
    let reply = room(&sam, &room_id).send(RoomMessageEventContent::text_plain("from Synapse")).await.expect("send");
    assert_eq!(decrypt_eventually(&alice, &room_id, &reply.response.event_id).await, "from Synapse");

    // Cross-signing: each sees the other's identity over federation, then verifies it.
    let (alice_master, sam_master) = (own_master_key(&alice).await, own_master_key(&sam).await);
    wait_for_identity(&alice, &sam_id, &sam_device, &sam_master).await;
    wait_for_identity(&sam, &alice_id, &alice_device, &alice_master).await;
    verify(&alice, &sam_id, &sam_device).await;
    verify(&sam, &alice_id, &alice_device).await;

    // A later device on Synapse: Alice learns of it (`m.device_list_update` from Synapse) and
    // her next room key reaches it; it is cross-signed by Sam, so Alice trusts it.
    let sam_laptop = peers.synapse.login("sam", "sam's laptop").await;
    let (_, sam_laptop_id) = ids(&sam_laptop);
    sync(&sam_laptop).await;
    wait_for_device(&sam, &sam_id, &sam_laptop_id).await;
    sam.encryption()
        .get_device(&sam_id, &sam_laptop_id)
        .await
        .expect("store")
        .expect("the laptop")
        .verify()
        .await
        .expect("Sam cross-signs his laptop");
    wait_until_verified(&alice, &sam_id, &sam_laptop_id).await;
    let second =
        room(&alice, &room_id).send(RoomMessageEventContent::text_plain("for Sam's laptop")).await.expect("send");
    assert_eq!(decrypt_eventually(&sam_laptop, &room_id, &second.response.event_id).await, "for Sam's laptop");

    // A later device on Trellis: Synapse learns of it from Trellis, so Sam's next room key
    // reaches it; and the keys of what Sam sent before it came are in Alice's backup.
    alice.encryption().backups().wait_for_steady_state().await.expect("room keys backed up");
    let alice_laptop = peers.trellis.login("alice", "alice's laptop").await;
    let (_, alice_laptop_id) = ids(&alice_laptop);
    sync(&alice_laptop).await;
    wait_for_device(&sam, &alice_id, &alice_laptop_id).await;
    let later =
        room(&sam, &room_id).send(RoomMessageEventContent::text_plain("for Alice's laptop")).await.expect("send");
    assert_eq!(decrypt_eventually(&alice_laptop, &room_id, &later.response.event_id).await, "for Alice's laptop");

    alice_laptop.encryption().recovery().recover(&recovery_key).await.expect("recover with the recovery key");
    assert_eq!(alice_laptop.encryption().recovery().state(), RecoveryState::Enabled);
    alice_laptop.encryption().backups().download_room_keys_for_room(&room_id).await.expect("download room keys");
    let mut options = MessagesOptions::backward();
    options.limit = 50u32.into();
    let page = room(&alice_laptop, &room_id).messages(options).await.expect("/messages");
    let decrypted: Vec<String> = page
        .chunk
        .iter()
        .filter(|event| event.encryption_info().is_some())
        .filter_map(|event| {
            let json: serde_json::Value = serde_json::from_str(event.raw().json().get()).ok()?;
            json["content"]["body"].as_str().map(str::to_owned)
        })
        .collect();
    assert!(decrypted.iter().any(|b| b == "from Synapse"), "Sam's earlier message, from the backup: {decrypted:?}");
    // The laptop now holds Alice's private cross-signing keys (secret storage): it sees Sam
    // verified, as the signature stored on Trellis says.
    wait_until_verified(&alice_laptop, &sam_id, &sam_device).await;
}
