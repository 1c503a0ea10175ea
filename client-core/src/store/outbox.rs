//! The outbox's own tree, and how a push's reply clears its entries without removing them.
//!
//! A reply used to remove its outbox entries one by one, and sled 0.34's cost is per
//! operation: about 10 µs of a device's CPU a household, most of what a device spent on a
//! first push. Now the outbox lives in a tree of its own (`outbox-` and a generation number),
//! and a reply moves one mark instead: every entry with a seq up to `outbox_cleared` (meta) is
//! cleared, as if removed ([`Txn::clear_outbox_through`]). Reads never see a cleared entry, and
//! a write that removes one writes nothing. When every entry of the tree is cleared, the store
//! turns to an empty tree of the next generation ([`Txn::outbox_turn`]) and drops
//! the old one, whole, when no step can still hold it: when the store closes, or at the next
//! open. (A step holds its own handle of the tree it began with; a reader that began before
//! the turn reads the old tree, all cleared, until it ends.)
//!
//! A write that touches both the outbox and the other rows (a save, an outcome of an entry
//! still pending) is one sled transaction over the two trees; one that touches only the other
//! rows (a reply) is one batch, as before. Both end with a flush of the whole store.
//!
//! Putting acknowledged mutations back in the outbox for a server that lost them lowers the
//! mark ([`Txn::unclear_outbox_from`]), and removes for real the cleared entries it uncovers,
//! so that none comes back.
//!
//! A store of layout 1 or 2 (or one without a layout mark) kept its outbox among the other
//! rows: opening it moves the entries into the outbox tree, in one transaction.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sled::Transactional;

use super::{keys, StoreError, Txn};

/// The outbox tree of a generation.
fn tree_name(generation: u64) -> String {
    format!("outbox-{generation}")
}

/// The outbox tree in use and how far it is cleared.
pub(super) struct Outbox {
    tree: Mutex<sled::Tree>,
    /// The committed mark: entries with seqs up to here are cleared.
    cleared: AtomicU64,
    /// Trees turned from while the store was open, dropped when it closes.
    pub(super) retired: Mutex<Vec<sled::IVec>>,
}

