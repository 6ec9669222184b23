//! `strata kv put|get|del|list|watch|txn|databases|tables`.
//!
//! Human output by default; `--json` prints one JSON object per result (per event for watch).
//! Keys and values print as UTF-8 text when they are, else as base64 under `*_base64` fields.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::proto;
use strata_client::{Consistency, List, Put, Table, Txn};

#[derive(clap::Args)]
pub struct KvArgs {
    #[command(flatten)]
    client: super::ClientArgs,
    #[arg(long, short = 'd', default_value = "default", global = true)]
    database: String,
    #[arg(long, short = 't', default_value = "default", global = true)]
    table: String,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(clap::Subcommand)]
enum KvCommand {
    /// Create or replace a key. VALUE `-` reads standard input.
    Put {
        key: String,
        value: String,
        /// Time to live, e.g. 30s, 5m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Compare-and-swap: only if the key's mod revision is this (0: absent).
        #[arg(long)]
        expect_rev: Option<u64>,
        /// Only if the key does not exist.
        #[arg(long)]
        create_only: bool,
        /// Metadata entries, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
    },
    /// Read a key.
    Get {
        key: String,
        /// Serve from this node's state without confirming with a quorum.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key, or every key under a prefix.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Only if the key's mod revision is this.
        #[arg(long)]
        expect_rev: Option<u64>,
    },
    /// List keys by prefix and/or suffix.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value = "")]
        suffix: String,
        #[arg(long)]
        start_after: Option<String>,
        /// Page size (at most 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        desc: bool,
        #[arg(long)]
        keys_only: bool,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow page tokens to the end.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        serializable: bool,
    },
    /// Stream changes to a key or prefix.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// First revision to show (0: changes from now on).
        #[arg(long, default_value_t = 0)]
        from_rev: u64,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Run a transaction described in JSON (from FILE, or standard input when absent).
    ///
    /// {"compares": [{"key": "a", "op": "equal", "value": "x"},
    ///               {"key": "b", "mod_revision": 0}, {"key": "c", "exists": true}],
    ///  "success": [{"put": {"key": "a", "value": "y", "ttl": "10s"}},
    ///              {"delete": {"key": "p/", "prefix": true}}, {"get": {"key": "c"}}],
    ///  "failure": [{"get": {"key": "a"}}]}
    Txn { file: Option<String> },
    /// Databases of the namespace that hold keys.
    Databases,
    /// Tables of the database that hold keys.
    Tables,
}

pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let table = client.table(&args.database, &args.table);
    let json = args.client.json;
    match args.command {
        KvCommand::Put {
            key,
            value,
            ttl,
            expect_rev,
            create_only,
            metadata,
        } => {
            let value = if value == "-" {
                let mut buffer = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buffer)
                    .context("reading the value from stdin")?;
                buffer
            } else {
                value.into_bytes()
            };
            let mut put = Put::new(key, value);
            if let Some(ttl) = ttl {
                put = put.ttl(ttl);
            }
            if let Some(revision) = expect_rev {
                put = put.expect_mod_revision(revision);
            }
            if create_only {
                put = put.create_only();
            }
            for (k, v) in metadata {
                put = put.metadata(k, v);
            }
            let result = table.put_with(put).await?;
            if json {
                println!(
                    "{}",
                    json!({"revision": result.revision, "version": result.version})
                );
            } else {
                println!("OK revision={} version={}", result.revision, result.version);
            }
        }
        KvCommand::Get { key, serializable } => {
            let consistency = if serializable {
                Consistency::Serializable
            } else {
                Consistency::Linearizable
            };
            match table.get_with(key.clone(), consistency).await? {
                Some(record) if json => println!("{}", record_json(&record)),
                Some(record) => println!("{}", String::from_utf8_lossy(&record.value)),
                None => bail!("key {key:?} not found"),
            }
        }
        KvCommand::Del {
            key,
            prefix,
            expect_rev,
        } => {
            let deleted = match (prefix, expect_rev) {
                (true, Some(_)) => bail!("--expect-rev applies to single keys, not --prefix"),
                (true, None) => table.delete_prefix(key).await?,
                (false, Some(revision)) => table.delete_if(key, revision).await?,
                (false, None) => table.delete(key).await?,
            };
            if json {
                println!("{}", json!({"deleted": deleted}));
            } else {
                println!("deleted {deleted}");
            }
        }
        KvCommand::List {
            prefix,
            suffix,
            start_after,
            limit,
            desc,
            keys_only,
            page_token,
            all,
            serializable,
        } => {
            let mut list = List::prefix(prefix).suffix(suffix).limit(limit);
            if let Some(key) = start_after {
                list = list.start_after(key);
            }
            if desc {
                list = list.descending();
            }
            if keys_only {
                list = list.keys_only();
            }
            if let Some(token) = page_token {
                list = list.page_token(token);
            }
            if serializable {
                list = list.consistency(Consistency::Serializable);
            }
            list_command(&table, list, all, keys_only, json).await?;
        }
        KvCommand::Watch {
            key,
            prefix,
            from_rev,
            count,
        } => {
            let mut stream = table.watch(key, prefix, from_rev).await?;
            let mut seen = 0u64;
            while let Some(response) = stream.next().await {
                let response = response?;
                for event in &response.events {
                    print_event(event, response.revision, json);
                    seen += 1;
                    if count.is_some_and(|limit| seen >= limit) {
                        return Ok(());
                    }
                }
            }
            bail!("the server ended the watch");
        }
        KvCommand::Txn { file } => {
            let text = match file {
                Some(path) => {
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?
                }
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the txn from stdin")?;
                    text
                }
            };
            let txn = parse_txn(&text)?;
            let result = table.txn(txn).await?;
            if json {
                let results: Vec<Value> = result.results.iter().map(txn_result_json).collect();
                println!(
                    "{}",
                    json!({"succeeded": result.succeeded, "revision": result.revision, "results": results})
                );
            } else {
                let branch = if result.succeeded {
                    "success"
                } else {
                    "failure"
                };
                println!(
                    "{} revision={} (ran the {branch} branch)",
                    if result.succeeded {
                        "SUCCEEDED"
                    } else {
                        "FAILED"
                    },
                    result.revision
                );
                for item in &result.results {
                    println!("  {}", txn_result_json(item));
                }
            }
        }
        KvCommand::Databases => print_names(client.databases().await?, json),
        KvCommand::Tables => print_names(client.tables(&args.database).await?, json),
    }
    Ok(())
}

async fn list_command(
    table: &Table,
    list: List,
    all: bool,
    keys_only: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut next = list.clone();
    loop {
        let page = table.list(next.clone()).await?;
        for record in &page.records {
            if json {
                println!("{}", record_json(record));
            } else if keys_only {
                println!("{}", String::from_utf8_lossy(&record.key));
            } else {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&record.key),
                    String::from_utf8_lossy(&record.value)
                );
            }
        }
        match page.next_page_token {
            Some(token) if all => next = list.clone().page_token(token),
            Some(token) => {
                if json {
                    println!("{}", json!({"next_page_token": token}));
                } else {
                    eprintln!("more: --page-token {token}");
                }
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

fn print_names(names: Vec<String>, json: bool) {
    if json {
        println!("{}", json!(names));
    } else {
        for name in names {
            println!("{name}");
        }
    }
}

fn print_event(event: &proto::Event, revision: u64, json: bool) {
    let kind = match proto::event::Type::try_from(event.r#type) {
        Ok(proto::event::Type::Put) => "PUT",
        _ if event.expired => "EXPIRE",
        _ => "DELETE",
    };
    let record = event.record.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({"type": kind, "revision": revision, "record": record_json(&record)})
        );
    } else {
        println!(
            "{kind} rev={revision} {}\t{}",
            String::from_utf8_lossy(&record.key),
            String::from_utf8_lossy(&record.value)
        );
    }
}

