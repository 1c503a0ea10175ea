//! Crashes, with real processes killed by SIGKILL at random points:
//! - a device killed while saving: every save it acknowledged is on the device after
//!   reopening, and the outbox stays gap-free;
//! - the server killed during concurrent pushes from several devices, restarted and checked:
//!   every acknowledged mutation is in the registry exactly once, unacknowledged ones arrive on
//!   resend, once; at the end the registry rebuilt from its journal equals it;
//! - a device killed while syncing against a live server, reopened and synced again: nothing
//!   lost, nothing applied twice.
//!
//! The children are this test binary, re-executed with an environment variable naming their
//! store; without it the child tests do nothing. `CRASH_CYCLES=n` sets the cycles of every
//! loop, `CRASH_SEED=n` replays one run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_core::{HttpTransport, Request, Response, Store, Transport, TransportError};
use protocol::sync::{MutationOutcome, PushReply};
use uuid::Uuid;

use crate::util::{household, ALL_AREAS, PASSWORD};

const CHILD_STORE: &str = "E2E_CRASH_CHILD_STORE";

/// The child's side: save households forever, printing each id once its save has returned
/// (that is, once it is durable). Does nothing in a normal test run.
#[test]
fn child_saves_households_until_killed() {
    let Ok(path) = std::env::var(CHILD_STORE) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&path)).expect("child opens the store");
    if store.device_id().expect("meta").is_none() {
        store
            .setup("http://127.0.0.1:9", Uuid::now_v7())
            .expect("setup");
    }
    for n in 0.. {
        let created = household(&format!("Hộ thử nghiệm {n}"), "Thôn Đông");
        store.save_household(&created).expect("save");
        println!("saved {}", created.id);
    }
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn a_device_killed_while_saving_keeps_every_acknowledged_save() {
    let mut seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    println!("CRASH_SEED={seed}");
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut acknowledged: Vec<Uuid> = Vec::new();

    for cycle in 0..cycles {
        let kill_after = 5 + (next(&mut seed) % 60) as usize;
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::child_saves_households_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_STORE, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            // The harness may print its own words before the child's first line.
            if let Some(at) = line.find("saved ") {
                acknowledged.push(line[at + 6..].trim().parse().expect("uuid"));
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let store = Store::open(dir.path()).expect("reopen after the crash");
        for id in &acknowledged {
            assert!(
                store.household(*id).expect("read").is_some(),
                "cycle {cycle} (CRASH_SEED={seed}): acknowledged household {id} is lost"
            );
        }
        let seqs: Vec<u64> = store
            .pending()
            .expect("outbox")
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(seqs.len() >= acknowledged.len());
        assert!(
            seqs.iter().enumerate().all(|(i, seq)| *seq == i as u64 + 1),
            "cycle {cycle}: the outbox is gap-free from 1"
        );
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// Opens something sled-backed, waiting while a process that was just killed (or handles just
/// dropped) still holds the database's lock.
fn open_retrying<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(error) if Instant::now() < deadline && error.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("cannot open: {error}"),
        }
    }
}

const CHILD_SERVER: &str = "E2E_CRASH_CHILD_SERVER";
const CHILD_DEVICES: &str = "E2E_CRASH_CHILD_DEVICES";

/// The server child: serves its registry on an ephemeral port until killed. On its first start
/// it makes the account and enrols the devices named in `E2E_CRASH_CHILD_DEVICES`, printing
/// their tokens. Does nothing in a normal test run.
#[test]
fn child_serves_until_killed() {
    let Ok(dir) = std::env::var(CHILD_SERVER) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = PathBuf::from(dir);
        let state = open_retrying(|| server::AppState::open(&dir));
        if state.auth().accounts().users().expect("users").is_empty() {
            state
                .auth()
                .create_user(
                    &server::auth::Actor::command_line(),
                    server::auth::NewUser {
                        username: ALL_AREAS.to_string(),
                        password: PASSWORD.to_string(),
                        role: server::scope::Role::Administrator,
                        areas: vec![server::auth::Area::Everything],
                    },
                )
                .expect("account");
            let devices = std::env::var(CHILD_DEVICES).unwrap_or_default();
            for id in devices.split(',').filter(|id| !id.is_empty()) {
                let id: Uuid = id.parse().expect("a device id");
                let enrolled = state
                    .auth()
                    .enrol(ALL_AREAS, PASSWORD, id, None)
                    .expect("enrol");
                println!("token {id} {}", enrolled.token);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("addr")
        );
        server::run(listener, state, std::future::pending())
            .await
            .expect("serve");
    });
}

