//! Accepted outcomes of a push reply, kept in one row per reply until they are folded into the
//! household rows.
//!
//! A push's reply used to rewrite each household's row to note its outcome: the latest
//! pending seq cleared, the revision the mutation made. With a reply's removal of the outbox
//! entry (now a mark instead, see `super::outbox`), that was two sled operations per household, and sled 0.34's cost is per operation:
//! with the reply's flush, they were over half of a device's CPU in a first push. Now an outcome that is applied or
//! merged is written once per reply, in an `A` row of `(seq, household, rev)` entries, and
//! every reader of a household row settles the row's unconfirmed seqs from those rows
//! ([`Txn::settle_acknowledged`]), so that nothing reads a row without its outcomes. Whatever
//! writes a row writes it settled. After a sync's pull, which rewrites most of those rows
//! anyway, [`Store::fold_acknowledged`] writes the rows that still need it and removes the `A`
//! rows.
//!
//! Settling is idempotent and commutes with everything a row goes through after its outcome:
//! a seq has one outcome, recorded once, and every later step reads the row settled.
//! Conflicts and rejections are rare and carry more (a conflict row, a rejection row): their
//! outcomes are written into the household row as before.
//!
//! An `A` row: its key is the prefix and the highest seq it holds; its value a layout byte,
//! then entries of 28 bytes sorted by seq (seq u64, household id, rev u32), so that a seq is
//! found by a binary search, nothing decoded.

use uuid::Uuid;

use super::rows::{HouseholdMetaRow, RowMeta};
use super::{keys, Store, StoreError, Txn};

/// `A` rows folded in one step (one flush): a reply's is up to a push batch's outcomes, so a
/// first sync of thousands of households ends with a few flushes, not one a reply.
const FOLD_ROWS_PER_STEP: usize = 32;

/// Layout byte of an `A` row.
const ACKNOWLEDGED_V1: u8 = 1;
const ENTRY_BYTES: usize = 8 + 16 + 4;

/// One applied or merged outcome, waiting to be folded into its household's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    pub seq: u64,
    pub household_id: Uuid,
    pub rev: u32,
}

/// Encodes a reply's outcomes as an `A` row, sorted by seq.
pub(crate) fn encode(entries: &mut [Acknowledged]) -> Vec<u8> {
    entries.sort_unstable_by_key(|entry| entry.seq);
    let mut bytes = Vec::with_capacity(1 + entries.len() * ENTRY_BYTES);
    bytes.push(ACKNOWLEDGED_V1);
    for entry in entries.iter() {
        bytes.extend_from_slice(&entry.seq.to_be_bytes());
        bytes.extend_from_slice(entry.household_id.as_bytes());
        bytes.extend_from_slice(&entry.rev.to_be_bytes());
    }
    bytes
}

/// The entries of an `A` row, checked for shape.
fn entries(bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.split_first() {
        Some((&ACKNOWLEDGED_V1, rest)) if rest.len() % ENTRY_BYTES == 0 => Ok(rest),
        _ => Err(StoreError::Corrupt {
            what: "acknowledged outcomes",
            problem: format!(
                "{} bytes, not a layout byte and entries of {ENTRY_BYTES}",
                bytes.len()
            ),
        }),
    }
}

fn entry_at(entries: &[u8], index: usize) -> Acknowledged {
    let at = index * ENTRY_BYTES;
    let field = |from: usize, to: usize| &entries[at + from..at + to];
    Acknowledged {
        seq: u64::from_be_bytes(field(0, 8).try_into().unwrap_or_default()),
        household_id: Uuid::from_slice(field(8, 24)).unwrap_or_default(),
        rev: u32::from_be_bytes(field(24, 28).try_into().unwrap_or_default()),
    }
}

/// Every entry of an `A` row, in seq order.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Acknowledged>, StoreError> {
    let entries = entries(bytes)?;
    Ok((0..entries.len() / ENTRY_BYTES)
        .map(|index| entry_at(entries, index))
        .collect())
}

/// The entry for `seq` in an `A` row, by binary search.
fn find(bytes: &[u8], seq: u64) -> Result<Option<Acknowledged>, StoreError> {
    let entries = entries(bytes)?;
    let count = entries.len() / ENTRY_BYTES;
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        let entry = entry_at(entries, middle);
        match entry.seq.cmp(&seq) {
            std::cmp::Ordering::Equal => return Ok(Some(entry)),
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
        }
    }
    Ok(None)
}

