//! An enumerator's device as the field app runs it: a real `client_core::Store` in a fresh
//! temp directory, a real `HttpTransport`, and a sync driven step by step so that the push and
//! pull phases are timed apart.
//!
//! Devices run on plain threads: the store's writes block (each ends with a flush), and the
//! transport's futures run on the shared runtime through its handle.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use client_core::sync::{accepted_whole, Follower, SyncOptions};
use client_core::{Ahead, HttpTransport, Request, Store, SyncEngine, SyncReport, Transport};
use protocol::household::Household;
use tempfile::TempDir;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::proxy::{Bytes, Proxy};
use crate::server_proc;

/// The batch after a push, read on a thread of its own.
type PreRead = std::thread::JoinHandle<Result<Option<Ahead>, client_core::sync::SyncError>>;

/// A request sent ahead, on the runtime: it comes back with its answer.
type AheadTask = tokio::task::JoinHandle<(
    Ahead,
    Result<client_core::sync::Response, client_core::TransportError>,
)>;

pub struct Device {
    pub store: Store,
    pub id: Uuid,
    transport: HttpTransport,
    /// The proxy the transport goes through, when bytes are counted.
    proxy: Option<Proxy>,
    _dir: TempDir,
}

/// What one sync did, with its phases timed apart.
#[derive(Clone, Debug, Default)]
pub struct Timed {
    pub report: SyncReport,
    /// From the first request to the moment every push reply was recorded (durable).
    pub push: Duration,
    /// From then to the end of the last pull page.
    pub pull: Duration,
    pub push_requests: usize,
    pub pull_requests: usize,
    /// Bytes through the proxy in each phase (zero without a proxy).
    pub push_bytes: Bytes,
    pub pull_bytes: Bytes,
    /// Time spent waiting for the server (request sent to response decoded), push and pull.
    pub waiting_push: Duration,
    pub waiting_pull: Duration,
}

impl Timed {
    pub fn total(&self) -> Duration {
        self.push + self.pull
    }

    pub fn round_trips(&self) -> usize {
        self.push_requests + self.pull_requests
    }
}

/// Enrols a device id for the benchmark's account over HTTP, as `ho init` does, and returns
/// a transport that sends its token.
pub fn enrol(rt: &Handle, url: &str, id: Uuid) -> anyhow::Result<(HttpTransport, String)> {
    let transport = HttpTransport::new(url)?;
    let enrolled = rt
        .block_on(transport.enrol(server_proc::USER, server_proc::PASSWORD, id))
        .context("enrolling a device")?;
    Ok((transport.with_token(&enrolled.token), enrolled.token))
}

impl Device {
    /// A device set up and enrolled against the server at `url`, talking to it directly.
    pub fn new(rt: &Handle, url: &str) -> anyhow::Result<Device> {
        Device::build(rt, url, None)
    }

    /// A device whose every request goes through `proxy`.
    pub fn through(rt: &Handle, proxy: &Proxy) -> anyhow::Result<Device> {
        Device::build(rt, &proxy.url.clone(), Some(proxy.clone()))
    }

    fn build(rt: &Handle, url: &str, proxy: Option<Proxy>) -> anyhow::Result<Device> {
        let dir = tempfile::Builder::new().prefix("bench-device-").tempdir()?;
        let store = Store::open(dir.path())?;
        let id = Uuid::now_v7();
        store.setup(url, id)?;
        let (transport, token) = enrol(rt, url, id)?;
        store.set_enrolment(&client_core::Enrolment {
            user: server_proc::USER.to_string(),
            token,
        })?;
        Ok(Device {
            store,
            id,
            transport,
            proxy,
            _dir: dir,
        })
    }

