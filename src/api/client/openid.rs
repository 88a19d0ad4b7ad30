//! `POST /user/{userId}/openid/request_token`: an OpenID token for a third party, which learns
//! whose it is from `/_matrix/federation/v1/openid/userinfo` (`api::federation::openid`).

use std::sync::Arc;

use axum::Router;
use ruma::{api::client::account::request_openid_token, authentication::TokenType};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, openid::LIFETIME},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(request_token)
}

async fn request_token(
    services: Arc<Services>,
    request: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You may only request OpenID tokens for yourself"));
    }
    let token = services.openid.issue(&sender.user_id);
    Ok(request_openid_token::v3::Response::new(token, TokenType::Bearer, services.config.server_name.clone(), LIFETIME))
}
