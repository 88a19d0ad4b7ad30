//! Key validity and key document checks.

use ruma::{server_name, signatures::Ed25519KeyPair};
use serde_json::json;

use super::*;

fn key_pair(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).expect("key pair")
}

fn public(key_pair: &Ed25519KeyPair) -> String {
    Base64::<ruma::serde::base64::Standard, _>::new(key_pair.public_key().to_vec()).encode()
}

/// A key document of `server` listing `listed` (and an old key), signed by `signer`.
fn document(server: &str, listed: &Ed25519KeyPair, signer: &Ed25519KeyPair, valid_until: u64) -> CanonicalJsonObject {
    let mut document: CanonicalJsonObject = serde_json::from_value(json!({
        "server_name": server,
        "verify_keys": {format!("ed25519:{}", listed.version()): {"key": public(listed)}},
        "old_verify_keys": {"ed25519:old": {"key": public(listed), "expired_ts": 1000}},
        "valid_until_ts": valid_until,
    }))
    .expect("canonical JSON");
    ruma::signatures::sign_json(server, signer, &mut document).expect("signed");
    document
}

#[test]
fn keys_are_usable_within_their_validity() {
    let record = |valid_until_ts, expired_ts| ServerKeyRecord { key: "AAAA".into(), valid_until_ts, expired_ts };
    let keys =
        KeyMap::from([("ed25519:a".into(), record(5000, None)), ("ed25519:old".into(), record(3000, Some(3000)))]);
    assert!(usable(&keys, "ed25519:a", Some(5000)).is_some());
    assert!(usable(&keys, "ed25519:a", Some(5001)).is_none());
    assert!(usable(&keys, "ed25519:a", None).is_some(), "room versions 1 to 4 ignore validity");
    assert!(usable(&keys, "ed25519:old", Some(2999)).is_some(), "signed before it expired");
    assert!(usable(&keys, "ed25519:old", Some(3000)).is_none());
    assert!(usable(&keys, "ed25519:unknown", None).is_none());
}

#[test]
fn a_key_document_must_be_the_servers_and_self_signed() {
    let key = key_pair("k1");
    let far = now_ms() + 365 * 24 * 3600 * 1000;
    let keys = check_self_signed(server_name!("hs.test"), &document("hs.test", &key, &key, far)).expect("valid");
    let current = &keys["ed25519:k1"];
    assert_eq!(current.key, public(&key).trim_end_matches('='));
    assert!(current.valid_until_ts <= now_ms() + MAX_VALIDITY_MS, "validity is capped at seven days");
    assert_eq!(current.expired_ts, None);
    assert_eq!(keys["ed25519:old"].expired_ts, Some(1000));

    let other = key_pair("k1");
    assert!(check_self_signed(server_name!("hs.test"), &document("hs.test", &key, &other, far)).is_err());
    assert!(check_self_signed(server_name!("other.test"), &document("hs.test", &key, &key, far)).is_err());
    let mut unsigned = document("hs.test", &key, &key, far);
    unsigned.remove("signatures");
    assert!(check_self_signed(server_name!("hs.test"), &unsigned).is_err());
}

#[test]
fn other_signers_are_ignored_when_checking_one() {
    let (server, notary) = (key_pair("s"), key_pair("n"));
    let mut document = document("hs.test", &server, &server, now_ms() + 1000);
    ruma::signatures::sign_json("notary.test", &notary, &mut document).expect("countersigned");
    let set = |key: &Ed25519KeyPair| {
        PublicKeySet::from([(format!("ed25519:{}", key.version()), Base64::new(key.public_key().to_vec()))])
    };
    assert!(verify_signed_by(&document, "hs.test", set(&server)).is_ok());
    assert!(verify_signed_by(&document, "notary.test", set(&notary)).is_ok());
    assert!(verify_signed_by(&document, "notary.test", set(&server)).is_err());
}
