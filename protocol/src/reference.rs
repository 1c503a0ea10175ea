//! The reference data a classification is made with, bundled so that a device and the server
//! build it the same way from the same texts, and the one rule that dates a review.
//!
//! - [`reference_date`]: the household's review round → the reference date that selects the
//!   standard, the commune's rural/urban status and the day ages are counted on. Every caller
//!   (the field app, the server's merge engine, the server's recomputation) goes through it.
//! - [`ReferenceTexts`]: the texts of the correctable data files, exactly as the server loaded
//!   them. This is what the server ships to devices (`GET /v1/reference`, JSON) and what a device
//!   stores; each end parses the same texts with the same functions.
//! - [`ReferenceData`]: the parsed bundle, and [`ReferenceData::classify`], the classification
//!   both ends store and show.
//!
//! The code set of communes itself (`vn-admin-units-2025.json`) is not part of the bundle: it is
//! the official 2025 code set, embedded, and changes only with a new code set and a new build.
//! The B1 point tables are part of it only when an official table has been loaded: the SAMPLE
//! table is never used to classify a real household, so by default there are none and a
//! household recorded with B1 answers and no estimated income cannot be classified yet.
//!
//! # The reference date
//! A periodic review in year Y (1 September – 14 December) draws up the list of poor and
//! near-poor households that takes effect on 1 January of Y + 1, under the standard in force
//! that year (the review at the end of 2021 used ND 07/2021's standard for 2022–2025; the review
//! at the end of 2026 uses ND 351/2025's for 2027–2030). A monthly review in year Y changes the
//! list of year Y. So the reference date is 1 January of the year the resulting list applies
//! to: Y + 1 for a periodic round, Y for a monthly one. Ages are counted on the same day. The
//! record holds the round, not the survey day, so this is the most precise date both ends can
//! agree on without a clock.

use serde::{Deserialize, Serialize};

use crate::areas::{AreaError, AreaRegistry, UNITS_2025_JSON, URBAN_RURAL_2025_JSON};
use crate::b1::{B1Error, B1Tables, REGIONS_JSON};
use crate::classify::{classify, Classification, ClassifyInput};
use crate::household::{Date, Household, ReviewRound, RoundKind};
use crate::standards::{StandardError, StandardSet, STANDARDS_JSON};

/// The bundle format this build reads.
pub const REFERENCE_FORMAT: u32 = 1;

/// File names of the correctable data, in a server's reference folder and in `protocol/data/`.
pub const STANDARDS_FILE: &str = "poverty-standards.json";
pub const URBAN_RURAL_FILE: &str = "urban-rural-2025.json";
pub const B1_REGIONS_FILE: &str = "b1-regions.json";
/// An official B1 point table. There is no embedded default: the embedded table is a sample.
pub const B1_TABLE_FILE: &str = "b1-table.json";

/// The reference date of a review round: 1 January of the year its list applies to (see the
/// module documentation).
pub fn reference_date(round: ReviewRound) -> Date {
    let year = i32::from(round.year);
    let applies_in = match round.kind {
        RoundKind::Periodic => year + 1,
        RoundKind::Monthly => year,
    };
    Date {
        year: applies_in,
        month: 1,
        day: 1,
    }
}

