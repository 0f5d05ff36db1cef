//! Records of the grants an accessor keeps mapped, so that the pins of an accessor that died
//! can be released, as Linux's gntdev releases a dead process's mappings at exit.
//!
//! Each accessor of a domain holds an `flock` on `DIR/domain/N/grants-<id>.lock` for its
//! lifetime and writes one `grants-<id>-<seq>.map` file per live mapping ("r" or "w", then the
//! refs). A lock file that can be locked belongs to a dead accessor: its records are removed,
//! each before its pins are released, so that two reapers never release a pin twice.

use super::grant_table::GrantTable;
use super::run_dir::{lock_file, random_id, try_lock_file, FileLock, RunDir};
use super::SimError;
use crate::platform::{DomId, GrantRef};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One accessor's records in one granting domain; the lock says the accessor is alive.
#[derive(Debug)]
pub(crate) struct MapRecords {
    dir: PathBuf,
    id: u64,
    seq: AtomicU64,
    lock_path: PathBuf,
    _lock: FileLock,
}

impl MapRecords {
    pub(crate) fn create(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let dir = run.domain_dir(domid);
        let id = random_id()?;
        // Locked under a temporary name first: a reaper must never see the lock file unlocked.
        let tmp = dir.join(format!("grants-{id:016x}.new"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| SimError::io("create", &tmp, e))?;
        let lock = lock_file(file, &tmp)?;
        let lock_path = dir.join(format!("grants-{id:016x}.lock"));
        fs::rename(&tmp, &lock_path).map_err(|e| SimError::io("rename", &tmp, e))?;
        Ok(MapRecords {
            dir,
            id,
            seq: AtomicU64::new(0),
            lock_path,
            _lock: lock,
        })
    }

    /// Records a mapping whose refs are pinned; returns the record to remove at unmap. A
    /// record that cannot be written only means the pins could not be reaped after a crash.
    pub(crate) fn record(&self, refs: &[GrantRef], writable: bool) -> Option<PathBuf> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("grants-{:016x}-{seq}.map", self.id));
        let mut text = String::from(if writable { "w" } else { "r" });
        for gref in refs {
            text.push_str(&format!(" {}", gref.0));
        }
        fs::write(&path, text).ok().map(|()| path)
    }
}

impl Drop for MapRecords {
    fn drop(&mut self) {
        // Every mapping holds its granter, hence these records: none is left when this drops.
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Releases the pins of every dead accessor of `domid` (see the module doc).
pub(crate) fn reap_dead(run: &RunDir, domid: DomId, table: &GrantTable) {
    let dir = run.domain_dir(domid);
    for id in accessor_ids(&dir) {
        let lock_path = dir.join(format!("grants-{id}.lock"));
        let Ok(file) = File::open(&lock_path) else {
            continue;
        };
        let Ok(Some(_dead)) = try_lock_file(file, &lock_path) else {
            continue; // alive (or unusable): leave it alone
        };
        for record in records_of(&dir, &id) {
            let Ok(text) = fs::read_to_string(&record) else {
                continue;
            };
            if fs::remove_file(&record).is_err() {
                continue; // another reaper took it
            }
            release(table, &text);
        }
        let _ = fs::remove_file(&lock_path);
    }
}

fn accessor_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("grants-")?
                    .strip_suffix(".lock")?
                    .to_owned(),
            )
        })
        .collect()
}

fn records_of(dir: &Path, id: &str) -> Vec<PathBuf> {
    let prefix = format!("grants-{id}-");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".map"))
        })
        .map(|e| e.path())
        .collect()
}

/// Unpins what one record names; a malformed record releases nothing.
fn release(table: &GrantTable, text: &str) {
    let mut words = text.split_whitespace();
    let writable = match words.next() {
        Some("w") => true,
        Some("r") => false,
        _ => return,
    };
    let refs: Option<Vec<u32>> = words.map(|w| w.parse().ok()).collect();
    for gref in refs.unwrap_or_default() {
        table.unpin(GrantRef(gref), writable);
    }
}
