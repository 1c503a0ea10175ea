//! The administrative areas: 34 provinces and 3,321 communes, wards and special zones with their
//! official GSO codes (Quyết định 19/2025/QĐ-TTg, in force from 1 July 2025), and whether each
//! commune counts as urban or rural for a period.
//!
//! Both are reference data parsed from text, never read from disk here: the defaults are
//! embedded ([`UNITS_2025_JSON`], [`URBAN_RURAL_2025_JSON`]) and a server can load a corrected
//! file with [`AreaRegistry::parse`] and ship its text to devices.
//!
//! Codes are text: provinces have 2 digits (`"01"`), communes 5 (`"00004"`), zero-padded as in
//! the household record. A code is meaningless without its code set (codes of merged units are
//! reused), so a registry knows the one code set it was built from.
//!
//! Rural or urban is a property of the commune for a period, not of its name: a ward (phường) is
//! urban and a commune (xã) rural by default, special zones (đặc khu) follow a configurable
//! default, and an override table sets any commune for a period.
//!
//! Villages (thôn, tổ dân phố, bản, ấp) have no national code; communes manage them locally, so
//! [`Village`] only ties a name to a known commune.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::household::{Date, Household};

/// The 2025 code set: 34 provinces and 3,321 commune-level units.
pub const UNITS_2025_JSON: &str = include_str!("../data/vn-admin-units-2025.json");
/// The default rural/urban rules for the 2025 code set.
pub const URBAN_RURAL_2025_JSON: &str = include_str!("../data/urban-rural-2025.json");

/// What went wrong looking up an area or loading area data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    #[error("mã xã '{code}' phải có đúng 5 chữ số / commune code '{code}' must be exactly 5 digits (GSO code, e.g. 00004)")]
    MalformedCommuneCode { code: String },
    #[error("mã tỉnh '{code}' phải có đúng 2 chữ số / province code '{code}' must be exactly 2 digits (GSO code, e.g. 01)")]
    MalformedProvinceCode { code: String },
    #[error("mã xã '{code}' không có trong danh mục đơn vị hành chính 2025 / commune code '{code}' is not in the 2025 code set: check the code on the commune's documents")]
    UnknownCommune { code: String },
    #[error("mã tỉnh '{code}' không có trong danh mục đơn vị hành chính 2025 / province code '{code}' is not in the 2025 code set")]
    UnknownProvince { code: String },
    #[error("tên thôn/tổ dân phố trống / the village name is empty")]
    EmptyVillageName,
    #[error("dữ liệu đơn vị hành chính không đọc được / the area data is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("dữ liệu đơn vị hành chính: mã {code} xuất hiện hai lần / area data: code {code} appears twice")]
    DuplicateCode { code: String },
    #[error("dữ liệu đơn vị hành chính: mã {code} vượt quá số chữ số cho phép / area data: code {code} is too long")]
    CodeOutOfRange { code: u32 },
    #[error("dữ liệu đơn vị hành chính: loại đơn vị '{unit_type}' (mã {code}) không được hỗ trợ / area data: unit type '{unit_type}' of {code} is not supported")]
    UnknownUnitType { code: String, unit_type: String },
    #[error("quy tắc thành thị/nông thôn: thiếu mặc định cho loại '{unit_type}' / urban-rural rules: no default for unit type '{unit_type}'")]
    MissingDefault { unit_type: String },
    #[error("quy tắc thành thị/nông thôn: mã xã {code} có thời kỳ sai hoặc chồng lấn / urban-rural rules: commune {code} has a period that ends before it starts or overlaps another")]
    BadOverridePeriod { code: String },
}

/// A province or centrally governed city.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Province {
    /// Two-digit GSO code, e.g. `"01"` for Hà Nội.
    pub code: String,
    pub name: String,
    pub kind: ProvinceKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvinceKind {
    /// Tỉnh.
    Province,
    /// Thành phố trực thuộc trung ương.
    CentralCity,
}

impl ProvinceKind {
    pub fn label_vi(self) -> &'static str {
        match self {
            ProvinceKind::Province => "tỉnh",
            ProvinceKind::CentralCity => "thành phố trung ương",
        }
    }

    fn from_vi(text: &str) -> Option<ProvinceKind> {
        match text {
            "tỉnh" => Some(ProvinceKind::Province),
            "thành phố trung ương" => Some(ProvinceKind::CentralCity),
            _ => None,
        }
    }
}

