use super::*;
use crate::migration::declarative::spec::MigrationSpec;

const ORDERS: &str = include_str!("../../../../../../migrations/orders-normalize.toml");

fn plan(text: &str, dialect: Dialect) -> Plan {
    Plan::new(&MigrationSpec::parse(text, "t.toml").unwrap(), dialect)
}

/// One integer key, a schema, and `{now}` used twice.
const ONE_KEY: &str = "table = \"app.customers\"\nkey = { column = \"id\", type = \"integer\" }\n\
    pending = \"v = 1\"\n[set]\nv = \"2\"\nat = \"{now}\"\nnote = \"coalesce(note, {now})\"\n";

/// A UUID key after a text key.
const UUID_KEY: &str = "table = \"t\"\nkey = [{ column = \"tenant\", type = \"text\" }, \
    { column = \"uid\", type = \"uuid\" }]\npending = \"p\"\n[set]\nx = \"1\"\n";

#[test]
fn sqlite_pages_cross_as_one_json_array_in_the_databases_order() {
    let orders = plan(ORDERS, Dialect::Sqlite);
    assert_eq!(
        orders.ordered_page(true, true).sql,
        "SELECT json_group_array(json_array(\"region\", \"order_no\") ORDER BY \"region\", \
         \"order_no\") FROM (SELECT \"region\", \"order_no\" FROM \"orders\" WHERE (\"region\", \
         \"order_no\") > (?1, ?2) AND (\"region\", \"order_no\") < (?3, ?4) ORDER BY \"region\", \
         \"order_no\" LIMIT ?5)"
    );
    assert_eq!(
        orders.page(true, true).sql,
        "SELECT json_group_array(json_array(\"region\", \"order_no\")) FROM (SELECT \"region\", \
         \"order_no\" FROM \"orders\" WHERE (\"region\", \"order_no\") > (?1, ?2) AND \
         (\"region\", \"order_no\") < (?3, ?4) ORDER BY \"region\", \"order_no\" LIMIT ?5)",
        "a page whose order is checked here, once the database orders text by its bytes"
    );
    assert_eq!(
        orders.page(true, true).binds,
        [
            Bind::After(0),
            Bind::After(1),
            Bind::End(0),
            Bind::End(1),
            Bind::Limit
        ]
    );
    assert!(
        !orders.checks_page_order,
        "text is ordered by its collation, unless the database says otherwise"
    );
    let one = plan(ONE_KEY, Dialect::Sqlite);
    assert!(one.checks_page_order);
    assert_eq!(
        one.page(false, false).sql,
        "SELECT json_group_array(\"id\") FROM (SELECT \"id\" FROM \"app\".\"customers\" \
         ORDER BY \"id\" LIMIT ?1)",
        "integer keys: the order is checked, not sorted again"
    );
    assert_eq!(
        one.ordered_page(false, false).sql,
        "SELECT json_group_array(\"id\" ORDER BY \"id\") FROM (SELECT \"id\" FROM \
         \"app\".\"customers\" ORDER BY \"id\" LIMIT ?1)"
    );
    assert_eq!(
        one.count(true, false).sql,
        "SELECT count(*) FROM \"app\".\"customers\" WHERE \"id\" > ?1"
    );
}

