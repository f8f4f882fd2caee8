//! The statements of a declared migration, written for SQLite or PostgreSQL.
//!
//! Names from the file are plain identifiers (checked when it is read) and always quoted here;
//! the SQL fragments are the file's own and are pasted as they are, between parentheses where
//! they are combined with other conditions. Every value (keys, limits, `{now}`, `[params]`) is
//! a bound parameter: each statement says which, in the order of their numbers.

use std::borrow::Cow;

use crate::migration::key::{Key, KeyColumn, KeyKind, KeyValue};

use super::spec::{Dialect, Expr, MigrationSpec, Param, Piece};

/// What a statement's parameter is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// `{now}` or a `[params]` value.
    Param(Param),
    /// The `i`-th value of the key the page starts after.
    After(usize),
    /// The `i`-th value of the key the page ends before.
    End(usize),
    /// The page's size.
    Limit,
    /// SQLite: the batch's keys as one JSON array (a key of several columns as an array).
    Batch,
    /// PostgreSQL: the `i`-th value of every key of the batch, as an array.
    BatchColumn(usize),
}

/// A statement, and what to bind to its parameters `1..=binds.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind>,
}

/// A value to bind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    Ints(Vec<i64>),
    Texts(Vec<String>),
}

/// What the parameters of one execution are bound to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Args<'a> {
    pub(crate) now: &'a str,
    pub(crate) params: &'a [(String, String)],
    pub(crate) after: Option<&'a Key>,
    pub(crate) end: Option<&'a Key>,
    pub(crate) limit: i64,
    pub(crate) batch: &'a [Key],
}

/// Every statement a declared migration runs on one database.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) dialect: Dialect,
    pub(crate) key: Vec<KeyColumn>,
    /// Keyset pages, by whether they start after a key and end before one.
    pages: [Statement; 4],
    /// The same pages, their order promised by the aggregate's own sort rather than checked
    /// here (see [`Plan::checks_page_order`]).
    ordered_pages: [Statement; 4],
    /// Keys of integers only: pages are read without sorting the aggregate (a sort of every
    /// page, a tenth of a migration's time on SQLite), in the order of the subquery that chose
    /// their keys, and that order is checked here, where integers compare as they do there
    /// (see `SqlMigration::page`). Text keys are checked too once the database says that it
    /// orders them by their bytes (see `SqlMigration::check`).
    pub(crate) checks_page_order: bool,
    /// The counts of the same ranges.
    counts: [Statement; 4],
    /// The state of each row of a batch: 0 not pending, 1 pending and valid, 2 pending but not
    /// valid; with its key (SQLite: `[k1, k2, state]` JSON arrays, in one JSON array).
    pub(crate) classify: Statement,
    /// SQLite only, read before the update: how many of the batch's rows exist, and
    /// `[[k1, k2], ...]` for those not pending (see `SqliteRunner::migrate`).
    pub(crate) settled: Statement,
    /// SQLite only, read after the update: `[[k1, k2, state], ...]` for the batch's rows still
    /// pending.
    pub(crate) leftover: Statement,
    /// SQLite only, the batch as a span of the table: the keys of the rows from its first key
    /// to its last (`after` to `end`, both included) as a page holds them, in the database's
    /// order, at most `limit` of them, and whether each is pending (`"0110..."`). When those rows are the batch's keys in the batch's
    /// order, the batch is updated by range (see `SqliteRunner::migrate`).
    pub(crate) span: Statement,
    /// [`update`](Plan::update) on the span's rows rather than on a list of keys. On
    /// PostgreSQL, with the count of the span's rows first (at most `limit`), and only when
    /// it is one less than `limit` (the batch's size) does it update or read a row.
    pub(crate) span_update: Statement,
    /// SQLite only: [`leftover`](Plan::leftover) on the span's rows.
    pub(crate) span_leftover: Statement,
    /// The guarded update of a batch (PostgreSQL: with what it updated and the state of the
    /// rest, as JSON arrays in one row).
    pub(crate) update: Statement,
    /// Each fragment of the file in a statement of its own, with the file's key it comes from:
    /// preparing them names the fragment a database error is about.
    pub(crate) fragments: Vec<(String, Statement)>,
}

