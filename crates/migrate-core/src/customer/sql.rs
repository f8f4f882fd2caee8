//! The customer migration on SQLite and PostgreSQL: the checks before the run, keyset pages,
//! and the batch transaction (read, classify, guarded update, journal).

use sqlx::{Postgres, Sqlite, Transaction};

use crate::components::component::BoxError;
use crate::connection::Database;
use crate::database::{DbError, columns, context, protocol, sql_for};
use crate::engine::migrator::{Outcome, PreflightError, RecordFailure};
use crate::migration::key::Key;
use crate::migration::timeouts::BatchTimeouts;
use crate::store::bookkeeping::BatchJournal;

/// The columns of `customers` the migration reads or writes.
const CUSTOMER_COLUMNS: [&str; 7] = [
    "id",
    "full_name",
    "email",
    "schema_version",
    "first_name",
    "last_name",
    "migrated_at",
];

/// Checks, before anything runs, that `customers` exists with every column the migration
/// uses, and on PostgreSQL that `migrated_at` takes the text the migration writes. A table
/// that is not as expected is a [`PreflightError`] naming the table and the column: no batch
/// could succeed, and retrying each record would only take minutes to say so. The
/// bookkeeping tables are created on first write, so that a dry run creates nothing.
pub(crate) async fn prepare(backend: &Database) -> Result<(), BoxError> {
    let found = columns(backend, "customers").await?;
    if found.is_empty() {
        return Err(PreflightError::new(
            "there is no customers table: create and fill one with `db-migrate seed`",
        )
        .into());
    }
    let missing: Vec<&str> = CUSTOMER_COLUMNS
        .into_iter()
        .filter(|column| !found.iter().any(|f| f == column))
        .collect();
    if !missing.is_empty() {
        return Err(PreflightError::new(format!(
            "table customers has no column {} (the customer migration reads and writes {})",
            missing.join(", "),
            CUSTOMER_COLUMNS.join(", ")
        ))
        .into());
    }
    if let Database::Postgres(pool) = backend {
        let kind: String = sqlx::query_scalar(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = to_regclass('customers') AND attname = 'migrated_at'",
        )
        .fetch_one(pool)
        .await
        .map_err(context("reading the type of customers.migrated_at"))?;
        if !(kind == "text" || kind.starts_with("character varying")) {
            return Err(PreflightError::new(format!(
                "column customers.migrated_at is {kind}: the customer migration writes an RFC 3339 \
                 timestamp as text, so it must be text or varchar"
            ))
            .into());
        }
    }
    Ok(())
}

/// Up to `limit` customer ids above `after` and below `end`, ascending (keyset pagination).
pub(crate) async fn page(
    backend: &Database,
    after: Option<i64>,
    end: Option<i64>,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    // On SQLite the page comes back as one JSON array: see `MIGRATE_SQLITE` for why.
    let sql = match (backend, after.is_some(), end.is_some()) {
        (Database::Sqlite(_), false, false) => {
            "SELECT json_group_array(id) FROM (SELECT id FROM customers ORDER BY id LIMIT ?)"
        }
        (Database::Sqlite(_), true, false) => {
            "SELECT json_group_array(id) FROM
               (SELECT id FROM customers WHERE id > ? ORDER BY id LIMIT ?)"
        }
        (Database::Sqlite(_), false, true) => {
            "SELECT json_group_array(id) FROM
               (SELECT id FROM customers WHERE id < ? ORDER BY id LIMIT ?)"
        }
        (Database::Sqlite(_), true, true) => {
            "SELECT json_group_array(id) FROM
               (SELECT id FROM customers WHERE id > ? AND id < ? ORDER BY id LIMIT ?)"
        }
        // PostgreSQL: `id` may be a 32-bit `integer` (a `serial`); it is read as 64 bits.
        (_, false, false) => "SELECT CAST(id AS BIGINT) FROM customers ORDER BY id LIMIT ?",
        (_, true, false) => {
            "SELECT CAST(id AS BIGINT) FROM customers WHERE id > ? ORDER BY id LIMIT ?"
        }
        (_, false, true) => {
            "SELECT CAST(id AS BIGINT) FROM customers WHERE id < ? ORDER BY id LIMIT ?"
        }
        (_, true, true) => {
            "SELECT CAST(id AS BIGINT) FROM customers WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
        }
    };
    let sql = sql_for(backend, sql);
    let limit = limit as i64;
    macro_rules! bound {
        ($query:expr) => {{
            let mut query = $query;
            if let Some(after) = after {
                query = query.bind(after);
            }
            if let Some(end) = end {
                query = query.bind(end);
            }
            query.bind(limit)
        }};
    }
    let doing = "reading a page of customer ids";
    match backend {
        Database::Sqlite(pool) => {
            let json: String = bound!(sqlx::query_scalar::<_, String>(sql))
                .fetch_one(pool)
                .await
                .map_err(context(doing))?;
            let mut ids: Vec<i64> = serde_json::from_str(&json).map_err(|e| protocol(doing, e))?;
            // An aggregate's order is not promised; the page must be ascending.
            ids.sort_unstable();
            Ok(ids)
        }
        Database::Postgres(pool) => bound!(sqlx::query_scalar::<_, i64>(sql))
            .fetch_all(pool)
            .await
            .map_err(context(doing)),
    }
}

