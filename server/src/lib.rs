//! The registry service: canonical households on sled, the merge engine, the sync endpoints.
//!
//! # Layout
//! - [`config`]: the command line and environment, parsed and validated into a [`Config`]
//!   before anything is opened or bound.
//! - [`store`]: the [`Registry`], the only module that opens sled: households, revisions,
//!   the change log, conflicts, rejections, per-device seqs and outcomes, each under its own
//!   hand-built key prefix in one tree; classifications kept as decisions, their texts rebuilt
//!   on read with the reference data they were made with, which it keeps by fingerprint.
//! - [`journal`]: the append-only, checksummed journal of every registry write, synced before
//!   sled applies it; [`store::rebuild`] rebuilds a registry from it (`server rebuild`) and
//!   [`store::check`] reads a data directory whole, checking every checksum (`server check`).
//! - [`merge_engine`]: checks a push, applies it with the three-way merge against an overlay
//!   of the registry and commits it as one durable write; reads pull pages.
//! - [`scope`]: [`scope::Caller`] and the `may_read` / `may_write` checks on every household
//!   a request touches, by the caller's areas.
//! - [`auth`]: accounts, enrolled devices, sessions, the sign-in limit, the audit log, the
//!   `/v1/auth/*` and `/v1/admin/*` routes and `server user|device`.
//! - [`limits`]: the time limit on every request.
//! - [`routes`]: the axum router: `/healthz`, the sync endpoints, the supervisor views, the
//!   request log.
//! - [`error`]: [`AppError`], and how each failure becomes an HTTP response.
//! - [`reference`]: the reference data (poverty standards, rural/urban rules, B1 tables) loaded
//!   from the reference folder or the embedded defaults, and `GET /v1/reference`.
//! - [`classification`]: recomputing every stored classification after a reference-data
//!   correction (`server recompute`).
//!
//! The entry points take their world as arguments: [`AppState::open`] a directory,
//! [`app`] a state, [`run`] a bound listener and a shutdown future.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let state = server::AppState::open(std::path::Path::new("/var/lib/ho-registry"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! server::run(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod classification;
pub mod config;
pub mod error;
pub mod journal;
pub mod limits;
pub mod merge_engine;
pub mod reference;
pub mod routes;
pub mod scope;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use merge_engine::PackedRecords;
use protocol::reference::ReferenceData;
use protocol::sync::{PullRequest, PullResponse, PushReply, PushRequest};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

pub use classification::RecomputeReport;
pub use config::Config;
pub use error::AppError;
pub use routes::app;
pub use scope::Caller;
pub use store::{
    ClassificationRecord, ConflictRecord, PulledHousehold, Registry, RejectedMutation, Revision,
    RevisionCause, StoreError, StoredHousehold,
};

/// What every request handler shares: the registry and the lock that makes pushes one at a
/// time.
#[derive(Clone, Debug)]
pub struct AppState {
    registry: Arc<Registry>,
    /// Held while a push is decided and written, from reading the device's seq to the atomic
    /// batch, so that the overlay a push computes is never stale. It is released before the
    /// flush, which the push waits for before it answers (group commit). Pulls do not take it.
    writer: Arc<Mutex<()>>,
    /// The pushes under way, per device ([`Pushing`]).
    pushing: Arc<Pushing>,
    /// Permits to work on a push, from decompressing its body to writing its batch
    /// ([`AppState::push_work`]).
    push_work: Arc<Semaphore>,
    /// The reference data pushes are validated and classified with. Replaced only under the
    /// writer lock ([`AppState::replace_reference`]).
    reference: Arc<RwLock<Arc<ReferenceData>>>,
    /// Accounts, devices, sessions, the sign-in limit and the audit log.
    auth: Arc<auth::Auth>,
}

impl AppState {
    /// Opens (or creates) the registry under `data_dir`, with the embedded reference data.
    pub fn open(data_dir: &std::path::Path) -> Result<AppState, StoreError> {
        // The embedded files are parsed by protocol's tests; they cannot fail in a build that
        // passed them.
        let reference = ReferenceData::embedded().expect("the embedded reference data parses");
        AppState::open_with(data_dir, reference)
    }

    /// Opens (or creates) the registry under `data_dir`, classifying with `reference`
    /// (see [`reference::load`]).
    pub fn open_with(
        data_dir: &std::path::Path,
        reference: ReferenceData,
    ) -> Result<AppState, StoreError> {
        let registry = Arc::new(Registry::open(data_dir)?);
        let auth = Arc::new(auth::Auth::open(&registry, auth::AuthConfig::default())?);
        let reference = Arc::new(reference);
        // Revisions keep their classifications as decisions, rebuilt with this data on read.
        registry.keep_reference(&reference)?;
        Ok(AppState {
            registry,
            writer: Arc::new(Mutex::new(())),
            pushing: Arc::default(),
            push_work: Arc::new(Semaphore::new(pushes_worked_at_once())),
            reference: Arc::new(RwLock::new(reference)),
            auth,
        })
    }