/// Loading reference data failed; the message names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("{STANDARDS_FILE}: {0}")]
    Standards(#[from] StandardError),
    #[error("{URBAN_RURAL_FILE}: {0}")]
    Areas(#[from] AreaError),
    #[error("{B1_TABLE_FILE} / {B1_REGIONS_FILE}: {0}")]
    B1(#[from] B1Error),
    #[error("dữ liệu tham chiếu định dạng {got}, bản này đọc định dạng {expected} / the reference data has format {got}; this build reads format {expected}: update the field app")]
    UnsupportedFormat { got: u32, expected: u32 },
    #[error("dữ liệu tham chiếu không đọc được / the reference data is not valid JSON of the expected shape: {0}")]
    Json(String),
}

/// The texts of the correctable reference files, as loaded. The wire form of the reference
/// data: the server ships it as JSON and the device stores it as it came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTexts {
    pub format: u32,
    /// `poverty-standards.json`.
    pub standards: String,
    /// `urban-rural-2025.json`.
    pub urban_rural: String,
    /// `b1-regions.json`.
    pub b1_regions: String,
    /// `b1-table.json`, an official B1 point table; `None` until an official loads one.
    #[serde(default)]
    pub b1_table: Option<String>,
}

impl ReferenceTexts {
    /// The texts built into this binary.
    pub fn embedded() -> ReferenceTexts {
        ReferenceTexts {
            format: REFERENCE_FORMAT,
            standards: STANDARDS_JSON.to_string(),
            urban_rural: URBAN_RURAL_2025_JSON.to_string(),
            b1_regions: REGIONS_JSON.to_string(),
            b1_table: None,
        }
    }

    /// Parses the JSON a server sends (`GET /v1/reference`).
    pub fn from_json(text: &str) -> Result<ReferenceTexts, ReferenceError> {
        serde_json::from_str(text).map_err(|error| ReferenceError::Json(error.to_string()))
    }

    /// A short fingerprint of the texts (FNV-1a, 64 bits, in hex), to tell at a glance whether
    /// two ends hold the same data. Not a security measure.
    pub fn fingerprint(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            // A separator, so that moving bytes between texts changes the fingerprint.
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        };
        feed(&self.format.to_be_bytes());
        feed(self.standards.as_bytes());
        feed(self.urban_rural.as_bytes());
        feed(self.b1_regions.as_bytes());
        match &self.b1_table {
            Some(table) => feed(table.as_bytes()),
            None => feed(b"-"),
        }
        format!("{hash:016x}")
    }
}

/// The parsed reference data: standards, areas with their rural/urban rules, and the B1 point
/// tables when an official table is loaded.
#[derive(Clone, Debug)]
pub struct ReferenceData {
    pub standards: StandardSet,
    pub areas: AreaRegistry,
    pub b1_tables: Option<B1Tables>,
    texts: ReferenceTexts,
    /// `texts.fingerprint()`, computed once: every revision the server makes records it.
    fingerprint: String,
}

impl ReferenceData {
    /// The data built into this binary (no B1 tables).
    pub fn embedded() -> Result<ReferenceData, ReferenceError> {
        ReferenceData::from_texts(ReferenceTexts::embedded())
    }

    /// Parses and checks every text; one bad file refuses the whole bundle.
    pub fn from_texts(texts: ReferenceTexts) -> Result<ReferenceData, ReferenceError> {
        if texts.format != REFERENCE_FORMAT {
            return Err(ReferenceError::UnsupportedFormat {
                got: texts.format,
                expected: REFERENCE_FORMAT,
            });
        }
        let standards = StandardSet::parse(&texts.standards)?;
        let areas = AreaRegistry::parse(UNITS_2025_JSON, &texts.urban_rural)?;
        let b1_tables = match &texts.b1_table {
            Some(table) => Some(B1Tables::parse(table, &texts.b1_regions)?),
            None => None,
        };
        Ok(ReferenceData {
            standards,
            areas,
            b1_tables,
            fingerprint: texts.fingerprint(),
            texts,
        })
    }

    /// The texts this data was parsed from, to ship or store.
    pub fn texts(&self) -> &ReferenceTexts {
        &self.texts
    }