/// How many customers lie above `after` and below `end`.
pub(crate) async fn remaining(
    backend: &Database,
    after: Option<i64>,
    end: Option<i64>,
) -> Result<u64, DbError> {
    let sql = sql_for(
        backend,
        "SELECT count(*) FROM customers WHERE id > ? AND id < ?",
    );
    let (after, end) = (after.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    let count: i64 = match backend {
        Database::Sqlite(pool) => {
            sqlx::query_scalar(sql.clone())
                .bind(after)
                .bind(end)
                .fetch_one(pool)
                .await
        }
        Database::Postgres(pool) => {
            sqlx::query_scalar(sql.clone())
                .bind(after)
                .bind(end)
                .fetch_one(pool)
                .await
        }
    }
    .map_err(context("counting customers"))?;
    Ok(count.max(0) as u64)
}

/// Whitespace as Rust's `char::is_whitespace` defines it (the Unicode White_Space property):
/// what is trimmed from both ends of each name part and of the email. Rust trims with it
/// ([`trim`]) and the statements bind it as the character set of SQL's `trim` and `btrim`, so
/// that both trim exactly the same characters.
pub(crate) const WHITESPACE: &str = "\t\n\u{B}\u{C}\r \u{85}\u{A0}\u{1680}\
    \u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200A}\
    \u{2028}\u{2029}\u{202F}\u{205F}\u{3000}";

/// `text` without [`WHITESPACE`] at either end.
fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| WHITESPACE.contains(c))
}

/// `"Last, First"` split as the migration splits it: at the first comma, each part trimmed of
/// whitespace as [`char::is_whitespace`] defines it (Unicode White_Space), as `(first, last)`;
/// or why it cannot be. A part made only of whitespace is empty, and a name containing a NUL
/// character is malformed: SQLite's text functions stop at a NUL, and PostgreSQL text cannot
/// hold one.
pub fn split_full_name(full_name: &str) -> Result<(&str, &str), &'static str> {
    if full_name.contains('\0') {
        return Err("malformed full_name: contains a NUL character");
    }
    let Some((last, first)) = full_name.split_once(',') else {
        return Err(if trim(full_name).is_empty() {
            "malformed full_name: empty"
        } else {
            "malformed full_name: no comma between last and first name"
        });
    };
    let (last, first) = (trim(last), trim(first));
    if last.is_empty() || first.is_empty() {
        return Err("malformed full_name: empty last or first name");
    }
    Ok((first, last))
}