/// A commune-level unit: a commune, a ward or a special zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commune {
    /// Five-digit GSO code, e.g. `"00004"` for phường Ba Đình.
    pub code: String,
    pub name: String,
    pub kind: CommuneKind,
    /// The two-digit code of the province it belongs to.
    pub province_code: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommuneKind {
    /// Xã.
    Commune,
    /// Phường.
    Ward,
    /// Đặc khu.
    SpecialZone,
}

impl CommuneKind {
    pub const ALL: [CommuneKind; 3] = [
        CommuneKind::Commune,
        CommuneKind::Ward,
        CommuneKind::SpecialZone,
    ];

    pub fn label_vi(self) -> &'static str {
        match self {
            CommuneKind::Commune => "xã",
            CommuneKind::Ward => "phường",
            CommuneKind::SpecialZone => "đặc khu",
        }
    }

    pub fn from_vi(text: &str) -> Option<CommuneKind> {
        CommuneKind::ALL
            .into_iter()
            .find(|kind| kind.label_vi() == text)
    }
}

/// Rural (nông thôn) or urban (thành thị, đô thị): selects the income line and the score line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    Rural,
    Urban,
}

impl Settlement {
    pub fn label_vi(self) -> &'static str {
        match self {
            Settlement::Rural => "nông thôn",
            Settlement::Urban => "thành thị",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Settlement::Rural => "rural",
            Settlement::Urban => "urban",
        }
    }
}

/// The default settlement of one unit type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementDefault {
    /// The unit type as the code set writes it: `xã`, `phường`, `đặc khu`.
    pub unit_type: String,
    pub settlement: Settlement,
    /// Set when the value awaits confirmation by an official.
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// One commune's settlement for a period, overriding its unit type's default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementOverride {
    pub commune_code: String,
    pub from: Date,
    /// The last day it applies, inclusive; `None` while it still applies.
    #[serde(default)]
    pub until: Option<Date>,
    pub settlement: Settlement,
    #[serde(default)]
    pub note: Option<String>,
}

impl SettlementOverride {
    fn covers(&self, on: Date) -> bool {
        self.from <= on && self.until.is_none_or(|until| on <= until)
    }
}

/// The rural/urban rules: a default per unit type and overrides per commune and period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementRules {
    pub format: u32,
    #[serde(default)]
    pub note: String,
    pub defaults: Vec<SettlementDefault>,
    #[serde(default)]
    pub overrides: Vec<SettlementOverride>,
}

impl SettlementRules {
    /// Parses and checks rules; overrides are checked against the code set when a registry is
    /// built from them.
    pub fn parse(text: &str) -> Result<SettlementRules, AreaError> {
        let rules: SettlementRules =
            serde_json::from_str(text).map_err(|e| AreaError::Json(e.to_string()))?;
        for default in &rules.defaults {
            if CommuneKind::from_vi(&default.unit_type).is_none() {
                return Err(AreaError::UnknownUnitType {
                    code: "-".into(),
                    unit_type: default.unit_type.clone(),
                });
            }
        }
        for kind in CommuneKind::ALL {
            if !rules
                .defaults
                .iter()
                .any(|d| d.unit_type == kind.label_vi())
            {
                return Err(AreaError::MissingDefault {
                    unit_type: kind.label_vi().into(),
                });
            }
        }
        for (i, a) in rules.overrides.iter().enumerate() {
            check_commune_code(&a.commune_code)?;
            if a.until.is_some_and(|until| until < a.from) {
                return Err(AreaError::BadOverridePeriod {
                    code: a.commune_code.clone(),
                });
            }
            for b in &rules.overrides[i + 1..] {
                let overlap = b.commune_code == a.commune_code
                    && a.until.is_none_or(|until| b.from <= until)
                    && b.until.is_none_or(|until| a.from <= until);
                if overlap {
                    return Err(AreaError::BadOverridePeriod {
                        code: a.commune_code.clone(),
                    });
                }
            }
        }
        Ok(rules)
    }

    fn default_for(&self, kind: CommuneKind) -> Option<&SettlementDefault> {
        self.defaults
            .iter()
            .find(|default| default.unit_type == kind.label_vi())
    }
}

/// A village or residential group, named by its commune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Village {
    pub commune_code: String,
    pub name: String,
}

