//! The `trellis` command line: serve (the default), check a config, create a user, and the data
//! protection commands (`backup`, `export-user`, in `cli_data.rs`), and the storage report
//! (`storage`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    config::{Config, Loaded},
    service::{Services, accounts::AccountKind, random_string},
    storage::Db,
};

#[derive(Parser)]
#[command(name = "trellis", version, about = "A Matrix homeserver with an embedded RocksDB event store")]
pub struct Cli {
    /// Config file (Conduit's format). Default: $TRELLIS_CONFIG, then $CONDUIT_CONFIG.
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the config, print warnings, and exit.
    CheckConfig,
    /// Create an account in the local database. The server must be stopped.
    CreateUser {
        /// Localpart of the new user (`alice` for @alice:server).
        #[arg(long)]
        username: String,
        /// Password; a random one is generated and printed when omitted.
        #[arg(long)]
        password: Option<String>,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Online backups of the database and media: create, verify, restore.
    #[command(subcommand, after_help = crate::cli_data::RUNNING_SERVER_HELP)]
    Backup(BackupCommand),
    /// Export one user's data (profile, devices, account data, push rules, rooms, the events they
    /// sent, their media) as JSON files into a new directory.
    #[command(after_help = crate::cli_data::RUNNING_SERVER_HELP)]
    ExportUser {
        /// The user, e.g. @alice:example.com (a user of this server).
        user_id: String,
        /// The directory to write (must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        server: crate::cli_data::ServerArgs,
    },
    /// Print the size of every table of the database (on disk, live data, in memory, keys) and
    /// the bytes per stored event, as JSON. The server must be stopped (while it runs, use
    /// `GET /_trellis/admin/v1/storage/tables`).
    Storage {
        /// Compact every table first, so the sizes hold no deleted or overwritten values.
        #[arg(long)]
        compact: bool,
    },
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Take a consistent backup into DIR (absent or empty) while the server runs (through its
    /// admin API) or, when it is stopped, from the database directly. Incremental against the
    /// newest backup in DIR's parent directory.
    #[command(after_help = crate::cli_data::RUNNING_SERVER_HELP)]
    Create {
        /// The backup directory to create.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[command(flatten)]
        server: crate::cli_data::ServerArgs,
    },
    /// Check every file of the backup in DIR against its manifest (size and SHA-256).
    Verify {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Restore the backup in DIR into the config's database_path and media directory, which
    /// must be empty or absent. The server must be stopped.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
}

impl Cli {
    /// The config file path from the flag or the environment.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            ["TRELLIS_CONFIG", "CONDUIT_CONFIG"]
                .iter()
                .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from))
        })
    }

    pub fn load_config(&self) -> Result<Loaded, String> {
        Config::load(self.config_path().as_deref(), std::env::vars()).map_err(|e| e.to_string())
    }
}

/// `trellis storage`: opens the database directly, compacts it if asked, prints the report.
pub async fn storage(config: Config, compact: bool) -> Result<(), String> {
    let report = tokio::task::spawn_blocking(move || {
        let db = Db::open(&config).map_err(|e| format!("{e} (is the server still running? stop it first)"))?;
        if compact {
            db.compact_all().map_err(|e| e.to_string())?;
        }
        crate::service::admin::storage::report(&db).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// `trellis create-user`: opens the database directly and creates the account.
pub async fn create_user(config: Config, username: &str, password: Option<String>, admin: bool) -> Result<(), String> {
    let db = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Db::open(&config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e} (is the server still running? stop it first)"))?
    };
    let services = Services::build(config, db.clone()).map_err(|e| e.to_string())?;
    let user_id = services.accounts.user_id_for_new_localpart(username).map_err(|e| e.to_string())?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| random_string(20));
    let kind = if admin { AccountKind::Admin } else { AccountKind::User };
    services.accounts.create(&user_id, Some(&password), kind).await.map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    if generated {
        println!("Created {user_id} with password {password}");
    } else {
        println!("Created {user_id}");
    }
    Ok(())
}
