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
/// variable (nor `RUST_LOG`) inherited and the board in plain-lines mode.
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
        // A log only where a test asks for one: RUST_LOG would add lines to stderr.
        command.env_remove("RUST_LOG");
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

/// A random number below `n`.
pub fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) % n
}

/// Starts `db-migrate ARGS`, waits until its audit log `log` holds `lines` lines, and kills it
/// with SIGKILL. Returns whether it was still running when killed.
pub fn kill_after(scratch: &Scratch, args: &[String], log: &str, lines: usize) -> bool {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = scratch
        .command(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("db-migrate starts");
    let log = scratch.path().join(log);
    let started = Instant::now();
    // Bounded polling of another process: it started once its audit log has lines.
    loop {
        let written = std::fs::read(&log)
            .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0);
        if written >= lines || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(9)
}