/// The transformation as one guarded statement per batch: it reads and writes each row in the
/// same statement, so a concurrent application write is never overwritten with stale values,
/// and `schema_version = 1` guarantees no row is migrated twice. Malformed rows do not match.
///
/// On SQLite the batch runs in a `BEGIN IMMEDIATE` transaction: it holds the database's only
/// write lock from its first statement, so the rows read to classify the batch cannot change
/// before the update, and a busy database is waited for (`busy_timeout`) instead of failing
/// the upgrade from reader to writer. Rows cross from SQLite's thread one at a time, at a cost
/// per row that dominates a batch, so both statements exchange one JSON value instead.
///
/// The ids bound to it are those the same transaction just read as legacy and well-formed
/// (checked with [`split_full_name`]): under the write lock nothing can change them in between,
/// so the statement repeats only the `schema_version = 1` guard, and its row count is checked.
/// It also refuses a name holding a NUL byte on its own (the check rejects those too): there
/// `substr` and `instr` stop at the NUL, so it is the one input on which SQLite's text
/// functions would split a name differently from Rust; byte functions on the BLOB see it.
///
/// Both statements trim the characters of [`WHITESPACE`], bound as `$3` on PostgreSQL; SQLite
/// takes the set for names as `?3` ([`name_trim_set`]) and the email's as `?4`.
///
/// Each batch also writes its journal (the audit row, the resolution of earlier failures) in the
/// same transaction: see [`BatchJournal`].
const MIGRATE_SQLITE: &str = "UPDATE customers SET
    last_name = trim(substr(full_name, 1, instr(full_name, ',') - 1), ?3),
    first_name = trim(substr(full_name, instr(full_name, ',') + 1), ?3),
    email = lower(trim(email, ?4)),
    schema_version = 2,
    migrated_at = ?1
  WHERE id IN (SELECT value FROM json_each(?2)) AND schema_version = 1
    AND instr(CAST(full_name AS BLOB), x'00') = 0";
const MIGRATE_POSTGRES: &str = "UPDATE customers SET
    last_name = btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $3),
    first_name = btrim(substr(full_name, strpos(full_name, ',') + 1), $3),
    email = lower(btrim(email, $3)),
    schema_version = 2,
    migrated_at = $1
  WHERE id = ANY($2) AND schema_version = 1
    AND strpos(full_name, ',') > 0
    AND btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $3) <> ''
    AND btrim(substr(full_name, strpos(full_name, ',') + 1), $3) <> ''
  RETURNING CAST(id AS BIGINT)";
/// The batch's rows in three JSON arrays: the ids of rows already migrated; `[id, full_name]`
/// of legacy rows (only those need their name looked at; a BLOB is read as the text of its
/// bytes, as SQLite's text functions read it); and `[id, version]` of rows with any other
/// `schema_version`, quoted as SQL writes it (`NULL`, `3`).
///
/// SQLite copies text into JSON byte for byte, so a name that is not UTF-8 makes the legacy
/// array unreadable as a whole: then [`READ_NAMES_HEX_SQLITE`] reads the names again.
const READ_BATCH_SQLITE: &str = "SELECT
    coalesce(json_group_array(id) FILTER (WHERE schema_version = 2), '[]'),
    coalesce(json_group_array(json_array(id, CAST(full_name AS TEXT)))
      FILTER (WHERE schema_version = 1), '[]'),
    coalesce(json_group_array(json_array(id, quote(schema_version)))
      FILTER (WHERE schema_version IS NOT 1 AND schema_version IS NOT 2), '[]')
  FROM customers WHERE id IN (SELECT value FROM json_each(?))";
/// `[id, hex]` of the batch's legacy rows, the bytes of `full_name` in hex (NULL for NULL):
/// any bytes survive the trip, so each name that is not UTF-8 fails alone.
const READ_NAMES_HEX_SQLITE: &str = "SELECT
    coalesce(json_group_array(json_array(id,
      CASE WHEN full_name IS NOT NULL THEN hex(full_name) END))
      FILTER (WHERE schema_version = 1), '[]')
  FROM customers WHERE id IN (SELECT value FROM json_each(?))";
// `schema_version` is an INTEGER column: a 32-bit value on PostgreSQL, read as 64 bits here.
// Either column may be NULL; PostgreSQL text is always valid UTF-8.
const CLASSIFY_POSTGRES: &str =
    "SELECT CAST(id AS BIGINT), CAST(schema_version AS BIGINT), full_name
  FROM customers WHERE id = ANY($1)";

/// A record of a batch as the batch's transaction read it: what decides its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// `schema_version = 2`: migrated before.
    Migrated,
    /// `schema_version = 1`: legacy, with its `full_name`, or why that is no text to split
    /// (NULL, not valid UTF-8).
    Legacy(Result<String, String>),
    /// Any other `schema_version` (NULL, 0, 3...), as SQL writes it.
    Unexpected(String),
}

impl Found {
    /// A legacy row with its `full_name` (NULL is no name).
    fn legacy(full_name: Option<String>) -> Found {
        Found::Legacy(full_name.ok_or_else(|| "malformed full_name: NULL".to_owned()))
    }

