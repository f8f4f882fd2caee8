//! The JSON forms in which keys and row states cross from the database in one value: a page of
//! keys, or a batch's rows (SQLite always; PostgreSQL for a batch's outcome).
//!
//! They are read straight into [`Key`]s, each value checked against its column's kind as it is
//! read, without building a tree of JSON values first: a page or a batch is read once per
//! batch, and the tree cost an allocation per key of several columns and per value.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, SeqAccess, Unexpected, Visitor};

use crate::database::{DbError, protocol};
use crate::migration::key::{Key, KeyColumn, KeyKind, KeyMap, KeyValue};

/// How one element of a JSON array holds a key.
#[derive(Clone, Copy)]
enum Shape {
    /// As a page holds it: a bare value for one column, an array for several.
    Page,
    /// Always an array of the key's values: `[k1, k2]`.
    Row,
    /// An array of the key's values followed by the row's state: `[k1, k2, state]`.
    WithState,
}

/// One value of `column`, checked against its kind.
#[derive(Clone, Copy)]
struct Column<'c>(&'c KeyColumn);

impl<'de> DeserializeSeed<'de> for Column<'_> {
    type Value = KeyValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<KeyValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Column<'_> {
    type Value = KeyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for key column {}", self.0.kind, self.0.name)
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<KeyValue, E> {
        match self.0.kind {
            KeyKind::Integer => Ok(KeyValue::Int(n)),
            KeyKind::Text | KeyKind::Uuid => Err(E::invalid_type(Unexpected::Signed(n), &self)),
        }
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<KeyValue, E> {
        match i64::try_from(n) {
            Ok(n) => self.visit_i64(n),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(n), &self)),
        }
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<KeyValue, E> {
        match self.0.kind {
            KeyKind::Text | KeyKind::Uuid => Ok(KeyValue::Text(Box::from(text))),
            KeyKind::Integer => Err(E::invalid_type(Unexpected::Str(text), &self)),
        }
    }
}

/// One key in `shape`, with the row's state (0 when the shape holds none).
#[derive(Clone, Copy)]
struct KeySeed<'c> {
    columns: &'c [KeyColumn],
    shape: Shape,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (Key, i64);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(Key, i64), D::Error> {
        match (self.shape, self.columns) {
            (Shape::Page, [column]) => Column(column)
                .deserialize(deserializer)
                .map(|value| (Key::new([value]), 0)),
            _ => deserializer.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (Key, i64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of the {} values of a key", self.columns.len())?;
        if let Shape::WithState = self.shape {
            f.write_str(" and a state")?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(Key, i64), A::Error> {
        // On the stack for the usual two or three columns, moved into the key once read.
        let mut values = smallvec::SmallVec::<[KeyValue; 3]>::new();
        for (i, column) in self.columns.iter().enumerate() {
            match seq.next_element_seed(Column(column))? {
                Some(value) => values.push(value),
                None => return Err(A::Error::invalid_length(i, &self)),
            }
        }
        let mut state = 0;
        if let Shape::WithState = self.shape {
            state = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(self.columns.len(), &self))?;
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            // At least one value more than the key (and state) holds.
            let read = values.len() + usize::from(matches!(self.shape, Shape::WithState));
            return Err(A::Error::invalid_length(read + 1, &self));
        }
        Ok((Key::new(values), state))
    }
}

/// A JSON array of keys in one shape.
struct List<'c>(KeySeed<'c>);

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = Vec<(Key, i64)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = Vec<(Key, i64)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(key) = seq.next_element_seed(self.0)? {
            keys.push(key);
        }
        Ok(keys)
    }
}

/// The keys of the JSON array `json`, each in `shape`, in the array's order.
fn read(
    json: &str,
    columns: &[KeyColumn],
    shape: Shape,
    doing: &'static str,
) -> Result<Vec<(Key, i64)>, DbError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let seed = List(KeySeed { columns, shape });
    let keys = seed
        .deserialize(&mut deserializer)
        .map_err(|e| protocol(doing, e))?;
    deserializer.end().map_err(|e| protocol(doing, e))?;
    Ok(keys)
}

