//! Score A: form B1's proxy-means score, from the household's B1 answers and a region's point
//! table.
//!
//! The point tables (six rural regions plus urban) and the province → region mapping are data.
//! The official tables are not confirmed, so this crate ships the format, a loader
//! ([`B1Tables::parse`]) and a clearly labelled SAMPLE table ([`SAMPLE_TABLE_JSON`],
//! `"sample": true`) for tests; an official enters the real tables into a file of the same
//! format. Answers are kept raw in the household record so score A can be recomputed when a
//! table is corrected.
//!
//! A table file: `{"format": 1, "id", "sample", "note", "regions": {region: {"base": points,
//! "questions": {question code: {"label", "answers": {answer code: points}}}}}}`. Score A is the
//! region's base plus the points of each of its questions' answers. Every question of the
//! region's table must be answered with one of its codes; answers to questions the table does
//! not have are ignored, so answers recorded under an older table still score under a corrected
//! one.
//!
//! A region file: `{"format": 1, "provisional", "note", "provinces": {province code: region},
//! "communes": {commune code: region}}`. A commune entry wins over its province's, for merged
//! provinces that straddle two regions. An urban commune always uses the `urban` table.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::areas::Settlement;

/// The SAMPLE point table: made-up points, for tests and demonstrations only.
pub const SAMPLE_TABLE_JSON: &str = include_str!("../data/b1-sample-table.json");
/// The province → region mapping (provisional).
pub const REGIONS_JSON: &str = include_str!("../data/b1-regions.json");

/// The data format this build reads, for both files.
pub const B1_FORMAT: u32 = 1;

/// The regions with their own B1 point table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum B1Region {
    /// Trung du và miền núi phía Bắc.
    NorthernMidlandsAndMountains,
    /// Đồng bằng sông Hồng.
    RedRiverDelta,
    /// Bắc Trung Bộ và Duyên hải miền Trung.
    NorthCentralAndCentralCoast,
    /// Tây Nguyên.
    CentralHighlands,
    /// Đông Nam Bộ.
    Southeast,
    /// Đồng bằng sông Cửu Long.
    MekongDelta,
    /// Thành thị: every urban commune, whatever its province.
    Urban,
}

impl B1Region {
    pub const ALL: [B1Region; 7] = [
        B1Region::NorthernMidlandsAndMountains,
        B1Region::RedRiverDelta,
        B1Region::NorthCentralAndCentralCoast,
        B1Region::CentralHighlands,
        B1Region::Southeast,
        B1Region::MekongDelta,
        B1Region::Urban,
    ];

    pub fn label_vi(self) -> &'static str {
        match self {
            B1Region::NorthernMidlandsAndMountains => "Trung du và miền núi phía Bắc",
            B1Region::RedRiverDelta => "Đồng bằng sông Hồng",
            B1Region::NorthCentralAndCentralCoast => "Bắc Trung Bộ và Duyên hải miền Trung",
            B1Region::CentralHighlands => "Tây Nguyên",
            B1Region::Southeast => "Đông Nam Bộ",
            B1Region::MekongDelta => "Đồng bằng sông Cửu Long",
            B1Region::Urban => "thành thị",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            B1Region::NorthernMidlandsAndMountains => "northern midlands and mountains",
            B1Region::RedRiverDelta => "Red River Delta",
            B1Region::NorthCentralAndCentralCoast => "north central and central coast",
            B1Region::CentralHighlands => "Central Highlands",
            B1Region::Southeast => "Southeast",
            B1Region::MekongDelta => "Mekong Delta",
            B1Region::Urban => "urban",
        }
    }
}

/// Loading a table or region file failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum B1Error {
    #[error("tệp bảng điểm B1 không đọc được / the B1 file is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("tệp B1 định dạng {got}, bản này đọc định dạng {expected} / the B1 file has format {got}; this build reads format {expected}")]
    UnsupportedFormat { got: u32, expected: u32 },
    #[error("tệp B1: mã '{code}' không hợp lệ / the B1 file: code '{code}' is invalid")]
    BadCode { code: String },
    #[error("bảng điểm B1 vùng {region:?}: câu '{question}' không có phương án nào / the B1 table of {region:?}: question '{question}' has no answers")]
    EmptyQuestion { region: B1Region, question: String },
    #[error("bảng điểm B1 vùng {region:?}: tổng điểm tối đa quá lớn / the B1 table of {region:?}: its highest total does not fit")]
    TooManyPoints { region: B1Region },
}