impl Village {
    /// A village of a commune the registry knows, with a non-empty name.
    pub fn new(areas: &AreaRegistry, commune_code: &str, name: &str) -> Result<Village, AreaError> {
        areas.commune(commune_code)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(AreaError::EmptyVillageName);
        }
        Ok(Village {
            commune_code: commune_code.to_string(),
            name: name.to_string(),
        })
    }

    /// The village a household is recorded in, checked against the registry.
    pub fn of(areas: &AreaRegistry, household: &Household) -> Result<Village, AreaError> {
        Village::new(areas, &household.commune_code, &household.village)
    }
}

/// The code set and the rural/urban rules, indexed by code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AreaRegistry {
    source: String,
    provinces: BTreeMap<String, Province>,
    communes: BTreeMap<String, Commune>,
    rules: SettlementRules,
}

#[derive(Deserialize)]
struct UnitsFile {
    source: String,
    provinces: Vec<ProvinceRow>,
}

#[derive(Deserialize)]
struct ProvinceRow {
    code: u32,
    name: String,
    #[serde(rename = "type")]
    unit_type: String,
    communes: Vec<CommuneRow>,
}

#[derive(Deserialize)]
struct CommuneRow {
    code: u32,
    name: String,
    #[serde(rename = "type")]
    unit_type: String,
}

impl AreaRegistry {
    /// The embedded 2025 code set with the embedded rural/urban rules.
    pub fn embedded() -> Result<AreaRegistry, AreaError> {
        AreaRegistry::parse(UNITS_2025_JSON, URBAN_RURAL_2025_JSON)
    }

    /// Builds a registry from the code set (`vn-admin-units-2025.json`'s shape) and the
    /// rural/urban rules (`urban-rural-2025.json`'s shape).
    pub fn parse(units_json: &str, urban_rural_json: &str) -> Result<AreaRegistry, AreaError> {
        let rules = SettlementRules::parse(urban_rural_json)?;
        let file: UnitsFile =
            serde_json::from_str(units_json).map_err(|e| AreaError::Json(e.to_string()))?;
        let mut provinces = BTreeMap::new();
        let mut communes = BTreeMap::new();
        for row in file.provinces {
            if row.code > 99 {
                return Err(AreaError::CodeOutOfRange { code: row.code });
            }
            let code = format!("{:02}", row.code);
            let kind = ProvinceKind::from_vi(&row.unit_type).ok_or_else(|| {
                AreaError::UnknownUnitType {
                    code: code.clone(),
                    unit_type: row.unit_type.clone(),
                }
            })?;
            for commune in row.communes {
                if commune.code > 99_999 {
                    return Err(AreaError::CodeOutOfRange { code: commune.code });
                }
                let commune_code = format!("{:05}", commune.code);
                let kind = CommuneKind::from_vi(&commune.unit_type).ok_or_else(|| {
                    AreaError::UnknownUnitType {
                        code: commune_code.clone(),
                        unit_type: commune.unit_type.clone(),
                    }
                })?;
                let previous = communes.insert(
                    commune_code.clone(),
                    Commune {
                        code: commune_code.clone(),
                        name: commune.name,
                        kind,
                        province_code: code.clone(),
                    },
                );
                if previous.is_some() {
                    return Err(AreaError::DuplicateCode { code: commune_code });
                }
            }
            let previous = provinces.insert(
                code.clone(),
                Province {
                    code: code.clone(),
                    name: row.name,
                    kind,
                },
            );
            if previous.is_some() {
                return Err(AreaError::DuplicateCode { code });
            }
        }
        for o in &rules.overrides {
            if !communes.contains_key(&o.commune_code) {
                return Err(AreaError::UnknownCommune {
                    code: o.commune_code.clone(),
                });
            }
        }
        Ok(AreaRegistry {
            source: file.source,
            provinces,
            communes,
            rules,
        })
    }

