//! Grows a registry to a given size over HTTP, fast: many simulated devices push households as
//! a device's first sync would (a `Base::New` mutation whose changes are the whole record), in
//! full batches, two at a time, without a device store behind them. What the server does is
//! exactly what it does for real devices; only the device side is skipped, because a million
//! durable device saves would measure the devices, not the registry.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use client_core::sync::PushBatch;
use client_core::{Request, Response, Transport};
use protocol::fields::{self, FieldMap};
use protocol::sync::{Base, Mutation, PushReply, MAX_PUSH_MUTATIONS};
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::gen::Generator;

/// Households each simulated device records (each device enrols once, which costs a password
/// hash on the server).
pub const PER_DEVICE: usize = 10_000;

/// What a fill did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filled {
    pub households: usize,
    pub elapsed: Duration,
    /// Sum over the households of `protocol::codec::encode(&household)`: the records' own
    /// compact size, the yardstick for disk use.
    pub record_bytes: u64,
    /// Sum over the households of the encoded field map the registry stores per revision.
    pub field_map_bytes: u64,
}

/// The mutation a device's first sync sends for a household it recorded.
pub fn create_mutation(seq: u64, household: &protocol::household::Household) -> Mutation {
    let view = fields::flatten(household);
    Mutation {
        seq,
        household_id: household.id,
        base: Base::New,
        changes: fields::diff(&FieldMap::new(), &view),
        made_at_ms: 1_760_000_000_000,
    }
}

/// Pushes households `from..to` of `generator` to the server at `url`.
pub fn fill(
    rt: &Handle,
    url: &str,
    generator: &Generator,
    from: usize,
    to: usize,
    threads: usize,
) -> anyhow::Result<Filled> {
    let started = Instant::now();
    // Work is handed out a device at a time.
    let next_device = Arc::new(AtomicUsize::new(0));
    let record_bytes = Arc::new(AtomicU64::new(0));
    let field_map_bytes = Arc::new(AtomicU64::new(0));
    let devices = (to - from).div_ceil(PER_DEVICE);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let next_device = Arc::clone(&next_device);
            let record_bytes = Arc::clone(&record_bytes);
            let field_map_bytes = Arc::clone(&field_map_bytes);
            workers.push(scope.spawn(move || -> anyhow::Result<()> {
                loop {
                    let device = next_device.fetch_add(1, Ordering::SeqCst);
                    if device >= devices {
                        return Ok(());
                    }
                    let device_id = Uuid::now_v7();
                    let (transport, _) = crate::device::enrol(rt, url, device_id)?;
                    let first = from + device * PER_DEVICE;
                    let last = (first + PER_DEVICE).min(to);
                    let mut seq = 0u64;
                    let mut index = first;
                    while index < last {
                        let end = (index + MAX_PUSH_MUTATIONS).min(last);
                        let mut mutations = Vec::with_capacity(end - index);
                        for i in index..end {
                            let household = generator.household(i);
                            seq += 1;
                            let mutation = create_mutation(seq, &household);
                            record_bytes.fetch_add(
                                protocol::codec::encode(&household).len() as u64,
                                Ordering::Relaxed,
                            );
                            field_map_bytes.fetch_add(
                                protocol::codec::encode(&fields::flatten(&household)).len() as u64,
                                Ordering::Relaxed,
                            );
                            mutations.push(mutation);
                        }
                        let request = Request::Push(PushBatch::new(device_id, &mutations));
                        let reply = rt
                            .block_on(transport.send(&request))
                            .context("pushing a fill batch")?;
                        match reply {
                            Response::Push(PushReply::Accepted { last_seq, .. })
                                if last_seq == seq => {}
                            other => anyhow::bail!("a fill push was not accepted: {other:?}"),
                        }
                        index = end;
                    }
                }
            }));
        }
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a fill thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(Filled {
        households: to - from,
        elapsed: started.elapsed(),
        record_bytes: record_bytes.load(Ordering::SeqCst),
        field_map_bytes: field_map_bytes.load(Ordering::SeqCst),
    })
}
