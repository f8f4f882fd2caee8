//! The layers together, from temporary conf directories and injected environment variables;
//! and the shipped `conf/` files.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// The repository's `conf/` directory.
fn repo_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf")
}

fn args(conf_dir: Option<&Path>, environment: Environment) -> ConfigArgs {
    ConfigArgs {
        env: environment,
        conf_dir: conf_dir.map(Path::to_owned),
        files: Vec::new(),
        overrides: Vec::new(),
        show_config: false,
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(n, v)| (OsString::from(n), OsString::from(v)))
        .collect()
}

/// Loads with no `./conf` to fall back on.
fn load_with(args: &ConfigArgs, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let nowhere = tempfile::tempdir().unwrap();
    load_from(args, &nowhere.path().join("conf"), &vars(env))
}

/// The problems of a failed load, as the user reads them.
fn problems(result: Result<Settings, ConfigError>) -> Vec<String> {
    match result {
        Ok(settings) => panic!("loaded: {:?}", settings.config()),
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn no_conf_directory_means_the_built_in_defaults() {
    let settings = load_with(&args(None, Environment::Localhost), &[]).unwrap();
    assert_eq!(settings.config(), &Config::default());
    assert_eq!(
        settings.origin("customer-migration", "processes"),
        Origin::Default
    );
    assert!(settings.render().contains("conf directory none"));
}

#[test]
fn the_default_conf_directory_is_used_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    fs::create_dir(&conf).unwrap();
    let file = write(
        &conf,
        "customer-migration.toml",
        "[customer-migration]\nprocesses = 4\n",
    );
    let settings = load_from(&args(None, Environment::Localhost), &conf, &[]).unwrap();
    assert_eq!(settings.config().customer_migration.processes, 4);
    assert_eq!(
        settings.origin("customer-migration", "processes"),
        Origin::File(file)
    );
}

#[test]
fn a_missing_conf_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let texts = problems(load_with(
        &args(Some(&missing), Environment::Localhost),
        &[],
    ));
    assert_eq!(
        texts,
        [format!(
            "command line: --conf-dir {}: directory not found",
            missing.display()
        )]
    );
}

/// Each layer sets `processes` and one key of its own that no later layer sets, so every layer's
/// win and every layer's loss is visible.
#[test]
fn each_layer_beats_the_ones_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    let section = |pairs: &str| format!("[customer-migration]\n{pairs}\n");
    let base = write(
        conf,
        "customer-migration.toml",
        &section("processes = 1\nmax-failures = 1"),
    );
    let staging = write(
        conf,
        "customer-migration-staging.toml",
        &section("processes = 2\nretry-attempts = 2"),
    );
    write(
        conf,
        "customer-migration-production.toml",
        &section("processes = 99\nrate-limit = 99"),
    );
    let local = write(
        conf,
        "customer-migration-local.toml",
        &section("processes = 3\nretry-initial-delay-millis = 3"),
    );
    let first = write(
        conf,
        "first.toml",
        &section("processes = 4\nretry-max-delay-millis = 4000\ngrace-period-millis = 4"),
    );
    let second = write(
        conf,
        "second.toml",
        &section("processes = 5\nrate-limit = 5"),
    );
    let mut args = args(Some(conf), Environment::Staging);
    args.files = vec![first.clone(), second.clone()];
    args.overrides = vec![
        "customer-migration/processes=7".into(),
        "customer-migration.event-interval-millis=7".into(),
    ];
    let env = [
        ("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES", "6"),
        (
            "DB_MIGRATE_CUSTOMER_MIGRATION__CHECKPOINT_INTERVAL_MILLIS",
            "6",
        ),
    ];
    let settings = load_with(&args, &env).unwrap();
    let m = &settings.config().customer_migration;
    assert_eq!(
        (
            m.processes,
            m.max_failures,
            m.retry_attempts,
            m.retry_initial_delay_millis,
            m.grace_period_millis,
            m.rate_limit,
            m.checkpoint_interval_millis,
            m.event_interval_millis,
        ),
        (7, 1, 2, 3, 4, 5, 6, 7)
    );
    let origin = |key| settings.origin("customer-migration", key);
    assert_eq!(origin("processes"), Origin::CommandLine);
    assert_eq!(origin("max-failures"), Origin::File(base));
    assert_eq!(origin("retry-attempts"), Origin::File(staging));
    assert_eq!(origin("retry-initial-delay-millis"), Origin::File(local));
    assert_eq!(origin("grace-period-millis"), Origin::File(first));
    assert_eq!(origin("rate-limit"), Origin::File(second));
    assert_eq!(
        origin("checkpoint-interval-millis"),
        Origin::Env("DB_MIGRATE_CUSTOMER_MIGRATION__CHECKPOINT_INTERVAL_MILLIS".into())
    );
    assert_eq!(origin("busy-timeout-millis"), Origin::Default);
}

