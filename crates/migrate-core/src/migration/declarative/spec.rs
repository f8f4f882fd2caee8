//! The migration file: read, checked, and kept as the statements' ingredients.
//!
//! Every problem is reported with the file, the line when there is one, the key (`set.email`,
//! `key[2].type`, `postgres.pending`) and what is wrong, so that a person can fix the file
//! without reading the code. The SQL fragments themselves are checked by the database, in
//! [`SqlMigration::check`](crate::Migration::check).

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::migration::Noun;
use crate::migration::key::{KeyColumn, KeyKind};

/// A migration file that cannot be run as it is: what a person must fix before anything runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A key is missing, unknown, or has a value that cannot be used.
    #[error("{file}{}: `{key}`: {problem}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        file: String,
        /// The line of the key, when it is in the file.
        line: Option<usize>,
        /// The key, as a dotted path (`set.email`, `key[2].type`).
        key: String,
        /// What is wrong, and what would be right.
        problem: String,
    },
    /// The run's backend has no tables to migrate.
    #[error("{file}: a migration file runs on SQLite or PostgreSQL, not on the simulated backend")]
    Simulated {
        /// The file.
        file: String,
    },
}

/// A migration declared in a file, read and checked (see [the format](crate::SqlMigration)).
#[derive(Debug, Clone)]
pub struct MigrationSpec {
    /// The file, for messages.
    pub(crate) file: String,
    pub(crate) name: String,
    /// `table` or `schema.table`, as written (each part a plain identifier).
    pub(crate) table: String,
    pub(crate) key: Vec<KeyColumn>,
    pub(crate) noun: Noun,
    /// `[params]`, in the file's order: `{name}` in an expression binds the value.
    pub(crate) params: Vec<(String, String)>,
    /// The failure message of rows that are pending but not valid.
    pub(crate) message: Option<String>,
    pub(crate) batch_size: Option<usize>,
    /// The rules for both databases, then each one's replacements.
    pub(crate) common: Rules,
    pub(crate) sqlite: Rules,
    pub(crate) postgres: Rules,
}

/// `pending`, `set` and `valid`, as given at the top of the file or in `[sqlite]`/`[postgres]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    pub(crate) pending: Option<Expr>,
    /// Assignments in the file's order.
    pub(crate) set: Vec<(String, Expr)>,
    pub(crate) valid: Option<Expr>,
}

/// The rules that apply on one database: the common ones with that database's replacements,
/// each with the key of the file it comes from (`set.email`, `sqlite.pending`).
#[derive(Debug, Clone)]
pub(crate) struct Resolved<'a> {
    pub(crate) pending: (String, &'a Expr),
    /// `(key, column, expression)`, the common assignments first, in the file's order.
    pub(crate) set: Vec<(String, &'a str, &'a Expr)>,
    pub(crate) valid: Option<(String, &'a Expr)>,
}

/// An SQL fragment of the file, cut at its `{parameter}` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expr(pub(crate) Vec<Piece>);

/// A piece of an [`Expr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// SQL text, as written.
    Sql(String),
    /// A bound parameter.
    Param(Param),
}

/// What a `{token}` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Param {
    /// `{now}`: the batch's time, RFC 3339 text in UTC with seconds (`2026-01-02T03:04:05Z`).
    Now,
    /// The `[params]` value of this index.
    Named(usize),
}

/// The two databases a file can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The section of the file with this database's replacements.
    pub(crate) fn section(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "table",
    "key",
    "noun",
    "params",
    "pending",
    "set",
    "valid",
    "message",
    "batch-size",
    "sqlite",
    "postgres",
];
const OVERRIDE_KEYS: &[&str] = &["pending", "set", "valid"];
const KEY_KEYS: &[&str] = &["column", "type"];
const NOUN_KEYS: &[&str] = &["one", "many"];

