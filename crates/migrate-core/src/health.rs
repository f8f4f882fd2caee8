//! The database's health, as throttling asks it: a throttle query (any SQL returning a number;
//! above 0 holds the batches off) and, on PostgreSQL, the replicas' lag from
//! `pg_stat_replication`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use crate::components::component::BoxError;
use crate::config::MigrationConfig;
use crate::connection::Database;
use crate::engine::health::HealthCheck;

/// The longest replay lag among the replicas, in milliseconds (0 without replicas), and
/// whether the role may read it: `pg_stat_replication` shows `replay_lag` only to superusers
/// and members of `pg_read_all_stats`, and NULL (which would read as no lag) to anyone else.
const REPLICATION_LAG: &str = "SELECT CAST(COALESCE(MAX(EXTRACT(EPOCH FROM replay_lag)), 0) \
                               * 1000 AS DOUBLE PRECISION), \
                               pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
                               FROM pg_stat_replication";

/// The throttle checks of `[customer-migration]` over the migrated database.
#[derive(Debug, Clone)]
pub struct DatabaseHealth {
    database: Database,
    /// `throttle-query`.
    query: Option<String>,
    /// `max-replication-lag-millis`, on PostgreSQL.
    max_lag: Option<Duration>,
}

impl DatabaseHealth {
    /// The checks `config` asks for on `database`; `None` when it asks for none. The
    /// replication lag is PostgreSQL's: on SQLite it is not checked.
    pub fn from_config(config: &MigrationConfig, database: &Database) -> Option<DatabaseHealth> {
        let max_lag = match (config.max_replication_lag_millis, database) {
            (0, _) | (_, Database::Sqlite(_)) => None,
            (millis, Database::Postgres(_)) => Some(Duration::from_millis(millis)),
        };
        let query = config.throttle_query.clone();
        (query.is_some() || max_lag.is_some()).then(|| DatabaseHealth {
            database: database.clone(),
            query,
            max_lag,
        })
    }

    /// The throttle query's number; no row or NULL is 0.
    async fn throttle_value(&self, query: &str) -> Result<f64, BoxError> {
        let sql = AssertSqlSafe(query.to_owned());
        let value = match &self.database {
            Database::Sqlite(pool) => match sqlx::query(sql).fetch_optional(pool).await? {
                None => None,
                Some(row) => number(row.try_get::<Option<f64>, _>(0), || {
                    row.try_get::<Option<i64>, _>(0)
                        .map(|v| v.map(|v| v as f64))
                })?,
            },
            Database::Postgres(pool) => match sqlx::query(sql).fetch_optional(pool).await? {
                None => None,
                Some(row) => pg_number(&row)?,
            },
        };
        Ok(value.unwrap_or(0.0))
    }

    /// The replicas' longest replay lag.
    async fn replication_lag(&self) -> Result<Duration, BoxError> {
        let Database::Postgres(pool) = &self.database else {
            return Ok(Duration::ZERO);
        };
        let (millis, may_read): (f64, bool) =
            sqlx::query_as(REPLICATION_LAG).fetch_one(pool).await?;
        if !may_read {
            // Holding off, with the reason on the board, rather than reading no lag at all.
            return Err(
                "the role cannot read the replicas' lag (pg_stat_replication shows it \
                        only to members of pg_read_all_stats): grant it, or set \
                        customer-migration.max-replication-lag-millis = 0"
                    .into(),
            );
        }
        Ok(Duration::from_secs_f64(millis.max(0.0) / 1000.0))
    }
}

/// The first of two decodings that works.
fn number(
    first: Result<Option<f64>, sqlx::Error>,
    second: impl FnOnce() -> Result<Option<f64>, sqlx::Error>,
) -> Result<Option<f64>, BoxError> {
    match first {
        Ok(value) => Ok(value),
        Err(_) => Ok(second()?),
    }
}

/// A PostgreSQL number of any of the usual types (PostgreSQL does not convert them on decode).
fn pg_number(row: &sqlx::postgres::PgRow) -> Result<Option<f64>, BoxError> {
    if let Ok(v) = row.try_get::<Option<i32>, _>(0) {
        return Ok(v.map(f64::from));
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(0) {
        return Ok(v.map(|v| v as f64));
    }
    if let Ok(v) = row.try_get::<Option<i16>, _>(0) {
        return Ok(v.map(f64::from));
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(0) {
        return Ok(v.map(|b| if b { 1.0 } else { 0.0 }));
    }
    if let Ok(v) = row.try_get::<Option<f32>, _>(0) {
        return Ok(v.map(f64::from));
    }
    Ok(row.try_get::<Option<f64>, _>(0).map_err(|_| {
        "the throttle query must return a number (integer, real, double precision or boolean; \
         cast a numeric)"
    })?)
}

#[async_trait]
impl HealthCheck for DatabaseHealth {
    async fn check(&self) -> Result<Option<String>, BoxError> {
        if let Some(query) = &self.query {
            let value = self
                .throttle_value(query)
                .await
                .map_err(|e| format!("customer-migration.throttle-query: {e}"))?;
            if value > 0.0 {
                return Ok(Some(format!("throttle query returned {value}")));
            }
        }
        if let Some(max) = self.max_lag {
            let lag = self.replication_lag().await?;
            if lag > max {
                return Ok(Some(format!(
                    "replication lag {:.1} s over {:.1} s",
                    lag.as_secs_f64(),
                    max.as_secs_f64()
                )));
            }
        }
        Ok(None)
    }
}
