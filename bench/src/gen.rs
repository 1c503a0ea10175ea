//! Deterministic households that look like a commune's survey: two to five members with
//! Vietnamese names, dates of birth, ID numbers and answers, a dwelling, form B1 answers and
//! causes of poverty. About 2 KB each as JSON, the size of the peer's documents
//! (`../shared/peers/pouchdb/gen.js`).
//!
//! Household `i` of seed `s` is always the same record, so the peer can be fed the very same
//! households (`--docs`) and a run can be repeated. Households come in blocks of
//! `per_commune` that share a commune, so the first block is one commune's households.

use protocol::household::{
    ChildNutrition, Date, Dwelling, Employment, GeoPoint, HouseDurability, Household,
    HouseholdFlags, IncomeEvidence, InformationDevice, Latrine, Member, PovertyCauses,
    Qualification, Relationship, ReviewRound, RoundKind, Sex, WasteHandling, WaterSource,
};
use uuid::Uuid;

/// A small, fast, seedable generator (SplitMix64): no dependency, the same numbers everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes10(&mut self) -> [u8; 10] {
        let a = self.next_u64().to_le_bytes();
        let b = self.next_u64().to_le_bytes();
        [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]]
    }

    /// A UUIDv7 at `unix_ms`, its random part from this generator.
    pub fn uuid_v7(&mut self, unix_ms: u64) -> Uuid {
        uuid::Builder::from_unix_timestamp_millis(unix_ms, &self.bytes10()).into_uuid()
    }
}

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý", "Lò", "Hà", "Sùng", "Giàng",
];
const MIDDLE_MALE: &[&str] = &["Văn", "Đức", "Minh", "Hữu", "Quang", "Công", "Thành"];
const MIDDLE_FEMALE: &[&str] = &["Thị", "Ngọc", "Thu", "Thanh", "Kim", "Mỹ", "Hồng"];
const GIVEN: &[&str] = &[
    "Ánh", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương",
    "Khánh", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Phúc", "Phương", "Quân", "Sơn", "Tâm",
    "Thảo", "Thắng", "Trang", "Trung", "Tuấn", "Vân", "Yến",
];
const ETHNICITY: &[&str] = &[
    "Kinh", "Kinh", "Kinh", "Tày", "Thái", "Mường", "Khmer", "H'Mông", "Nùng", "Dao",
];
const VILLAGE_KIND: &[&str] = &["Thôn", "Tổ dân phố", "Bản", "Ấp"];
const STREETS: &[&str] = &[
    "đường Lê Lợi",
    "đường Trần Hưng Đạo",
    "đường Nguyễn Trãi",
    "đường Quang Trung",
    "đường Hùng Vương",
    "đường liên xã",
    "đường Bờ Sông",
    "đường 30 Tháng 4",
];
const SUPPORT: &[&str] = &[
    "vay vốn ưu đãi",
    "hỗ trợ nhà ở",
    "học nghề",
    "bảo hiểm y tế",
    "nước sạch",
    "giống cây trồng",
    "hỗ trợ tiền điện",
    "miễn giảm học phí",
];
const SUPPORT_OTHER: &[&str] = &["thiên tai, lũ lụt", "mất mùa", "nợ tiền chữa bệnh"];

/// The households of a run: the communes they are spread over, and the seed.
#[derive(Clone, Debug)]
pub struct Generator {
    seed: u64,
    communes: Vec<String>,
    per_commune: usize,
    /// The survey day: no one is born after it, everyone's age is counted on it.
    today: Date,
}

