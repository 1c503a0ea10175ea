//! Regressions: each test is a bug the simulation, the crash loops or the fuzzers found, named
//! after it, replayed in the smallest setting that shows it. The server runs in process
//! (`server::AppState`), reached through a transport that can lose what a test tells it to.

use std::cell::Cell;

use client_core::{Request, Response, Store, Transport, TransportError};
use protocol::household::Household;
use server::AppState;
use uuid::Uuid;

use crate::util::household;

/// The server in process, with a switch for each kind of loss.
struct Lossy {
    state: AppState,
    /// The server applies a push, and its reply is lost on the way back.
    lose_push_replies: Cell<bool>,
    /// Pull requests never arrive.
    drop_pulls: Cell<bool>,
}

fn lost(detail: &str) -> TransportError {
    TransportError::Unreachable {
        url: "in-process".to_string(),
        detail: detail.to_string(),
    }
}

impl Transport for Lossy {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let refused = |error: server::AppError| TransportError::Refused {
            status: 400,
            message: error.to_string(),
        };
        match request {
            Request::Push(push) => {
                let push = push.request().expect("a batch decodes");
                let reply = self.state.push(push).await.map_err(refused)?;
                if self.lose_push_replies.get() {
                    return Err(lost("the push reply was lost"));
                }
                Ok(Response::Push(reply))
            }
            Request::Pull(pull) => {
                if self.drop_pulls.get() {
                    return Err(lost("the pull was dropped"));
                }
                Ok(Response::Pull(
                    self.state.pull(pull.clone()).await.map_err(refused)?,
                ))
            }
        }
    }
}

struct World {
    net: Lossy,
    _dirs: Vec<tempfile::TempDir>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AppState::open(dir.path()).expect("open registry");
        World {
            net: Lossy {
                state,
                lose_push_replies: Cell::new(false),
                drop_pulls: Cell::new(false),
            },
            _dirs: vec![dir],
        }
    }

    fn device(&mut self) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        store
            .setup("http://in-process", Uuid::now_v7())
            .expect("setup");
        self._dirs.push(dir);
        store
    }

    async fn sync(&self, store: &Store) -> Result<(), client_core::SyncError> {
        client_core::sync(store, &self.net, |_| {})
            .await
            .map(|_| ())
    }

    /// Lan and Minh, both holding (synced) Lò Văn Sơn's household at Số 1, Bản Mường.
    async fn two_devices_holding_one_household(&mut self) -> (Store, Store, Household) {
        let lan = self.device();
        let minh = self.device();
        let mut record = household("Lò Văn Sơn", "Bản Mường");
        record.address = "Số 1".into();
        lan.save_household(&record).expect("save");
        self.sync(&lan).await.expect("sync");
        self.sync(&minh).await.expect("sync");
        (lan, minh, record)
    }

    fn registry_record(&self, id: Uuid) -> Household {
        self.net
            .state
            .registry()
            .household(id)
            .expect("read")
            .expect("in the registry")
            .household()
            .expect("well-formed")
    }
}

fn view(store: &Store, id: Uuid) -> Household {
    store
        .household(id)
        .expect("read")
        .expect("on the device")
        .household()
        .expect("well-formed")
}

/// SIM_SEED=11: an enumerator changes a field, syncs (the push is applied, the pull does not
/// get through), then sets the field back to what it was. The server compared the second
/// change with the revision the device last pulled, where the field already had that value,
/// saw no change, and kept the first value: the enumerator's last edit was lost without a
/// conflict. The merge base now includes the device's own revisions since its base.
#[tokio::test]
async fn an_edit_set_back_before_the_first_one_was_pulled_reaches_the_registry() {
    let mut world = World::new();
    let lan = world.device();
    let mut record = household("Lò Văn Sơn", "Bản Mường");
    record.address = "Số 1".into();
    lan.save_household(&record).expect("save");
    world.sync(&lan).await.expect("first sync");

    record.address = "Số 7".into();
    lan.save_household(&record).expect("save");
    world.net.drop_pulls.set(true);
    assert!(world.sync(&lan).await.is_err(), "the pull is dropped");
    world.net.drop_pulls.set(false);

    record.address = "Số 1".into();
    lan.save_household(&record).expect("save");
    world.sync(&lan).await.expect("sync");

    assert_eq!(world.registry_record(record.id).address, "Số 1");
    assert_eq!(view(&lan, record.id).address, "Số 1");
    assert!(lan.conflicts().expect("conflicts").is_empty());
}

