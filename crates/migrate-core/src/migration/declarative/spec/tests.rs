use super::*;

const ORDERS: &str = include_str!("../../../../../../migrations/orders-normalize.toml");
const CUSTOMERS: &str = include_str!("../../../../../../migrations/customer-split.toml");

/// The problem `text` (as `orders.toml`) has, as a message.
fn error(text: &str) -> String {
    let error = MigrationSpec::parse(text, "migrations/orders.toml").unwrap_err();
    assert!(
        matches!(error, SpecError::Invalid { .. } | SpecError::Syntax { .. }),
        "{error:?}"
    );
    error.to_string()
}

/// A small valid file, with `extra` lines at the top and `[set]` last.
fn file(extra: &str) -> String {
    format!(
        "{extra}\ntable = \"orders\"\nkey = [{{ column = \"id\", type = \"integer\" }}]\n\
         pending = \"done = 0\"\n[set]\ndone = \"1\"\n"
    )
}

#[test]
fn the_example_files_read() {
    let orders = MigrationSpec::parse(ORDERS, "migrations/orders-normalize.toml").unwrap();
    assert_eq!(orders.name(), "orders-normalize");
    assert_eq!(
        orders.key,
        [
            KeyColumn::new("region", KeyKind::Text),
            KeyColumn::new("order_no", KeyKind::Integer)
        ]
    );
    assert_eq!(orders.noun, Noun::new("order", "orders"));
    assert_eq!(orders.batch_size, Some(500));
    let columns: Vec<&str> = orders.common.set.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        columns,
        ["status", "currency", "normalized_at"],
        "the file's order"
    );

    let customers = MigrationSpec::parse(CUSTOMERS, "customer-split.toml").unwrap();
    assert_eq!(
        customers.params,
        [("ws".to_owned(), crate::customer::sql::WHITESPACE.to_owned())],
        "the file trims what the built-in migration trims"
    );
}

#[test]
fn the_name_defaults_to_the_file_stem() {
    let spec = MigrationSpec::parse(&file(""), "dir/tidy-orders.toml").unwrap();
    assert_eq!(spec.name(), "tidy-orders");
    assert_eq!(spec.noun, Noun::new("record", "records"));
    let spec = MigrationSpec::parse(&file("name = \"other\""), "dir/tidy-orders.toml").unwrap();
    assert_eq!(spec.name(), "other");
}

#[test]
fn each_problem_names_the_file_the_key_and_what_is_wrong() {
    let cases = [
        (
            file("tabel = \"x\""),
            "migrations/orders.toml, line 1: `tabel`: unknown key; did you mean `table`?",
        ),
        (
            "key = [{ column = \"id\", type = \"integer\" }]\npending = \"a\"\n[set]\na = \"1\"\n"
                .to_owned(),
            "migrations/orders.toml: `table`: missing: the table to migrate",
        ),
        (
            file("").replace(
                "key = [{ column = \"id\", type = \"integer\" }]",
                "key = []",
            ),
            "migrations/orders.toml, line 3: `key`: is empty",
        ),
        (
            file("").replace("\"integer\"", "\"int\""),
            "line 3: `key[1].type`: \"int\" is not a key type: integer, text or uuid",
        ),
        (
            file("").replace("\"orders\"", "\"orders; DROP TABLE x\""),
            "line 2: `table`: \"orders; DROP TABLE x\" is not a plain table name",
        ),
        (
            file("").replace("column = \"id\"", "column = \"order-no\""),
            "`key[1].column`: \"order-no\" is not a plain column name",
        ),
        (
            file("").replace("done = \"1\"", "\"first-name\" = \"1\""),
            "line 6: `set.first-name`: a column's name is letters",
        ),
        (
            file("").replace("done = \"1\"", "id = \"1\""),
            "`set.id`: a key column cannot be changed",
        ),
        (
            file("").replace("done = 0", "done = {then}"),
            "line 4: `pending`: {then} is no parameter: the parameters are {now}",
        ),
        (
            file("valid = \"x > 0\""),
            "migrations/orders.toml: `message`: missing: the failure message",
        ),
        (
            file("message = \"bad\""),
            "line 1: `message`: there is no `valid` predicate",
        ),
        (
            file("") + "[sqlite]\npendng = \"x\"",
            "line 8: `sqlite.pendng`: unknown key; did you mean `pending`?",
        ),
        (
            file("").replace("pending = \"done = 0\"\n", ""),
            "`pending`: missing: the predicate that says a row still needs the change",
        ),
        (
            file("name = 5"),
            "line 1: `name`: must be a string, not integer",
        ),
        (
            file("batch-size = 0"),
            "line 1: `batch-size`: 0 is not between 1 and 100000",
        ),
        (
            file("") + "[params]\nnow = \"x\"",
            "line 8: `params.now`: `now` is the run's time",
        ),
        (file("noun = { one = \"order\" }"), "`noun.many`: missing"),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.starts_with("migrations/orders.toml") && message.contains(expected),
            "{message:?} should contain {expected:?}\n{text}"
        );
    }
    let syntax = error("table = ");
    assert!(
        syntax.starts_with("migrations/orders.toml is not valid TOML: "),
        "{syntax}"
    );
    assert!(syntax.contains("line 1"), "{syntax}");
    let unread = MigrationSpec::from_file("/nonexistent/orders.toml").unwrap_err();
    assert!(
        unread
            .to_string()
            .starts_with("cannot read /nonexistent/orders.toml: ")
    );
}

