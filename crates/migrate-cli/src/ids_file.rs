//! `--file`: ids to migrate, one per line.

use std::path::Path;

use crate::exit::CliError;

/// Reads ids: one per line, blank lines and `#` comments skipped, sorted and deduplicated for
/// the scanner (which hands ids out in ascending order). A malformed line is an error naming the
/// file and the line number.
pub fn read(path: &Path) -> Result<Vec<i64>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--file {}: {e}", path.display())))?;
    parse(&text).map_err(|(line, content)| {
        CliError::Usage(format!(
            "--file {}: line {line}: {content:?} is not a record id (an integer)",
            path.display()
        ))
    })
}

fn parse(text: &str) -> Result<Vec<i64>, (usize, String)> {
    let mut ids = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let id = content
            .parse::<i64>()
            .map_err(|_| (index + 1, content.to_owned()))?;
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_blanks_and_comments_sorts_and_dedups() {
        let ids = parse("# header\n42\n\n  7  # seven\n42\n-3\n").unwrap();
        assert_eq!(ids, [-3, 7, 42]);
    }

    #[test]
    fn a_malformed_line_is_named_by_number() {
        assert_eq!(parse("1\n2\nx3\n"), Err((3, "x3".to_owned())));
    }
}
