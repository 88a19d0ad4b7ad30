//! The `trellis` binary: parses the command line, loads the config, sets up logging and runs.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use trellis::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match cli.load_config() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("trellis: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&loaded.config.log) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("trellis: configuration error: config key `log`: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("trellis: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = loaded.config;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => trellis::server::run(config).await,
            Command::CheckConfig => {
                println!("config is valid");
                Ok(())
            }
            Command::CreateUser { username, password, admin } => {
                trellis::cli::create_user(config, &username, password, admin).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trellis: {error}");
            ExitCode::FAILURE
        }
    }
}