#[test]
fn sqlite_batches_are_updated_then_what_is_left_is_read_through_json() {
    let orders = plan(ORDERS, Dialect::Sqlite);
    let valid = "lower(trim(status)) IN ('new', 'paid', 'shipped', 'cancelled') AND \
                 length(trim(currency)) = 3";
    assert_eq!(
        orders.classify.sql,
        format!(
            "SELECT json_group_array(json_array(\"region\", \"order_no\", CASE WHEN \
             (normalized_at IS NULL) THEN CASE WHEN ({valid}) THEN 1 ELSE 2 END ELSE 0 END)) \
             FROM \"orders\" WHERE (\"region\", \"order_no\") IN (SELECT \
             CAST(value ->> 0 AS TEXT), CAST(value ->> 1 AS INTEGER) FROM json_each(?1))"
        )
    );
    assert_eq!(
        orders.update.sql,
        format!(
            "UPDATE \"orders\" SET \"status\" = lower(trim(status)), \"currency\" = \
             upper(trim(currency)), \"normalized_at\" = ?1 WHERE (\"region\", \"order_no\") IN \
             (SELECT CAST(value ->> 0 AS TEXT), CAST(value ->> 1 AS INTEGER) FROM json_each(?2)) \
             AND (normalized_at IS NULL) AND ({valid})"
        )
    );
    assert_eq!(
        orders.settled.sql,
        "SELECT count(*), json_group_array(json_array(\"region\", \"order_no\")) FILTER (WHERE \
         (normalized_at IS NULL) IS NOT TRUE) FROM \"orders\" WHERE (\"region\", \"order_no\") \
         IN (SELECT CAST(value ->> 0 AS TEXT), CAST(value ->> 1 AS INTEGER) FROM json_each(?1))"
    );
    assert_eq!(
        orders.leftover.sql,
        format!(
            "SELECT json_group_array(json_array(\"region\", \"order_no\", CASE WHEN \
             (normalized_at IS NULL) THEN CASE WHEN ({valid}) THEN 1 ELSE 2 END ELSE 0 END)) \
             FROM \"orders\" WHERE (\"region\", \"order_no\") IN (SELECT CAST(value ->> 0 AS \
             TEXT), CAST(value ->> 1 AS INTEGER) FROM json_each(?1)) AND (normalized_at IS NULL)"
        )
    );
    assert_eq!(orders.update.binds, [Bind::Param(Param::Now), Bind::Batch]);
    let one = plan(ONE_KEY, Dialect::Sqlite);
    assert_eq!(
        one.update.sql,
        "UPDATE \"app\".\"customers\" SET \"v\" = 2, \"at\" = ?1, \"note\" = coalesce(note, ?1) \
         WHERE \"id\" IN (SELECT value FROM json_each(?2)) AND (v = 1)",
        "a parameter used twice has one number"
    );
    assert_eq!(
        one.classify.sql,
        "SELECT json_group_array(json_array(\"id\", CASE WHEN (v = 1) THEN 1 ELSE 0 END)) FROM \
         \"app\".\"customers\" WHERE \"id\" IN (SELECT value FROM json_each(?1))"
    );
}

#[test]
fn postgres_reads_keys_as_bigint_or_text_and_batches_as_arrays() {
    let orders = plan(ORDERS, Dialect::Postgres);
    assert_eq!(
        orders.ordered_page(true, false).sql,
        "SELECT coalesce(json_agg(json_build_array(k0, k1) ORDER BY \"region\", \"order_no\"), \
         '[]')::text FROM (SELECT \"region\", \"order_no\", CAST(\"region\" AS text) AS k0, \
         CAST(\"order_no\" AS bigint) AS k1 FROM \"orders\" WHERE (\"region\", \"order_no\") > \
         ($1, $2) ORDER BY \"region\", \"order_no\" LIMIT $3) page",
        "one JSON array, sorted by the columns themselves (their collation)"
    );
    let one = plan(ONE_KEY, Dialect::Postgres);
    assert_eq!(
        one.page(false, false).sql,
        "SELECT coalesce(json_agg(k0), '[]')::text FROM (SELECT \"id\", CAST(\"id\" AS bigint) \
         AS k0 FROM \"app\".\"customers\" ORDER BY \"id\" LIMIT $1) page",
        "integers: the order is checked, not sorted again"
    );
    assert!(one.checks_page_order && !orders.checks_page_order);
    let valid = "lower(trim(status)) IN ('new', 'paid', 'shipped', 'cancelled') AND \
                 length(trim(currency)) = 3";
    let batch = "(\"region\", \"order_no\") IN (SELECT * FROM unnest($2::text[], $3::bigint[]))";
    assert_eq!(
        orders.update.sql,
        format!(
            "WITH migrated AS (UPDATE \"orders\" SET \"status\" = lower(trim(status)), \
             \"currency\" = upper(trim(currency)), \"normalized_at\" = $1 WHERE {batch} AND \
             (normalized_at IS NULL) AND ({valid}) RETURNING CAST(\"region\" AS text) AS k0, \
             CAST(\"order_no\" AS bigint) AS k1) SELECT (SELECT \
             coalesce(json_agg(json_build_array(k0, k1)), '[]') FROM migrated)::text, (SELECT \
             coalesce(json_agg(json_build_array(CAST(\"region\" AS text), CAST(\"order_no\" AS \
             bigint), CASE WHEN (normalized_at IS NULL) THEN CASE WHEN ({valid}) THEN 1 ELSE 2 \
             END ELSE 0 END)), '[]') FROM \"orders\" WHERE {batch} AND (CAST(\"region\" AS \
             text), CAST(\"order_no\" AS bigint)) NOT IN (SELECT k0, k1 FROM migrated))::text"
        ),
        "one statement: the update, the keys it changed and the state of the others"
    );
    assert_eq!(
        orders.update.binds,
        [
            Bind::Param(Param::Now),
            Bind::BatchColumn(0),
            Bind::BatchColumn(1)
        ]
    );
    let one = plan(ONE_KEY, Dialect::Postgres);
    assert_eq!(
        one.classify.sql,
        "SELECT CAST(\"id\" AS bigint), CASE WHEN (v = 1) THEN 1 ELSE 0 END FROM \
         \"app\".\"customers\" WHERE \"id\" = ANY($1::bigint[])"
    );
    let uuid = plan(UUID_KEY, Dialect::Postgres);
    assert_eq!(
        uuid.ordered_page(true, true).sql,
        "SELECT coalesce(json_agg(json_build_array(k0, k1) ORDER BY \"tenant\", \"uid\"), \
         '[]')::text FROM (SELECT \"tenant\", \"uid\", CAST(\"tenant\" AS text) AS k0, \
         CAST(\"uid\" AS text) AS k1 FROM \"t\" WHERE (\"tenant\", \"uid\") > ($1, $2::uuid) \
         AND (\"tenant\", \"uid\") < ($3, $4::uuid) ORDER BY \"tenant\", \"uid\" LIMIT $5) page"
    );
    assert!(
        uuid.update
            .sql
            .contains("IN (SELECT * FROM unnest($1::text[], $2::uuid[]))")
    );
}

