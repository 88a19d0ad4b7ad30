//! Application services' lists in the room directory: a service publishes rooms under one of
//! its networks (`PUT /directory/list/appservice/{networkId}/{roomId}`), and `/publicRooms`
//! shows a network's list for `third_party_instance_id` `{service id}|{network id}`, or every
//! list with `include_all_networks`.

use ruma::{OwnedRoomId, RoomId};

use super::AppService;
use crate::{
    Error, Result,
    service::Services,
    storage::{Batch, appservice_tables::APPSERVICE_ROOM_NETWORKS},
};

impl Services {
    /// Adds the room to (or removes it from) the service's list for `network`.
    pub async fn set_network_room(
        &self,
        service: &AppService,
        network: &str,
        room: &RoomId,
        public: bool,
    ) -> Result<()> {
        if self.rooms.public_room_summary(room).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        let key = (service.id().to_owned(), network.to_owned(), room.to_owned());
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                if public {
                    batch.put(&APPSERVICE_ROOM_NETWORKS, &key, &())?;
                } else {
                    batch.delete(&APPSERVICE_ROOM_NETWORKS, &key);
                }
                Ok(db.write(batch)?)
            })
            .await
    }

    /// The rooms of one network's list (`Some("{service id}|{network id}")`), or of every list.
    pub async fn network_rooms(&self, instance: Option<&str>) -> Result<Vec<OwnedRoomId>> {
        let wanted = instance.map(|instance| {
            let (service, network) = instance.split_once('|').unwrap_or((instance, ""));
            (service.to_owned(), network.to_owned())
        });
        self.db
            .run(move |db| {
                let rows = match &wanted {
                    Some((service, network)) => {
                        APPSERVICE_ROOM_NETWORKS.scan_prefix(db, &(service.clone(), network.clone()))?
                    }
                    None => APPSERVICE_ROOM_NETWORKS.all(db)?,
                };
                Ok(rows.into_iter().map(|((_, _, room), ())| room).collect())
            })
            .await
    }
}