/// Row states of [`Plan::classify`].
pub(crate) const NOT_PENDING: i64 = 0;
pub(crate) const PENDING: i64 = 1;
pub(crate) const INVALID: i64 = 2;

impl Plan {
    /// The statements of `spec` on `dialect`.
    pub(crate) fn new(spec: &MigrationSpec, dialect: Dialect) -> Plan {
        let rules = spec.resolve(dialect);
        let table = quote_table(&spec.table);
        let key = &spec.key;
        let keys = Gen { dialect, key };
        let ranges = [(false, false), (true, false), (false, true), (true, true)];
        let checks_page_order = key.iter().all(|column| column.kind == KeyKind::Integer);
        let pages = ranges.map(|(after, end)| keys.page(&table, after, end, false));
        let ordered_pages = ranges.map(|(after, end)| keys.page(&table, after, end, true));
        let counts = ranges.map(|(after, end)| keys.count(&table, after, end));

        let valid = rules.valid.as_ref().map(|(_, e)| *e);
        let mut classify = Builder::new(dialect);
        let state = |b: &mut Builder| {
            b.push("CASE WHEN (");
            b.expr(rules.pending.1);
            b.push(") THEN ");
            match valid {
                Some(valid) => {
                    b.push("CASE WHEN (");
                    b.expr(valid);
                    b.push(&format!(") THEN {PENDING} ELSE {INVALID} END"));
                }
                None => b.push(&PENDING.to_string()),
            }
            b.push(&format!(" ELSE {NOT_PENDING} END"));
        };
        match dialect {
            Dialect::Sqlite => {
                classify.push("SELECT json_group_array(json_array(");
                classify.push(&keys.columns(""));
                classify.push(", ");
                state(&mut classify);
                classify.push(&format!(")) FROM {table} WHERE "));
            }
            Dialect::Postgres => {
                classify.push("SELECT ");
                classify.push(&keys.read_columns());
                classify.push(", ");
                state(&mut classify);
                classify.push(&format!(" FROM {table} WHERE "));
            }
        }
        keys.in_batch(&mut classify);

        // SQLite, under the write lock, before the update: how many of the batch's rows there
        // are, and the keys of those not pending (migrated before); after it: the state of the
        // rows it left pending (not valid).
        let mut settled = Builder::new(dialect);
        let mut leftover = Builder::new(dialect);
        let mut span_leftover = Builder::new(dialect);
        let mut span = Builder::new(dialect);
        if dialect == Dialect::Sqlite {
            settled.push("SELECT count(*), json_group_array(json_array(");
            settled.push(&keys.columns(""));
            settled.push(")) FILTER (WHERE (");
            settled.expr(rules.pending.1);
            settled.push(&format!(") IS NOT TRUE) FROM {table} WHERE "));
            keys.in_batch(&mut settled);

            for (b, within) in [
                (&mut leftover, Rows::Batch),
                (&mut span_leftover, Rows::Span),
            ] {
                b.push("SELECT json_group_array(json_array(");
                b.push(&keys.columns(""));
                b.push(", ");
                state(b);
                b.push(&format!(")) FROM {table} WHERE "));
                keys.rows(b, within);
                b.push(" AND (");
                b.expr(rules.pending.1);
                b.push(")");
            }

            // The keys as a page holds them, and their flags in the same order, one character
            // each (`1`: pending): one JSON value per row would cost more than the scan. The
            // flag's name cannot be a key column's: those are plain identifiers.
            let order = keys.columns("");
            span.push(&format!(
                "SELECT json_group_array({}), group_concat(\"pending?\", '') FROM (SELECT \
                 {order}, (",
                keys.element()
            ));
            span.expr(rules.pending.1);
            span.push(&format!(") IS TRUE AS \"pending?\" FROM {table} WHERE "));
            keys.span(&mut span);
            span.push(&format!(" ORDER BY {order} LIMIT "));
            span.param(Bind::Limit);
            span.push(")");
        }

        let mut update = Builder::new(dialect);
        let mut span_update = Builder::new(dialect);
        // PostgreSQL, a span: the rows from the batch's first key to its last are counted, at
        // most `limit` (one more than the batch) of them, and the update and the read of the
        // others only run when there are as many as the batch has keys. The condition holds no
        // column, so it is evaluated once, before any row is read (a one-time filter): a batch
        // that is not a span costs a bounded count, and writes nothing.
        let gate = "(SELECT n FROM span) = ";
        for (b, within) in [(&mut update, Rows::Batch), (&mut span_update, Rows::Span)] {
            if dialect == Dialect::Postgres {
                if let Rows::Span = within {
                    b.push(&format!(
                        "WITH span AS (SELECT count(*) AS n FROM (SELECT 1 FROM {table} WHERE "
                    ));
                    keys.span(b);
                    // In the key's order: the index's range, which a planner that misjudges
                    // how many rows a comparison of row values keeps would otherwise trade
                    // for a scan of the table, stopped at the limit.
                    b.push(&format!(" ORDER BY {} LIMIT ", keys.columns("")));
                    b.param(Bind::Limit);
                    b.push(") s), ");
                } else {
                    b.push("WITH ");
                }
                b.push("migrated AS (");
            }
            b.push(&format!("UPDATE {table} SET "));
            for (i, (_, column, expr)) in rules.set.iter().enumerate() {
                if i > 0 {
                    b.push(", ");
                }
                b.push(&format!("{} = ", quote(column)));
                b.expr(expr);
            }
            b.push(" WHERE ");
            if let (Dialect::Postgres, Rows::Span) = (dialect, within) {
                b.push(gate);
                b.param(Bind::Limit);
                b.push(" - 1 AND ");
            }
            keys.rows(b, within);
            b.push(" AND (");
            b.expr(rules.pending.1);
            b.push(")");
            if let Some(valid) = valid {
                b.push(" AND (");
                b.expr(valid);
                b.push(")");
            }
            if dialect == Dialect::Postgres {
                // One statement and one row for the whole batch: the keys it updated, and the
                // state of the batch's other rows, each as one JSON array (a span's, first, the
                // count of its rows). The outer query reads the snapshot from before the update,
                // which is what classifies the rows it left.
                let migrated = keys.aliases();
                b.push(" RETURNING ");
                b.push(&keys.read_columns_as());
                b.push(") SELECT ");
                if let Rows::Span = within {
                    b.push("(SELECT n FROM span), ");
                }
                // The keys it updated as a page holds them: a bare value for one column.
                let element = match key.as_slice() {
                    [_] => migrated.clone(),
                    _ => format!("json_build_array({migrated})"),
                };
                b.push(&format!(
                    "(SELECT coalesce(json_agg({element}), '[]') FROM migrated)::text, (SELECT \
                     coalesce(json_agg(json_build_array({}, ",
                    keys.read_columns()
                ));
                state(b);
                b.push(&format!(")), '[]') FROM {table} WHERE "));
                if let Rows::Span = within {
                    b.push(gate);
                    b.param(Bind::Limit);
                    b.push(" - 1 AND ");
                }
                keys.rows(b, within);
                b.push(&format!(
                    " AND ({}) NOT IN (SELECT {migrated} FROM migrated))::text",
                    keys.read_columns()
                ));
            }
        }

        let mut fragments = Vec::new();
        for (path, expr) in std::iter::once(&rules.pending).chain(rules.valid.as_ref()) {
            let mut b = Builder::new(dialect);
            b.push(&format!("SELECT 1 FROM {table} WHERE ("));
            b.expr(expr);
            b.push(")");
            fragments.push((path.clone(), b.finish()));
        }
        for (path, column, expr) in &rules.set {
            let mut b = Builder::new(dialect);
            b.push(&format!("UPDATE {table} SET {} = ", quote(column)));
            b.expr(expr);
            b.push(" WHERE 1 = 0");
            fragments.push((path.clone(), b.finish()));
        }

        Plan {
            dialect,
            key: key.clone(),
            pages,
            ordered_pages,
            checks_page_order,
            counts,
            classify: classify.finish(),
            settled: settled.finish(),
            leftover: leftover.finish(),
            span: span.finish(),
            span_update: span_update.finish(),
            span_leftover: span_leftover.finish(),
            update: update.finish(),
            fragments,
        }
    }