pub(crate) fn bytes_field(object: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.into(), json!(text)),
        Err(_) => object.insert(
            format!("{name}_base64"),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

fn record_json(record: &proto::Record) -> Value {
    let mut object = serde_json::Map::new();
    bytes_field(&mut object, "key", &record.key);
    bytes_field(&mut object, "value", &record.value);
    object.insert("metadata".into(), json!(record.metadata));
    object.insert("create_revision".into(), json!(record.create_revision));
    object.insert("mod_revision".into(), json!(record.mod_revision));
    object.insert("version".into(), json!(record.version));
    object.insert("expires_at_ms".into(), json!(record.expires_at_ms));
    Value::Object(object)
}

fn txn_result_json(result: &proto::TxnOpResult) -> Value {
    use proto::txn_op_result::Result as R;
    match &result.result {
        Some(R::Put(put)) => json!({"put": {"revision": put.revision, "version": put.version}}),
        Some(R::Delete(delete)) => json!({"delete": {"deleted": delete.deleted}}),
        Some(R::Get(get)) => json!({"get": get.record.as_ref().map(record_json)}),
        None => Value::Null,
    }
}

pub(crate) fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn parse_txn(text: &str) -> anyhow::Result<Txn> {
    let spec: Value = serde_json::from_str(text).context("the transaction is not valid JSON")?;
    let mut txn = Txn::new();
    for compare in array(&spec, "compares")? {
        txn = txn.when(parse_compare(compare)?);
    }
    for op in array(&spec, "success")? {
        txn = txn.then(parse_op(op)?);
    }
    for op in array(&spec, "failure")? {
        txn = txn.otherwise(parse_op(op)?);
    }
    Ok(txn)
}

fn array<'a>(spec: &'a Value, field: &str) -> anyhow::Result<&'a [Value]> {
    match spec.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => bail!("\"{field}\" must be an array"),
    }
}

fn text<'a>(object: &'a Value, field: &str) -> anyhow::Result<&'a str> {
    object
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("\"{field}\" must be a string in {object}"))
}

fn parse_compare(compare: &Value) -> anyhow::Result<proto::Compare> {
    use proto::compare::{Op, Target};
    let op = match compare.get("op").and_then(Value::as_str).unwrap_or("equal") {
        "equal" | "=" | "==" => Op::Equal,
        "not_equal" | "!=" => Op::NotEqual,
        "less" | "<" => Op::Less,
        "greater" | ">" => Op::Greater,
        other => bail!("unknown compare op {other:?}; use equal, not_equal, less or greater"),
    };
    let target = if let Some(value) = compare.get("value") {
        Target::Value(
            value
                .as_str()
                .context("compare \"value\" must be a string")?
                .as_bytes()
                .to_vec(),
        )
    } else if let Some(revision) = compare.get("mod_revision") {
        Target::ModRevision(
            revision
                .as_u64()
                .context("\"mod_revision\" must be a number")?,
        )
    } else if let Some(version) = compare.get("version") {
        Target::Version(version.as_u64().context("\"version\" must be a number")?)
    } else if let Some(exists) = compare.get("exists") {
        Target::Exists(
            exists
                .as_bool()
                .context("\"exists\" must be true or false")?,
        )
    } else {
        bail!("a compare needs one of value, mod_revision, version or exists: {compare}");
    };
    Ok(proto::Compare {
        key: text(compare, "key")?.as_bytes().to_vec(),
        op: op as i32,
        target: Some(target),
    })
}

fn parse_op(op: &Value) -> anyhow::Result<proto::TxnOp> {
    use proto::txn_op::Op;
    let parsed = if let Some(put) = op.get("put") {
        let ttl_ms = match put.get("ttl").and_then(Value::as_str) {
            Some(ttl) => humantime::parse_duration(ttl)
                .with_context(|| format!("ttl {ttl:?}"))?
                .as_millis() as u64,
            None => 0,
        };
        let metadata = match put.get("metadata") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        v.as_str()
                            .context("metadata values must be strings")?
                            .to_string(),
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
            Some(_) => bail!("\"metadata\" must be an object"),
            None => Default::default(),
        };
        Op::Put(proto::PutOp {
            key: text(put, "key")?.as_bytes().to_vec(),
            value: text(put, "value")?.as_bytes().to_vec(),
            metadata,
            ttl_ms,
            expires_at_ms: 0,
        })
    } else if let Some(delete) = op.get("delete") {
        Op::Delete(proto::DeleteOp {
            key: text(delete, "key")?.as_bytes().to_vec(),
            prefix: delete
                .get("prefix")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    } else if let Some(get) = op.get("get") {
        Op::Get(proto::GetOp {
            key: text(get, "key")?.as_bytes().to_vec(),
        })
    } else {
        bail!("an operation needs one of put, delete or get: {op}");
    };
    Ok(proto::TxnOp { op: Some(parsed) })
}