impl MigrationSpec {
    /// Reads and checks the migration file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<MigrationSpec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            file: path.display().to_string(),
            source,
        })?;
        MigrationSpec::parse(&text, path)
    }

    /// Reads and checks `text`, the content of the migration file `file` (which names it in
    /// messages, and gives the migration its default name).
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<MigrationSpec, SpecError> {
        let file = file.as_ref();
        let reader = Reader {
            file: file.display().to_string(),
            text,
        };
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        reader.read(stem)
    }

    /// The migration's name: `name`, or the file's name without its extension.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rules that apply on `dialect`.
    pub(crate) fn resolve(&self, dialect: Dialect) -> Resolved<'_> {
        let section = dialect.section();
        let own = match dialect {
            Dialect::Sqlite => &self.sqlite,
            Dialect::Postgres => &self.postgres,
        };
        fn pick<'e>(
            section: &str,
            name: &str,
            own: Option<&'e Expr>,
            common: Option<&'e Expr>,
        ) -> Option<(String, &'e Expr)> {
            own.map(|e| (format!("{section}.{name}"), e))
                .or_else(|| common.map(|e| (name.to_owned(), e)))
        }
        let mut set: Vec<(String, &str, &Expr)> = self
            .common
            .set
            .iter()
            .map(
                |(column, expr)| match own.set.iter().find(|(c, _)| c == column) {
                    Some((_, e)) => (format!("{section}.set.{column}"), column.as_str(), e),
                    None => (format!("set.{column}"), column.as_str(), expr),
                },
            )
            .collect();
        for (column, expr) in &own.set {
            if !self.common.set.iter().any(|(c, _)| c == column) {
                set.push((format!("{section}.set.{column}"), column, expr));
            }
        }
        Resolved {
            pending: pick(
                section,
                "pending",
                own.pending.as_ref(),
                self.common.pending.as_ref(),
            )
            .expect("checked when read: each database has a pending predicate"),
            set,
            valid: pick(
                section,
                "valid",
                own.valid.as_ref(),
                self.common.valid.as_ref(),
            ),
        }
    }
}

/// Reads one file, and says where its problems are.
struct Reader<'a> {
    file: String,
    text: &'a str,
}

type Entry<'t, 'i> = (
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
);