impl Generator {
    /// Households in blocks of `per_commune` per commune, communes taken from the 2025 code
    /// set in a seeded order.
    pub fn new(seed: u64, per_commune: usize) -> anyhow::Result<Generator> {
        let areas = protocol::areas::AreaRegistry::embedded()
            .map_err(|error| anyhow::anyhow!("the embedded area data does not load: {error}"))?;
        let mut communes: Vec<String> = areas.communes().map(|c| c.code.clone()).collect();
        let mut rng = Rng::new(seed ^ 0xC033_00E5);
        // Fisher–Yates, so that the first commune is not always the capital's first ward.
        for i in (1..communes.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            communes.swap(i, j);
        }
        anyhow::ensure!(!communes.is_empty(), "the area data names no commune");
        Ok(Generator {
            seed,
            communes,
            per_commune: per_commune.max(1),
            today: Date::new(2025, 10, 1).ok_or_else(|| anyhow::anyhow!("bad date"))?,
        })
    }

    pub fn commune_of(&self, index: usize) -> &str {
        &self.communes[(index / self.per_commune) % self.communes.len()]
    }

    /// Household number `index`.
    pub fn household(&self, index: usize) -> Household {
        let mut rng = Rng::new(
            self.seed
                .wrapping_mul(1_000_003)
                .wrapping_add(index as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        // Ids carry the time the enumerator recorded the household: September–October 2025.
        let recorded_ms = 1_756_684_800_000 + rng.below(60 * 86_400_000);
        let id = rng.uuid_v7(recorded_ms);
        let commune_code = self.commune_of(index).to_string();
        let village = format!("{} {}", rng.pick(VILLAGE_KIND), 1 + rng.below(24));
        let address = format!(
            "Số {}, ngõ {}, {}",
            1 + rng.below(200),
            1 + rng.below(80),
            rng.pick(STREETS)
        );
        let gps = Some(GeoPoint {
            lat: round6(8.6 + rng.below(14_000_000) as f64 / 1_000_000.0),
            lon: round6(102.2 + rng.below(7_200_000) as f64 / 1_000_000.0),
        });
        let family = *rng.pick(FAMILY);
        let size = 2 + rng.below(4) as usize; // 2 to 5 members
        let mut members = Vec::with_capacity(size);
        for position in 0..size {
            members.push(self.member(&mut rng, recorded_ms, position, family));
        }
        let head_member_id = members.first().map(|m: &Member| m.id);
        let dwelling = Dwelling {
            durability: Some(*rng.pick(&[
                HouseDurability::Durable,
                HouseDurability::SemiDurable,
                HouseDurability::LessDurable,
                HouseDurability::Makeshift,
            ])),
            floor_area_m2: Some(12 + rng.below(120) as u32),
            water_source: Some(*rng.pick(&[
                WaterSource::PipedWater,
                WaterSource::ProtectedWell,
                WaterSource::Rainwater,
                WaterSource::UnprotectedWell,
                WaterSource::SurfaceWater,
            ])),
            latrine: Some(*rng.pick(&[
                Latrine::FlushOrPourFlush,
                Latrine::VentilatedPit,
                Latrine::UnhygienicPit,
                Latrine::None,
            ])),
            internet_use: Some(rng.chance(60)),
            information_devices: {
                let mut devices: Vec<InformationDevice> = [
                    InformationDevice::Smartphone,
                    InformationDevice::Phone,
                    InformationDevice::Television,
                    InformationDevice::Radio,
                ]
                .into_iter()
                .filter(|_| rng.chance(45))
                .collect();
                devices.sort();
                devices
            },
            waste_handling: Some(*rng.pick(&[
                WasteHandling::Collected,
                WasteHandling::BurnedOrBuried,
                WasteHandling::Dumped,
            ])),
            information_devices_asked: true,
            internet_access: Some(rng.chance(55)),
            digital_services_use: Some(rng.chance(35)),
        };
        let b1_answers = (1..=5)
            .map(|q| {
                (
                    format!("Q{q}"),
                    (1 + rng.below(if q == 1 { 4 } else { 2 })).to_string(),
                )
            })
            .collect();
        let support_needs = SUPPORT
            .iter()
            .filter(|_| rng.chance(20))
            .map(|s| (*s).to_string())
            .collect();
        Household {
            id,
            round: ReviewRound {
                year: 2025,
                kind: RoundKind::Periodic,
            },
            commune_code,
            village,
            address,
            gps,
            head_member_id,
            members,
            flags: HouseholdFlags {
                revolutionary_contributor: rng.chance(3),
                social_protection_beneficiary: rng.chance(12),
                no_working_capacity: rng.chance(5),
                farming_forestry_fishery_salt: rng.chance(55),
            },
            income: IncomeEvidence {
                estimated_per_person_vnd: Some(10_000 * (40 + rng.below(400))),
                b1_answers,
            },
            dwelling,
            causes_of_poverty: PovertyCauses {
                no_production_land: rng.chance(25),
                no_capital: rng.chance(40),
                no_labour: rng.chance(15),
                no_tools: rng.chance(15),
                no_know_how: rng.chance(20),
                no_skills: rng.chance(25),
                illness_or_accident: rng.chance(15),
                other: rng
                    .chance(10)
                    .then(|| (*rng.pick(SUPPORT_OTHER)).to_string()),
            },
            support_needs,
            void: None,
        }
    }

    fn member(&self, rng: &mut Rng, recorded_ms: u64, position: usize, family: &str) -> Member {
        let relationship = match position {
            0 => Relationship::Head,
            1 => *rng.pick(&[
                Relationship::Spouse,
                Relationship::Spouse,
                Relationship::Parent,
            ]),
            _ => *rng.pick(&[
                Relationship::Child,
                Relationship::Child,
                Relationship::Child,
                Relationship::Grandchild,
                Relationship::Sibling,
                Relationship::Other,
            ]),
        };
        let age: i32 = match relationship {
            Relationship::Head => 24 + rng.below(55) as i32,
            Relationship::Spouse | Relationship::Sibling => 20 + rng.below(55) as i32,
            Relationship::Parent => 55 + rng.below(35) as i32,
            Relationship::Child => rng.below(30) as i32,
            Relationship::Grandchild => rng.below(12) as i32,
            Relationship::Other => rng.below(80) as i32,
        };
        let sex = if rng.chance(50) {
            Sex::Male
        } else {
            Sex::Female
        };
        let middle = match sex {
            Sex::Male => rng.pick(MIDDLE_MALE),
            Sex::Female => rng.pick(MIDDLE_FEMALE),
        };
        let surname = if relationship == Relationship::Spouse {
            *rng.pick(FAMILY)
        } else {
            family
        };
        let full_name = format!("{surname} {middle} {}", rng.pick(GIVEN));
        let born = Date::from_unix_days(
            i64::from(self.today.year - age - 1970) * 365 - rng.below(330) as i64,
        );
        let adult = age >= 15;
        let child = age < 16;
        Member {
            id: rng.uuid_v7(recorded_ms + position as u64),
            full_name,
            sex,
            date_of_birth: born,
            personal_id: adult.then(|| format!("{:012}", rng.below(1_000_000_000_000))),
            relationship,
            ethnicity: Some((*rng.pick(ETHNICITY)).to_string()),
            in_school: (6..=22).contains(&age).then(|| rng.chance(80)),
            qualification: (age >= 6).then(|| {
                *rng.pick(&[
                    Qualification::None,
                    Qualification::Primary,
                    Qualification::LowerSecondary,
                    Qualification::UpperSecondary,
                    Qualification::Vocational,
                    Qualification::CollegeOrUniversity,
                ])
            }),
            employment: adult.then(|| {
                *rng.pick(&[
                    Employment::WageWithContract,
                    Employment::WageWithoutContract,
                    Employment::SelfEmployed,
                    Employment::Unemployed,
                    Employment::NotInLabourForce,
                ])
            }),
            has_pension: (age >= 55).then(|| rng.chance(30)),
            health_insurance: Some(rng.chance(85)),
            disability_or_severe_illness: Some(rng.chance(6)),
            child_nutrition: child.then(|| {
                *rng.pick(&[
                    ChildNutrition::Normal,
                    ChildNutrition::Normal,
                    ChildNutrition::Normal,
                    ChildNutrition::Stunted,
                    ChildNutrition::Underweight,
                ])
            }),
        }
    }

    /// The household as one JSON line for the peer: the record itself, which names itself
    /// with `id`.
    pub fn json_line(&self, index: usize) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&self.household(index))?)
    }
}