#[test]
fn each_fragment_is_prepared_alone_under_its_key() {
    let one = plan(ONE_KEY, Dialect::Postgres);
    let keys: Vec<&str> = one.fragments.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["pending", "set.v", "set.at", "set.note"]);
    assert_eq!(
        one.fragments[3].1.sql,
        "UPDATE \"app\".\"customers\" SET \"note\" = coalesce(note, $1) WHERE 1 = 0"
    );
    assert_eq!(
        one.fragments[0].1.sql,
        "SELECT 1 FROM \"app\".\"customers\" WHERE (v = 1)"
    );
}

#[test]
fn parameters_take_their_values_from_the_execution() {
    let columns = [
        KeyColumn::new("region", KeyKind::Text),
        KeyColumn::new("order_no", KeyKind::Integer),
    ];
    let batch = [
        Key::new([KeyValue::Text("eu".into()), KeyValue::Int(1)]),
        Key::new([KeyValue::Text("us".into()), KeyValue::Int(2)]),
    ];
    let params = [("ws".to_owned(), " ".to_owned())];
    let args = Args {
        now: "2026-01-01T00:00:00Z",
        params: &params,
        after: Some(&batch[0]),
        limit: 10,
        batch: &batch,
        ..Args::default()
    };
    let value = |bind: Bind| bind.value(&args, &columns);
    assert_eq!(
        value(Bind::Param(Param::Named(0))),
        Ok(Value::Text(" ".into()))
    );
    assert_eq!(value(Bind::After(1)), Ok(Value::Int(1)));
    assert_eq!(value(Bind::Limit), Ok(Value::Int(10)));
    assert_eq!(
        value(Bind::Batch),
        Ok(Value::Text("[[\"eu\",1],[\"us\",2]]".into()))
    );
    assert_eq!(
        value(Bind::BatchColumn(0)),
        Ok(Value::Texts(vec!["eu".into(), "us".into()]))
    );
    assert_eq!(value(Bind::BatchColumn(1)), Ok(Value::Ints(vec![1, 2])));
    assert!(value(Bind::End(0)).is_err(), "no end key");
    let wrong = [Key::text("x")];
    let args = Args {
        batch: &wrong,
        ..args
    };
    assert!(Bind::BatchColumn(1).value(&args, &columns).is_err());
}