/// Score A could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    #[error("chưa có bảng điểm B1 cho vùng {} / no B1 point table for region {}", .region.label_vi(), .region.label_en())]
    NoTable { region: B1Region },
    #[error("tỉnh {province} chưa được gán vùng B1 / province {province} has no B1 region")]
    NoRegion { province: String },
    #[error(
        "phiếu B1 thiếu câu trả lời cho câu {question} / B1 answer missing for question {question}"
    )]
    MissingAnswer { question: String },
    #[error("phiếu B1 câu {question}: phương án '{answer}' không có trong bảng điểm / B1 question {question}: answer '{answer}' is not in the point table")]
    UnknownAnswer { question: String, answer: String },
}

/// One question's points per answer code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionTable {
    #[serde(default)]
    pub label: String,
    pub answers: BTreeMap<String, u32>,
}

/// One region's point table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionTable {
    pub base: u32,
    pub questions: BTreeMap<String, QuestionTable>,
}

/// Where each province (or commune) takes its rural table from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionMap {
    pub format: u32,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub note: String,
    pub provinces: BTreeMap<String, B1Region>,
    #[serde(default)]
    pub communes: BTreeMap<String, B1Region>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    format: u32,
    id: String,
    sample: bool,
    #[serde(default)]
    note: String,
    regions: BTreeMap<B1Region, RegionTable>,
}

/// The point tables of every region and the region mapping, as one loaded set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct B1Tables {
    /// The table file's id, stored with score A so a recomputation can say what changed.
    pub id: String,
    /// True for a sample table, which must never classify a real household.
    pub sample: bool,
    pub note: String,
    pub tables: BTreeMap<B1Region, RegionTable>,
    pub regions: RegionMap,
}

impl B1Tables {
    /// The SAMPLE table with the embedded region mapping. For tests and demonstrations only.
    pub fn sample() -> Result<B1Tables, B1Error> {
        B1Tables::parse(SAMPLE_TABLE_JSON, REGIONS_JSON)
    }

    /// Parses and checks a table file and a region file.
    pub fn parse(table_json: &str, regions_json: &str) -> Result<B1Tables, B1Error> {
        let file: TableFile =
            serde_json::from_str(table_json).map_err(|e| B1Error::Json(e.to_string()))?;
        let regions: RegionMap =
            serde_json::from_str(regions_json).map_err(|e| B1Error::Json(e.to_string()))?;
        for format in [file.format, regions.format] {
            if format != B1_FORMAT {
                return Err(B1Error::UnsupportedFormat {
                    got: format,
                    expected: B1_FORMAT,
                });
            }
        }
        for code in regions.provinces.keys() {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(B1Error::BadCode { code: code.clone() });
            }
        }
        for code in regions.communes.keys() {
            if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(B1Error::BadCode { code: code.clone() });
            }
        }
        for (region, table) in &file.regions {
            let mut highest = u64::from(table.base);
            for (question, points) in &table.questions {
                if question.is_empty() || question.contains('.') {
                    return Err(B1Error::BadCode {
                        code: question.clone(),
                    });
                }
                let max = points
                    .answers
                    .values()
                    .max()
                    .ok_or(B1Error::EmptyQuestion {
                        region: *region,
                        question: question.clone(),
                    })?;
                highest += u64::from(*max);
            }
            if highest > u64::from(u32::MAX) {
                return Err(B1Error::TooManyPoints { region: *region });
            }
        }
        Ok(B1Tables {
            id: file.id,
            sample: file.sample,
            note: file.note,
            tables: file.regions,
            regions,
        })
    }

    /// The region whose table scores a household of this commune.
    pub fn region_for(
        &self,
        commune_code: &str,
        province_code: &str,
        settlement: Settlement,
    ) -> Result<B1Region, ScoreError> {
        if settlement == Settlement::Urban {
            return Ok(B1Region::Urban);
        }
        self.regions
            .communes
            .get(commune_code)
            .or_else(|| self.regions.provinces.get(province_code))
            .copied()
            .ok_or_else(|| ScoreError::NoRegion {
                province: province_code.to_string(),
            })
    }
}

