//! `sendToDevice`.

use std::sync::Arc;

use axum::Router;
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, to_device::Target},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send)
}

async fn send(
    services: Arc<Services>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let mut messages = Vec::new();
    // Messages for users of other servers are queued for federation by the service.
    for (user, by_device) in &body.messages {
        for (device, content) in by_device {
            let target = match device {
                DeviceIdOrAllDevices::DeviceId(device) => Target::Device(device.clone()),
                DeviceIdOrAllDevices::AllDevices => Target::AllDevices,
            };
            messages.push((user.clone(), target, content.json().to_owned()));
        }
    }
    services
        .to_device
        .send(&sender.user_id, &sender.device_id, body.txn_id.as_str(), &body.event_type.to_string(), messages)
        .await?;
    Ok(send_event_to_device::v3::Response::new())
}
