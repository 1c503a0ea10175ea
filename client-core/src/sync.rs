//! The sync engine: a sans-I/O state machine that pushes the outbox and pulls the registry's
//! changes, and [`sync`], the thin async driver that runs it over a [`Transport`].
//!
//! # Flow
//! 1. **Push.** [`SyncEngine::next_request`] reads the outbox in seq order and sends it in
//!    batches (at most [`SyncOptions::push_batch`] mutations and `MAX_PUSH_BYTES`). On
//!    `PushReply::Accepted { outcomes, last_seq }` one atomic write records every outcome
//!    (applied and merged need nothing more; a conflict is stored so the enumerator can see
//!    their value was kept; a rejection is stored with its mutation and marks the household,
//!    whose view keeps what the enumerator typed) and removes every entry up to `last_seq`
//!    from the outbox. An entry acknowledged without an outcome is kept aside until its outcome
//!    arrives with a pull.
//! 2. **Seq gap.** `PushReply::SeqGap { expected }` above the batch's first seq means the server
//!    already applied the entries below `expected`: they wait for their outcomes (with the pull)
//!    and the push resumes at `expected`. Below it means the server lost mutations it had
//!    acknowledged: those kept aside are sent again; anything else is an error, since the device
//!    has nothing left to resend.
//! 3. **Pull.** Once nothing is left to push, pages are pulled from the stored cursor, asking
//!    for outcomes from the lowest seq still waiting for one. Each page is one atomic write:
//!    outcomes, then each household's new revision with the pending local changes laid over it
//!    (rebase: the enumerator never sees an unsynced edit disappear), then the cursor. Pulling
//!    goes on while the server says `more`.
//! 4. **Ahead.** [`sync`] sends the next request while it writes an answer
//!    ([`SyncEngine::ahead`]: the next push batch after a push wholly accepted; the next page
//!    after a page without outcomes that keeps the areas the device holds), and uses that
//!    answer only if it is for the request the engine makes next, so the server's work and
//!    the device's writing overlap. After a push accepted whole, the batch after the one sent
//!    ahead is sent too, before the answer is written ([`SyncEngine::follower`], read while
//!    the answers were awaited): two pushes are on their way, so the server never waits for
//!    the device between them.
//!    The later one may reach the server first and be told to wait for the earlier one's
//!    seqs; once those are accepted, that answer is stale, and the batch goes again
//!    (once, and with no push sent ahead of another for the rest of the sync).
//! 5. **Areas.** Each page carries the user's areas and the households that left them. The
//!    page's write drops what the device may no longer hold (keeping any household with
//!    unsynced work, marked out of scope), and when the areas grew it sets the cursor back to
//!    0 and the pull goes on from there: a reassignment takes effect on the next sync.
//!
//! # Assumptions
//! - Every step is durable before the next request the engine makes, and every reply can be
//!   replayed: a connection dropped at any point leaves the store consistent, and the next
//!   sync resumes (the server returns stored outcomes for mutations it has already applied).
//!   A request sent ahead goes out before the answer it follows is durable on the device; a
//!   crash then loses only that request's answer, which replay gives back.
//! - The server acknowledges only what it has made durable.
//! - Saves may happen during a sync; their mutations join the push if it is still running,
//!   or wait for the next sync.
//!
//! # Example
//! Driving the engine by hand with a server that accepts everything:
//! ```
//! use client_core::store::Store;
//! use client_core::sync::{Request, Response, SyncEngine};
//! use protocol::sync::{MutationOutcome, Outcome, PullResponse, PushReply};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! store.setup("http://127.0.0.1:8080", uuid::Uuid::new_v4())?;
//! # let household: protocol::household::Household = serde_json::from_value(serde_json::json!({
//! #     "id": "01900000-0000-7000-8000-0000000000aa",
//! #     "round": {"year": 2025, "kind": "periodic"},
//! #     "commune_code": "00004", "village": "Thôn Đông", "address": "Số 3"}))?;
//! store.save_household(&household)?;
//!
//! let mut engine = SyncEngine::new(&store)?;
//! while let Some(request) = engine.next_request(&store)? {
//!     let response = match request {
//!         Request::Push(push) => Response::Push(PushReply::Accepted {
//!             last_seq: push.last_seq().unwrap_or(0),
//!             outcomes: push
//!                 .seqs()
//!                 .map(|(seq, household_id)| MutationOutcome {
//!                     seq,
//!                     household_id,
//!                     outcome: Outcome::Applied { rev: 1 },
//!                 })
//!                 .collect(),
//!         }),
//!         Request::Pull(pull) => Response::Pull(PullResponse {
//!             changes: vec![],
//!             next_cursor: pull.cursor,
//!             more: false,
//!             outcomes: vec![],
//!             left_scope: vec![],
//!             scope: protocol::access::Scope::Everything,
//!         }),
//!     };
//!     engine.handle(&store, response)?;
//! }
//! assert_eq!(engine.report().pushed, 1);
//! assert_eq!(engine.report().applied, 1);
//! assert!(store.pending()?.is_empty());
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use protocol::sync::{
    PullRequest, PullResponse, PushReply, MAX_PULL_LIMIT, MAX_PUSH_BYTES, MAX_PUSH_MUTATIONS,
};
use uuid::Uuid;

