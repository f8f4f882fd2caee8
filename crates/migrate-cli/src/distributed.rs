//! `--distributed` and `--shard I/N`: this process takes part in a migration shared by many
//! processes through its PostgreSQL database (see `docs/scale-out.md`).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use migrate_core::distributed::{Mode, RangeBoard, RangeProgress, Settings, Worker, holder_name};
use migrate_core::{
    Backend, Config, Connection, CustomerMigration, Database, Migration, MigrationModule, RunError,
    RunOptions, SqlMigration, StatusBoard, Summary, System,
};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::exit::{self, CliError};

/// Distributed mode.
#[derive(Debug, Clone, Default, Args)]
pub struct DistributedArgs {
    /// Join the migration as one of many processes, on any machine: claim key ranges under
    /// leases in the database (PostgreSQL only), until every range is done.
    #[arg(long, global = true, conflicts_with = "shard")]
    pub distributed: bool,

    /// Run only static shard I of N (from 0) of the key ranges, without leases: for a
    /// Kubernetes Indexed Job (PostgreSQL only).
    #[arg(long, global = true, value_name = "I/N", value_parser = shard)]
    pub shard: Option<(u32, u32)>,

    /// Distributed mode: seconds a lease lasts without a heartbeat before another process
    /// may take the range over.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30.0,
          value_parser = lease_seconds)]
    pub lease_secs: f64,

    /// Distributed mode: about how many records a key range holds when the migration is
    /// first split.
    #[arg(long, global = true, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub range_rows: u64,
}

/// `I/N` with `I < N`.
fn shard(text: &str) -> Result<(u32, u32), String> {
    let (index, count) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not I/N (such as 0/4)"))?;
    let index: u32 = index
        .trim()
        .parse()
        .map_err(|_| format!("{index:?} in {text:?} is not a shard number"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?} in {text:?} is not a number of shards"))?;
    if count == 0 || index >= count {
        return Err(format!(
            "shard {index} of {count}: shards count from 0 to N-1"
        ));
    }
    Ok((index, count))
}

/// A lease between 0.1 s and a day.
fn lease_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&seconds) {
        return Err(format!("{seconds} s: a lease lasts 0.1 s to 86400 s"));
    }
    Ok(seconds)
}

/// A run in distributed mode, before the system is built.
#[derive(Debug)]
pub(crate) struct Distributed {
    mode: Mode,
    settings: Settings,
    progress: Option<Arc<RangeProgress>>,
}

impl Distributed {
    /// Distributed mode when `args` ask for it; a usage error when it cannot work with the
    /// rest of the command line or the configuration.
    pub(crate) fn from_args(
        config: &Config,
        args: &RunArgs,
    ) -> Result<Option<Distributed>, CliError> {
        let flags = &args.distributed;
        let (mode, flag) = match (flags.distributed, flags.shard) {
            (false, None) => return Ok(None),
            (_, Some((index, count))) => (Mode::Shard { index, count }, "--shard"),
            (true, None) => (Mode::Leased, "--distributed"),
        };
        let url = &config.connection.url;
        if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(CliError::Usage(format!(
                "{flag} needs a PostgreSQL database (connection.url is {}): processes on \
                 several machines share the migration through it; SQLite and the simulated \
                 backend run one process only",
                migrate_core::mask_url(url)
            )));
        }
        for (given, what) in [
            (args.dry_run, "--dry-run"),
            (args.reset, "--reset"),
            (args.file.is_some(), "--file"),
        ] {
            if given {
                return Err(CliError::Usage(format!(
                    "{flag} cannot be combined with {what}: a distributed run scans the key \
                     ranges stored in the database"
                )));
            }
        }
        let lease = Duration::from_secs_f64(flags.lease_secs);
        Ok(Some(Distributed {
            mode,
            settings: Settings::with_lease(lease, flags.range_rows),
            progress: None,
        }))
    }

    /// The board the range runs report to: `board`, wrapped (see [`RangeBoard`]).
    pub(crate) fn wrap_board(&mut self, board: Box<dyn StatusBoard>) -> Box<dyn StatusBoard> {
        let (wrapped, progress) = RangeBoard::wrap(board);
        self.progress = Some(progress);
        Box::new(wrapped)
    }

    /// Takes part in the migration of the built `system` until every range is done.
    pub(crate) async fn run(
        &self,
        system: &System<MigrationModule>,
        config: &Config,
        args: &RunArgs,
        options: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError> {
        let connection = system.resolve::<dyn Connection>();
        let Backend::Postgres(pool) = connection.backend() else {
            return Err(RunError::Check("distributed mode needs PostgreSQL".into()));
        };
        let migration = pager(config, args, connection.backend(), pool)
            .map_err(|e| RunError::Check(e.into()))?;
        let worker = Worker {
            pool: pool.clone(),
            migration,
            overseer: migrate_core::overseer(system),
            board: system.resolve::<dyn StatusBoard>(),
            progress: self.progress.clone().unwrap_or_default(),
            settings: self.settings.clone(),
            mode: self.mode,
            holder: holder_name(),
        };
        worker.run(options, shutdown).await
    }
}

/// The migration again, for its paging: what splits the key space into ranges.
fn pager(
    config: &Config,
    args: &RunArgs,
    backend: &Backend,
    pool: &migrate_core::sqlx::PgPool,
) -> Result<Arc<dyn Migration>, String> {
    Ok(match &args.migration {
        None => Arc::new(CustomerMigration::new(
            Database::Postgres(pool.clone()),
            Arc::new(tokio::sync::Mutex::new(())),
            migrate_core::BatchTimeouts::from_config(&config.customer_migration),
        )),
        Some(file) => Arc::new(
            SqlMigration::from_file(file, backend)
                .map_err(|e| format!("--migration {}", exit::chain(&e)))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_count_from_zero() {
        assert_eq!(shard("3/8"), Ok((3, 8)));
        assert!(shard("8/8").unwrap_err().contains("from 0 to N-1"));
        assert!(shard("3").unwrap_err().contains("is not I/N"));
        assert!(shard("a/2").unwrap_err().contains("not a shard number"));
    }
}
