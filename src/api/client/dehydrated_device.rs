//! Dehydrated devices (MSC3814, unstable prefix `org.matrix.msc3814.v1`): put, get, delete, and
//! the device's to-device events.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::client::dehydrated_device::{
        delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
    },
    serde::Raw,
};
use serde_json::json;

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        dehydrated::{self, NewDehydratedDevice},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(put).ruma(get).ruma(delete).ruma(events)
}

async fn put(
    services: Arc<Services>,
    request: Ruma<put_dehydrated_device::unstable::Request>,
) -> Result<put_dehydrated_device::unstable::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let device = NewDehydratedDevice {
        device_id: body.device_id.clone(),
        display_name: body.initial_device_display_name,
        device_data: body.device_data.into_json(),
        device_keys: body.device_keys.into_json(),
        one_time_keys: body.one_time_keys.into_iter().map(|(id, k)| (id.to_string(), k.into_json())).collect(),
        fallback_keys: body.fallback_keys.into_iter().map(|(id, k)| (id.to_string(), k.into_json())).collect(),
    };
    dehydrated::put(&services, &sender.user_id, device).await?;
    Ok(put_dehydrated_device::unstable::Response::new(body.device_id))
}

async fn get(
    services: Arc<Services>,
    request: Ruma<get_dehydrated_device::unstable::Request>,
) -> Result<get_dehydrated_device::unstable::Response> {
    let sender = request.sender()?;
    let record = dehydrated::current(&services, &sender.user_id)
        .await?
        .ok_or_else(|| Error::not_found("No dehydrated device"))?;
    Ok(get_dehydrated_device::unstable::Response::new(record.device_id, Raw::from_json(record.device_data)))
}

async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_dehydrated_device::unstable::Request>,
) -> Result<delete_dehydrated_device::unstable::Response> {
    let sender = request.sender()?;
    let device_id = dehydrated::delete(&services, &sender.user_id).await?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id))
}

async fn events(
    services: Arc<Services>,
    request: Ruma<get_events::unstable::Request>,
) -> Result<get_events::unstable::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (messages, next_batch) =
        dehydrated::events(&services, &sender.user_id, &body.device_id, body.next_batch.as_deref()).await?;
    let mut events = Vec::new();
    for message in messages {
        let event = json!({"sender": message.sender, "type": message.event_type, "content": message.content});
        events
            .push(Raw::from_json(serde_json::value::to_raw_value(&event).map_err(|e| Error::internal(e.to_string()))?));
    }
    let mut response = get_events::unstable::Response::new(events);
    response.next_batch = next_batch;
    Ok(response)
}