impl Reader<'_> {
    fn read(&self, stem: String) -> Result<MigrationSpec, SpecError> {
        let document = DeTable::parse(self.text).map_err(|mut error| {
            error.set_input(Some(self.text));
            SpecError::Syntax {
                file: self.file.clone(),
                message: error.to_string().trim_end().to_owned(),
            }
        })?;
        let top = document.get_ref();
        self.known_keys(top, "", TOP_KEYS)?;

        let name = match top.get("name") {
            Some(value) => {
                let name = self.string(value, "name")?;
                if name.trim().is_empty() {
                    return Err(self.invalid(value.span(), "name", "is empty"));
                }
                name.to_owned()
            }
            None if !stem.is_empty() => stem,
            None => return Err(self.missing("name", "the migration's name")),
        };
        let table = match top.get("table") {
            Some(value) => {
                let table = self.string(value, "table")?;
                if !is_table_name(table) {
                    return Err(self.invalid(
                        value.span(),
                        "table",
                        format!(
                            "{table:?} is not a plain table name (letters, digits and `_`, not \
                             starting with a digit; `schema.table` for another schema)"
                        ),
                    ));
                }
                table.to_owned()
            }
            None => return Err(self.missing("table", "the table to migrate")),
        };
        let key = match top.get("key") {
            Some(value) => self.key(value)?,
            None => {
                return Err(self.missing(
                    "key",
                    "the key columns, such as key = [{ column = \"id\", type = \"integer\" }]",
                ));
            }
        };
        let noun = match top.get("noun") {
            Some(value) => self.noun(value)?,
            None => Noun::new("record", "records"),
        };
        let params = match top.get("params") {
            Some(value) => self.params(value)?,
            None => Vec::new(),
        };
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let common = self.rules(top, "", &key, &names)?;
        let mut overrides = Vec::new();
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let section = dialect.section();
            let rules = match top.get(section) {
                Some(value) => {
                    let table = self.table(value, section)?;
                    self.known_keys(table, section, OVERRIDE_KEYS)?;
                    self.rules(table, &format!("{section}."), &key, &names)?
                }
                None => Rules::default(),
            };
            if common.pending.is_none() && rules.pending.is_none() {
                return Err(self.missing(
                    "pending",
                    format!(
                        "the predicate that says a row still needs the change, such as \
                         pending = \"schema_version = 1\" (or one in [{section}])"
                    ),
                ));
            }
            if common.set.is_empty() && rules.set.is_empty() {
                return Err(self.missing(
                    "set",
                    format!(
                        "the assignments that make the change, in a [set] table (or \
                         [{section}.set])"
                    ),
                ));
            }
            overrides.push(rules);
        }
        let postgres = overrides.pop().expect("two sections");
        let sqlite = overrides.pop().expect("two sections");
        let has_valid = [&common, &sqlite, &postgres]
            .iter()
            .any(|rules| rules.valid.is_some());
        let message = match top.get("message") {
            Some(value) if !has_valid => {
                return Err(self.invalid(
                    value.span(),
                    "message",
                    "there is no `valid` predicate whose failures it would describe",
                ));
            }
            Some(value) => Some(self.string(value, "message")?.to_owned()),
            None if has_valid => {
                return Err(self.missing(
                    "message",
                    "the failure message of rows that are pending but not `valid`",
                ));
            }
            None => None,
        };
        let batch_size = match top.get("batch-size") {
            Some(value) => match value.get_ref() {
                DeValue::Integer(n) => match n.as_str().parse::<usize>() {
                    Ok(n) if n > 0 && n <= 100_000 => Some(n),
                    _ => {
                        return Err(self.invalid(
                            value.span(),
                            "batch-size",
                            format!("{} is not between 1 and 100000", n.as_str()),
                        ));
                    }
                },
                other => {
                    return Err(self.wrong_type(value.span(), "batch-size", "an integer", other));
                }
            },
            None => None,
        };
        Ok(MigrationSpec {
            file: self.file.clone(),
            name,
            table,
            key,
            noun,
            params,
            message,
            batch_size,
            common,
            sqlite,
            postgres,
        })
    }

    /// `key`: one table or an array of them, each `{ column, type }`.
    fn key(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<KeyColumn>, SpecError> {
        let items: Vec<(String, &Spanned<DeValue<'_>>)> = match value.get_ref() {
            DeValue::Table(_) => vec![("key".to_owned(), value)],
            DeValue::Array(array) => array
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("key[{}]", i + 1), item))
                .collect(),
            other => {
                return Err(self.wrong_type(
                    value.span(),
                    "key",
                    "an array of { column = ..., type = ... } tables",
                    other,
                ));
            }
        };
        if items.is_empty() {
            return Err(self.invalid(
                value.span(),
                "key",
                "is empty: name at least one key column, such as \
                 [{ column = \"id\", type = \"integer\" }]",
            ));
        }
        let mut columns: Vec<KeyColumn> = Vec::new();
        for (path, item) in items {
            let table = self.table(item, &path)?;
            self.known_keys(table, &path, KEY_KEYS)?;
            let column_path = format!("{path}.column");
            let column = match table.get("column") {
                Some(value) => self.column(value, &column_path)?,
                None => return Err(self.missing(&column_path, "the key column's name")),
            };
            if columns.iter().any(|c| c.name == column) {
                return Err(self.invalid(
                    item.span(),
                    &column_path,
                    format!("{column} is already a key column"),
                ));
            }
            let type_path = format!("{path}.type");
            let kind = match table.get("type") {
                Some(value) => match self.string(value, &type_path)? {
                    "integer" => KeyKind::Integer,
                    "text" => KeyKind::Text,
                    "uuid" => KeyKind::Uuid,
                    other => {
                        return Err(self.invalid(
                            value.span(),
                            &type_path,
                            format!("{other:?} is not a key type: integer, text or uuid"),
                        ));
                    }
                },
                None => {
                    return Err(
                        self.missing(&type_path, "the key column's type: integer, text or uuid")
                    );
                }
            };
            columns.push(KeyColumn::new(column, kind));
        }
        Ok(columns)
    }

    fn noun(&self, value: &Spanned<DeValue<'_>>) -> Result<Noun, SpecError> {
        let table = self.table(value, "noun")?;
        self.known_keys(table, "noun", NOUN_KEYS)?;
        let mut words = Vec::new();
        for word in NOUN_KEYS {
            let path = format!("noun.{word}");
            match table.get(*word) {
                Some(value) => words.push(self.string(value, &path)?.to_owned()),
                None => {
                    return Err(self.missing(
                        &path,
                        "what a record is called, as noun = { one = \"order\", many = \"orders\" }",
                    ));
                }
            }
        }
        let many = words.pop().expect("two words");
        Ok(Noun::new(words.pop().expect("two words"), many))
    }

    fn params(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<(String, String)>, SpecError> {
        let table = self.table(value, "params")?;
        let mut params = Vec::new();
        for (name, value) in in_file_order(table) {
            let path = format!("params.{}", name.get_ref());
            if !is_identifier(name.get_ref()) {
                return Err(self.invalid(
                    name.span(),
                    &path,
                    "a parameter's name is letters, digits and `_`, not starting with a digit",
                ));
            }
            if name.get_ref() == "now" {
                return Err(self.invalid(
                    name.span(),
                    &path,
                    "`now` is the run's time, given by the engine: choose another name",
                ));
            }
            params.push((
                name.get_ref().to_string(),
                self.string(value, &path)?.to_owned(),
            ));
        }
        Ok(params)
    }

    /// `pending`, `set` and `valid` of `table`, whose keys are under `prefix`.
    fn rules(
        &self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &[KeyColumn],
        params: &[&str],
    ) -> Result<Rules, SpecError> {
        let expr = |name: &str| -> Result<Option<Expr>, SpecError> {
            let path = format!("{prefix}{name}");
            table
                .get(name)
                .map(|value| self.expr(value, &path, params))
                .transpose()
        };
        let mut rules = Rules {
            pending: expr("pending")?,
            set: Vec::new(),
            valid: expr("valid")?,
        };
        if let Some(value) = table.get("set") {
            let path = format!("{prefix}set");
            let set = self.table(value, &path)?;
            if set.is_empty() {
                return Err(self.invalid(value.span(), &path, "assigns nothing"));
            }
            for (column, value) in in_file_order(set) {
                let path = format!("{path}.{}", column.get_ref());
                if !is_identifier(column.get_ref()) {
                    return Err(self.invalid(
                        column.span(),
                        &path,
                        "a column's name is letters, digits and `_`, not starting with a digit",
                    ));
                }
                // Both databases match column names without regard to ASCII case.
                if key
                    .iter()
                    .any(|k| k.name.eq_ignore_ascii_case(column.get_ref().as_ref()))
                {
                    return Err(self.invalid(
                        column.span(),
                        &path,
                        "a key column cannot be changed: pages would lose their place",
                    ));
                }
                let expr = self.expr(value, &path, params)?;
                // One expression per column: a comma at the top level would assign more.
                if let Some(problem) = top_level_comma(self.string(value, &path)?) {
                    return Err(self.invalid(value.span(), &path, problem));
                }
                rules.set.push((column.get_ref().to_string(), expr));
            }
        }
        Ok(rules)
    }

    /// An SQL fragment, cut at its `{parameter}` tokens.
    fn expr(
        &self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        params: &[&str],
    ) -> Result<Expr, SpecError> {
        let text = self.string(value, path)?;
        if text.trim().is_empty() {
            return Err(self.invalid(value.span(), path, "is empty"));
        }
        if let Err(problem) = fragment(text) {
            return Err(self.invalid(value.span(), path, problem));
        }
        parse_template(text, params).map_err(|problem| self.invalid(value.span(), path, problem))
    }

    fn column(&self, value: &Spanned<DeValue<'_>>, path: &str) -> Result<String, SpecError> {
        let name = self.string(value, path)?;
        if !is_identifier(name) {
            return Err(self.invalid(
                value.span(),
                path,
                format!(
                    "{name:?} is not a plain column name (letters, digits and `_`, not starting \
                     with a digit)"
                ),
            ));
        }
        Ok(name.to_owned())
    }

    fn string<'v>(
        &self,
        value: &'v Spanned<DeValue<'_>>,
        path: &str,
    ) -> Result<&'v str, SpecError> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text),
            other => Err(self.wrong_type(value.span(), path, "a string", other)),
        }
    }

    fn table<'v, 'i>(
        &self,
        value: &'v Spanned<DeValue<'i>>,
        path: &str,
    ) -> Result<&'v DeTable<'i>, SpecError> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.wrong_type(value.span(), path, "a table", other)),
        }
    }

    /// Fails on the first key of `table` not in `known`, with the nearest known one.
    fn known_keys(
        &self,
        table: &DeTable<'_>,
        prefix: &str,
        known: &[&str],
    ) -> Result<(), SpecError> {
        for (key, _) in in_file_order(table) {
            let key_str: &str = key.get_ref();
            if known.contains(&key_str) {
                continue;
            }
            let path = if prefix.is_empty() {
                key_str.to_owned()
            } else {
                format!("{prefix}.{key_str}")
            };
            let problem = match suggest(key_str, known) {
                Some(near) => format!("unknown key; did you mean `{near}`?"),
                None => format!(
                    "unknown key; expected one of {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(self.invalid(key.span(), &path, problem));
        }
        Ok(())
    }

    fn wrong_type(
        &self,
        span: Range<usize>,
        path: &str,
        expected: &str,
        found: &DeValue<'_>,
    ) -> SpecError {
        self.invalid(
            span,
            path,
            format!("must be {expected}, not {}", found.type_str()),
        )
    }

    fn invalid(&self, span: Range<usize>, key: &str, problem: impl Into<String>) -> SpecError {
        let start = span.start.min(self.text.len());
        SpecError::Invalid {
            file: self.file.clone(),
            line: Some(self.text[..start].matches('\n').count() + 1),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn missing(&self, key: &str, what: impl std::fmt::Display) -> SpecError {
        SpecError::Invalid {
            file: self.file.clone(),
            line: None,
            key: key.to_owned(),
            problem: format!("missing: {what}"),
        }
    }
}

/// The entries of `table` in the order the file gives them (a TOML table is read sorted).
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<Entry<'t, 'i>> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// The known key nearest to `key`, when one is near enough to be a typo of it.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name that is the same quoted or not, on both databases.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An identifier, or two joined by a dot (`schema.table`).
fn is_table_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((schema, table)) => is_identifier(schema) && is_identifier(table),
        None => is_identifier(name),
    }
}

/// Checks that `text` is one self-contained SQL fragment, as the statements it is pasted into
/// need: its parentheses balance outside string literals and quoted names, and it has no `;`
/// and no comment (a `)` or a `--` could otherwise close or hide the batch's own restriction,
/// and the update would reach rows outside the batch). Returns what is wrong.
fn fragment(text: &str) -> Result<(), String> {
    let mut depth = 0i32;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // A literal or a quoted name runs to its closing quote; doubled quotes escape.
                loop {
                    match chars.next() {
                        Some(q) if q == c => {
                            if chars.peek() == Some(&c) {
                                chars.next();
                            } else {
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return Err(format!("a {c} is not closed")),
                    }
                }
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(
                        "has a `)` that closes nothing: an expression must stand on its \
                                own"
                        .to_owned(),
                    );
                }
            }
            ';' => return Err("has a `;`: one expression, not statements".to_owned()),
            '-' if chars.peek() == Some(&'-') => {
                return Err(
                    "has an SQL comment (`--`): write comments in the file with `#`".to_owned(),
                );
            }
            '/' if chars.peek() == Some(&'*') => {
                return Err(
                    "has an SQL comment (`/*`): write comments in the file with `#`".to_owned(),
                );
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("has a `(` that is not closed".to_owned());
    }
    Ok(())
}

/// A problem when a `set` expression has a comma outside parentheses and quotes: it would
/// assign other columns (a key among them) than the one it is written for.
fn top_level_comma(text: &str) -> Option<&'static str> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                return Some("has a comma outside parentheses: one expression per column");
            }
            _ => {}
        }
    }
    None
}