/// A server child and where it listens.
struct ServerChild {
    child: Child,
    url: String,
}

impl ServerChild {
    /// Starts the server child on `dir`; returns it with the tokens it printed (first start).
    fn start(dir: &Path, devices: &[Uuid]) -> (ServerChild, BTreeMap<Uuid, String>) {
        let ids: Vec<String> = devices.iter().map(Uuid::to_string).collect();
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::child_serves_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SERVER, dir)
            .env(CHILD_DEVICES, ids.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut tokens = BTreeMap::new();
        let url = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .expect("read");
            // The test harness may print its own words before the child's on the first line.
            if let Some(at) = line.find("token ") {
                let (id, token) = line[at + 6..].split_once(' ').expect("id and token");
                tokens.insert(id.parse().expect("uuid"), token.trim().to_string());
            } else if let Some(at) = line.find("listening on ") {
                break line[at + 13..].trim().to_string();
            }
        };
        // Keep reading, so the child never writes into a closed pipe.
        std::thread::spawn(move || for _ in lines {});
        (ServerChild { child, url }, tokens)
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

/// Every (device, seq) the server acknowledged, with its outcome when a reply carried it.
type Acknowledged = Arc<Mutex<BTreeMap<(Uuid, u64), Option<MutationOutcome>>>>;

/// Records what the server acknowledged to a device: every seq up to a push reply's
/// `last_seq`, with its outcome when the reply carries it.
struct Recording {
    inner: HttpTransport,
    acknowledged: Acknowledged,
}

impl Transport for Recording {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let response = self.inner.send(request).await?;
        if let (Request::Push(push), Response::Push(PushReply::Accepted { outcomes, last_seq })) =
            (request, &response)
        {
            let mut acknowledged = self
                .acknowledged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (seq, _) in push.seqs().filter(|(seq, _)| seq <= last_seq) {
                acknowledged.entry((push.device_id(), seq)).or_insert(None);
            }
            for outcome in outcomes {
                acknowledged.insert((push.device_id(), outcome.seq), Some(outcome.clone()));
            }
        }
        Ok(response)
    }
}

/// Checks the registry against what was acknowledged: each acknowledged mutation is there
/// with the outcome the device was given, and no (device, seq) made two revisions, two
/// conflicts, or a revision and a rejection.
fn check_registry(
    registry: &server::Registry,
    acknowledged: &BTreeMap<(Uuid, u64), Option<MutationOutcome>>,
    households: &BTreeSet<Uuid>,
    context: &str,
) {
    for ((device, seq), outcome) in acknowledged {
        let last = registry.device_last_seq(*device).expect("read");
        assert!(
            last >= *seq,
            "{context}: device {device} seq {seq} was acknowledged, the registry is at {last}"
        );
        let stored = registry.outcome(*device, *seq).expect("read");
        assert!(
            stored.is_some(),
            "{context}: the outcome of {device} seq {seq} is lost"
        );
        if let Some(outcome) = outcome {
            assert_eq!(
                stored.as_ref(),
                Some(outcome),
                "{context}: {device} seq {seq}"
            );
        }
    }
    let mut made: BTreeMap<(Uuid, u64), usize> = BTreeMap::new();
    for id in households {
        for revision in registry.history(*id).expect("history") {
            *made
                .entry((revision.device_id, revision.mutation_seq))
                .or_default() += 1;
        }
    }
    let mut conflicts: BTreeMap<(Uuid, u64), usize> = BTreeMap::new();
    for record in registry.conflicts(None).expect("conflicts") {
        *conflicts
            .entry((record.device_id, record.mutation_seq))
            .or_default() += 1;
    }
    let rejected: BTreeSet<(Uuid, u64)> = registry
        .rejected()
        .expect("rejected")
        .iter()
        .map(|r| (r.device_id, r.mutation.seq))
        .collect();
    for (key, count) in made.iter().chain(conflicts.iter()) {
        assert!(*count <= 1, "{context}: {key:?} was applied {count} times");
        assert!(
            !rejected.contains(key),
            "{context}: {key:?} was applied and rejected"
        );
    }
}

