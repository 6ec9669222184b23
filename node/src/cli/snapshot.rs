//! `strata snapshot save|status|restore`: backups of a whole cluster (etcd's `etcdctl snapshot`
//! commands). The file format and the restore are `strata_raft::backup`'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;
use strata_proto::cluster::v1 as pb;
use strata_proto::cluster::v1::cluster_client::ClusterClient;
use strata_raft::backup::{self, BackupHeader, BackupInfo, BackupWriter};

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(clap::Subcommand)]
enum SnapshotCommand {
    /// Save a consistent backup of the whole cluster to FILE, through any node. It reflects
    /// every write acknowledged before it started. Needs a super-tenant admin's token.
    Save {
        file: PathBuf,
        /// Nodes to ask, comma-separated; the first that answers is used.
        #[arg(
            long,
            env = "STRATA_ENDPOINT",
            default_value = "127.0.0.1:7420",
            value_delimiter = ','
        )]
        endpoint: Vec<String>,
        /// Access token. Unset: the one `strata login` saved, if any.
        #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// CA certificate (PEM) when the client port serves TLS (`tls/ca.pem`).
        #[arg(long, env = "STRATA_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Check a backup file completely (SHA-256, structure, the state's crc32) and describe it.
    Status { file: PathBuf },
    /// Build the data directory of one member of a new cluster from a backup. Run it for every
    /// member with the same file and --initial-cluster, then start each with `strata serve
    /// --data-dir D --node-id N --initial-cluster (the same)`. See docs/operations.md.
    Restore {
        file: PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// The new cluster's voters, `1=host:7421,2=host:7431,...` (peer addresses).
        #[arg(long, value_parser = crate::parse_initial_cluster)]
        initial_cluster: BTreeMap<u64, String>,
    },
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.command {
        SnapshotCommand::Save {
            file,
            endpoint,
            token,
            ca_file,
        } => {
            let token = match token {
                Some(token) => Some(token),
                None => super::auth::saved_token(&endpoint.join(","), ca_file.as_deref()).await?,
            };
            save(&file, &endpoint, token, ca_file.as_deref(), args.json).await
        }
        SnapshotCommand::Status { file } => {
            let info = tokio::task::spawn_blocking(move || backup::verify(&file)).await??;
            print_info(&info, args.json);
            Ok(())
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            node_id,
            initial_cluster,
        } => {
            let restored = backup::restore(&file, &data_dir, node_id, initial_cluster).await?;
            if args.json {
                println!(
                    "{}",
                    json!({
                        "data_dir": data_dir,
                        "node_id": restored.node_id,
                        "members": restored.members,
                        "revision": restored.info.header.revision,
                        "entries": restored.info.entries,
                    })
                );
            } else {
                println!(
                    "restored revision {} ({} entries) into {} as node {} of {:?}",
                    restored.info.header.revision,
                    restored.info.entries,
                    data_dir.display(),
                    restored.node_id,
                    restored.members,
                );
                let members: Vec<String> = restored
                    .members
                    .iter()
                    .map(|(id, addr)| format!("{id}={addr}"))
                    .collect();
                println!(
                    "start it with: strata serve --data-dir {} --node-id {} --initial-cluster {} \
                     --tls-dir … (the same list: the data is already initialised, but the list \
                     makes it a cluster member, with auth on by default)",
                    data_dir.display(),
                    restored.node_id,
                    members.join(",")
                );
            }
            Ok(())
        }
    }
}

fn print_info(info: &BackupInfo, as_json: bool) {
    let header = &info.header;
    if as_json {
        println!(
            "{}",
            json!({
                "header": header,
                "entries": info.entries,
                "file_bytes": info.file_bytes,
                "state_bytes": info.state_bytes,
                "sha256": info.sha256,
            })
        );
        return;
    }
    println!(
        "format:        {} (strata {})",
        header.format, header.strata_version
    );
    println!("revision:      {}", header.revision);
    println!(
        "applied:       index {} term {} (source cluster)",
        header.applied_index, header.applied_term
    );
    println!("source node:   {}", header.source_node);
    println!(
        "members:       {:?} voters {:?}",
        header.members, header.voters
    );
    println!("created:       {}", timestamp(header.created_ms));
    println!("cluster time:  {}", timestamp(header.cluster_time_ms));
    println!("entries:       {}", info.entries);
    println!("size:          {} bytes", info.file_bytes);
    println!("sha256:        {}", info.sha256);
}

fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Streams a backup into `FILE.part`, checks it completely, then renames it to `file`.
async fn save(
    file: &Path,
    endpoints: &[String],
    token: Option<String>,
    ca: Option<&Path>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let mut opened = None;
    for endpoint in endpoints {
        match open_stream(endpoint, token.clone(), ca).await {
            Ok(stream) => {
                opened = Some((endpoint.clone(), stream));
                break;
            }
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    let Some((endpoint, mut stream)) = opened else {
        bail!("no endpoint answered: {}", failures.join("; "))
    };
    let first = stream
        .message()
        .await
        .map_err(super::status)?
        .context("the node ended the backup before its header")?;
    let (header_json, estimated) = match first.part {
        Some(pb::snapshot_chunk::Part::Header(header)) => (header.json, first.entries),
        _ => bail!("the node's backup did not begin with a header"),
    };
    let header: BackupHeader =
        serde_json::from_str(&header_json).context("the node's backup header")?;
    let partial = partial_path(file);
    let out = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let result = receive(&mut stream, out, &header, estimated).await;
    let info = match result {
        Ok(()) => {
            let checking = partial.clone();
            tokio::task::spawn_blocking(move || backup::verify(&checking))
                .await?
                .map_err(anyhow::Error::from)
        }
        Err(error) => Err(error),
    };
    let info = match info {
        Ok(info) => info,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context(format!("saving a backup from {endpoint}")));
        }
    };
    std::fs::rename(&partial, file)
        .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))?;
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    if as_json {
        println!(
            "{}",
            json!({
                "file": file,
                "endpoint": endpoint,
                "revision": info.header.revision,
                "entries": info.entries,
                "file_bytes": info.file_bytes,
                "sha256": info.sha256,
            })
        );
    } else {
        println!(
            "saved {}: revision {}, {} entries, {} bytes, sha256 {}",
            file.display(),
            info.header.revision,
            info.entries,
            info.file_bytes,
            info.sha256
        );
    }
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

type Stream = tonic::Streaming<pb::SnapshotChunk>;

async fn open_stream(
    endpoint: &str,
    token: Option<String>,
    ca: Option<&Path>,
) -> anyhow::Result<Stream> {
    let channel = super::endpoint(endpoint, ca)?
        // A large backup takes longer than any unary call.
        .timeout(std::time::Duration::from_secs(24 * 3600))
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let mut client =
        ClusterClient::with_interceptor(channel, super::auth::interceptor(token, None)?)
            .max_decoding_message_size(backup::CHUNK_BYTES * 2);
    Ok(client
        .snapshot(pb::SnapshotRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("{endpoint}: {}", super::status(status)))?
        .into_inner())
}

/// Writes the header, then every state chunk as it arrives, then the digest; fsyncs.
async fn receive(
    stream: &mut Stream,
    out: std::fs::File,
    header: &BackupHeader,
    estimated: u64,
) -> anyhow::Result<()> {
    let progress = indicatif::ProgressBar::new(estimated.max(1));
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/~{len} entries, {elapsed}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    progress.set_message(format!("revision {}", header.revision));
    let mut writer = BackupWriter::new(std::io::BufWriter::with_capacity(1 << 20, out), header)?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.message().await.map_err(super::status)? {
        let Some(pb::snapshot_chunk::Part::Data(data)) = chunk.part else {
            bail!("the node sent a second header");
        };
        writer.state(&data)?;
        bytes += data.len() as u64;
        if chunk.entries > progress.length().unwrap_or(0) {
            progress.set_length(chunk.entries);
        }
        progress.set_position(chunk.entries);
        progress.set_message(format!("revision {}, {} MiB", header.revision, bytes >> 20));
    }
    progress.finish_and_clear();
    let (out, _) = writer.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let _ = std::io::stderr().flush();
    Ok(())
}
