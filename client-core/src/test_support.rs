//! Helpers for unit tests: a sample household and an in-memory server that follows the
//! protocol (seq checks, replays, three-way merge, rejections, paged pulls).

use std::collections::BTreeMap;

use protocol::fields::{self, FieldMap, FieldValue};
use protocol::household::*;
use protocol::merge;
use protocol::sync::*;
use protocol::validate;
use uuid::Uuid;

use crate::store::Store;
use crate::sync::{Request, Response, SyncEngine, SyncError, SyncOptions, SyncReport};

pub fn member_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

pub fn household_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_1000_0000 + n)
}

pub fn member(n: u128, name: &str, relationship: Relationship) -> Member {
    Member {
        id: member_id(n),
        full_name: name.into(),
        sex: Sex::Female,
        date_of_birth: Date::new(1985, 3, 27).expect("valid"),
        personal_id: None,
        relationship,
        ethnicity: Some("Kinh".into()),
        in_school: None,
        qualification: None,
        employment: None,
        has_pension: None,
        health_insurance: Some(true),
        disability_or_severe_illness: None,
        child_nutrition: None,
    }
}

/// A valid household with one member, the head.
pub fn sample(n: u128) -> Household {
    let head = member(n * 100, "Nguyễn Thị Hoa", Relationship::Head);
    Household {
        id: household_id(n),
        round: ReviewRound {
            year: 2025,
            kind: RoundKind::Periodic,
        },
        commune_code: "00004".into(),
        village: "Thôn Đông".into(),
        address: format!("Số {n}, ngõ 12"),
        gps: None,
        head_member_id: Some(head.id),
        members: vec![head],
        flags: HouseholdFlags::default(),
        income: IncomeEvidence {
            estimated_per_person_vnd: Some(1_200_000),
            b1_answers: BTreeMap::new(),
        },
        dwelling: Dwelling::default(),
        causes_of_poverty: PovertyCauses::default(),
        support_needs: Vec::new(),
        void: None,
    }
}

pub fn text(value: &str) -> FieldValue {
    FieldValue::Text(value.into())
}

#[derive(Default)]
struct DeviceLog {
    last_applied: u64,
    outcomes: BTreeMap<u64, MutationOutcome>,
}

/// A registry in memory.
#[derive(Default)]
pub struct FakeServer {
    /// Revisions per household: index 0 is rev 1.
    pub revisions: BTreeMap<Uuid, Vec<FieldMap>>,
    pub review: BTreeMap<Uuid, ReviewState>,
    pub in_conflict: BTreeMap<Uuid, bool>,
    /// The change feed: entry i has seq i + 1.
    pub log: Vec<Uuid>,
    devices: BTreeMap<Uuid, DeviceLog>,
    next_conflict: u64,
    /// Pushes answered so far.
    pub pushes: usize,
    /// The user's areas: pulls return only households inside them (`None`: everything).
    pub scope: Option<protocol::access::Scope>,
}

impl FakeServer {
    pub fn latest(&self, id: Uuid) -> Option<&FieldMap> {
        self.revisions.get(&id).and_then(|revs| revs.last())
    }

    pub fn respond(&mut self, request: &Request) -> Response {
        match request {
            Request::Push(push) => {
                Response::Push(self.push(&push.request().expect("a batch decodes")))
            }
            Request::Pull(pull) => Response::Pull(self.pull(pull)),
        }
    }

    pub fn push(&mut self, request: &PushRequest) -> PushReply {
        self.pushes += 1;
        let last = self
            .devices
            .get(&request.device_id)
            .map_or(0, |d| d.last_applied);
        if let Some(first) = request.mutations.first() {
            if first.seq > last + 1 {
                return PushReply::SeqGap { expected: last + 1 };
            }
        }
        let mut outcomes = Vec::new();
        for mutation in &request.mutations {
            let device = self.devices.entry(request.device_id).or_default();
            if mutation.seq <= device.last_applied {
                if let Some(stored) = device.outcomes.get(&mutation.seq) {
                    outcomes.push(stored.clone());
                }
                continue;
            }
            let outcome = self.apply(mutation);
            let device = self.devices.entry(request.device_id).or_default();
            device.last_applied = mutation.seq;
            let outcome = MutationOutcome {
                seq: mutation.seq,
                household_id: mutation.household_id,
                outcome,
            };
            device.outcomes.insert(mutation.seq, outcome.clone());
            outcomes.push(outcome);
        }
        let last_seq = self
            .devices
            .get(&request.device_id)
            .map_or(0, |d| d.last_applied);
        PushReply::Accepted { outcomes, last_seq }
    }

    fn apply(&mut self, mutation: &Mutation) -> Outcome {
        let id = mutation.household_id;
        let today = Date::new(2025, 10, 1).expect("valid");
        let Some(revs) = self.revisions.get(&id) else {
            if mutation.base != Base::New {
                return Outcome::Rejected {
                    reason: "unknown household".into(),
                };
            }
            let mut created = FieldMap::new();
            fields::apply(&mut created, &mutation.changes);
            if let Err(problems) = validate::household_from_fields(&created, today) {
                return Outcome::Rejected {
                    reason: validate::reason(&problems),
                };
            }
            self.commit(id, created, false);
            return Outcome::Applied { rev: 1 };
        };
        let base_rev = match mutation.base {
            Base::New => 1,
            Base::Rev(rev) => rev,
        };
        let Some(base) = revs.get(base_rev as usize - 1).cloned() else {
            return Outcome::Rejected {
                reason: "unknown base".into(),
            };
        };
        let current_rev = revs.len() as u32;
        let theirs = revs.last().cloned().unwrap_or_default();
        let plan = merge::three_way(&base, &theirs, &mutation.changes);
        let mut next = theirs.clone();
        fields::apply(&mut next, &plan.apply);
        if let Err(problems) = validate::household_from_fields(&next, today) {
            return Outcome::Rejected {
                reason: validate::reason(&problems),
            };
        }
        let conflicted = !plan.conflicts.is_empty();
        // Like the registry: a revision only when some field changes.
        let rev = if plan.apply.is_empty() {
            if conflicted && !self.in_conflict.get(&id).copied().unwrap_or(false) {
                self.in_conflict.insert(id, true);
                self.log.push(id);
            }
            current_rev
        } else {
            self.commit(id, next, conflicted)
        };
        if conflicted {
            self.next_conflict += 1;
            Outcome::Conflict {
                rev,
                conflict_id: self.next_conflict,
                fields: plan.conflicts,
            }
        } else if base_rev == current_rev && !plan.others_changed {
            Outcome::Applied { rev }
        } else {
            Outcome::Merged { rev }
        }
    }

