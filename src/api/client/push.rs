//! Push: push rule editing (`/pushrules/global/...`, with `enabled` and `actions`),
//! the whole set (`GET /pushrules/`), `/notifications`, and pushers (`/pushers`, `/pushers/set`).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::push::{
    PushRule, delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
    get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule,
    set_pushrule_actions, set_pushrule_enabled,
};

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, push::notifications},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(all_rules)
        .ruma(global_rules)
        .ruma(get_rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(get_enabled)
        .ruma(set_enabled)
        .ruma(get_actions)
        .ruma(set_actions)
        .ruma(list_notifications)
        .ruma(list_pushers)
        .ruma(set_pusher_handler)
}

/// The user's push rules: what they stored, or the spec's default rule set.
async fn all_rules(
    services: Arc<Services>,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    let ruleset = services.push.ruleset(&request.sender()?.user_id).await?;
    Ok(get_pushrules_all::v3::Response::new(ruleset))
}

async fn global_rules(
    services: Arc<Services>,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    let ruleset = services.push.ruleset(&request.sender()?.user_id).await?;
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset))
}

async fn get_rule(
    services: Arc<Services>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let user = &request.sender()?.user_id;
    let rule = services.push.rule(user, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(PushRule::from(rule)))
}

async fn set_rule(
    services: Arc<Services>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = request.body.clone();
    services
        .push
        .insert_rule(&services.account_data, user, body.rule, body.before.as_deref(), body.after.as_deref())
        .await?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_rule(
    services: Arc<Services>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    services.push.remove_rule(&services.account_data, user, body.kind.clone(), &body.rule_id).await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn get_enabled(
    services: Arc<Services>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let user = &request.sender()?.user_id;
    let rule = services.push.rule(user, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

async fn set_enabled(
    services: Arc<Services>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    services.push.set_enabled(&services.account_data, user, body.kind.clone(), &body.rule_id, body.enabled).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_actions(
    services: Arc<Services>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let user = &request.sender()?.user_id;
    let rule = services.push.rule(user, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

async fn set_actions(
    services: Arc<Services>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = request.body.clone();
    services.push.set_actions(&services.account_data, user, body.kind, &body.rule_id, body.actions).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

async fn list_notifications(
    services: Arc<Services>,
    request: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let user = &request.sender()?.user_id;
    let body = &request.body;
    let (list, next_token) =
        notifications::page(&services, user, body.from.as_deref(), body.limit, body.only.as_deref()).await?;
    let mut response = get_notifications::v3::Response::new(list);
    response.next_token = next_token;
    Ok(response)
}

async fn list_pushers(
    services: Arc<Services>,
    request: Ruma<get_pushers::v3::Request>,
) -> Result<get_pushers::v3::Response> {
    let pushers = services.push.pushers(&request.sender()?.user_id).await?;
    Ok(get_pushers::v3::Response::new(pushers.into_iter().map(|p| p.pusher).collect()))
}

async fn set_pusher_handler(
    services: Arc<Services>,
    request: Ruma<set_pusher::v3::Request>,
) -> Result<set_pusher::v3::Response> {
    let sender = request.sender()?;
    let user = &sender.user_id;
    match request.body.action.clone() {
        set_pusher::v3::PusherAction::Post(data) => {
            services.push.set_pusher((user, sender.device_id.as_str()), data.pusher, data.append).await?
        }
        set_pusher::v3::PusherAction::Delete(ids) => services.push.delete_pusher(user, ids).await?,
        _ => return Err(crate::Error::invalid_param("Unsupported pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}
