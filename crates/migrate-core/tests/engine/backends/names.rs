//! Names that SQL's text functions and Rust's `str` could read differently: a NUL byte, and
//! whitespace other than the ASCII space.

use migrate_core::{RunOptions, demo_customer};

use super::harness::{TestDb, on_both_backends};

on_both_backends!(
    a_name_with_a_nul_byte_is_malformed,
    unicode_whitespace_is_trimmed_from_names_and_emails,
);

/// The first `n` legacy ids with a well-formed demo name.
fn legacy_ids(n: usize) -> Vec<i64> {
    (1..)
        .filter(|&id| demo_customer(id).schema_version == 1)
        .filter(|&id| migrate_core::split_full_name(&demo_customer(id).full_name).is_ok())
        .take(n)
        .collect()
}

async fn a_name_with_a_nul_byte_is_malformed(db: &TestDb) {
    db.seed(100).await;
    let id = legacy_ids(1)[0];
    if !db.is_sqlite() {
        // PostgreSQL text cannot hold a NUL: such a name never reaches the migration.
        let refused = db.set_text(id, "full_name", "Nul\0Byte, Test").await;
        assert!(refused.is_err(), "PostgreSQL stored a NUL: {refused:?}");
        return;
    }
    // SQLite's substr and instr stop at the NUL: the statement would store last name 'Nul'
    // and an empty first name.
    db.execute(&format!(
        "UPDATE customers SET full_name = 'Nul' || char(0) || 'Byte, Test' WHERE id = {id}"
    ))
    .await
    .unwrap();
    let before = db.dump().await;
    assert_eq!(before[&id].full_name, "Nul\0Byte, Test");

    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(
        db.dump().await[&id],
        before[&id],
        "the row is left as it was"
    );
    let failures = db.failures().await;
    let failure = failures
        .get(&id)
        .expect("the NUL name is recorded as failed");
    assert!(
        failure
            .error
            .contains("malformed full_name: contains a NUL character"),
        "{failure:?}"
    );
    assert_eq!(summary.failed, failures.len() as u64, "{summary:?}");
}

/// Names with whitespace other than the ASCII space, and the (first, last) names they split
/// into: `None` for a name with a part made of whitespace only.
const SPACED: [(&str, Option<(&str, &str)>); 10] = [
    ("Yamada,\u{3000}Taro", Some(("Taro", "Yamada"))),
    (
        "\u{A0}Lovelace\u{A0},\u{A0}Ada\u{A0}",
        Some(("Ada", "Lovelace")),
    ),
    ("Hopper,\tGrace\n", Some(("Grace", "Hopper"))),
    ("Turing\u{2003}, \u{2003}Alan", Some(("Alan", "Turing"))),
    (
        "\u{85}\u{1680}Knuth\u{202F},Donald\u{205F}\u{2028}\u{2029}\u{B}\u{C}\r",
        Some(("Donald", "Knuth")),
    ),
    // Whitespace inside a part is part of the name.
    (
        "de\u{A0}la Cruz ,\u{2009}Juana\u{3000}Inés",
        Some(("Juana\u{3000}Inés", "de\u{A0}la Cruz")),
    ),
    ("Liskov,\u{3000}", None),
    ("\u{A0}\t, Barbara", None),
    ("\u{2003}\u{3000}", None),
    ("\u{200A}, \u{A0}", None),
];

async fn unicode_whitespace_is_trimmed_from_names_and_emails(db: &TestDb) {
    db.seed(200).await;
    let ids = legacy_ids(SPACED.len() + 1);
    for (id, (name, _)) in ids.iter().zip(SPACED) {
        db.set_text(*id, "full_name", name).await.unwrap();
    }
    let email_id = ids[SPACED.len()];
    db.set_text(
        email_id,
        "email",
        "\u{A0}\tAda.Lovelace@Example.COM\u{3000}\u{2003}",
    )
    .await
    .unwrap();
    let before = db.dump().await;

    db.run(&db.config(), RunOptions::default()).await;
    let after = db.dump().await;
    let failures = db.failures().await;
    for (id, (name, split)) in ids.iter().zip(SPACED) {
        let row = &after[id];
        match split {
            Some((first, last)) => {
                assert_eq!(row.schema_version, 2, "{name:?}: {row:?}");
                assert_eq!(row.first_name.as_deref(), Some(first), "{name:?}");
                assert_eq!(row.last_name.as_deref(), Some(last), "{name:?}");
                assert_eq!(row.email, before[id].email.trim().to_lowercase());
            }
            None => {
                assert_eq!(row, &before[id], "{name:?} is left as it was");
                let failure = failures.get(id).expect("recorded as failed");
                assert!(
                    failure.error.contains("malformed full_name"),
                    "{name:?}: {failure:?}"
                );
            }
        }
    }
    assert_eq!(after[&email_id].email, "ada.lovelace@example.com");
}