use crate::store::{LocalConflict, LocalRejection, Recorded, Store, StoreError};
use crate::transport::{Transport, TransportError};

/// Room left in a push request for everything but the mutations.
const PUSH_ENVELOPE_BYTES: usize = 4 * 1024;

pub(crate) mod push_batch;
pub use push_batch::PushBatch;

/// A request the engine wants sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Push(PushBatch),
    Pull(PullRequest),
}

/// A request a driver may send ahead of the answer before it ([`SyncEngine::ahead`]), with
/// the outbox entries a push was read from.
#[derive(Debug)]
pub struct Ahead {
    request: Request,
    entries: Vec<(u64, sled::IVec)>,
}

impl Ahead {
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The last seq of a push: the batch after it starts after it ([`SyncEngine::follower`]).
    pub fn pushed_through(&self) -> Option<u64> {
        match &self.request {
            Request::Push(batch) => batch.last_seq(),
            Request::Pull(_) => None,
        }
    }
}

/// The server's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Push(PushReply),
    Pull(PullResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("thiết bị chưa được thiết lập / this device is not set up: run `ho init --server URL --user NAME` first")]
    NotSetUp,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("máy chủ trả lời không khớp yêu cầu / the server's answer does not match the request: expected {expected}")]
    UnexpectedResponse { expected: &'static str },
    #[error("máy chủ không xác nhận thay đổi nào (gửi từ {first}, máy chủ báo tới {last_seq}) / the server acknowledged none of the changes sent (from seq {first}; it reports {last_seq}): ask the administrator")]
    NothingAcknowledged { first: u64, last_seq: u64 },
    #[error("máy chủ thiếu thay đổi {expected} mà thiết bị không còn giữ (thiết bị đang ở {first}) / the server expects change {expected}, which this device no longer holds (its oldest pending change is {first}): the server may have been restored from a backup; ask the administrator")]
    ServerLostMutations { expected: u64, first: u64 },
    #[error("máy chủ chờ thay đổi {expected} nhưng thiết bị mới tạo tới {made} / the server expects change {expected} but this device has made only {made}: this store may be a copy of another device's; ask the administrator")]
    DeviceBehindServer { expected: u64, made: u64 },
    #[error("máy chủ trả lời mâu thuẫn / the server's answer contradicts itself: {0}")]
    ContradictoryReply(&'static str),
    #[error("con trỏ đồng bộ không tiến (từ {cursor} sang {next}) / the pull cursor does not advance (from {cursor} to {next}) although more changes are announced")]
    CursorStuck { cursor: u64, next: u64 },
    #[error("đồng bộ bị ngắt vì chương trình đang dừng / the sync was interrupted because the program is stopping: what was done is kept; sync again")]
    Interrupted,
}

/// Tuning of one sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncOptions {
    /// Most mutations per push (capped at `MAX_PUSH_MUTATIONS`).
    pub push_batch: usize,
    /// Most household changes per pull page (capped at `MAX_PULL_LIMIT`). 1,000 by default: a
    /// page compresses better the more households it holds (the bench's commune takes 172, 158
    /// and 151 bytes a household in pages of 500, 1,000 and 2,000), while a first pull of 5,000
    /// took 0.20, 0.19 and 0.24 s (with fewer pages, fewer go out ahead of the answers). A page
    /// of 1,000 is about 160 KB on the wire.
    pub pull_limit: u32,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            push_batch: 200,
            pull_limit: 1_000,
        }
    }
}