    /// The same state with accounts configured by `config` (session length, sign-in limits,
    /// request time limit, clock).
    pub fn with_auth_config(mut self, config: auth::AuthConfig) -> Result<AppState, StoreError> {
        self.auth = Arc::new(auth::Auth::open(&self.registry, config)?);
        Ok(self)
    }

    /// Accounts, devices, sessions and the audit log.
    pub fn auth(&self) -> &auth::Auth {
        &self.auth
    }

    pub(crate) fn auth_handle(&self) -> Arc<auth::Auth> {
        Arc::clone(&self.auth)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The reference data in use.
    pub fn reference(&self) -> Arc<ReferenceData> {
        let guard = self
            .reference
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Replaces the reference data (after an official corrected a file) and recomputes every
    /// household's classification with it, between pushes.
    pub async fn replace_reference(
        &self,
        reference: ReferenceData,
    ) -> Result<RecomputeReport, AppError> {
        let guard = Arc::clone(&self.writer).lock_owned().await;
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let reference = Arc::new(reference);
            state.registry.keep_reference(&reference)?;
            *state
                .reference
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&reference);
            let report = classification::recompute(&state.registry, &reference, now_ms());
            drop(guard);
            Ok(report?)
        })
        .await
        .map_err(|error| AppError::Worker(error.to_string()))?
    }

    /// Applies a push as an unrestricted caller: the in-process entry point for tests and
    /// simulations. The HTTP endpoint calls [`AppState::push_at_work`] with the request's caller.
    pub async fn push(&self, request: PushRequest) -> Result<PushReply, AppError> {
        self.push_as(Caller::Unrestricted, request).await
    }

    /// Applies a push for `caller`. A malformed batch is refused before the lock is taken;
    /// the reply is returned only once the batch is durable.
    pub async fn push_as(
        &self,
        caller: Caller,
        request: PushRequest,
    ) -> Result<PushReply, AppError> {
        let work = self.push_work().await?;
        self.push_at_work(caller, request, PackedRecords::default(), work)
            .await
    }

    /// Waits for a permit to work on a push: to decompress and decode its body, work out its
    /// creates, wait for the writer lock and write the batch ([`AppState::push_at_work`] gives
    /// it back before the flush, so that group commit still gathers every push written
    /// meanwhile). At most twice as many pushes as the machine has cores are worked on at
    /// once; the rest wait their turn in the order they came. Fifty devices pushing at once
    /// otherwise each worked out 200 households, then waited for the lock with them: the last
    /// was written long after its maps had left the caches. In four A/B rounds on 2 cores
    /// the server took 64–68 µs a household without the permits and 60–68 with them (60–63
    /// in three), and about 4% more households a second went through. A body is read before
    /// its permit is asked for, so a device on a slow link
    /// holds none while it sends.
    pub async fn push_work(&self) -> Result<PushWork, AppError> {
        Arc::clone(&self.push_work)
            .acquire_owned()
            .await
            .map(|permit| PushWork { _permit: permit })
            .map_err(|error| AppError::Worker(error.to_string()))
    }

    /// [`AppState::push_as`] with its permit to work ([`AppState::push_work`]), and the
    /// packed records a packed push came with ([`merge_engine::unpack_push`]).
    pub async fn push_at_work(
        &self,
        caller: Caller,
        request: PushRequest,
        packed_records: PackedRecords,
        work: PushWork,
    ) -> Result<PushReply, AppError> {
        merge_engine::validate_push(&request)?;
        let device = request.device_id;
        let first_seq = request.mutations.first().map(|mutation| mutation.seq);
        let _under_way = self.pushing.begin(device, first_seq);
        let registry = Arc::clone(&self.registry);
        let reference = self.reference();
        // A push's time is when its work begins: its creates are worked out with it before
        // the lock is taken, side by side with other pushes'.
        let now_ms = now_ms();
        let (registry, reference, caller, request, prepared) =
            tokio::task::spawn_blocking(move || {
                let mut request = request;
                // A hint: a replay is not prepared, and a create prepared needlessly is unused.
                let last_seq = registry.device_last_seq(request.device_id).unwrap_or(0);
                let prepared = merge_engine::prepare_creates(
                    &reference,
                    &caller,
                    &mut request,
                    packed_records,
                    last_seq,
                    now_ms,
                );
                (registry, reference, caller, request, prepared)
            })
            .await
            .map_err(|error| AppError::Worker(error.to_string()))?;
        let prepared = prepared?;
        // The guard moves into the blocking task, so the lock is held until the write is done
        // even if this future is dropped (a client that hangs up mid-push).
        let guard = loop {
            // Made before the check below, so that it hears a push that ends after the check:
            // one made after it could miss that push's signal and wait for another's.
            let ended = self.pushing.ended.notified();
            let guard = Arc::clone(&self.writer).lock_owned().await;
            // A device sends its next push before the answer to the last one, and the two can
            // arrive, or be prepared, out of order: a push whose earlier seqs are missing
            // waits while a push of its device that starts with them is under way, instead of
            // answering a seq gap the device would only have to resend. That push is not
            // missing any, so it goes on, and it ends (or is dropped) in finite time.
            let next_wanted = match (first_seq, self.registry.device_last_seq(device)) {
                (Some(first), Ok(last)) if first > last.saturating_add(1) => {
                    Some(last.saturating_add(1))
                }
                _ => None,
            };
            if !next_wanted.is_some_and(|seq| self.pushing.under_way_from(device, seq)) {
                break guard;
            }
            drop(guard);
            ended.await;
        };
        tokio::task::spawn_blocking(move || {
            let reply = merge_engine::apply_push(
                &registry, &reference, &caller, &request, prepared, now_ms,
            );
            // Everything the reply reports (this batch, or the earlier one a replay repeats)
            // is written by now. The lock goes before the flush, so pushes that arrive
            // meanwhile write theirs and share the next flush: group commit.
            let ticket = registry.applied_ticket();
            drop(guard);
            drop(work);
            let (reply, spent) = reply?;
            // Freed beside the flush, not before it.
            if let (false, Ok(runtime)) = (spent.is_empty(), tokio::runtime::Handle::try_current())
            {
                runtime.spawn_blocking(move || drop(spent));
            }
            registry.make_durable(ticket)?;
            Ok(reply)
        })
        .await
        .map_err(|error| AppError::Worker(error.to_string()))?
    }

    /// Reads a pull page as an unrestricted caller.
    pub async fn pull(&self, request: PullRequest) -> Result<PullResponse, AppError> {
        self.pull_as(Caller::Unrestricted, request).await
    }

    /// Reads a pull page for `caller`: only households the caller may read are returned.
    pub async fn pull_as(
        &self,
        caller: Caller,
        request: PullRequest,
    ) -> Result<PullResponse, AppError> {
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || merge_engine::pull(&registry, &caller, &request))
            .await
            .map_err(|error| AppError::Worker(error.to_string()))?
    }
}