impl Outbox {
    /// Opens the outbox of `db`: the tree of the generation in its meta, with the trees of
    /// other generations (left by a crash before they were dropped) dropped. A store of
    /// another layout is refused, unchanged; one of a layout before (or new) has its outbox
    /// entries moved in and is marked with this build's layout.
    pub(super) fn open(db: &sled::Db, path: &std::path::Path) -> Result<Outbox, StoreError> {
        let layout = meta_u64(db, keys::META_LAYOUT)?;
        // A store without a layout mark is new, or older than the mark: either way any outbox
        // entries it has are among its other rows.
        let earlier = matches!(
            layout,
            None | Some(super::LAYOUT_BEFORE_ACKNOWLEDGED | super::LAYOUT_BEFORE_OUTBOX_TREE)
        );
        if let Some(found) = layout.filter(|&found| found != super::LAYOUT_VERSION && !earlier) {
            // Refused before anything is changed.
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                found,
            });
        }
        let generation = meta_u64(db, keys::META_OUTBOX_GENERATION)?.unwrap_or(0);
        let cleared = meta_u64(db, keys::META_OUTBOX_CLEARED)?.unwrap_or(0);
        let current = tree_name(generation);
        // A tree of another generation was turned from with every entry in it cleared, and no
        // step writes a tree once the store has turned from it: its entries are all
        // acknowledged, or awaiting their outcomes under `W`, whatever the mark says since (a
        // restore lowers it and puts entries back in the current tree).
        for name in db.tree_names() {
            if name.starts_with(b"outbox-") && name != current.as_bytes() {
                db.drop_tree(&name)?;
            }
        }
        let tree = db.open_tree(&current)?;
        if earlier {
            move_in_earlier_layout(db, &tree)?;
        }
        Ok(Outbox {
            tree: Mutex::new(tree),
            cleared: AtomicU64::new(cleared),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// A handle of the tree in use, for one step.
    pub(super) fn tree(&self) -> sled::Tree {
        self.tree
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn cleared(&self) -> u64 {
        self.cleared.load(Ordering::SeqCst)
    }

    /// The mark a step committed (under the write lock, after its flush).
    pub(super) fn set_cleared(&self, cleared: u64) {
        self.cleared.store(cleared, Ordering::SeqCst);
    }

    /// Drops the trees turned from: only once nothing can read them, as the store closes.
    pub(super) fn drop_retired(&self, db: &sled::Db) {
        let retired = std::mem::take(
            &mut *self
                .retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if retired.is_empty() {
            // Nothing to drop, and nothing to flush: every step flushed its own writes.
            return;
        }
        for name in retired {
            // What is not dropped now is dropped at the next open.
            if let Err(error) = db.drop_tree(&name) {
                tracing::warn!(%error, "dropping a cleared outbox tree failed; the next open drops it");
            }
        }
        if let Err(error) = db.flush() {
            tracing::warn!(%error, "flushing the store as it closes failed");
        }
    }
}

/// The seq of the last entry of an outbox tree.
fn last_seq(tree: &sled::Tree) -> Result<Option<u64>, StoreError> {
    Ok(tree.last()?.and_then(|(key, _)| keys::number_of(&key)))
}

fn meta_u64(tree: &sled::Tree, name: &str) -> Result<Option<u64>, StoreError> {
    tree.get(keys::meta(name))?
        .map(|bytes| super::rows::decode_u64(&bytes, "meta number"))
        .transpose()
}

/// Moves the outbox entries a store of layout 1 or 2 kept among its other rows into the outbox
/// tree, and marks the store with this build's layout, in one transaction.
fn move_in_earlier_layout(db: &sled::Db, outbox: &sled::Tree) -> Result<(), StoreError> {
    let entries: Vec<(sled::IVec, sled::IVec)> =
        db.scan_prefix([keys::OUTBOX]).collect::<Result<_, _>>()?;
    let main: &sled::Tree = db;
    (main, outbox)
        .transaction(|(main, outbox)| {
            for (key, value) in &entries {
                main.remove(key)?;
                outbox.insert(key, value)?;
            }
            main.insert(
                keys::meta(keys::META_LAYOUT),
                super::rows::encode_u64(super::LAYOUT_VERSION),
            )?;
            Ok(())
        })
        .map_err(transaction_error)?;
    db.flush().map_err(StoreError::Flush)?;
    Ok(())
}

/// A failed transaction as a store error: its closures never abort, so only sled's own error.
pub(super) fn transaction_error(error: sled::transaction::TransactionError<()>) -> StoreError {
    match error {
        sled::transaction::TransactionError::Storage(error) => StoreError::Io(error),
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
            what: "transaction",
            problem: "aborted".to_string(),
        },
    }
}

impl Txn<'_> {
    /// Clears every outbox entry with a seq up to `seq` (never lowers the mark).
    pub(super) fn clear_outbox_through(&mut self, seq: u64) {
        if seq > self.cleared {
            self.cleared = seq;
            self.cleared_moved = true;
        }
    }

    /// Lowers the mark so that entries from `seq` on can be put back, and removes for real the
    /// cleared entries from `seq` on that are still in the tree, so that none comes back.
    pub(super) fn unclear_outbox_from(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq > self.cleared {
            return Ok(());
        }
        let uncovered: Vec<sled::IVec> = self
            .outbox
            .range(keys::outbox(seq)..=keys::outbox(self.cleared))
            .keys()
            .collect::<Result<_, _>>()?;
        self.cleared = seq.saturating_sub(1);
        self.cleared_moved = true;
        for key in uncovered {
            if !self.staged.contains_key(key.as_ref()) {
                self.staged.insert(key.to_vec(), None);
            }
        }
        Ok(())
    }

    /// The first seq the outbox may hold an entry for: after the cleared ones.
    pub(super) fn first_live_seq(&self) -> u64 {
        self.cleared.saturating_add(1)
    }

    /// Outbox entries from `from` through `through`, as committed, cleared ones left out.
    pub(super) fn outbox_range(
        &self,
        from: u64,
        through: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> {
        let from = keys::outbox(from.max(self.first_live_seq()));
        let through = keys::outbox(through);
        // Empty when everything asked for is cleared.
        let end = if from > through {
            Bound::Excluded(from.clone())
        } else {
            Bound::Included(through)
        };
        self.outbox
            .range::<Vec<u8>, _>((Bound::Included(from), end))
            .map(|item| item.map_err(StoreError::from))
    }

    /// Applies the staged writes of a step that touches the outbox: both trees in one
    /// transaction (the commit has already left out removals of cleared entries).
    pub(super) fn commit_with_outbox(
        &self,
        main: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        outbox: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let main_tree: &sled::Tree = self.db;
        (main_tree, &self.outbox)
            .transaction(|(main_tx, outbox_tx)| {
                for (key, value) in &main {
                    match value {
                        Some(value) => main_tx.insert(key.as_slice(), value.as_slice())?,
                        None => main_tx.remove(key.as_slice())?,
                    };
                }
                for (key, value) in &outbox {
                    match value {
                        Some(value) => outbox_tx.insert(key.as_slice(), value.as_slice())?,
                        None => outbox_tx.remove(key.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(transaction_error)
    }
}

impl Txn<'_> {
    /// The generation to turn to with this step's commit, when the step clears every entry of
    /// the outbox tree and puts none in it: written in the step's own batch, so that the turn
    /// costs no flush of its own. The old tree is dropped when the store closes (or at the
    /// next open, after a crash); its entries are all cleared either way.
    pub(super) fn outbox_turn(&self) -> Result<Option<u64>, StoreError> {
        if !self.cleared_moved {
            return Ok(None);
        }
        let puts_kept = self.staged.iter().any(|(key, value)| {
            value.is_some() && keys::outbox_seq(key).is_some_and(|seq| seq > self.cleared)
        });
        match last_seq(&self.outbox)? {
            Some(last) if last <= self.cleared && !puts_kept => {}
            // Empty, or with entries still to send.
            _ => return Ok(None),
        }
        let generation = meta_u64(self.db, keys::META_OUTBOX_GENERATION)?.unwrap_or(0);
        Ok(Some(generation.saturating_add(1)))
    }
}

impl Outbox {
    /// Turns to the tree of `generation`, once the step that wrote it is durable (under the
    /// write lock, so no step writes the old tree meanwhile).
    pub(super) fn turn_to(&self, db: &sled::Db, generation: u64) -> Result<(), StoreError> {
        let fresh = db.open_tree(tree_name(generation))?;
        let old = std::mem::replace(
            &mut *self
                .tree
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh,
        );
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(old.name());
        Ok(())
    }
}
