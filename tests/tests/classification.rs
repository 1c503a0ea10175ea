//! Classification end to end: the field app `ho` shows the class and its reasons offline, the
//! server stores the same classification with each revision, a reference-data correction is
//! one recomputation away, and an unknown commune is refused with a reason a person can read.
//!
//! The binaries `ho` and `server` are run as child processes. They sit next to this test's
//! binary's folder (`target/debug/`); `cargo test` does not build the binaries of other
//! packages, so [`binary`] builds them with the same cargo first (a no-op when up to date).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use client_core::{Request, Response, Store, Transport, TransportError};
use proptest::prop_assert_eq;
use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use protocol::classify::{Classification, PovertyClass};
use protocol::household::{
    ChildNutrition, Dwelling, Employment, HouseDurability, Household, HouseholdFlags,
    IncomeEvidence, Latrine, Member, PovertyCauses, Qualification, Relationship, ReviewRound,
    RoundKind, Sex, WasteHandling, WaterSource,
};
use protocol::reference::STANDARDS_FILE;
use protocol::standards::STANDARDS_JSON;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::util::{Device, TestServer, ADMIN, ALL_AREAS, PASSWORD};

/// Xã Thanh Trì, Hà Nội: rural.
const RURAL: &str = "00640";

/// The path of a workspace binary, built first with the cargo running these tests.
fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // target/<profile>/deps/e2e-<hash> → target/<profile>/
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, "--bin", name]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        if let Some(target_dir) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
    }
    assert!(
        path.exists(),
        "{name} is not at {}: build it with `cargo build -p {package} --bin {name}`",
        path.display()
    );
    built.insert(name.to_string(), path.clone());
    path
}

/// The field app on one device store.
struct Ho {
    bin: PathBuf,
    store: tempfile::TempDir,
}

