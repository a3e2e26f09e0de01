use std::io::Write;

use super::*;

fn args() -> ConfigArgs {
    ConfigArgs::default()
}

fn file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(text)
}

/// A throwaway file under the target dir; no extra crate for one helper.
mod tempfile_path {
    use std::path::PathBuf;

    pub struct TempPath(pub PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(text: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!(
            "herald-config-{}.toml",
            crate::random::random_token(12)
        ));
        let mut f = std::fs::File::create(&path).expect("create temp config");
        super::Write::write_all(&mut f, text.as_bytes()).expect("write temp config");
        TempPath(path)
    }
}

#[test]
fn defaults_apply_without_file_or_flags() {
    let config = Config::load(&args()).unwrap();
    assert_eq!(config.http_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.grpc_addr.to_string(), "0.0.0.0:50051");
    assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9090");
    assert_eq!(config.drain, Duration::from_secs(10));
    assert_eq!(config.limits.max_subscriptions, 50);
    assert_eq!(config.limits.commands_per_minute, 100);
    assert!(config.require_credentials().is_err());
}

#[test]
fn flag_beats_file_beats_default() {
    let path = file("http_addr = \"127.0.0.1:1000\"\ngrpc_addr = \"127.0.0.1:2000\"\n");
    let mut args = args();
    args.config = Some(path.0.clone());
    args.http_addr = Some("127.0.0.1:3000".into());
    let config = Config::load(&args).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:3000");
    assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:2000");
    assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9090");
}

