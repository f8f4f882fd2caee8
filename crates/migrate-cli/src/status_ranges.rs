//! The key ranges of distributed migrations in `db-migrate status`: how many are done, leased
//! and pending, which processes hold them, and (with NAME) every range not yet done.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use migrate_core::distributed::ranges::{self, Overview, RangeRow};
use migrate_core::sqlx::PgPool;
use migrate_core::thousands;

/// Ranges not done listed for one migration, at most.
const LISTED: usize = 20;

/// The ranges of one migration.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Ranges {
    migration: String,
    overview: Overview,
    ranges: Vec<RangeRow>,
}

/// The ranges of `migrations` that were split for distributed mode (none from other
/// migrations, or when the table cannot be read: status shows what it can).
pub(crate) async fn read(pool: &PgPool, migrations: &[String]) -> Vec<Ranges> {
    let mut found = Vec::new();
    for migration in migrations {
        let Ok(Some(overview)) = ranges::overview(pool, migration).await else {
            continue;
        };
        let ranges = ranges::list(pool, migration).await.unwrap_or_default();
        found.push(Ranges {
            migration: migration.clone(),
            overview,
            ranges,
        });
    }
    found
}

/// As text: one paragraph per migration; every range not done when `detail`.
pub(crate) fn render(out: &mut String, all: &[Ranges], detail: bool) {
    for r in all {
        let o = &r.overview;
        let _ = writeln!(
            out,
            "\nKey ranges of {}: {}/{} done, {} leased, {} pending; {} process{} holding \
             leases; {} records handled",
            r.migration,
            o.done,
            o.total(),
            o.leased,
            o.pending,
            o.processes,
            if o.processes == 1 { "" } else { "es" },
            thousands(o.rows_done),
        );
        let mut holders: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for range in r.ranges.iter().filter(|range| range.state == "leased") {
            let entry = holders
                .entry(range.holder.as_deref().unwrap_or("?"))
                .or_insert((0, f64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(range.heartbeat_age.unwrap_or(f64::MAX));
        }
        for (holder, (count, age)) in &holders {
            let _ = writeln!(
                out,
                "  process {holder}: {count} range{}, heartbeat {age:.1} s ago",
                if *count == 1 { "" } else { "s" }
            );
        }
        if detail {
            for range in r.ranges.iter().filter(|r| r.state != "done").take(LISTED) {
                let _ = writeln!(
                    out,
                    "  range {:>4} {:<9} {} generation {}, {} records{}",
                    range.id,
                    range.state,
                    range.scope,
                    range.generation,
                    thousands(range.rows_done.max(0) as u64),
                    range
                        .holder
                        .as_deref()
                        .map(|h| format!(", by {h}"))
                        .unwrap_or_default(),
                );
            }
        }
    }
}

/// The status JSON `text` (an array of migrations) with a `ranges` object added to each
/// migration that has ranges: `overview` and `ranges`. Unchanged when none has.
pub(crate) fn add_json(text: String, all: &[Ranges]) -> String {
    if all.is_empty() {
        return text;
    }
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    if let Some(migrations) = value.as_array_mut() {
        for m in migrations {
            let name = m["migration"].as_str().map(str::to_owned);
            if let Some(r) = all.iter().find(|r| Some(&r.migration) == name.as_ref()) {
                m["ranges"] = serde_json::json!({
                    "overview": r.overview,
                    "ranges": r.ranges,
                });
            }
        }
    }
    let trailing = if text.ends_with('\n') { "\n" } else { "" };
    format!("{value}{trailing}")
}
