//! Application services: the registrations read at start-up (`config::appservice`), who an
//! `as_token` belongs to and whom it may act as, the exclusive namespaces other users may not
//! take, the queries sent to a service for users and aliases it may create (`query.rs`), and
//! the per-service transaction senders that follow the event stream (`sender.rs`).

pub mod directory;
pub mod ephemeral;
pub mod lookup;
pub mod query;
pub mod sender;
pub mod thirdparty;

use std::{sync::Arc, time::Duration};

use ruma::{OwnedUserId, RoomAliasId, UserId};

use crate::config::{
    Config,
    appservice::{AppServiceRegistration, CompiledNamespace},
};

/// How long one request to an application service may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub type AppService = Arc<AppServiceRegistration>;

pub struct AppServices {
    services: Vec<AppService>,
    client: reqwest::Client,
    server_name: ruma::OwnedServerName,
}

pub(crate) fn matches(namespaces: &[CompiledNamespace], value: &str, exclusive_only: bool) -> bool {
    namespaces.iter().any(|ns| (ns.exclusive || !exclusive_only) && ns.regex.is_match(value))
}

impl AppServices {
    pub fn new(config: &Config) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| crate::Error::internal(format!("cannot build the application service client: {e}")))?;
        Ok(Self {
            services: config.appservices.iter().cloned().map(Arc::new).collect(),
            client,
            server_name: config.server_name.clone(),
        })
    }

    pub fn all(&self) -> &[AppService] {
        &self.services
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The service whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<AppService> {
        self.services.iter().find(|s| constant_time_eq(s.registration.as_token.as_bytes(), token.as_bytes())).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<AppService> {
        self.services.iter().find(|s| s.id() == id).cloned()
    }

    /// Whether `user` is in some service's exclusive user namespace (or is a service's sender).
    pub fn is_exclusive_user(&self, user: &UserId) -> bool {
        self.services.iter().any(|s| s.sender == user || matches(&s.users, user.as_str(), true))
    }

    /// Whether `alias` is in some service's exclusive alias namespace.
    pub fn is_exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.services.iter().any(|s| matches(&s.aliases, alias.as_str(), true))
    }

    /// Whether `service` may act as `user`: its sender, or a local user in its user namespaces.
    pub fn may_act_as(&self, service: &AppServiceRegistration, user: &UserId) -> bool {
        user == service.sender || (user.server_name() == self.server_name && user_in_namespace(service, user))
    }

    /// The services whose user namespaces hold `user` and that may be asked about it.
    pub fn services_for_user(&self, user: &UserId) -> Vec<AppService> {
        self.services.iter().filter(|s| user_in_namespace(s, user) && s.registration.url.is_some()).cloned().collect()
    }

    /// The services whose alias namespaces hold `alias` and that may be asked about it.
    pub fn services_for_alias(&self, alias: &RoomAliasId) -> Vec<AppService> {
        self.services
            .iter()
            .filter(|s| matches(&s.aliases, alias.as_str(), false) && s.registration.url.is_some())
            .cloned()
            .collect()
    }

    /// The user a service registers with `m.login.application_service`: a valid localpart (or
    /// full ID) on this server inside its user namespaces.
    pub fn user_id_for_registration(&self, service: &AppServiceRegistration, name: &str) -> crate::Result<OwnedUserId> {
        let invalid = |why: &str| {
            crate::Error::new(http::StatusCode::BAD_REQUEST, ruma::api::error::ErrorKind::InvalidUsername, why)
        };
        let user_id = UserId::parse_with_server_name(name.to_lowercase(), &self.server_name)
            .map_err(|e| invalid(&format!("Invalid username: {e}")))?;
        if user_id.server_name() != self.server_name || user_id.validate_strict().is_err() {
            return Err(invalid("Invalid username"));
        }
        if !self.may_act_as(service, &user_id) {
            return Err(crate::Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Exclusive,
                "That user ID is not in the application service's namespaces",
            ));
        }
        Ok(user_id)
    }

    /// Each service's sender user, to create at start-up.
    pub fn senders(&self) -> Vec<OwnedUserId> {
        self.services.iter().map(|s| s.sender.clone()).collect()
    }
}

/// Whose to-device messages go to a service (MSC4203): those of the users a service with
/// `receive_ephemeral` wants.
pub fn to_device_users(config: &Config) -> crate::service::to_device::AppServiceUsers {
    let services: Vec<AppService> =
        config.appservices.iter().filter(|s| s.registration.receive_ephemeral).cloned().map(Arc::new).collect();
    Arc::new(move |user: &UserId| services.iter().any(|service| wants_user(service, user.as_str())))
}

/// Whether `user` is in one of the service's user namespaces (exclusive or not).
pub fn user_in_namespace(service: &AppServiceRegistration, user: &UserId) -> bool {
    matches(&service.users, user.as_str(), false)
}

/// Whether the service wants `event` (with its room's aliases) by the event alone: its sender
/// or a member event's state key in the user namespaces (or the service's own user), its room
/// in the room namespaces, or one of its room's aliases in the alias namespaces.
pub fn interested(service: &AppServiceRegistration, event: &crate::service::rooms::stream_read::StreamEvent) -> bool {
    let pdu = &event.pdu;
    wants_user(service, pdu.sender.as_str())
        || (pdu.kind == ruma::events::TimelineEventType::RoomMember
            && pdu.state_key.as_deref().is_some_and(|user| wants_user(service, user)))
        || matches(&service.rooms, pdu.room_id.as_str(), false)
        || event.room_aliases.iter().any(|alias| matches(&service.aliases, alias, false))
}

/// Whether `user` is the service's sender or in its user namespaces: the service also wants
/// the events of rooms such a user is joined to (as Synapse does, so a bridge's puppets see
/// their rooms).
pub fn wants_user(service: &AppServiceRegistration, user: &str) -> bool {
    user == service.sender.as_str() || matches(&service.users, user, false)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