#[test]
fn bad_values_name_their_key() {
    let mut args = args();
    args.http_addr = Some("not-an-address".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_HTTP_ADDR"), "{err}");

    let mut args = self::args();
    args.jwt_secret = Some("short".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_JWT_SECRET"), "{err}");

    let path = file("htp_addr = \"127.0.0.1:1\"\n");
    let mut args = self::args();
    args.config = Some(path.0.clone());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("htp_addr"), "{err}");
}

#[test]
fn namespaces_from_file_replace_and_add() {
    let path = file(
        "[namespaces.chat]\naccess = \"org_member\"\nhistory_size = 10\nhistory_ttl = 60\nclient_publish = true\n\n\
         [namespaces.public]\naccess = \"public\"\nclient_publish = true\n",
    );
    let mut args = args();
    args.config = Some(path.0.clone());
    let config = Config::load(&args).unwrap();
    let chat = &config.namespaces["chat"];
    assert_eq!(chat.access, Access::OrgMember);
    assert_eq!(chat.options.history_size, 10);
    assert!(chat.options.client_publish);
    assert!(config.namespaces["public"].options.client_publish);
    assert_eq!(config.namespaces["org"].options.history_size, 100);
}

#[test]
fn printed_configuration_loads_back_as_a_file() {
    let mut args = args();
    args.drain_seconds = Some("7".into());
    args.max_subscriptions = Some("9".into());
    let shown = Config::load(&args).unwrap().to_masked_toml();
    let path = file(&shown);
    let mut args = self::args();
    args.config = Some(path.0.clone());
    let config = Config::load(&args).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(config.drain, Duration::from_secs(7));
    assert_eq!(config.limits.max_subscriptions, 9);
    assert_eq!(
        config.namespaces["org"].root.as_ref().unwrap().history_size,
        0
    );
}

#[test]
fn dev_mode_generates_secrets_and_binds_loopback() {
    let config = Config::load(&args()).unwrap().into_dev();
    assert!(config.require_credentials().is_ok());
    assert!(config.http_addr.ip().is_loopback());
    assert!(config.grpc_addr.ip().is_loopback());
    assert!(config.metrics_addr.ip().is_loopback());
    let shown = config.to_masked_toml();
    assert!(
        !shown.contains(config.api_keys[0].expose()),
        "api key leaked"
    );
    assert!(
        !shown.contains(config.jwt.secret.as_ref().unwrap().expose()),
        "secret leaked"
    );
    assert!(shown.contains("****"));
}

#[test]
fn cluster_mode_needs_both_backends_and_masks_their_passwords() {
    let nats_only = ConfigArgs {
        nats_url: Some("nats://127.0.0.1:4222".into()),
        ..args()
    };
    let error = Config::load(&nats_only).unwrap_err().to_string();
    assert!(error.contains("HERALD_REDIS_URL"), "{error}");
    let redis_only = ConfigArgs {
        redis_url: Some("redis://127.0.0.1:6379".into()),
        ..args()
    };
    let error = Config::load(&redis_only).unwrap_err().to_string();
    assert!(error.contains("HERALD_NATS_URL"), "{error}");

    let both = ConfigArgs {
        nats_url: Some("nats://herald:s3cret@nats-a:4222,nats://nats-b:4222".into()),
        redis_url: Some("redis://:hunter2@redis:6379/0".into()),
        ..args()
    };
    let config = Config::load(&both).unwrap();
    assert!(config.is_cluster());
    let shown = config.to_masked_toml();
    assert!(
        !shown.contains("s3cret") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(
        shown.contains("nats://herald:****@nats-a:4222,nats://nats-b:4222"),
        "{shown}"
    );
    assert!(shown.contains("redis://:****@redis:6379/0"), "{shown}");
    assert!(!Config::load(&args()).unwrap().is_cluster());
}

#[test]
fn the_env_listing_names_every_variable_with_its_flag_and_value() {
    let config = Config::load(&ConfigArgs {
        redis_url: Some("redis://:hunter2@redis:6379".into()),
        nats_url: Some("nats://nats:4222".into()),
        api_keys: Some("key-one-0123456789,key-two-0123456789".into()),
        ..args()
    })
    .unwrap();
    let listing = config.to_env_listing();
    assert!(
        listing.contains("HERALD_HTTP_ADDR --http-addr 0.0.0.0:8080\n"),
        "{listing}"
    );
    assert!(
        listing.contains("HERALD_DRAIN_SECONDS --drain-seconds 10\n"),
        "{listing}"
    );
    assert!(listing.contains("HERALD_REDIS_URL --redis-url redis://:****@redis:6379\n"));
    assert!(
        listing.contains("HERALD_API_KEYS --api-keys ****,****\n"),
        "{listing}"
    );
    assert!(
        listing.contains("HERALD_JWT_SECRET --jwt-secret \n"),
        "{listing}"
    );
    assert!(!listing.contains("hunter2") && !listing.contains("key-one"));
    let names = listing
        .lines()
        .filter(|line| line.starts_with("HERALD_"))
        .count();
    assert_eq!(names, listing.lines().count(), "one variable a line");
}

#[test]
fn allowed_origins_must_be_origins_and_a_wildcard_stands_alone() {
    let load = |origins: &str| {
        Config::load(&ConfigArgs {
            allowed_origins: Some(origins.into()),
            ..args()
        })
    };
    for bad in [
        "*,https://app.example.com",
        "https://app.example.com, *",
        "null",
        "https://app.example.com,NULL",
        "https://app.example.com/",
        "app.example.com",
        "https://*.example.com",
    ] {
        let error = load(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("HERALD_ALLOWED_ORIGINS"),
            "{bad:?}: {error:?}"
        );
    }
    for good in [
        "*",
        "https://app.example.com",
        "https://app.example.com,http://localhost:5173",
        "capacitor://localhost",
    ] {
        let config = load(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert!(!config.allowed_origins.is_empty());
    }
}

#[test]
fn admission_settings_default_load_and_name_their_key() {
    let config = Config::load(&args()).unwrap();
    assert_eq!(config.limits.max_pending_connections, 1000);
    assert_eq!(config.limits.max_pending_per_ip, 32);
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.connect_timeout, Duration::from_secs(5));
    let listing = config.to_env_listing();
    for line in [
        "HERALD_MAX_PENDING_CONNECTIONS --max-pending-connections 1000\n",
        "HERALD_MAX_PENDING_PER_IP --max-pending-per-ip 32\n",
        "HERALD_HEADER_READ_TIMEOUT_SECONDS --header-read-timeout-seconds 5\n",
    ] {
        assert!(listing.contains(line), "{line:?} not in {listing}");
    }

    let path = file("max_pending_connections = 10\nheader_read_timeout_seconds = 2\n");
    let mut args = self::args();
    args.config = Some(path.0.clone());
    args.max_pending_per_ip = Some("0".into());
    let config = Config::load(&args).unwrap();
    assert_eq!(config.limits.max_pending_connections, 10);
    assert_eq!(config.limits.max_pending_per_ip, 0);
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(2));

    let mut args = self::args();
    args.max_pending_per_ip = Some("lots".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_MAX_PENDING_PER_IP"), "{err}");
    let mut args = self::args();
    args.max_pending_per_ip = Some("1".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_MAX_PENDING_PER_IP"), "{err}");
    let mut args = self::args();
    args.header_read_timeout_seconds = Some("0".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_HEADER_READ_TIMEOUT_SECONDS"), "{err}");
    let mut args = self::args();
    args.connect_timeout_seconds = Some("0".into());
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("HERALD_CONNECT_TIMEOUT_SECONDS"), "{err}");
}

#[test]
fn tls_needs_both_files_and_grpc_tls_needs_them_too() {
    let load = |cert: Option<&str>, key: Option<&str>, grpc: Option<&str>| {
        Config::load(&ConfigArgs {
            tls_cert: cert.map(Into::into),
            tls_key: key.map(Into::into),
            grpc_tls: grpc.map(Into::into),
            ..args()
        })
    };
    let error = |result: Result<Config, ConfigError>| result.err().unwrap().to_string();
    assert!(error(load(Some("/c.pem"), None, None)).contains("invalid HERALD_TLS_KEY"));
    assert!(error(load(None, Some("/k.pem"), None)).contains("invalid HERALD_TLS_CERT"));
    assert!(error(load(None, None, Some("true"))).contains("invalid HERALD_GRPC_TLS"));
    assert!(error(load(Some("/c.pem"), Some("/k.pem"), Some("yes"))).contains("HERALD_GRPC_TLS"));
    assert!(load(None, None, None).unwrap().tls.is_none());
    assert!(
        load(Some(""), Some(""), None).unwrap().tls.is_none(),
        "empty = unset"
    );

    let config = load(Some("/c.pem"), Some("/k.pem"), Some("true")).unwrap();
    let tls = config.tls.as_ref().unwrap();
    assert_eq!((tls.cert.to_str(), config.grpc_tls), (Some("/c.pem"), true));
    assert_eq!(tls.reload_interval, TLS_RELOAD_INTERVAL);
    let listing = config.to_env_listing();
    for line in [
        "HERALD_TLS_CERT --tls-cert /c.pem\n",
        "HERALD_TLS_KEY --tls-key /k.pem\n",
        "HERALD_GRPC_TLS --grpc-tls true\n",
    ] {
        assert!(listing.contains(line), "{line:?} in {listing}");
    }
    let shown = config.to_masked_toml();
    let path = file(&shown);
    let config = Config::load(&ConfigArgs {
        config: Some(path.0.clone()),
        ..args()
    })
    .unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert!(config.grpc_tls);
    assert_eq!(config.tls.unwrap().key.to_str(), Some("/k.pem"));
    let listing = Config::load(&args()).unwrap().to_env_listing();
    assert!(
        listing.contains("HERALD_GRPC_TLS --grpc-tls false\n"),
        "{listing}"
    );
    assert!(
        listing.contains("HERALD_TLS_CERT --tls-cert \n"),
        "{listing}"
    );
}

#[test]
fn a_bad_value_in_the_file_names_its_key_and_the_file() {
    let path = file("max_message_bytes = 10\n");
    let args = ConfigArgs {
        config: Some(path.0.clone()),
        ..args()
    };
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.contains("invalid max_message_bytes in "), "{err}");
    assert!(err.contains(&path.0.display().to_string()), "{err}");
    assert!(err.contains("must be at least 1024"), "{err}");

    let args = ConfigArgs {
        config: Some(path.0.clone()),
        max_message_bytes: Some("2048".into()),
        ..self::args()
    };
    let config = Config::load(&args).expect("the flag wins over the file's bad value");
    assert_eq!(config.limits.max_message_bytes, 2048);
}

#[test]
fn every_declaration_is_complete_and_its_default_loads() {
    for setting in SETTINGS {
        assert!(!setting.doc.is_empty(), "{}: no doc", setting.key);
        let helm = match setting.helm {
            Helm::Value(text) | Helm::ListenPort(text) | Helm::NotAValue(text) => text,
        };
        assert!(!helm.is_empty(), "{}: no Helm path or reason", setting.key);
        assert_eq!(
            setting.env,
            format!("HERALD_{}", setting.key.to_uppercase())
        );
        assert_eq!(setting.flag, setting.key.replace('_', "-"));
    }
    let config = Config::load(&args()).unwrap();
    let listing = config.to_env_listing();
    for setting in SETTINGS {
        if let DefaultValue::Text(text) = setting.default {
            let line = format!("{} --{} {text}\n", setting.env, setting.flag);
            assert!(listing.contains(&line), "{line:?} not in {listing}");
        }
    }
    assert_eq!(
        config.limits.max_message_bytes,
        herald_protocol::DEFAULT_MAX_MESSAGE_BYTES
    );
    assert_eq!(
        config.limits.max_json_depth,
        herald_protocol::DEFAULT_MAX_JSON_DEPTH
    );
}

#[test]
fn the_json_listing_holds_every_declaration() {
    let listing: serde_json::Value =
        serde_json::from_str(&settings_listing(SettingsFormat::Json)).unwrap();
    let listed = listing.as_array().unwrap();
    assert_eq!(listed.len(), SETTINGS.len());
    let gap = listed
        .iter()
        .find(|s| s["env"] == "HERALD_GAP_WAIT_MS")
        .unwrap();
    assert_eq!(gap["flag"], "--gap-wait-ms");
    assert_eq!(gap["toml_key"], "gap_wait_ms");
    assert_eq!(gap["default"], "100");
    assert_eq!(gap["helm"]["value"], "herald.gapWaitMs");
    assert_eq!(gap["secret"], false);
    let secret = listed
        .iter()
        .find(|s| s["env"] == "HERALD_JWT_SECRET")
        .unwrap();
    assert_eq!(
        (&secret["secret"], &secret["default"]),
        (&true.into(), &serde_json::Value::Null)
    );
    let config = &listed[0];
    assert_eq!(
        (&config["env"], &config["toml_key"]),
        (&"HERALD_CONFIG".into(), &serde_json::Value::Null)
    );
    assert!(config["helm"]["not_a_value"].is_string());
}

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).expect("README.md")
}