    /// Where the code set comes from, as its file says.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn rules(&self) -> &SettlementRules {
        &self.rules
    }

    /// Provinces in code order.
    pub fn provinces(&self) -> impl Iterator<Item = &Province> {
        self.provinces.values()
    }

    /// Communes in code order.
    pub fn communes(&self) -> impl Iterator<Item = &Commune> {
        self.communes.values()
    }

    /// The communes of one province, in code order.
    pub fn communes_of<'a>(&'a self, province_code: &'a str) -> impl Iterator<Item = &'a Commune> {
        self.communes
            .values()
            .filter(move |commune| commune.province_code == province_code)
    }

    pub fn province(&self, code: &str) -> Result<&Province, AreaError> {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AreaError::MalformedProvinceCode { code: code.into() });
        }
        self.provinces
            .get(code)
            .ok_or_else(|| AreaError::UnknownProvince { code: code.into() })
    }

    pub fn commune(&self, code: &str) -> Result<&Commune, AreaError> {
        check_commune_code(code)?;
        self.communes
            .get(code)
            .ok_or_else(|| AreaError::UnknownCommune { code: code.into() })
    }

    /// The province a commune belongs to.
    pub fn province_of(&self, commune_code: &str) -> Result<&Province, AreaError> {
        let commune = self.commune(commune_code)?;
        self.province(&commune.province_code)
    }

    /// Whether the commune counts as rural or urban on `on`: an override covering that day if
    /// there is one, else its unit type's default.
    pub fn settlement(&self, commune_code: &str, on: Date) -> Result<Settlement, AreaError> {
        let commune = self.commune(commune_code)?;
        if let Some(o) = self
            .rules
            .overrides
            .iter()
            .find(|o| o.commune_code == commune.code && o.covers(on))
        {
            return Ok(o.settlement);
        }
        self.rules
            .default_for(commune.kind)
            .map(|default| default.settlement)
            .ok_or_else(|| AreaError::MissingDefault {
                unit_type: commune.kind.label_vi().into(),
            })
    }

    pub fn is_urban(&self, commune_code: &str, on: Date) -> Result<bool, AreaError> {
        Ok(self.settlement(commune_code, on)? == Settlement::Urban)
    }
}

/// An area error is a schema problem when a household names an unknown commune.
impl From<AreaError> for crate::validate::Problem {
    fn from(error: AreaError) -> crate::validate::Problem {
        crate::validate::Problem(error.to_string())
    }
}