#[test]
fn a_database_section_replaces_what_it_names() {
    let text = file("valid = \"ok\"\nmessage = \"m\"")
        + "[params]\nblank = \" \"\n\
         [postgres]\npending = \"done IS NULL\"\n[postgres.set]\ndone = \"btrim(x, {blank})\"\nextra = \"{now}\"";
    let spec = MigrationSpec::parse(&text, "t.toml").unwrap();
    let sqlite = spec.resolve(Dialect::Sqlite);
    assert_eq!(sqlite.pending.0, "pending");
    assert_eq!(sqlite.set.len(), 1);
    assert_eq!(sqlite.set[0].0, "set.done");
    let postgres = spec.resolve(Dialect::Postgres);
    assert_eq!(postgres.pending.0, "postgres.pending");
    assert_eq!(postgres.valid.as_ref().unwrap().0, "valid");
    let set: Vec<(&str, &str)> = postgres
        .set
        .iter()
        .map(|(k, c, _)| (k.as_str(), *c))
        .collect();
    assert_eq!(
        set,
        [
            ("postgres.set.done", "done"),
            ("postgres.set.extra", "extra")
        ]
    );
    assert_eq!(
        postgres.set[0].2,
        &Expr(vec![
            Piece::Sql("btrim(x, ".into()),
            Piece::Param(Param::Named(0)),
            Piece::Sql(")".into()),
        ])
    );
}

#[test]
fn only_known_names_in_braces_are_parameters() {
    let expr = parse_template("data = '{\"a\": {now}}' || '{}' || {x}", &["x"]).unwrap();
    assert_eq!(
        expr.0,
        [
            Piece::Sql("data = '{\"a\": ".into()),
            Piece::Param(Param::Now),
            Piece::Sql("}' || '{}' || ".into()),
            Piece::Param(Param::Named(0)),
        ]
    );
    assert!(
        parse_template("{y}", &["x"])
            .unwrap_err()
            .contains("{now}, {x}")
    );
}

#[test]
fn identifiers_are_plain() {
    for good in ["a", "_a1", "Orders"] {
        assert!(is_identifier(good), "{good}");
    }
    for bad in ["", "1a", "a-b", "a b", "a\"b", "é"] {
        assert!(!is_identifier(bad), "{bad}");
    }
    assert!(is_table_name("app.orders"));
    assert!(!is_table_name("a.b.c"));
    assert!(!is_table_name(".orders"));
}

#[test]
fn an_expression_cannot_escape_its_place_in_the_statement() {
    let base = "table = \"orders\"\nkey = [{ column = \"id\", type = \"integer\" }]\n";
    // A `)` that closes the batch's restriction would let the update reach other rows.
    let escape = format!("{base}pending = \"v = 1) OR (note IS NULL\"\n[set]\nv = \"2\"\n");
    assert!(error(&escape).contains("`pending`"), "{}", error(&escape));
    assert!(
        error(&escape).contains("closes nothing"),
        "{}",
        error(&escape)
    );
    for (pending, why) in [
        ("v = 1; DELETE FROM orders", "`;`"),
        ("v = 1 --", "comment"),
        ("v = 1 /* x */", "comment"),
        ("(v = 1", "not closed"),
        ("v = 'open", "not closed"),
    ] {
        let text = format!("{base}pending = {pending:?}\n[set]\nv = \"2\"\n");
        assert!(error(&text).contains(why), "{pending}: {}", error(&text));
    }
    // Parentheses and quotes inside literals are the literal's.
    let fine = format!("{base}pending = \"note = ')' AND v IN (1, 2)\"\n[set]\nv = \"'a,b'\"\n");
    MigrationSpec::parse(&fine, "migrations/orders.toml").unwrap();
}

#[test]
fn a_set_expression_assigns_its_own_column_only() {
    let base = "table = \"orders\"\nkey = [{ column = \"id\", type = \"integer\" }]\n\
                pending = \"v = 1\"\n[set]\n";
    let sneaky = format!("{base}email = \"lower(email), id = 0\"\n");
    assert!(
        error(&sneaky).contains("one expression per column"),
        "{}",
        error(&sneaky)
    );
    // Column names match without regard to case: `ID` is the key column `id`.
    let upper = format!("{base}ID = \"id + 1000\"\n");
    assert!(error(&upper).contains("key column"), "{}", error(&upper));
}