#[test]
fn the_readme_configuration_table_is_the_generated_one() {
    let readme = readme();
    let start = "<!-- settings table: generated by `herald config --settings markdown`, checked by a test -->\n";
    let end = "<!-- end of settings table -->\n";
    let table = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table)
        .expect("README's Configuration section has the settings table between its markers");
    assert!(
        table == settings_listing(SettingsFormat::Markdown),
        "README's Configuration table differs from the settings declared in \
         crates/gateway/src/config/settings.rs. Regenerate it, between the markers, with\n  \
         cargo run -q -p herald-gateway --bin herald -- config --settings markdown"
    );
}

/// The numbers in `text`, with `KiB` and `MiB` applied: "100,000 / 100" → 100000, 100.
fn numbers(text: &str) -> Vec<u64> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let run = &rest[start..];
        let len = run
            .find(|c: char| !(c.is_ascii_digit() || c == ','))
            .unwrap_or(run.len());
        let digits = run[..len].trim_end_matches(',');
        let mut value: u64 = digits.replace(',', "").parse().unwrap();
        let after = run[digits.len()..].trim_start();
        if after.starts_with("KiB") {
            value *= 1024;
        } else if after.starts_with("MiB") {
            value *= 1024 * 1024;
        }
        found.push(value);
        rest = &run[digits.len()..];
    }
    found
}