/// Writes a raw-content zstd dictionary for the stores' rows: the encoded classifications of
/// four households, a mutation creating one, and the field maps of three (the most common
/// values last, where zstd's offsets are cheapest). From seed 7, so that the benchmark's own
/// households (seed 42) are not in it.
/// The zstd dictionary the stores pack rows with (dictionary 2, `protocol::codec::packed`):
/// trained on the encoded field maps, classifications and create mutations of 2,000 generated
/// households of seed 7 (not the seed the benchmark measures with). A trained dictionary
/// carries entropy tables as well as content, so a frame does not build its own: against
/// dictionary 1 (raw content, the maps of a few of the same households) a field map packs in
/// three fifths of the time, to a sixth fewer bytes. Training is deterministic; a test holds
/// the frozen file to what this makes.
pub fn row_dictionary() -> anyhow::Result<Vec<u8>> {
    use protocol::codec::encode;
    const HOUSEHOLDS: usize = 2_000;
    const DICTIONARY_BYTES: usize = 32 * 1024;
    let generator = Generator::new(7, 100)?;
    let reference = protocol::reference::ReferenceData::embedded()?;
    let mut samples = Vec::new();
    let mut sizes = Vec::new();
    for index in 0..HOUSEHOLDS {
        let household = generator.household(index);
        let fields = protocol::fields::flatten(&household);
        let created = protocol::sync::Mutation {
            seq: index as u64 + 1,
            household_id: household.id,
            base: protocol::sync::Base::New,
            changes: protocol::fields::diff(&protocol::fields::FieldMap::new(), &fields),
            made_at_ms: 1_759_000_000_000,
        };
        for value in [
            encode(&fields),
            encode(&reference.classify(&household)),
            encode(&created),
        ] {
            sizes.push(value.len());
            samples.extend(value);
        }
    }
    zstd::dict::from_continuous(&samples, &sizes, DICTIONARY_BYTES)
        .map_err(|error| anyhow::anyhow!("training the row dictionary: {error}"))
}

