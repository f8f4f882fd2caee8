//! The JSON forms in which keys and row states cross from the database in one value: a page of
//! keys, or a batch's rows (SQLite always; PostgreSQL for a batch's outcome).

use std::collections::HashMap;

use crate::database::{DbError, protocol};
use crate::migration::key::{Key, KeyColumn, KeyKind, KeyValue};

use super::sql::Plan;

/// A key from its JSON form: a value for one column, an array for several.
pub(super) fn key_from_json(
    value: serde_json::Value,
    columns: &[KeyColumn],
) -> Result<Key, String> {
    match (columns, value) {
        ([_], value) => key_from_values(std::iter::once(value), columns),
        (_, serde_json::Value::Array(values)) => key_from_values(values, columns),
        (_, value) => Err(format!("{value} is not a key of {} columns", columns.len())),
    }
}

/// A key from the JSON values of its columns (text is moved into the key, not copied).
pub(super) fn key_from_values(
    values: impl IntoIterator<Item = serde_json::Value, IntoIter: ExactSizeIterator>,
    columns: &[KeyColumn],
) -> Result<Key, String> {
    let values = values.into_iter();
    if values.len() != columns.len() {
        return Err(format!(
            "{} values for a key of {} columns",
            values.len(),
            columns.len()
        ));
    }
    columns
        .iter()
        .zip(values)
        .map(|(column, value)| match (column.kind, value) {
            (KeyKind::Integer, serde_json::Value::Number(n)) if n.is_i64() => {
                Ok(KeyValue::Int(n.as_i64().expect("checked")))
            }
            (KeyKind::Text | KeyKind::Uuid, serde_json::Value::String(text)) => {
                Ok(KeyValue::Text(text))
            }
            (kind, value) => Err(format!(
                "key column {} holds {value}, which is not {kind}",
                column.name
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Key::new)
}

/// Whether `value`, a key in the JSON form of a page (see [`key_from_json`]), is `key`.
pub(super) fn is_key(value: &serde_json::Value, key: &Key, columns: &[KeyColumn]) -> bool {
    let values = match (columns, value) {
        ([_], _) => std::slice::from_ref(value),
        (_, serde_json::Value::Array(values)) => values.as_slice(),
        _ => return false,
    };
    values.len() == key.values().len()
        && values
            .iter()
            .zip(key.values())
            .all(|(value, column)| match (value, column) {
                (serde_json::Value::Number(n), KeyValue::Int(i)) => n.as_i64() == Some(*i),
                (serde_json::Value::String(s), KeyValue::Text(t)) => s == t,
                _ => false,
            })
}

/// A page's keys from a JSON array of keys (see [`key_from_json`]), in the order of the array:
/// the database's (see `sql::Gen::page`).
pub(super) fn keys_from_page(
    json: &str,
    plan: &Plan,
    doing: &'static str,
) -> Result<Vec<Key>, DbError> {
    let values: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| protocol(doing, e))?;
    values
        .into_iter()
        .map(|value| key_from_json(value, &plan.key).map_err(|e| protocol(doing, e)))
        .collect()
}

/// Row states by key from `[[k1, k2, state], ...]`.
pub(super) fn states(
    json: &str,
    plan: &Plan,
    doing: &'static str,
) -> Result<HashMap<Key, i64>, DbError> {
    let rows: Vec<Vec<serde_json::Value>> =
        serde_json::from_str(json).map_err(|e| protocol(doing, e))?;
    rows.into_iter()
        .map(|mut key| {
            let state = key.pop().ok_or_else(|| protocol(doing, "an empty row"))?;
            let key = key_from_values(key, &plan.key).map_err(|e| protocol(doing, e))?;
            let state = state
                .as_i64()
                .ok_or_else(|| protocol(doing, format!("state {state}")))?;
            Ok((key, state))
        })
        .collect()
}

/// Keys from `[[k1, k2], ...]`.
pub(super) fn keys_from_json<C: FromIterator<Key>>(
    json: &str,
    plan: &Plan,
    doing: &'static str,
) -> Result<C, DbError> {
    let rows: Vec<Vec<serde_json::Value>> =
        serde_json::from_str(json).map_err(|e| protocol(doing, e))?;
    rows.into_iter()
        .map(|row| key_from_values(row, &plan.key).map_err(|e| protocol(doing, e)))
        .collect()
}