/// Where a sync stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pushing,
    Pulling,
    Done,
}

/// How far a sync has come, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Outbox entries the server has acknowledged in this sync.
    pub pushed: usize,
    /// `pushed` plus what is still waiting to be pushed.
    pub to_push: usize,
    /// Household changes received so far.
    pub pulled: usize,
}

/// What a sync did, for the enumerator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// Mutations the server acknowledged.
    pub pushed: usize,
    pub applied: usize,
    pub merged: usize,
    /// Conflicts reported in this sync: the server kept its values for these fields and keeps
    /// the enumerator's beside them for a supervisor.
    pub conflicts: Vec<LocalConflict>,
    /// Mutations rejected in this sync, with the reasons.
    pub rejected: Vec<LocalRejection>,
    /// Households a supervisor returned, with the comment.
    pub returned: Vec<(Uuid, String)>,
    /// Household changes received.
    pub pulled: usize,
    /// Households removed from the device because they left the user's areas (a
    /// reassignment, or a household moved to another village).
    pub left_scope: usize,
    /// The user's areas grew, so the sync pulled again from the start.
    pub areas_grew: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Pushing the outbox from this seq on.
    Pushing {
        resume_from: u64,
    },
    Pulling,
    Done,
}

/// The request waiting for its response.
#[derive(Clone, Copy, Debug)]
enum InFlight {
    Push { first: u64 },
    Pull { cursor: u64 },
}

/// One sync, as a state machine over the store. See the module docs for the flow.
#[derive(Debug)]
pub struct SyncEngine {
    device_id: Uuid,
    options: SyncOptions,
    state: State,
    in_flight: Option<InFlight>,
    to_push: usize,
    report: SyncReport,
    /// The last seq of the pushes the server accepted in this sync.
    accepted_through: Option<u64>,
    /// The first seq of a batch whose seq gap was taken for a stale answer: a second gap for
    /// it is real. Once set, no push follows another on its way ([`SyncEngine::follower`]).
    stale_gap_first: Option<u64>,
}

impl SyncEngine {
    pub fn new(store: &Store) -> Result<SyncEngine, SyncError> {
        SyncEngine::with_options(store, SyncOptions::default())
    }

    pub fn with_options(store: &Store, options: SyncOptions) -> Result<SyncEngine, SyncError> {
        let device_id = store.device_id()?.ok_or(SyncError::NotSetUp)?;
        let options = SyncOptions {
            push_batch: options.push_batch.clamp(1, MAX_PUSH_MUTATIONS),
            pull_limit: options.pull_limit.clamp(1, MAX_PULL_LIMIT),
        };
        Ok(SyncEngine {
            device_id,
            options,
            state: State::Pushing { resume_from: 0 },
            in_flight: None,
            to_push: store.outbox_span_from(0)?,
            report: SyncReport::default(),
            accepted_through: None,
            stale_gap_first: None,
        })
    }

    /// The next request to send, or `None` when the sync is done. Calling it again without a
    /// response (after a transport error, say) produces the request again, from the store.
    pub fn next_request(&mut self, store: &Store) -> Result<Option<Request>, SyncError> {
        Ok(self.next(store, None)?.map(|(request, _)| request))
    }

    /// [`SyncEngine::next_request`] when `ahead` was sent before the last response was handled:
    /// the next request, and whether it is `ahead`'s, whose answer the driver may then use. A
    /// push batch sent ahead is recognised by the outbox entries it was read from, unchanged,
    /// so it is neither read nor decoded twice.
    pub fn next_request_after(
        &mut self,
        store: &Store,
        ahead: Ahead,
    ) -> Result<Option<(Request, bool)>, SyncError> {
        self.next(store, Some(ahead))
    }

