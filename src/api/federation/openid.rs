//! `GET /_matrix/federation/v1/openid/userinfo`: whose an OpenID token is, for the third party
//! the user gave it to (no server signature: the token is the credential). An unknown or
//! expired token is `401 M_UNKNOWN_TOKEN`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    error::{ErrorKind, UnknownTokenErrorData},
    federation::openid::get_openid_userinfo,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(userinfo)
}

async fn userinfo(
    services: Arc<Services>,
    request: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<get_openid_userinfo::v1::Response> {
    let user = services.openid.user_of(&request.body.access_token).ok_or_else(|| {
        Error::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown or expired OpenID token",
        )
    })?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}
