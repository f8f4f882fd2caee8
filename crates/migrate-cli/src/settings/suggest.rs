//! "Did you mean ...?": the known name nearest to a misspelt one.

/// How alike two names must be (normalized Damerau-Levenshtein, 1.0 = equal) for the known one
/// to be suggested. 0.6 accepts a dropped, doubled or swapped letter in short keys
/// (`proceses`, `fetch-szie`) and a mangled word in long ones (`customer-migrashun`), while
/// `url` and `mode` are not offered for each other.
const MIN_SIMILARITY: f64 = 0.6;

/// The candidate nearest to `name`, if any is near enough.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let similarity =
                strsim::normalized_damerau_levenshtein(&name, &candidate.to_ascii_lowercase());
            (candidate, similarity)
        })
        .filter(|(_, similarity)| *similarity >= MIN_SIMILARITY)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 4] = ["processes", "max-failures", "retry-attempts", "rate-limit"];

    #[test]
    fn a_typo_finds_its_key() {
        assert_eq!(nearest("proceses", KEYS), Some("processes"));
        assert_eq!(nearest("procceses", KEYS), Some("processes"));
        assert_eq!(nearest("max-failure", KEYS), Some("max-failures"));
        assert_eq!(nearest("RATE-LIMIT", KEYS), Some("rate-limit"));
    }

    #[test]
    fn a_mangled_section_finds_its_section() {
        let sections = [
            "customer-scanner",
            "customer-migrator",
            "customer-migration",
        ];
        assert_eq!(
            nearest("customer-migrashun", sections),
            Some("customer-migration")
        );
        assert_eq!(
            nearest("customer-scaner", sections),
            Some("customer-scanner")
        );
    }

    #[test]
    fn an_unrelated_name_finds_nothing() {
        assert_eq!(nearest("colour", KEYS), None);
        assert_eq!(nearest("url", ["mode"]), None);
    }
}