/// The same gap seen from the other side: a device's push is applied but its reply is lost;
/// another enumerator sees the new value and deliberately sets it back; the first device's
/// next mutation repeats its earlier value (cumulative changes), and the server, comparing
/// with the device's old base, took it for a new change and silently undid the second
/// enumerator's correction.
#[tokio::test]
async fn a_value_someone_else_replaced_does_not_come_back_with_a_later_mutation() {
    let mut world = World::new();
    let (lan, minh, mut record) = world.two_devices_holding_one_household().await;

    record.address = "Số 7".into();
    lan.save_household(&record).expect("save");
    world.net.lose_push_replies.set(true);
    assert!(world.sync(&lan).await.is_err(), "the reply is lost");
    world.net.lose_push_replies.set(false);

    world.sync(&minh).await.expect("sync");
    let mut seen = view(&minh, record.id);
    assert_eq!(seen.address, "Số 7");
    seen.address = "Số 1".into();
    minh.save_household(&seen).expect("save");
    world.sync(&minh).await.expect("sync");

    record.income.estimated_per_person_vnd = Some(2_400_000);
    lan.save_household(&record).expect("save");
    world.sync(&lan).await.expect("sync");

    let registry = world.registry_record(record.id);
    assert_eq!(registry.address, "Số 1", "Minh's correction stands");
    assert_eq!(registry.income.estimated_per_person_vnd, Some(2_400_000));
    world.sync(&lan).await.expect("sync");
    assert_eq!(view(&lan, record.id), registry);
}

