//! Lookups that give application services the chance to create what is asked for: a local
//! user in a service's namespace that does not exist yet (profile, invite, join), and an alias
//! in one (alias resolution, joins by alias). The service is asked first, and the store read
//! again after it answered yes.

use ruma::{RoomAliasId, UserId};

use crate::{Result, service::Services, storage::room_tables::AliasRecord};

impl Services {
    /// Asks the application services about `user` when it is local, missing and in one of their
    /// user namespaces; afterwards it exists if a service created it.
    pub async fn lookup_appservice_user(&self, user: &UserId) -> Result<()> {
        if user.server_name() != self.config.server_name
            || self.appservices.services_for_user(user).is_empty()
            || self.accounts.exists(user).await?
        {
            return Ok(());
        }
        self.appservices.query_user(user).await;
        Ok(())
    }

    /// Resolves a local alias, asking the application services whose alias namespaces hold it
    /// when it is unknown.
    pub async fn resolve_alias_with_appservices(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        if let Some(record) = self.rooms.resolve_alias(alias).await? {
            return Ok(Some(record));
        }
        if alias.server_name() != self.config.server_name || !self.appservices.query_alias(alias).await {
            return Ok(None);
        }
        self.rooms.resolve_alias(alias).await
    }
}