/// A permit to work on a push, until its batch is written ([`AppState::push_work`]).
#[derive(Debug)]
pub struct PushWork {
    /// Given back when the work is done (dropped).
    _permit: OwnedSemaphorePermit,
}

/// How many pushes are worked on at once: twice the cores, so that one push's CPU work overlaps
/// another's wait for the lock or the disk.
fn pushes_worked_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get()) * 2
}

/// The pushes under way, by device and first seq, and a signal each time one ends.
#[derive(Debug, Default)]
struct Pushing {
    devices: std::sync::Mutex<HashMap<Uuid, Vec<Option<u64>>>>,
    ended: tokio::sync::Notify,
}

impl Pushing {
    fn begin(self: &Arc<Self>, device: Uuid, first_seq: Option<u64>) -> PushUnderWay {
        self.under_way().entry(device).or_default().push(first_seq);
        PushUnderWay {
            pushing: Arc::clone(self),
            device,
            first_seq,
        }
    }

    /// Whether a push of `device` that starts at or before `seq` is under way.
    fn under_way_from(&self, device: Uuid, seq: u64) -> bool {
        self.under_way()
            .get(&device)
            .is_some_and(|firsts| firsts.iter().flatten().any(|first| *first <= seq))
    }

    fn under_way(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Option<u64>>>> {
        // A list of seqs only: one left by a panic elsewhere is still right.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A push under way: from its start until it is answered or dropped.
struct PushUnderWay {
    pushing: Arc<Pushing>,
    device: Uuid,
    first_seq: Option<u64>,
}

impl Drop for PushUnderWay {
    fn drop(&mut self) {
        {
            let mut under_way = self.pushing.under_way();
            if let Some(firsts) = under_way.get_mut(&self.device) {
                if let Some(at) = firsts.iter().position(|first| *first == self.first_seq) {
                    firsts.swap_remove(at);
                }
                if firsts.is_empty() {
                    under_way.remove(&self.device);
                }
            }
        }
        self.pushing.ended.notify_waiters();
    }
}

/// The server's clock, in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Serves the registry on `listener` until `shutdown` completes, then flushes it.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Arc::clone(&state.registry);
    // The peer address reaches handlers for the sign-in limit and the audit log.
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Every acknowledged push was flushed already; this flush is for good measure.
    let flushed = tokio::task::spawn_blocking(move || registry.flush())
        .await
        .map_err(std::io::Error::other)?;
    served?;
    flushed.map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests;