    fn next(
        &mut self,
        store: &Store,
        mut ahead: Option<Ahead>,
    ) -> Result<Option<(Request, bool)>, SyncError> {
        loop {
            match self.state {
                State::Pushing { resume_from } => {
                    let entries = store.push_batch_entries(
                        resume_from,
                        self.options.push_batch,
                        MAX_PUSH_BYTES - PUSH_ENVELOPE_BYTES,
                    )?;
                    let Some(&(first, _)) = entries.first() else {
                        self.state = State::Pulling;
                        continue;
                    };
                    self.to_push = self.report.pushed + store.outbox_span_from(resume_from)?;
                    self.in_flight = Some(InFlight::Push { first });
                    if let Some(ahead) = ahead.take_if(|ahead| ahead.entries == entries) {
                        return Ok(Some((ahead.request, true)));
                    }
                    let request = Request::Push(Store::push_batch(self.device_id, &entries)?);
                    return Ok(Some((request, false)));
                }
                State::Pulling => {
                    let cursor = store.cursor()?;
                    self.in_flight = Some(InFlight::Pull { cursor });
                    let request = Request::Pull(PullRequest {
                        device_id: self.device_id,
                        cursor,
                        limit: self.options.pull_limit,
                        outcomes_from: store.outcomes_from()?,
                    });
                    let same = ahead.is_some_and(|ahead| ahead.request == request);
                    return Ok(Some((request, same)));
                }
                State::Done => {
                    self.in_flight = None;
                    return Ok(None);
                }
            }
        }
    }

    /// Consumes the response to the last request; its effects are durable on return.
    pub fn handle(&mut self, store: &Store, response: Response) -> Result<(), SyncError> {
        let in_flight = self.in_flight.take();
        match (in_flight, response) {
            (
                Some(InFlight::Push { first }),
                Response::Push(PushReply::Accepted { outcomes, last_seq }),
            ) => {
                if last_seq < first {
                    return Err(SyncError::NothingAcknowledged { first, last_seq });
                }
                let effects = store.record_push_reply(&outcomes, last_seq)?;
                self.report.pushed += effects.acknowledged;
                self.tally(effects.recorded);
                self.resume_after(last_seq);
                self.accepted_through = self.accepted_through.max(Some(last_seq));
                Ok(())
            }
            (Some(InFlight::Push { first }), Response::Push(PushReply::SeqGap { expected })) => {
                // A push that overtook the one before it on the way was told to wait for seqs
                // the server has accepted since: stale. The batch goes again, once.
                let stale = expected < first
                    && self
                        .accepted_through
                        .is_some_and(|through| expected <= through)
                    && self.stale_gap_first != Some(first);
                if stale {
                    self.stale_gap_first = Some(first);
                    return Ok(());
                }
                self.seq_gap(store, first, expected)
            }
            (Some(InFlight::Pull { cursor }), Response::Pull(page)) => {
                if page.more && page.next_cursor <= cursor {
                    return Err(SyncError::CursorStuck {
                        cursor,
                        next: page.next_cursor,
                    });
                }
                let (pulled, more) = (page.changes.len(), page.more);
                let effects = store.record_pull_page(page)?;
                self.report.pulled += pulled;
                self.report.returned.extend(effects.returned);
                self.report.left_scope += effects.scope.dropped;
                self.tally(effects.recorded);
                if effects.scope.restart {
                    // The store set its cursor back to 0: pull on, whatever `more` says.
                    self.report.areas_grew = true;
                } else if !more {
                    // The pull has rewritten most households the pushes acknowledged: the
                    // outcomes kept apart for them go into the rest now.
                    store.fold_acknowledged()?;
                    self.state = State::Done;
                }
                Ok(())
            }
            (Some(InFlight::Push { .. }), Response::Pull(_)) => {
                Err(SyncError::UnexpectedResponse {
                    expected: "a push reply",
                })
            }
            (Some(InFlight::Pull { .. }), Response::Push(_)) => {
                Err(SyncError::UnexpectedResponse {
                    expected: "a pull page",
                })
            }
            (None, _) => Err(SyncError::UnexpectedResponse {
                expected: "no response: no request is waiting",
            }),
        }
    }

