//! Federation with other servers: discovery of where a server name is reached
//! (`discovery.rs`, with SRV lookups in `srv.rs`), outbound requests signed with this server's
//! key (`client.rs`), the signing keys of other servers, fetched, verified, stored and
//! served again as a notary (`keys.rs`), joining rooms through other servers (`join.rs`), and
//! transactions: the outbound queue and its sender (`sender.rs`) and the transactions other
//! servers send (`inbound.rs`); their EDUs (`edus.rs`), the EDUs this server sends
//! (`outbound_edus.rs`) and the keys of other servers' users (`device_lists.rs`). Inbound request signatures are checked by the API's
//! extractor through [`keys::RemoteKeys::verify_request`].

pub mod backfill;
pub mod client;
pub mod device_lists;
pub mod directory;
pub mod discovery;
pub mod edus;
mod gap;
pub mod hierarchy;
pub mod inbound;
pub mod join;
pub mod keys;
pub mod knock;
pub mod membership;
pub mod outbound_edus;
pub mod profile;
pub mod sender;
pub mod srv;
pub mod timestamp;

use std::{collections::BTreeMap, sync::Arc};

use ruma::{UserId, profile::ProfileFieldName};

use crate::{
    Error, Result,
    config::{Config, DEFAULT_URL_PREVIEW_DENYLIST},
    service::{address_guard::AddressGuard, server_keys::ServerKeys},
    storage::Db,
};

pub struct Federation {
    pub client: Arc<client::FederationClient>,
    pub keys: Arc<keys::RemoteKeys>,
    server_name: ruma::OwnedServerName,
    own_keys: Arc<ServerKeys>,
    /// Rooms whose backfill recently found nothing, not asked again for a while.
    backfill_cooldown: backfill::Cooldown,
    /// The outbound queue of PDUs and EDUs per destination (its tasks start with the server).
    pub sender: Arc<sender::Sender>,
    /// Transactions other servers send (`inbound.rs`).
    pub inbound: inbound::Inbound,
    /// Cached profiles of other servers' users (`profile.rs`).
    pub profiles: profile::RemoteProfiles,
}

impl Federation {
    pub fn new(config: &Config, db: Db, own_keys: Arc<ServerKeys>) -> Result<Self> {
        let extra_ca = match &config.federation_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::internal(format!("cannot read federation_ca_file {}: {e}", path.display())))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|certificates| !certificates.is_empty())
                    .ok_or_else(|| {
                        Error::internal(format!("federation_ca_file {} holds no PEM certificate", path.display()))
                    })?
            }
        };
        let tls = client::Tls { extra_ca, verify: config.federation_verify_certificates };
        // Other servers are reached at public addresses only, unless the operator allows more.
        let denylist = if config.federation_allow_private_addresses {
            Vec::new()
        } else {
            DEFAULT_URL_PREVIEW_DENYLIST.iter().filter_map(|net| net.parse().ok()).collect()
        };
        let guard = AddressGuard::new(denylist, Vec::new(), "Federation requests");
        let resolver = discovery::Resolver::new(
            config.federation_server_addresses.clone(),
            discovery::WellKnownSource::Https { tls: tls.clone(), guard: guard.clone() },
            srv::SrvResolver::from_system(),
        );
        let client =
            Arc::new(client::FederationClient::new(config.server_name.clone(), own_keys.clone(), resolver, tls, guard));
        let sender = Arc::new(sender::Sender::new(db.clone(), config.server_name.clone())?);
        let inbound = inbound::Inbound::new(db.clone());
        let profiles = profile::RemoteProfiles::new(db.clone());
        let keys = Arc::new(keys::RemoteKeys::new(
            db,
            config.server_name.clone(),
            own_keys.clone(),
            client.clone(),
            config.trusted_servers.clone(),
        ));
        Ok(Self {
            client,
            keys,
            server_name: config.server_name.clone(),
            own_keys,
            backfill_cooldown: Default::default(),
            sender,
            inbound,
            profiles,
        })
    }
}

impl Federation {
    /// The profile of a user of another server (one field when `field` is given), asked of
    /// that server. `404 M_NOT_FOUND` when it has no such user or field; `502` when it cannot
    /// be reached or asked.
    pub async fn remote_profile(
        &self,
        user_id: &UserId,
        field: Option<ProfileFieldName>,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        let mut profile = self.profiles.get(&self.client, user_id).await?;
        if let Some(field) = field {
            profile.retain(|name, _| name == field.as_str());
        }
        Ok(profile)
    }
}
