//! Where each household's row is, kept in memory: in an `h` row of its own, or in the run of
//! the commit that created it (an `n` row, at an entry's offset). A read of a household the
//! registry does not hold is answered without searching sled's tree (every create asks, and
//! that search was a sixteenth of the server's work in a first push), and one whose row is in
//! a run goes straight to its entry.
//!
//! The map is a superset: every household with a row in the tree is here, and one may be here
//! without a row (noted for a batch that then failed). So a household missing here is one the
//! registry does not hold. An `h` row wins over a run's entry: a household gets one when it
//! changes after it was created, and its entry in the run is left as it was. The map stays
//! complete because it is read from the tree when the registry opens (after the journal's
//! replay), and every later write reaches the tree through `Registry::apply_journaled`, which
//! notes a batch's households before applying it. Debug builds check every "not here" against
//! the tree.
//!
//! Memory: 32 bytes a household and the table's slack. At a million households the server's
//! peak RSS measured 241 MiB with it (`bench --full --only sizes`; 410 MiB when it held the ids
//! alone and every household had an `h` row, 391 MiB without it). Opening the registry reads
//! the household rows and runs once to fill it.

use std::sync::{PoisonError, RwLock};

use fxhash::FxHashMap;
use uuid::Uuid;

use super::{keys, rows, StoreError};
use crate::journal::Write;

/// Where a household's row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Its own `h` row.
    Row,
    /// The entry beginning at byte `at` of the run keyed by `run` (a change seq).
    InRun { run: u64, at: u32 },
}

pub(super) struct KnownHouseholds(RwLock<FxHashMap<Uuid, Place>>);

impl KnownHouseholds {
    /// The households of the tree's household rows and runs.
    pub(super) fn read(tree: &sled::Tree) -> Result<KnownHouseholds, StoreError> {
        Ok(KnownHouseholds(RwLock::new(places_in(tree)?)))
    }

    /// Notes the households a batch writes rows of, before the batch is applied.
    pub(super) fn note(&self, writes: &[Write]) -> Result<(), StoreError> {
        // Read before the lock is taken: a run's entries are known from its bytes alone.
        let mut noted = Vec::new();
        for (key, value) in writes {
            places_of(key, value.as_deref(), |id, place| noted.push((id, place)))?;
        }
        let mut places = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for (id, place) in noted {
            note(&mut places, id, place);
        }
        Ok(())
    }

    /// Where household `id`'s row is; `None` when the registry holds none.
    pub(super) fn place(&self, id: Uuid) -> Option<Place> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }
}

/// Where the row of every household with one in `tree` is.
pub(super) fn places_in(tree: &sled::Tree) -> Result<FxHashMap<Uuid, Place>, StoreError> {
    let mut places = FxHashMap::default();
    for prefix in [keys::HOUSEHOLD, keys::NEW_HOUSEHOLDS] {
        for entry in tree.scan_prefix([prefix]) {
            let (key, value) = entry?;
            places_of(&key, Some(&value), |id, place| note(&mut places, id, place))?;
        }
    }
    Ok(places)
}

/// Records where a household's row is: its own row wins over a run's entry, and a later run's
/// entry over an earlier one's (there is one only when a batch noted here was then not
/// written; runs are read in the order they were written).
fn note(places: &mut FxHashMap<Uuid, Place>, id: Uuid, place: Place) {
    if place == Place::Row || places.get(&id) != Some(&Place::Row) {
        places.insert(id, place);
    }
}

/// Tells `found` the households whose rows a write of `key` holds, and where. A run's removal
/// holds none; an `h` key is noted whatever is written under it (the map is a superset, and
/// `h` rows are not removed).
fn places_of(
    key: &[u8],
    value: Option<&[u8]>,
    mut found: impl FnMut(Uuid, Place),
) -> Result<(), StoreError> {
    let corrupt = |problem| StoreError::Corrupt {
        key: keys::show(key),
        problem,
    };
    match (key.first(), value) {
        (Some(&keys::HOUSEHOLD), _) => {
            let id = keys::uuid_at(key, 1).ok_or(corrupt(rows::RowError::Truncated))?;
            found(id, Place::Row);
        }
        (Some(&keys::NEW_HOUSEHOLDS), Some(run_bytes)) => {
            let run = keys::u64_at(key, 1).ok_or(corrupt(rows::RowError::Truncated))?;
            for (id, at, _) in rows::new_households_entries(run_bytes).map_err(corrupt)? {
                found(id, Place::InRun { run, at });
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::journaled::{tests::open, JournaledBatch, JOURNAL_COUNTER};
    use super::*;
    use crate::journal::Journal;

    #[test]
    fn households_and_their_places_are_known_from_each_batch_from_the_tree_and_from_a_replay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let [written, replayed, never, in_run, replayed_in_run] =
            [1, 2, 3, 4, 5].map(Uuid::from_u128);
        let registry = open(dir.path()).expect("a new registry");
        assert_eq!(registry.known_households.place(written), None);
        let mut batch = JournaledBatch::default();
        batch.insert(keys::household(written), vec![1]);
        batch.insert(keys::revision(never, 1), vec![2]);
        let mut run = rows::NewHouseholdsRun::with_capacity(2);
        run.push(in_run, &[4]).expect("an entry");
        run.push(written, &[5]).expect("an entry");
        batch.insert(keys::new_households(7), run.finish());
        registry.apply_journaled(batch).expect("apply");
        registry.flush().expect("flush");
        assert_eq!(
            registry.known_households.place(written),
            Some(Place::Row),
            "its own row wins over a run's entry"
        );
        assert_eq!(
            registry.known_households.place(in_run),
            Some(Place::InRun { run: 7, at: 1 })
        );
        assert_eq!(
            registry.known_households.place(never),
            None,
            "a revision row is no household row"
        );
        // A later run's entry of the same household (only after a batch noted and not written)
        // wins over the earlier one's, as it does when the runs are read in order on open.
        let mut batch = JournaledBatch::default();
        let mut run = rows::NewHouseholdsRun::with_capacity(1);
        run.push(in_run, &[7]).expect("an entry");
        batch.insert(keys::new_households(8), run.finish());
        registry.apply_journaled(batch).expect("apply");
        registry.flush().expect("flush");
        assert_eq!(
            registry.known_households.place(in_run),
            Some(Place::InRun { run: 8, at: 1 })
        );
        drop(registry);
        // A record journaled and never applied to the tree (a crash before the flush).
        let mut run = rows::NewHouseholdsRun::with_capacity(1);
        run.push(replayed_in_run, &[6]).expect("an entry");
        let replayed_run = run.finish();
        let (mut journal, _) = Journal::open(dir.path()).expect("journal");
        let last = journal.last();
        journal
            .append(
                0,
                &[
                    (keys::household(replayed), Some(vec![3])),
                    (keys::new_households(9), Some(replayed_run)),
                    (
                        JOURNAL_COUNTER.to_vec(),
                        Some((last + 1).to_be_bytes().to_vec()),
                    ),
                ],
            )
            .expect("append");
        drop(journal);
        let registry = open(dir.path()).expect("reopen replays");
        assert_eq!(
            registry.known_households.place(written),
            Some(Place::Row),
            "read from the tree"
        );
        assert_eq!(
            registry.known_households.place(replayed),
            Some(Place::Row),
            "replayed"
        );
        assert_eq!(
            registry.known_households.place(in_run),
            Some(Place::InRun { run: 8, at: 1 })
        );
        assert_eq!(
            registry.known_households.place(replayed_in_run),
            Some(Place::InRun { run: 9, at: 1 })
        );
        assert_eq!(registry.known_households.place(never), None);
    }
}