    /// The fingerprint of the texts this data was parsed from ([`ReferenceTexts::fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The classification input for a reference date.
    pub fn input(&self, reference_date: Date) -> ClassifyInput<'_> {
        ClassifyInput {
            reference_date,
            standards: &self.standards,
            areas: &self.areas,
            b1_tables: self.b1_tables.as_ref(),
        }
    }

    /// Classifies a household on its round's [`reference_date`]: the classification a device
    /// shows and the server stores with each revision.
    pub fn classify(&self, household: &Household) -> Classification {
        classify(household, &self.input(reference_date(household.round)))
    }

    /// [`Self::classify`] without its texts (`classify::decide`): what a store that keeps only
    /// the decision needs.
    pub fn decide(&self, household: &Household) -> Classification {
        crate::classify::decide(household, &self.input(reference_date(household.round)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::PovertyClass;

    fn round(year: u16, kind: RoundKind) -> ReviewRound {
        ReviewRound { year, kind }
    }

    #[test]
    fn a_periodic_round_uses_the_standard_of_the_year_its_list_applies_to() {
        let data = ReferenceData::embedded().expect("embedded data parses");
        let standard = |r: ReviewRound| {
            data.standards
                .for_date(reference_date(r))
                .map(|s| s.id.clone())
        };
        assert_eq!(
            reference_date(round(2025, RoundKind::Periodic)).to_string(),
            "2026-01-01"
        );
        assert_eq!(
            reference_date(round(2025, RoundKind::Monthly)).to_string(),
            "2025-01-01"
        );
        // The review at the end of 2021 drew up the 2022 list under ND 07/2021.
        assert_eq!(
            standard(round(2021, RoundKind::Periodic)).as_deref(),
            Some("ND07-2021")
        );
        assert_eq!(standard(round(2021, RoundKind::Monthly)), None);
        assert_eq!(
            standard(round(2025, RoundKind::Periodic)).as_deref(),
            Some("ND07-2021")
        );
        // 2026 keeps ND 07/2021; the review at the end of 2026 draws up the 2027 list.
        assert_eq!(
            standard(round(2026, RoundKind::Monthly)).as_deref(),
            Some("ND07-2021")
        );
        assert_eq!(
            standard(round(2026, RoundKind::Periodic)).as_deref(),
            Some("ND351-2025")
        );
    }

    #[test]
    fn texts_round_trip_and_a_bad_file_is_named() {
        let texts = ReferenceTexts::embedded();
        let json = serde_json::to_string(&texts).expect("serializes");
        assert_eq!(ReferenceTexts::from_json(&json), Ok(texts.clone()));
        let bytes = crate::codec::encode(&texts);
        assert_eq!(
            crate::codec::decode::<ReferenceTexts>(&bytes, bytes.len()),
            Ok(texts.clone())
        );
        assert_eq!(
            texts.fingerprint(),
            ReferenceTexts::embedded().fingerprint()
        );

        let broken = ReferenceTexts {
            standards: "{}".into(),
            ..texts.clone()
        };
        assert_ne!(broken.fingerprint(), texts.fingerprint());
        let error = ReferenceData::from_texts(broken).expect_err("refused");
        assert!(error.to_string().starts_with(STANDARDS_FILE), "{error}");

        let future = ReferenceTexts {
            format: 99,
            ..texts.clone()
        };
        assert!(matches!(
            ReferenceData::from_texts(future),
            Err(ReferenceError::UnsupportedFormat { got: 99, .. })
        ));
        let sample = ReferenceTexts {
            b1_table: Some(crate::b1::SAMPLE_TABLE_JSON.into()),
            ..texts
        };
        let data = ReferenceData::from_texts(sample).expect("a sample table loads");
        assert!(data.b1_tables.as_ref().is_some_and(|tables| tables.sample));
    }

    #[test]
    fn classify_dates_the_household_by_its_round() {
        let data = ReferenceData::embedded().expect("embedded data parses");
        let household: Household = serde_json::from_str(
            r#"{
            "id": "01900000-0000-7000-8000-000000000001",
            "round": {"year": 2025, "kind": "periodic"},
            "commune_code": "00640", "village": "Thôn Đông", "address": "Số 3",
            "members": [{"id": "01900000-0000-7000-8000-000000000002", "full_name": "Nguyễn Văn A",
                         "sex": "male", "date_of_birth": "1991-01-15", "relationship": "head",
                         "health_insurance": false}],
            "income": {"estimated_per_person_vnd": 1200000},
            "dwelling": {"durability": "makeshift", "floor_area_m2": 6}
        }"#,
        )
        .expect("valid household");
        let result = data.classify(&household);
        assert_eq!(result.class, PovertyClass::Poor);
        assert_eq!(result.reference_date.to_string(), "2026-01-01");
        assert_eq!(result.standard_id.as_deref(), Some("ND07-2021"));
        assert_eq!(result.deprivations.len(), 3);
    }
}
