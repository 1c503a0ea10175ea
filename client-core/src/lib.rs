//! The device side of the field survey: an offline store, the outbox of pending changes, and
//! the sync engine that exchanges them with the registry server.
//!
//! # Layout
//! - [`store`]: the offline store on sled. Households as the enumerator sees them (the server's
//!   last revision with pending local changes laid over), the outbox of mutations, outcomes the
//!   server sent back (conflicts, rejections), the pull cursor, the device's identity, its
//!   enrolment (user and device token) and the user's areas. Every
//!   write is one atomic sled batch followed by a flush, and returns only once it is durable.
//!   The only module that opens sled.
//! - [`sync`](mod@sync): the sans-I/O sync engine ([`sync::SyncEngine`]): it produces the next request
//!   from the store and consumes the response, so it runs the same over HTTP, in process, or
//!   under injected faults. Also the thin async driver [`sync::sync`] and the report.
//! - [`transport`]: the [`transport::Transport`] trait the driver sends requests through, and
//!   [`transport::HttpTransport`], its reqwest implementation.
//! - [`clock`]: the device's clock, read in one place (save times, "today" for validation).
//! - [`reference`]: the reference data the device classifies with (built in, then the
//!   server's, fetched at each sync) and [`reference::classify`], the device's classification.
//!
//! The field app `ho` (`src/bin/ho.rs`) is a command-line front end over this library.
//!
//! # Example
//! ```
//! use client_core::store::Store;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! store.setup("http://127.0.0.1:8080", uuid::Uuid::new_v4())?;
//! assert!(store.pending()?.is_empty());
//! assert_eq!(store.cursor()?, 0);
//! # Ok(())
//! # }
//! ```

pub mod clock;
pub mod reference;
pub mod store;
pub mod sync;
pub mod transport;

#[cfg(test)]
mod test_support;

pub use store::{
    Enrolment, LocalConflict, LocalHousehold, LocalRejection, SaveReceipt, Store, StoreError,
};
pub use sync::{
    sync, sync_with, Ahead, Progress, Request, Response, SyncEngine, SyncError, SyncReport,
};
pub use transport::{Enrolled, HttpTransport, Transport, TransportError};