/// One device of the server crash loop: saves and syncs until told to stop.
async fn keep_saving_and_syncing(
    store: Store,
    url: String,
    token: String,
    acknowledged: Acknowledged,
    saved: Arc<Mutex<BTreeSet<Uuid>>>,
    mut seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut interrupted = 0;
    let transport = Recording {
        inner: HttpTransport::new(&url)
            .expect("transport")
            .with_token(&token),
        acknowledged,
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mine: Vec<Uuid> = saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        let existing = mine
            .iter()
            .copied()
            .filter(|id| store.household(*id).ok().flatten().is_some())
            .collect::<Vec<_>>();
        if existing.is_empty() || next(&mut seed) % 3 != 0 {
            let created = household(&format!("Hộ {}", next(&mut seed) % 1000), "Bản Mường");
            saved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(created.id);
            store.save_household(&created).expect("save");
        } else {
            let id = existing[(next(&mut seed) % existing.len() as u64) as usize];
            if let Some(Ok(mut record)) = store
                .household(id)
                .expect("read")
                .map(|local| local.household())
            {
                record.address = format!("Số {}", next(&mut seed) % 5);
                store.save_household(&record).expect("save");
            }
        }
        // A refused or broken request is expected while the server dies.
        if client_core::sync(&store, &transport, |_| {}).await.is_err() {
            interrupted += 1;
        }
    }
    interrupted
}

