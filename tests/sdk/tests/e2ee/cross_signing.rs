//! Cross-signing with matrix-sdk: bootstrapping uploads the master, self-signing and
//! user-signing keys (`/keys/device_signing/upload`) and the device's signature
//! (`/keys/signatures/upload`); replacing them needs the password (UIA); another user who
//! shares a room learns of the change through `device_lists.changed` and sees the signatures.
//! Re-uploading the same keys needs no UIA.

use matrix_sdk::{Client, encryption::CrossSigningResetAuthType};

use crate::harness::{TestServer, encrypted_room, password_auth, sync};

/// The base64 ed25519 key of `user`'s master key as `observer` knows it.
async fn master_key_seen_by(observer: &Client, user: &Client) -> Option<String> {
    let user_id = user.user_id().expect("logged in");
    let identity = observer.encryption().get_user_identity(user_id).await.expect("crypto store")?;
    Some(identity.master_key().get_first_key().expect("an ed25519 master key").to_base64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_reset_are_seen_as_cross_signed_by_the_other_user() {
    let server = TestServer::start();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    sync(&alice).await;
    sync(&bob).await;
    encrypted_room(&alice, &[&bob]).await;
    let alice_id = alice.user_id().expect("alice").to_owned();
    let alice_device = alice.device_id().expect("device").to_owned();

    // The first upload needs no UIA (there are no keys to replace).
    alice.encryption().bootstrap_cross_signing(None).await.expect("first bootstrap");
    assert!(alice.encryption().cross_signing_status().await.expect("status").is_complete());
    let first_master = master_key_seen_by(&alice, &alice).await.expect("Alice's own identity");

    // Bob's next syncs report Alice's keys as changed; his client re-queries them.
    sync(&bob).await;
    sync(&bob).await;
    assert_eq!(master_key_seen_by(&bob, &alice).await.as_deref(), Some(first_master.as_str()));
    let device = bob.encryption().get_device(&alice_id, &alice_device).await.expect("store").expect("Alice's device");
    assert!(device.is_cross_signed_by_owner(), "Bob sees Alice's device signed by her self-signing key");

    // Bootstrapping again re-uploads the same keys: a repeat needs no UIA (spec v1.11).
    alice.encryption().bootstrap_cross_signing(None).await.expect("a repeated bootstrap");
    assert_eq!(master_key_seen_by(&alice, &alice).await.as_deref(), Some(first_master.as_str()));

    // Replacing the keys needs the password: without auth the server answers with UIA flows...
    let handle = alice
        .encryption()
        .reset_cross_signing()
        .await
        .expect("start a reset")
        .expect("a reset needs user-interactive auth");
    let CrossSigningResetAuthType::Uiaa(uiaa) = handle.auth_type() else {
        panic!("password UIA, not {:?}", handle.auth_type());
    };
    assert!(
        uiaa.flows.iter().any(|flow| flow.stages.iter().any(|stage| stage.as_str() == "m.login.password")),
        "password is a UIA flow: {:?}",
        uiaa.flows
    );
    // ...and with it, the new identity is stored.
    handle.auth(Some(password_auth(&alice_id, uiaa.session.clone()))).await.expect("reset with the password");
    let second_master = master_key_seen_by(&alice, &alice).await.expect("Alice's new identity");
    assert_ne!(first_master, second_master, "a reset makes a new master key");

    sync(&bob).await;
    sync(&bob).await;
    assert_eq!(master_key_seen_by(&bob, &alice).await.as_deref(), Some(second_master.as_str()));
    let device = bob.encryption().get_device(&alice_id, &alice_device).await.expect("store").expect("Alice's device");
    assert!(device.is_cross_signed_by_owner(), "signed by the new self-signing key");
    sync(&alice).await;
    let own = alice.encryption().get_own_device().await.expect("store").expect("own device");
    assert!(own.is_cross_signed_by_owner(), "Alice sees her own device cross-signed");
}
