//! The ids of the households the registry holds, kept in memory, so that a read of a household
//! it does not hold is answered without searching sled's tree. Every create asks (a first
//! push is all creates), and that search was a sixteenth of the server's work in a first push.
//!
//! The set is a superset: every household row in the tree has its id here, and an id may be
//! here without a row (noted for a batch that then failed). So an id missing here is a
//! household the registry does not hold, and an id found here is asked of sled. It stays
//! complete because it is read from the tree when the registry opens (after the journal's
//! replay), and every later write reaches the tree through `Registry::apply_journaled`, which
//! notes a batch's household ids before applying it. Debug builds check every "not here"
//! against the tree.
//!
//! Memory: 16 bytes an id and the table's slack. At a million households the server's peak
//! RSS measured 410 MiB with the set, 391 MiB without (`bench --full --only sizes`). Opening
//! the registry reads the household keys once to fill it.

use std::sync::{PoisonError, RwLock};

use fxhash::FxHashSet;
use uuid::Uuid;

use super::{keys, StoreError};
use crate::journal::Write;

pub(super) struct KnownHouseholds(RwLock<FxHashSet<Uuid>>);

impl KnownHouseholds {
    /// The households of the tree's household rows.
    pub(super) fn read(tree: &sled::Tree) -> Result<KnownHouseholds, StoreError> {
        let ids = super::household_ids_in(tree).collect::<Result<_, _>>()?;
        Ok(KnownHouseholds(RwLock::new(ids)))
    }

    /// Notes the households a batch writes rows of, before the batch is applied.
    pub(super) fn note(&self, writes: &[Write]) {
        let mut ids = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for (key, _) in writes {
            if let Some(id) = household_of(key) {
                ids.insert(id);
            }
        }
    }

    /// False when the registry holds no row of the household.
    pub(super) fn may_hold(&self, id: Uuid) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }
}

/// The household whose row `key` is the key of, if it is one.
fn household_of(key: &[u8]) -> Option<Uuid> {
    match key.first() {
        Some(&keys::HOUSEHOLD) => keys::uuid_at(key, 1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::journaled::{tests::open, JournaledBatch, JOURNAL_COUNTER};
    use super::*;
    use crate::journal::Journal;

    #[test]
    fn households_are_known_from_each_batch_from_the_tree_and_from_a_replay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let [written, replayed, never] = [1, 2, 3].map(Uuid::from_u128);
        let registry = open(dir.path()).expect("a new registry");
        assert!(!registry.known_households.may_hold(written));
        let mut batch = JournaledBatch::default();
        batch.insert(keys::household(written), vec![1]);
        batch.insert(keys::revision(never, 1), vec![2]);
        registry.apply_journaled(batch).expect("apply");
        registry.flush().expect("flush");
        assert!(registry.known_households.may_hold(written));
        assert!(
            !registry.known_households.may_hold(never),
            "a revision row is no household row"
        );
        drop(registry);
        // A record journaled and never applied to the tree (a crash before the flush).
        let (mut journal, _) = Journal::open(dir.path()).expect("journal");
        let last = journal.last();
        journal
            .append(
                0,
                &[
                    (keys::household(replayed), Some(vec![3])),
                    (
                        JOURNAL_COUNTER.to_vec(),
                        Some((last + 1).to_be_bytes().to_vec()),
                    ),
                ],
            )
            .expect("append");
        drop(journal);
        let registry = open(dir.path()).expect("reopen replays");
        assert!(
            registry.known_households.may_hold(written),
            "read from the tree"
        );
        assert!(registry.known_households.may_hold(replayed), "replayed");
        assert!(!registry.known_households.may_hold(never));
    }
}
