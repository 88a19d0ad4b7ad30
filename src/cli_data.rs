//! The data protection commands of the `trellis` command line: `backup create|verify|restore`
//! and `export-user`.
//!
//! RocksDB locks its directory, so a command cannot open the database of a running server:
//! `backup create` and `export-user` ask the running server through its admin API
//! (`/_trellis/admin/v1/...`, with an admin's access token from `TRELLIS_ADMIN_TOKEN`), and open
//! the database directly only when the server is stopped. The server counts as running when
//! `--server`/`TRELLIS_ADMIN_URL` is given, or when something accepts connections on the
//! config's client listener (`address`, `port`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    cli::BackupCommand,
    config::Config,
    service::{
        Services,
        server_backup::{self, manifest},
        user_export,
    },
    storage::Db,
};

/// Shown under `--help` of the commands that talk to a running server.
pub const RUNNING_SERVER_HELP: &str = "\
While the server runs, RocksDB's lock keeps other processes out of the database, so the command \
asks the server through its admin API: at --server / $TRELLIS_ADMIN_URL if given, else at the \
config's client listener (address and port; with `tls` configured, give the https URL). The \
access token of a server admin must be in $TRELLIS_ADMIN_TOKEN. Paths are on the server's \
machine. When the server is stopped, the command opens the database itself.";

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Base URL of the running server's client listener (e.g. http://127.0.0.1:6167).
    #[arg(long = "server", env = "TRELLIS_ADMIN_URL", value_name = "URL")]
    pub url: Option<String>,
}

/// `trellis backup verify DIR`.
pub fn verify(dir: &Path) -> ExitCode {
    match manifest::verify(dir) {
        Ok(verified) => {
            let m = &verified.manifest;
            println!(
                "backup {} is intact: {} files, {} bytes; server {}, schema version {}, taken {}",
                dir.display(),
                verified.files,
                verified.bytes,
                m.server_name,
                m.schema_version,
                m.created
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("trellis: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `trellis backup create|restore` (verify runs without a config, see `main`).
pub async fn backup(config: Config, command: BackupCommand) -> Result<(), String> {
    match command {
        BackupCommand::Create { to, server } => {
            let to = absolute(&to)?;
            let summary = match running_server(&config, &server).await? {
                Some(url) => admin_call(&url, "/_trellis/admin/v1/backup", json!({"directory": to})).await?,
                None => {
                    let db = open_stopped(&config).await?;
                    let summary =
                        blocking(move || server_backup::create(&db, &config, &to).map_err(|e| e.to_string())).await?;
                    serde_json::to_value(summary).map_err(|e| e.to_string())?
                }
            };
            print_backup_summary(&summary);
            Ok(())
        }
        BackupCommand::Restore { from } => {
            let target = config.database_path.clone();
            let summary = blocking(move || server_backup::restore(&config, &from).map_err(|e| e.to_string())).await?;
            println!(
                "restored {} files ({} bytes) of the backup taken {} into {}; start the server to use it",
                summary.files,
                summary.bytes,
                summary.created,
                target.display()
            );
            Ok(())
        }
        BackupCommand::Verify { dir } => manifest::verify(&dir).map(|_| ()).map_err(|e| e.to_string()),
    }
}

/// `trellis export-user USER --to DIR`.
pub async fn export_user(config: Config, user_id: &str, to: &Path, server: &ServerArgs) -> Result<(), String> {
    let to = absolute(to)?;
    let user = ruma::OwnedUserId::try_from(user_id).map_err(|e| format!("invalid user ID {user_id:?}: {e}"))?;
    let summary = match running_server(&config, server).await? {
        Some(url) => {
            let path = format!("/_trellis/admin/v1/users/{}/export", urlencode(user.as_str()));
            admin_call(&url, &path, json!({"directory": to})).await?
        }
        None => {
            let db = open_stopped(&config).await?;
            let services = Services::build(config, db).map_err(|e| e.to_string())?;
            let summary = user_export::export(&services, &user, to).await.map_err(|e| e.to_string())?;
            serde_json::to_value(summary).map_err(|e| e.to_string())?
        }
    };
    println!(
        "exported {} to {}: {} devices, {} rooms, {} events, {} media files",
        user,
        summary["directory"].as_str().unwrap_or_default(),
        summary["devices"],
        summary["rooms"],
        summary["events"],
        summary["media"]
    );
    Ok(())
}

fn print_backup_summary(summary: &Value) {
    println!(
        "backup written to {}: {} files, {} bytes, taken {}",
        summary["directory"].as_str().unwrap_or_default(),
        summary["files"],
        summary["bytes"],
        summary["created"].as_str().unwrap_or_default()
    );
    match summary["incremental_base"].as_str() {
        Some(base) => println!(
            "incremental: {} unchanged files ({} bytes) hard-linked from the earlier backup {base}",
            summary["linked_files"], summary["linked_bytes"]
        ),
        None => println!("full backup: no earlier backup of this server in the same parent directory"),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

async fn blocking<R: Send + 'static>(work: impl FnOnce() -> Result<R, String> + Send + 'static) -> Result<R, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string())?
}

async fn open_stopped(config: &Config) -> Result<Db, String> {
    let config = config.clone();
    blocking(move || {
        Db::open(&config).map_err(|e| {
            format!(
                "{e}\n(the server seems to be running where this command cannot find it: give its URL with \
                 --server or TRELLIS_ADMIN_URL, and an admin's access token in TRELLIS_ADMIN_TOKEN)"
            )
        })
    })
    .await
}

/// The URL of the running server to ask, or `None` when it is stopped.
async fn running_server(config: &Config, args: &ServerArgs) -> Result<Option<String>, String> {
    if let Some(url) = args.url.as_ref().filter(|u| !u.is_empty()) {
        return Ok(Some(url.trim_end_matches('/').to_owned()));
    }
    if config.port == 0 {
        return Ok(None);
    }
    let host = match config.address {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let address = SocketAddr::new(host, config.port);
    let connected = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await;
    if !matches!(connected, Ok(Ok(_))) {
        return Ok(None);
    }
    if config.tls.is_some() {
        return Err(format!(
            "the server is running at {address} with TLS: give its https URL (with the certificate's host name) \
             with --server or TRELLIS_ADMIN_URL"
        ));
    }
    Ok(Some(format!("http://{address}")))
}

/// POSTs `body` to an admin endpoint of the running server; returns its JSON answer.
async fn admin_call(base: &str, path: &str, body: Value) -> Result<Value, String> {
    let token = std::env::var("TRELLIS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
        format!(
            "the server is running ({base}): set TRELLIS_ADMIN_TOKEN to the access token of a server admin \
             so this command can ask it"
        )
    })?;
    let client = reqwest::Client::builder().build().map_err(|e| e.to_string())?;
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("cannot reach the server at {base}: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("reading the server's answer: {e}"))?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!(
            "the server refused ({status}): {} {}",
            answer["errcode"].as_str().unwrap_or_default(),
            answer["error"].as_str().unwrap_or(&String::from_utf8_lossy(&bytes))
        ));
    }
    Ok(answer)
}

/// Percent-encodes a path segment (user IDs hold `@` and `:`).
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
