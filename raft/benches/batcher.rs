//! The write batcher's own cost beside a plain channel: 64 concurrent callers submit 1,024
//! commands in all, answered at once by the proposer (no Raft, no disk), so what is measured is
//! queueing, packing and answering. The baseline is one mpsc channel and a oneshot answer per
//! command, served by one task, the least a hand-off between tasks costs.
//!
//! `cargo bench --workspace --bench batcher --profile dev` (reuses the test build). Figures go
//! to bench/RESULTS.md as ratios to the baseline measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_raft::batcher::{BatchLimits, Batcher};
use tokio::sync::{mpsc, oneshot};

const CALLERS: usize = 64;
const COMMANDS: usize = 1_024;

async fn through_batcher(batcher: &Batcher<u64, u64>) {
    let callers = (0..CALLERS).map(|_| {
        let batcher = batcher.clone();
        tokio::spawn(async move {
            for n in 0..(COMMANDS / CALLERS) as u64 {
                let answer = batcher.submit(n, 64).await;
                assert_eq!(answer, Some(n + 1));
            }
        })
    });
    for caller in futures::future::join_all(callers).await {
        caller.unwrap();
    }
}

async fn through_channel(queue: &mpsc::Sender<(u64, oneshot::Sender<u64>)>) {
    let callers = (0..CALLERS).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            for n in 0..(COMMANDS / CALLERS) as u64 {
                let (reply, answer) = oneshot::channel();
                queue.send((n, reply)).await.unwrap();
                assert_eq!(answer.await, Ok(n + 1));
            }
        })
    });
    for caller in futures::future::join_all(callers).await {
        caller.unwrap();
    }
}

fn batcher(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batcher = runtime.block_on(async {
        Batcher::spawn(BatchLimits::default(), |commands: Vec<u64>| async move {
            commands.into_iter().map(|n| n + 1).collect::<Vec<u64>>()
        })
    });
    let queue = runtime.block_on(async {
        let (queue, mut requests) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(65_536);
        tokio::spawn(async move {
            while let Some((n, reply)) = requests.recv().await {
                let _ = reply.send(n + 1);
            }
        });
        queue
    });
    let mut group = c.benchmark_group("submit_64_callers");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("baseline_channel", |b| {
        b.iter(|| runtime.block_on(through_channel(&queue)))
    });
    group.bench_function("batcher", |b| {
        b.iter(|| runtime.block_on(through_batcher(&batcher)))
    });
    group.finish();
}

criterion_group!(benches, batcher);
criterion_main!(benches);