/// A page's keys from a JSON array of keys (a value for one column, an array for several), in
/// the order of the array: the database's (see `sql::Gen::page`).
pub(super) fn keys_from_page(
    json: &str,
    columns: &[KeyColumn],
    doing: &'static str,
) -> Result<Vec<Key>, DbError> {
    let keys = read(json, columns, Shape::Page, doing)?;
    Ok(keys.into_iter().map(|(key, _)| key).collect())
}

/// Row states by key from `[[k1, k2, state], ...]`.
pub(super) fn states(
    json: &str,
    columns: &[KeyColumn],
    doing: &'static str,
) -> Result<KeyMap<i64>, DbError> {
    Ok(read(json, columns, Shape::WithState, doing)?
        .into_iter()
        .collect())
}

/// Keys from `[[k1, k2], ...]`.
pub(super) fn keys_from_json<C: FromIterator<Key>>(
    json: &str,
    columns: &[KeyColumn],
    doing: &'static str,
) -> Result<C, DbError> {
    let keys = read(json, columns, Shape::Row, doing)?;
    Ok(keys.into_iter().map(|(key, _)| key).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_and_number() -> Vec<KeyColumn> {
        vec![
            KeyColumn::new("region", KeyKind::Text),
            KeyColumn::new("order_no", KeyKind::Integer),
        ]
    }

    fn composite(region: &str, n: i64) -> Key {
        Key::new([KeyValue::Text(region.into()), KeyValue::Int(n)])
    }

    #[test]
    fn pages_of_one_column_hold_bare_values_and_of_several_arrays() {
        let ids = [KeyColumn::new("id", KeyKind::Integer)];
        assert_eq!(
            keys_from_page("[3, 1, 2]", &ids, "reading").unwrap(),
            vec![Key::int(3), Key::int(1), Key::int(2)]
        );
        let plan = region_and_number();
        assert_eq!(
            keys_from_page(
                r#"[["eu", 7], ["a \"q\"", 9007199254740993]]"#,
                &plan,
                "reading"
            )
            .unwrap(),
            vec![composite("eu", 7), composite("a \"q\"", 9007199254740993)]
        );
        assert_eq!(
            keys_from_page("[]", &plan, "reading").unwrap(),
            Vec::<Key>::new()
        );
    }

    #[test]
    fn rows_and_states_are_read_by_key() {
        let plan = region_and_number();
        let keys: Vec<Key> = keys_from_json(r#"[["eu", 1], ["us", 2]]"#, &plan, "x").unwrap();
        assert_eq!(keys, vec![composite("eu", 1), composite("us", 2)]);
        let read = states(r#"[["eu", 1, 2], ["us", 2, 3]]"#, &plan, "x").unwrap();
        assert_eq!(
            read,
            KeyMap::from_iter([(composite("eu", 1), 2), (composite("us", 2), 3)])
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_or_count_names_the_column_and_what_was_done() {
        let plan = region_and_number();
        let cases = [
            (
                r#"[[1, 1]]"#,
                "integer `1`, expected text for key column region",
            ),
            (
                r#"[["eu", "7"]]"#,
                "string \"7\", expected integer for key column order_no",
            ),
            (
                r#"[["eu"]]"#,
                "invalid length 1, expected an array of the 2 values",
            ),
            (
                r#"[["eu", 1, 2]]"#,
                "invalid length 3, expected an array of the 2 values",
            ),
            (
                r#"[["eu", 1.5]]"#,
                "floating point `1.5`, expected integer for key column order_no",
            ),
            (r#"[["eu", 1]] x"#, "trailing characters"),
        ];
        for (json, expected) in cases {
            let error = keys_from_page(json, &plan, "reading a page of keys").unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("reading a page of keys") && message.contains(expected),
                "{json}: {message}"
            );
        }
        let error = states(r#"[["eu", 1]]"#, &plan, "classifying").unwrap_err();
        assert!(error.to_string().contains("and a state"), "{error}");
        let ids = [KeyColumn::new("id", KeyKind::Integer)];
        let error = keys_from_page("[18446744073709551615]", &ids, "reading").unwrap_err();
        assert!(
            error.to_string().contains("18446744073709551615"),
            "{error}"
        );
    }
}
