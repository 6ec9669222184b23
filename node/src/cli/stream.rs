//! `strata stream pub|sub|read|topics|info|create|update|delete`.
//!
//! Human output by default; `--json` prints one JSON object per message or result. Payloads
//! print as UTF-8 text when they are, else as base64 under `payload_base64`.

use std::io::{BufRead, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::stream::{proto, Publish, Start, SubscribeOptions};

use super::kv::{bytes_field, parse_pair};

#[derive(clap::Args)]
pub struct StreamArgs {
    #[command(flatten)]
    client: super::ClientArgs,
    #[command(subcommand)]
    command: StreamCommand,
}

#[derive(clap::Args)]
struct RetentionArgs {
    /// Discard messages older than this (e.g. 7d, 12h); unset: no age limit.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,
    /// Keep at most this many messages (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_messages: u64,
    /// Keep at most this many bytes (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_bytes: u64,
    /// How long message ids are remembered for deduplication (0s: off). Default 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    dedup_window: Option<Duration>,
}

impl RetentionArgs {
    fn proto(&self) -> proto::Retention {
        proto::Retention {
            max_age_ms: self.max_age.map_or(0, |d| d.as_millis() as u64),
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            dedup_window_ms: self.dedup_window.map(|d| d.as_millis() as u64),
        }
    }
}

#[derive(clap::Subcommand)]
enum StreamCommand {
    /// Publish a message. PAYLOAD `-` reads standard input (with --lines: one message per line).
    Pub {
        topic: String,
        payload: String,
        /// Message id for deduplication (default: a random one).
        #[arg(long)]
        id: Option<String>,
        /// Metadata entries, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// With PAYLOAD `-`: publish every line of standard input, in batches of up to 500.
        #[arg(long)]
        lines: bool,
    },
    /// Consume: through a durable group (acking each message once printed), or without one
    /// (every message, nothing durable).
    Sub {
        topic: String,
        /// Durable consumer group; without it the subscription is ephemeral.
        #[arg(long, short = 'g')]
        group: Option<String>,
        /// Where a new group (or an ephemeral subscription) starts: earliest, latest, a
        /// sequence, an RFC 3339 time, or a duration ago (e.g. 10m).
        #[arg(long, default_value = "latest", value_parser = parse_start)]
        from: Start,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Ack on hand-off instead of after printing (at most once).
        #[arg(long)]
        auto_ack: bool,
        /// Redelivery timeout of a new group.
        #[arg(long, value_parser = humantime::parse_duration)]
        ack_wait: Option<Duration>,
        /// Deliveries before a message goes to the dead-letter topic (0: unlimited).
        #[arg(long, default_value_t = 0)]
        max_deliveries: u32,
        #[arg(long, default_value_t = 0)]
        max_in_flight: u32,
    },
    /// Replay retained messages without a group.
    Read {
        topic: String,
        /// earliest, a sequence, an RFC 3339 time, or a duration ago (e.g. 10m).
        #[arg(long, default_value = "earliest", value_parser = parse_start)]
        from: Start,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List topics, optionally matching FILTER (`orders.*`, `orders.>`).
    Topics {
        #[arg(default_value = "")]
        filter: String,
    },
    /// A topic's sequences, size, limits and groups (floor, pending, lag).
    Info { topic: String },
    /// Create a topic with limits.
    Create {
        topic: String,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Change a topic's limits (all of them: unset ones become unlimited).
    Update {
        topic: String,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Delete a topic with its messages and groups.
    Delete { topic: String },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => return Ok(Start::Earliest),
        "latest" => return Ok(Start::Latest),
        _ => {}
    }
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Start::Sequence(seq));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{text} is before 1970"))?
            .as_millis() as u64;
        return Ok(Start::TimeMs(ms));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(Start::TimeMs(
            now_ms().saturating_sub(ago.as_millis() as u64),
        ));
    }
    Err(format!(
        "{text:?} is not earliest, latest, a sequence, an RFC 3339 time or a duration ago"
    ))
}

fn message_json(message: &proto::Message) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("topic".into(), json!(message.topic));
    object.insert("sequence".into(), json!(message.sequence));
    object.insert("timestamp_ms".into(), json!(message.timestamp_ms));
    object.insert("delivery_count".into(), json!(message.delivery_count));
    object.insert("message_id".into(), json!(message.message_id));
    object.insert("metadata".into(), json!(message.metadata));
    bytes_field(&mut object, "payload", &message.payload);
    Value::Object(object)
}