/// `text` cut at its `{name}` tokens: `{now}` or a `[params]` name. Braces that do not
/// enclose an identifier (a JSON literal, `'{"a": 1}'`) are SQL text.
fn parse_template(text: &str, params: &[&str]) -> Result<Expr, String> {
    let mut pieces = Vec::new();
    let mut sql = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let token = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| is_identifier(name));
        let Some(name) = token else {
            sql.push_str(&rest[..=open]);
            rest = after;
            continue;
        };
        let param = if name == "now" {
            Param::Now
        } else if let Some(i) = params.iter().position(|p| *p == name) {
            Param::Named(i)
        } else {
            let known: Vec<String> = std::iter::once("now")
                .chain(params.iter().copied())
                .map(|p| format!("{{{p}}}"))
                .collect();
            return Err(format!(
                "{{{name}}} is no parameter: the parameters are {} (declare others in [params])",
                known.join(", ")
            ));
        };
        sql.push_str(&rest[..open]);
        if !sql.is_empty() {
            pieces.push(Piece::Sql(std::mem::take(&mut sql)));
        }
        pieces.push(Piece::Param(param));
        rest = &after[name.len() + 1..];
    }
    sql.push_str(rest);
    if !sql.is_empty() {
        pieces.push(Piece::Sql(sql));
    }
    Ok(Expr(pieces))
}

#[cfg(test)]
mod tests;