    /// A legacy row with the bytes of its `full_name` in hex (NULL is no name), or why the
    /// hex is not hex.
    fn legacy_hex(hex: Option<&str>) -> Result<Found, String> {
        let Some(hex) = hex else {
            return Ok(Found::legacy(None));
        };
        let name = String::from_utf8(unhex(hex)?).map_err(|e| {
            format!(
                "malformed full_name: not valid UTF-8 (\"{}\")",
                e.as_bytes().escape_ascii()
            )
        });
        Ok(Found::Legacy(name))
    }

    /// A row read on PostgreSQL.
    fn postgres(version: Option<i64>, full_name: Option<String>) -> Found {
        match version {
            Some(1) => Found::legacy(full_name),
            Some(2) => Found::Migrated,
            Some(version) => Found::Unexpected(version.to_string()),
            None => Found::Unexpected("NULL".into()),
        }
    }

    /// The name of a legacy row whose name is well-formed: a row to migrate.
    fn migratable(&self) -> Option<&str> {
        match self {
            Found::Legacy(Ok(name)) if split_full_name(name).is_ok() => Some(name),
            _ => None,
        }
    }
}

/// Whether a legacy row's `full_name` can be split, or why not (the failure's message).
fn check_name(full_name: &Result<String, String>) -> Result<(), String> {
    match full_name {
        Ok(name) => split_full_name(name)
            .map(drop)
            .map_err(|reason| format!("{reason} ({name:?})")),
        Err(reason) => Err(reason.clone()),
    }
}

/// The characters SQLite is to trim from the parts of `names` (well-formed): the space alone
/// when that is all [`split_full_name`] trims from them, which gives the same parts, or all of
/// [`WHITESPACE`]. SQLite's `trim` compares each end of its input with every character of its
/// set: with the whole set, the names' two trims cost the engine a tenth of its speed.
fn name_trim_set<'a>(mut names: impl Iterator<Item = &'a str>) -> &'static str {
    let spaces_suffice = |part: &str| part.trim_matches(' ').len() == trim(part).len();
    if names.all(|name| {
        name.split_once(',')
            .is_some_and(|(last, first)| spaces_suffice(last) && spaces_suffice(first))
    }) {
        " "
    } else {
        WHITESPACE
    }
}

/// The bytes of SQLite's `hex()`, or why they are not.
fn unhex(hex: &str) -> Result<Vec<u8>, String> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex of odd length: {hex:?}"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex: {hex:?}"))
        })
        .collect()
}