/// Opens a registry again in this process, waiting while sled's threads let go of the lock.
fn reopen(dir: &std::path::Path) -> AppState {
    for _ in 0..400 {
        match AppState::open(dir) {
            Ok(state) => return state,
            Err(error) if error.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(error) => panic!("cannot open the registry: {error}"),
        }
    }
    panic!("the registry stayed locked")
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Crash loop, server SIGKILLed during concurrent pushes: with group commit, several pushes
/// can be journaled and applied while one flush runs, so a crash can leave the journal more
/// than one record ahead of sled. Opening refused such a registry ("the journal ends at
/// record 86 but the registry at 84"), keeping the server down. Records past the registry's
/// are unflushed, unacknowledged commits, and are now replayed on open.
#[tokio::test]
async fn a_registry_that_crashed_with_several_unflushed_commits_opens_and_replays_them() {
    let mut world = World::new();
    let lan = world.device();
    let crashed = tempfile::tempdir().expect("temp dir");
    let live_dir = world._dirs[0].path().to_path_buf();

    lan.save_household(&household("Lò Văn Sơn", "Bản Mường"))
        .expect("save");
    world.sync(&lan).await.expect("sync");
    // What sled held at the crash: the registry after the first push.
    let World { net, _dirs } = world;
    drop(net);
    let snapshot = crashed.path().join("registry");
    let state = reopen(&live_dir);
    drop(state);
    copy_dir(&live_dir, &snapshot);

    // Two more commits reach the journal (and, in the live copy, sled).
    let world = World {
        net: Lossy {
            state: reopen(&live_dir),
            lose_push_replies: Cell::new(false),
            drop_pulls: Cell::new(false),
        },
        _dirs,
    };
    for n in 0..2 {
        lan.save_household(&household(&format!("Hộ {n}"), "Bản Mường"))
            .expect("save");
        world.sync(&lan).await.expect("sync");
    }
    let digest = world.net.state.registry().digest().expect("digest");
    // The server stops; its folders stay.
    let World { net, _dirs } = world;
    drop(net);
    let journal = server::journal::Journal::path_in(&live_dir);
    std::fs::copy(&journal, server::journal::Journal::path_in(&snapshot)).expect("copy journal");

    // The crashed registry opens, replays the two records, and equals the live one.
    let recovered = reopen(&snapshot);
    assert_eq!(recovered.registry().digest().expect("digest"), digest);
    assert_eq!(recovered.registry().household_count().expect("count"), 3);
}

/// SIM_SEED=40: a device's mutation whose conflicting fields were all waiting already, in two
/// of its open conflicts (a void in one, an address in another), got an outcome naming one of
/// them but listing the fields of both; the device filed the void under the wrong conflict.
/// The outcome now lists only the fields of the conflict it names.
#[tokio::test]
async fn a_repeated_conflict_lists_only_the_fields_of_the_conflict_it_names() {
    let mut world = World::new();
    let (lan, minh, record) = world.two_devices_holding_one_household().await;
    let mut lans = record.clone();
    lans.address = "Số 7".into();
    lan.save_household(&lans).expect("save");
    world.sync(&lan).await.expect("sync");

    // Minh, who never gets to pull: a void (a conflict with Lan's edit), then the address
    // (a second conflict), then the same record saved again (nothing new).
    world.net.drop_pulls.set(true);
    minh.void_household(
        record.id,
        protocol::household::VoidMark {
            reason: protocol::household::VoidReason::Duplicate,
            note: String::new(),
        },
    )
    .expect("void");
    assert!(world.sync(&minh).await.is_err());
    let mut minhs = view(&minh, record.id);
    minhs.address = "Số 11".into();
    minh.save_household(&minhs).expect("save");
    assert!(world.sync(&minh).await.is_err());
    minh.save_household(&minhs).expect("save again");
    assert!(world.sync(&minh).await.is_err());

    let registry = world.net.state.registry();
    let local = minh.conflicts().expect("conflicts");
    assert!(local.len() >= 2, "two conflicts: {local:?}");
    for conflict in local {
        let kept = registry
            .conflict(conflict.conflict_id)
            .expect("read")
            .expect("on record");
        for field in &conflict.fields {
            assert!(
                kept.fields.iter().any(|known| known.path == field.path),
                "conflict {} does not hold {}",
                conflict.conflict_id,
                field.path
            );
        }
    }
}

/// SIM_SEED=11296: a household recorded on a device and changed there before its first sync
/// (so the change is a `Base::New` mutation: the whole record, from nothing) was rejected; then
/// another device voided it. Laying the rejected record over the voided revision kept the
/// revision's `void.note` beside the record's `void: null`, and the enumerator's view no longer
/// fit the form. A `Base::New` overlay is now the enumerator's record itself.
#[tokio::test]
async fn a_rejected_new_household_voided_elsewhere_still_fits_the_form() {
    let mut world = World::new();
    let lan = world.device();
    let minh = world.device();
    let mut record = household("Lò Văn Sơn", "Bản Mường");
    lan.save_household(&record).expect("save");
    record.village = " ".into();
    lan.save_household(&record).expect("save an invalid change");
    world.sync(&lan).await.expect("sync");
    assert!(
        view(&lan, record.id).village.trim().is_empty(),
        "the enumerator's value stays"
    );

    world.sync(&minh).await.expect("sync");
    minh.void_household(
        record.id,
        protocol::household::VoidMark {
            reason: protocol::household::VoidReason::Duplicate,
            note: "ghi trùng".into(),
        },
    )
    .expect("void");
    world.sync(&minh).await.expect("sync");

    world.sync(&lan).await.expect("sync");
    let local = lan
        .household(record.id)
        .expect("read")
        .expect("on the device");
    assert!(local.rejection.is_some());
    local.household().expect("the view fits the form");
}
