//! Server-side key backup with matrix-sdk: recovery (secret storage in account data and a key
//! backup under `/room_keys`) enabled on one device; a device that logs in later recovers with
//! the recovery key, downloads the backed-up room keys and decrypts old history from `/messages`.

use matrix_sdk::{
    encryption::{backups::BackupState, recovery::RecoveryState},
    room::MessagesOptions,
    ruma::events::room::message::RoomMessageEventContent,
};

use crate::harness::{TestServer, encrypted_room, room, sync};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_recovers_the_backup_and_decrypts_old_history() {
    let server = TestServer::start();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let room_id = encrypted_room(&alice, &[&bob]).await;

    alice.encryption().bootstrap_cross_signing_if_needed(None).await.expect("cross-signing");
    let recovery_key = alice.encryption().recovery().enable().await.expect("enable recovery");
    assert_eq!(alice.encryption().recovery().state(), RecoveryState::Enabled);
    assert_eq!(alice.encryption().backups().state(), BackupState::Enabled);

    // Alice's own outbound session and the one Bob shares with her both go into the backup.
    room(&alice, &room_id).send(RoomMessageEventContent::text_plain("from alice, before")).await.expect("send");
    sync(&bob).await;
    room(&bob, &room_id).send(RoomMessageEventContent::text_plain("from bob, before")).await.expect("send");
    sync(&alice).await;
    alice.encryption().backups().wait_for_steady_state().await.expect("room keys backed up");

    let phone = server.login("alice", "alice's new phone").await;
    sync(&phone).await;
    assert_ne!(phone.encryption().recovery().state(), RecoveryState::Enabled, "nothing recovered yet");
    phone.encryption().recovery().recover(&recovery_key).await.expect("recover with the recovery key");
    assert_eq!(phone.encryption().recovery().state(), RecoveryState::Enabled);
    assert_eq!(phone.encryption().backups().state(), BackupState::Enabled);
    phone.encryption().backups().download_room_keys_for_room(&room_id).await.expect("download the room's keys");

    let mut options = MessagesOptions::backward();
    options.limit = 50u32.into();
    let page = room(&phone, &room_id).messages(options).await.expect("/messages");
    let mut bodies: Vec<String> = page
        .chunk
        .iter()
        .filter(|event| event.encryption_info().is_some())
        .filter_map(|event| {
            let json: serde_json::Value = serde_json::from_str(event.raw().json().get()).ok()?;
            json["content"]["body"].as_str().map(str::to_owned)
        })
        .collect();
    bodies.sort();
    let utds = page.chunk.iter().filter(|event| event.kind.is_utd()).count();
    assert_eq!(bodies, ["from alice, before", "from bob, before"], "decrypted history ({utds} undecryptable)");
}
