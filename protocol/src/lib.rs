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
//!   rejected. No other module or crate names bincode. [`codec::packed`]: values at rest,
//!   compressed against a frozen dictionary. [`codec::packed_push`]: a push whose mutations
//!   travel packed as the outbox keeps them, a new household as its record.
//! - [`access`]: a user's areas ([`access::Scope`]) and which places they hold: the rule both
//!   the server and the device apply.
//! - [`areas`]: the 2025 code set (34 provinces, 3,321 communes) and rural/urban per commune and
//!   period, parsed from embedded or corrected data; [`areas::Village`].
//! - [`standards`]: the poverty standards (ND 07/2021, ND 351/2025) as versioned reference data,
//!   chosen by the review's reference date; provisional values are marked in the data.
//! - [`b1`]: score A from form B1 answers and a region's point table (a format, a loader and a
//!   SAMPLE table; the official tables are data an official enters).
//! - [`indicators`]: the deprivation indicators derived from the members' and the dwelling's
//!   answers, each with its reason or the answers it still needs.
//! - [`classify`]: the pure, total classification (poor, near-poor, average living, not poor,
//!   or "cannot classify: missing …") with the rule that decided; [`classify::decide`], the
//!   same without its texts, for a store that keeps the decision and rebuilds them.
//! - [`reference`]: the reference data as one bundle ([`reference::ReferenceData`]), its wire
//!   form ([`reference::ReferenceTexts`]) and [`reference::reference_date`], the one rule that
//!   dates a review round; the classification both ends store and show.
//!
//! This crate does no I/O: no files, no sockets, no clocks. Callers pass "today" in. Reference
//! data is parsed from text: the defaults are embedded in the binary, and a server can parse a
//! corrected file and ship its text to devices.

/// `format!` into a string sized ahead for what the format writes: a household is classified
/// at every revision (on the server, inside every push), and growing each reason as it was
/// written was a third of classifying.
macro_rules! text {
    ($format:literal $($arguments:tt)*) => {{
        let mut text = String::with_capacity($format.len() + 96);
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut text, format_args!($format $($arguments)*));
        text
    }};
}

pub mod access;
pub mod areas;
pub mod b1;
pub mod classify;
pub mod codec;
pub mod fields;
pub mod household;
pub mod indicators;
pub mod merge;
pub mod reference;
pub mod standards;
pub mod sync;
pub mod validate;

/// A household's id: a UUIDv7 made on the device that first recorded it.
pub type HouseholdId = uuid::Uuid;
/// A member's id: a UUID made on the device, so member lists merge by id, not position.
pub type MemberId = uuid::Uuid;
/// A device's id, chosen when the field app is set up.
pub type DeviceId = uuid::Uuid;
