//! `bench`: the sync benchmark, side by side with the PouchDB peer.
//!
//! ```text
//! cargo run --release -p bench -- [--quick | --full] [--peer DIR] [--runs K]
//! ```
//!
//! It generates households ([`gen`]), starts the registry server as a child process on
//! 127.0.0.1 with a fresh data directory ([`server_proc`]), drives real device stores through
//! real syncs ([`device`]), counts bytes with a TCP proxy ([`proxy`]), grows registries to
//! 10k, 100k (and with `--full` 1M) households over HTTP ([`fill`]), and with `--peer` runs
//! the PouchDB peer on the same households ([`peer`]). It prints a table and one JSON line per
//! figure ([`figures`]).
//!
//! # Layout
//! - `main.rs`: the command line, the phases, the figures they make.
//! - [`gen`]: deterministic households of the peer's size and shape.
//! - [`server_proc`]: the server under test as a child process; its memory, CPU and disk.
//! - [`device`]: a device (store, transport) and a sync timed phase by phase.
//! - [`fill`]: grows a registry over HTTP from many simulated devices.
//! - [`proxy`]: the counting TCP proxy.
//! - [`peer`]: runs the PouchDB peer's server and scripts.
//! - [`figures`]: figures, targets, medians, the table.
//! - [`page_sizes`]: `bench page-sizes`, the pull page's bytes in each layout.

mod device;
mod figures;
mod fill;
mod gen;
mod page_sizes;
mod peer;
mod proxy;
mod server_proc;

use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use client_core::sync::SyncOptions;
use serde_json::json;
use tokio::runtime::Handle;

use device::Device;
use figures::{quantile, Better, Check, Figure};
use gen::Generator;
use proxy::Proxy;
use server_proc::{disk_use, ServerProcess};

