//! The one error type of the server: every failure a client or server can cause is a Matrix
//! error (`errcode`, `error`, HTTP status); internal failures become `M_UNKNOWN` 500s and are
//! logged, never shown in detail.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponseExt,
    client::uiaa::{UiaaInfo, UiaaResponse},
    error::{ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody, UnknownTokenErrorData},
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure the caller caused or must know about, as the spec names it.
    #[error("{kind:?}: {message}")]
    Matrix { status: StatusCode, kind: ErrorKind, message: String },
    /// User-interactive authentication is (still) required: 401 with the flows.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    /// The storage engine failed. Logged; the client sees a generic 500.
    #[error("storage: {0}")]
    Storage(String),
    /// A bug or an unexpected condition. Logged; the client sees a generic 500.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Matrix { status, kind, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }
    /// `M_INVALID_SIGNATURE` (400). ruma's `ErrorKind` has no variant for it; its parser keeps
    /// unknown codes, so the kind is made by parsing an error body.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        let message = message.into();
        let body = serde_json::json!({"errcode": "M_INVALID_SIGNATURE", "error": message});
        match serde_json::from_value::<StandardErrorBody>(body) {
            Ok(body) => Self::new(StatusCode::BAD_REQUEST, body.kind, body.message),
            Err(_) => Self::invalid_param(message),
        }
    }
    /// An error with a code ruma's `ErrorKind` has no variant for (an MSC's unstable code), made
    /// the same way as [`Self::invalid_signature`].
    pub fn custom(status: StatusCode, errcode: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let body = serde_json::json!({"errcode": errcode, "error": message});
        match serde_json::from_value::<StandardErrorBody>(body) {
            Ok(body) => Self::new(status, body.kind, body.message),
            Err(_) => Self::new(status, ErrorKind::Unknown, message),
        }
    }
    pub fn unrecognized(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unrecognized, message)
    }
    pub fn unknown_token(soft_logout: bool, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken({
                let mut data = UnknownTokenErrorData::new();
                data.soft_logout = soft_logout;
                data
            }),
            message,
        )
    }
    /// `M_USER_LOCKED` (401, with `soft_logout: true`): the account is locked by an admin.
    pub fn user_locked() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::UserLocked, "This account has been locked")
    }
    /// `M_USER_SUSPENDED` (403): the account is suspended and may not do this.
    pub fn user_suspended(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::UserSuspended, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// The Matrix error code, for tests and logs.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Matrix { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let result = match self {
            Error::Matrix { status, kind, message } => {
                let retry_after = match &kind {
                    ErrorKind::LimitExceeded(LimitExceededErrorData {
                        retry_after: Some(RetryAfter::Delay(d)),
                        ..
                    }) => Some(*d),
                    _ => None,
                };
                let body = ErrorBody::Standard(StandardErrorBody::new(kind, message));
                ruma::api::error::Error::new(status, body).try_into_http_response::<Vec<u8>>().map(|mut response| {
                    // ruma's `Retry-After` rounds down, to 0 for a wait under a second: round up.
                    if let Some(wait) = retry_after {
                        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
                    }
                    response
                })
            }
            Error::Uiaa(info) => UiaaResponse::AuthResponse(*info).try_into_http_response::<Vec<u8>>(),
            Error::Storage(detail) | Error::Internal(detail) => {
                tracing::error!(%detail, "internal server error");
                let body =
                    ErrorBody::Standard(StandardErrorBody::new(ErrorKind::Unknown, "Internal server error".to_owned()));
                ruma::api::error::Error::new(StatusCode::INTERNAL_SERVER_ERROR, body)
                    .try_into_http_response::<Vec<u8>>()
            }
        };
        match result {
            Ok(response) => response.map(axum::body::Body::from),
            Err(error) => {
                tracing::error!(%error, "could not serialize an error response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
