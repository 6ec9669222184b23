//! The `stream` workload: every client publishes unique values (message id = the value) to one
//! topic while a member of a durable group consumes and acks throughout, resubscribing through
//! any node when its stream breaks. After the heal the group drains, and the checker reads the
//! whole topic back.
//!
//! Anomalies: an acknowledged publish missing or at another sequence than it was acknowledged
//! with (lost), a value stored twice (dedup failed a retry), a value never published
//! (phantom), one reported certainly failed yet stored, a client's acknowledged publishes out
//! of sequence order (the total order broke real time), a stored message never delivered to
//! the group, the same delivery (sequence and delivery count) handed out twice, and a group
//! that does not drain.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use strata_client::stream::{Publish, Start, SubscribeOptions};
use strata_client::{Client, Error};

use crate::{Record, Verdict};

pub const TOPIC: &str = "jepsen.stream";
const GROUP: &str = "jepsen";
/// The drain after the heal gives up after this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// One publish; on an indeterminate outcome it is retried once with the same id, which the
/// server's dedup window must turn into the original.
pub async fn publish(client: &Client, value: u64) -> Result<Option<u64>, Error> {
    let topic = client.topic(TOPIC);
    let message = || Publish::new(value.to_string()).message_id(format!("{value:016x}"));
    match topic.publish(message()).await {
        Ok(published) => Ok(Some(published.sequence)),
        Err(error) if crate::definitely_failed(&error) => Err(error),
        // The first attempt may have applied: unless the retry succeeds (and names the
        // original), the outcome stays unknown whatever the retry's error says.
        Err(first) => match topic.publish(message()).await {
            Ok(published) => Ok(Some(published.sequence)),
            Err(retry) => Err(Error::OutcomeUnknown {
                message: format!("{first}; retried: {retry}"),
            }),
        },
    }
}

/// What the consumer saw.
#[derive(Default)]
pub struct Consumed {
    /// (sequence, delivery count) -> times delivered.
    deliveries: BTreeMap<(u64, u32), u32>,
    /// Sequence -> payload, as delivered.
    payloads: BTreeMap<u64, String>,
    resubscribed: u32,
    drained: bool,
}

