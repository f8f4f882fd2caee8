//! Record keys: one or more columns of integers, text or UUIDs.
//!
//! The engine never orders keys itself: pages come from the database in its own key order
//! (its collation for text), and the checkpoint remembers keys in the order the database
//! returned them. Keys are only compared for equality, hashed, stored and shown.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A set of keys (or of references to keys) for a batch's bookkeeping, with a fast hash
/// instead of the standard library's SipHash: a batch hashes each of its keys a few times, and
/// the keys are the migration's own table's, not an adversary's.
pub(crate) type KeySet<K = Key> = HashSet<K, foldhash::fast::RandomState>;

/// A map from keys, hashed as a [`KeySet`].
pub(crate) type KeyMap<V> = HashMap<Key, V, foldhash::fast::RandomState>;

/// The type of one key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// A 64-bit integer (`INTEGER`, `BIGINT`).
    Integer,
    /// Text, in the database's collation.
    Text,
    /// A UUID: text in its canonical form on SQLite, `uuid` on PostgreSQL.
    Uuid,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Integer => "integer",
            KeyKind::Text => "text",
            KeyKind::Uuid => "uuid",
        })
    }
}

/// One key column of a migration's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyColumn {
    /// The column's name.
    pub name: String,
    /// Its type.
    pub kind: KeyKind,
}

impl KeyColumn {
    /// A column `name` of `kind`.
    pub fn new(name: impl Into<String>, kind: KeyKind) -> KeyColumn {
        KeyColumn {
            name: name.into(),
            kind,
        }
    }
}

/// One column's value in a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    /// An integer.
    Int(i64),
    /// Text (a UUID travels as its canonical text). A boxed `str` rather than a `String`: no
    /// spare capacity to carry, and the value fits 16 bytes, so that a key holds two inline.
    Text(Box<str>),
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(n) => write!(f, "{n}"),
            KeyValue::Text(text) => f.write_str(text),
        }
    }
}

/// A record's key: one value per key column, in the migration's column order.
///
/// A key of one or two columns holds its values inline (40 bytes), so that an integer key, or
/// a text beside an integer, costs no allocation of its own: keys are cloned into the
/// checkpoint's window and the batch's bookkeeping, and a composite key that spilled to the
/// heap cost a quarter of the client's time in a composite run. It serializes as the bare value
/// (`42`, `"abc"`) and a composite key as an array.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(SmallVec<[KeyValue; 2]>);

impl Key {
    /// A one-column integer key.
    pub fn int(value: i64) -> Key {
        Key(smallvec::smallvec![KeyValue::Int(value)])
    }

    /// A one-column text key.
    pub fn text(value: impl Into<String>) -> Key {
        Key(smallvec::smallvec![KeyValue::Text(
            value.into().into_boxed_str()
        )])
    }

    /// A key of these values, one per key column.
    pub fn new(values: impl IntoIterator<Item = KeyValue>) -> Key {
        Key(values.into_iter().collect())
    }

    /// The values, one per key column.
    pub fn values(&self) -> &[KeyValue] {
        &self.0
    }

    /// The value of a one-column integer key.
    pub fn as_int(&self) -> Option<i64> {
        match self.0.as_slice() {
            [KeyValue::Int(n)] => Some(*n),
            _ => None,
        }
    }

