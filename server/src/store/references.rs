//! The reference data the registry's classifications were made with, kept by fingerprint.
//!
//! A revision the merge engine makes keeps its classification as a decision, without texts
//! (`rows::Decision`), and the texts are rebuilt on read by classifying the revision's record
//! again with the reference data the decision names. So every reference bundle a decision was
//! made with is kept here, under `e` + its fingerprint, in a journaled batch like any other
//! row (a rebuild brings it back). [`Registry::keep_reference`] keeps one before the merge
//! engine classifies with it (`AppState` does so when it opens and when the data is
//! replaced), and a commit whose revisions name reference data the registry does not keep is
//! refused ([`Registry::keeps_reference`]).
//!
//! A bundle is about 17 KB of texts; parsing one takes milliseconds, so each is parsed once,
//! on first use, and shared.

use std::sync::{Arc, RwLock};

use fxhash::FxHashMap;
use protocol::classify::Classification;
use protocol::fields::{self, FieldMap};
use protocol::reference::ReferenceData;

use super::rows::{self, Decision, MadeWith};
use super::{journaled, keys, ClassificationRecord, Registry, StoreError};

/// The fingerprints the registry keeps reference data for, each with the data once parsed.
#[derive(Debug, Default)]
pub(super) struct KeptReferences {
    by_fingerprint: RwLock<FxHashMap<String, Option<Arc<ReferenceData>>>>,
}

impl KeptReferences {
    /// The fingerprints kept in `tree`, none parsed yet.
    pub(super) fn read(tree: &sled::Tree) -> Result<KeptReferences, StoreError> {
        let mut by_fingerprint = FxHashMap::default();
        for entry in tree.scan_prefix([keys::REFERENCE_DATA]) {
            let (key, _) = entry?;
            let fingerprint = std::str::from_utf8(&key[1..]).map_err(|_| {
                StoreError::Inconsistent(format!(
                    "the reference data under key {} is not named by a fingerprint",
                    keys::show(&key)
                ))
            })?;
            by_fingerprint.insert(fingerprint.to_string(), None);
        }
        Ok(KeptReferences {
            by_fingerprint: RwLock::new(by_fingerprint),
        })
    }

    fn get(&self, fingerprint: &str) -> Option<Option<Arc<ReferenceData>>> {
        self.by_fingerprint
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(fingerprint)
            .cloned()
    }

    fn set(&self, fingerprint: &str, data: Arc<ReferenceData>) {
        self.by_fingerprint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fingerprint.to_string(), Some(data));
    }
}

impl Registry {
    /// Keeps `reference` by its fingerprint, durably, unless it is kept already: the merge
    /// engine may then make revisions classified with it.
    pub fn keep_reference(&self, reference: &Arc<ReferenceData>) -> Result<(), StoreError> {
        let fingerprint = reference.fingerprint();
        if self.references.get(fingerprint).is_none() {
            self.check_healthy()?;
            let mut batch = journaled::JournaledBatch::default();
            batch.insert(
                keys::reference_data(fingerprint),
                rows::encode_reference_texts(reference.texts()),
            );
            // Decisions are made only with kept reference data, so a registry that holds any
            // is marked with the layout that reads them.
            batch.insert(keys::LAYOUT, &rows::encode_u64(super::LAYOUT)[..]);
            self.apply_journaled(batch)?;
            self.flush()?;
        }
        self.references.set(fingerprint, Arc::clone(reference));
        Ok(())
    }

    /// Whether the reference data of `fingerprint` is kept.
    pub(crate) fn keeps_reference(&self, fingerprint: &str) -> bool {
        self.references.get(fingerprint).is_some()
    }

    /// The reference data of `fingerprint`, parsed, if it is kept and this build reads it.
    fn kept_reference(&self, fingerprint: &str) -> Result<Option<Arc<ReferenceData>>, StoreError> {
        match self.references.get(fingerprint) {
            None => return Ok(None),
            Some(Some(data)) => return Ok(Some(data)),
            Some(None) => {}
        }
        let key = keys::reference_data(fingerprint);
        let Some(row) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let texts = rows::decode_reference_texts(&row).map_err(Self::corrupt(&key))?;
        // Kept texts that a later format refuses leave their decisions without texts.
        let Ok(data) = ReferenceData::from_texts(texts) else {
            return Ok(None);
        };
        let data = Arc::new(data);
        self.references.set(fingerprint, Arc::clone(&data));
        Ok(Some(data))
    }

    /// The classification record a revision row holds, with its texts rebuilt from `fields`
    /// (the revision's record) when it is kept as a decision.
    pub(super) fn classification_record(
        &self,
        made_with: MadeWith,
        fields: &FieldMap,
    ) -> Result<ClassificationRecord, StoreError> {
        match made_with {
            MadeWith::Record(record) => Ok(record),
            MadeWith::Decision {
                at_ms,
                reference,
                decision,
            } => Ok(ClassificationRecord {
                classification: self.rebuilt(&reference, decision, fields)?,
                at_ms,
                reference,
            }),
        }
    }

    /// The classification `decision` was, texts and all: the record classified again with the
    /// reference data it was made with, when that decides the same; else the decision with a
    /// text saying why its reasons are missing.
    fn rebuilt(
        &self,
        reference: &str,
        decision: Decision,
        fields: &FieldMap,
    ) -> Result<Classification, StoreError> {
        let Some(data) = self.kept_reference(reference)? else {
            return Ok(decision.without_reasons(
                &format!("dữ liệu tham chiếu {reference} không được lưu"),
                &format!("the reference data {reference} is not kept"),
            ));
        };
        let Ok(household) = fields::unflatten(fields) else {
            return Ok(decision.without_reasons(
                "bản ghi không dựng lại được thành hộ",
                "the record does not rebuild into a household",
            ));
        };
        let classification = data.classify(&household);
        if decision.is_made_by(&classification) {
            Ok(classification)
        } else {
            Ok(decision.without_reasons(
                "bản này phân loại bản ghi khác với quyết định đã lưu",
                "this build classifies the record differently from the stored decision",
            ))
        }
    }
}
