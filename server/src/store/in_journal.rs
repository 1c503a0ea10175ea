//! Large rows are kept in the journal only; sled holds a reference to them.
//!
//! Every batch is appended to the journal before sled applies it, so the journal already holds
//! every row the registry writes. For the large kinds (revisions, classifications, conflicts,
//! rejected mutations, runs of outcomes: see [`kept_in_journal`]) sled stores a 17-byte
//! reference instead of a second copy of the row: the tag [`REFERENCE`], the row's offset in
//! the journal file (u64),
//! its length (u32) and its CRC-32 (u32), big-endian. Reads follow the reference with one
//! positional read and check the checksum, so a journal restored from elsewhere or damaged
//! under a row is reported as a damaged row, never read as another one.
//!
//! Why: a second copy costs more than the first. sled keeps about three bytes on disk for every
//! live byte (its log segments are cleaned only below half live), and about 240 bytes for every
//! entry however small, so rows of about a kilobyte a household made the registry about nine
//! times the size of the records it holds. With the references, sled holds keys, small rows and
//! references, and the journal one copy of each large row. sled is an index that the journal can always rebuild; a damaged sled store still
//! costs only a rebuild (`server rebuild`).
//!
//! A household's current revision is not a sled entry at all: it is written under a key only
//! the journal holds ([`only_in_journal`]), and the household row ends with the reference to
//! it, filled in when the batch is appended (`JournaledBatch::insert_referring`). When a later
//! revision supersedes it, the reference moves into an `r` row as it is.
//!
//! A reference depends only on where the record lies in the journal, so a replay (on open, or
//! a rebuild, which copies the journal first) writes the same references as the original
//! commit. A row starts with its format byte (1 to 3) and never with [`REFERENCE`], so rows
//! written inline before references existed are still read as they are.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::journal::{self, Write};

use super::keys;
use super::{RowError, StoreError};

/// The first byte of a reference; no row format starts with it.
pub(super) const REFERENCE: u8 = 0xFE;
pub(super) const REFERENCE_LEN: usize = 17;

/// A row's place in the journal: [`REFERENCE`], offset, length, CRC-32.
pub(super) type Reference = [u8; REFERENCE_LEN];

/// Whether rows under this key are kept in the journal (sled holding a reference).
pub(super) fn kept_in_journal(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(
            &(keys::REVISION
                | keys::CLASSIFICATION
                | keys::CONFLICT
                | keys::REJECTED
                | keys::OUTCOME)
        )
    )
}

/// Whether writes under this key go to the journal only, never to sled: rows that sled refers
/// to from another row (a household's current revision, from its `h` row).
pub(super) fn only_in_journal(key: &[u8]) -> bool {
    key.first() == Some(&keys::CURRENT_REVISION)
}

/// The reference to `value`, lying at `position` in the journal.
pub(super) fn reference(position: u64, value: &[u8]) -> Reference {
    let mut out = [0u8; REFERENCE_LEN];
    out[0] = REFERENCE;
    out[1..9].copy_from_slice(&position.to_be_bytes());
    // A row comes from a push under the body limit; the journal refuses records over 1 GiB.
    out[9..13].copy_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
    out[13..17].copy_from_slice(&journal::crc32(value).to_be_bytes());
    out
}

/// The sled batch for a journal record's writes, given where the record's values lie in the
/// journal ([`journal::value_positions`]): large rows become references (a value that already
/// is one, a superseded revision's, stays as it is), rows only for the journal are left out,
/// the rest is as is.
pub(super) fn sled_batch(writes: &[Write], positions: &[Option<u64>]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for ((key, value), position) in writes.iter().zip(positions) {
        if only_in_journal(key) {
            continue;
        }
        match (value, position) {
            (Some(value), Some(position))
                if kept_in_journal(key) && value.first() != Some(&REFERENCE) =>
            {
                batch.insert(key.as_slice(), &reference(*position, value)[..]);
            }
            (Some(value), _) => batch.insert(key.as_slice(), value.as_slice()),
            (None, _) => batch.remove(key.as_slice()),
        }
    }
    batch
}

/// Reads rows kept in the journal, through a read-only handle of their own: positional reads
/// need no lock and never move the appending handle.
#[derive(Debug)]
pub(super) struct JournalRows {
    file: File,
    path: PathBuf,
}