impl Ho {
    fn new() -> Ho {
        Ho {
            bin: binary("client-core", "ho"),
            store: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--store")
            .arg(self.store.path())
            .args(args)
            .env_remove("HO_STORE")
            .env("HO_PASSWORD", PASSWORD)
            .output()
            .expect("ho runs")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn text(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "ho {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs a command with `--json` that must succeed and returns its document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.text(&all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("ho {args:?}: {e}: {stdout}"))
    }
}

/// A household file for `ho add --json FILE`, without ids (the app makes them): rural, income
/// under the line, and three deprivations: the head has no health insurance, the house is
/// makeshift, and 10 m² for two people is under 8 m² a person.
fn poor_household_file(income: u64) -> Value {
    json!({
        "round": {"year": 2025, "kind": "periodic"},
        "commune_code": RURAL,
        "village": "Thôn Đông",
        "address": "Số 3, xóm Chùa",
        "members": [
            {"full_name": "Nguyễn Văn A", "sex": "male", "date_of_birth": "1991-01-15",
             "relationship": "head", "health_insurance": false, "in_school": false,
             "qualification": "upper_secondary", "employment": "self_employed"},
            {"full_name": "Trần Thị Bình", "sex": "female", "date_of_birth": "1993-03-02",
             "relationship": "spouse", "health_insurance": true, "in_school": false,
             "qualification": "upper_secondary", "employment": "self_employed"}
        ],
        "income": {"estimated_per_person_vnd": income},
        "dwelling": {"durability": "makeshift", "floor_area_m2": 10}
    })
}

fn classification_of(document: &Value) -> Classification {
    serde_json::from_value(document["classification"].clone())
        .unwrap_or_else(|e| panic!("no classification in {document}: {e}"))
}

fn stored_classification(server: &TestServer, id: Uuid) -> Classification {
    server
        .registry()
        .household(id)
        .expect("read registry")
        .unwrap_or_else(|| panic!("the registry does not have household {id}"))
        .classification
        .unwrap_or_else(|| panic!("household {id} has no stored classification"))
}

async fn get_json(url: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    serde_json::from_str(&response.text().await.expect("a body")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_household_surveyed_offline_shows_poor_with_three_reasons_and_the_server_stores_the_same()
{
    let server = TestServer::start().await;
    let ho = Ho::new();
    // Set up while online; everything after this and before `sync` is offline.
    ho.text(&["init", "--server", &server.url, "--user", ALL_AREAS]);
    let file = ho.store.path().with_extension("household.json");
    std::fs::write(&file, poor_household_file(1_200_000).to_string()).expect("write file");

    // Saved offline: no sync yet.
    let saved = ho.json(&["add", "--json", file.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&file);
    let id = saved["household_id"]
        .as_str()
        .expect("the new household's id")
        .to_string();
    let on_device = classification_of(&saved);
    assert_eq!(on_device.class, PovertyClass::Poor, "{saved}");
    assert_eq!(on_device.standard_id.as_deref(), Some("ND07-2021"));
    assert_eq!(on_device.reference_date.to_string(), "2026-01-01");
    let indicators: Vec<&str> = on_device
        .deprivations
        .iter()
        .map(|d| d.indicator.code())
        .collect();
    assert_eq!(
        indicators,
        ["health_insurance", "housing_quality", "floor_area"]
    );
    assert_eq!(
        on_device.deprivations[0].reason,
        "thành viên Nguyễn Văn A, 34 tuổi, không có bảo hiểm y tế / member Nguyễn Văn A, 34, no health insurance"
    );

    // The text the enumerator reads names the class and every reason.
    let shown = ho.text(&["show", &id]);
    assert!(shown.contains("hộ nghèo / poor"), "{shown}");
    for deprivation in &on_device.deprivations {
        assert!(shown.contains(&deprivation.reason), "{shown}");
    }
    // A reader that goes away (`ho show … | head -0`) ends the command quietly.
    let mut closed = Command::new(&ho.bin)
        .arg("--store")
        .arg(ho.store.path())
        .args(["show", &id])
        .env_remove("HO_STORE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ho runs");
    drop(closed.stdout.take());
    let output = closed.wait_with_output().expect("ho ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        classification_of(&ho.json(&["show", &id])),
        on_device,
        "show and save agree"
    );
    assert!(ho.json(&["pending"])["pending"]
        .as_array()
        .is_some_and(|p| p.len() == 1));

    // After sync the server holds the same classification for the same record.
    let synced = ho.json(&["sync"]);
    assert_eq!(synced["applied"], 1, "{synced}");
    let id: Uuid = id.parse().expect("a uuid");
    let stored = stored_classification(&server, id);
    assert_eq!(stored.class, on_device.class);
    assert_eq!(stored.standard_id, on_device.standard_id);
    assert_eq!(stored.deprivations, on_device.deprivations);
    assert_eq!(stored, on_device, "the whole classification is identical");
    let (status, view) = server
        .get(&format!("/v1/households/{id}"), &server.session(ADMIN))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["classification"]["class"], "poor", "{view}");
    assert_eq!(
        classification_of(&ho.json(&["show", &id.to_string()])),
        stored
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_correction_and_a_recompute_change_the_stored_class() {
    let server = TestServer::start().await;
    let device = Device::new(&server);
    // 1,600,000 is above ND 07/2021's rural line of 1,500,000: average living standard.
    let household: Household =
        serde_json::from_value(with_ids(poor_household_file(1_600_000))).expect("household");
    device.save(&household);
    device.sync().await;
    let before = stored_classification(&server, household.id);
    assert_eq!(
        before.class,
        PovertyClass::AverageLiving {
            policy_subclass: false
        }
    );
    let rev = server
        .registry()
        .household(household.id)
        .expect("read")
        .expect("stored")
        .rev;

    // An official corrects the rural line to 1,800,000 in the server's reference folder.
    let folder = tempfile::tempdir().expect("temp dir");
    let corrected = STANDARDS_JSON.replacen("1500000", "1800000", 1);
    std::fs::write(folder.path().join(STANDARDS_FILE), &corrected).expect("write");
    let (reference, loaded) = server::reference::load_dir(folder.path()).expect("loads");
    assert_eq!(loaded.files, [STANDARDS_FILE]);
    let report = server
        .state
        .replace_reference(reference)
        .await
        .expect("recomputes");
    assert_eq!((report.households, report.changed), (1, 1));

    let after = stored_classification(&server, household.id);
    assert_eq!(after.class, PovertyClass::Poor, "{}", after.decided_by);
    assert!(
        after.decided_by.contains("1.800.000"),
        "{}",
        after.decided_by
    );
    let row = server
        .registry()
        .household(household.id)
        .expect("read")
        .expect("stored");
    assert_eq!(row.rev, rev, "a recomputation makes no revision");
    let records = server
        .registry()
        .classifications(household.id, rev)
        .expect("read");
    assert_eq!(records.len(), 2, "the earlier result is kept");
    assert_eq!(records[0].classification, before);
    assert_eq!(records[1].reference, loaded.fingerprint);
    let again = server
        .state
        .replace_reference(server.state.reference().as_ref().clone())
        .await
        .expect("recomputes");
    assert_eq!(again.changed, 0, "nothing changes twice");

    // The server ships the corrected texts; the device takes them and agrees.
    let shipped = get_json(&format!("{}/v1/reference", server.url)).await;
    assert_eq!(shipped["standards"], corrected.as_str());
    let update = client_core::reference::update(&device.store, &server.url)
        .await
        .expect("fetched");
    assert!(update.changed);
    assert_eq!(update.fingerprint, loaded.fingerprint);
    let on_device = client_core::reference::classify(&device.store, &device.view(household.id))
        .expect("classifies");
    assert_eq!(on_device, after);
}

/// The sync engine talking to a server state in this process: no sockets, no accounts.
struct InProcess(server::AppState);

impl Transport for InProcess {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let refused = |error: server::AppError| TransportError::Refused {
            status: error.status().as_u16(),
            message: error.to_string(),
        };
        match request {
            Request::Push(push) => {
                let push = push.request().expect("a batch decodes");
                self.0.push(push).await.map(Response::Push)
            }
            Request::Pull(pull) => self.0.pull(pull.clone()).await.map(Response::Pull),
        }
        .map_err(refused)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_recompute_is_one_command_after_a_correction() {
    let data = tempfile::tempdir().expect("temp dir");
    let device_dir = tempfile::tempdir().expect("temp dir");
    let household: Household =
        serde_json::from_value(with_ids(poor_household_file(1_600_000))).expect("household");
    {
        let state = server::AppState::open(data.path()).expect("open registry");
        let store = Store::open(device_dir.path()).expect("open store");
        store
            .setup("http://127.0.0.1:9", Uuid::now_v7())
            .expect("setup");
        store.save_household(&household).expect("save");
        let report = client_core::sync(&store, &InProcess(state.clone()), |_| {})
            .await
            .expect("sync");
        assert_eq!(report.applied, 1);
        let stored = state
            .registry()
            .household(household.id)
            .expect("read")
            .and_then(|row| row.classification)
            .expect("classified");
        assert!(matches!(stored.class, PovertyClass::AverageLiving { .. }));
    }

    // The server is stopped; an official drops the corrected file into <data-dir>/reference/.
    let server_bin = binary("server", "server");
    let recompute = || {
        let output = Command::new(&server_bin)
            .args(["recompute", "--data-dir"])
            .arg(data.path())
            .env_remove("HO_REFERENCE_DIR")
            .output()
            .expect("server runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "server recompute failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    assert!(recompute().contains("recomputed 1 households: 0 changed"));
    let folder = data.path().join(server::reference::DEFAULT_SUBDIR);
    std::fs::create_dir(&folder).expect("mkdir");
    std::fs::write(
        folder.join(STANDARDS_FILE),
        STANDARDS_JSON.replacen("1500000", "1800000", 1),
    )
    .expect("write");
    let said = recompute();
    assert!(
        said.contains("recomputed 1 households: 1 changed"),
        "{said}"
    );
    assert!(said.contains(STANDARDS_FILE), "{said}");

    let registry = server::Registry::open(data.path()).expect("reopen");
    let stored = registry
        .household(household.id)
        .expect("read")
        .and_then(|row| row.classification)
        .expect("classified");
    assert_eq!(stored.class, PovertyClass::Poor, "{}", stored.decided_by);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_commune_is_a_warning_on_the_device_and_a_readable_rejection_on_the_server() {
    let server = TestServer::start().await;
    let device = Device::new(&server);
    let mut household: Household =
        serde_json::from_value(with_ids(poor_household_file(1_200_000))).expect("household");
    household.commune_code = "99999".to_string();
    let expected = "commune code '99999' is not in the 2025 code set";

    let receipt = device
        .store
        .save_household(&household)
        .expect("saved anyway");
    assert!(
        receipt.warnings.iter().any(|w| w.contains(expected)),
        "{:?}",
        receipt.warnings
    );
    let report = device.sync().await;
    assert_eq!(report.rejected.len(), 1);
    let reason = &report.rejected[0].reason;
    assert!(reason.contains(expected), "{reason}");
    assert!(
        reason.contains("mã xã '99999' không có trong danh mục"),
        "{reason}"
    );
    assert!(server
        .registry()
        .household(household.id)
        .expect("read")
        .is_none());
}

/// Gives a household file the ids `ho` would make.
fn with_ids(mut file: Value) -> Value {
    file["id"] = json!(Uuid::now_v7());
    let mut head = None;
    if let Some(members) = file["members"].as_array_mut() {
        for member in members {
            let id = Uuid::now_v7();
            if member["relationship"] == "head" {
                head = Some(id);
            }
            member["id"] = json!(id);
        }
    }
    file["head_member_id"] = json!(head);
    file
}

// The property: whatever the household, the device's classification is the server's.

/// Wards and communes (urban and rural) in Hà Nội and Phú Thọ.
const COMMUNES: [&str; 4] = ["00004", "00070", RURAL, "08515"];
const NAMES: [&str; 6] = [
    "Nguyễn Văn Ánh",
    "Trần Thị Bích",
    "Lê Văn Cường",
    "Phạm Thị Dung",
    "Hoàng Văn Em",
    "Vũ Thị Giang",
];

fn any_member() -> impl Strategy<Value = Member> {
    use proptest::option::of;
    use proptest::prelude::*;
    (
        (
            0..NAMES.len(),
            1935i32..2025,
            1u8..=12,
            1u8..=28,
            any::<bool>(),
        ),
        (
            of(any::<bool>()),
            of(prop_oneof![
                Just(Qualification::None),
                Just(Qualification::Primary),
                Just(Qualification::LowerSecondary),
                Just(Qualification::UpperSecondary),
                Just(Qualification::Vocational),
            ]),
            of(prop_oneof![
                Just(Employment::WageWithContract),
                Just(Employment::WageWithoutContract),
                Just(Employment::SelfEmployed),
                Just(Employment::Unemployed),
                Just(Employment::NotInLabourForce),
            ]),
        ),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(prop_oneof![
                Just(ChildNutrition::Normal),
                Just(ChildNutrition::Stunted),
                Just(ChildNutrition::Underweight),
            ]),
        ),
    )
        .prop_map(
            |(
                (name, year, month, day, male),
                (in_school, qualification, employment),
                (insured, disabled, nutrition),
            )| Member {
                id: Uuid::now_v7(),
                full_name: NAMES[name].to_string(),
                sex: if male { Sex::Male } else { Sex::Female },
                date_of_birth: protocol::household::Date::new(year, month, day).unwrap_or(
                    protocol::household::Date {
                        year,
                        month: 1,
                        day: 1,
                    },
                ),
                personal_id: None,
                relationship: Relationship::Child,
                ethnicity: None,
                in_school,
                qualification,
                employment,
                has_pension: None,
                health_insurance: insured,
                disability_or_severe_illness: disabled,
                child_nutrition: nutrition,
            },
        )
}

fn any_dwelling() -> impl Strategy<Value = Dwelling> {
    use proptest::option::of;
    use proptest::prelude::*;
    (
        of(prop_oneof![
            Just(HouseDurability::Durable),
            Just(HouseDurability::SemiDurable),
            Just(HouseDurability::LessDurable),
            Just(HouseDurability::Makeshift),
        ]),
        of(0u32..120),
        of(prop_oneof![
            Just(WaterSource::PipedWater),
            Just(WaterSource::UnprotectedWell),
            Just(WaterSource::SurfaceWater),
        ]),
        of(prop_oneof![
            Just(Latrine::FlushOrPourFlush),
            Just(Latrine::UnhygienicPit),
            Just(Latrine::None),
        ]),
        (
            of(any::<bool>()),
            any::<bool>(),
            of(any::<bool>()),
            of(any::<bool>()),
            of(prop_oneof![
                Just(WasteHandling::Collected),
                Just(WasteHandling::Dumped),
            ]),
        ),
    )
        .prop_map(
            |(
                durability,
                floor_area_m2,
                water_source,
                latrine,
                (internet_use, asked, internet_access, digital_services_use, waste_handling),
            )| Dwelling {
                durability,
                floor_area_m2,
                water_source,
                latrine,
                internet_use,
                information_devices: Vec::new(),
                waste_handling,
                information_devices_asked: asked,
                internet_access,
                digital_services_use,
            },
        )
}

/// Valid households (the server must accept them) across communes, rounds and both standards.
fn any_household() -> impl Strategy<Value = Household> {
    use proptest::prelude::*;
    let income = proptest::option::of(prop_oneof![
        Just(1_500_000u64),
        Just(2_000_000),
        Just(2_200_000),
        Just(2_250_000),
        Just(2_800_000),
        Just(3_000_000),
        0u64..4_000_000,
    ]);
    (
        proptest::collection::vec(any_member(), 1..5),
        any_dwelling(),
        income,
        (
            0..COMMUNES.len(),
            2022u16..=2030,
            any::<bool>(),
            any::<bool>(),
        ),
        proptest::collection::btree_map("Q[1-5]", "[1-3]", 0..3),
    )
        .prop_map(
            |(mut members, dwelling, income, (commune, year, periodic, farming), answers)| {
                members[0].relationship = Relationship::Head;
                Household {
                    id: Uuid::now_v7(),
                    round: ReviewRound {
                        year,
                        kind: if periodic {
                            RoundKind::Periodic
                        } else {
                            RoundKind::Monthly
                        },
                    },
                    commune_code: COMMUNES[commune].to_string(),
                    village: "Thôn Đông".to_string(),
                    address: "Số 1".to_string(),
                    gps: None,
                    head_member_id: Some(members[0].id),
                    members,
                    flags: HouseholdFlags {
                        farming_forestry_fishery_salt: farming,
                        ..HouseholdFlags::default()
                    },
                    income: IncomeEvidence {
                        estimated_per_person_vnd: income,
                        b1_answers: answers,
                    },
                    dwelling,
                    causes_of_poverty: PovertyCauses::default(),
                    support_needs: Vec::new(),
                    void: None,
                }
            },
        )
}

#[test]
fn the_device_and_the_server_classify_every_generated_household_alike() {
    let seed: u64 = std::env::var("CLASSIFY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    let cases: u32 = std::env::var("CLASSIFY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    println!("CLASSIFY_SEED={seed} CLASSIFY_CASES={cases}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(TestServer::start());
    let device = Device::new(&server);
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    // Every case (and every shrunk case) is a new household pushed to the one registry: ids
    // are made when a case is drawn.
    let result = runner.run(&any_household(), |household| {
        device.save(&household);
        let report = runtime.block_on(device.sync());
        prop_assert_eq!(
            (report.applied, report.rejected.len()),
            (1, 0),
            "{:?}",
            report
        );
        let on_device = client_core::reference::classify(&device.store, &device.view(household.id))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = server
            .registry()
            .household(household.id)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .and_then(|row| row.classification);
        prop_assert_eq!(Some(on_device), stored);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("CLASSIFY_SEED={seed}: {failure}");
    }
}
