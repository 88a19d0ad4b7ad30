//! Guest access: the endpoints the spec lets guest accounts use. Everything else answers
//! `M_GUEST_ACCESS_FORBIDDEN`.

use http::{Method, StatusCode};
use ruma::api::error::ErrorKind;

use crate::{Error, service::sessions::Authenticated};

const GET: &[&str] = &["GET"];
const PUT: &[&str] = &["PUT"];
const POST: &[&str] = &["POST"];
const GET_PUT: &[&str] = &["GET", "PUT"];
const GET_POST: &[&str] = &["GET", "POST"];
const PUT_DELETE: &[&str] = &["PUT", "DELETE"];

/// (methods, path shape after `/_matrix/client/{version}/`); `*` matches one segment. `GET`
/// covers `HEAD`. The spec's list (Guest Access module) plus what clients need around it
/// (filters, account data, receipts, typing), as Synapse allows. Of the profile, guests may
/// change only their display name and avatar.
const GUEST_ALLOWED: &[(&[&str], &str)] = &[
    (GET, "account/whoami"),
    (POST, "logout"),
    (GET, "sync"),
    (GET, "events"),
    (GET, "capabilities"),
    (GET, "pushrules/*"),
    (GET, "rooms/*/state"),
    (GET_PUT, "rooms/*/state/*"),
    (GET_PUT, "rooms/*/state/*/*"),
    (GET, "rooms/*/context/*"),
    (GET, "rooms/*/event/*"),
    (GET, "rooms/*/members"),
    (GET, "rooms/*/messages"),
    (GET, "rooms/*/initialSync"),
    (PUT, "rooms/*/send/*/*"),
    (POST, "rooms/*/join"),
    (POST, "rooms/*/leave"),
    (PUT, "rooms/*/typing/*"),
    (POST, "rooms/*/receipt/*/*"),
    (POST, "rooms/*/read_markers"),
    (POST, "join/*"),
    (GET, "profile/*"),
    (GET, "profile/*/*"),
    (PUT_DELETE, "profile/*/displayname"),
    (PUT_DELETE, "profile/*/avatar_url"),
    (GET_PUT, "user/*/account_data/*"),
    (GET_PUT, "user/*/rooms/*/account_data/*"),
    (POST, "user/*/filter"),
    (GET, "user/*/filter/*"),
    (PUT, "sendToDevice/*/*"),
    (POST, "keys/upload"),
    (POST, "keys/query"),
    (POST, "keys/claim"),
    (GET, "keys/changes"),
    (GET, "devices"),
    (GET_PUT, "devices/*"),
    (GET, "voip/turnServer"),
    (GET, "directory/room/*"),
    (GET_POST, "publicRooms"),
    (GET, "media/download/*/*"),
    (GET, "media/download/*/*/*"),
    (GET, "media/thumbnail/*/*"),
];

fn method_allowed(allowed: &[&str], method: &Method) -> bool {
    let method = if *method == Method::HEAD { "GET" } else { method.as_str() };
    allowed.contains(&method)
}

pub fn check(sender: &Authenticated, method: &Method, path: &str) -> Result<(), Error> {
    if !sender.guest {
        return Ok(());
    }
    let rest = path.strip_prefix("/_matrix/client/").and_then(|rest| rest.split_once('/')).map(|(_version, rest)| rest);
    let allowed = rest.is_some_and(|rest| {
        let segments: Vec<&str> = rest.split('/').collect();
        GUEST_ALLOWED.iter().any(|(methods, pattern)| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            method_allowed(methods, method)
                && pattern.len() == segments.len()
                && pattern.iter().zip(&segments).all(|(p, s)| *p == "*" || p == s)
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest accounts cannot use this endpoint",
        ))
    }
}
