//! Which PostgreSQL server the tests use. Shared by the engine's and the command line's
//! integration tests (the latter include this file by path).

/// The variable that names the test server (`.ci/postgres.sh` prints a URL for it).
pub const POSTGRES_URL_VAR: &str = "DB_MIGRATE_TEST_POSTGRES_URL";

/// The PostgreSQL server to test against: `None` (with the reason printed) when none is
/// configured, and a failure in CI, where the PostgreSQL tests must never be skipped.
#[allow(clippy::print_stderr, reason = "a skipped test says why")]
pub fn postgres_server() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") => panic!(
            "{POSTGRES_URL_VAR} is not set, and CI is: PostgreSQL tests must run in CI \
             (start a server with `.ci/postgres.sh` and export its URL)"
        ),
        _ => {
            eprintln!(
                "skipped: {POSTGRES_URL_VAR} is not set (start a server with .ci/postgres.sh and \
                 export the URL it prints to run the PostgreSQL tests)"
            );
            None
        }
    }
}