/// Consumes until `draining` is set and the group has nothing left (or the drain limit).
pub async fn consume(client: Client, draining: Arc<AtomicBool>) -> anyhow::Result<Consumed> {
    let topic = client.topic(TOPIC);
    let mut consumed = Consumed::default();
    let mut drain_started: Option<Instant> = None;
    let options = || {
        SubscribeOptions::group(GROUP)
            .earliest()
            .ack_wait(Duration::from_secs(2))
            .max_in_flight(32)
            .heartbeat(Duration::from_secs(1))
    };
    let mut subscription: Option<strata_client::stream::Subscription> = None;
    // Streams the SDK opened again by itself, over the subscriptions ended.
    let mut moved = 0;
    // Acks in flight: each waits for its commit, but they run together (and share log
    // entries), as a real consumer's would; the group's max_in_flight bounds them.
    let mut acks = tokio::task::JoinSet::new();
    let mut last_look: Option<Instant> = None;
    loop {
        while acks.try_join_next().is_some() {}
        // While draining, look at the group's progress every quarter second, not per message.
        let look = draining.load(Ordering::SeqCst)
            && last_look.is_none_or(|at| at.elapsed() >= Duration::from_millis(250));
        if look {
            last_look = Some(Instant::now());
            let since = *drain_started.get_or_insert_with(Instant::now);
            if let Ok(info) = topic.info().await {
                let done = info.groups.iter().any(|g| {
                    g.name == GROUP
                        && g.pending == 0
                        && g.lag == 0
                        && info
                            .topic
                            .as_ref()
                            .is_some_and(|t| g.ack_floor == t.last_sequence)
                });
                if done {
                    consumed.drained = true;
                    consumed.resubscribed +=
                        moved + subscription.map_or(0, |s| s.resubscribed() as u32);
                    return Ok(consumed);
                }
            }
            if since.elapsed() > DRAIN_LIMIT {
                consumed.resubscribed +=
                    moved + subscription.map_or(0, |s| s.resubscribed() as u32);
                return Ok(consumed);
            }
        }
        let current = match subscription.as_mut() {
            Some(current) => current,
            None => match topic.subscribe(options()).await {
                Ok(fresh) => {
                    consumed.resubscribed += 1;
                    subscription.insert(fresh)
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match tokio::time::timeout(Duration::from_millis(500), current.next()).await {
            Err(_) => continue, // quiet: look at the drain condition again
            Ok(Some(Ok(delivery))) => {
                let message = &delivery.message;
                *consumed
                    .deliveries
                    .entry((message.sequence, message.delivery_count))
                    .or_default() += 1;
                consumed.payloads.insert(
                    message.sequence,
                    String::from_utf8_lossy(&message.payload).into_owned(),
                );
                // An ack that fails is a lost ack: the message comes again (at least once).
                acks.spawn(async move {
                    let _ = delivery.ack().await;
                });
            }
            Ok(Some(Err(_)) | None) => {
                moved += subscription.take().map_or(0, |s| s.resubscribed() as u32);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the whole topic back and checks it against the history and the deliveries.
pub async fn check(
    client: &Client,
    history: &[Record],
    consumed: &Consumed,
) -> anyhow::Result<Verdict> {
    let topic = client.topic(TOPIC);
    let mut stored: BTreeMap<u64, u64> = BTreeMap::new(); // sequence -> value
    let mut from = 1;
    loop {
        let page = topic
            .read(Start::Sequence(from), 1_000)
            .await
            .context("reading the topic back")?;
        for message in &page.messages {
            let value = String::from_utf8_lossy(&message.payload)
                .parse::<u64>()
                .with_context(|| format!("payload of {} is not a value", message.sequence))?;
            stored.insert(message.sequence, value);
        }
        match page.messages.last() {
            Some(last) if last.sequence < page.last_sequence => {
                anyhow::ensure!(
                    last.sequence >= from,
                    "reading the topic from {from} returned sequences up to {} only",
                    last.sequence
                );
                from = last.sequence + 1;
            }
            _ => break,
        }
    }
    let mut anomalies = Vec::new();
    let mut report = |what: String, examples: Vec<String>| {
        if !examples.is_empty() {
            anomalies.push(format!(
                "{} {what}, e.g. {:?}",
                examples.len(),
                &examples[..examples.len().min(5)]
            ));
        }
    };
    let by_value: BTreeMap<u64, Vec<u64>> =
        stored
            .iter()
            .fold(BTreeMap::new(), |mut map, (seq, value)| {
                map.entry(*value).or_default().push(*seq);
                map
            });
    let publishes: Vec<&Record> = history.iter().filter(|r| r.op == "publish").collect();
    let attempted: BTreeSet<u64> = publishes.iter().filter_map(|r| r.value).collect();

    report(
        "acknowledged publishes lost or at another sequence".into(),
        publishes
            .iter()
            .filter(|r| r.outcome == "ok")
            .filter(|r| stored.get(&r.result.unwrap_or(0)) != r.value.as_ref())
            .map(|r| format!("{:x}@{}", r.value.unwrap_or(0), r.result.unwrap_or(0)))
            .collect(),
    );
    report(
        "values stored more than once".into(),
        by_value
            .iter()
            .filter(|(_, seqs)| seqs.len() > 1)
            .map(|(value, seqs)| format!("{value:x} at {seqs:?}"))
            .collect(),
    );
    report(
        "values never published".into(),
        by_value
            .keys()
            .filter(|v| !attempted.contains(v))
            .map(|v| format!("{v:x}"))
            .collect(),
    );
    report(
        "publishes reported certainly failed but stored".into(),
        publishes
            .iter()
            .filter(|r| r.outcome == "fail")
            .filter_map(|r| r.value)
            .filter(|v| by_value.contains_key(v))
            .map(|v| format!("{v:x}"))
            .collect(),
    );
    // Each client publishes one at a time, so its acknowledged sequences must increase.
    let mut last_by_process: BTreeMap<usize, u64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for record in publishes.iter().filter(|r| r.outcome == "ok") {
        let seq = record.result.unwrap_or(0);
        if let Some(previous) = last_by_process.insert(record.process, seq) {
            if seq <= previous {
                out_of_order.push(format!(
                    "process {}: {seq} after {previous}",
                    record.process
                ));
            }
        }
    }
    report(
        "acknowledged publishes out of real-time order".into(),
        out_of_order,
    );
    let delivered: BTreeSet<u64> = consumed.deliveries.keys().map(|(seq, _)| *seq).collect();
    report(
        "stored messages never delivered to the group".into(),
        stored
            .keys()
            .filter(|seq| !delivered.contains(seq))
            .map(|seq| seq.to_string())
            .collect(),
    );
    report(
        "deliveries handed out twice (same sequence and delivery count)".into(),
        consumed
            .deliveries
            .iter()
            .filter(|(_, times)| **times > 1)
            .map(|((seq, count), times)| format!("{seq}#{count} x{times}"))
            .collect(),
    );
    report(
        "deliveries whose payload differs from the stored message".into(),
        consumed
            .payloads
            .iter()
            .filter(|(seq, payload)| {
                stored
                    .get(seq)
                    .is_some_and(|value| value.to_string() != **payload)
            })
            .map(|(seq, _)| seq.to_string())
            .collect(),
    );
    if !consumed.drained {
        anomalies.push(format!(
            "the group did not drain within {} s of the heal",
            DRAIN_LIMIT.as_secs()
        ));
    }
    let redelivered = consumed.deliveries.keys().filter(|(_, c)| *c > 1).count();
    println!(
        "  stream: {} publishes attempted, {} acknowledged, {} stored; {} deliveries \
         ({redelivered} redeliveries), {} subscriptions",
        attempted.len(),
        publishes.iter().filter(|r| r.outcome == "ok").count(),
        stored.len(),
        consumed.deliveries.values().sum::<u32>(),
        consumed.resubscribed
    );
    Ok(Verdict {
        valid: anomalies.is_empty(),
        anomalies,
    })
}
