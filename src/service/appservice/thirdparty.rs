//! Third-party lookups (`/_matrix/client/v3/thirdparty/*`) answered from the application
//! services: each service lists its `protocols` in its registration and is asked
//! `/_matrix/app/v1/thirdparty/*` for them; answers are merged, a service that fails is
//! left out (and logged).

use std::collections::BTreeMap;

use ruma::{
    RoomAliasId, UserId,
    api::appservice::thirdparty::{
        get_location_for_protocol, get_location_for_room_alias, get_protocol, get_user_for_protocol,
        get_user_for_user_id,
    },
    thirdparty::{Location, Protocol, User},
};

use super::{AppService, AppServices};

impl AppServices {
    fn with_protocol(&self, protocol: &str) -> Vec<AppService> {
        self.all()
            .iter()
            .filter(|s| s.registration.url.is_some())
            .filter(|s| s.registration.protocols.as_ref().is_some_and(|p| p.iter().any(|p| p == protocol)))
            .cloned()
            .collect()
    }

    /// Every protocol the services name, with the instances of every service that has it (each
    /// instance's `instance_id` is `{service id}|{network_id}`, as Synapse makes them).
    pub async fn protocols(&self) -> BTreeMap<String, Protocol> {
        let mut names: Vec<String> =
            self.all().iter().flat_map(|s| s.registration.protocols.clone().unwrap_or_default()).collect();
        names.sort();
        names.dedup();
        let mut out = BTreeMap::new();
        for name in names {
            if let Some(protocol) = self.protocol(&name).await {
                out.insert(name, protocol);
            }
        }
        out
    }

    /// One protocol, merged over the services that have it; `None` when none answered.
    pub async fn protocol(&self, name: &str) -> Option<Protocol> {
        let mut merged: Option<serde_json::Value> = None;
        for service in self.with_protocol(name) {
            let answer = match self.fetch(&service, get_protocol::v1::Request::new(name.to_owned())).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(appservice = service.id(), protocol = name, %error, "protocol query failed");
                    continue;
                }
            };
            let Ok(mut json) = serde_json::to_value(&answer.protocol) else { continue };
            if let Some(instances) = json.get_mut("instances").and_then(|i| i.as_array_mut()) {
                for instance in instances.iter_mut() {
                    let network = instance["network_id"].as_str().unwrap_or_default().to_owned();
                    instance["instance_id"] = serde_json::Value::String(format!("{}|{network}", service.id()));
                }
            }
            match &mut merged {
                None => merged = Some(json),
                Some(existing) => {
                    let more = json["instances"].as_array().cloned().unwrap_or_default();
                    if let Some(instances) = existing["instances"].as_array_mut() {
                        instances.extend(more);
                    }
                }
            }
        }
        merged.and_then(|json| serde_json::from_value(json).ok())
    }

    /// Locations of a protocol matching `fields`, from every service that has it.
    pub async fn locations(&self, protocol: &str, fields: BTreeMap<String, String>) -> Vec<Location> {
        let mut out = Vec::new();
        for service in self.with_protocol(protocol) {
            let mut request = get_location_for_protocol::v1::Request::new(protocol.to_owned());
            request.fields = fields.clone();
            match self.fetch(&service, request).await {
                Ok(answer) => out.extend(answer.locations),
                Err(error) => tracing::warn!(appservice = service.id(), %error, "location query failed"),
            }
        }
        out
    }

    /// Users of a protocol matching `fields`, from every service that has it.
    pub async fn users(&self, protocol: &str, fields: BTreeMap<String, String>) -> Vec<User> {
        let mut out = Vec::new();
        for service in self.with_protocol(protocol) {
            let mut request = get_user_for_protocol::v1::Request::new(protocol.to_owned());
            request.fields = fields.clone();
            match self.fetch(&service, request).await {
                Ok(answer) => out.extend(answer.users),
                Err(error) => tracing::warn!(appservice = service.id(), %error, "user query failed"),
            }
        }
        out
    }

    /// Locations behind a Matrix alias, from every service that has protocols.
    pub async fn locations_for_alias(&self, alias: &RoomAliasId) -> Vec<Location> {
        let mut out = Vec::new();
        for service in self.all().iter().filter(|s| s.registration.url.is_some() && s.registration.protocols.is_some())
        {
            match self.fetch(service, get_location_for_room_alias::v1::Request::new(alias.to_owned())).await {
                Ok(answer) => out.extend(answer.locations),
                Err(error) => tracing::warn!(appservice = service.id(), %error, "location query failed"),
            }
        }
        out
    }

    /// Third-party users behind a Matrix user, from every service that has protocols.
    pub async fn users_for_user_id(&self, user: &UserId) -> Vec<User> {
        let mut out = Vec::new();
        for service in self.all().iter().filter(|s| s.registration.url.is_some() && s.registration.protocols.is_some())
        {
            match self.fetch(service, get_user_for_user_id::v1::Request::new(user.to_owned())).await {
                Ok(answer) => out.extend(answer.users),
                Err(error) => tracing::warn!(appservice = service.id(), %error, "user query failed"),
            }
        }
        out
    }
}