impl Txn<'_> {
    /// The revision an applied or merged outcome of `seq` made, if it waits in an `A` row
    /// (or among this step's own, not yet written).
    fn acknowledged_rev(&self, seq: u64) -> Result<Option<u32>, StoreError> {
        if let Some(entry) = self.acknowledged.iter().find(|entry| entry.seq == seq) {
            return Ok(Some(entry.rev));
        }
        // Rows are keyed by their highest seq: only those from `seq` on can hold it. A reply
        // holds consecutive seqs, so the first is nearly always the one.
        for item in self
            .db
            .range(keys::acknowledged(seq)..=keys::acknowledged(u64::MAX))
        {
            let (_, value) = item?;
            if let Some(entry) = find(&value, seq)? {
                return Ok(Some(entry.rev));
            }
        }
        Ok(None)
    }

    /// Settles the row's unconfirmed seqs whose outcomes wait in `A` rows. Returns whether
    /// any was, so that the caller confirms the row against its server copy.
    pub(super) fn settle_acknowledged(&self, meta: &mut RowMeta) -> Result<bool, StoreError> {
        let mut settled = false;
        let waiting: Vec<u64> = meta
            .unconfirmed
            .iter()
            .filter(|entry| entry.result_rev.is_none())
            .map(|entry| entry.seq)
            .collect();
        for seq in waiting {
            if let Some(rev) = self.acknowledged_rev(seq)? {
                meta.accepted(seq, rev);
                settled = true;
            }
        }
        Ok(settled)
    }
}

impl Store {
    /// Writes the outcomes kept in `A` rows into the household rows that do not hold them yet,
    /// and removes the `A` rows, [`FOLD_ROWS_PER_STEP`] at a time. Called after a sync's pull,
    /// which has rewritten most of those households already. Returns how many rows it rewrote.
    pub(crate) fn fold_acknowledged(&self) -> Result<usize, StoreError> {
        let keys: Vec<sled::IVec> = self
            .inner
            .db
            .scan_prefix([keys::ACKNOWLEDGED])
            .keys()
            .collect::<Result<_, _>>()?;
        let mut rewritten = 0;
        for step in keys.chunks(FOLD_ROWS_PER_STEP) {
            let mut txn = self.begin();
            let mut households = Vec::new();
            for key in step {
                if let Some(value) = txn.get(key)? {
                    households.extend(decode(&value)?.into_iter().map(|entry| entry.household_id));
                }
            }
            households.sort_unstable();
            households.dedup();
            for id in households {
                let Some(stored) = txn.get(&keys::household(id))? else {
                    continue;
                };
                // Only a row that still lacks an outcome is settled, and only that is written.
                let (row, settled) = txn.settled_meta(HouseholdMetaRow::decode(&stored)?)?;
                if settled {
                    txn.put_household_meta(id, &row);
                    rewritten += 1;
                }
            }
            // Removed last: settling above reads them (a staged removal is not seen by reads
            // of the tree, so the order is for the reader, not for correctness).
            for key in step {
                txn.remove(key.to_vec());
            }
            txn.commit()?;
        }
        Ok(rewritten)
    }

    /// How many `A` rows wait to be folded.
    #[cfg(test)]
    pub(crate) fn acknowledged_rows(&self) -> usize {
        self.inner.db.scan_prefix([keys::ACKNOWLEDGED]).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_finds_each_of_its_seqs_and_no_other() {
        let mut entries: Vec<Acknowledged> = [9u64, 3, 5, 4]
            .iter()
            .map(|&seq| Acknowledged {
                seq,
                household_id: Uuid::from_u128(u128::from(seq) * 7),
                rev: seq as u32 + 1,
            })
            .collect();
        let bytes = encode(&mut entries);
        for entry in &entries {
            assert_eq!(find(&bytes, entry.seq).ok().flatten(), Some(*entry));
        }
        for absent in [0, 1, 6, 8, 10, u64::MAX] {
            assert_eq!(find(&bytes, absent).ok().flatten(), None);
        }
        assert_eq!(decode(&bytes).ok(), Some(entries));
        assert!(find(&[ACKNOWLEDGED_V1], 1).is_ok_and(|found| found.is_none()));
        assert!(find(&bytes[..bytes.len() - 1], 3).is_err());
        assert!(decode(&[2, 0, 0]).is_err());
        assert!(decode(&[]).is_err());
    }
}
