//! Checkpoints in a file (`customer-scanner.paging-state-path`), for the simulated backend.
//!
//! The file is a JSON object from `migration/range` to a checkpoint. It is replaced atomically:
//! the new content goes to a temporary file beside it, is synced, and renamed over the old one,
//! so a crash at any point leaves either the old or the new file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::components::component::BoxError;
use crate::engine::checkpoint::{Checkpoint, CheckpointKey};

fn entry(key: &CheckpointKey) -> String {
    format!("{}/{}", key.migration, key.scope())
}

fn read_all(path: &Path) -> Result<BTreeMap<String, Checkpoint>, BoxError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "paging state {} is not a checkpoint file: {e} (remove it, or run with --reset)",
                path.display()
            )
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("while reading paging state {}: {e}", path.display()).into()),
    }
}

/// Every checkpoint in the file, by `migration/scope`.
pub(crate) fn all(path: &Path) -> Result<BTreeMap<String, Checkpoint>, BoxError> {
    read_all(path)
}

/// The checkpoint saved under `key`, if any.
pub(crate) fn load(path: &Path, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError> {
    Ok(read_all(path)?.remove(&entry(key)))
}

/// Saves (`Some`) or forgets (`None`) the checkpoint under `key`, atomically.
pub(crate) fn save(
    path: &Path,
    key: &CheckpointKey,
    checkpoint: Option<&Checkpoint>,
) -> Result<(), BoxError> {
    let mut all = read_all(path)?;
    match checkpoint {
        Some(c) => {
            all.insert(entry(key), c.clone());
        }
        None => {
            if all.remove(&entry(key)).is_none() && !path.exists() {
                return Ok(());
            }
        }
    }
    let context = |e: std::io::Error| -> BoxError {
        format!("while saving paging state {}: {e}", path.display()).into()
    };
    if all.is_empty() {
        // No unfinished run left: no file, so nothing looks like progress to resume.
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(context(e)),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(context)?;
    }
    let temporary = path.with_extension("json.tmp");
    let mut file = fs::File::create(&temporary).map_err(context)?;
    file.write_all(&serde_json::to_vec_pretty(&all)?)
        .map_err(context)?;
    file.sync_all().map_err(context)?;
    fs::rename(&temporary, path).map_err(context)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::checkpoint::KeyRange;

    #[test]
    fn saves_loads_and_clears_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/paging-state.json");
        let key = CheckpointKey::new("customer-migration", KeyRange::ALL, None);
        let other = CheckpointKey::new(
            "customer-migration",
            KeyRange {
                after: Some(crate::Key::int(100)),
                before: None,
            },
            None,
        );
        assert_eq!(load(&path, &key).unwrap(), None);
        let cp = Checkpoint {
            low_water: Some(crate::Key::int(42)),
            done_above: vec![crate::Key::int(50), crate::Key::text("sixty")],
        };
        save(&path, &key, Some(&cp)).unwrap();
        save(&path, &other, Some(&Checkpoint::default())).unwrap();
        assert_eq!(load(&path, &key).unwrap(), Some(cp));
        save(&path, &key, None).unwrap();
        assert_eq!(load(&path, &key).unwrap(), None);
        assert_eq!(load(&path, &other).unwrap(), Some(Checkpoint::default()));
        assert!(!path.with_extension("json.tmp").exists());
        save(&path, &other, None).unwrap();
        assert!(!path.exists(), "no checkpoint left: no file");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "not json").unwrap();
        let key = CheckpointKey::new("m", KeyRange::ALL, None);
        let error = load(&path, &key).unwrap_err().to_string();
        assert!(
            error.contains("state.json") && error.contains("--reset"),
            "{error}"
        );
    }
}
