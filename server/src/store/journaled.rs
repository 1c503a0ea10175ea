//! The registry's side of the journal (see [`crate::journal`]): every batch written to the
//! registry tree is appended to the journal and synced before sled applies it, and a registry
//! can be rebuilt from the journal alone.
//!
//! Each journaled batch also writes its record number under `mjournal` (a counter beside the
//! others under the `m` prefix), so that on open the journal and the registry can be matched.
//! Records past the registry's number were journaled but not flushed before a crash (with
//! group commit several can be): never acknowledged, they are replayed into sled, which is
//! what the server would have written had it lived. A journal behind the registry has lost
//! records and is refused with the way out.
//!
//! Only the registry tree is journaled. The accounts tree (users, devices, tokens) is not: a
//! rebuilt registry needs its accounts copied from the old store or enrolled again.

use std::path::Path;
use std::sync::PoisonError;

use crate::journal::{self, Journal, Write};

use super::{in_journal, keys, rows};
use super::{Registry, StoreError};

/// The registry key holding the number of the last journaled batch.
pub(super) const JOURNAL_COUNTER: &[u8] = b"mjournal";

/// A batch of writes to the registry tree, journaled and then applied to sled (as
/// [`in_journal::sled_batch`] turns them into sled's writes).
#[derive(Default)]
pub(super) struct JournaledBatch {
    writes: Vec<Write>,
    /// References to fill in once the batch's place in the journal is known: write, byte
    /// offset in its value, and the write whose value it refers to.
    referring: Vec<(usize, usize, usize)>,
}

impl JournaledBatch {
    /// Adds a write; returns its index in the batch.
    pub(super) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> usize {
        self.writes.push((key.into(), Some(value.into())));
        self.writes.len() - 1
    }

    /// Adds a write whose value holds, at byte `at`, a reference to the value of the earlier
    /// write `target`; the journal is where it will be, so it is filled in on appending. The
    /// value has room for it there.
    pub(super) fn insert_referring(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        at: usize,
        target: usize,
    ) {
        let index = self.insert(key, value);
        self.refer(index, at, target);
    }

    /// Makes write `index` hold, at byte `at` of its value, a reference to the value of write
    /// `target` (as [`Self::insert_referring`]; a value may hold several).
    pub(super) fn refer(&mut self, index: usize, at: usize, target: usize) {
        self.referring.push((index, at, target));
    }

    /// Fills in the references, given where each write's value will lie in the journal.
    fn fill_references(&mut self, positions: &[Option<u64>]) -> Result<(), StoreError> {
        for &(index, at, target) in &self.referring {
            let position = positions.get(target).copied().flatten();
            let reference = match (position, self.writes.get(target)) {
                (Some(position), Some((_, Some(value)))) => in_journal::reference(position, value),
                _ => {
                    return Err(StoreError::Inconsistent(format!(
                        "write {index} of a batch refers to write {target}, which has no value"
                    )))
                }
            };
            let room = match self.writes.get_mut(index) {
                Some((_, Some(value))) => value.get_mut(at..at + reference.len()),
                _ => None,
            };
            let Some(room) = room else {
                return Err(StoreError::Inconsistent(format!(
                    "write {index} of a batch has no room for a reference at byte {at}"
                )));
            };
            room.copy_from_slice(&reference);
        }
        Ok(())
    }

    #[allow(dead_code)]
    pub(super) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

fn counter(tree: &sled::Tree) -> Result<u64, StoreError> {
    match tree.get(JOURNAL_COUNTER)? {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                StoreError::Inconsistent("the journal counter is not 8 bytes".to_string())
            })?;
            Ok(u64::from_be_bytes(array))
        }
    }
}

/// Opens the journal of a data directory and brings the registry tree up to it.
pub(super) fn open_journal(
    dir: &Path,
    db: &sled::Db,
    tree: &sled::Tree,
) -> Result<Journal, StoreError> {
    let (mut journal, opened) = Journal::open(dir)?;
    if opened.torn_bytes > 0 {
        tracing::warn!(
            bytes = opened.torn_bytes,
            "the journal ended in a torn record (a crash while appending); it was never acknowledged and is cut off"
        );
    }
    let committed = counter(tree)?;
    let last = journal.last();
    if last > committed {
        let missing = journal.records_after(committed)?;
        tracing::warn!(
            records = missing.len(),
            "the registry lacks the journal's last records (a crash before their flush); they were never acknowledged and are replayed"
        );
        for entry in &missing {
            apply_record(tree, entry)?;
        }
        db.flush().map_err(StoreError::Flush)?;
    } else if last < committed {
        return Err(StoreError::Inconsistent(format!(
            "the journal ends at record {last} but the registry at {committed}: the journal lost records; restore it, or rebuild from it with `server rebuild --data-dir {} --out NEW_DIR` and accept the loss",
            dir.display()
        )));
    }
    if last == 0 && tree.iter().next().is_some() {
        tracing::warn!("the registry holds data from before its journal was kept; a rebuild from the journal would miss it");
    }
    Ok(journal)
}