    /// The request that will follow `response` when handling it changes nothing the request
    /// depends on, for a driver to send while it writes `response`, so that the server works
    /// on the next request meanwhile:
    /// - after a push wholly accepted (`last_seq` is the batch's last seq), the next batch of
    ///   the outbox, which recording the reply leaves as it is;
    /// - after a pull page that announces more, carries no outcomes, and keeps the user's areas
    ///   as the device holds them (so no restart from 0), the next page.
    ///
    /// The driver must use its answer only if [`SyncEngine::next_request_after`] says the
    /// next request is this one (as [`sync`] does), and otherwise drop it.
    /// A push sent ahead and dropped, or whose reply is lost with the device, was applied by
    /// the server all the same: sent again, it is answered with its stored outcomes, as any
    /// push whose reply was lost.
    pub fn ahead(
        &self,
        store: &Store,
        sent: &Request,
        response: &Response,
    ) -> Result<Option<Ahead>, SyncError> {
        match (sent, response) {
            (Request::Push(_), Response::Push(_)) => match accepted_whole(sent, response) {
                Some(last_seq) => self.batches().following(store, last_seq),
                None => Ok(None),
            },
            (Request::Pull(sent), Response::Pull(page)) => {
                if !page.more || !page.outcomes.is_empty() || page.next_cursor <= sent.cursor {
                    return Ok(None);
                }
                if store.scope()?.as_ref() != Some(&page.scope) {
                    return Ok(None);
                }
                let request = Request::Pull(PullRequest {
                    cursor: page.next_cursor,
                    ..sent.clone()
                });
                Ok(Some(Ahead {
                    request,
                    entries: Vec::new(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// What reads the push batch after the one sent ahead through a seq, for a driver to send
    /// as soon as an answer accepts a push whole, before the answer to the one ahead comes:
    /// with two pushes on their way the server goes from one to the next without waiting for
    /// the device to read and pack a batch. It holds no borrow of the engine, so the batch can
    /// be read on another thread while the engine writes an answer (the two touch different
    /// outbox entries). `None` after a stale seq gap in this sync (pushes overtook each other
    /// once; one at a time from then).
    ///
    /// Like any request sent ahead, its answer is used only if
    /// [`SyncEngine::next_request_after`] says it is the next request.
    pub fn follower(&self) -> Option<Follower> {
        self.stale_gap_first.is_none().then_some(self.batches())
    }

    fn batches(&self) -> Follower {
        Follower {
            device_id: self.device_id,
            push_batch: self.options.push_batch,
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            phase: match self.state {
                State::Pushing { .. } => Phase::Pushing,
                State::Pulling => Phase::Pulling,
                State::Done => Phase::Done,
            },
            pushed: self.report.pushed,
            to_push: self.to_push.max(self.report.pushed),
            pulled: self.report.pulled,
        }
    }

    pub fn report(&self) -> SyncReport {
        self.report.clone()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn resume_after(&mut self, last_seq: u64) {
        if let State::Pushing { resume_from } = &mut self.state {
            *resume_from = (*resume_from).max(last_seq.saturating_add(1));
        }
    }

    fn seq_gap(&mut self, store: &Store, first: u64, expected: u64) -> Result<(), SyncError> {
        if expected > first {
            let made = store.next_seq()?.saturating_sub(1);
            if expected > made.saturating_add(1) {
                return Err(SyncError::DeviceBehindServer { expected, made });
            }
            // Applied already: their outcomes come with the pull.
            let moved = store.record_seq_gap(expected)?;
            self.report.pushed += moved;
            self.resume_after(expected.saturating_sub(1));
            return Ok(());
        }
        if expected == first {
            return Err(SyncError::ContradictoryReply(
                "a seq gap asking for the very change the push started with",
            ));
        }
        // The server lost acknowledged mutations: resend the ones still kept aside.
        let restored = store.restore_awaiting(expected)?;
        if restored.first() != Some(&expected) {
            return Err(SyncError::ServerLostMutations { expected, first });
        }
        self.state = State::Pushing {
            resume_from: expected,
        };
        Ok(())
    }

    fn tally(&mut self, recorded: Vec<Recorded>) {
        for outcome in recorded {
            match outcome {
                Recorded::Applied => self.report.applied += 1,
                Recorded::Merged => self.report.merged += 1,
                Recorded::Conflict(conflict) => self.report.conflicts.push(conflict),
                Recorded::Rejected(rejection) => self.report.rejected.push(rejection),
            }
        }
    }
}

/// The last seq of `sent`, a push, when `response` accepts it whole.
pub fn accepted_whole(sent: &Request, response: &Response) -> Option<u64> {
    match (sent, response) {
        (Request::Push(sent), Response::Push(PushReply::Accepted { last_seq, .. })) => {
            (sent.last_seq() == Some(*last_seq)).then_some(*last_seq)
        }
        _ => None,
    }
}

/// Reads the push batch after a given seq from the outbox ([`SyncEngine::follower`]).
#[derive(Clone, Copy, Debug)]
pub struct Follower {
    device_id: Uuid,
    push_batch: usize,
}

impl Follower {
    /// The push batch of the outbox entries after seq `pushed_through`, or `None` when there
    /// are none.
    pub fn following(
        &self,
        store: &Store,
        pushed_through: u64,
    ) -> Result<Option<Ahead>, SyncError> {
        let entries = store.push_batch_entries(
            pushed_through.saturating_add(1),
            self.push_batch,
            MAX_PUSH_BYTES - PUSH_ENVELOPE_BYTES,
        )?;
        if entries.is_empty() {
            return Ok(None);
        }
        let request = Request::Push(Store::push_batch(self.device_id, &entries)?);
        Ok(Some(Ahead { request, entries }))
    }
}

/// Runs a whole sync over a transport, reporting progress after every step. A failure stops
/// it with everything done so far kept; the next sync resumes from there.
pub async fn sync<T: Transport>(
    store: &Store,
    transport: &T,
    on_progress: impl FnMut(&Progress),
) -> Result<SyncReport, SyncError> {
    sync_with(store, transport, SyncOptions::default(), on_progress).await
}

/// [`sync`] with other batch sizes (small ones make every step of a sync a separate request,
/// which tests use).
pub async fn sync_with<T: Transport>(
    store: &Store,
    transport: &T,
    options: SyncOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<SyncReport, SyncError> {
    // Requests sent ahead, oldest first (two pushes at most), each with its answer once it
    // comes.
    let mut flights = VecDeque::new();
    // The push batch after the last push sent ahead, read while the answers are awaited.
    let mut reading: Option<Reading> = None;
    let synced = async {
        let mut engine = SyncEngine::with_options(store, options)?;
        on_progress(&engine.progress());
        loop {
            let next = match first_answer(&mut flights).await {
                Some((sent, answer)) => engine
                    .next_request_after(store, sent)?
                    .map(|(request, same)| (request, same.then_some(answer))),
                None => engine.next_request(store)?.map(|request| (request, None)),
            };
            let Some((request, answer)) = next else { break };
            let response = match answer {
                Some(answer) => answer?,
                None => alongside(std::pin::pin!(transport.send(&request)), &mut flights).await?,
            };
            if flights.is_empty() {
                if let Some(next) = engine.ahead(store, &request, &response)? {
                    reading = Reading::after(store, &next, &engine);
                    flights.push_back(send_ahead(transport, next));
                }
            }
            if flights.is_empty() {
                engine.handle(store, response)?;
                on_progress(&engine.progress());
                continue;
            }
            // After a push accepted whole, the batch after the one ahead (read while the answer
            // was awaited) is sent before the answer is written, so that the server always has
            // the next push in hand; the batch after that is read meanwhile.
            let accepted = accepted_whole(&request, &response).is_some();
            if !accepted {
                // What follows is the engine's to decide (a gap, a rejected batch, the pull).
                reading = None;
            }
            let follow = match flights.front() {
                Some(ahead) if accepted && flights.len() == 1 => {
                    ahead.pushed_through.zip(engine.follower())
                }
                _ => None,
            };
            if let Some((seq, follower)) = follow {
                let read = match reading.take() {
                    Some(Reading { after, task }) if after == seq => {
                        joined(alongside(task, &mut flights).await)??
                    }
                    _ => follower.following(store, seq)?,
                };
                if let Some(following) = read {
                    reading = Reading::after(store, &following, &engine);
                    flights.push_back(send_ahead(transport, following));
                }
            }
            // The server reads the next page, or applies the next push, while this answer is
            // written (a blocking sled write), so that a sync costs about the slower of the two,
            // not their sum.
            let writer_store = store.clone();
            let writing = tokio::task::spawn_blocking(move || {
                let written = engine.handle(&writer_store, response);
                (engine, written)
            });
            let (returned, written) = joined(alongside(writing, &mut flights).await)?;
            engine = returned;
            written?;
            on_progress(&engine.progress());
        }
        Ok(engine.report())
    }
    .await;
    // Nothing of a sync is left on its way when it stops: the answers to requests sent ahead
    // are waited for, and dropped (what they did is replayed by the next sync), and so is a
    // batch being read.
    if synced.is_err() {
        while first_answer(&mut flights).await.is_some() {}
    }
    if let Some(Reading { task, .. }) = reading {
        let _ = task.await;
    }
    synced
}

/// The push batch after a push sent ahead, being read on a blocking thread.
struct Reading {
    /// The last seq of the push it follows.
    after: u64,
    task: tokio::task::JoinHandle<Result<Option<Ahead>, SyncError>>,
}

impl Reading {
    /// Starts reading the batch after `sent`, when it is a push and pushes may follow each
    /// other in this sync ([`SyncEngine::follower`]).
    fn after(store: &Store, sent: &Ahead, engine: &SyncEngine) -> Option<Reading> {
        let (after, follower) = sent.pushed_through().zip(engine.follower())?;
        let store = store.clone();
        Some(Reading {
            after,
            task: tokio::task::spawn_blocking(move || follower.following(&store, after)),
        })
    }
}

/// What a blocking task returned; its panic goes on here.
fn joined<T>(task: Result<T, tokio::task::JoinError>) -> Result<T, SyncError> {
    match task {
        Ok(done) => Ok(done),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(SyncError::Interrupted),
    }
}

/// A request sent ahead, with its answer once it came.
type Answered = (Ahead, Result<Response, TransportError>);

/// A request sent ahead by [`sync_with`]: on its way, or answered.
struct Flight<F> {
    /// The last seq of a push ([`Ahead::pushed_through`]).
    pushed_through: Option<u64>,
    state: FlightState<F>,
}

enum FlightState<F> {
    OnItsWay(Pin<Box<F>>),
    Answered(Answered),
}

/// Sends `ahead` over `transport`; the answer comes as the flight is polled.
fn send_ahead<T: Transport>(
    transport: &T,
    ahead: Ahead,
) -> Flight<impl Future<Output = Answered> + '_> {
    Flight {
        pushed_through: ahead.pushed_through(),
        state: FlightState::OnItsWay(Box::pin(async move {
            let answer = transport.send(ahead.request()).await;
            (ahead, answer)
        })),
    }
}

/// Polls every flight still on its way, keeping the answers that came.
fn poll_flights<F: Future<Output = Answered>>(
    flights: &mut VecDeque<Flight<F>>,
    cx: &mut Context<'_>,
) {
    for flight in flights.iter_mut() {
        if let FlightState::OnItsWay(answer) = &mut flight.state {
            if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
                flight.state = FlightState::Answered(answered);
            }
        }
    }
}

/// Runs `main` to its end while the flights go on.
async fn alongside<M: Future + Unpin, F: Future<Output = Answered>>(
    mut main: M,
    flights: &mut VecDeque<Flight<F>>,
) -> M::Output {
    std::future::poll_fn(|cx| {
        poll_flights(flights, cx);
        Pin::new(&mut main).poll(cx)
    })
    .await
}

/// The oldest flight's answer, once it comes (the others go on meanwhile); `None` without
/// flights.
async fn first_answer<F: Future<Output = Answered>>(
    flights: &mut VecDeque<Flight<F>>,
) -> Option<Answered> {
    std::future::poll_fn(|cx| {
        poll_flights(flights, cx);
        match flights.front().map(|flight| &flight.state) {
            None => Poll::Ready(None),
            Some(FlightState::OnItsWay(_)) => Poll::Pending,
            Some(FlightState::Answered(_)) => {
                match flights.pop_front().map(|flight| flight.state) {
                    Some(FlightState::Answered(answered)) => Poll::Ready(Some(answered)),
                    _ => Poll::Ready(None),
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests;