fn check_commune_code(code: &str) -> Result<(), AreaError> {
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AreaError::MalformedCommuneCode { code: code.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().expect("valid date")
    }

    fn registry() -> AreaRegistry {
        AreaRegistry::embedded().expect("the embedded area data loads")
    }

    #[test]
    fn the_2025_code_set_has_34_provinces_and_3321_communes() {
        let areas = registry();
        assert_eq!(areas.provinces().count(), 34);
        assert_eq!(areas.communes().count(), 3_321);
        let kinds = |kind| areas.communes().filter(|c| c.kind == kind).count();
        assert_eq!(kinds(CommuneKind::Commune), 2_621);
        assert_eq!(kinds(CommuneKind::Ward), 687);
        assert_eq!(kinds(CommuneKind::SpecialZone), 13);
        assert_eq!(
            areas
                .provinces()
                .filter(|p| p.kind == ProvinceKind::CentralCity)
                .count(),
            6
        );
        let total: usize = areas
            .provinces()
            .map(|p| areas.communes_of(&p.code).count())
            .sum();
        assert_eq!(total, 3_321);
    }

    #[test]
    fn lookups_use_zero_padded_official_codes() {
        let areas = registry();
        let ba_dinh = areas.commune("00004").expect("known");
        assert_eq!(ba_dinh.name, "Phường Ba Đình");
        assert_eq!(ba_dinh.kind, CommuneKind::Ward);
        assert_eq!(
            areas.province_of("00004").expect("known").name,
            "Thành phố Hà Nội"
        );
        // Code 15 was Yên Bái before the merger and is Lào Cai now.
        assert_eq!(areas.province("15").expect("known").name, "Lào Cai");
    }

    #[test]
    fn unknown_and_malformed_codes_are_clear_errors() {
        let areas = registry();
        let on = day("2025-09-01");
        assert_eq!(
            areas.commune("99999"),
            Err(AreaError::UnknownCommune {
                code: "99999".into()
            })
        );
        assert_eq!(
            areas.is_urban("4", on),
            Err(AreaError::MalformedCommuneCode { code: "4".into() })
        );
        assert!(matches!(
            areas.province_of("0000x"),
            Err(AreaError::MalformedCommuneCode { .. })
        ));
        assert!(matches!(
            areas.province("77"),
            Err(AreaError::UnknownProvince { .. })
        ));
        let message = areas.commune("99999").expect_err("unknown").to_string();
        assert!(
            message.contains("'99999' is not in the 2025 code set"),
            "{message}"
        );
    }

    #[test]
    fn wards_are_urban_communes_rural_special_zones_by_their_default() {
        let areas = registry();
        let on = day("2025-09-01");
        assert_eq!(areas.is_urban("00004", on), Ok(true));
        let xa = areas
            .communes()
            .find(|c| c.kind == CommuneKind::Commune)
            .expect("some commune");
        assert_eq!(areas.settlement(&xa.code, on), Ok(Settlement::Rural));
        // Phú Quốc, a special zone, follows the configurable special-zone default.
        assert_eq!(areas.settlement("31078", on), Ok(Settlement::Rural));
        assert!(areas
            .rules()
            .defaults
            .iter()
            .any(|d| d.unit_type == "đặc khu" && d.provisional));
    }

    #[test]
    fn overrides_apply_for_their_period_only() {
        let rules = r#"{
            "format": 1,
            "defaults": [
                {"unit_type": "phường", "settlement": "urban"},
                {"unit_type": "xã", "settlement": "rural"},
                {"unit_type": "đặc khu", "settlement": "urban"}
            ],
            "overrides": [
                {"commune_code": "31078", "from": "2025-07-01", "until": "2026-12-31", "settlement": "rural"},
                {"commune_code": "00004", "from": "2027-01-01", "settlement": "rural"}
            ]
        }"#;
        let areas = AreaRegistry::parse(UNITS_2025_JSON, rules).expect("valid");
        assert_eq!(
            areas.settlement("31078", day("2026-12-31")),
            Ok(Settlement::Rural)
        );
        assert_eq!(
            areas.settlement("31078", day("2027-01-01")),
            Ok(Settlement::Urban)
        );
        assert_eq!(areas.is_urban("00004", day("2026-12-31")), Ok(true));
        assert_eq!(areas.is_urban("00004", day("2040-01-01")), Ok(false));
    }

    #[test]
    fn bad_rules_are_refused() {
        let overlap = r#"{"format": 1,
            "defaults": [{"unit_type": "phường", "settlement": "urban"},
                         {"unit_type": "xã", "settlement": "rural"},
                         {"unit_type": "đặc khu", "settlement": "rural"}],
            "overrides": [
                {"commune_code": "00004", "from": "2025-07-01", "settlement": "rural"},
                {"commune_code": "00004", "from": "2026-01-01", "until": "2026-02-01", "settlement": "urban"}]}"#;
        assert!(matches!(
            AreaRegistry::parse(UNITS_2025_JSON, overlap),
            Err(AreaError::BadOverridePeriod { .. })
        ));
        let unknown = overlap.replace("\"00004\", \"from\": \"2026", "\"99999\", \"from\": \"2026");
        assert!(matches!(
            AreaRegistry::parse(UNITS_2025_JSON, &unknown),
            Err(AreaError::UnknownCommune { .. })
        ));
        let no_default =
            r#"{"format": 1, "defaults": [{"unit_type": "xã", "settlement": "rural"}]}"#;
        assert!(matches!(
            SettlementRules::parse(no_default),
            Err(AreaError::MissingDefault { .. })
        ));
        assert!(matches!(
            AreaRegistry::parse("{", URBAN_RURAL_2025_JSON),
            Err(AreaError::Json(_))
        ));
    }

    #[test]
    fn a_village_needs_a_known_commune_and_a_name() {
        let areas = registry();
        assert_eq!(
            Village::new(&areas, "00004", " Tổ dân phố 3 "),
            Ok(Village {
                commune_code: "00004".into(),
                name: "Tổ dân phố 3".into()
            })
        );
        assert_eq!(
            Village::new(&areas, "00004", "  "),
            Err(AreaError::EmptyVillageName)
        );
        assert!(matches!(
            Village::new(&areas, "12345", "Thôn 1"),
            Err(AreaError::UnknownCommune { .. })
        ));
        // For a household, an unknown commune is a schema problem the enumerator can act on.
        let household: Household = serde_json::from_str(
            r#"{"id": "01900000-0000-7000-8000-000000000001",
                "round": {"year": 2025, "kind": "periodic"},
                "commune_code": "12345", "village": "Thôn 1", "address": "Số 1"}"#,
        )
        .expect("a household");
        let problem: crate::validate::Problem = Village::of(&areas, &household)
            .expect_err("unknown commune")
            .into();
        assert!(problem
            .0
            .contains("commune code '12345' is not in the 2025 code set"));
    }
}
