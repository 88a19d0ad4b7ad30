//! Cross-signing across servers with matrix-sdk: users of two Trellis servers bootstrap
//! cross-signing, learn each other's master and self-signing keys over federation
//! (`m.signing_key_update`, `/user/keys/query`), and each signs the other's master key with their
//! user-signing key (`/keys/signatures/upload` for a user of another server). The signature is
//! kept by the signer's server and shown to the signer alone, so the verifier's clients, a new
//! device too, see the other user verified and their devices trusted.

use std::time::Duration;

use matrix_sdk::{
    Client,
    ruma::{OwnedDeviceId, OwnedUserId},
};

use crate::{
    federation::{join_when_invited, start_pair},
    harness::{encrypted_room_with, password_auth, sync},
};

/// Bootstraps cross-signing for `client`, with the password when the server asks for it.
pub(crate) async fn bootstrap(client: &Client) {
    let Err(error) = client.encryption().bootstrap_cross_signing(None).await else { return };
    let uiaa = error.as_uiaa_response().unwrap_or_else(|| panic!("bootstrap cross-signing: {error}"));
    let user = client.user_id().expect("logged in").to_owned();
    client
        .encryption()
        .bootstrap_cross_signing(Some(password_auth(&user, uiaa.session.clone())))
        .await
        .expect("bootstrap cross-signing with the password");
}

/// The user and device IDs of `client`.
pub(crate) fn ids(client: &Client) -> (OwnedUserId, OwnedDeviceId) {
    (client.user_id().expect("logged in").to_owned(), client.device_id().expect("a device").to_owned())
}

/// Syncs `observer` until it knows `user`'s cross-signing identity with the master key `master`
/// (base64) and sees `device` signed by its owner.
pub(crate) async fn wait_for_identity(observer: &Client, user: &OwnedUserId, device: &OwnedDeviceId, master: &str) {
    for _ in 0..60 {
        sync(observer).await;
        let identity = observer.encryption().get_user_identity(user).await.expect("crypto store");
        let seen = identity.and_then(|i| i.master_key().get_first_key().map(|k| k.to_base64()));
        let device = observer.encryption().get_device(user, device).await.expect("crypto store");
        if seen.as_deref() == Some(master) && device.is_some_and(|d| d.is_cross_signed_by_owner()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{:?} never saw {user}'s identity with master key {master}", observer.user_id());
}

/// The base64 master key of `client`'s own identity.
pub(crate) async fn own_master_key(client: &Client) -> String {
    let user = client.user_id().expect("logged in");
    let identity = client.encryption().get_user_identity(user).await.expect("crypto store").expect("own identity");
    identity.master_key().get_first_key().expect("an ed25519 master key").to_base64()
}

/// Syncs `observer` until it sees `user` verified (its user-signing key signed `user`'s master
/// key, as the observer's server returns it) and `device` trusted through cross-signing.
pub(crate) async fn wait_until_verified(observer: &Client, user: &OwnedUserId, device: &OwnedDeviceId) {
    for _ in 0..60 {
        sync(observer).await;
        let identity = observer.encryption().get_user_identity(user).await.expect("crypto store");
        let device = observer.encryption().get_device(user, device).await.expect("crypto store");
        if identity.is_some_and(|i| i.is_verified()) && device.is_some_and(|d| d.is_verified()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{:?} never saw {user} verified", observer.user_id());
}

/// `verifier` signs `user`'s master key with its user-signing key, then sees them verified.
pub(crate) async fn verify(verifier: &Client, user: &OwnedUserId, device: &OwnedDeviceId) {
    let identity = verifier
        .encryption()
        .get_user_identity(user)
        .await
        .expect("crypto store")
        .unwrap_or_else(|| panic!("{:?} does not know {user}'s identity", verifier.user_id()));
    assert!(!identity.is_verified(), "{user} is not verified before");
    identity.verify().await.unwrap_or_else(|e| panic!("{:?} verifies {user}: {e}", verifier.user_id()));
    wait_until_verified(verifier, user, device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_two_trellis_servers_cross_sign_each_other() {
    let pair = start_pair();
    let alice = pair.a.register("alice").await;
    let bob = pair.b.register("bob").await;
    bootstrap(&alice).await;
    bootstrap(&bob).await;
    let ((alice_id, alice_device), (bob_id, bob_device)) = (ids(&alice), ids(&bob));
    let room_id = encrypted_room_with(&alice, std::slice::from_ref(&bob_id)).await;
    join_when_invited(&bob, &room_id, "hs-a").await;

    // Each learns the other's master key, and sees the other's device signed by its owner.
    let (alice_master, bob_master) = (own_master_key(&alice).await, own_master_key(&bob).await);
    wait_for_identity(&alice, &bob_id, &bob_device, &bob_master).await;
    wait_for_identity(&bob, &alice_id, &alice_device, &alice_master).await;

    // Alice verifies Bob: her signature of his master key is stored on hs-a and merged into
    // hs-b's answer for her; Bob verifies Alice the same way on hs-b.
    verify(&alice, &bob_id, &bob_device).await;
    verify(&bob, &alice_id, &alice_device).await;

    // A new device of Alice's, which never held her keys (so it trusts no identity yet), gets
    // Bob's master key with her signature: it is kept by hs-a, not only by her first client.
    let laptop = pair.a.login("alice", "alice's laptop").await;
    let mut signed = false;
    for _ in 0..40 {
        sync(&laptop).await;
        let identity = laptop.encryption().get_user_identity(&bob_id).await.expect("store");
        if identity.is_some_and(|i| i.master_key().signatures().get(&alice_id).is_some_and(|s| !s.is_empty())) {
            signed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(signed, "Alice's new device never saw her signature on Bob's master key");
    // Bob's verification of Alice is his alone: Alice's clients do not see her own master key
    // signed by Bob.
    let own = laptop.encryption().get_user_identity(&alice_id).await.expect("store").expect("own identity");
    assert!(
        own.master_key().signatures().get(&bob_id).is_none(),
        "Bob's user-signing signature is shown to Bob alone: {:?}",
        own.master_key().signatures()
    );
}
