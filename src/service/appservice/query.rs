//! Requests to application services other than transactions: the user and alias queries
//! (`/_matrix/app/v1/users/{userId}`, `/rooms/{roomAlias}`), asked when a user or alias in a
//! service's namespace is looked up and does not exist yet, and the ping. Requests are built
//! with ruma's application service types and carry the service's `hs_token`.

use std::time::{Duration, Instant};

use http::StatusCode;
use ruma::{
    OwnedTransactionId, RoomAliasId, UserId,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
        appservice::{
            ping::send_ping,
            query::{query_room_alias, query_user_id},
        },
        error::ErrorKind,
    },
};

use super::{AppServiceRegistration, AppServices};
use crate::{Error, Result};

/// What became of one request to a service.
#[derive(Debug)]
pub enum Answer {
    /// A 2xx answer.
    Ok,
    /// Any other status.
    Status(StatusCode),
    /// Not reached, timed out, or the request could not be built.
    Failed(String),
}

impl AppServices {
    /// Sends a ruma request to `service` with its `hs_token`.
    pub(crate) async fn call<R>(&self, service: &AppServiceRegistration, request: R) -> Answer
    where
        R: OutgoingRequest<Authentication = ruma::api::appservice::HomeserverToken>,
        for<'a> R::PathBuilder: ruma::api::path_builder::PathBuilder<Input<'a> = ()>,
    {
        let Some(url) = service.registration.url.as_deref() else { return Answer::Failed("no url".into()) };
        let http_request = match request.try_into_http_request::<Vec<u8>>(
            url.trim_end_matches('/'),
            &service.registration.hs_token,
            (),
        ) {
            Ok(request) => request,
            Err(error) => return Answer::Failed(format!("cannot build the request: {error}")),
        };
        let request = match reqwest::Request::try_from(http_request) {
            Ok(request) => request,
            Err(error) => return Answer::Failed(format!("cannot build the request: {error}")),
        };
        match self.client().execute(request).await {
            Ok(response) if response.status().is_success() => Answer::Ok,
            Ok(response) => Answer::Status(response.status()),
            Err(error) => Answer::Failed(error.to_string()),
        }
    }

    /// Sends a ruma request to `service` and parses its 2xx answer (at most 1 MiB is read).
    pub(crate) async fn fetch<R>(
        &self,
        service: &AppServiceRegistration,
        request: R,
    ) -> std::result::Result<R::IncomingResponse, String>
    where
        R: OutgoingRequest<Authentication = ruma::api::appservice::HomeserverToken>,
        for<'a> R::PathBuilder: ruma::api::path_builder::PathBuilder<Input<'a> = ()>,
    {
        const MAX_ANSWER: usize = 1024 * 1024;
        let url = service.registration.url.as_deref().ok_or("no url")?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(url.trim_end_matches('/'), &service.registration.hs_token, ())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let request = reqwest::Request::try_from(http_request).map_err(|e| format!("cannot build the request: {e}"))?;
        let mut response = self.client().execute(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the service answered {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err("the answer is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let http_response =
            http::Response::builder().status(status).body(body.as_slice()).map_err(|e| e.to_string())?;
        R::IncomingResponse::try_from_http_response(http_response).map_err(|e| format!("invalid answer: {e}"))
    }

    /// Asks the services whose namespaces hold `user` whether it exists; true when one said yes
    /// (it then has registered the user).
    pub async fn query_user(&self, user: &UserId) -> bool {
        for service in self.services_for_user(user) {
            match self.call(&service, query_user_id::v1::Request::new(user.to_owned())).await {
                Answer::Ok => return true,
                Answer::Status(_) => {}
                Answer::Failed(error) => {
                    tracing::warn!(appservice = service.id(), %user, %error, "user query failed");
                }
            }
        }
        false
    }

    /// Asks the services whose namespaces hold `alias` whether it exists; true when one said yes
    /// (it then has created the alias).
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        for service in self.services_for_alias(alias) {
            match self.call(&service, query_room_alias::v1::Request::new(alias.to_owned())).await {
                Answer::Ok => return true,
                Answer::Status(_) => {}
                Answer::Failed(error) => {
                    tracing::warn!(appservice = service.id(), %alias, %error, "alias query failed");
                }
            }
        }
        false
    }

    /// Pings the service (`POST /_matrix/app/v1/ping`) and returns how long it took. The
    /// errors are the spec's: no URL `M_URL_NOT_SET`, an error answer `M_BAD_STATUS` (502), not
    /// reached `M_CONNECTION_FAILED` (502), too slow `M_CONNECTION_TIMEOUT` (504).
    pub async fn ping(&self, service: &AppServiceRegistration, txn: Option<OwnedTransactionId>) -> Result<Duration> {
        if service.registration.url.is_none() {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UrlNotSet,
                "The application service has no URL",
            ));
        }
        let mut request = send_ping::v1::Request::new();
        request.transaction_id = txn;
        let started = Instant::now();
        match self.call(service, request).await {
            Answer::Ok => Ok(started.elapsed()),
            Answer::Status(status) => Err(Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::BadStatus({
                    let mut data = ruma::api::error::BadStatusErrorData::new();
                    data.status = Some(status);
                    data
                }),
                format!("The application service answered {status}"),
            )),
            Answer::Failed(error) if error.contains("timed out") || started.elapsed() >= super::REQUEST_TIMEOUT => {
                Err(Error::new(StatusCode::GATEWAY_TIMEOUT, ErrorKind::ConnectionTimeout, error))
            }
            Answer::Failed(error) => Err(Error::new(StatusCode::BAD_GATEWAY, ErrorKind::ConnectionFailed, error)),
        }
    }
}
