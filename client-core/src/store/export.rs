//! Unsynced work, exported on demand: every outbox entry with the household as the enumerator
//! sees it, one JSON object a line. A device whose store is failing (or that is about to be
//! handed in) can give its unsynced households over as a file (`ho export-pending FILE`): each
//! line's `household` is a household file that `ho add --json` or `ho edit --json` reads on
//! another device, and its `mutation` is exactly what the outbox would have sent.

use std::io::Write;

use super::{Store, StoreError};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("không ghi được tệp xuất / the export could not be written: {0}")]
    Write(#[from] std::io::Error),
}

impl Store {
    /// Writes every pending mutation, oldest first, as one JSON line with the household it
    /// belongs to (`seq`, `household_id`, `mutation`, `fields`, and `household` when the view
    /// fits the form), then flushes the writer. Returns how many lines it wrote.
    pub fn export_pending(&self, out: &mut impl Write) -> Result<usize, ExportError> {
        let pending = self.pending()?;
        for mutation in &pending {
            let local = self.household(mutation.household_id)?;
            let fields = local.as_ref().map(|local| local.fields.clone());
            let household = local.as_ref().and_then(|local| local.household().ok());
            let line = serde_json::json!({
                "seq": mutation.seq,
                "household_id": mutation.household_id.to_string(),
                "mutation": mutation,
                "fields": fields,
                "household": household,
            });
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(pending.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{sample, store};

    #[test]
    fn every_pending_change_is_exported_with_its_household() {
        let (_dir, store) = store();
        let first = sample(1);
        store.save_household(&first).expect("save");
        let mut edited = first.clone();
        edited.address = "Số 9, ngõ 12".into();
        store.save_household(&edited).expect("save");
        store.save_household(&sample(2)).expect("save");

        let mut out = Vec::new();
        assert_eq!(store.export_pending(&mut out).expect("export"), 3);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["seq"], 1);
        // The household as the enumerator sees it now, readable as a household file.
        let household: protocol::household::Household =
            serde_json::from_value(lines[1]["household"].clone()).expect("a household");
        assert_eq!(household, edited);
        let mutation: protocol::sync::Mutation =
            serde_json::from_value(lines[2]["mutation"].clone()).expect("a mutation");
        assert_eq!(mutation, store.pending().expect("outbox")[2]);
    }
}
