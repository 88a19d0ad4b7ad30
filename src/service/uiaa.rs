//! User-interactive authentication: sessions of completed stages, kept in memory (a session
//! lives for minutes; a restart only makes a client start the flow again).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{accounts::Accounts, random_string, registration_tokens::RegistrationTokens};
use crate::{Error, Result};

const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);
const MAX_SESSIONS: usize = 10_000;

struct Session {
    flows: Vec<AuthFlow>,
    completed: Vec<AuthType>,
    created: Instant,
}

pub struct Uiaa {
    registration_tokens: Arc<RegistrationTokens>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Whom a password stage must prove: the user doing the request.
pub enum PasswordCheck<'a> {
    /// Registration: no password stage is offered.
    None,
    User(&'a UserId, &'a Accounts),
}

impl Uiaa {
    pub fn new(registration_tokens: Arc<RegistrationTokens>) -> Self {
        Self { registration_tokens, sessions: Mutex::new(HashMap::new()) }
    }

    /// The flows offered for registration.
    pub async fn registration_flows(&self) -> Result<Vec<AuthFlow>> {
        Ok(if self.registration_tokens.required().await? {
            vec![AuthFlow::new(vec![AuthType::RegistrationToken])]
        } else {
            vec![AuthFlow::new(vec![AuthType::Dummy])]
        })
    }

    /// Runs one step of UIA. `Ok(())` once a flow is complete; otherwise `Err(Error::Uiaa)` with
    /// the flows, the session and what is completed (and `errcode` if this step failed).
    pub async fn authenticate(
        &self,
        auth: Option<&AuthData>,
        flows: Vec<AuthFlow>,
        password: PasswordCheck<'_>,
    ) -> Result<()> {
        let Some(auth) = auth else {
            let session = self.start(flows.clone())?;
            return Err(self.challenge(&session, None));
        };
        // A client may complete a stage without a session (e.g. `m.login.dummy` on the first
        // request, as Synapse allows and test suites rely on): start one implicitly.
        let session_id = match auth.session() {
            Some(id) => {
                if !self.lock()?.contains_key(id) {
                    return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown UIA session"));
                }
                id.to_owned()
            }
            None => self.start(flows)?,
        };
        // Authenticating as someone else is not a failed stage to retry but a refusal (Synapse
        // answers 403; Complement's `TestDeviceManagement`).
        if let (AuthData::Password(stage), PasswordCheck::User(user_id, accounts)) = (auth, &password)
            && claimed_user(stage, accounts).as_deref() != Some(*user_id)
        {
            return Err(Error::forbidden("The identifier does not match the authenticated user"));
        }
        let stage_result = self.check_stage(auth, &password).await;
        let mut sessions = self.lock()?;
        let Some(session) = sessions.get_mut(&session_id) else {
            return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown UIA session"));
        };
        match stage_result {
            Ok(stage) => {
                if !session.completed.contains(&stage) {
                    session.completed.push(stage);
                }
            }
            Err(error) => {
                let info = info_for(&session_id, session, Some(error));
                return Err(Error::Uiaa(Box::new(info)));
            }
        }
        let done = session.flows.iter().any(|flow| flow.stages.iter().all(|s| session.completed.contains(s)));
        if done {
            sessions.remove(&session_id);
            Ok(())
        } else {
            Err(Error::Uiaa(Box::new(info_for(&session_id, session, None))))
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>> {
        self.sessions.lock().map_err(|_| Error::internal("poisoned UIA lock"))
    }

    fn start(&self, flows: Vec<AuthFlow>) -> Result<String> {
        let mut sessions = self.lock()?;
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            return Err(Error::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::Unknown, "Too many pending UIA sessions"));
        }
        let id = random_string(24);
        sessions.insert(id.clone(), Session { flows, completed: Vec::new(), created: Instant::now() });
        Ok(id)
    }

    fn challenge(&self, session_id: &str, error: Option<StandardErrorBody>) -> Error {
        match self.lock() {
            Ok(sessions) => match sessions.get(session_id) {
                Some(session) => Error::Uiaa(Box::new(info_for(session_id, session, error))),
                None => Error::internal("UIA session vanished"),
            },
            Err(error) => error,
        }
    }

    /// Checks one stage's credentials; returns the stage completed or why it failed.
    async fn check_stage(&self, auth: &AuthData, password: &PasswordCheck<'_>) -> Result<AuthType, StandardErrorBody> {
        let forbidden = |message: &str| StandardErrorBody::new(ErrorKind::Forbidden, message.to_owned());
        match auth {
            AuthData::Dummy(_) => Ok(AuthType::Dummy),
            AuthData::RegistrationToken(stage) => {
                // The stage takes one use of the token.
                if self.registration_tokens.consume(&stage.token).await.unwrap_or(false) {
                    Ok(AuthType::RegistrationToken)
                } else {
                    Err(forbidden("Invalid registration token"))
                }
            }
            AuthData::Password(stage) => {
                let PasswordCheck::User(user_id, accounts) = password else {
                    return Err(forbidden("Password authentication is not offered here"));
                };
                if claimed_user(stage, accounts).as_deref() != Some(*user_id) {
                    return Err(forbidden("The identifier does not match the authenticated user"));
                }
                accounts
                    .check_password(user_id, &stage.password)
                    .await
                    .map(|()| AuthType::Password)
                    .map_err(|_| forbidden("Invalid password"))
            }
            _ => Err(StandardErrorBody::new(ErrorKind::Unrecognized, "Unsupported authentication stage".to_owned())),
        }
    }
}

/// The user a password stage names.
fn claimed_user(
    stage: &ruma::api::client::uiaa::Password,
    accounts: &crate::service::accounts::Accounts,
) -> Option<ruma::OwnedUserId> {
    match &stage.identifier {
        UserIdentifier::Matrix(id) => accounts.parse_login_user(&id.user).ok(),
        _ => None,
    }
}

fn info_for(session_id: &str, session: &Session, error: Option<StandardErrorBody>) -> UiaaInfo {
    let mut info = UiaaInfo::new(session.flows.clone());
    // No stage here takes parameters, but clients and Complement expect the key.
    info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
    info.completed = session.completed.clone();
    info.session = Some(session_id.to_owned());
    info.auth_error = error.map(Box::new);
    info
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
