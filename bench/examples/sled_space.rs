//! What sled 0.34 spends on disk for registry-like entries, apart from the registry: the probe
//! behind the registry's layout (ARCHITECTURE.md, "Large rows live in the journal").
//!
//! Writes `--households` households' worth of entries in batches of 500, flushing each batch
//! as the registry does, and prints the disk used per household against the live bytes.
//!
//! ```text
//! cargo run --release -p bench --example sled_space -- --entries h,r,k,c,o
//! cargo run --release -p bench --example sled_space -- --entries h,r
//! ```
//! Each entry kind has the key and value sizes of the registry's (`r` and `k` as 17-byte
//! references into the journal, `c` and `o` one entry per household).

use std::time::Instant;

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    households: usize,
    /// Entry kinds per household: h (household row), r (revision reference), k
    /// (classification reference), c (change-log entry), o (outcome).
    #[arg(long, value_delimiter = ',', default_value = "h,r,k,c,o")]
    entries: Vec<char>,
    /// sled's segment size in bytes (a power of two).
    #[arg(long, default_value_t = 512 * 1024)]
    segment_size: usize,
    /// sled's high-throughput mode instead of its default low-space mode.
    #[arg(long)]
    high_throughput: bool,
    /// Household ids ordered by time (UUID v7) instead of random (v4).
    #[arg(long)]
    time_ordered: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(unknown) = args.entries.iter().find(|kind| !"hrkco".contains(**kind)) {
        anyhow::bail!("unknown entry kind {unknown:?}: use h, r, k, c or o");
    }
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .segment_size(args.segment_size)
        .mode(if args.high_throughput {
            sled::Mode::HighThroughput
        } else {
            sled::Mode::LowSpace
        })
        .open()?;
    let tree = db.open_tree("registry")?;
    let started = Instant::now();
    let (mut seq, mut live) = (0u64, 0u64);
    for first in (0..args.households).step_by(500) {
        let mut batch = sled::Batch::default();
        for index in first..(first + 500).min(args.households) {
            let id = if args.time_ordered {
                uuid::Uuid::now_v7()
            } else {
                uuid::Uuid::new_v4()
            };
            seq += 1;
            for kind in &args.entries {
                let mut key = vec![*kind as u8];
                let value_len = match kind {
                    'h' => {
                        key.extend_from_slice(id.as_bytes());
                        41
                    }
                    'r' => {
                        key.extend_from_slice(id.as_bytes());
                        key.extend_from_slice(&1u32.to_be_bytes());
                        17
                    }
                    'k' => {
                        key.extend_from_slice(id.as_bytes());
                        key.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
                        17
                    }
                    'c' => {
                        key.extend_from_slice(&seq.to_be_bytes());
                        16
                    }
                    _ => {
                        key.extend_from_slice(&[9; 16]);
                        key.extend_from_slice(&(index as u64).to_be_bytes());
                        29
                    }
                };
                live += (key.len() + value_len) as u64;
                batch.insert(key, vec![7u8; value_len]);
            }
        }
        tree.apply_batch(batch)?;
        db.flush()?;
    }
    let disk = db.size_on_disk()?;
    let per = |bytes: u64| bytes / args.households.max(1) as u64;
    println!(
        "{} households, entries {:?}: {:.1} s; disk {} B a household for {} live bytes ({:.2}x)",
        args.households,
        args.entries,
        started.elapsed().as_secs_f64(),
        per(disk),
        per(live),
        disk as f64 / live.max(1) as f64
    );
    Ok(())
}
