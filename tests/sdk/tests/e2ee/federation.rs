//! Encrypted messages between matrix-sdk clients on two federating Trellis servers (`hs-a` and
//! `hs-b`, on loopback TLS with a test CA made by `openssl`): each client's `/keys/query` and
//! `/keys/claim` for the other user go to the other server, the room key travels as an
//! Olm-encrypted to-device message in an `m.direct_to_device` EDU, and the receiver decrypts the
//! Megolm event its own server received over federation.

use std::{path::Path, process::Command, time::Duration};

use matrix_sdk::{
    Client,
    ruma::{OwnedEventId, OwnedServerName, RoomId, events::room::message::RoomMessageEventContent},
};

use crate::harness::{TestServer, decrypted_body, encrypted_room_with, room, sync};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A test CA and a server certificate for `hs-a`, `hs-b` and 127.0.0.1.
pub(crate) fn make_pki(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Trellis SDK Test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:hs-a,DNS:hs-b,IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"], dir);
    openssl(&["req", "-new", "-key", "server.key", "-subj", "/CN=federation", "-out", "server.csr"], dir);
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
        dir,
    );
}

/// Two Trellis servers federating with each other.
pub(crate) struct Pair {
    pub(crate) a: TestServer,
    pub(crate) b: TestServer,
    _pki: tempfile::TempDir,
}

pub(crate) fn start_pair() -> Pair {
    let pki = tempfile::tempdir().expect("tempdir");
    make_pki(pki.path());
    let (port_a, port_b) = (free_port(), free_port());
    let config = |port: u16| {
        format!(
            "federation_ca_file = \"{ca}\"\nfederation_allow_private_addresses = true\ntrusted_servers = []\n\
             [global.federation_listener]\naddress = \"127.0.0.1\"\nport = {port}\ncerts = \"{crt}\"\nkey = \"{key}\"\n\
             [global.federation_server_addresses]\n\"hs-a\" = \"127.0.0.1:{port_a}\"\n\"hs-b\" = \"127.0.0.1:{port_b}\"\n",
            ca = pki.path().join("ca.crt").display(),
            crt = pki.path().join("server.crt").display(),
            key = pki.path().join("server.key").display(),
        )
    };
    let a = TestServer::start_with("hs-a", &config(port_a));
    let b = TestServer::start_with("hs-b", &config(port_b));
    Pair { a, b, _pki: pki }
}

/// Syncs `client` until it decrypts `event_id` in `room_id` (the event and the room key come
/// over federation, so not at once); returns the plaintext body.
pub(crate) async fn decrypt_eventually(client: &Client, room_id: &RoomId, event_id: &OwnedEventId) -> String {
    for _ in 0..40 {
        sync(client).await;
        if let Some(room) = client.get_room(room_id)
            && let Ok(event) = room.event(event_id, None).await
            && event.encryption_info().is_some()
        {
            return decrypted_body(&event);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{:?} never decrypted {event_id}", client.user_id());
}

/// Syncs `client` until it is joined to the room another server's user invited it to, joining
/// through `via`.
pub(crate) async fn join_when_invited(client: &Client, room_id: &RoomId, via: &str) {
    for _ in 0..40 {
        sync(client).await;
        if client.get_room(room_id).is_some() {
            let via: OwnedServerName = via.try_into().expect("server name");
            client.join_room_by_id_or_alias(room_id.into(), &[via]).await.expect("join");
            sync(client).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{:?} never saw the invite to {room_id}", client.user_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_two_servers_exchange_encrypted_messages() {
    let pair = start_pair();
    let alice = pair.a.register("alice").await;
    let bob = pair.b.register("bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let bob_id = bob.user_id().expect("bob").to_owned();
    let room_id = encrypted_room_with(&alice, &[bob_id]).await;
    join_when_invited(&bob, &room_id, "hs-a").await;
    // Alice's sync shows Bob's join (and his devices as changed), so her client queries his keys
    // from hs-b before encrypting.
    sync(&alice).await;

    let sent =
        room(&alice, &room_id).send(RoomMessageEventContent::text_plain("across the federation")).await.expect("send");
    assert_eq!(decrypt_eventually(&bob, &room_id, &sent.response.event_id).await, "across the federation");

    let reply =
        room(&bob, &room_id).send(RoomMessageEventContent::text_plain("received on hs-b")).await.expect("reply");
    assert_eq!(decrypt_eventually(&alice, &room_id, &reply.response.event_id).await, "received on hs-b");

    // Bob logs in on a second device: Alice learns of it through her sync's
    // `device_lists.changed` (an `m.device_list_update` from hs-b), so her next message's room
    // key reaches it too.
    let bob_laptop = pair.b.login("bob", "bob's laptop").await;
    sync(&bob_laptop).await;
    let laptop_id = bob_laptop.device_id().expect("device").to_owned();
    let bob_id = bob.user_id().expect("bob").to_owned();
    let mut known = false;
    for _ in 0..40 {
        sync(&alice).await;
        if alice.encryption().get_device(&bob_id, &laptop_id).await.expect("store").is_some() {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(known, "Alice never learnt of Bob's new device {laptop_id}");
    let second =
        room(&alice, &room_id).send(RoomMessageEventContent::text_plain("for the laptop too")).await.expect("send");
    assert_eq!(decrypt_eventually(&bob_laptop, &room_id, &second.response.event_id).await, "for the laptop too");
}
