//! The same workload shapes against etcd and NATS JetStream, through their own Rust clients
//! (etcd-client, async-nats), measured by the same loop as Strata (`measure`,
//! `measure_drain`), so that the three are compared by one harness.
//!
//! What corresponds to what:
//! - etcd: `kv-put` (distinct keys), `kv-get` (etcd's default linearizable range read),
//!   `kv-get-serializable`, `kv-mixed` (90 % linearizable gets, 10 % puts), `kv-txn` (a
//!   serializable get, then a transaction comparing the mod revision and putting). Keys live
//!   under `bench/<workload>/`, as Strata's live in table `bench/<workload>`.
//! - NATS: a file-backed stream with `--replicas`. `stream-pub` is one publish awaiting its
//!   ack; `stream-pub-batch` sends `--batch` publishes and then awaits all their acks
//!   (JetStream has no batch call; this is its pipelined form); `stream-consume` is a durable
//!   pull consumer with explicit acks shared by `--clients` connections draining a pre-filled
//!   stream. Every publish carries a `Nats-Msg-Id`, as every Strata publish carries a message
//!   id, so both deduplicate.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use futures::StreamExt;
use strata_client::Consistency;

use crate::{
    key_name, measure, measure_drain, preload_batch, value_bytes, Args, Measured, Next, Workload,
};

/// Publishes in flight per connection when pre-filling a stream: 64 connections of 100 keep
/// 6,400 acks outstanding, about a second of an fsync-per-write server's work (500, as for
/// Strata's PublishBatch, timed out).
const PREFILL_WINDOW: u64 = 100;

pub async fn etcd(args: &Args, workload: Workload) -> anyhow::Result<Measured> {
    if !matches!(
        workload,
        Workload::Put | Workload::Get(_) | Workload::Mixed | Workload::Txn
    ) {
        bail!("--system etcd runs kv-put, kv-get, kv-get-serializable, kv-mixed and kv-txn");
    }
    let endpoints: Vec<&str> = args.endpoint.split(',').map(str::trim).collect();
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let client = etcd_client::Client::connect(&endpoints, Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {}", args.endpoint))?;
        clients.push(client.kv_client());
    }
    let prefix: Arc<str> = format!("bench/{}/", args.table_name()).into();
    let value = Arc::new(value_bytes(args.value_size));
    if workload.preloads() {
        preload_etcd(&clients, &prefix, args.preload_from..args.keys, &value)
            .await
            .context("preloading keys into etcd")?;
    }
    let keys = args.keys;
    measure(
        args,
        clients
            .into_iter()
            .map(|kv| {
                let (prefix, value) = (prefix.clone(), value.clone());
                move |op, random| {
                    etcd_op(
                        kv.clone(),
                        workload,
                        op,
                        random,
                        keys,
                        prefix.clone(),
                        value.clone(),
                    )
                }
            })
            .collect(),
    )
    .await
}