/// Migrates a batch in one transaction; see [`MIGRATE_SQLITE`] for the guard. Each record that
/// was not migrated is classified on its own: already migrated, malformed or of an unexpected
/// `schema_version` (a permanent failure for that record only), gone, or changed under us
/// (retried).
///
/// `writer`, when given, is held from the start of the transaction to its commit (SQLite's single
/// writer, see `CustomerMigration`); what can be done outside it is.
pub(crate) async fn migrate(
    backend: &Database,
    ids: &[i64],
    dry_run: bool,
    writer: Option<&tokio::sync::Mutex<()>>,
    timeouts: &BatchTimeouts,
    journal: Option<&BatchJournal>,
) -> Result<Vec<Outcome>, DbError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let outcomes = match backend {
        Database::Sqlite(pool) => {
            let ids_json = serde_json::to_string(ids).expect("ids serialize");
            let queued = std::time::Instant::now();
            let _writer = match writer {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            let mut tx: Transaction<'_, Sqlite> = if dry_run {
                pool.begin().await
            } else {
                pool.begin_with("BEGIN IMMEDIATE").await
            }
            .map_err(context("starting a batch"))?;
            crate::report_wait(queued.elapsed());
            let (done_json, legacy_json, other_json): (String, Vec<u8>, String) =
                sqlx::query_as(READ_BATCH_SQLITE)
                    .bind(&ids_json)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(context("reading a batch of customers"))?;
            let decode = |e| protocol("reading a batch of customers", e);
            let done: Vec<i64> = serde_json::from_str(&done_json).map_err(decode)?;
            let other: Vec<(i64, String)> = serde_json::from_str(&other_json).map_err(decode)?;
            let mut rows: Vec<(i64, Found)> = match String::from_utf8(legacy_json) {
                Ok(json) => {
                    let legacy: Vec<(i64, Option<String>)> =
                        serde_json::from_str(&json).map_err(decode)?;
                    legacy
                        .into_iter()
                        .map(|(id, name)| (id, Found::legacy(name)))
                        .collect()
                }
                // Some name is not UTF-8: read the names again as bytes, to tell which.
                Err(_) => {
                    let json: String = sqlx::query_scalar(READ_NAMES_HEX_SQLITE)
                        .bind(&ids_json)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(context("reading a batch of customers"))?;
                    let legacy: Vec<(i64, Option<String>)> =
                        serde_json::from_str(&json).map_err(decode)?;
                    legacy
                        .into_iter()
                        .map(|(id, hex)| Ok((id, Found::legacy_hex(hex.as_deref())?)))
                        .collect::<Result<_, String>>()
                        .map_err(|e| protocol("reading a batch of customers", e))?
                }
            };
            let migratable: Vec<(i64, &str)> = rows
                .iter()
                .filter_map(|(id, found)| Some((*id, found.migratable()?)))
                .collect();
            let names_set = name_trim_set(migratable.iter().map(|(_, name)| *name));
            let migratable: Vec<i64> = migratable.into_iter().map(|(id, _)| id).collect();
            rows.extend(done.into_iter().map(|id| (id, Found::Migrated)));
            rows.extend(other.into_iter().map(|(id, v)| (id, Found::Unexpected(v))));
            if !dry_run && !migratable.is_empty() {
                let migratable_json = serde_json::to_string(&migratable).expect("ids serialize");
                let updated = sqlx::query(MIGRATE_SQLITE)
                    .bind(&now)
                    .bind(&migratable_json)
                    .bind(names_set)
                    .bind(WHITESPACE)
                    .execute(&mut *tx)
                    .await
                    .map_err(context("migrating a batch of customers"))?
                    .rows_affected();
                if updated != migratable.len() as u64 {
                    // Nothing can change under the write lock: the statement and
                    // `split_full_name` disagree. Roll back; each record is tried alone.
                    return Err(protocol(
                        "migrating a batch of customers",
                        format!(
                            "{updated} rows updated where {} were expected",
                            migratable.len()
                        ),
                    ));
                }
            }
            let migrated = if dry_run { Vec::new() } else { migratable };
            let outcomes = classify(ids, migrated, rows, dry_run);
            if let Some(journal) = journal {
                let (migrated, settled) = journal_keys(ids, &outcomes, journal.resolves_failures());
                journal
                    .write_sqlite(&mut tx, &now, &migrated, &settled)
                    .await?;
            }
            tx.commit().await.map_err(context("committing a batch"))?;
            outcomes
        }
        Database::Postgres(pool) => {
            let queued = std::time::Instant::now();
            let mut tx: Transaction<'_, Postgres> =
                pool.begin().await.map_err(context("starting a batch"))?;
            crate::report_wait(queued.elapsed());
            // For this transaction only: a row locked by another session (55P03) or a statement
            // running too long (57014) fails the batch, which the engine retries and splits,
            // instead of blocking it, and a stop, for longer. Without a statement timeout the
            // database's own setting stays.
            sqlx::query(
                "SELECT set_config('lock_timeout', $1, true), \
                        set_config('statement_timeout', \
                                   coalesce($2, current_setting('statement_timeout')), true)",
            )
            .bind(timeouts.lock_setting())
            .bind(timeouts.statement_setting())
            .execute(&mut *tx)
            .await
            .map_err(context("setting the batch's timeouts"))?;
            let migrated: Vec<i64> = if dry_run {
                Vec::new()
            } else {
                sqlx::query_scalar(MIGRATE_POSTGRES)
                    .bind(&now)
                    .bind(ids)
                    .bind(WHITESPACE)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(context("migrating a batch of customers"))?
            };
            // Only the records not migrated need a look.
            let rest: Vec<i64> = if migrated.is_empty() {
                ids.to_vec()
            } else {
                let done: std::collections::HashSet<i64> = migrated.iter().copied().collect();
                ids.iter()
                    .copied()
                    .filter(|id| !done.contains(id))
                    .collect()
            };
            let rows: Vec<(i64, Option<i64>, Option<String>)> = if rest.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(CLASSIFY_POSTGRES)
                    .bind(&rest)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(context("reading a batch of customers"))?
            };
            let rows = rows
                .into_iter()
                .map(|(id, version, name)| (id, Found::postgres(version, name)))
                .collect();
            let outcomes = classify(ids, migrated, rows, dry_run);
            if let Some(journal) = journal {
                let (migrated, settled) = journal_keys(ids, &outcomes, journal.resolves_failures());
                journal
                    .write_postgres(&mut tx, &now, &migrated, &settled)
                    .await?;
            }
            tx.commit().await.map_err(context("committing a batch"))?;
            outcomes
        }
    };
    Ok(outcomes)
}

