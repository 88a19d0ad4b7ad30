//! Application service registrations: the YAML files named by `app_service_config_files`, in
//! Synapse's format, read and checked at start-up. A file that cannot be read or parsed, an
//! empty or duplicate `id`/`as_token`, an invalid regex or `sender_localpart`, or a bad `url`
//! stops the start with a message naming the file and the problem. `receive_ephemeral` may also
//! be spelt `push_ephemeral` or `de.sorunome.msc2409.push_ephemeral` (MSC2409's names).

use std::path::{Path, PathBuf};

use regex::Regex;
use ruma::{OwnedUserId, ServerName, UserId, api::appservice::Registration};

use super::ConfigError;

/// One compiled namespace entry.
#[derive(Debug, Clone)]
pub struct CompiledNamespace {
    pub regex: Regex,
    pub exclusive: bool,
}

/// A checked registration with its namespaces compiled.
#[derive(Debug, Clone)]
pub struct AppServiceRegistration {
    pub registration: Registration,
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// `@sender_localpart:server_name`.
    pub sender: OwnedUserId,
    pub users: Vec<CompiledNamespace>,
    pub aliases: Vec<CompiledNamespace>,
    pub rooms: Vec<CompiledNamespace>,
}

impl AppServiceRegistration {
    pub fn id(&self) -> &str {
        &self.registration.id
    }
}

/// Reads and checks every file; their ids and `as_token`s must be unique across files.
pub fn load_all(files: &[PathBuf], server_name: &ServerName) -> Result<Vec<AppServiceRegistration>, ConfigError> {
    let mut out: Vec<AppServiceRegistration> = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| problem(file, format!("cannot read it: {e}")))?;
        let service = parse(&text, file, server_name)?;
        if let Some(other) = out.iter().find(|o| o.id() == service.id()) {
            return Err(problem(file, format!("id `{}` is already used by {}", service.id(), other.file.display())));
        }
        if let Some(other) = out.iter().find(|o| o.registration.as_token == service.registration.as_token) {
            return Err(problem(file, format!("as_token is already used by {}", other.file.display())));
        }
        out.push(service);
    }
    Ok(out)
}

fn problem(file: &Path, message: String) -> ConfigError {
    ConfigError(format!("application service registration {}: {message}", file.display()))
}

/// Parses and checks one registration (`file` names it in messages).
pub fn parse(text: &str, file: &Path, server_name: &ServerName) -> Result<AppServiceRegistration, ConfigError> {
    let mut registration: Registration =
        serde_yaml_ng::from_str(text).map_err(|e| problem(file, format!("invalid registration: {e}")))?;
    // MSC2409's older names for `receive_ephemeral`, which Complement (and older bridges) write.
    if !registration.receive_ephemeral
        && let Ok(serde_yaml_ng::Value::Mapping(raw)) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
    {
        registration.receive_ephemeral = ["de.sorunome.msc2409.push_ephemeral", "push_ephemeral"]
            .iter()
            .any(|key| raw.get(*key).and_then(serde_yaml_ng::Value::as_bool) == Some(true));
    }
    for (key, value) in
        [("id", &registration.id), ("as_token", &registration.as_token), ("hs_token", &registration.hs_token)]
    {
        if value.trim().is_empty() {
            return Err(problem(file, format!("`{key}` must not be empty")));
        }
    }
    if registration.as_token == registration.hs_token {
        return Err(problem(file, "`as_token` and `hs_token` must differ".into()));
    }
    let sender = UserId::parse_with_server_name(registration.sender_localpart.as_str(), server_name)
        .ok()
        .filter(|user| {
            let localpart = user.localpart();
            localpart == registration.sender_localpart
                && !localpart.is_empty()
                && localpart.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':')
        })
        .ok_or_else(|| {
            problem(file, format!("`sender_localpart` \"{}\" is not a valid localpart", registration.sender_localpart))
        })?;
    if let Some(url) = &registration.url {
        let parsed = url::Url::parse(url).map_err(|e| problem(file, format!("`url` \"{url}\" is invalid: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(problem(file, format!("`url` \"{url}\" must be http or https")));
        }
    }
    let compile = |kind: &str, list: &[ruma::api::appservice::Namespace]| {
        list.iter()
            .map(|namespace| {
                // Synapse matches from the start of the ID; the end is left to the regex.
                Regex::new(&format!("^(?:{})", namespace.regex))
                    .map(|regex| CompiledNamespace { regex, exclusive: namespace.exclusive })
                    .map_err(|e| {
                        problem(file, format!("namespaces.{kind}: invalid regex \"{}\": {e}", namespace.regex))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let users = compile("users", &registration.namespaces.users)?;
    let aliases = compile("aliases", &registration.namespaces.aliases)?;
    let rooms = compile("rooms", &registration.namespaces.rooms)?;
    Ok(AppServiceRegistration { registration, file: file.to_owned(), sender, users, aliases, rooms })
}