#[test]
fn sqlite_reads_and_updates_a_batch_as_a_span_of_the_table() {
    let orders = plan(ORDERS, Dialect::Sqlite);
    let span = "(\"region\", \"order_no\") >= (?1, ?2) AND (\"region\", \"order_no\") <= (?3, ?4)";
    assert_eq!(
        orders.span.sql,
        format!(
            "SELECT json_group_array(json_array(\"region\", \"order_no\")), \
             group_concat(\"pending?\", '') FROM (SELECT \"region\", \"order_no\", \
             (normalized_at IS NULL) IS TRUE AS \"pending?\" FROM \"orders\" WHERE {span} \
             ORDER BY \"region\", \"order_no\" LIMIT ?5)"
        ),
        "at most one row more than the batch, whatever its keys"
    );
    assert_eq!(
        orders.span.binds,
        [
            Bind::After(0),
            Bind::After(1),
            Bind::End(0),
            Bind::End(1),
            Bind::Limit
        ]
    );
    let valid = "lower(trim(status)) IN ('new', 'paid', 'shipped', 'cancelled') AND \
                 length(trim(currency)) = 3";
    assert_eq!(
        orders.span_update.sql,
        format!(
            "UPDATE \"orders\" SET \"status\" = lower(trim(status)), \"currency\" = \
             upper(trim(currency)), \"normalized_at\" = ?1 WHERE (\"region\", \"order_no\") >= \
             (?2, ?3) AND (\"region\", \"order_no\") <= (?4, ?5) AND (normalized_at IS NULL) \
             AND ({valid})"
        )
    );
    assert!(
        orders
            .span_leftover
            .sql
            .ends_with("<= (?3, ?4) AND (normalized_at IS NULL)"),
        "{}",
        orders.span_leftover.sql
    );
    let one = plan(ONE_KEY, Dialect::Sqlite);
    assert_eq!(
        one.span.sql,
        "SELECT json_group_array(\"id\"), group_concat(\"pending?\", '') FROM (SELECT \"id\", \
         (v = 1) IS TRUE AS \"pending?\" FROM \"app\".\"customers\" WHERE \"id\" >= ?1 AND \
         \"id\" <= ?2 ORDER BY \"id\" LIMIT ?3)"
    );
    let postgres = plan(ORDERS, Dialect::Postgres);
    assert!(postgres.span.sql.is_empty() && postgres.span_leftover.sql.is_empty());
}

#[test]
fn postgres_updates_a_span_only_when_it_holds_as_many_rows_as_the_batch() {
    let one = plan(ONE_KEY, Dialect::Postgres);
    assert_eq!(
        one.span_update.sql,
        "WITH span AS (SELECT count(*) AS n FROM (SELECT 1 FROM \"app\".\"customers\" WHERE \
         \"id\" >= $1 AND \"id\" <= $2 ORDER BY \"id\" LIMIT $3) s), migrated AS (UPDATE \"app\".\"customers\" \
         SET \"v\" = 2, \"at\" = $4, \"note\" = coalesce(note, $4) WHERE (SELECT n FROM span) = \
         $3 - 1 AND \"id\" >= $1 AND \"id\" <= $2 AND (v = 1) RETURNING CAST(\"id\" AS bigint) \
         AS k0) SELECT (SELECT n FROM span), (SELECT coalesce(json_agg(k0), \
         '[]') FROM migrated)::text, (SELECT coalesce(json_agg(json_build_array(CAST(\"id\" AS \
         bigint), CASE WHEN (v = 1) THEN 1 ELSE 0 END)), '[]') FROM \"app\".\"customers\" WHERE \
         (SELECT n FROM span) = $3 - 1 AND \"id\" >= $1 AND \"id\" <= $2 AND (CAST(\"id\" AS \
         bigint)) NOT IN (SELECT k0 FROM migrated))::text",
        "a count bounded by one row more than the batch gates the update and the read"
    );
    assert_eq!(
        one.span_update.binds,
        [
            Bind::After(0),
            Bind::End(0),
            Bind::Limit,
            Bind::Param(Param::Now)
        ]
    );
    let uuid = plan(UUID_KEY, Dialect::Postgres);
    assert!(
        uuid.span_update
            .sql
            .contains("\"tenant\" = $1 AND \"uid\" >= $2::uuid AND \"uid\" <= $3::uuid AND"),
        "{}",
        uuid.span_update.sql
    );
}