/// What a batch's journal lists: the keys migrated now, and the keys settled (migrated, found
/// migrated, or gone), whose earlier failures no longer stand.
fn journal_keys(ids: &[i64], outcomes: &[Outcome], resolves: bool) -> (Vec<Key>, Vec<Key>) {
    let mut migrated = Vec::new();
    let mut settled = Vec::new();
    for (&id, outcome) in ids.iter().zip(outcomes) {
        if matches!(outcome, Outcome::Migrated) {
            migrated.push(Key::int(id));
        }
        if resolves && !matches!(outcome, Outcome::Failed(_)) {
            settled.push(Key::int(id));
        }
    }
    (migrated, settled)
}

/// One outcome per id of a batch: `migrated` were migrated now; `rows` are the batch's rows as
/// read in the batch's transaction.
fn classify(
    ids: &[i64],
    migrated: Vec<i64>,
    rows: Vec<(i64, Found)>,
    dry_run: bool,
) -> Vec<Outcome> {
    let migrated: std::collections::HashSet<i64> = migrated.into_iter().collect();
    let rows: std::collections::HashMap<i64, Found> = rows.into_iter().collect();
    ids.iter()
        .map(|id| {
            if migrated.contains(id) {
                return Outcome::Migrated;
            }
            match rows.get(id) {
                // Deleted since the scan read it: nothing to migrate.
                None => Outcome::Gone,
                Some(Found::Migrated) => Outcome::PreviouslyMigrated,
                Some(Found::Unexpected(version)) => Outcome::Failed(RecordFailure::permanent(
                    format!("unexpected schema_version {version} (1 is legacy, 2 migrated)"),
                )),
                Some(Found::Legacy(name)) => match check_name(name) {
                    Err(reason) => Outcome::Failed(RecordFailure::permanent(reason)),
                    Ok(_) if dry_run => Outcome::Migrated,
                    // A well-formed legacy row the update did not match: it changed between
                    // the statements (PostgreSQL reads each statement afresh). Another try
                    // will migrate it.
                    Ok(_) => Outcome::Failed(RecordFailure::transient(format!(
                        "customer {id} changed while it was being migrated"
                    ))),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_of_a_batch_is_classified_on_its_own() {
        let legacy = |name: &str| Found::Legacy(Ok(name.to_owned()));
        let rows = vec![
            (1, legacy("Lovelace, Ada")),
            (2, Found::Migrated),
            (3, legacy("Turing Alan")),
            (4, legacy("Liskov, Barbara")),
        ];
        let outcomes = classify(&[1, 2, 3, 4, 5], vec![1], rows.clone(), false);
        assert_eq!(outcomes[0], Outcome::Migrated);
        assert_eq!(outcomes[1], Outcome::PreviouslyMigrated);
        assert!(
            matches!(&outcomes[2], Outcome::Failed(f) if !f.retryable && f.message.contains("malformed"))
        );
        // Well-formed and legacy but not updated: it changed meanwhile, so it is retried.
        assert!(matches!(&outcomes[3], Outcome::Failed(f) if f.retryable));
        assert_eq!(
            outcomes[4],
            Outcome::Gone,
            "a vanished row is not a failure"
        );
        // A dry run reports the migratable ones as needing migration.
        let dry = classify(&[1, 4], Vec::new(), rows, true);
        assert_eq!(dry, [Outcome::Migrated, Outcome::Migrated]);
    }

    #[test]
    fn unexpected_versions_and_unreadable_names_fail_for_good() {
        let rows = vec![
            (1, Found::postgres(None, Some("Lovelace, Ada".into()))),
            (2, Found::postgres(Some(0), Some("Hopper, Grace".into()))),
            (3, Found::postgres(Some(3), Some("Turing, Alan".into()))),
            (4, Found::postgres(Some(1), None)),
            (5, Found::legacy_hex(Some("4C6F76FF2C2041")).unwrap()),
            (6, Found::legacy_hex(None).unwrap()),
            (7, Found::legacy_hex(Some("4C6F76652C2041")).unwrap()),
        ];
        let outcomes = classify(&[1, 2, 3, 4, 5, 6, 7], Vec::new(), rows, true);
        let messages: Vec<&str> = outcomes[..6]
            .iter()
            .map(|outcome| match outcome {
                Outcome::Failed(f) if !f.retryable => f.message.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                "unexpected schema_version NULL (1 is legacy, 2 migrated)",
                "unexpected schema_version 0 (1 is legacy, 2 migrated)",
                "unexpected schema_version 3 (1 is legacy, 2 migrated)",
                "malformed full_name: NULL",
                "malformed full_name: not valid UTF-8 (\"Lov\\xff, A\")",
                "malformed full_name: NULL",
            ]
        );
        assert_eq!(outcomes[6], Outcome::Migrated, "\"Love, A\" from hex");
        assert!(Found::legacy_hex(Some("4C6")).is_err());
        assert!(Found::legacy_hex(Some("4G")).is_err());
    }

    #[test]
    fn sqlite_trims_names_of_spaces_alone_when_that_is_all_they_need() {
        let set = |names: &[&str]| name_trim_set(names.iter().copied());
        assert_eq!(set(&[]), " ");
        assert_eq!(
            set(&["Lovelace, Ada", " de\u{A0}la Cruz ,  Juana\u{3000}In"]),
            " "
        );
        assert_eq!(set(&["Lovelace, Ada", "Yamada,\u{3000}Taro"]), WHITESPACE);
        assert_eq!(set(&["Hopper\t, Grace"]), WHITESPACE);
        // The first name runs from the first comma to the end.
        assert_eq!(set(&["King, Jr.,\u{3000}"]), WHITESPACE);
    }

    #[test]
    fn whitespace_is_what_rust_calls_whitespace() {
        let unicode: String = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert_eq!(WHITESPACE, unicode);
    }

    #[test]
    fn full_names_split_on_the_first_comma_and_trim_spaces() {
        assert_eq!(split_full_name("Lovelace, Ada"), Ok(("Ada", "Lovelace")));
        assert_eq!(
            split_full_name("  de la Cruz ,  Juana Inés "),
            Ok(("Juana Inés", "de la Cruz"))
        );
        assert_eq!(
            split_full_name("King, Jr., Martin"),
            Ok(("Jr., Martin", "King"))
        );
        assert!(split_full_name("Ada Lovelace").is_err());
        assert!(split_full_name("").is_err());
        assert!(split_full_name(" , Ada").is_err());
        assert!(split_full_name("Lovelace,").is_err());
    }

    #[test]
    fn a_name_with_a_nul_character_is_malformed() {
        assert_eq!(
            split_full_name("Nul\0Byte, Test"),
            Err("malformed full_name: contains a NUL character")
        );
        assert!(split_full_name("Lovelace, Ada\0").is_err());
    }

    #[test]
    fn full_names_are_trimmed_of_unicode_whitespace() {
        assert_eq!(
            split_full_name("Yamada,\u{3000}Taro"),
            Ok(("Taro", "Yamada"))
        );
        assert_eq!(
            split_full_name("\u{A0}Lovelace\t,\u{2003}Ada\n"),
            Ok(("Ada", "Lovelace"))
        );
        // Inside a part, whitespace is part of the name.
        assert_eq!(
            split_full_name("de\u{A0}la Cruz, Juana\u{3000}In\u{e9}s"),
            Ok(("Juana\u{3000}In\u{e9}s", "de\u{A0}la Cruz"))
        );
        assert!(split_full_name("Liskov,\u{3000}").is_err());
        assert!(split_full_name("\u{A0}\t, Barbara").is_err());
        assert_eq!(
            split_full_name("\u{2003}\u{85}"),
            Err("malformed full_name: empty")
        );
        // Zero-width space and BOM are not whitespace.
        assert_eq!(
            split_full_name("\u{200B},\u{FEFF}"),
            Ok(("\u{FEFF}", "\u{200B}"))
        );
    }
}