    /// Stores a new revision and logs it; returns its rev.
    fn commit(&mut self, id: Uuid, fields: FieldMap, conflicted: bool) -> u32 {
        let revs = self.revisions.entry(id).or_default();
        revs.push(fields);
        let rev = revs.len() as u32;
        self.review.insert(id, ReviewState::Submitted);
        let flag = self.in_conflict.entry(id).or_default();
        *flag = *flag || conflicted;
        self.log.push(id);
        rev
    }

    /// Another device (or a supervisor) changes a household.
    pub fn edit(&mut self, id: Uuid, change: impl FnOnce(&mut FieldMap)) -> u32 {
        let mut fields = self.latest(id).cloned().unwrap_or_default();
        change(&mut fields);
        self.commit(id, fields, false)
    }

    pub fn return_household(&mut self, id: Uuid, comment: &str) {
        self.review.insert(
            id,
            ReviewState::Returned {
                comment: comment.into(),
            },
        );
        self.log.push(id);
    }

    /// A supervisor resolves every conflict of a household, keeping the registry's values.
    pub fn resolve(&mut self, id: Uuid) -> u32 {
        self.in_conflict.insert(id, false);
        let fields = self.latest(id).cloned().unwrap_or_default();
        self.commit(id, fields, false)
    }

    pub fn pull(&self, request: &PullRequest) -> PullResponse {
        let start = request.cursor.min(self.log.len() as u64) as usize;
        let end = (start + request.limit as usize).min(self.log.len());
        let mut latest: BTreeMap<Uuid, u64> = BTreeMap::new();
        for (index, id) in self.log[start..end].iter().enumerate() {
            latest.insert(*id, (start + index + 1) as u64);
        }
        let mut changes: Vec<HouseholdChange> = latest
            .into_iter()
            .map(|(id, seq)| {
                let revs = &self.revisions[&id];
                HouseholdChange {
                    seq,
                    household_id: id,
                    rev: revs.len() as u32,
                    fields: protocol::fields::EncodedFields::encode(
                        revs.last().unwrap_or(&FieldMap::new()),
                    ),
                    review: self.review[&id].clone(),
                    in_conflict: self.in_conflict.get(&id).copied().unwrap_or(false),
                }
            })
            .collect();
        changes.sort_by_key(|change| change.seq);
        let scope = self
            .scope
            .clone()
            .unwrap_or(protocol::access::Scope::Everything);
        if let (true, Ok(areas)) = (
            self.scope.is_some(),
            protocol::areas::AreaRegistry::embedded(),
        ) {
            changes.retain(|change| {
                scope.contains(
                    change.fields.text("commune_code"),
                    change.fields.text("village"),
                    &areas,
                )
            });
        }
        let outcomes = self
            .devices
            .get(&request.device_id)
            .map(|device| {
                device
                    .outcomes
                    .range(request.outcomes_from..)
                    .map(|(_, outcome)| outcome.clone())
                    .collect()
            })
            .unwrap_or_default();
        PullResponse {
            changes,
            next_cursor: end as u64,
            more: end < self.log.len(),
            outcomes,
            left_scope: Vec::new(),
            scope,
        }
    }
}

/// Runs one whole sync of `store` against `server`, in process.
pub fn run(store: &Store, server: &mut FakeServer) -> Result<SyncReport, SyncError> {
    run_with(store, server, SyncOptions::default())
}

pub fn run_with(
    store: &Store,
    server: &mut FakeServer,
    options: SyncOptions,
) -> Result<SyncReport, SyncError> {
    let mut engine = SyncEngine::with_options(store, options)?;
    let mut steps = 0;
    while let Some(request) = engine.next_request(store)? {
        steps += 1;
        assert!(steps < 10_000, "the sync does not end");
        let response = server.respond(&request);
        engine.handle(store, response)?;
    }
    Ok(engine.report())
}

/// Opens a store again after its handles were dropped, in the same process. sled's background
/// threads can hold the database (and its file lock) for a moment after the last handle is
/// gone; a field app that restarts never sees this, since its threads die with it.
pub fn reopen(path: &std::path::Path) -> Store {
    try_reopen(path).expect("reopen")
}

/// [`reopen`], returning what opening says instead of expecting a store.
pub fn try_reopen(path: &std::path::Path) -> Result<Store, crate::StoreError> {
    for _ in 0..400 {
        match Store::open(path) {
            Err(crate::StoreError::Open { source, .. })
                if source.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
    Store::open(path)
}

/// A store in a fresh temporary folder, set up with a fixed device id.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Store::open(dir.path()).expect("open");
    store
        .setup("http://127.0.0.1:1", Uuid::from_u128(0xde71ce))
        .expect("setup");
    (dir, store)
}