/// Writes the keys in `range` in transactions of up to 100 puts (etcd's default
/// `--max-txn-ops` is 128), every client working on its share.
async fn preload_etcd(
    clients: &[KvClient],
    prefix: &str,
    range: std::ops::Range<u64>,
    value: &[u8],
) -> anyhow::Result<()> {
    let batch = preload_batch(value.len());
    let next = Arc::new(std::sync::atomic::AtomicU64::new(range.start));
    let mut handles = Vec::new();
    for kv in clients {
        let (mut kv, next, value, end) = (kv.clone(), next.clone(), value.to_vec(), range.end);
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if first >= end {
                    return Ok::<_, etcd_client::Error>(());
                }
                let puts: Vec<TxnOp> = (first..(first + batch).min(end))
                    .map(|key| {
                        TxnOp::put(format!("{prefix}{}", key_name(key)), value.clone(), None)
                    })
                    .collect();
                kv.txn(Txn::new().and_then(puts)).await?;
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

async fn etcd_op(
    mut kv: KvClient,
    workload: Workload,
    op: u64,
    random: u64,
    keys: u64,
    prefix: Arc<str>,
    value: Arc<Vec<u8>>,
) -> &'static str {
    let key = format!("{prefix}{}", key_name(random % keys));
    let result = match workload {
        Workload::Put => kv
            .put(format!("{prefix}put-{op:012}"), value.to_vec(), None)
            .await
            .map(|_| "ok"),
        Workload::Get(consistency) => etcd_get(&mut kv, key, consistency).await,
        Workload::Mixed if random.is_multiple_of(10) => {
            kv.put(key, value.to_vec(), None).await.map(|_| "ok")
        }
        Workload::Mixed => etcd_get(&mut kv, key, Consistency::Linearizable).await,
        Workload::Txn => etcd_cas(&mut kv, key, &value).await,
        _ => unreachable!("checked in etcd()"),
    };
    match result {
        Ok(outcome) => outcome,
        Err(etcd_client::Error::GRpcStatus(status)) => match status.code() {
            tonic::Code::Unavailable => "error_unavailable",
            tonic::Code::DeadlineExceeded => "error_timeout",
            _ => "error_other",
        },
        Err(etcd_client::Error::TransportError(_)) => "error_connect",
        Err(_) => "error_other",
    }
}

async fn etcd_get(
    kv: &mut KvClient,
    key: String,
    consistency: Consistency,
) -> Result<&'static str, etcd_client::Error> {
    let options = match consistency {
        Consistency::Serializable => Some(GetOptions::new().with_serializable()),
        _ => None,
    };
    let response = kv.get(key, options).await?;
    Ok(if response.kvs().is_empty() {
        "error_missing_key"
    } else {
        "ok"
    })
}

/// The same compare-and-swap as Strata's `kv-txn`: read the key's mod revision (serializable),
/// then put only if it is unchanged.
async fn etcd_cas(
    kv: &mut KvClient,
    key: String,
    value: &[u8],
) -> Result<&'static str, etcd_client::Error> {
    let response = kv
        .get(key.clone(), Some(GetOptions::new().with_serializable()))
        .await?;
    let Some(current) = response.kvs().first().map(|kv| kv.mod_revision()) else {
        return Ok("error_missing_key");
    };
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            current,
        )])
        .and_then([TxnOp::put(key, value.to_vec(), None)]);
    Ok(if kv.txn(txn).await?.succeeded() {
        "ok"
    } else {
        "cas_conflict"
    })
}

pub async fn nats(args: &Args, workload: Workload) -> anyhow::Result<Measured> {
    if !matches!(
        workload,
        Workload::Publish | Workload::PublishBatch(_) | Workload::Consume
    ) {
        bail!("--system nats runs stream-pub, stream-pub-batch and stream-consume");
    }
    let url = args.endpoint.replace(' ', "");
    let mut contexts = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        contexts.push(
            async_nats::jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(client),
        );
    }
    let name = format!(
        "bench_{}_{}",
        args.workload.replace('-', "_"),
        std::process::id()
    );
    let subject: Arc<str> = format!("bench.{}.{}", args.workload, std::process::id()).into();
    contexts[0]
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.to_string()],
            num_replicas: args.replicas as usize,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating stream {name} with {} replicas", args.replicas))?;
    let payload = Bytes::from(value_bytes(args.value_size));
    let sequence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if workload == Workload::Consume {
        prefill_nats(&contexts, &subject, args.ops, &payload)
            .await
            .context("pre-filling the stream")?;
        let consumers = contexts
            .into_iter()
            .map(|js| {
                let (name, consumer) = (name.clone(), Arc::new(tokio::sync::Mutex::new(None)));
                move || {
                    let (js, name, consumer) = (js.clone(), name.clone(), consumer.clone());
                    async move { nats_next(&js, &name, &mut *consumer.lock().await).await }
                }
            })
            .collect();
        return measure_drain(args, consumers).await;
    }
    measure(
        args,
        contexts
            .into_iter()
            .map(|js| {
                let (subject, payload, sequence) =
                    (subject.clone(), payload.clone(), sequence.clone());
                move |_op, _random| {
                    let (js, subject, payload, sequence) = (
                        js.clone(),
                        subject.clone(),
                        payload.clone(),
                        sequence.clone(),
                    );
                    async move {
                        let batch = workload.items_per_op();
                        nats_publish(&js, &subject, &payload, &sequence, batch).await
                    }
                }
            })
            .collect(),
    )
    .await
}