    /// Saves a household and returns how long the durable save took.
    pub fn save(&self, household: &Household) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.store
            .save_household(household)
            .context("saving a household")?;
        Ok(started.elapsed())
    }

    fn bytes(&self) -> Bytes {
        self.proxy.as_ref().map(Proxy::bytes).unwrap_or_default()
    }

    /// A whole sync: push the outbox, then pull until nothing more.
    pub fn sync(&self, rt: &Handle, options: SyncOptions) -> anyhow::Result<Timed> {
        self.run(rt, options, false)
    }

    /// The push phase only: stops when the engine turns to pulling.
    pub fn push_only(&self, rt: &Handle, options: SyncOptions) -> anyhow::Result<Timed> {
        self.run(rt, options, true)
    }

    fn run(&self, rt: &Handle, options: SyncOptions, push_only: bool) -> anyhow::Result<Timed> {
        let mut engine = SyncEngine::with_options(&self.store, options)?;
        let mut timed = Timed::default();
        let started = Instant::now();
        let bytes_at_start = self.bytes();
        let mut pull_started: Option<(Instant, Bytes)> = None;
        // As `client_core::sync` does: the next request is sent while an answer is written,
        // and after a push accepted whole the batch after that one too.
        let mut flights: VecDeque<(Option<u64>, AheadTask)> = VecDeque::new();
        let send_ahead = |next: Ahead| {
            let transport = self.transport.clone();
            let pushed_through = next.pushed_through();
            let task = rt.spawn(async move {
                let answer = transport.send(next.request()).await;
                (next, answer)
            });
            (pushed_through, task)
        };
        // The batch after the last push sent, read while the answers are awaited.
        let mut pre_read: Option<(u64, PreRead)> = None;
        let start_read = |seq: u64, follower: Follower| {
            let store = self.store.clone();
            (
                seq,
                std::thread::spawn(move || follower.following(&store, seq)),
            )
        };
        loop {
            let mut waited = Duration::ZERO;
            let next = match flights.pop_front().map(|(_, task)| task) {
                Some(task) => {
                    let waiting = Instant::now();
                    let (sent, answer) = rt.block_on(task).context("the request sent ahead")?;
                    waited = waiting.elapsed();
                    engine
                        .next_request_after(&self.store, sent)?
                        .map(|(request, same)| (request, same.then_some(answer)))
                }
                None => engine
                    .next_request(&self.store)?
                    .map(|request| (request, None)),
            };
            let Some((request, answer)) = next else { break };
            match request {
                Request::Push(_) => timed.push_requests += 1,
                Request::Pull(_) => {
                    if pull_started.is_none() {
                        pull_started = Some((Instant::now(), self.bytes()));
                        if push_only {
                            break;
                        }
                    }
                    timed.pull_requests += 1;
                }
            }
            let sent = Instant::now();
            let response = match answer {
                Some(answer) => answer.context("sending a sync request")?,
                None => rt
                    .block_on(self.transport.send(&request))
                    .context("sending a sync request")?,
            };
            waited += sent.elapsed();
            if matches!(request, Request::Push(_)) {
                timed.waiting_push += waited;
            } else {
                timed.waiting_pull += waited;
            }
            if flights.is_empty() {
                if let Some(next) = engine.ahead(&self.store, &request, &response)? {
                    let through = next.pushed_through();
                    flights.push_back(send_ahead(next));
                    pre_read = through
                        .zip(engine.follower())
                        .map(|(seq, f)| start_read(seq, f));
                }
            }
            // As `client_core::sync` does: the batch after the one ahead, read while the
            // answers were awaited, is sent before the answer is written.
            let accepted = accepted_whole(&request, &response).is_some();
            if !accepted {
                pre_read = None;
            }
            let follow = match flights.front() {
                Some((through, _)) if accepted && flights.len() == 1 => {
                    through.zip(engine.follower())
                }
                _ => None,
            };
            if let Some((seq, follower)) = follow {
                let read = match pre_read.take() {
                    Some((read_after, reading)) if read_after == seq => reading
                        .join()
                        .map_err(|_| anyhow::anyhow!("reading the following batch failed"))??,
                    _ => follower.following(&self.store, seq)?,
                };
                if let Some(following) = read {
                    let through = following.pushed_through();
                    flights.push_back(send_ahead(following));
                    pre_read = through.map(|seq| start_read(seq, follower));
                }
            }
            engine.handle(&self.store, response)?;
        }
        let ended = Instant::now();
        let bytes_at_end = self.bytes();
        let (pull_at, bytes_at_pull) = pull_started.unwrap_or((ended, bytes_at_end));
        timed.push = pull_at - started;
        timed.pull = ended - pull_at;
        timed.push_bytes = bytes_at_pull - bytes_at_start;
        timed.pull_bytes = bytes_at_end - bytes_at_pull;
        timed.report = engine.report();
        Ok(timed)
    }
}
