//! The server's CPU for a fleet's first pushes, in process: a steadier figure than the
//! benchmark's fleet phase, where 50 devices share the machine with the server.
//!
//! 50 device stores each record `--per-device` households and encode their first push; then,
//! each round, a fresh registry takes all the pushes at once on a two-thread runtime (as the
//! server's), and the process's CPU time per household is printed. The first round warms up and
//! is left out of the median.
//!
//! ```text
//! cargo run --release -p bench --example push_cpu -- --rounds 8
//! ```
//! Compare builds by running each several times, alternating: on a shared machine only figures
//! taken side by side compare.

#[path = "../src/gen.rs"]
#[allow(dead_code)]
mod gen;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::Parser;
use client_core::sync::{Request, SyncEngine};
use client_core::Store;
use server::merge_engine::unpack_push;
use server::{AppState, Caller};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Households each device pushes, in one request (at most the client's batch size).
    #[arg(long, default_value_t = 200)]
    per_device: usize,
    #[arg(long, default_value_t = 6)]
    rounds: usize,
}

/// The process's user and system CPU seconds, from `/proc/self/stat`.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rfind(')')
        .and_then(|at| stat.get(at + 2..))
        .context("an unexpected /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = |at: usize| -> anyhow::Result<f64> {
        Ok(fields.get(at).context("a short /proc/self/stat")?.parse()?)
    };
    // utime and stime, in clock ticks of 1/100 s.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let generator = gen::Generator::new(42, 5000)?;
    let stores = tempfile::tempdir()?;
    let mut pushes = Vec::with_capacity(args.devices);
    for device in 0..args.devices {
        let store = Store::open(&stores.path().join(format!("device-{device}")))?;
        store.setup("http://127.0.0.1:1", uuid::Uuid::now_v7())?;
        for n in device * args.per_device..(device + 1) * args.per_device {
            store.save_household(&generator.household(n))?;
        }
        match SyncEngine::new(&store)?.next_request(&store)? {
            Some(Request::Push(batch)) if batch.len() == args.per_device => {
                pushes.push(batch.encode())
            }
            _ => anyhow::bail!("device {device}: its first request is not one push of all"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let households = (args.devices * args.per_device) as f64;
    let mut figures = Vec::new();
    for round in 0..args.rounds {
        let registry = tempfile::tempdir()?;
        let state = AppState::open(registry.path())?;
        let started = cpu_seconds()?;
        let wall = std::time::Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = pushes
                .iter()
                .cloned()
                .map(|body| {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let work = state.push_work().await?;
                        let (request, packed) =
                            tokio::task::spawn_blocking(move || unpack_push(&body)).await??;
                        state
                            .push_at_work(Caller::Unrestricted, request, packed, work)
                            .await?;
                        anyhow::Ok(())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            anyhow::Ok(())
        })?;
        let us = (cpu_seconds()? - started) * 1e6 / households;
        println!(
            "round {round}: {us:.1} us of CPU a household, {:.3} s",
            wall.elapsed().as_secs_f64()
        );
        if round > 0 {
            figures.push(us);
        }
    }
    figures.sort_by(f64::total_cmp);
    if let Some(median) = figures.get(figures.len() / 2) {
        println!("median {median:.1} us of CPU a household");
    }
    Ok(())
}