pub fn write_row_dictionary(out: &std::path::Path) -> anyhow::Result<()> {
    let dictionary = row_dictionary()?;
    std::fs::write(out, &dictionary)?;
    eprintln!("wrote {} bytes to {}", dictionary.len(), out.display());
    Ok(())
}

fn round6(x: f64) -> f64 {
    (x * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are packed with the frozen file: training must still make it byte for byte, or
    /// `bench row-dictionary` no longer says how it was made.
    #[test]
    fn the_frozen_row_dictionary_is_what_training_makes() -> anyhow::Result<()> {
        assert!(row_dictionary()? == protocol::codec::packed::ROW_DICTIONARY_2);
        Ok(())
    }

    #[test]
    fn households_are_valid_deterministic_and_about_two_kilobytes() -> anyhow::Result<()> {
        let generator = Generator::new(42, 100)?;
        let again = Generator::new(42, 100)?;
        let mut json_bytes = 0;
        for i in 0..200 {
            let household = generator.household(i);
            assert_eq!(household, again.household(i));
            let today = Date::new(2025, 10, 1).ok_or_else(|| anyhow::anyhow!("date"))?;
            let fields = protocol::fields::flatten(&household);
            let rebuilt = protocol::validate::household_from_fields(&fields, today);
            assert!(rebuilt.is_ok(), "household {i}: {rebuilt:?}");
            json_bytes += generator.json_line(i)?.len();
        }
        let average = json_bytes / 200;
        assert!((1_500..=2_600).contains(&average), "{average} bytes");
        assert_eq!(generator.commune_of(0), generator.commune_of(99));
        assert_ne!(generator.commune_of(99), generator.commune_of(100));
        Ok(())
    }
}