/// Sends `batch` publishes, each with a fresh message id, then awaits every ack.
async fn nats_publish(
    js: &async_nats::jetstream::Context,
    subject: &Arc<str>,
    payload: &Bytes,
    sequence: &std::sync::atomic::AtomicU64,
    batch: u64,
) -> &'static str {
    let mut acks = Vec::with_capacity(batch as usize);
    for _ in 0..batch {
        let id = sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{}-{id}", std::process::id()));
        match js.send_publish(subject.to_string(), message).await {
            Ok(ack) => acks.push(ack),
            Err(_) => return "error_publish",
        }
    }
    for ack in acks {
        match ack.await {
            Ok(_) => {}
            Err(error)
                if error.kind() == async_nats::jetstream::context::PublishErrorKind::TimedOut =>
            {
                return "error_timeout"
            }
            Err(_) => return "error_publish",
        }
    }
    "ok"
}

async fn prefill_nats(
    contexts: &[async_nats::jetstream::Context],
    subject: &Arc<str>,
    ops: u64,
    payload: &Bytes,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sequence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for js in contexts {
        let (js, next, sequence) = (js.clone(), next.clone(), sequence.clone());
        let (subject, payload) = (subject.clone(), payload.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(PREFILL_WINDOW, std::sync::atomic::Ordering::Relaxed);
                if first >= ops {
                    return Ok(());
                }
                let count = PREFILL_WINDOW.min(ops - first);
                match nats_publish(&js, &subject, &payload, &sequence, count).await {
                    "ok" => {}
                    other => bail!("publishing: {other}"),
                }
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// The consumer's next message, acked (fire-and-forget, NATS's default). Joins the durable
/// consumer on the first call, so that the drain's clock includes joining.
async fn nats_next(
    js: &async_nats::jetstream::Context,
    stream: &str,
    messages: &mut Option<pull::Stream>,
) -> Next {
    if messages.is_none() {
        match join_nats_consumer(js, stream).await {
            Ok(joined) => *messages = Some(joined),
            Err(_) => return Next::Ended("error_subscribe"),
        }
    }
    let joined = messages.as_mut().expect("joined above");
    match tokio::time::timeout(Duration::from_millis(500), joined.next()).await {
        Err(_) => Next::Idle,
        Ok(None) => Next::Ended("error_stream_ended"),
        // A missed idle heartbeat is reported and the pull goes on; other errors end it.
        Ok(Some(Err(error))) => match error.kind() {
            MessagesErrorKind::MissingHeartbeat => Next::Error("error_missed_heartbeat"),
            MessagesErrorKind::NoResponders => {
                *messages = None; // join again on the next call
                Next::Error("error_no_responders")
            }
            MessagesErrorKind::ConsumerDeleted => Next::Ended("error_consumer_deleted"),
            _ => Next::Ended("error_consume"),
        },
        Ok(Some(Ok(message))) => {
            let first = message
                .info()
                .map(|info| info.delivered == 1)
                .unwrap_or(true);
            match message.ack().await {
                Err(_) => Next::Ended("error_ack"),
                Ok(()) if first => Next::Got("ok"),
                Ok(()) => Next::Got("redelivered"),
            }
        }
    }
}

async fn join_nats_consumer(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<pull::Stream> {
    let consumer: PullConsumer = js
        .get_stream(stream)
        .await?
        .get_or_create_consumer(
            "bench",
            pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    // An R3 consumer answers pulls only once its own Raft group has a leader; until then a
    // pull meets "no responders" and ends. Wait (up to 10 s) until it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut consumer = consumer;
    while consumer.info().await.is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(consumer.messages().await?)
}
