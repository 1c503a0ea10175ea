// Scratch: sled's disk use for registry-like entries.
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let seg: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(512 * 1024);
    let mode = std::env::args().nth(3).unwrap_or("low".into());
    let order = std::env::args().nth(4).unwrap_or("random".into());
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .segment_size(seg)
        .mode(if mode == "low" {
            sled::Mode::LowSpace
        } else {
            sled::Mode::HighThroughput
        })
        .open()
        .unwrap();
    let tree = db.open_tree("registry").unwrap();
    let started = Instant::now();
    let mut seq = 0u64;
    let mut live = 0u64;
    for batch_start in (0..n).step_by(500) {
        let mut batch = sled::Batch::default();
        for i in batch_start..(batch_start + 500).min(n) {
            let id: [u8; 16] = if order == "random" {
                *uuid::Uuid::new_v4().as_bytes()
            } else {
                *uuid::Uuid::now_v7().as_bytes()
            };
            seq += 1;
            let mut put = |prefix: u8, rest: &[&[u8]], vlen: usize| {
                let mut k = vec![prefix];
                for r in rest {
                    k.extend_from_slice(r);
                }
                live += (k.len() + vlen) as u64;
                batch.insert(k, vec![7u8; vlen]);
            };
            put(b'h', &[&id], 41);
            put(b'r', &[&id, &1u32.to_be_bytes()], 17);
            if std::env::var("NOK").is_err() { put(b'k', &[&id, &1u32.to_be_bytes(), &0u32.to_be_bytes()], 17); }
            if std::env::var("NOC").is_err() { put(b'c', &[&seq.to_be_bytes()], 16); }
            if std::env::var("NOO").is_err() { put(b'o', &[&[9u8; 16], &(i as u64).to_be_bytes()], 29); }
        }
        if std::env::var("BATCHROWS").is_ok() {
            let mut k = vec![b'o']; k.extend_from_slice(&[9u8; 16]); k.extend_from_slice(&(batch_start as u64).to_be_bytes());
            batch.insert(k, vec![7u8; 17]);
            let mut k = vec![b'c']; k.extend_from_slice(&seq.to_be_bytes());
            batch.insert(k, vec![7u8; 17]);
            live += 60;
        }
        tree.apply_batch(batch).unwrap();
        if std::env::var("NOFLUSH").is_err() {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    let size = db.size_on_disk().unwrap();
    println!("n={n} seg={seg} mode={mode} order={order}: {:.1}s, disk {} B/household, live {} B/household, amp {:.2}",
        started.elapsed().as_secs_f64(), size / n as u64, live / n as u64, size as f64 / live as f64);
}
