//! The filter's `event_fields`: every event of the sync response keeps only the listed
//! dot-separated property paths (the spec's appendix: `\.` is a literal dot, `\\` a
//! backslash). To-device messages are not governed by filters and are left whole.

use ruma::{api::client::sync::sync_events::v3, serde::Raw};
use serde_json::{Map, Value};

/// Splits a dot-separated path into its property names.
fn parse_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next().unwrap_or('\\')),
            '.' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// Copies the value at `path` from `source` into `target`, creating the objects on the way.
fn copy_path(source: &Map<String, Value>, target: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(value) = source.get(first) else { return };
    if rest.is_empty() {
        target.insert(first.clone(), value.clone());
        return;
    }
    let Value::Object(inner) = value else { return };
    let entry = target.entry(first.clone()).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner_target) = entry {
        copy_path(inner, inner_target, rest);
    }
}

/// `event` with only `paths` kept (unchanged when it is not a JSON object).
fn project<T>(event: &mut Raw<T>, paths: &[Vec<String>]) {
    let Ok(Value::Object(source)) = serde_json::from_str::<Value>(event.json().get()) else { return };
    let mut target = Map::new();
    for path in paths {
        copy_path(&source, &mut target, path);
    }
    if let Ok(raw) = serde_json::value::to_raw_value(&target) {
        *event = Raw::from_json(raw);
    }
}

fn project_all<T>(events: &mut [Raw<T>], paths: &[Vec<String>]) {
    for event in events {
        project(event, paths);
    }
}

fn project_state(state: &mut v3::State, paths: &[Vec<String>]) {
    match state {
        v3::State::Before(state) | v3::State::After(state) => project_all(&mut state.events, paths),
        _ => {}
    }
}

/// Applies `event_fields` to every event of `response` (nothing when `fields` is `None`).
pub(super) fn apply(response: &mut v3::Response, fields: Option<&[String]>) {
    let Some(fields) = fields else { return };
    let paths: Vec<Vec<String>> = fields.iter().map(|f| parse_path(f)).collect();
    project_all(&mut response.account_data.events, &paths);
    project_all(&mut response.presence.events, &paths);
    for room in response.rooms.join.values_mut() {
        project_all(&mut room.timeline.events, &paths);
        project_state(&mut room.state, &paths);
        project_all(&mut room.ephemeral.events, &paths);
        project_all(&mut room.account_data.events, &paths);
    }
    for room in response.rooms.leave.values_mut() {
        project_all(&mut room.timeline.events, &paths);
        project_state(&mut room.state, &paths);
        project_all(&mut room.account_data.events, &paths);
    }
    for room in response.rooms.invite.values_mut() {
        project_all(&mut room.invite_state.events, &paths);
    }
    for room in response.rooms.knock.values_mut() {
        project_all(&mut room.knock_state.events, &paths);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn paths_with_escapes() {
        assert_eq!(parse_path("content.body"), ["content", "body"]);
        assert_eq!(parse_path(r"content.m\.relates_to"), ["content", "m.relates_to"]);
        assert_eq!(parse_path(r"a\\.b"), [r"a\", "b"]);
        assert_eq!(parse_path("type"), ["type"]);
    }
}