#[test]
fn the_readme_limits_table_shows_the_declared_defaults() {
    let readme = readme();
    let section = readme
        .split_once("### Limits\n")
        .map(|(_, rest)| rest)
        .expect("README has a Limits section");
    let mut checked = 0;
    for row in section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let [_, default, setting, seen] = cells[..] else {
            continue;
        };
        // A derived quantity (a quarter of the queue), or a default told in words, shows no
        // declared default.
        if setting.contains('÷') || numbers(default).is_empty() {
            continue;
        }
        // The pong timeout is told in the last column ("no Pong within 20 s").
        let shown = numbers(&format!("{default} {seen}"));
        for declared in SETTINGS
            .iter()
            .filter(|s| setting.contains(&format!("`{}`", s.env)))
        {
            let DefaultValue::Text(text) = declared.default else {
                continue;
            };
            let value: u64 = text.parse().unwrap();
            assert!(
                shown.contains(&value),
                "README's Limits row {row:?} does not show {}'s default {value}",
                declared.env
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} defaults found in the Limits table"
    );
}

#[test]
fn a_bad_flag_is_named_as_the_flag() {
    use clap::{Args, FromArgMatches};
    let command = ConfigArgs::augment_args(clap::Command::new("herald"));
    let matches = command
        .try_get_matches_from(["herald", "--http-addr", "nope", "--drain-seconds", "3"])
        .unwrap();
    let args = ConfigArgs::from_arg_matches(&matches).unwrap();
    assert_eq!(args.drain_seconds.as_deref(), Some("3"));
    let err = Config::load(&args).unwrap_err().to_string();
    assert!(err.starts_with("invalid --http-addr: \"nope\""), "{err}");
}

