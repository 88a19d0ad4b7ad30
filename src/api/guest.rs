//! Guest access: the endpoints the spec lets guest accounts use. Everything else answers
//! `M_GUEST_ACCESS_FORBIDDEN`.

use http::StatusCode;
use ruma::api::error::ErrorKind;

use crate::{Error, service::sessions::Authenticated};

/// Path shapes after `/_matrix/client/{version}/`; `*` matches one segment.
const GUEST_ALLOWED: &[&str] = &[
    "account/whoami",
    "logout",
    "sync",
    "events",
    "capabilities",
    "pushrules/*",
    "rooms/*/state",
    "rooms/*/state/*",
    "rooms/*/state/*/*",
    "rooms/*/context/*",
    "rooms/*/event/*",
    "rooms/*/members",
    "rooms/*/messages",
    "rooms/*/initialSync",
    "rooms/*/send/*/*",
    "rooms/*/join",
    "rooms/*/leave",
    "rooms/*/typing/*",
    "rooms/*/receipt/*/*",
    "rooms/*/read_markers",
    "join/*",
    "profile/*",
    "profile/*/*",
    "user/*/account_data/*",
    "user/*/rooms/*/account_data/*",
    "user/*/filter",
    "user/*/filter/*",
    "sendToDevice/*/*",
    "keys/upload",
    "keys/query",
    "keys/claim",
    "keys/changes",
    "devices",
    "devices/*",
    "voip/turnServer",
    "directory/room/*",
    "publicRooms",
    "media/download/*/*",
    "media/download/*/*/*",
    "media/thumbnail/*/*",
];

pub fn check(sender: &Authenticated, path: &str) -> Result<(), Error> {
    if !sender.guest {
        return Ok(());
    }
    let rest = path.strip_prefix("/_matrix/client/").and_then(|rest| rest.split_once('/')).map(|(_version, rest)| rest);
    let allowed = rest.is_some_and(|rest| {
        let segments: Vec<&str> = rest.split('/').collect();
        GUEST_ALLOWED.iter().any(|pattern| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            pattern.len() == segments.len() && pattern.iter().zip(&segments).all(|(p, s)| *p == "*" || p == s)
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
