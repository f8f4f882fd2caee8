//! Tests: layered configuration, through the binary.

use crate::util::{Scratch, repo_conf, stderr, stdout};

/// The `--show-config` line of `key` in `[section]`.
fn shown(text: &str, section: &str, key: &str) -> String {
    let header = format!("[{section}]");
    text.lines()
        .skip_while(|line| *line != header)
        .take_while(|line| !line.is_empty())
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {section}.{key} in\n{text}"))
        .to_owned()
}

/// `key = value  # from origin` as its parts.
fn value_and_origin(line: &str) -> (String, String) {
    let (setting, origin) = line.split_once("  # from ").expect("an origin comment");
    let value = setting.split_once(" = ").expect("key = value").1;
    (value.trim().to_owned(), origin.trim().to_owned())
}

#[test]
fn show_config_runs_without_any_conf_directory() {
    let scratch = Scratch::new();
    let output = scratch.run(&["--show-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("conf directory none"), "{text}");
    let line = shown(&text, "customer-migration", "processes");
    assert_eq!(value_and_origin(&line), ("20".into(), "default".into()));
    // Nothing ran: no state was written.
    assert!(!scratch.path().join("state").exists());
}

#[test]
fn a_command_line_override_is_shown_with_its_origin() {
    let output = Scratch::new().run(&["--show-config", "customer-migration/processes=5"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let line = shown(&stdout(&output), "customer-migration", "processes");
    assert_eq!(value_and_origin(&line), ("5".into(), "command line".into()));
}

#[test]
fn an_environment_variable_is_shown_with_its_name() {
    let output = Scratch::new()
        .command(&["--show-config"])
        .env("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES", "7")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let line = shown(&stdout(&output), "customer-migration", "processes");
    assert_eq!(
        value_and_origin(&line),
        (
            "7".into(),
            "DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES".into()
        )
    );
}

#[test]
fn the_staging_environment_shows_its_files_values() {
    let conf = repo_conf();
    let output = Scratch::new().run(&[
        "-e",
        "staging",
        "--conf-dir",
        conf.to_str().unwrap(),
        "--show-config",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let staging = |section: &str| {
        let file = conf.join(format!("{section}-staging.toml"));
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        (file, table[section].as_table().unwrap().clone())
    };
    let mut checked = 0;
    for section in ["connection", "customer-migration", "customer-migrator"] {
        let (file, table) = staging(section);
        for (key, value) in table {
            let line = shown(&text, section, &key);
            let (shown_value, origin) = value_and_origin(&line);
            assert_eq!(shown_value, value.to_string(), "{line}");
            assert!(
                origin.ends_with(&format!("{section}-staging.toml")),
                "{line}"
            );
            assert_eq!(origin, file.display().to_string());
            checked += 1;
        }
    }
    assert!(checked >= 5, "the staging files set {checked} keys");
    // A key no staging file sets comes from the section's own file.
    let line = shown(&text, "customer-scanner", "fetch-size");
    assert!(line.ends_with("customer-scanner.toml"), "{line}");
}

#[test]
fn precedence_command_line_then_environment_then_config_file_then_conf() {
    let scratch = Scratch::new();
    let conf = scratch.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("connection.toml"),
        "[connection]\nmax-connections = 1\nsimulated-customers = 1\nbusy-timeout-millis = 1\n\
         url = \"sqlite://conf.db\"\n",
    )
    .unwrap();
    std::fs::write(
        scratch.path().join("extra.toml"),
        "[connection]\nmax-connections = 2\nsimulated-customers = 2\nbusy-timeout-millis = 2\n",
    )
    .unwrap();
    let output = scratch
        .command(&[
            "--show-config",
            "--config",
            "extra.toml",
            "connection.max-connections=4",
        ])
        .env("DB_MIGRATE_CONNECTION__MAX_CONNECTIONS", "3")
        .env("DB_MIGRATE_CONNECTION__SIMULATED_CUSTOMERS", "3")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let get = |key: &str| value_and_origin(&shown(&text, "connection", key));
    assert_eq!(get("max-connections"), ("4".into(), "command line".into()));
    assert_eq!(
        get("simulated-customers"),
        (
            "3".into(),
            "DB_MIGRATE_CONNECTION__SIMULATED_CUSTOMERS".into()
        )
    );
    assert_eq!(
        get("busy-timeout-millis"),
        ("2".into(), "extra.toml".into())
    );
    assert_eq!(
        get("url"),
        ("\"sqlite://conf.db\"".into(), "conf/connection.toml".into())
    );
}

#[test]
fn show_config_masks_the_password() {
    let output = Scratch::new()
        .command(&["--show-config"])
        .env(
            "DB_MIGRATE_CONNECTION__URL",
            "postgres://migrate:hunter2@db/customers",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("\"postgres://migrate:***@db/customers\""),
        "{text}"
    );
}

#[test]
fn a_misspelt_key_exits_2_suggesting_the_right_one() {
    let scratch = Scratch::new();
    let output = scratch.run(&["customer-migration/proceses=5"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("\"proceses\""), "{message}");
    assert!(
        message.contains("did you mean customer-migration.processes?"),
        "{message}"
    );
    assert!(message.contains("command line"), "{message}");
    assert!(!scratch.path().join("state").exists(), "nothing ran");
}

#[test]
fn a_value_of_the_wrong_type_exits_2_naming_key_value_and_origin() {
    let output = Scratch::new().run(&["customer-migration/processes=abc"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message
            .contains("command line: customer-migration.processes = \"abc\": expected an integer"),
        "{message}"
    );
}

#[test]
fn a_misspelt_section_exits_2_suggesting_the_right_one() {
    let output = Scratch::new().run(&["customer-migrashun.processes=1"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("unknown section \"customer-migrashun\""),
        "{message}"
    );
    assert!(message.contains("customer-migration"), "{message}");
}

#[test]
fn a_range_error_names_the_variable_that_set_it() {
    let output = Scratch::new()
        .command(&[])
        .env("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES: customer-migration.processes = 0: \
             must be between 1 and 10000"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_value_in_a_file_names_the_file() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path().join("extra.toml"),
        "[customer-scanner]\nfetch-size = \"lots\"\n",
    )
    .unwrap();
    let output = scratch.run(&["--config", "extra.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("extra.toml: customer-scanner.fetch-size = \"lots\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_files_and_directories_exit_2_naming_them() {
    let output = Scratch::new().run(&["--config", "absent.toml", "--show-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("absent.toml: file not found"),
        "{}",
        stderr(&output)
    );
    let output = Scratch::new().run(&["--conf-dir", "absent", "--show-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--conf-dir absent: directory not found"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let output = Scratch::new().run(&[
        "processes5",
        "customer-migration.processes=abc",
        "status-board.mode=fancy",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("invalid configuration (3 problems)"),
        "{message}"
    );
    assert!(
        message.contains("\"processes5\" is not KEY=VALUE"),
        "{message}"
    );
    assert!(message.contains("\"abc\""), "{message}");
    assert!(message.contains("\"fancy\""), "{message}");
}

#[test]
fn overrides_shape_the_run() {
    let output = Scratch::new().run(&[
        "customer-migration/processes=3",
        "connection.simulated-customers=30",
        "customer-migrator.sleep-scale=0",
        "status-board.mode=minimal",
    ]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    for job in 1..=3 {
        assert!(
            log.contains(&format!("Process #{job}")),
            "no job {job} in\n{log}"
        );
    }
    assert!(!log.contains("Process #4"), "a fourth job ran:\n{log}");
}

#[test]
fn the_conf_directory_of_the_working_directory_is_read() {
    let scratch = Scratch::new();
    let conf = scratch.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("customer-migration-production.toml"),
        "[customer-migration]\nprocesses = 2\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("customer-migration-local.toml"),
        "[customer-migration]\nrate-limit = 9\n",
    )
    .unwrap();
    let output = scratch.run(&["-e", "production", "--show-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let get = |key: &str| value_and_origin(&shown(&text, "customer-migration", key));
    assert_eq!(
        get("processes"),
        ("2".into(), "conf/customer-migration-production.toml".into())
    );
    assert_eq!(
        get("rate-limit"),
        ("9".into(), "conf/customer-migration-local.toml".into())
    );
}

/// A password holding every character that ends a part of a URL, and a percent-encoded one, as
/// words: none of [`WORDS`] may show in anything the program prints.
const PASSWORD: &str = "alpha/bravo?charlie@delta:echo#foxtrot%40golf";
/// The words of [`PASSWORD`].
const WORDS: [&str; 7] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
];

/// A PostgreSQL URL with [`PASSWORD`] typed raw.
fn secret_url() -> String {
    format!("postgres://app:{PASSWORD}@dbhost:5432/customers?sslmode=require")
}

/// Asserts that no word of the password shows on stdout or stderr.
fn assert_hidden(output: &std::process::Output, what: &str) {
    let said = format!("{}{}", stdout(output), stderr(output));
    for word in WORDS {
        assert!(
            !said.contains(word),
            "{what}: {word:?} of the password was printed:\n{said}"
        );
    }
}

#[test]
fn show_config_masks_a_password_with_url_delimiters_from_every_layer() {
    let url = secret_url();
    let scratch = Scratch::new();
    let conf = scratch.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("connection-local.toml"),
        format!("[connection]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let bare = Scratch::new();
    let from_env = bare
        .command(&["--show-config"])
        .env("DB_MIGRATE_CONNECTION__URL", &url)
        .output()
        .unwrap();
    for (output, what) in [
        (
            scratch.run(&["--show-config"]),
            "conf/connection-local.toml",
        ),
        (
            bare.run(&["--show-config", &format!("connection.url={url}")]),
            "command line",
        ),
        (from_env, "DB_MIGRATE_CONNECTION__URL"),
    ] {
        assert_eq!(output.status.code(), Some(0), "{what}: {}", stderr(&output));
        assert_hidden(&output, what);
        let line = shown(&stdout(&output), "connection", "url");
        assert_eq!(
            value_and_origin(&line),
            (
                "\"postgres://app:***@dbhost:5432/customers?sslmode=require\"".to_owned(),
                what.to_owned()
            )
        );
    }
}

#[test]
fn connection_errors_mask_a_password_with_url_delimiters() {
    let scratch = Scratch::new();
    // Typed raw (the driver cannot parse it) and percent-encoded (it can, and the connection
    // is refused).
    let encoded = "alpha%2Fbravo%3Fcharlie%40delta%3Aecho%23foxtrot%25golf";
    for password in [PASSWORD, encoded] {
        let url = format!("connection.url=postgres://app:{password}@127.0.0.1:1/customers");
        for args in [
            vec![url.as_str(), "status-board.mode=off"],
            vec![url.as_str(), "status-board.mode=minimal", "--json"],
            vec!["seed", "--customers", "10", url.as_str()],
            vec!["demo", url.as_str(), "status-board.mode=off"],
        ] {
            let output = scratch.run(&args);
            assert_hidden(&output, &format!("{args:?}"));
            assert_eq!(
                output.status.code(),
                Some(3),
                "{args:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains("postgres://app:***@127.0.0.1:1/customers"),
                "{args:?}: {}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn a_connection_url_the_driver_cannot_parse_says_each_context_once() {
    let output = Scratch::new().run(&[
        "connection.url=postgres://app@127.0.0.1:1/customers?sslmode=bogus",
        "status-board.mode=off",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "db-migrate: error: while connecting to \
         postgres://app@127.0.0.1:1/customers?sslmode=bogus: error with configuration: unknown \
         value \"bogus\" for `ssl_mode`\n"
    );
}

#[test]
fn a_toml_syntax_error_in_the_local_file_names_the_place_but_not_the_password() {
    let scratch = Scratch::new();
    let conf = scratch.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    // The closing quote is missing.
    std::fs::write(
        conf.join("connection-local.toml"),
        format!(
            "[connection]\nurl = \"{}\nmax-connections = 2\n",
            secret_url()
        ),
    )
    .unwrap();
    for args in [&["--show-config"][..], &[]] {
        let output = scratch.run(args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert_hidden(&output, "a TOML syntax error");
        let message = stderr(&output);
        assert!(
            message.contains("conf/connection-local.toml: cannot be read as TOML: line 2, column"),
            "{message}"
        );
    }
}

#[test]
fn argument_and_value_errors_mask_a_password_with_url_delimiters() {
    let url = secret_url();
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path().join("table.toml"),
        format!("[connection]\nurl = {{ value = \"{url}\" }}\n"),
    )
    .unwrap();
    std::fs::write(
        scratch.path().join("array.toml"),
        format!("[connection]\nurls = [\"{url}\", \"{url}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        scratch.path().join("outside.toml"),
        format!("url = \"{url}\"\n"),
    )
    .unwrap();
    let arguments = [
        format!("url={url}"),
        format!("connection.url.x={url}"),
        url.clone(),
        format!("connection={url}"),
        format!("connection.uri={url}"),
        format!("connection.max-connections={url}"),
        format!("connection.url=[{url}]"),
        format!("connection.url=mysql://app:{PASSWORD}@dbhost/customers"),
        format!("status-board.mode={url}"),
    ];
    for argument in &arguments {
        let output = scratch.run(&["--show-config", argument]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{argument}: {}",
            stderr(&output)
        );
        assert_hidden(&output, argument);
    }
    // Arguments clap itself refuses, quoting them: values of the wrong kind.
    for args in [
        vec!["seed".to_owned(), "--customers".to_owned(), url.clone()],
        vec!["-e".to_owned(), url.clone()],
        vec!["--log-format".to_owned(), url.clone()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = scratch.run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_hidden(&output, &format!("{args:?}"));
        assert!(
            stderr(&output).contains("'postgres://app:***@dbhost:5432/customers?sslmode=require'"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    for file in ["table.toml", "array.toml", "outside.toml"] {
        let output = scratch.run(&["--show-config", "--config", file]);
        assert_eq!(output.status.code(), Some(2), "{file}: {}", stderr(&output));
        assert_hidden(&output, file);
        assert!(stderr(&output).contains(file), "{}", stderr(&output));
    }
    let output = scratch
        .command(&["--show-config"])
        .env("DB_MIGRATE_CONNECTION__MAX_CONNECTIONS", &url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_hidden(&output, "a URL in DB_MIGRATE_CONNECTION__MAX_CONNECTIONS");
}

/// Every numeric key with the greatest value it accepts and the first it refuses (past the
/// greatest, or below the least when that is the edge its consumer cares about).
const NUMERIC_EDGES: [(&str, &str, &str); 23] = [
    ("status-board.update-millis", "2147483647", "2147483648"),
    ("status-board.update-millis", "1", "0"),
    ("status-board.dim-after-millis", "2147483647", "2147483648"),
    ("connection.max-connections", "1000", "1001"),
    ("connection.max-connections", "1", "0"),
    ("connection.busy-timeout-millis", "2147483647", "2147483648"),
    (
        "connection.simulated-customers",
        "92233720368547658",
        "92233720368547659",
    ),
    ("customer-scanner.fetch-size", "1000000", "1000001"),
    ("customer-scanner.block-size", "1000000", "1000001"),
    ("customer-migrator.batch-size", "10000", "10001"),
    ("customer-migrator.sleep-scale", "1000", "1000.5"),
    ("customer-migrator.failure-rate", "1.0", "1.01"),
    ("customer-migration.processes", "10000", "10001"),
    (
        "customer-migration.max-failures",
        "18446744073709551615",
        "18446744073709551616",
    ),
    ("customer-migration.retry-attempts", "100", "101"),
    // Held under retry-max-delay-millis, set to its greatest below.
    (
        "customer-migration.retry-initial-delay-millis",
        "2147483647",
        "2147483648",
    ),
    (
        "customer-migration.retry-max-delay-millis",
        "2147483647",
        "2147483648",
    ),
    (
        "customer-migration.grace-period-millis",
        "2147483647",
        "2147483648",
    ),
    ("customer-migration.rate-limit", "1000000000", "1000000001"),
    (
        "customer-migration.checkpoint-interval-millis",
        "2147483647",
        "2147483648",
    ),
    (
        "customer-migration.event-interval-millis",
        "2147483647",
        "2147483648",
    ),
    (
        "customer-migration.batch-linger-millis",
        "2147483647",
        "2147483648",
    ),
    ("customer-migration.max-pending", "100000000", "100000001"),
];

#[test]
fn each_numeric_key_takes_its_greatest_value_and_refuses_the_next_with_exit_2() {
    let scratch = Scratch::new();
    let longest = "customer-migration.retry-max-delay-millis=2147483647";
    for (key, greatest, refused) in NUMERIC_EDGES {
        let output = scratch.run(&["--show-config", longest, &format!("{key}={greatest}")]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{key}={greatest}: {}",
            stderr(&output)
        );
        let output = scratch.run(&["--show-config", longest, &format!("{key}={refused}")]);
        assert_eq!(output.status.code(), Some(2), "{key}={refused}");
        let message = stderr(&output);
        // Past u64, the value is read as text (and quoted): a type error, still exit 2.
        assert!(
            message.contains(&format!("command line: {key} = {refused}: "))
                || message.contains(&format!("command line: {key} = \"{refused}\": ")),
            "{key}={refused}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
}

#[test]
fn a_busy_timeout_sqlite_cannot_take_exits_2_before_anything_runs() {
    let scratch = Scratch::new();
    let seed = |timeout: &str, db: &str| {
        scratch.run(&[
            "seed",
            "--customers",
            "10",
            &format!("connection.url=sqlite://{db}"),
            &format!("connection.busy-timeout-millis={timeout}"),
        ])
    };
    let output = seed("2147483648", "refused.db");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "command line: connection.busy-timeout-millis = 2147483648: must be between 0 and \
             2147483647"
        ),
        "{}",
        stderr(&output)
    );
    assert!(!scratch.path().join("refused.db").exists(), "nothing ran");
    // The greatest accepted value is one SQLite takes.
    let output = seed("2147483647", "accepted.db");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(scratch.path().join("accepted.db").exists());
}

#[test]
fn a_sleep_scale_past_a_duration_exits_2_before_anything_runs() {
    let scratch = Scratch::new();
    let output = scratch.run(&[
        // 1e23: its sleeps, up to 249 ms times the scale, overflow a Duration.
        "customer-migrator.sleep-scale=100000000000000000000000.0",
        "connection.simulated-customers=10",
        "status-board.mode=off",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "command line: customer-migrator.sleep-scale = 100000000000000000000000: must be \
             between 0.0 and 1000.0"
        ),
        "{}",
        stderr(&output)
    );
    assert!(!scratch.path().join("state").exists(), "nothing ran");
}

#[test]
fn a_variable_that_is_not_utf8_exits_2_naming_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let output = Scratch::new()
        .command(&["--show-config"])
        .env(
            "DB_MIGRATE_CONNECTION__URL",
            OsStr::from_bytes(b"sqlite://caf\xe9.db"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("DB_MIGRATE_CONNECTION__URL: the value is not valid UTF-8"),
        "{}",
        stderr(&output)
    );

    let output = Scratch::new()
        .command(&["--show-config"])
        .env(OsStr::from_bytes(b"DB_MIGRATE_CONNECTION__\xffURL"), "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("DB_MIGRATE_CONNECTION__\u{fffd}URL: the name is not valid UTF-8"),
        "{}",
        stderr(&output)
    );
}