/// Applies one journaled batch to the tree, atomically, referring to its large rows where
/// they lie in the journal, as the original commit did.
fn apply_record(tree: &sled::Tree, entry: &journal::Located) -> Result<u64, StoreError> {
    let writes = &entry.record.writes;
    tree.apply_batch(in_journal::sled_batch(writes, &entry.value_positions()))?;
    Ok(writes.len() as u64)
}

impl Registry {
    /// Appends the batch to the journal and syncs it, then applies it to the tree. The caller
    /// flushes. A failure of either marks the registry failed.
    pub(super) fn apply_journaled(&self, mut batch: JournaledBatch) -> Result<(), StoreError> {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let number = journal.last() + 1;
        batch.insert(JOURNAL_COUNTER, number.to_be_bytes());
        let positions = journal::value_positions(journal.end(), &batch.writes);
        batch.fill_references(&positions)?;
        // Before the rows are in the tree, so that no read finds a row whose household is not
        // known, and before the journal, so that a batch whose rows cannot be read back is
        // written nowhere.
        self.known_households.note(&batch.writes)?;
        if let Err(error) = journal.append(now_ms(), &batch.writes) {
            if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                tracing::error!(%error, "appending to the journal failed; sync is refused until the server restarts");
            }
            return Err(StoreError::Journal(error));
        }
        let sled_batch = in_journal::sled_batch(&batch.writes, &positions);
        if let Err(error) = self.tree.apply_batch(sled_batch) {
            self.fail("applying a batch", &error);
            return Err(StoreError::Sled(error));
        }
        Ok(())
    }
}

/// A summary of everything in the registry tree, to compare two registries byte for byte: a
/// rebuilt one with its original, say. Rows kept in the journal, and the current revisions
/// household rows refer to, are read and counted as the rows they are, so each is checked
/// against its checksum on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Keys in the tree.
    pub entries: u64,
    /// CRC-32 of every key and value in key order, each with its length in front.
    pub crc32: u32,
}

impl Registry {
    /// The [`Digest`] of the registry tree.
    pub fn digest(&self) -> Result<Digest, StoreError> {
        // Hashed as it is read: a province's registry is more than memory should hold.
        let mut crc = crc32fast::Hasher::new();
        let mut add = |part: &[u8]| {
            crc.update(&(part.len() as u64).to_be_bytes());
            crc.update(part);
        };
        let mut entries = 0u64;
        for entry in self.tree.iter() {
            let (key, stored) = entry?;
            let value = self.rows_in_journal.resolve(&key, stored)?;
            add(&key);
            add(&value);
            // A household row's current revision, where the row refers to.
            let household_rows = match key.first() {
                Some(&keys::HOUSEHOLD) => vec![&value[..]],
                Some(&keys::NEW_HOUSEHOLDS) => rows::new_households_entries(&value)
                    .map_err(Registry::corrupt(&key))?
                    .into_iter()
                    .map(|(_, _, row)| row)
                    .collect(),
                _ => Vec::new(),
            };
            for row in household_rows {
                let (_, current) =
                    rows::decode_household_row(row).map_err(Registry::corrupt(&key))?;
                if let Some(reference) = current {
                    add(&self.rows_in_journal.read_for(&key, &reference)?);
                }
            }
            entries += 1;
        }
        Ok(Digest {
            entries,
            crc32: crc.finalize(),
        })
    }
}

/// What a check read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Journal records read, each checksum checked.
    pub records: u64,
    /// The registry's digest: every entry read, and every row it refers to in the journal.
    pub digest: Digest,
}

/// Reads a data directory's journal and registry whole, checking every checksum: every journal
/// record, and every row the registry keeps in the journal. The journal is the one copy of
/// those rows, so this is how a restored backup, or a disk in doubt, is checked. Opening the
/// registry replays records it lacks, as a server start would.
pub fn check(data_dir: &Path) -> Result<Checked, StoreError> {
    let records = journal::for_each(data_dir, |_| Ok::<(), StoreError>(()))?;
    let registry = Registry::open(data_dir)?;
    Ok(Checked {
        records,
        digest: registry.digest()?,
    })
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// Journal records replayed.
    pub records: u64,
    /// Writes applied.
    pub writes: u64,
    /// The rebuilt registry's digest.
    pub digest: Digest,
}

