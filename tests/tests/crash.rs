//! Crashes: a device process killed with SIGKILL while saving. Every save it acknowledged is on
//! the device after reopening, and the outbox stays gap-free. The child is this test binary,
//! re-executed with an environment variable naming its store.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use client_core::Store;
use uuid::Uuid;

use crate::util::household;

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
            if let Some(id) = line.strip_prefix("saved ") {
                acknowledged.push(id.trim().parse().expect("uuid"));
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