fn print_message(message: &proto::Message, json: bool) {
    if json {
        println!("{}", message_json(message));
    } else {
        let payload = String::from_utf8_lossy(&message.payload);
        let redelivered = if message.delivery_count > 1 {
            format!(" (delivery {})", message.delivery_count)
        } else {
            String::new()
        };
        println!(
            "{} #{}{redelivered}: {payload}",
            message.topic, message.sequence
        );
    }
}

fn retention_json(retention: &Option<proto::Retention>) -> Value {
    let r = retention.unwrap_or_default();
    json!({
        "max_age_ms": r.max_age_ms,
        "max_messages": r.max_messages,
        "max_bytes": r.max_bytes,
        "dedup_window_ms": r.dedup_window_ms,
    })
}

fn summary_json(topic: &proto::TopicSummary) -> Value {
    json!({
        "name": topic.name,
        "first_sequence": topic.first_sequence,
        "last_sequence": topic.last_sequence,
        "messages": topic.messages,
        "bytes": topic.bytes,
        "created_ms": topic.created_ms,
        "retention": retention_json(&topic.retention),
    })
}

pub async fn run(args: StreamArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let json = args.client.json;
    match args.command {
        StreamCommand::Pub {
            topic,
            payload,
            id,
            metadata,
            lines,
        } => {
            let topic = client.topic(&topic);
            let with_meta = |mut publish: Publish| {
                for (key, value) in &metadata {
                    publish = publish.metadata(key.clone(), value.clone());
                }
                publish
            };
            if lines {
                if payload != "-" || id.is_some() {
                    bail!("--lines reads standard input (PAYLOAD -) and takes no --id");
                }
                let mut batch = Vec::new();
                let mut published = 0u64;
                for line in std::io::stdin().lock().lines() {
                    batch.push(with_meta(Publish::new(line.context("reading stdin")?)));
                    if batch.len() == 500 {
                        published +=
                            topic.publish_batch(std::mem::take(&mut batch)).await?.len() as u64;
                    }
                }
                if !batch.is_empty() {
                    published += topic.publish_batch(batch).await?.len() as u64;
                }
                if json {
                    println!("{}", json!({"published": published}));
                } else {
                    println!("published {published} messages");
                }
                return Ok(());
            }
            let payload = if payload == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading the payload from stdin")?;
                bytes
            } else {
                payload.into_bytes()
            };
            let mut publish = with_meta(Publish::new(payload));
            if let Some(id) = id {
                publish = publish.message_id(id);
            }
            let result = topic.publish(publish).await?;
            if json {
                println!(
                    "{}",
                    json!({"sequence": result.sequence, "timestamp_ms": result.timestamp_ms,
                           "duplicate": result.duplicate, "revision": result.revision})
                );
            } else if result.duplicate {
                println!("duplicate of sequence {}", result.sequence);
            } else {
                println!("sequence {}", result.sequence);
            }
        }
        StreamCommand::Sub {
            topic,
            group,
            from,
            count,
            auto_ack,
            ack_wait,
            max_deliveries,
            max_in_flight,
        } => {
            let mut options = match &group {
                Some(group) => SubscribeOptions::group(group.clone()),
                None => SubscribeOptions::ephemeral(),
            }
            .start(from)
            .max_deliveries(max_deliveries)
            .max_in_flight(max_in_flight)
            // Claim no more than will be handled: the rest stays for the next consumer.
            .limit(count.unwrap_or(0));
            if auto_ack {
                options = options.auto_ack();
            }
            if let Some(wait) = ack_wait {
                options = options.ack_wait(wait);
            }
            let manual = group.is_some() && !auto_ack;
            let mut subscription = client.topic(&topic).subscribe(options).await?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let delivery = tokio::select! {
                    item = subscription.next() => match item {
                        Some(delivery) => delivery?,
                        None if count.is_some() => break,
                        None => bail!("the server ended the subscription"),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                };
                print_message(&delivery.message, json);
                if manual {
                    delivery.ack().await?;
                }
                seen += 1;
            }
        }
        StreamCommand::Read { topic, from, limit } => {
            let page = client.topic(&topic).read(from, limit).await?;
            for message in &page.messages {
                print_message(message, json);
            }
            if !json {
                eprintln!(
                    "({} messages; topic holds {}..={})",
                    page.messages.len(),
                    page.first_sequence,
                    page.last_sequence
                );
            }
        }
        StreamCommand::Topics { filter } => {
            let topics = client.topics(&filter).await?;
            if json {
                println!(
                    "{}",
                    Value::Array(topics.iter().map(summary_json).collect())
                );
            } else {
                for topic in topics {
                    println!(
                        "{}\t{} messages\t{} bytes\tsequences {}..={}",
                        topic.name,
                        topic.messages,
                        topic.bytes,
                        topic.first_sequence,
                        topic.last_sequence
                    );
                }
            }
        }
        StreamCommand::Info { topic } => {
            let info = client.topic(&topic).info().await?;
            let summary = info.topic.clone().unwrap_or_default();
            if json {
                let groups: Vec<Value> = info
                    .groups
                    .iter()
                    .map(|g| {
                        json!({"name": g.name, "ack_floor": g.ack_floor, "next_sequence": g.next_sequence,
                               "pending": g.pending, "lag": g.lag, "ack_wait_ms": g.ack_wait_ms,
                               "max_deliveries": g.max_deliveries, "dead_letter_topic": g.dead_letter_topic,
                               "last_delivery_ms": g.last_delivery_ms, "last_ack_ms": g.last_ack_ms,
                               "delivered": g.delivered, "acked": g.acked})
                    })
                    .collect();
                let mut object = summary_json(&summary);
                object["groups"] = Value::Array(groups);
                println!("{object}");
            } else {
                let r = summary.retention.unwrap_or_default();
                println!("topic      {}", summary.name);
                println!(
                    "sequences  {}..={} ({} messages, {} bytes)",
                    summary.first_sequence, summary.last_sequence, summary.messages, summary.bytes
                );
                println!(
                    "limits     max_age_ms={} max_messages={} max_bytes={} dedup_window_ms={}",
                    r.max_age_ms,
                    r.max_messages,
                    r.max_bytes,
                    r.dedup_window_ms.unwrap_or_default()
                );
                let now = strata_raft::node::now_ms();
                let ago = |ms: u64| match ms {
                    0 => "never".to_string(),
                    ms => format!("{:.1} s ago", now.saturating_sub(ms) as f64 / 1000.0),
                };
                for g in &info.groups {
                    println!(
                        "group {:<20} floor {} next {} pending {} lag {} (ack wait {} ms, max deliveries {}, dlq {})",
                        g.name, g.ack_floor, g.next_sequence, g.pending, g.lag, g.ack_wait_ms, g.max_deliveries, g.dead_letter_topic
                    );
                    println!(
                        "      {:<20} last delivery {}, last ack {}; {} delivered, {} acked",
                        "",
                        ago(g.last_delivery_ms),
                        ago(g.last_ack_ms),
                        g.delivered,
                        g.acked
                    );
                }
            }
        }
        StreamCommand::Create { topic, retention } => {
            let revision = client.topic(&topic).create(retention.proto()).await?;
            print_revision("created", revision, json);
        }
        StreamCommand::Update { topic, retention } => {
            let revision = client.topic(&topic).update(retention.proto()).await?;
            print_revision("updated", revision, json);
        }
        StreamCommand::Delete { topic } => {
            let revision = client.topic(&topic).delete().await?;
            print_revision("deleted", revision, json);
        }
    }
    Ok(())
}

fn print_revision(what: &str, revision: u64, json: bool) {
    if json {
        println!("{}", json!({"revision": revision}));
    } else {
        println!("{what} at revision {revision}");
    }
}
