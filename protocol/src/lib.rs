//! The contract between field devices and the registry server, and nothing else.
//!
//! # Layout
//! - [`household`]: the survey record (household, members with their own ids, dwelling, flags,
//!   income evidence, causes of poverty, the void mark) and [`household::Date`].
//! - [`fields`]: the record seen as a flat map of field paths to values; diff and apply.
//! - [`merge`]: the pure three-way field merge used by the server's merge engine.
//! - [`validate`]: schema rules a household must pass before the registry accepts it.
//! - [`sync`]: push and pull messages, outcomes, conflicts, the protocol version.
//! - [`codec`]: the one bincode codec, with byte limits, a version prefix and trailing bytes
//!   rejected. No other module or crate names bincode.
//!
//! This crate does no I/O: no files, no sockets, no clocks. Callers pass "today" in.

pub mod codec;
pub mod fields;
pub mod household;
pub mod merge;
pub mod sync;
pub mod validate;

/// A household's id: a UUIDv7 made on the device that first recorded it.
pub type HouseholdId = uuid::Uuid;
/// A member's id: a UUID made on the device, so member lists merge by id, not position.
pub type MemberId = uuid::Uuid;
/// A device's id, chosen when the field app is set up.
pub type DeviceId = uuid::Uuid;
