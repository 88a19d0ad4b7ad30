//! Config loading: Conduit's format, environment overrides, and errors that name the key.

use super::*;

const MINIMAL: &str = r#"
[global]
server_name = "example.org"
database_path = "/tmp/trellis-test"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::from_toml(text, "test.toml", env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
}

#[test]
fn minimal_file_gets_defaults() {
    let loaded = load(MINIMAL, &[]).unwrap();
    let config = loaded.config;
    assert_eq!(config.server_name.as_str(), "example.org");
    assert_eq!(config.port, 6167);
    assert_eq!(config.default_room_version, RoomVersionId::V12);
    assert!(!config.allow_registration);
    assert!(config.rocksdb_durable_writes, "writes are synced unless the admin opts out");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn conduit_example_keys_are_accepted() {
    let text = r#"
[global]
server_name = "your.server.name"
database_backend = "rocksdb"
database_path = "/var/lib/matrix-conduit/"
port = 6167
max_request_size = 20_000_000
allow_registration = true
registration_token = "secret"
allow_federation = true
allow_check_for_updates = true
trusted_servers = ["matrix.org"]
default_room_version = "10"
address = "127.0.0.1"
log = "warn,state_res=warn"

[global.well_known]
client = "https://matrix.example.org"
server = "matrix.example.org:443"
"#;
    let loaded = load(text, &[]).unwrap();
    assert_eq!(loaded.config.default_room_version, RoomVersionId::V10);
    assert_eq!(loaded.config.registration_token.as_deref(), Some("secret"));
    assert_eq!(loaded.config.well_known.server.as_deref(), Some("matrix.example.org:443"));
    // A Conduit key Trellis does not act on is reported as such, not as unknown.
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("allow_check_for_updates"), "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("Conduit setting"), "{:?}", loaded.warnings);
}

#[test]
fn unknown_key_warns_with_its_line() {
    let text = format!("{MINIMAL}frobnicate = true\n");
    let loaded = load(&text, &[]).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("frobnicate"), "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("line 5"), "{:?}", loaded.warnings);
}

#[test]
fn missing_server_name_names_the_key() {
    let error = load("[global]\ndatabase_path = \"/x\"\n", &[]).err().unwrap().to_string();
    assert!(error.contains("server_name"), "{error}");
    assert!(error.contains("missing"), "{error}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let text = format!("{MINIMAL}port = \"eighty\"\n");
    let error = load(&text, &[]).err().unwrap().to_string();
    assert!(error.contains("`port`"), "{error}");
    assert!(error.contains("line 5"), "{error}");
}

#[test]
fn invalid_server_name_names_the_key() {
    let error =
        load("[global]\nserver_name = \"not a name!\"\ndatabase_path = \"/x\"\n", &[]).err().unwrap().to_string();
    assert!(error.contains("server_name"), "{error}");
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn syntax_error_has_a_line() {
    let error = load("[global]\nserver_name = \n", &[]).err().unwrap().to_string();
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn unreadable_file_is_an_error() {
    let error = Config::load(Some(Path::new("/nonexistent/trellis.toml")), Vec::new()).err().unwrap().to_string();
    assert!(error.contains("cannot read config file /nonexistent/trellis.toml"), "{error}");
}

#[test]
fn environment_overrides_keys_and_trellis_wins_over_conduit() {
    let loaded = load(
        MINIMAL,
        &[
            ("CONDUIT_PORT", "7000"),
            ("TRELLIS_PORT", "8008"),
            ("CONDUIT_ALLOW_REGISTRATION", "true"),
            ("TRELLIS_WELL_KNOWN_CLIENT", "https://m.example.org"),
            ("TRELLIS_FEDERATION_SERVER_ADDRESSES__HS2", "127.0.0.1:9000"),
            ("TRELLIS_CONFIG", "/ignored/path"),
        ],
    )
    .unwrap();
    let config = loaded.config;
    assert_eq!(config.port, 8008);
    assert!(config.allow_registration);
    assert_eq!(config.well_known.client.as_deref(), Some("https://m.example.org"));
    assert_eq!(config.federation_server_addresses.get("hs2").map(String::as_str), Some("127.0.0.1:9000"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn environment_alone_can_supply_required_keys() {
    let loaded = load("", &[("TRELLIS_SERVER_NAME", "env.example"), ("TRELLIS_DATABASE_PATH", "/tmp/x")]).unwrap();
    assert_eq!(loaded.config.server_name.as_str(), "env.example");
}

#[test]
fn bad_environment_value_names_the_variable() {
    let error = load(MINIMAL, &[("TRELLIS_PORT", "not-a-port")]).err().unwrap().to_string();
    assert!(error.contains("TRELLIS_PORT"), "{error}");
}

#[test]
fn numeric_looking_environment_values_work_for_string_keys() {
    let loaded =
        load(MINIMAL, &[("CONDUIT_DEFAULT_ROOM_VERSION", "10"), ("TRELLIS_REGISTRATION_TOKEN", "1234")]).unwrap();
    assert_eq!(loaded.config.default_room_version, RoomVersionId::V10);
    assert_eq!(loaded.config.registration_token.as_deref(), Some("1234"));
}

#[test]
fn well_known_server_must_be_a_server_name() {
    let text = format!("{MINIMAL}[global.well_known]\nserver = \"https://matrix.example.org/\"\n");
    let error = load(&text, &[]).err().unwrap().to_string();
    assert!(error.contains("well_known.server"), "{error}");
}

#[test]
fn missing_federation_ca_file_is_refused() {
    let text = format!("{MINIMAL}federation_ca_file = \"/nonexistent/ca.pem\"\n");
    let error = load(&text, &[]).err().unwrap().to_string();
    assert!(error.contains("federation_ca_file"), "{error}");
}

#[test]
fn unsupported_backend_is_refused() {
    let text = format!("{MINIMAL}database_backend = \"sqlite\"\n");
    let error = load(&text, &[]).err().unwrap().to_string();
    assert!(error.contains("database_backend"), "{error}");
}

#[test]
fn conduit_media_table_is_read() {
    let loaded = load(MINIMAL, &[]).unwrap();
    let media = &loaded.config.media;
    assert_eq!(media.directory(&loaded.config.database_path), PathBuf::from("/tmp/trellis-test/media"));
    assert_eq!(media.directory_structure, DirectoryStructure::Deep { depth: 2, length: 2 });
    assert!(media.freeze_legacy_media);

    let text = format!(
        "{MINIMAL}\n[global.media]\nbackend = \"filesystem\"\npath = \"/srv/media\"\n\
         directory_structure = {{ depth = 3, length = 1 }}\n[global.media.retention]\nspace = \"1GB\"\n"
    );
    let loaded = load(&text, &[]).unwrap();
    let media = &loaded.config.media;
    assert_eq!(media.directory(&loaded.config.database_path), PathBuf::from("/srv/media"));
    assert_eq!(media.directory_structure, DirectoryStructure::Deep { depth: 3, length: 1 });
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("Conduit setting"), "{:?}", loaded.warnings);

    let flat = format!("{MINIMAL}\n[global.media]\ndirectory_structure = {{}}\n");
    assert_eq!(load(&flat, &[]).unwrap().config.media.directory_structure, DirectoryStructure::Flat {});
    let env = load(MINIMAL, &[("TRELLIS_MEDIA_PATH", "/data/media")]).unwrap();
    assert_eq!(env.config.media.path, Some(PathBuf::from("/data/media")));
}

#[test]
fn unsupported_media_settings_are_errors() {
    let s3 = format!("{MINIMAL}\n[global.media]\nbackend = \"s3\"\n");
    assert!(load(&s3, &[]).err().unwrap().0.contains("media.backend"));
    let too_deep = format!("{MINIMAL}\n[global.media]\ndirectory_structure = {{ depth = 8, length = 8 }}\n");
    assert!(load(&too_deep, &[]).err().unwrap().0.contains("directory_structure"));
}

#[test]
fn url_preview_ranges_are_parsed() {
    let defaults = load(MINIMAL, &[]).unwrap().config.url_preview;
    assert!(defaults.enabled);
    assert_eq!(defaults.ip_range_denylist.len(), DEFAULT_URL_PREVIEW_DENYLIST.len());
    assert!(defaults.ip_range_allowlist.is_empty());
    let text = format!("{MINIMAL}\n[global.url_preview]\nip_range_allowlist = [\"127.0.0.0/8\", \"fd00::/8\"]\n");
    let config = load(&text, &[]).unwrap().config.url_preview;
    assert_eq!(config.ip_range_allowlist.len(), 2);
    let bad = format!("{MINIMAL}\n[global.url_preview]\nip_range_denylist = [\"not a range\"]\n");
    assert!(load(&bad, &[]).err().unwrap().0.contains("url_preview.ip_range_denylist"));
}

#[test]
fn user_directory_table_is_read() {
    assert!(!load(MINIMAL, &[]).unwrap().config.user_directory.search_all_users);
    let text = format!("{MINIMAL}\n[global.user_directory]\nsearch_all_users = true\n");
    let loaded = load(&text, &[]).unwrap();
    assert!(loaded.config.user_directory.search_all_users);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let env = load(MINIMAL, &[("TRELLIS_USER_DIRECTORY_SEARCH_ALL_USERS", "true")]).unwrap();
    assert!(env.config.user_directory.search_all_users);
}

mod appservice_registrations {
    use std::path::Path;

    use ruma::server_name;

    use crate::config::appservice::parse;

    /// A registration as Complement writes it (a `.*` namespace, MSC2409's ephemeral key, keys
    /// ruma does not know) is accepted.
    #[test]
    fn complements_registration_is_accepted() {
        let text = "id: my_as_id\nhs_token: hs\nas_token: as\nurl: 'http://localhost:9000'\n\
                    sender_localpart: the-bridge-user\nrate_limited: false\n\
                    de.sorunome.msc2409.push_ephemeral: true\npush_ephemeral: true\norg.matrix.msc3202: false\n\
                    namespaces:\n  users:\n    - exclusive: false\n      regex: .*\n  rooms: []\n  aliases: []\n";
        let service = parse(text, Path::new("as.yaml"), server_name!("hs1")).expect("valid");
        assert_eq!(service.sender.as_str(), "@the-bridge-user:hs1");
        assert!(service.registration.receive_ephemeral);
        assert!(service.users[0].regex.is_match("@anyone:hs1"));
    }

    #[test]
    fn equal_tokens_and_bad_urls_are_refused() {
        let base = "id: a\nhs_token: hs\nas_token: as\nurl: null\nsender_localpart: bot\nnamespaces: {}\n";
        assert!(parse(base, Path::new("a.yaml"), server_name!("hs1")).is_ok());
        let same = base.replace("hs_token: hs", "hs_token: as");
        assert!(parse(&same, Path::new("a.yaml"), server_name!("hs1")).unwrap_err().0.contains("must differ"));
        let ftp = base.replace("url: null", "url: ftp://x");
        assert!(parse(&ftp, Path::new("a.yaml"), server_name!("hs1")).unwrap_err().0.contains("http or https"));
    }
}

#[test]
fn the_example_rate_limits_parse_and_bad_ones_name_the_key() {
    // Every commented `rc_*` line of the example, uncommented, is valid and means the defaults.
    let example = include_str!("../../conduit.toml.example");
    let start = example.find("#[global.rc_message]").expect("rate limits in the example");
    let tables: String = example[start..]
        .lines()
        .map(|line| line.strip_prefix('#').unwrap_or(line))
        .map(|line| line.split("  #").next().unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    let loaded = load(&format!("{MINIMAL}{tables}"), &[]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let defaults = load(MINIMAL, &[]).unwrap().config;
    let config = loaded.config;
    assert_eq!(config.rc_message, defaults.rc_message);
    assert_eq!(config.rc_login.failed_attempts, defaults.rc_login.failed_attempts);
    assert_eq!(config.rc_invites.per_user, defaults.rc_invites.per_user);
    assert_eq!(config.rc_media_create, limits::RateLimit::new(10.0, 50.0));

    let Err(error) =
        load(&format!("{MINIMAL}[global.rc_login]\naddress = {{ per_second = 0, burst_count = 3 }}\n"), &[])
    else {
        panic!("a per_second of 0 is refused");
    };
    assert!(error.0.contains("rc_login.address.per_second"), "{}", error.0);
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let config =
        load(&format!("{MINIMAL}trusted_proxies = [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]\n"), &[]).unwrap().config;
    let expected: Vec<ipnet::IpNet> =
        ["127.0.0.1/32", "::1/128", "10.0.0.0/8"].iter().map(|net| net.parse().unwrap()).collect();
    assert_eq!(config.trusted_proxies, expected);
    assert!(load(MINIMAL, &[]).unwrap().config.trusted_proxies.is_empty());
    let Err(error) = load(&format!("{MINIMAL}trusted_proxies = [\"proxy.local\"]\n"), &[]) else {
        panic!("a host name is refused");
    };
    assert!(error.0.contains("proxy.local"), "{}", error.0);
}