/// The server's allocator (see `server/src/main.rs`), so that `serve-child` measures the server
/// as it ships; the devices here use it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The sync benchmark: a real registry server and real device stores on 127.0.0.1, and with
/// --peer the PouchDB peer on the same households.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The server under test; the benchmark starts it as its own child process.
    #[command(hide = true)]
    ServeChild {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Writes the zstd dictionary the stores pack rows with (dictionary 2, `gen::row_dictionary`).
    /// Dictionaries are frozen once rows are packed with them (`protocol::codec::packed`): this is
    /// how dictionary 2 was made, for a dictionary 3.
    #[command(hide = true)]
    RowDictionary {
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the bytes of a commune's pull pages in each layout, raw and compressed, and the
    /// time to write and read them (no server, no device).
    PageSizes {
        /// Households of the commune.
        #[arg(long, default_value_t = 5_000)]
        households: usize,
        /// Households in a page.
        #[arg(long, default_value_t = 500)]
        page: usize,
        /// Seed of the generated households.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Clone, Debug, Args)]
struct RunArgs {
    /// A short run (about a minute): 2,000 households, registry size 10k, one run.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Also the 1M-household registry (adds a few minutes and about 1.5 GB of temp disk).
    #[arg(long)]
    full: bool,
    /// A tiny run for the smoke test.
    #[arg(long, hide = true)]
    smoke: bool,
    /// Households in the first push and the conflict phase [default: 10000].
    #[arg(long)]
    n: Option<usize>,
    /// Devices pushing at once.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Households of one commune, for the first pull and the bytes on the wire [default: 5000].
    #[arg(long)]
    commune: Option<usize>,
    /// Registry sizes for the sync with nothing new [default: 10000,100000; --full adds 1000000].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Repetitions of each phase; figures are medians [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Syncs with nothing new per registry size.
    #[arg(long, default_value_t = 20)]
    noops: usize,
    /// Fresh devices pulling the commune, per run.
    #[arg(long, default_value_t = 3)]
    pulls: usize,
    /// Seed of the generated households.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A scratch copy of ../shared/peers/pouchdb with `npm install` done: run the peer too.
    #[arg(long, value_name = "DIR")]
    peer: Option<PathBuf>,
    /// Also write the generated households here, one JSON object a line.
    #[arg(long, value_name = "FILE")]
    docs: Option<PathBuf>,
    /// Most mutations per push request [default: the client's].
    #[arg(long)]
    push_batch: Option<usize>,
    /// Most households per pull page [default: the client's].
    #[arg(long)]
    pull_limit: Option<u32>,
    /// Run only these phases.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Option<Vec<Phase>>,
    /// Keep the temp directory (registries, device stores) for inspection.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// First push from one device, save latency, conflicting edits.
    Push,
    /// First push from many devices at once.
    Fleet,
    /// One commune: first pull and bytes on the wire.
    Commune,
    /// Syncs with nothing new at each registry size; server memory and disk.
    Sizes,
    /// The PouchDB peer.
    Peer,
}

/// The checked configuration of a run.
#[derive(Clone, Debug)]
struct Config {
    n: usize,
    devices: usize,
    commune: usize,
    sizes: Vec<usize>,
    runs: usize,
    noops: usize,
    pulls: usize,
    seed: u64,
    peer: Option<PathBuf>,
    docs: Option<PathBuf>,
    options: SyncOptions,
    phases: Vec<Phase>,
    keep: bool,
}

impl Config {
    fn from_args(args: RunArgs) -> anyhow::Result<Config> {
        let (n, commune, sizes, runs) = if args.smoke {
            (200, 100, vec![500], 1)
        } else if args.quick {
            (2_000, 2_000, vec![10_000], 1)
        } else {
            let mut sizes = vec![10_000, 100_000];
            if args.full {
                sizes.push(1_000_000);
            }
            (10_000, 5_000, sizes, 3)
        };
        let n = args.n.unwrap_or(n);
        let commune = args.commune.unwrap_or(commune);
        let mut sizes = args.sizes.unwrap_or(sizes);
        sizes.sort_unstable();
        sizes.dedup();
        let runs = args.runs.unwrap_or(runs);
        anyhow::ensure!(n >= 10, "--n must be at least 10");
        anyhow::ensure!(commune >= 1, "--commune must be at least 1");
        anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
        anyhow::ensure!(runs >= 1, "--runs must be at least 1");
        anyhow::ensure!(sizes.iter().all(|&s| s >= 1), "--sizes must be positive");
        let defaults = SyncOptions::default();
        let mut phases = args.only.unwrap_or_else(|| {
            vec![
                Phase::Push,
                Phase::Fleet,
                Phase::Commune,
                Phase::Sizes,
                Phase::Peer,
            ]
        });
        if args.peer.is_none() {
            phases.retain(|p| *p != Phase::Peer);
        }
        let peer = match args.peer {
            Some(dir) => {
                anyhow::ensure!(dir.is_dir(), "--peer {} is not a directory", dir.display());
                Some(dir)
            }
            None => None,
        };
        let (devices, noops, pulls) = if args.smoke {
            (args.devices.min(5), 3, 1)
        } else {
            (args.devices, args.noops.max(1), args.pulls.max(1))
        };
        Ok(Config {
            n,
            devices,
            commune,
            sizes,
            runs,
            noops,
            pulls,
            seed: args.seed,
            peer,
            docs: args.docs,
            options: SyncOptions {
                push_batch: args.push_batch.unwrap_or(defaults.push_batch),
                pull_limit: args.pull_limit.unwrap_or(defaults.pull_limit),
            },
            phases,
            keep: args.keep,
        })
    }

    fn runs_phase(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::ServeChild { data_dir }) => server_proc::serve_child(&data_dir),
        Some(Command::RowDictionary { out }) => gen::write_row_dictionary(&out),
        Some(Command::PageSizes {
            households,
            page,
            seed,
        }) => page_sizes::run(households, page, seed),
        None => Config::from_args(cli.run).and_then(run),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Progress on stderr, so that stdout is the table and the JSON lines.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format!($($arg)*)) };
}

/// What every phase needs.
struct Ctx {
    config: Config,
    generator: Generator,
    rt: tokio::runtime::Runtime,
    tmp: PathBuf,
}

impl Ctx {
    fn handle(&self) -> &Handle {
        self.rt.handle()
    }

    fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.tmp.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes a phase's directory once it is measured, unless `--keep` asks to look inside.
    fn done_with(&self, dir: &Path) {
        if !self.config.keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("bench-").tempdir()?;
    let ctx = Ctx {
        generator: Generator::new(config.seed, config.commune)?,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        tmp: tmp.path().to_path_buf(),
        config,
    };
    say!(
        "{} households, {} devices, commune of {}, sizes {:?}, {} run(s), push batch {}, pull page {}; temp dir {}",
        ctx.config.n,
        ctx.config.devices,
        ctx.config.commune,
        ctx.config.sizes,
        ctx.config.runs,
        ctx.config.options.push_batch,
        ctx.config.options.pull_limit,
        ctx.tmp.display()
    );

    let docs_needed = ctx.config.n.max(ctx.config.commune);
    let docs = match (&ctx.config.docs, ctx.config.runs_phase(Phase::Peer)) {
        (Some(path), _) => Some(write_docs(&ctx.generator, path, docs_needed)?),
        (None, true) => Some(write_docs(
            &ctx.generator,
            &ctx.tmp.join("households.jsonl"),
            docs_needed,
        )?),
        (None, false) => None,
    };

    let mut results = Results::default();
    for run in 0..ctx.config.runs {
        say!("run {} of {}", run + 1, ctx.config.runs);
        if ctx.config.runs_phase(Phase::Push) {
            phase_push(&ctx, run, &mut results)?;
        }
        if ctx.config.runs_phase(Phase::Fleet) {
            phase_fleet(&ctx, run, &mut results)?;
        }
        if ctx.config.runs_phase(Phase::Commune) {
            phase_commune(&ctx, run, &mut results)?;
        }
        if let (true, Some(peer_dir), Some(docs)) =
            (ctx.config.runs_phase(Phase::Peer), &ctx.config.peer, &docs)
        {
            phase_peer(&ctx, peer_dir, docs, run, &mut results)?;
        }
    }
    if ctx.config.runs_phase(Phase::Sizes) {
        phase_sizes(&ctx, &mut results)?;
    }

    let figures = results.figures(&ctx.config);
    println!("{}", figures::table(&figures));
    println!();
    for figure in &figures {
        println!("{}", figure.json());
    }
    if ctx.config.keep {
        let kept = tmp.keep();
        say!("kept {}", kept.display());
    }
    Ok(())
}

fn write_docs(generator: &Generator, path: &Path, count: usize) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut bytes = 0usize;
    for i in 0..count {
        let line = generator.json_line(i)?;
        bytes += line.len();
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    say!(
        "wrote {count} households to {} ({} bytes of JSON each on average)",
        path.display(),
        bytes / count.max(1)
    );
    Ok(path.to_path_buf())
}

/// Everything measured, per run.
#[derive(Debug, Default)]
struct Results {
    save_ms: Vec<f64>,
    push_rate: Vec<f64>,
    /// Server and device CPU microseconds per household over the first sync.
    push_cpu_us: Vec<(f64, f64)>,
    fleet_cpu_us: Vec<(f64, f64)>,
    push_requests: Vec<f64>,
    echo_pull_s: Vec<f64>,
    pull_n_s: Vec<f64>,
    merge_rate: Vec<f64>,
    merge_detail: Vec<serde_json::Value>,
    conflicts: Vec<f64>,
    merged: Vec<f64>,
    expected_conflicts: usize,
    expected_merged: usize,
    fleet_rate: Vec<f64>,
    fleet_save_ms: Vec<f64>,
    commune_pull_s: Vec<f64>,
    commune_pull_trips: Vec<f64>,
    wire_push: Vec<proxy::Bytes>,
    wire_pull: Vec<proxy::Bytes>,
    server_peak_mib: Vec<(String, f64)>,
    sizes: Vec<SizeResult>,
    peer_push_rate: Vec<f64>,
    peer_merge_rate: Vec<f64>,
    peer_noop_ms: Vec<f64>,
    peer_pull_s: Vec<f64>,
    peer_wire_push: Vec<proxy::Bytes>,
    peer_wire_pull: Vec<proxy::Bytes>,
    peer_conflicts: Vec<serde_json::Value>,
    peer_server_peak_mib: Vec<f64>,
}

#[derive(Debug, Clone)]
struct SizeResult {
    size: usize,
    noop_ms: Vec<f64>,
    /// The part of each that was the request and response (the rest is the device's store).
    noop_server_ms: Vec<f64>,
    round_trips: usize,
    fill_rate: f64,
    catch_up_rate: f64,
    peak_mib: f64,
    rss_mib: f64,
    disk: server_proc::DiskUse,
    record_bytes: u64,
    field_map_bytes: u64,
    server_cpu_s: f64,
}

/// CPU time of the server process and of this one (the devices), from a starting point.
struct CpuClock {
    server: f64,
    devices: f64,
}

impl CpuClock {
    fn start(server: &ServerProcess) -> anyhow::Result<CpuClock> {
        Ok(CpuClock {
            server: server.cpu_seconds()?,
            devices: server_proc::cpu_seconds_of(std::process::id())?,
        })
    }

    /// Microseconds of CPU per household since the start: the server's and the devices'.
    fn per_household(
        &self,
        server: &ServerProcess,
        households: usize,
    ) -> anyhow::Result<(f64, f64)> {
        let server_s = server.cpu_seconds()? - self.server;
        let devices_s = server_proc::cpu_seconds_of(std::process::id())? - self.devices;
        let per = |s: f64| s * 1e6 / households as f64;
        Ok((per(server_s), per(devices_s)))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// First push of N from one device (after N durable saves), its echo pull, a fresh device's
/// pull of all N, then 10% of households edited on both sides and the merge.
fn phase_push(ctx: &Ctx, run: usize, results: &mut Results) -> anyhow::Result<()> {
    let n = ctx.config.n;
    let options = ctx.config.options;
    let server = ServerProcess::start(&ctx.fresh_dir(&format!("push-{run}"))?)?;
    let d0 = Device::new(ctx.handle(), &server.url)?;
    say!("saving {n} households on one device");
    for i in 0..n {
        let took = d0.save(&ctx.generator.household(i))?;
        results.save_ms.push(took.as_secs_f64() * 1e3);
    }
    let cpu = CpuClock::start(&server)?;
    let first = d0.sync(ctx.handle(), options)?;
    let (server_us, client_us) = cpu.per_household(&server, n)?;
    anyhow::ensure!(
        first.report.pushed == n && first.report.applied == n,
        "first push: {} pushed, {} applied of {n}",
        first.report.pushed,
        first.report.applied
    );
    let rate = n as f64 / secs(first.push);
    say!(
        "first push: {n} in {:.3} s = {} households/s in {} requests ({:.3} s waiting for the server); echo pull {:.3} s ({:.3} s waiting)",
        secs(first.push),
        figures::show(rate),
        first.push_requests,
        secs(first.waiting_push),
        secs(first.pull),
        secs(first.waiting_pull)
    );
    say!("first sync (push and echo pull) CPU per household: server {server_us:.0} us, devices {client_us:.0} us");
    results.push_rate.push(rate);
    results.push_cpu_us.push((server_us, client_us));
    results.push_requests.push(first.push_requests as f64);
    results.echo_pull_s.push(secs(first.pull));

    // The other side: a second device pulls everything, then both edit every tenth household.
    let d1 = Device::new(ctx.handle(), &server.url)?;
    let pulled = d1.sync(ctx.handle(), options)?;
    anyhow::ensure!(
        pulled.report.pulled == n,
        "pulled {} of {n}",
        pulled.report.pulled
    );
    results.pull_n_s.push(secs(pulled.total()));
    let (mut same, mut different) = (0, 0);
    for (k, i) in (0..n).step_by(10).enumerate() {
        let id = ctx.generator.household(i).id;
        let same_field = k % 2 == 0;
        let mut theirs = household_on(&d1, id)?;
        let mut mine = household_on(&d0, id)?;
        if same_field {
            theirs.address = format!("{} (máy B)", theirs.address);
            mine.address = format!("{} (máy A)", mine.address);
            same += 1;
        } else {
            theirs.dwelling.floor_area_m2 = theirs.dwelling.floor_area_m2.map(|a| a + 1);
            mine.address = format!("{} (máy A)", mine.address);
            different += 1;
        }
        d1.save(&theirs)?;
        d0.save(&mine)?;
    }
    let theirs = d1.sync(ctx.handle(), options)?;
    anyhow::ensure!(
        theirs.report.applied == same + different,
        "the other side's edits: {} applied of {}",
        theirs.report.applied,
        same + different
    );
    let cpu = CpuClock::start(&server)?;
    let merge = d0.sync(ctx.handle(), options)?;
    let revisions = merge.report.pushed + merge.report.pulled;
    let (server_us, device_us) = cpu.per_household(&server, revisions)?;
    let rate = revisions as f64 / secs(merge.total());
    say!(
        "merge: {} pushed + {} pulled in {:.3} s = {} revisions/s (push {:.3} s, {:.3} s of it waiting; pull {:.3} s, {:.3} s waiting; CPU per revision: server {server_us:.0} us, device {device_us:.0} us); {} merged, {} conflicts (expected {different} and {same})",
        merge.report.pushed,
        merge.report.pulled,
        secs(merge.total()),
        figures::show(rate),
        secs(merge.push),
        secs(merge.waiting_push),
        secs(merge.pull),
        secs(merge.waiting_pull),
        merge.report.merged,
        merge.report.conflicts.len()
    );
    results.merge_rate.push(rate);
    results.conflicts.push(merge.report.conflicts.len() as f64);
    results.merged.push(merge.report.merged as f64);
    results.expected_conflicts = same;
    results.expected_merged = different;
    results.merge_detail.push(json!({
        "pushed": merge.report.pushed,
        "pulled": merge.report.pulled,
        "seconds": secs(merge.total()),
        "push_s": secs(merge.push),
        "pull_s": secs(merge.pull),
        "push_waiting_s": secs(merge.waiting_push),
        "cpu_us_per_revision_server_device": [server_us, device_us],
        "pull_waiting_s": secs(merge.waiting_pull),
        "round_trips": merge.round_trips(),
    }));
    let memory = server.memory()?;
    results
        .server_peak_mib
        .push((format!("push-{run}"), mib(memory.peak_kib)));
    server.stop()?;
    ctx.done_with(&ctx.tmp.join(format!("push-{run}")));
    Ok(())
}

fn household_on(device: &Device, id: uuid::Uuid) -> anyhow::Result<protocol::household::Household> {
    Ok(device
        .store
        .household(id)?
        .with_context(|| format!("device {} lacks household {id}", device.id))?
        .household()?)
}

/// N households from `devices` devices at once, each pushing its share as its first sync.
fn phase_fleet(ctx: &Ctx, run: usize, results: &mut Results) -> anyhow::Result<()> {
    let n = ctx.config.n;
    let count = ctx.config.devices.min(n);
    let server = ServerProcess::start(&ctx.fresh_dir(&format!("fleet-{run}"))?)?;
    let devices = (0..count)
        .map(|_| Device::new(ctx.handle(), &server.url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let share = |d: usize| (d * n / count)..((d + 1) * n / count);
    say!("saving {n} households on {count} devices at once");
    let save_ms = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(d, device)| {
                let save_ms = &save_ms;
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut mine = Vec::new();
                    for i in share(d) {
                        mine.push(device.save(&ctx.generator.household(i))?.as_secs_f64() * 1e3);
                    }
                    save_ms
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .extend(mine);
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a device panicked"))??;
        }
        Ok(())
    })?;
    results.fleet_save_ms.extend(
        save_ms
            .into_inner()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );

    let cpu = CpuClock::start(&server)?;
    let barrier = Barrier::new(count + 1);
    let options = ctx.config.options;
    let (elapsed, pushed) = std::thread::scope(|scope| -> anyhow::Result<(Duration, usize)> {
        let handles: Vec<_> = devices
            .iter()
            .map(|device| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(Instant, Instant, usize)> {
                    barrier.wait();
                    let started = Instant::now();
                    let timed = device.push_only(ctx.handle(), options)?;
                    Ok((started, Instant::now(), timed.report.pushed))
                })
            })
            .collect();
        barrier.wait();
        // From the first device to start, not from this thread's return from the barrier: with
        // 50 threads released at once this one may run only after some have done much of their
        // work.
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        let mut pushed = 0;
        for handle in handles {
            let (started, ended, count) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a device panicked"))??;
            first = Some(first.map_or(started, |first| first.min(started)));
            last = Some(last.map_or(ended, |last| last.max(ended)));
            pushed += count;
        }
        let elapsed = first
            .zip(last)
            .map_or(Duration::ZERO, |(first, last)| last - first);
        Ok((elapsed, pushed))
    })?;
    anyhow::ensure!(pushed == n, "{count} devices pushed {pushed} of {n}");
    let (server_us, client_us) = cpu.per_household(&server, n)?;
    let rate = n as f64 / secs(elapsed);
    say!(
        "{count} devices at once: {n} households in {:.3} s = {} households/s; CPU per household: server {server_us:.0} us, devices {client_us:.0} us",
        secs(elapsed),
        figures::show(rate)
    );
    results.fleet_rate.push(rate);
    results.fleet_cpu_us.push((server_us, client_us));
    let memory = server.memory()?;
    results
        .server_peak_mib
        .push((format!("fleet-{run}"), mib(memory.peak_kib)));
    server.stop()?;
    drop(devices);
    ctx.done_with(&ctx.tmp.join(format!("fleet-{run}")));
    Ok(())
}

/// One commune's households: a device pushes them through a counting proxy, a fresh device
/// pulls them through another, then fresh devices pull them straight, timed.
fn phase_commune(ctx: &Ctx, run: usize, results: &mut Results) -> anyhow::Result<()> {
    let count = ctx.config.commune;
    let options = ctx.config.options;
    let server = ServerProcess::start(&ctx.fresh_dir(&format!("commune-{run}"))?)?;
    let push_proxy = Proxy::start(&server.url)?;
    let pull_proxy = Proxy::start(&server.url)?;
    let recorder = Device::through(ctx.handle(), &push_proxy)?;
    for i in 0..count {
        recorder.save(&ctx.generator.household(i))?;
    }
    let pushed = recorder.sync(ctx.handle(), options)?;
    anyhow::ensure!(
        pushed.report.applied == count,
        "commune push applied {}",
        pushed.report.applied
    );
    let reader = Device::through(ctx.handle(), &pull_proxy)?;
    let pulled = reader.sync(ctx.handle(), options)?;
    anyhow::ensure!(
        pulled.report.pulled == count,
        "commune pull got {}",
        pulled.report.pulled
    );
    results.wire_push.push(pushed.push_bytes);
    results.wire_pull.push(pulled.pull_bytes);
    say!(
        "commune of {count}: push {} B up + {} B down per household; pull {} B up + {} B down per household",
        pushed.push_bytes.up / count as u64,
        pushed.push_bytes.down / count as u64,
        pulled.pull_bytes.up / count as u64,
        pulled.pull_bytes.down / count as u64
    );
    for _ in 0..ctx.config.pulls {
        let fresh = Device::new(ctx.handle(), &server.url)?;
        let timed = fresh.sync(ctx.handle(), options)?;
        anyhow::ensure!(
            timed.report.pulled == count,
            "fresh pull got {}",
            timed.report.pulled
        );
        say!(
            "first pull of {count}: {:.3} s in {} round trips ({:.3} s waiting for the server)",
            secs(timed.total()),
            timed.round_trips(),
            secs(timed.waiting_pull)
        );
        results.commune_pull_s.push(secs(timed.total()));
        results.commune_pull_trips.push(timed.round_trips() as f64);
    }
    server.stop()?;
    ctx.done_with(&ctx.tmp.join(format!("commune-{run}")));
    Ok(())
}

/// The peer on the same households: its bench.js (push, conflicting edits, sync with nothing
/// new) and wire.js (bytes, first pull).
fn phase_peer(
    ctx: &Ctx,
    dir: &Path,
    docs: &Path,
    run: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let peer = peer::Peer::new(dir, &ctx.tmp.join("peer"))?;
    say!("peer: bench.js on {} households", ctx.config.n);
    let bench = peer.bench_js(docs, ctx.config.n, run + 1)?;
    say!("peer: {}", bench.line);
    let number = |key: &str| {
        bench
            .number(key)
            .with_context(|| format!("bench.js printed no {key}"))
    };
    results.peer_push_rate.push(number("push_docs_per_s")?);
    results.peer_merge_rate.push(number("sync_revs_per_s")?);
    results.peer_noop_ms.push(number("noop_sync_ms")?);
    results.peer_conflicts.push(json!({
        "local_conflicted_docs": bench.line.get("local_conflicted_docs"),
        "remote_conflicted_docs": bench.line.get("remote_conflicted_docs"),
        "winner_is_device_edit": bench.line.get("winner_is_device_edit"),
        "sync_push_docs_written": bench.line.get("sync_push_docs_written"),
        "sync_pull_docs_written": bench.line.get("sync_pull_docs_written"),
    }));
    results
        .peer_server_peak_mib
        .push(mib(bench.server_memory.peak_kib));

    say!("peer: wire.js on {} households", ctx.config.commune);
    let wire = peer.wire(docs, ctx.config.commune, ctx.config.pulls, run + 1)?;
    say!(
        "peer: {} push {:?} pull {:?}",
        wire.line,
        wire.push,
        wire.pull
    );
    results.peer_wire_push.push(wire.push);
    results.peer_wire_pull.push(wire.pull);
    if let Some(pulls) = wire.line.get("pull_ms").and_then(|v| v.as_array()) {
        results
            .peer_pull_s
            .extend(pulls.iter().filter_map(|v| v.as_f64()).map(|ms| ms / 1e3));
    }
    Ok(())
}

/// One registry grown to each size in turn; at each, a device catches up and then syncs with
/// nothing new, repeatedly; the server's memory and disk are read.
fn phase_sizes(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let dir = ctx.fresh_dir("sizes")?;
    let server = ServerProcess::start(&dir)?;
    let device = Device::new(ctx.handle(), &server.url)?;
    let options = ctx.config.options;
    let mut have = 0;
    let (mut record_bytes, mut field_map_bytes) = (0, 0);
    for &size in &ctx.config.sizes {
        if size > have {
            say!("growing the registry from {have} to {size} households");
            let filled = fill::fill(ctx.handle(), &server.url, &ctx.generator, have, size, 2)?;
            record_bytes += filled.record_bytes;
            field_map_bytes += filled.field_map_bytes;
            let fill_rate = filled.households as f64 / secs(filled.elapsed);
            say!("grown at {} households/s", figures::show(fill_rate));
            let catch_up = device.sync(ctx.handle(), options)?;
            anyhow::ensure!(
                catch_up.report.pulled == size - have,
                "the device caught up with {} of {}",
                catch_up.report.pulled,
                size - have
            );
            let catch_up_rate = catch_up.report.pulled as f64 / secs(catch_up.total());
            say!(
                "a device pulled them at {} households/s",
                figures::show(catch_up_rate)
            );
            have = size;
            let mut noop_ms = Vec::with_capacity(ctx.config.noops);
            let mut noop_server_ms = Vec::with_capacity(ctx.config.noops);
            let mut round_trips = 0;
            for _ in 0..ctx.config.noops {
                let timed = device.sync(ctx.handle(), options)?;
                anyhow::ensure!(
                    timed.report.pulled == 0,
                    "a sync with nothing new pulled something"
                );
                noop_ms.push(secs(timed.total()) * 1e3);
                noop_server_ms.push(secs(timed.waiting_pull) * 1e3);
                round_trips = round_trips.max(timed.round_trips());
            }
            let memory = server.memory()?;
            let disk = disk_use(&dir)?;
            say!(
                "{size}: nothing new in {:.2} ms (median of {}; {:.2} ms of it the round trip), {round_trips} round trip(s); server peak {:.0} MiB; disk {} B per household",
                figures::median(&noop_ms).unwrap_or(0.0),
                noop_ms.len(),
                figures::median(&noop_server_ms).unwrap_or(0.0),
                mib(memory.peak_kib),
                disk.allocated / size as u64
            );
            results.sizes.push(SizeResult {
                size,
                noop_ms,
                noop_server_ms,
                round_trips,
                fill_rate,
                catch_up_rate,
                peak_mib: mib(memory.peak_kib),
                rss_mib: mib(memory.rss_kib),
                disk,
                record_bytes,
                field_map_bytes,
                server_cpu_s: server.cpu_seconds()?,
            });
        }
    }
    server.stop()?;
    ctx.done_with(&dir);
    Ok(())
}

fn per_household(bytes: &[proxy::Bytes], count: usize) -> (Vec<f64>, Vec<f64>) {
    let up = bytes.iter().map(|b| b.up as f64 / count as f64).collect();
    let down = bytes.iter().map(|b| b.down as f64 / count as f64).collect();
    (up, down)
}

impl Results {
    fn figures(&self, config: &Config) -> Vec<Figure> {
        let mut out = Vec::new();
        if !self.push_rate.is_empty() {
            let mut f = Figure::new(
                "first_push_one_device",
                format!("1. first push, 1 device, {} households", config.n),
                "households/s",
                Better::Higher,
            )
            .check(Check::TimesPeer(10.0));
            f.ours = self.push_rate.clone();
            f.peer = self.peer_push_rate.clone();
            f.detail = json!({
                "push_requests": self.push_requests,
                "cpu_us_per_household_server_device": self.push_cpu_us,
                "peer": "bench.js push_docs_per_s (batch 100)",
            });
            out.push(f);
        }
        if !self.fleet_rate.is_empty() {
            let mut f = Figure::new(
                "first_push_fleet",
                format!("1. first push, {} devices at once", config.devices),
                "households/s",
                Better::Higher,
            )
            .check(Check::AtLeast(30_000.0));
            f.ours = self.fleet_rate.clone();
            f.detail = json!({
                "households": config.n,
                "devices": config.devices,
                "cpu_us_per_household_server_device": self.fleet_cpu_us,
            });
            out.push(f);
        }
        if !self.commune_pull_s.is_empty() {
            let mut f = Figure::new(
                "first_pull_commune",
                format!("2. first pull of a commune, {} households", config.commune),
                "s",
                Better::Lower,
            )
            .check(Check::Below(0.5))
            .check(Check::TimesPeer(10.0));
            f.ours = self.commune_pull_s.clone();
            f.peer = self.peer_pull_s.clone();
            f.detail = json!({ "round_trips": self.commune_pull_trips });
            out.push(f);
        }
        for size in &self.sizes {
            let mut f = Figure::new(
                format!("nothing_new_{}", size.size),
                format!("3. sync with nothing new, registry of {}", size.size),
                "ms",
                Better::Lower,
            )
            .check(Check::Below(5.0));
            f.ours = size.noop_ms.clone();
            if size.size == config.n {
                f.peer = self.peer_noop_ms.clone();
            }
            f.detail = json!({
                "round_trips": size.round_trips,
                "p90_ms": quantile(&size.noop_ms, 0.9),
                "round_trip_median_ms": figures::median(&size.noop_server_ms),
                "catch_up_pull_households_per_s": size.catch_up_rate,
                "fill_households_per_s": size.fill_rate,
            });
            out.push(f);
            let mut trips = Figure::new(
                format!("nothing_new_round_trips_{}", size.size),
                format!("3. round trips of that sync, {}", size.size),
                "",
                Better::Lower,
            )
            .check(Check::Equals(1.0));
            trips.ours = vec![size.round_trips as f64];
            out.push(trips);
        }
        if !self.merge_rate.is_empty() {
            let mut f = Figure::new(
                "conflicting_edits",
                format!("4. merge after 10% edited on both sides, {}", config.n),
                "revisions/s",
                Better::Higher,
            )
            .check(Check::TimesPeer(10.0));
            f.ours = self.merge_rate.clone();
            f.peer = self.peer_merge_rate.clone();
            f.detail = json!({ "runs": self.merge_detail, "peer": self.peer_conflicts });
            out.push(f);
            let mut c = Figure::new(
                "conflicts_reported",
                "4. conflicts reported (same field)",
                "",
                Better::Higher,
            )
            .check(Check::Equals(self.expected_conflicts as f64));
            c.ours = self.conflicts.clone();
            out.push(c);
            let mut m = Figure::new(
                "merged_reported",
                "4. merged (different fields)",
                "",
                Better::Higher,
            )
            .check(Check::Equals(self.expected_merged as f64));
            m.ours = self.merged.clone();
            out.push(m);
        }
        if !self.wire_push.is_empty() {
            let count = config.commune;
            for (key, label, ours, peer) in [
                (
                    "wire_push",
                    "5. wire, push (sent + received)",
                    &self.wire_push,
                    &self.peer_wire_push,
                ),
                (
                    "wire_pull",
                    "5. wire, pull (sent + received)",
                    &self.wire_pull,
                    &self.peer_wire_pull,
                ),
            ] {
                let total = |b: &[proxy::Bytes]| {
                    b.iter()
                        .map(|b| (b.up + b.down) as f64 / count as f64)
                        .collect::<Vec<_>>()
                };
                let mut f = Figure::new(key, format!("{label} per household"), "B", Better::Lower)
                    .check(Check::FractionOfPeer(1.0 / 3.0));
                f.ours = total(ours);
                f.peer = total(peer);
                let (up, down) = per_household(ours, count);
                let (peer_up, peer_down) = per_household(peer, count);
                f.detail = json!({
                    "ours_up": figures::median(&up), "ours_down": figures::median(&down),
                    "peer_up": figures::median(&peer_up), "peer_down": figures::median(&peer_down),
                    "households": count, "counted": "TCP bytes through a proxy, HTTP headers included",
                });
                out.push(f);
            }
        }
        if !self.save_ms.is_empty() {
            for (key, label, q) in [
                ("save_p50", "6. device save, p50", 0.5),
                ("save_p99", "6. device save, p99", 0.99),
            ] {
                let mut f = Figure::new(key, label, "ms", Better::Lower);
                if q > 0.9 {
                    f = f.check(Check::Below(5.0));
                }
                f.ours = quantile(&self.save_ms, q).into_iter().collect();
                f.detail = json!({
                    "saves": self.save_ms.len(),
                    "fleet_p50": quantile(&self.fleet_save_ms, 0.5),
                    "fleet_p99": quantile(&self.fleet_save_ms, 0.99),
                });
                out.push(f);
            }
        }
        for size in &self.sizes {
            let mut rss = Figure::new(
                format!("server_peak_rss_{}", size.size),
                format!("7. server peak RSS, registry of {}", size.size),
                "MiB",
                Better::Lower,
            );
            if size.size >= 1_000_000 {
                rss = rss.check(Check::Below(1024.0));
            }
            rss.ours = vec![size.peak_mib];
            rss.detail = json!({ "rss_now_mib": size.rss_mib, "server_cpu_s": size.server_cpu_s });
            out.push(rss);
            let mut disk = Figure::new(
                format!("disk_over_encoded_{}", size.size),
                format!("7. server disk / encoded records, {}", size.size),
                "x",
                Better::Lower,
            );
            if size.size >= 1_000_000 {
                disk = disk.check(Check::Below(3.0));
            }
            disk.ours = vec![size.disk.allocated as f64 / size.record_bytes.max(1) as f64];
            disk.detail = json!({
                "disk_bytes": size.disk.allocated,
                "apparent_bytes": size.disk.apparent,
                "disk_per_household": size.disk.allocated / size.size as u64,
                "encoded_record_per_household": size.record_bytes / size.size as u64,
                "encoded_field_map_per_household": size.field_map_bytes / size.size as u64,
                "disk_over_field_maps": size.disk.allocated as f64 / size.field_map_bytes.max(1) as f64,
            });
            out.push(disk);
        }
        if !self.echo_pull_s.is_empty() {
            let mut f = Figure::new(
                "echo_pull_after_first_push",
                "   (the first sync's pull of its own pushes)",
                "s",
                Better::Lower,
            );
            f.ours = self.echo_pull_s.clone();
            out.push(f);
            let mut f = Figure::new(
                "first_pull_all",
                format!("   (first pull of all {} to a second device)", config.n),
                "s",
                Better::Lower,
            );
            f.ours = self.pull_n_s.clone();
            out.push(f);
        }
        if !self.server_peak_mib.is_empty() || !self.peer_server_peak_mib.is_empty() {
            let mut f = Figure::new(
                "server_peak_rss_push_phase",
                format!("   (server peak RSS after the {} push and merge)", config.n),
                "MiB",
                Better::Lower,
            );
            f.ours = self
                .server_peak_mib
                .iter()
                .filter(|(phase, _)| phase.starts_with("push"))
                .map(|(_, v)| *v)
                .collect();
            f.peer = self.peer_server_peak_mib.clone();
            out.push(f);
        }
        out
    }
}
