//! The server's reference texts, as the device last received them (one row, `F`).

use protocol::codec;
use protocol::reference::ReferenceTexts;

use super::{keys, Store, StoreError};

/// Most bytes the stored texts may take.
const REFERENCE_LIMIT: usize = crate::reference::MAX_REFERENCE_BYTES;

impl Store {
    /// The reference texts received from the server; `None` until the first fetch, while the
    /// device classifies with the data built into the app.
    pub fn reference_texts(&self) -> Result<Option<ReferenceTexts>, StoreError> {
        self.read()
            .get(keys::REFERENCE)?
            .map(|bytes| {
                codec::decode(&bytes, REFERENCE_LIMIT).map_err(|error| StoreError::Corrupt {
                    what: "reference data",
                    problem: error.to_string(),
                })
            })
            .transpose()
    }

    /// Stores the reference texts received from the server, durably. The caller checks that
    /// they parse (`crate::reference::update`).
    pub fn save_reference_texts(&self, texts: &ReferenceTexts) -> Result<(), StoreError> {
        let mut txn = self.begin();
        txn.put(keys::REFERENCE.to_vec(), codec::encode(texts));
        txn.commit()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::test_support::sample;
    use protocol::classify::PovertyClass;
    use protocol::reference::ReferenceTexts;

    #[test]
    fn stored_texts_replace_the_built_in_data_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let household = {
            let mut household = sample(1);
            // Rural, above ND 07/2021's rural line of 1,500,000 and inside the average band.
            household.commune_code = "00640".into();
            household.income.estimated_per_person_vnd = Some(1_600_000);
            household
        };
        {
            let store = Store::open(dir.path()).expect("open");
            assert_eq!(store.reference_texts().expect("read"), None);
            let built_in = crate::reference::classify(&store, &household).expect("classifies");
            assert!(matches!(built_in.class, PovertyClass::AverageLiving { .. }));
            let corrected = ReferenceTexts {
                standards: protocol::standards::STANDARDS_JSON.replacen("1500000", "1800000", 1),
                ..ReferenceTexts::embedded()
            };
            store.save_reference_texts(&corrected).expect("save");
        }
        let store = crate::test_support::reopen(dir.path());
        assert!(store.reference_texts().expect("read").is_some());
        let corrected = crate::reference::classify(&store, &household).expect("classifies");
        assert!(
            !matches!(corrected.class, PovertyClass::AverageLiving { .. }),
            "{corrected:?}"
        );
    }

    #[test]
    fn an_unknown_commune_is_a_warning_on_save() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let mut household = sample(2);
        household.commune_code = "99999".into();
        let receipt = store.save_household(&household).expect("saved anyway");
        assert_eq!(receipt.warnings.len(), 1, "{:?}", receipt.warnings);
        assert!(
            receipt.warnings[0].contains("commune code '99999' is not in the 2025 code set"),
            "{}",
            receipt.warnings[0]
        );
    }
}