#[test]
fn backend_settings_default_load_and_are_checked() {
    let config = Config::load(&args()).unwrap();
    let backend = &config.backend;
    assert_eq!(backend.addr, None);
    assert_eq!(backend.timeout, Duration::from_millis(5000));
    assert_eq!(backend.max_concurrency, 256);
    assert!(backend.methods.is_empty() && backend.token.is_none() && backend.tls_ca.is_none());
    assert_eq!(config.limits.rpc_per_minute, 60);

    let path = file(
        "backend_addr = \"https://backend.internal:7000\"\nbackend_methods = [\"message:*\", \"user.get\", \"*\"]\n",
    );
    let mut args = self::args();
    args.config = Some(path.0.clone());
    args.backend_token = Some("backend-secret".into());
    args.backend_addr = Some(String::new());
    let config = Config::load(&args).unwrap();
    // An empty value (a chart leaving it blank) wins over the file, and means unset.
    assert_eq!(config.backend.addr, None);
    assert_eq!(config.backend.methods, ["message:*", "user.get", "*"]);
    let listing = config.to_env_listing();
    assert!(
        listing.contains("HERALD_BACKEND_TOKEN --backend-token ****\n"),
        "{listing}"
    );

    for (set, value, key) in [
        (
            (|a: &mut ConfigArgs, v: &str| a.backend_addr = Some(v.into())) as fn(&mut _, &_),
            "ftp://backend",
            "HERALD_BACKEND_ADDR",
        ),
        (
            |a, v| a.backend_addr = Some(v.into()),
            "http://",
            "HERALD_BACKEND_ADDR",
        ),
        (
            |a, v| a.backend_methods = Some(v.into()),
            "ok,not ok",
            "HERALD_BACKEND_METHODS",
        ),
        (
            |a, v| a.backend_methods = Some(v.into()),
            "a*b",
            "HERALD_BACKEND_METHODS",
        ),
        (
            |a, v| a.backend_timeout_ms = Some(v.into()),
            "0",
            "HERALD_BACKEND_TIMEOUT_MS",
        ),
        (
            |a, v| a.backend_max_concurrency = Some(v.into()),
            "0",
            "HERALD_BACKEND_MAX_CONCURRENCY",
        ),
        (
            |a, v| a.rpc_per_minute = Some(v.into()),
            "0",
            "HERALD_RPC_PER_MINUTE",
        ),
    ] {
        let mut args = self::args();
        set(&mut args, value);
        let err = Config::load(&args).unwrap_err().to_string();
        assert!(err.contains(key), "{value:?}: {err}");
    }
}
