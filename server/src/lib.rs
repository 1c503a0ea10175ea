//! The registry service: canonical households on sled, the merge engine, the sync endpoints.
//!
//! # Layout
//! - [`config`]: the command line and environment, parsed and validated into a [`Config`]
//!   before anything is opened or bound.
//! - [`store`]: the [`Registry`], the only module that opens sled: households, revisions,
//!   the change log, conflicts, rejections, per-device seqs and outcomes, each under its own
//!   hand-built key prefix in one tree.
//! - [`merge_engine`]: checks a push, applies it with the three-way merge against an overlay
//!   of the registry and commits it as one durable write; reads pull pages.
//! - [`scope`]: [`scope::Caller`] and the `may_read` / `may_write` checks, the seam where
//!   accounts and area assignments plug in.
//! - [`routes`]: the axum router: `/healthz`, the sync endpoints, the supervisor views, the
//!   request log.
//! - [`error`]: [`AppError`], and how each failure becomes an HTTP response.
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

pub mod config;
pub mod error;
pub mod merge_engine;
pub mod routes;
pub mod scope;
pub mod store;

use std::sync::Arc;

use protocol::sync::{PullRequest, PullResponse, PushReply, PushRequest};
use tokio::sync::Mutex;

pub use config::Config;
pub use error::AppError;
pub use routes::app;
pub use scope::Caller;
pub use store::{
    ConflictRecord, Registry, RejectedMutation, Revision, RevisionCause, StoreError,
    StoredHousehold,
};

/// What every request handler shares: the registry and the lock that makes pushes one at a
/// time.
#[derive(Clone, Debug)]
pub struct AppState {
    registry: Arc<Registry>,
    /// Held for the whole of a push, from reading the device's seq to the flush, so that the
    /// overlay a push computes is never stale. Pulls do not take it.
    writer: Arc<Mutex<()>>,
}

impl AppState {
    /// Opens (or creates) the registry under `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Result<AppState, StoreError> {
        Ok(AppState {
            registry: Arc::new(Registry::open(data_dir)?),
            writer: Arc::new(Mutex::new(())),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Applies a push as an unrestricted caller: the in-process entry point for tests and
    /// simulations. The HTTP endpoint calls [`AppState::push_as`] with the request's caller.
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
        merge_engine::validate_push(&request)?;
        // The guard moves into the blocking task, so the lock is held until the write is done
        // even if this future is dropped (a client that hangs up mid-push).
        let guard = Arc::clone(&self.writer).lock_owned().await;
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || {
            let reply = merge_engine::apply_push(&registry, &caller, &request, now_ms());
            drop(guard);
            reply
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
    let served = axum::serve(listener, app(state))
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