impl JournalRows {
    pub(super) fn open(path: &Path) -> Result<JournalRows, StoreError> {
        let file = File::open(path).map_err(|source| {
            StoreError::Journal(journal::JournalError::Io {
                path: path.to_path_buf(),
                error: source,
            })
        })?;
        Ok(JournalRows {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The row stored under `key`: `stored` itself, or the row it refers to.
    pub(super) fn resolve(&self, key: &[u8], stored: sled::IVec) -> Result<sled::IVec, StoreError> {
        if stored.first() != Some(&REFERENCE) || !kept_in_journal(key) {
            return Ok(stored);
        }
        self.read_for(key, &stored).map(sled::IVec::from)
    }

    /// The row a reference found under `key` refers to.
    pub(super) fn read_for(&self, key: &[u8], reference: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.read(reference).map_err(|source| StoreError::Corrupt {
            key: keys::show(key),
            problem: source,
        })
    }

    fn read(&self, reference: &[u8]) -> Result<Vec<u8>, RowError> {
        let reference: &[u8; REFERENCE_LEN] = reference.try_into().map_err(|_| {
            RowError::InJournal(format!(
                "its reference has {} bytes, not {REFERENCE_LEN}",
                reference.len()
            ))
        })?;
        if reference[0] != REFERENCE {
            return Err(RowError::InJournal(format!(
                "its reference starts with {:#04x}, not the reference tag",
                reference[0]
            )));
        }
        let field = |at: usize| -> [u8; 4] { std::array::from_fn(|i| reference[at + i]) };
        let position = u64::from_be_bytes(std::array::from_fn(|i| reference[1 + i]));
        let len = u32::from_be_bytes(field(9));
        let crc = u32::from_be_bytes(field(13));
        if len > journal::MAX_RECORD_BYTES {
            return Err(RowError::InJournal(format!(
                "its reference claims {len} bytes"
            )));
        }
        // Rows are a few kilobytes. A longer claim, as a damaged reference may make, is held
        // against the journal's length before anything is allocated for it.
        if len > CHECKED_AGAINST_LENGTH_FROM {
            let journal_len = self
                .file
                .metadata()
                .map(|meta| meta.len())
                .map_err(|error| {
                    RowError::InJournal(format!(
                        "the length of {} cannot be read: {error}",
                        self.path.display()
                    ))
                })?;
            if position.saturating_add(u64::from(len)) > journal_len {
                return Err(RowError::InJournal(format!(
                    "its reference claims {len} bytes at offset {position}, past the end of {} \
                     ({journal_len} bytes)",
                    self.path.display()
                )));
            }
        }
        let mut row = vec![0u8; len as usize];
        read_exact_at(&self.file, &mut row, position).map_err(|error| {
            RowError::InJournal(format!(
                "{len} bytes at offset {position} of {} cannot be read: {error}",
                self.path.display()
            ))
        })?;
        if journal::crc32(&row) != crc {
            return Err(RowError::InJournal(format!(
                "the {len} bytes at offset {position} of {} fail their checksum",
                self.path.display()
            )));
        }
        Ok(row)
    }
}

/// Rows claimed longer than this are checked against the journal's length before they are
/// read (1 MiB: a revision row is a few kilobytes).
const CHECKED_AGAINST_LENGTH_FROM: u32 = 1 << 20;

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::journaled::JournaledBatch;
    use super::super::Registry;
    use super::*;
    use crate::journal::Journal;

    fn open(dir: &Path) -> Registry {
        super::super::journaled::tests::open(dir).expect("the registry opens")
    }

    fn revision_key(n: u8) -> Vec<u8> {
        let mut key = vec![keys::REVISION];
        key.extend_from_slice(&[n; 20]);
        key
    }

    fn row(n: u8) -> Vec<u8> {
        // A row format byte, then a body; its length differs per row.
        let mut row = vec![2];
        row.extend((0..200 + u32::from(n)).map(|i| (i as u8) ^ n));
        row
    }

    fn commit(registry: &Registry, rows: &[u8]) {
        let mut batch = JournaledBatch::default();
        for &n in rows {
            batch.insert(revision_key(n), row(n));
            batch.insert(keys::device(uuid::Uuid::from_bytes([n; 16])), vec![n; 8]);
        }
        registry.apply_journaled(batch).expect("commit");
        registry.flush().expect("flush");
    }

    #[test]
    fn large_rows_are_referred_to_and_read_back_from_the_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open(dir.path());
        commit(&registry, &[1, 2]);
        commit(&registry, &[3]);
        for n in 1..=3 {
            let stored = registry
                .tree
                .get(revision_key(n))
                .expect("read")
                .expect("there");
            assert_eq!(stored.len(), REFERENCE_LEN, "sled holds a reference");
            assert_eq!(stored[0], REFERENCE);
            let read = registry
                .get(&revision_key(n))
                .expect("read")
                .expect("there");
            assert_eq!(read.as_ref(), row(n).as_slice());
            // Small rows stay in sled as they are.
            let small = keys::device(uuid::Uuid::from_bytes([n; 16]));
            let stored = registry.tree.get(&small).expect("read").expect("there");
            assert_eq!(stored.as_ref(), &[n; 8]);
        }
        let digest = registry.digest().expect("digest");
        drop(registry);
        let registry = open(dir.path());
        assert_eq!(registry.digest().expect("digest"), digest);
        let read = registry
            .get(&revision_key(2))
            .expect("read")
            .expect("there");
        assert_eq!(read.as_ref(), row(2).as_slice());
    }

    #[test]
    fn a_replayed_record_refers_to_its_rows_as_the_commit_would_have() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(open(dir.path()));
        // A commit journaled but never applied to sled (a crash before its flush).
        let (mut journal, _) = Journal::open(dir.path()).expect("journal");
        let writes = vec![
            (revision_key(7), Some(row(7))),
            (
                super::super::journaled::JOURNAL_COUNTER.to_vec(),
                Some(1u64.to_be_bytes().to_vec()),
            ),
        ];
        let positions = journal::value_positions(journal.end(), &writes);
        journal.append(0, &writes).expect("append");
        drop(journal);
        let registry = open(dir.path());
        let stored = registry
            .tree
            .get(revision_key(7))
            .expect("read")
            .expect("replayed");
        assert_eq!(
            stored.as_ref(),
            &reference(positions[0].expect("a value"), &row(7))[..]
        );
        let read = registry
            .get(&revision_key(7))
            .expect("read")
            .expect("there");
        assert_eq!(read.as_ref(), row(7).as_slice());
    }

