//! A password in `connection.url` never appears in an error.

use migrate_core::{
    Backend, BuildError, Config, ConnectionConfig, build_migration_system, mask_url,
};

const URL: &str = "postgres://user:secret@127.0.0.1:1/x";

/// The error, its `Debug` form and every cause.
fn everything_said(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error}\n{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_failing_connection_does_not_print_the_password() {
    let config = ConnectionConfig {
        url: URL.to_owned(),
        ..ConnectionConfig::default()
    };
    let error = Backend::open(&config, false)
        .await
        .expect_err("nothing listens on port 1");
    let said = everything_said(&error);
    assert!(!said.contains("secret"), "{said}");
    assert!(said.contains("postgres://user:***@127.0.0.1:1/x"), "{said}");

    let mut config = Config::default();
    config.connection.url = format!("{URL}?password=secret&sslmode=disable");
    let error = build_migration_system(&config, None)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, BuildError::Connection(_)), "{error:?}");
    let said = everything_said(&error);
    assert!(!said.contains("secret"), "{said}");
}

#[test]
fn masking_keeps_everything_but_the_password() {
    assert_eq!(mask_url(URL), "postgres://user:***@127.0.0.1:1/x");
    assert_eq!(
        mask_url("postgresql://u:p%40ss@h/d?password=x&application_name=m"),
        "postgresql://u:***@h/d?password=***&application_name=m"
    );
    assert_eq!(mask_url("sqlite://state/demo.db"), "sqlite://state/demo.db");
}