    /// The value of a one-column text (or UUID) key.
    pub fn as_text(&self) -> Option<&str> {
        match self.0.as_slice() {
            [KeyValue::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Reads one line of a keys file (`-f`): one value per key column, separated by commas,
    /// a value in double quotes when it holds a comma or a quote (`""` for a quote), as CSV.
    /// [`Display`](fmt::Display) writes keys this way, so that failures and the audit can be
    /// fed back.
    pub fn parse(line: &str, columns: &[KeyColumn]) -> Result<Key, String> {
        let fields = split_csv(line)?;
        if fields.len() != columns.len() {
            return Err(format!(
                "{} values where the key has {} column{} ({})",
                fields.len(),
                columns.len(),
                if columns.len() == 1 { "" } else { "s" },
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        fields
            .into_iter()
            .zip(columns)
            .map(|(field, column)| match column.kind {
                KeyKind::Integer => {
                    field.trim().parse().map(KeyValue::Int).map_err(|_| {
                        format!("{:?} is not an integer (column {})", field, column.name)
                    })
                }
                KeyKind::Text => Ok(KeyValue::Text(field.into_boxed_str())),
                KeyKind::Uuid => parse_uuid(field.trim())
                    .map(|uuid| KeyValue::Text(uuid.into_boxed_str()))
                    .ok_or_else(|| format!("{:?} is not a UUID (column {})", field, column.name)),
            })
            .collect::<Result<SmallVec<_>, _>>()
            .map(Key)
    }
}

impl From<i64> for Key {
    fn from(value: i64) -> Key {
        Key::int(value)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl fmt::Display for Key {
    /// As a line of a keys file: `42`, `abc`, `7,"Smith, Jr."`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match value {
                KeyValue::Int(n) => write!(f, "{n}")?,
                KeyValue::Text(text) if needs_quotes(text) => {
                    write!(f, "\"{}\"", text.replace('"', "\"\""))?;
                }
                KeyValue::Text(text) => f.write_str(text)?,
            }
        }
        Ok(())
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(KeyValue),
            Many(Vec<KeyValue>),
        }
        Ok(match Repr::deserialize(deserializer)? {
            Repr::One(value) => Key(smallvec::smallvec![value]),
            Repr::Many(values) => Key(values.into_iter().collect()),
        })
    }
}

fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text.contains([',', '"', '\n', '\r'])
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
        || text.starts_with('#')
}

/// The fields of one CSV line.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted value is not closed".to_owned()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a quoted value")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// `text` as a canonical (lowercase, hyphenated) UUID, if it is one.
fn parse_uuid(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    let canonical_dashes = text.len() == 36
        && text
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    if text.len() != 32 && !canonical_dashes {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(kinds: &[KeyKind]) -> Vec<KeyColumn> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| KeyColumn::new(format!("k{i}"), kind))
            .collect()
    }

    #[test]
    fn keys_of_one_or_two_values_are_held_inline() {
        assert_eq!(std::mem::size_of::<KeyValue>(), 16);
        assert_eq!(std::mem::size_of::<Key>(), 40);
        let composite = Key::new([KeyValue::Text("eu".into()), KeyValue::Int(7)]);
        assert!(!composite.0.spilled());
        let wide = Key::new([KeyValue::Int(1), KeyValue::Int(2), KeyValue::Int(3)]);
        assert!(wide.0.spilled());
        assert_eq!(wide.values().len(), 3);
    }

    #[test]
    fn keys_read_back_what_they_write() {
        let cols = columns(&[KeyKind::Integer, KeyKind::Text]);
        for key in [
            Key::new([KeyValue::Int(7), KeyValue::Text("Smith, Jr.".into())]),
            Key::new([KeyValue::Int(-1), KeyValue::Text("say \"hi\"".into())]),
            Key::new([KeyValue::Int(0), KeyValue::Text("".into())]),
            Key::new([KeyValue::Int(3), KeyValue::Text(" padded ".into())]),
        ] {
            let line = key.to_string();
            assert_eq!(Key::parse(&line, &cols), Ok(key), "{line}");
        }
        assert_eq!(Key::int(42).to_string(), "42");
        assert_eq!(
            Key::parse("42", &columns(&[KeyKind::Integer])),
            Ok(Key::int(42))
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cols = columns(&[KeyKind::Integer, KeyKind::Text]);
        assert!(Key::parse("1", &cols).unwrap_err().contains("1 values"));
        assert!(
            Key::parse("x,a", &cols)
                .unwrap_err()
                .contains("not an integer")
        );
        assert!(
            Key::parse("1,\"open", &cols)
                .unwrap_err()
                .contains("not closed")
        );
        let uuid = columns(&[KeyKind::Uuid]);
        assert!(
            Key::parse("not-a-uuid", &uuid)
                .unwrap_err()
                .contains("UUID")
        );
        assert_eq!(
            Key::parse("0B9E4F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B", &uuid),
            Ok(Key::text("0b9e4f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"))
        );
    }

    #[test]
    fn keys_serialize_as_a_value_or_an_array() {
        assert_eq!(serde_json::to_string(&Key::int(5)).unwrap(), "5");
        assert_eq!(serde_json::to_string(&Key::text("a")).unwrap(), "\"a\"");
        let composite = Key::new([KeyValue::Text("eu".into()), KeyValue::Int(9)]);
        let json = serde_json::to_string(&composite).unwrap();
        assert_eq!(json, "[\"eu\",9]");
        assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), composite);
        assert_eq!(serde_json::from_str::<Key>("5").unwrap(), Key::int(5));
    }
}
