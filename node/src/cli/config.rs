//! `strata config get|set|del|read|keys|watch`: JSON documents by key and dotted path.
//!
//! A PATH of `.` (or the empty string) is the whole document. Values are JSON; `set` also takes
//! a bare word that is not JSON as a string (`strata config set app env prod`).

use std::io::Read;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::Consistency;

#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    client: super::ClientArgs,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Print the JSON value at PATH of document KEY (null when absent). Secrets print as
    /// "[secret]" unless --secrets.
    Get {
        key: String,
        #[arg(default_value = ".")]
        path: String,
        /// Decrypt secret values.
        #[arg(long)]
        secrets: bool,
        /// Answer from this node's state, possibly behind the leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Write VALUE (JSON; `-` reads standard input) at PATH: an object merges into an object
    /// there, anything else replaces.
    Set {
        key: String,
        path: String,
        value: String,
        /// Encrypt every leaf of VALUE at rest; readers see "[secret]" unless they ask.
        #[arg(long)]
        secret: bool,
    },
    /// Remove the subtree at PATH, or the whole document without one.
    Del {
        key: String,
        #[arg(default_value = ".")]
        path: String,
    },
    /// Print the whole document (with --json: and its revisions).
    Read {
        key: String,
        #[arg(long)]
        secrets: bool,
    },
    /// List document keys, optionally those starting with PREFIX.
    Keys {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print each change of the value at PATH of KEY: old and new value, with the revision.
    Watch {
        key: String,
        #[arg(default_value = ".")]
        path: String,
        /// Start at this revision (0: from now).
        #[arg(long, default_value_t = 0)]
        from_rev: u64,
        #[arg(long)]
        secrets: bool,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `.` stands for the whole document, which the API calls "".
fn api_path(path: &str) -> &str {
    if path == "." {
        ""
    } else {
        path
    }
}

/// JSON, or else (a bare word or phrase, not a number, object or the like) a JSON string.
fn parse_value(text: &str) -> anyhow::Result<Value> {
    let text = if text == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading standard input")?;
        input
    } else {
        text.to_string()
    };
    match serde_json::from_str(&text) {
        Ok(value) => Ok(value),
        Err(error) => {
            let first = text.trim_start().chars().next();
            if matches!(first, Some('{' | '[' | '"')) || text.trim().is_empty() {
                bail!("VALUE is not valid JSON: {error}");
            }
            Ok(Value::String(text))
        }
    }
}

pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let json = args.client.json;
    let config = client.config();
    match args.command {
        ConfigCommand::Get {
            key,
            path,
            secrets,
            serializable,
        } => {
            let consistency = if serializable {
                Consistency::Serializable
            } else {
                Consistency::Linearizable
            };
            let value = config
                .get_with(&key, api_path(&path), secrets, consistency)
                .await?;
            println!("{value}");
        }
        ConfigCommand::Set {
            key,
            path,
            value,
            secret,
        } => {
            let value = parse_value(&value)?;
            let revision = if secret {
                config.set_secret(&key, api_path(&path), &value).await?
            } else {
                config.set(&key, api_path(&path), &value).await?
            };
            if json {
                println!("{}", json!({"revision": revision}));
            } else if revision == 0 {
                println!("OK unchanged");
            } else {
                println!("OK revision={revision}");
            }
        }
        ConfigCommand::Del { key, path } => {
            let revision = config.delete(&key, api_path(&path)).await?;
            if json {
                println!("{}", json!({"revision": revision}));
            } else if revision == 0 {
                println!("OK nothing was there");
            } else {
                println!("OK revision={revision}");
            }
        }
        ConfigCommand::Read { key, secrets } => {
            let document = config.read(&key, secrets).await?;
            if json {
                println!(
                    "{}",
                    json!({"document": document.value, "create_revision": document.create_revision,
                           "mod_revision": document.mod_revision, "version": document.version})
                );
            } else {
                println!("{}", serde_json::to_string_pretty(&document.value)?);
            }
        }
        ConfigCommand::Keys { prefix } => {
            let keys = config.keys(&prefix).await?;
            if json {
                println!("{}", json!(keys));
            } else {
                for key in keys {
                    println!("{key}");
                }
            }
        }
        ConfigCommand::Watch {
            key,
            path,
            from_rev,
            secrets,
            count,
        } => {
            let mut watch = config
                .watch(&key, api_path(&path), from_rev, secrets)
                .await?;
            let mut seen = 0u64;
            while let Some(change) = watch.next().await {
                let change = change?;
                if json {
                    println!(
                        "{}",
                        json!({"revision": change.revision, "old": change.old, "new": change.new})
                    );
                } else {
                    println!("rev={} {} -> {}", change.revision, change.old, change.new);
                }
                seen += 1;
                if count.is_some_and(|count| seen >= count) {
                    return Ok(());
                }
            }
            bail!("the watch ended: the server closed it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_or_else_words() {
        assert_eq!(parse_value("5432").unwrap(), json!(5432));
        assert_eq!(parse_value("{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_value("prod").unwrap(), json!("prod"));
        assert_eq!(parse_value("true").unwrap(), json!(true));
        assert!(parse_value("{\"a\":").is_err(), "broken JSON is an error");
        assert!(parse_value("").is_err());
        assert_eq!(api_path("."), "");
        assert_eq!(api_path("db.port"), "db.port");
    }
}