    #[test]
    fn rows_written_inline_before_references_are_read_as_they_are() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open(dir.path());
        registry
            .tree
            .insert(revision_key(9), row(9))
            .expect("an inline row");
        let read = registry
            .get(&revision_key(9))
            .expect("read")
            .expect("there");
        assert_eq!(read.as_ref(), row(9).as_slice());
        // A kind that is never referred to is never taken for a reference, whatever it holds.
        let mut counter = vec![REFERENCE];
        counter.extend_from_slice(&[0; 16]);
        registry
            .tree
            .insert(b"mcounter", counter.clone())
            .expect("insert");
        let read = registry.get(b"mcounter").expect("read").expect("there");
        assert_eq!(read.as_ref(), counter.as_slice());
    }

    #[test]
    fn a_damaged_row_in_the_journal_is_reported_and_never_read_as_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open(dir.path());
        commit(&registry, &[4]);
        commit(&registry, &[5]);
        let stored = registry
            .tree
            .get(revision_key(4))
            .expect("read")
            .expect("there");
        let position = u64::from_be_bytes(stored[1..9].try_into().expect("8 bytes"));
        let path = Journal::path_in(dir.path());
        let mut bytes = std::fs::read(&path).expect("read the journal");
        bytes[position as usize + 50] ^= 0x10;
        std::fs::write(&path, &bytes).expect("damage the journal");
        match registry.get(&revision_key(4)) {
            Err(StoreError::Corrupt {
                key,
                problem: source,
            }) => {
                assert!(key.contains('r'), "{key}");
                let message = source.to_string();
                assert!(message.contains("checksum"), "{message}");
                assert!(message.contains(&position.to_string()), "{message}");
            }
            other => panic!("a damaged row read as {other:?}"),
        }
        // The other row is untouched.
        let read = registry
            .get(&revision_key(5))
            .expect("read")
            .expect("there");
        assert_eq!(read.as_ref(), row(5).as_slice());
        // A reference past the journal's end is reported too.
        let mut beyond = reference(bytes.len() as u64, &row(6)).to_vec();
        beyond[9..13].copy_from_slice(&100u32.to_be_bytes());
        registry
            .tree
            .insert(revision_key(6), beyond)
            .expect("insert");
        assert!(matches!(
            registry.get(&revision_key(6)),
            Err(StoreError::Corrupt { .. })
        ));
        // So is a claim of 900 MB, before anything is allocated for it.
        let mut huge = reference(0, &row(7)).to_vec();
        huge[9..13].copy_from_slice(&900_000_000u32.to_be_bytes());
        registry.tree.insert(revision_key(7), huge).expect("insert");
        match registry.get(&revision_key(7)) {
            Err(StoreError::Corrupt {
                problem: source, ..
            }) => {
                let message = source.to_string();
                assert!(message.contains("past the end"), "{message}");
            }
            other => panic!("a reference past the end read as {other:?}"),
        }
    }
}
