//! Running the binary in a scratch directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::PgPool;

use crate::postgres_server::postgres_server;

/// The built `db-migrate` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_db-migrate"))
}

/// The repository's `conf/` directory.
pub fn repo_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf")
}

/// A scratch directory with a `db-migrate` command that runs in it, with no `DB_MIGRATE_*`
/// variable inherited and the board in plain-lines mode.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `db-migrate ARGS` in this directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.current_dir(self.path()).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("DB_MIGRATE_") {
                command.env_remove(key);
            }
        }
        command.env("NO_COLOR", "1");
        command
    }

    /// Runs `db-migrate ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("db-migrate runs")
    }
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A PostgreSQL database of its own for one test, dropped by [`PgDatabase::drop_it`].
pub struct PgDatabase {
    pub url: String,
    admin: PgPool,
    name: String,
}

impl PgDatabase {
    pub async fn new(tag: &str) -> Option<PgDatabase> {
        let server = postgres_server()?;
        let name = format!("dbm_cli_{tag}_{}", std::process::id());
        let admin = PgPool::connect(&server).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap();
        }
        let (base, query) = server
            .split_once('?')
            .map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
        let url = format!(
            "{}/{name}{}",
            &base[..base.rfind('/').unwrap()],
            query.map(|q| format!("?{q}")).unwrap_or_default()
        );
        Some(PgDatabase { url, admin, name })
    }

    pub async fn drop_it(self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}
