//! `--file`: keys to migrate, one per line.

use std::collections::HashSet;
use std::path::Path;

use migrate_core::{Key, KeyColumn};

use crate::exit::CliError;

/// Reads keys: one per line, in the CSV form the failures and the audit use (`42`, `abc`,
/// `eu,7`; a value in double quotes when it holds a comma), blank lines and lines starting with
/// `#` skipped, a key given twice taken once. The keys are migrated in the file's order. A
/// malformed line is an error naming the file, the line number and what is wrong.
pub fn read(path: &Path, columns: &[KeyColumn]) -> Result<Vec<Key>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--file {}: {e}", path.display())))?;
    parse(&text, columns).map_err(|(line, why)| {
        CliError::Usage(format!("--file {}: line {line}: {why}", path.display()))
    })
}

fn parse(text: &str, columns: &[KeyColumn]) -> Result<Vec<Key>, (usize, String)> {
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.trim_end_matches('\r');
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        // An integer key may carry a trailing comment, as earlier versions allowed.
        let content = match columns {
            [only] if only.kind == migrate_core::KeyKind::Integer => {
                content.split('#').next().unwrap_or("").trim()
            }
            _ => content,
        };
        let key = Key::parse(content, columns)
            .map_err(|why| (index + 1, format!("{content:?}: {why}")))?;
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use migrate_core::KeyKind;

    use super::*;

    fn ids() -> Vec<KeyColumn> {
        vec![KeyColumn::new("id", KeyKind::Integer)]
    }

    #[test]
    fn skips_blanks_and_comments_keeps_the_order_and_takes_each_key_once() {
        let keys = parse("# header\n42\n\n  7  # seven\n42\n-3\n", &ids()).unwrap();
        assert_eq!(keys, [Key::int(42), Key::int(7), Key::int(-3)]);
    }

    #[test]
    fn a_malformed_line_is_named_by_number() {
        let (line, why) = parse("1\n2\nx3\n", &ids()).unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("not an integer"), "{why}");
    }

    #[test]
    fn composite_keys_read_as_csv() {
        let columns = vec![
            KeyColumn::new("region", KeyKind::Text),
            KeyColumn::new("order_no", KeyKind::Integer),
        ];
        let keys = parse("eu,7\n\"us, east\",8\n", &columns).unwrap();
        assert_eq!(keys[1].to_string(), "\"us, east\",8");
        assert!(parse("eu\n", &columns).unwrap_err().1.contains("1 values"));
    }
}