/// Rebuilds the registry of `data_dir` from its journal alone into `out`, a new or empty
/// directory that becomes a complete data directory (registry and journal). The old registry
/// is not read, so a damaged or deleted sled store does not matter.
pub fn rebuild(data_dir: &Path, out: &Path) -> Result<Rebuilt, StoreError> {
    let not_empty = out
        .read_dir()
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(StoreError::Inconsistent(format!(
            "{} is not empty: rebuild into a new directory",
            out.display()
        )));
    }
    // The whole journal is checked before anything is written, one record at a time: a
    // province's journal need not fit in memory.
    let records = journal::for_each(data_dir, |_| Ok::<(), StoreError>(()))?;
    let target = Journal::path_in(out);
    let io = |source| {
        StoreError::Journal(journal::JournalError::Io {
            path: target.clone(),
            error: source,
        })
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::copy(Journal::path_in(data_dir), &target).map_err(io)?;
    let open_error = |source| StoreError::Open {
        path: out.to_path_buf(),
        error: source,
    };
    let mut writes = 0u64;
    {
        let db = sled::Config::new()
            .path(out)
            .cache_capacity(super::CACHE_BYTES)
            .open()
            .map_err(open_error)?;
        let tree = db.open_tree("registry").map_err(open_error)?;
        // Replayed from the copy: the references it writes point into the copy's bytes.
        journal::for_each(out, |entry| {
            writes += apply_record(&tree, &entry)?;
            Ok::<(), StoreError>(())
        })?;
        db.flush().map_err(StoreError::Flush)?;
    }
    // Opening it checks that the journal and the rebuilt registry match. sled's background
    // threads may hold the database's lock for a moment after the last handle is dropped.
    let mut tries = 0;
    let digest = loop {
        match Registry::open(out) {
            Ok(registry) => break registry.digest()?,
            Err(StoreError::Open { error: source, .. })
                if tries < 400 && source.to_string().contains("could not acquire lock") =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(error) => return Err(error),
        }
    };
    Ok(Rebuilt {
        records,
        writes,
        digest,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Opens a registry, waiting while sled's threads release the previous handle's lock.
    pub(in crate::store) fn open(dir: &Path) -> Result<Registry, StoreError> {
        when_unlocked(|| Registry::open(dir))
    }

    /// Runs `open` until it does not fail on sled's lock: sled's background threads may hold
    /// the database's lock for a moment after the last handle in this process is dropped.
    pub(crate) fn when_unlocked<T, E: std::fmt::Display>(
        open: impl Fn() -> Result<T, E>,
    ) -> Result<T, E> {
        for _ in 0..400 {
            match open() {
                Err(error) if error.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
        open()
    }

    fn record(n: u64) -> Vec<Write> {
        vec![
            (format!("zkey{n}").into_bytes(), Some(vec![n as u8; 10])),
            (JOURNAL_COUNTER.to_vec(), Some(n.to_be_bytes().to_vec())),
        ]
    }

    #[test]
    fn records_the_registry_lacks_are_replayed_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(open(dir.path()).expect("a new registry"));
        // Three commits journaled, none flushed into sled before the crash.
        let (mut journal, _) = Journal::open(dir.path()).expect("journal");
        for n in 1..=3 {
            journal.append(0, &record(n)).expect("append");
        }
        drop(journal);
        let registry = open(dir.path()).expect("reopen replays");
        assert_eq!(counter(&registry.tree).expect("counter"), 3);
        assert!(registry.tree.get(b"zkey2").expect("read").is_some());
        drop(registry);
        let registry = open(dir.path()).expect("reopen again");
        assert_eq!(counter(&registry.tree).expect("counter"), 3);
    }

    #[test]
    fn a_journal_behind_the_registry_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(open(dir.path()).expect("a new registry"));
        let (mut journal, _) = Journal::open(dir.path()).expect("journal");
        journal.append(0, &record(1)).expect("append");
        drop(journal);
        drop(open(dir.path()).expect("replayed"));
        // The journal loses its record: the registry is ahead of it.
        std::fs::write(Journal::path_in(dir.path()), b"HOJRNL01").expect("truncate");
        assert!(matches!(open(dir.path()), Err(StoreError::Inconsistent(_))));
    }

    /// Checks a directory, waiting while sled's threads release the previous handle's lock.
    fn check_waiting(dir: &Path) -> Result<Checked, StoreError> {
        for _ in 0..400 {
            match check(dir) {
                Err(StoreError::Open { error: source, .. })
                    if source.to_string().contains("could not acquire lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
        check(dir)
    }

    #[test]
    fn a_check_reads_every_record_and_reports_damage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open(dir.path()).expect("a new registry");
        for n in 1..=3u8 {
            let mut batch = JournaledBatch::default();
            batch.insert(
                keys::revision(uuid::Uuid::from_u128(u128::from(n)), 1),
                vec![2; 300],
            );
            registry.apply_journaled(batch).expect("commit");
        }
        registry.flush().expect("flush");
        let digest = registry.digest().expect("digest");
        drop(registry);
        let checked = check_waiting(dir.path()).expect("a healthy directory checks");
        assert_eq!((checked.records, checked.digest), (3, digest));

        // A flipped byte in the first record's row: the registry would only meet it on reading
        // that household, the check meets it at once.
        let path = Journal::path_in(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[8 + 60] ^= 0x01;
        std::fs::write(&path, &bytes).expect("damage");
        match check_waiting(dir.path()) {
            Err(StoreError::Journal(journal::JournalError::Damaged { offset, .. })) => {
                assert_eq!(offset, 8);
            }
            other => panic!("a damaged journal checked as {other:?}"),
        }
    }
}