#[test]
fn the_environment_beats_a_config_file_and_the_command_line_beats_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "extra.toml",
        "[connection]\nmax-connections = 2\nsimulated-customers = 2\nbusy-timeout-millis = 2\n",
    );
    let mut args = args(None, Environment::Localhost);
    args.files = vec![file.clone()];
    args.overrides = vec!["connection.max-connections=4".into()];
    let env = [
        ("DB_MIGRATE_CONNECTION__MAX_CONNECTIONS", "3"),
        ("DB_MIGRATE_CONNECTION__SIMULATED_CUSTOMERS", "3"),
    ];
    let settings = load_with(&args, &env).unwrap();
    let c = &settings.config().connection;
    assert_eq!(
        (
            c.max_connections,
            c.simulated_customers,
            c.busy_timeout_millis
        ),
        (4, 3, 2)
    );
    assert_eq!(
        settings.origin("connection", "busy-timeout-millis"),
        Origin::File(file)
    );
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = args(None, Environment::Localhost);
    args.files = vec![dir.path().join("absent.toml")];
    assert_eq!(
        problems(load_with(&args, &[])),
        [format!(
            "{}: file not found (named with --config)",
            dir.path().join("absent.toml").display()
        )]
    );
}

#[test]
fn a_broken_file_is_reported_and_the_rest_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "connection.toml", "[connection\nurl = 1\n");
    let mut args = args(Some(dir.path()), Environment::Localhost);
    args.overrides = vec!["customer-migration.processes=abc".into()];
    let texts = problems(load_with(&args, &[]));
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with(&format!("{}: cannot be read as TOML: ", broken.display())),
        "{texts:?}"
    );
    assert!(texts[1].starts_with("command line: customer-migration.processes = \"abc\""));
}

#[test]
fn every_problem_is_reported_with_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "customer-scanner.toml",
        "[customer-scanner]\nfetch-size = 0\nblok-size = 5\n",
    );
    let mut args = args(Some(dir.path()), Environment::Localhost);
    args.overrides = vec![
        "customer-migration/proceses=5".into(),
        "customer-migration/processes=abc".into(),
        "processes5".into(),
        "customer-migrashun.processes=1".into(),
    ];
    let env = [
        ("DB_MIGRATE_CONNECTION__MAX_CONNECTIONS", "0"),
        ("DB_MIGRATE_STATUS_BOARD__MODE", "fancy"),
    ];
    let texts = problems(load_with(&args, &env));
    let file = file.display();
    assert_eq!(
        texts,
        [
            "command line: \"processes5\" is not KEY=VALUE \
             (for example customer-migration.processes=5)"
                .to_owned(),
            "command line: customer-migrashun.processes = 1: unknown section \
             \"customer-migrashun\"; did you mean customer-migration.processes?"
                .to_owned(),
            "command line: customer-migration.proceses = 5: unknown key \"proceses\" in \
             section customer-migration; did you mean customer-migration.processes?"
                .to_owned(),
            "command line: customer-migration.processes = \"abc\": expected an integer, \
             0 or more, found string \"abc\""
                .to_owned(),
            format!(
                "{file}: customer-scanner.blok-size = 5: unknown key \"blok-size\" in section \
                 customer-scanner; did you mean customer-scanner.block-size?"
            ),
            "DB_MIGRATE_STATUS_BOARD__MODE: status-board.mode = \"fancy\": expected one of \
             auto, console, minimal, off, found \"fancy\""
                .to_owned(),
            format!("{file}: customer-scanner.fetch-size = 0: must be between 1 and 1000000"),
            "DB_MIGRATE_CONNECTION__MAX_CONNECTIONS: connection.max-connections = 0: \
             must be between 1 and 1000"
                .to_owned(),
        ]
    );
}

#[test]
fn an_unknown_key_from_the_environment_is_named_by_its_variable() {
    let texts = problems(load_with(
        &args(None, Environment::Localhost),
        &[("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESES", "5")],
    ));
    assert_eq!(
        texts,
        [
            "DB_MIGRATE_CUSTOMER_MIGRATION__PROCESES: customer-migration.proceses = 5: unknown key \
          \"proceses\" in section customer-migration; did you mean \
          DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES?"
        ]
    );
}

#[test]
fn a_key_outside_any_section_in_a_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "extra.toml", "processes = 5\n");
    let mut args = args(None, Environment::Localhost);
    args.files = vec![file.clone()];
    assert_eq!(
        problems(load_with(&args, &[])),
        [format!(
            "{}: processes = 5: \"processes\" is outside any section; did you mean \
             customer-migration.processes?",
            file.display()
        )]
    );
}

#[test]
fn the_error_lists_all_problems_on_their_own_lines() {
    let mut args = args(None, Environment::Localhost);
    args.overrides = vec!["a".into(), "b".into()];
    let error = load_with(&args, &[]).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid configuration (2 problems):\n  \
         command line: \"a\" is not KEY=VALUE (for example customer-migration.processes=5)\n  \
         command line: \"b\" is not KEY=VALUE (for example customer-migration.processes=5)"
    );
    args.overrides.pop();
    let error = load_with(&args, &[]).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid configuration: command line: \"a\" is not KEY=VALUE \
         (for example customer-migration.processes=5)"
    );
}