#[test]
fn the_server_killed_during_concurrent_pushes_loses_nothing_acknowledged() {
    let mut seed = env_number("CRASH_SEED").unwrap_or_else(|| u64::from(std::process::id()) | 1);
    let cycles = env_number("CRASH_CYCLES").unwrap_or(50) as usize;
    println!("CRASH_SEED={seed}");
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let server_dir = dir.path().join("server");
    let device_ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let stores: Vec<Store> = device_ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let store = Store::open(&dir.path().join(format!("device-{n}"))).expect("store");
            store.setup("http://crash", *id).expect("setup");
            store
        })
        .collect();
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let saved = Arc::new(Mutex::new(BTreeSet::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut tokens = BTreeMap::new();
    let mut interrupted = 0;

    for cycle in 0..cycles {
        let (server, printed) = ServerChild::start(&server_dir, &device_ids);
        tokens.extend(printed);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = stores
            .iter()
            .zip(&device_ids)
            .map(|(store, id)| {
                runtime.spawn(keep_saving_and_syncing(
                    store.clone(),
                    server.url.clone(),
                    tokens.get(id).expect("a token for every device").clone(),
                    Arc::clone(&acknowledged),
                    Arc::clone(&saved),
                    next(&mut seed),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        // Kill it at a random moment while the devices push.
        std::thread::sleep(Duration::from_millis(30 + next(&mut seed) % 300));
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in tasks {
            interrupted += runtime.block_on(task).expect("a device task");
        }
        // The server is down: read its registry directly.
        let registry = open_retrying(|| server::Registry::open(&server_dir));
        let acknowledged_now = acknowledged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let households = saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        check_registry(
            &registry,
            &acknowledged_now,
            &households,
            &format!("cycle {cycle} (CRASH_SEED={seed})"),
        );
    }

    // Quiesce: everything still pending arrives on resend, once; a second round brings
    // every device the others' last changes.
    let (server, _) = ServerChild::start(&server_dir, &device_ids);
    for _round in 0..2 {
        for (store, id) in stores.iter().zip(&device_ids) {
            let transport = Recording {
                inner: HttpTransport::new(&server.url)
                    .expect("transport")
                    .with_token(tokens.get(id).expect("token")),
                acknowledged: Arc::clone(&acknowledged),
            };
            runtime
                .block_on(client_core::sync(store, &transport, |_| {}))
                .expect("sync after the crashes");
            assert!(store.pending().expect("outbox").is_empty());
        }
    }
    server.kill();
    let registry = open_retrying(|| server::Registry::open(&server_dir));
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let households = saved
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    check_registry(&registry, &acknowledged, &households, "after quiesce");
    let mut mutations = 0;
    for (store, id) in stores.iter().zip(&device_ids) {
        let made = store.pending().expect("outbox").len() as u64
            + acknowledged
                .keys()
                .filter(|(device, _)| device == id)
                .count() as u64;
        let last = registry.device_last_seq(*id).expect("read");
        assert_eq!(
            last, made,
            "device {id}: every mutation it made is in the registry"
        );
        mutations += made;
        for local in store.households().expect("households") {
            if local.rejection.is_none() {
                let row = registry
                    .household(local.id)
                    .expect("read")
                    .expect("in the registry");
                assert_eq!(
                    row.fields, local.fields,
                    "device {id} agrees with the registry"
                );
            }
        }
    }
    assert_eq!(
        registry.household_count().expect("count"),
        households.len() as u64,
        "every household saved is in the registry once"
    );
    // The journal kept through every crash rebuilds the same registry.
    let digest = registry.digest().expect("digest");
    drop(registry);
    let rebuilt_dir = dir.path().join("rebuilt");
    server::store::rebuild(&server_dir, &rebuilt_dir).expect("rebuild");
    let rebuilt = open_retrying(|| server::Registry::open(&rebuilt_dir));
    assert_eq!(rebuilt.digest().expect("digest"), digest);
    println!(
        "server crash loop: {cycles} SIGKILL cycles, {mutations} mutations ({} acknowledged), {interrupted} syncs cut by a kill, 0 lost, 0 applied twice, journal rebuild equal, in {:.1} s",
        acknowledged.len(),
        began.elapsed().as_secs_f64()
    );
}

const CHILD_SYNC_STORE: &str = "E2E_CRASH_CHILD_SYNC_STORE";
const CHILD_SYNC_URL: &str = "E2E_CRASH_CHILD_SYNC_URL";

/// The syncing device child: saves a household, or edits one, and after every third save
/// syncs with the server named in `E2E_CRASH_CHILD_SYNC_URL`, forever, printing `saved ID SEQ`
/// after each save has returned. Does nothing in a normal test run.
#[test]
fn child_saves_and_syncs_until_killed() {
    let (Ok(path), Ok(url)) = (
        std::env::var(CHILD_SYNC_STORE),
        std::env::var(CHILD_SYNC_URL),
    ) else {
        return;
    };
    let store = open_retrying(|| Store::open(Path::new(&path)));
    let token = store.enrolment().expect("meta").expect("enrolled").token;
    let transport = HttpTransport::new(&url)
        .expect("transport")
        .with_token(&token);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in 0u64.. {
        let households = store.households().expect("households");
        let receipt = if n % 3 == 2 && !households.is_empty() {
            let local = &households[(n as usize / 3) % households.len()];
            let mut record = local.household().expect("record");
            record.address = format!("Số {n}");
            store.save_household(&record).expect("save")
        } else {
            store
                .save_household(&household(&format!("Hộ {n}"), "Bản Mường"))
                .expect("save")
        };
        println!("saved {} {}", receipt.household_id, receipt.mutation_seq);
        if n % 3 != 2 {
            continue;
        }
        // One mutation per push and two households per page: every sync sends pushes and
        // pages ahead of the answers it is writing, so kills land between the two.
        let options = client_core::sync::SyncOptions {
            push_batch: 1,
            pull_limit: 2,
        };
        runtime
            .block_on(client_core::sync_with(&store, &transport, options, |_| {}))
            .expect("sync with a live server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_while_syncing_loses_nothing_and_applies_nothing_twice() {
    let mut seed = env_number("CRASH_SEED").unwrap_or_else(|| u64::from(std::process::id()) | 1);
    let cycles = env_number("CRASH_CYCLES").unwrap_or(50) as usize;
    println!("CRASH_SEED={seed}");
    let began = Instant::now();
    let server = crate::util::TestServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let device_id = Uuid::now_v7();
    {
        let store = Store::open(dir.path()).expect("store");
        store.setup(&server.url, device_id).expect("setup");
        let enrolled = server
            .state
            .auth()
            .enrol(ALL_AREAS, PASSWORD, device_id, None)
            .expect("enrol");
        store
            .set_enrolment(&client_core::Enrolment {
                user: ALL_AREAS.to_string(),
                token: enrolled.token,
            })
            .expect("token");
    }
    let mut acknowledged: BTreeMap<u64, Uuid> = BTreeMap::new();
    for cycle in 0..cycles {
        let kill_after = 1 + next(&mut seed) % 8;
        let extra = Duration::from_millis(next(&mut seed) % 40);
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::child_saves_and_syncs_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SYNC_STORE, dir.path())
            .env(CHILD_SYNC_URL, &server.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the device");
        let stdout = child.stdout.take().expect("stdout");
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may print its own words before the child's first line.
                if let Some(at) = line.find("saved ") {
                    let (id, seq) = line[at + 6..].split_once(' ').expect("id and seq");
                    let id: Uuid = id.parse().expect("uuid");
                    let seq: u64 = seq.trim().parse().expect("seq");
                    let _ = seen_tx.send((seq, id));
                }
            }
        });
        // Wait for some saves, then kill it a moment later: in a save or in a sync.
        let mut seen = 0;
        while seen < kill_after {
            match seen_rx.recv_timeout(Duration::from_secs(20)) {
                Ok((seq, id)) => {
                    acknowledged.insert(seq, id);
                    seen += 1;
                }
                Err(_) => panic!("cycle {cycle}: the device child stopped saving"),
            }
        }
        tokio::time::sleep(extra).await;
        child.kill().expect("SIGKILL the device");
        child.wait().expect("reap the device");
        let _ = reader.join();
        // Saves it printed before it died count as acknowledged too.
        acknowledged.extend(seen_rx.try_iter());

        let store = open_retrying(|| Store::open(dir.path()));
        for (seq, id) in &acknowledged {
            assert!(
                store.household(*id).expect("read").is_some(),
                "cycle {cycle} (CRASH_SEED={seed}): household {id} saved as seq {seq} is lost"
            );
        }
        let made = acknowledged.keys().next_back().copied().unwrap_or(0);
        let registry_last = server.registry().device_last_seq(device_id).expect("read");
        let pending: Vec<u64> = store
            .pending()
            .expect("outbox")
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(
            pending.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "cycle {cycle}: the outbox has a hole: {pending:?}"
        );
        // Every mutation is in the registry or still in the outbox: none fell between.
        assert!(
            pending
                .first()
                .is_none_or(|first| *first <= registry_last + 1),
            "cycle {cycle}: mutations {} to {:?} are neither in the registry nor pending",
            registry_last + 1,
            pending.first()
        );
        // The child syncs only after it printed a save: the registry holds nothing unprinted.
        assert!(
            registry_last <= made,
            "cycle {cycle}: the registry is ahead of the device"
        );
        drop(store);
    }
    // The device comes back once more and syncs to the end, in this process.
    let store = open_retrying(|| Store::open(dir.path()));
    let token = store.enrolment().expect("meta").expect("enrolled").token;
    let transport = HttpTransport::new(&server.url)
        .expect("transport")
        .with_token(&token);
    client_core::sync(&store, &transport, |_| {})
        .await
        .expect("the last sync");
    assert!(store.pending().expect("outbox").is_empty());
    let registry = server.registry();
    let made = store.households().expect("households").len();
    let last = registry.device_last_seq(device_id).expect("read");
    let max_saved = acknowledged.keys().next_back().copied().unwrap_or(0);
    assert!(
        last >= max_saved,
        "every acknowledged save reached the registry: it is at {last}, saves went to {max_saved}"
    );
    let mut revisions: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ids: BTreeSet<Uuid> = acknowledged.values().copied().collect();
    ids.extend(store.households().expect("households").iter().map(|l| l.id));
    for id in &ids {
        let row = registry.household(*id).expect("read");
        let row = row.unwrap_or_else(|| panic!("household {id} is not in the registry"));
        let local = store.household(*id).expect("read").expect("on the device");
        assert_eq!(
            row.fields, local.fields,
            "household {id}: device and registry agree"
        );
        for revision in registry.history(*id).expect("history") {
            *revisions.entry(revision.mutation_seq).or_default() += 1;
        }
    }
    for seq in 1..=last {
        assert!(
            registry.outcome(device_id, seq).expect("read").is_some(),
            "mutation {seq} has no outcome"
        );
    }
    assert!(
        revisions.values().all(|count| *count == 1),
        "a mutation was applied twice: {revisions:?}"
    );
    assert_eq!(registry.household_count().expect("count"), made as u64);
    // Let the server stop on its own before the runtime goes.
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "device sync crash loop: {cycles} SIGKILL cycles, {last} mutations, {} acknowledged saves, 0 lost, 0 applied twice, in {:.1} s",
        acknowledged.len(),
        began.elapsed().as_secs_f64()
    );
}