/// Score A of a household's B1 answers (question code → answer code) under a region's table.
pub fn score_a(
    answers: &BTreeMap<String, String>,
    tables: &B1Tables,
    region: B1Region,
) -> Result<u32, ScoreError> {
    let table = tables
        .tables
        .get(&region)
        .ok_or(ScoreError::NoTable { region })?;
    // Loading checked that base plus every question's highest points fits in a u32.
    let mut total = table.base;
    for (question, points) in &table.questions {
        let answer = answers
            .get(question)
            .ok_or_else(|| ScoreError::MissingAnswer {
                question: question.clone(),
            })?;
        let got = points
            .answers
            .get(answer)
            .ok_or_else(|| ScoreError::UnknownAnswer {
                question: question.clone(),
                answer: answer.clone(),
            })?;
        total = total.saturating_add(*got);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::areas::AreaRegistry;

    fn answers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(q, a)| (q.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn the_sample_table_says_it_is_a_sample() {
        let tables = B1Tables::sample().expect("loads");
        assert!(tables.sample);
        assert!(tables
            .note
            .contains("SAMPLE POINT TABLE, NOT THE OFFICIAL ONE"));
        assert!(SAMPLE_TABLE_JSON.contains("\"sample\": true"));
        assert_eq!(tables.tables.len(), 7);
        for region in B1Region::ALL {
            assert!(tables.tables.contains_key(&region), "{region:?}");
        }
    }

    #[test]
    fn score_a_is_base_plus_each_answer() {
        let tables = B1Tables::sample().expect("loads");
        let full = answers(&[
            ("Q1", "2"),
            ("Q2", "2"),
            ("Q3", "2"),
            ("Q4", "2"),
            ("Q5", "1"),
        ]);
        assert_eq!(score_a(&full, &tables, B1Region::RedRiverDelta), Ok(141));
        assert_eq!(score_a(&full, &tables, B1Region::Urban), Ok(176));
        let mut extra = full.clone();
        extra.insert("Q99".into(), "7".into());
        assert_eq!(score_a(&extra, &tables, B1Region::RedRiverDelta), Ok(141));
    }

    #[test]
    fn a_missing_or_unknown_answer_is_named() {
        let tables = B1Tables::sample().expect("loads");
        let missing = answers(&[("Q1", "2"), ("Q2", "2"), ("Q4", "2"), ("Q5", "1")]);
        assert_eq!(
            score_a(&missing, &tables, B1Region::Southeast),
            Err(ScoreError::MissingAnswer {
                question: "Q3".into()
            })
        );
        let unknown = answers(&[
            ("Q1", "9"),
            ("Q2", "2"),
            ("Q3", "2"),
            ("Q4", "2"),
            ("Q5", "1"),
        ]);
        let error = score_a(&unknown, &tables, B1Region::Southeast).expect_err("unknown answer");
        assert_eq!(
            error,
            ScoreError::UnknownAnswer {
                question: "Q1".into(),
                answer: "9".into()
            }
        );
        assert!(error
            .to_string()
            .contains("answer '9' is not in the point table"));
    }

    #[test]
    fn every_province_has_a_region_and_urban_communes_use_the_urban_table() {
        let tables = B1Tables::sample().expect("loads");
        let areas = AreaRegistry::embedded().expect("loads");
        for province in areas.provinces() {
            assert!(
                tables.regions.provinces.contains_key(&province.code),
                "{} {}",
                province.code,
                province.name
            );
        }
        assert!(tables.regions.provisional);
        assert_eq!(
            tables.region_for("00004", "01", Settlement::Urban),
            Ok(B1Region::Urban)
        );
        assert_eq!(
            tables.region_for("12345", "96", Settlement::Rural),
            Ok(B1Region::MekongDelta)
        );
        assert_eq!(
            tables.region_for("12345", "77", Settlement::Rural),
            Err(ScoreError::NoRegion {
                province: "77".into()
            })
        );
    }

    #[test]
    fn commune_entries_win_over_their_province() {
        let regions = REGIONS_JSON.replace(
            "\"communes\": {}",
            "\"communes\": {\"23272\": \"central_highlands\"}",
        );
        let tables = B1Tables::parse(SAMPLE_TABLE_JSON, &regions).expect("loads");
        assert_eq!(
            tables.region_for("23272", "68", Settlement::Rural),
            Ok(B1Region::CentralHighlands)
        );
        let bad = REGIONS_JSON.replace("\"communes\": {}", "\"communes\": {\"123\": \"urban\"}");
        assert!(matches!(
            B1Tables::parse(SAMPLE_TABLE_JSON, &bad),
            Err(B1Error::BadCode { .. })
        ));
        let no_table = B1Tables::parse(
            r#"{"format": 1, "id": "t", "sample": true, "regions": {}}"#,
            REGIONS_JSON,
        )
        .expect("an empty table set loads");
        assert_eq!(
            score_a(&BTreeMap::new(), &no_table, B1Region::Urban),
            Err(ScoreError::NoTable {
                region: B1Region::Urban
            })
        );
    }
}