/// The shipped `conf/<section>.toml` files hold exactly the built-in defaults, key by key, and
/// only their own section.
#[test]
fn shipped_section_files_equal_the_defaults() {
    let toml::Value::Table(defaults) = toml::Value::try_from(Config::default()).unwrap() else {
        panic!("a config serializes to a table");
    };
    for (section, keys) in keys::KEYS {
        let path = repo_conf().join(format!("{section}.toml"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file: toml::Table = toml::from_str(&text).unwrap();
        let names: Vec<&String> = file.keys().collect();
        assert_eq!(
            names,
            [section],
            "{} holds only [{section}]",
            path.display()
        );
        let table = file[section].as_table().unwrap();
        let default = defaults[section].as_table().unwrap();
        for key in keys {
            match default.get(*key) {
                Some(value) => assert_eq!(
                    table.get(*key),
                    Some(value),
                    "{section}.{key} in {}",
                    path.display()
                ),
                None => {
                    // An optional key unset by default: present, commented out.
                    assert!(!table.contains_key(*key), "{section}.{key} must stay unset");
                    assert!(
                        text.lines()
                            .any(|line| line.starts_with(&format!("# {key} = "))),
                        "{section}.{key} is shown commented out in {}",
                        path.display()
                    );
                }
            }
        }
        assert_eq!(
            table.len(),
            default.len(),
            "no extra key in {}",
            path.display()
        );
        // Every key has a comment line right above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_key = keys.iter().any(|key| {
                line.starts_with(&format!("{key} = ")) || line.starts_with(&format!("# {key} = "))
            });
            if is_key {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "{line:?} in {} has no comment",
                    path.display()
                );
            }
        }
    }
    // And loading them alone gives the defaults.
    let only_base = tempfile::tempdir().unwrap();
    for section in SECTIONS {
        let name = format!("{section}.toml");
        fs::copy(repo_conf().join(&name), only_base.path().join(&name)).unwrap();
    }
    let settings = load_with(&args(Some(only_base.path()), Environment::Localhost), &[]).unwrap();
    assert_eq!(settings.config(), &Config::default());
}

#[test]
fn every_shipped_environment_loads_and_is_valid() {
    let conf = repo_conf();
    for environment in [
        Environment::Localhost,
        Environment::Staging,
        Environment::Production,
    ] {
        let settings = load_with(&args(Some(&conf), environment), &[])
            .unwrap_or_else(|e| panic!("{}: {e}", environment.name()));
        let config = settings.config();
        match environment {
            Environment::Localhost => assert_eq!(config.connection.url, "simulated:"),
            _ => {
                assert!(config.connection.url.starts_with("postgres://migrate@db."));
                assert!(config.customer_migration.rate_limit > 0);
                // Every job can hold a connection.
                assert!(
                    config.connection.max_connections as usize
                        > config.customer_migration.processes
                );
            }
        }
    }
    let production = load_with(&args(Some(&conf), Environment::Production), &[]).unwrap();
    assert_eq!(
        production.config().status_board.mode,
        migrate_core::BoardMode::Minimal
    );
    let staging = load_with(&args(Some(&conf), Environment::Staging), &[]).unwrap();
    assert!(
        production.config().customer_migration.processes
            < staging.config().customer_migration.processes
    );
}

#[test]
fn every_shipped_file_is_a_known_section_and_environment() {
    let names: Vec<String> = fs::read_dir(repo_conf())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml") && !name.ends_with("-local.toml"))
        .collect();
    let expected: Vec<String> = [
        Environment::Localhost,
        Environment::Staging,
        Environment::Production,
    ]
    .into_iter()
    .flat_map(|environment| conf_files(Path::new(""), environment))
    .map(|path| path.display().to_string())
    .collect();
    for name in names {
        assert!(expected.contains(&name), "conf/{name} is never read");
    }
}

#[test]
fn show_config_names_every_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "connection.toml",
        "[connection]\nurl = \"postgres://app:hunter2@db/customers\"\n",
    );
    let mut args = args(Some(dir.path()), Environment::Staging);
    args.overrides = vec!["customer-migration/processes=5".into()];
    let settings = load_with(&args, &[("DB_MIGRATE_CUSTOMER_SCANNER__FETCH_SIZE", "10")]).unwrap();
    let text = settings.render();
    assert!(text.starts_with(&format!(
        "# db-migrate configuration for environment staging, conf directory {}\n",
        dir.path().display()
    )));
    assert!(!text.contains("hunter2"), "{text}");
    let has = |needle: &str| assert!(text.contains(needle), "{needle:?} not in\n{text}");
    has(&format!(
        "url = \"postgres://app:***@db/customers\"  # from {}",
        file.display()
    ));
    has("processes = 5");
    has("# from command line");
    has("fetch-size = 10");
    has("# from DB_MIGRATE_CUSTOMER_SCANNER__FETCH_SIZE");
    has("# from default");
}
