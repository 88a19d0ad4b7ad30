//! Start-up, shutdown and the database across restarts: data persists, a database of another
//! server or a newer schema is refused, a bad config stops start-up, the CLI creates users.

use std::process::Command;

use trellis::{
    config::Config,
    storage::{Batch, Db, tables::META},
};

use crate::harness::{TestServer, config_text};

#[tokio::test]
async fn accounts_survive_a_restart() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let alice = server.register("alice", "pw").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.kept", crate::harness::enc(&alice.user_id));
    assert_eq!(server.put(&path, alice.token(), serde_json::json!({"kept": true})).await.0, 200);
    assert_eq!(server.stop(), Some(0), "graceful shutdown exits cleanly");

    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    assert_eq!(server.get("/_matrix/client/v3/account/whoami", alice.token()).await.0, 200, "tokens persist");
    let (status, body) = server.login("alice", "pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&path, alice.token()).await.1["kept"], true);
}

#[test]
fn a_database_of_another_server_is_refused() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "first.example", "").unwrap();
    assert_eq!(server.stop(), Some(0));
    let error = TestServer::start_in(tempdir.path(), "second.example", "").err().expect("refused");
    assert!(error.contains("first.example") && error.contains("server_name"), "{error}");
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let tempdir = tempfile::tempdir().unwrap();
    let text = config_text(tempdir.path(), "localhost", "");
    let config = Config::from_toml(&text, "test", Vec::new()).unwrap().config;
    {
        let db = Db::open(&config).unwrap();
        let mut batch = Batch::new();
        batch
            .put(&META, &"schema_version".to_owned(), &serde_json::json!(trellis::storage::SCHEMA_VERSION + 1))
            .unwrap();
        db.write(batch).unwrap();
        db.flush().unwrap();
    }
    let error = TestServer::start_in(tempdir.path(), "localhost", "").err().expect("refused");
    assert!(error.contains("newer"), "{error}");
}

#[test]
fn a_bad_config_stops_start_up_with_the_key_named() {
    let tempdir = tempfile::tempdir().unwrap();
    let path = tempdir.path().join("bad.toml");
    std::fs::write(&path, "[global]\nserver_name = \"localhost\"\ndatabase_path = \"/tmp/x\"\nport = \"http\"\n")
        .unwrap();
    let output = Command::new(crate::harness::trellis_bin()).arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`port`") && stderr.contains("line 4"), "{stderr}");

    let missing = Command::new(crate::harness::trellis_bin())
        .arg("--config")
        .arg(tempdir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config file"));

    // The environment is read too: TRELLIS_CONFIG names the file, TRELLIS_<KEY> overrides keys.
    let env_only = Command::new(crate::harness::trellis_bin())
        .arg("check-config")
        .env("TRELLIS_CONFIG", &path)
        .env("TRELLIS_PORT", "8008")
        .output()
        .unwrap();
    assert!(env_only.status.success(), "{}", String::from_utf8_lossy(&env_only.stderr));
}

#[tokio::test]
async fn create_user_command_writes_to_the_local_database() {
    let tempdir = tempfile::tempdir().unwrap();
    let config_path = tempdir.path().join("trellis.toml");
    std::fs::write(&config_path, config_text(tempdir.path(), "localhost", "")).unwrap();
    let output = Command::new(crate::harness::trellis_bin())
        .args(["create-user", "--username", "root", "--password", "secret-pw", "--admin", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("@root:localhost"));

    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    assert_eq!(server.login("root", "secret-pw").await.0, 200);
    // While the server runs, the database is locked and the command says why.
    let busy = Command::new(crate::harness::trellis_bin())
        .args(["create-user", "--username", "other", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop it first"));
}