    /// The page of keys after `after` and before `end`, in the order the subquery read them,
    /// which the caller checks.
    pub(crate) fn page(&self, after: bool, end: bool) -> &Statement {
        &self.pages[usize::from(after) + 2 * usize::from(end)]
    }

    /// The page of keys after `after` and before `end`, sorted by the database: for keys whose
    /// order cannot be checked here, and for a page that [`Plan::page`] gave out of order.
    pub(crate) fn ordered_page(&self, after: bool, end: bool) -> &Statement {
        &self.ordered_pages[usize::from(after) + 2 * usize::from(end)]
    }

    /// The count of keys after `after` and before `end`.
    pub(crate) fn count(&self, after: bool, end: bool) -> &Statement {
        &self.counts[usize::from(after) + 2 * usize::from(end)]
    }
}

impl Bind {
    /// The value bound for this parameter in the execution `args`, or why there is none (a
    /// key of another shape than the migration's).
    pub(crate) fn value<'a>(self, args: &Args<'a>, key: &[KeyColumn]) -> Result<Value<'a>, String> {
        let scalar = |value: &'a KeyValue| match value {
            KeyValue::Int(n) => Value::Int(*n),
            KeyValue::Text(text) => Value::Text(Cow::Borrowed(text)),
        };
        let nth = |k: Option<&'a Key>, i: usize| {
            k.and_then(|k| k.values().get(i))
                .map(scalar)
                .ok_or_else(|| format!("a key of {} columns was expected", key.len()))
        };
        Ok(match self {
            Bind::Param(Param::Now) => Value::Text(Cow::Borrowed(args.now)),
            Bind::Param(Param::Named(i)) => Value::Text(Cow::Borrowed(&args.params[i].1)),
            Bind::After(i) => nth(args.after, i)?,
            Bind::End(i) => nth(args.end, i)?,
            Bind::Limit => Value::Int(args.limit),
            Bind::Batch => Value::Text(Cow::Owned(
                serde_json::to_string(args.batch).expect("keys serialize"),
            )),
            Bind::BatchColumn(i) => {
                let wrong = |k: &Key| format!("key {k} does not fit the key columns");
                match key[i].kind {
                    KeyKind::Integer => Value::Ints(
                        args.batch
                            .iter()
                            .map(|k| match k.values().get(i) {
                                Some(KeyValue::Int(n)) => Ok(*n),
                                _ => Err(wrong(k)),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    KeyKind::Text | KeyKind::Uuid => Value::Texts(
                        args.batch
                            .iter()
                            .map(|k| match k.values().get(i) {
                                Some(KeyValue::Text(t)) => Ok(String::from(&**t)),
                                _ => Err(wrong(k)),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                }
            }
        })
    }
}

/// Which rows a batch's statement is about.
#[derive(Debug, Clone, Copy)]
enum Rows {
    /// Those of the batch's keys ([`Bind::Batch`] or [`Bind::BatchColumn`]).
    Batch,
    /// Those from the batch's first key to its last ([`Bind::After`] to [`Bind::End`]).
    Span,
}

/// Writes the parts of statements that depend on the key.
struct Gen<'a> {
    dialect: Dialect,
    key: &'a [KeyColumn],
}

impl Gen<'_> {
    /// The key columns, quoted, separated by commas, each with `suffix`.
    fn columns(&self, suffix: &str) -> String {
        self.key
            .iter()
            .map(|c| format!("{}{suffix}", quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// PostgreSQL: the key columns as they are read: integers as `bigint`, text and UUIDs as
    /// `text`.
    fn read_columns(&self) -> String {
        self.key
            .iter()
            .map(|c| match c.kind {
                KeyKind::Integer => format!("CAST({} AS bigint)", quote(&c.name)),
                KeyKind::Text | KeyKind::Uuid => format!("CAST({} AS text)", quote(&c.name)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// PostgreSQL: [`read_columns`](Gen::read_columns) named `k0`, `k1`, ...
    fn read_columns_as(&self) -> String {
        self.read_columns()
            .split(", ")
            .enumerate()
            .map(|(i, column)| format!("{column} AS k{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `k0, k1, ...`: the names [`read_columns_as`](Gen::read_columns_as) gives.
    fn aliases(&self) -> String {
        (0..self.key.len())
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// SQLite: a key as an element of a JSON array: the value of its one column, or the
    /// array of its columns' values.
    fn element(&self) -> String {
        match self.key {
            [one] => quote(&one.name),
            _ => format!("json_array({})", self.columns("")),
        }
    }

    /// The key as a row value: `"a"` for one column, `("a", "b")` for several.
    fn row(&self) -> String {
        match self.key {
            [one] => quote(&one.name),
            _ => format!("({})", self.columns("")),
        }
    }

    /// `row > (?, ?)` (or `<`): a key's values as parameters, cast to `uuid` on PostgreSQL.
    fn compare(&self, b: &mut Builder, op: &str, bind: fn(usize) -> Bind) {
        b.push(&format!("{} {op} ", self.row()));
        if self.key.len() > 1 {
            b.push("(");
        }
        for (i, column) in self.key.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            self.value(b, bind(i), column);
        }
        if self.key.len() > 1 {
            b.push(")");
        }
    }

    /// `WHERE row > after AND row < end`, or nothing.
    fn range(&self, b: &mut Builder, after: bool, end: bool) {
        if after {
            b.push(" WHERE ");
            self.compare(b, ">", Bind::After);
        }
        if end {
            b.push(if after { " AND " } else { " WHERE " });
            self.compare(b, "<", Bind::End);
        }
    }

    /// A page of keys in the database's order. The page crosses as one JSON array (on SQLite,
    /// rows cross from its thread one at a time, at a cost that would dominate; on PostgreSQL,
    /// each row is a message to write, send and read); when
    /// `sorted`, the aggregate's own `ORDER BY` (SQLite 3.44+) makes its order the page's
    /// order by promise, not by the accident of how the subquery is read; otherwise the caller
    /// checks it.
    fn page(&self, table: &str, after: bool, end: bool, sorted: bool) -> Statement {
        let mut b = Builder::new(self.dialect);
        let order = self.columns("");
        match self.dialect {
            Dialect::Sqlite => {
                let element = self.element();
                let sort = match sorted {
                    true => format!(" ORDER BY {order}"),
                    false => String::new(),
                };
                b.push(&format!(
                    "SELECT json_group_array({element}{sort}) FROM (SELECT {order} FROM {table}"
                ));
                self.range(&mut b, after, end);
                b.push(&format!(" ORDER BY {order} LIMIT "));
                b.param(Bind::Limit);
                b.push(")");
            }
            Dialect::Postgres => {
                let aliases = self.aliases();
                let element = match self.key {
                    [_] => aliases.clone(),
                    _ => format!("json_build_array({aliases})"),
                };
                let sort = match sorted {
                    true => format!(" ORDER BY {order}"),
                    false => String::new(),
                };
                b.push(&format!(
                    "SELECT coalesce(json_agg({element}{sort}), '[]')::text FROM (SELECT \
                     {order}, {} FROM {table}",
                    self.read_columns_as()
                ));
                self.range(&mut b, after, end);
                b.push(&format!(" ORDER BY {order} LIMIT "));
                b.param(Bind::Limit);
                b.push(") page");
            }
        }
        b.finish()
    }

    fn count(&self, table: &str, after: bool, end: bool) -> Statement {
        let mut b = Builder::new(self.dialect);
        b.push(&format!("SELECT count(*) FROM {table}"));
        self.range(&mut b, after, end);
        b.finish()
    }

    /// The condition that a row is one of `rows`.
    fn rows(&self, b: &mut Builder, rows: Rows) {
        match rows {
            Rows::Batch => self.in_batch(b),
            Rows::Span => self.span(b),
        }
    }

    /// The condition that a row's key is between the batch's first and last, both included
    /// (bound as `after` and `end`).
    ///
    /// PostgreSQL, a key of several columns: the batch's first and last keys share all but
    /// their last column (see `PostgresRunner::migrate`), which is compared alone. Its B-tree
    /// ends no scan at a comparison of row values that bounds it from above: it would read on
    /// to the end of the first column's value.
    fn span(&self, b: &mut Builder) {
        match (self.dialect, self.key) {
            (Dialect::Postgres, [prefix @ .., last]) if !prefix.is_empty() => {
                for (i, column) in prefix.iter().enumerate() {
                    b.push(&format!("{} = ", quote(&column.name)));
                    self.value(b, Bind::After(i), column);
                    b.push(" AND ");
                }
                let i = prefix.len();
                b.push(&format!("{} >= ", quote(&last.name)));
                self.value(b, Bind::After(i), last);
                b.push(&format!(" AND {} <= ", quote(&last.name)));
                self.value(b, Bind::End(i), last);
            }
            _ => {
                self.compare(b, ">=", Bind::After);
                b.push(" AND ");
                self.compare(b, "<=", Bind::End);
            }
        }
    }

    /// A key column's value as a parameter, cast to `uuid` on PostgreSQL.
    fn value(&self, b: &mut Builder, bind: Bind, column: &KeyColumn) {
        b.param(bind);
        if self.dialect == Dialect::Postgres && column.kind == KeyKind::Uuid {
            b.push("::uuid");
        }
    }

    /// The condition that a row's key is one of the batch's.
    fn in_batch(&self, b: &mut Builder) {
        match (self.dialect, self.key) {
            (Dialect::Sqlite, [one]) => {
                b.push(&format!(
                    "{} IN (SELECT value FROM json_each(",
                    quote(&one.name)
                ));
                b.param(Bind::Batch);
                b.push("))");
            }
            (Dialect::Sqlite, _) => {
                // Each value cast to its column's type: without an affinity SQLite matches
                // the row value on the first column alone, and reads a whole slice of the
                // index for each batch (17 times slower for 500 keys of two columns).
                let parts: Vec<String> = self
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        let kind = match column.kind {
                            KeyKind::Integer => "INTEGER",
                            KeyKind::Text | KeyKind::Uuid => "TEXT",
                        };
                        format!("CAST(value ->> {i} AS {kind})")
                    })
                    .collect();
                b.push(&format!(
                    "{} IN (SELECT {} FROM json_each(",
                    self.row(),
                    parts.join(", ")
                ));
                b.param(Bind::Batch);
                b.push("))");
            }
            (Dialect::Postgres, [one]) => {
                b.push(&format!("{} = ANY(", quote(&one.name)));
                b.param(Bind::BatchColumn(0));
                b.push(&format!("::{}[])", pg_type(one.kind)));
            }
            (Dialect::Postgres, _) => {
                b.push(&format!("{} IN (SELECT * FROM unnest(", self.row()));
                for (i, column) in self.key.iter().enumerate() {
                    if i > 0 {
                        b.push(", ");
                    }
                    b.param(Bind::BatchColumn(i));
                    b.push(&format!("::{}[]", pg_type(column.kind)));
                }
                b.push("))");
            }
        }
    }
}

/// The PostgreSQL type a key column's values are compared as.
fn pg_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Integer => "bigint",
        KeyKind::Text => "text",
        KeyKind::Uuid => "uuid",
    }
}

/// Accumulates a statement's text and its parameters.
struct Builder {
    dialect: Dialect,
    sql: String,
    binds: Vec<Bind>,
}

impl Builder {
    fn new(dialect: Dialect) -> Builder {
        Builder {
            dialect,
            sql: String::new(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// A placeholder for `bind`: numbered (`?3`, `$3`), the same number each time the same
    /// value is used.
    fn param(&mut self, bind: Bind) {
        let n = match self.binds.iter().position(|b| *b == bind) {
            Some(i) => i + 1,
            None => {
                self.binds.push(bind);
                self.binds.len()
            }
        };
        let sigil = match self.dialect {
            Dialect::Sqlite => '?',
            Dialect::Postgres => '$',
        };
        self.sql.push(sigil);
        self.sql.push_str(&n.to_string());
    }

    /// A fragment of the file, its tokens as parameters.
    fn expr(&mut self, expr: &Expr) {
        for piece in &expr.0 {
            match piece {
                Piece::Sql(sql) => self.push(sql),
                Piece::Param(param) => self.param(Bind::Param(*param)),
            }
        }
    }

    fn finish(self) -> Statement {
        Statement {
            sql: self.sql,
            binds: self.binds,
        }
    }
}

/// `"name"`: the file's names are plain identifiers (no quote to escape), quoted so that a
/// keyword or a capital letter means what the file says.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// `"schema"."table"` or `"table"`.
pub(crate) fn quote_table(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests;
