//! `strata cluster status|add-learner|promote|remove|set-voters`, and the offline
//! `inspect-data|force-new-cluster` on a stopped node's data directory.

use anyhow::{bail, Context};
use serde_json::json;
use strata_proto::cluster::v1 as pb;
use strata_proto::cluster::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Nodes to ask, comma-separated or repeated; the first that answers is used.
    #[arg(
        long,
        env = "STRATA_ENDPOINT",
        default_value = "127.0.0.1:7420",
        value_delimiter = ',',
        global = true
    )]
    endpoint: Vec<String>,
    /// Access token (a super-tenant admin's for membership changes). Unset: the one `strata
    /// login` saved, if any.
    #[arg(long, env = "STRATA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) when the client port serves TLS (`tls/ca.pem`).
    #[arg(long, env = "STRATA_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Members, roles, leader, term, commit/applied index and lag per node.
    Status,
    /// Add a node (started with --join) as a learner: it catches up but does not vote.
    AddLearner {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// host:port of the node's QUIC peer endpoint.
        #[arg(long)]
        peer_addr: String,
    },
    /// Make a caught-up learner a voter.
    Promote {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
    /// Make the voters exactly these: completes a change left joint ("outcome unknown"; see
    /// `status`) with the new set, or rolls it back with the old one.
    SetVoters {
        /// Node ids, comma-separated; each a member already (new voters: caught-up learners).
        #[arg(long, value_delimiter = ',', required = true,
              value_parser = clap::value_parser!(u64).range(1..))]
        voters: Vec<u64>,
    },
    /// Offline: show what a stopped node's data directory holds (term, last log entry,
    /// membership), to choose the node to force a new cluster from.
    InspectData {
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// Offline, last resort when a quorum is lost for good: make a stopped node's data a
    /// cluster of that node alone. Keeps everything its log holds; loses what only the other
    /// members had. See docs/operations.md, "Lost quorum".
    ForceNewCluster {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Do it (without: show what would be done and change nothing).
        #[arg(long)]
        yes: bool,
    },
}

type Cluster = ClusterClient<
    tonic::service::interceptor::InterceptedService<Channel, super::auth::BoxedInterceptor>,
>;

async fn connect_one(endpoint: &str, access: &Access) -> anyhow::Result<Cluster> {
    let channel = super::endpoint(endpoint, access.ca.as_deref())?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(ClusterClient::with_interceptor(
        channel,
        super::auth::interceptor(access.token.clone(), None)?,
    ))
}

/// The token and CA a cluster command talks with.
struct Access {
    token: Option<String>,
    ca: Option<std::path::PathBuf>,
}

async fn connect(endpoints: &[String], access: &Access) -> anyhow::Result<Cluster> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match connect_one(endpoint, access).await {
            Ok(client) => return Ok(client),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    bail!("no endpoint answered: {}", failures.join("; "))
}

#[derive(Clone)]
enum Change {
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
    SetVoters(Vec<u64>),
}

/// Runs a membership change through the first endpoint that can: a node that answers
/// UNAVAILABLE (no leader known to it, or it left the cluster) did nothing, so the next one is
/// asked.
async fn change_membership(
    endpoints: &[String],
    access: &Access,
    change: Change,
    peer_addr: &str,
) -> anyhow::Result<pb::MembershipResponse> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        let mut client = match connect_one(endpoint, access).await {
            Ok(client) => client,
            Err(error) => {
                failures.push(format!("{error:#}"));
                continue;
            }
        };
        let result = match change.clone() {
            Change::AddLearner(node_id) => {
                client
                    .add_learner(pb::AddLearnerRequest {
                        node_id,
                        peer_addr: peer_addr.to_string(),
                    })
                    .await
            }
            Change::Promote(node_id) => client.promote(pb::PromoteRequest { node_id }).await,
            Change::Remove(node_id) => client.remove(pb::RemoveRequest { node_id }).await,
            Change::SetVoters(node_ids) => {
                client.set_voters(pb::SetVotersRequest { node_ids }).await
            }
        };
        match result {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                failures.push(format!("{endpoint}: {}", status.message()));
            }
            Err(status) => return Err(grpc_error(status)),
        }
    }
    bail!(
        "Unavailable: no node could make the change: {}",
        failures.join("; ")
    )
}

fn grpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match &args.command {
        ClusterCommand::InspectData { data_dir } => {
            let state = strata_raft::recovery::inspect(data_dir).await?;
            print_data_state(&state, args.json);
            return Ok(());
        }
        ClusterCommand::ForceNewCluster { data_dir, yes } => {
            return force_new_cluster(data_dir, *yes, args.json).await;
        }
        _ => {}
    }
    let token = match &args.token {
        Some(token) => Some(token.clone()),
        None => super::auth::saved_token(&args.endpoint.join(","), args.ca_file.as_deref()).await?,
    };
    let access = Access {
        token,
        ca: args.ca_file.clone(),
    };
    let (what, node_id, response) = match args.command {
        ClusterCommand::Status => {
            let status = connect(&args.endpoint, &access)
                .await?
                .status(pb::StatusRequest {})
                .await
                .map_err(grpc_error)?
                .into_inner();
            print_status(&status, args.json);
            return Ok(());
        }
        ClusterCommand::AddLearner { node_id, peer_addr } => (
            "added learner",
            node_id,
            change_membership(
                &args.endpoint,
                &access,
                Change::AddLearner(node_id),
                &peer_addr,
            )
            .await?,
        ),
        ClusterCommand::Promote { node_id } => (
            "promoted",
            node_id,
            change_membership(&args.endpoint, &access, Change::Promote(node_id), "").await?,
        ),
        ClusterCommand::Remove { node_id } => (
            "removed",
            node_id,
            change_membership(&args.endpoint, &access, Change::Remove(node_id), "").await?,
        ),
        ClusterCommand::SetVoters { voters } => {
            let response = change_membership(
                &args.endpoint,
                &access,
                Change::SetVoters(voters.clone()),
                "",
            )
            .await?;
            if args.json {
                println!(
                    "{}",
                    json!({"voters": voters, "change": "set voters", "log_index": response.log_index})
                );
            } else {
                println!("voters are {voters:?} (log index {})", response.log_index);
            }
            return Ok(());
        }
        ClusterCommand::InspectData { .. } | ClusterCommand::ForceNewCluster { .. } => {
            unreachable!("handled above")
        }
    };
    if args.json {
        println!(
            "{}",
            json!({"node_id": node_id, "change": what, "log_index": response.log_index})
        );
    } else {
        println!("{what} node {node_id} (log index {})", response.log_index);
    }
    Ok(())
}

async fn force_new_cluster(
    data_dir: &std::path::Path,
    yes: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    if !yes {
        let state = strata_raft::recovery::inspect(data_dir).await?;
        print_data_state(&state, as_json);
        bail!(
            "nothing changed. This makes node {} the only voter of a new cluster, keeping its \
             log up to index {}; whatever only the other members hold is lost, and they must \
             not start again with their old data (empty their directories and add them back). \
             Run `strata cluster inspect-data` on each member's directory and force the one with \
             the highest last log term, then index. Re-run with --yes to do it",
            state.node_id,
            state.last_log_index
        );
    }
    let state = strata_raft::recovery::force_new_cluster(data_dir).await?;
    if as_json {
        println!(
            "{}",
            json!({"node_id": state.node_id, "forced": true, "last_log_index": state.last_log_index})
        );
    } else {
        println!(
            "node {} is now the only voter of a new cluster (its log up to index {} kept); \
             start it as before, then add the others back with empty data directories",
            state.node_id, state.last_log_index
        );
    }
    Ok(())
}

fn print_data_state(state: &strata_raft::recovery::DataState, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "node_id": state.node_id,
                "term": state.term,
                "last_log_index": state.last_log_index,
                "last_log_term": state.last_log_term,
                "applied_index": state.applied_index,
                "voter_sets": state.voter_sets,
                "members": state.members,
            })
        );
        return;
    }
    println!("node {}", state.node_id);
    println!("term {}", state.term);
    println!(
        "last log entry: index {}, term {}",
        state.last_log_index, state.last_log_term
    );
    println!("applied index {}", state.applied_index);
    println!(
        "voters {}",
        voter_sets(
            state
                .voter_sets
                .iter()
                .map(|set| set.iter().copied().collect())
        )
    );
    for (id, addr) in &state.members {
        println!("member {id} at {addr}");
    }
}

/// `{1,2,3}`, or `{1,2,3} -> {1,2,3,4}` while joint.
fn voter_sets(sets: impl Iterator<Item = Vec<u64>>) -> String {
    sets.map(|set| {
        let ids: Vec<String> = set.iter().map(u64::to_string).collect();
        format!("{{{}}}", ids.join(","))
    })
    .collect::<Vec<_>>()
    .join(" -> ")
}

fn print_status(status: &pb::StatusResponse, as_json: bool) {
    let membership = status.membership.clone().unwrap_or_default();
    let sets = || membership.voter_sets.iter().map(|set| set.node_ids.clone());
    if as_json {
        let members: Vec<_> = status
            .members
            .iter()
            .map(|m| {
                let mut member = json!({
                    "node_id": m.node_id,
                    "peer_addr": m.peer_addr,
                    "voter": m.voter,
                    "lag": m.lag,
                });
                match &m.status {
                    Some(s) => {
                        member["role"] = json!(s.role);
                        member["term"] = json!(s.term);
                        member["leader_id"] = json!(s.leader_id);
                        member["last_log_index"] = json!(s.last_log_index);
                        member["committed_index"] = json!(s.committed_index);
                        member["applied_index"] = json!(s.applied_index);
                        member["snapshot_index"] = json!(s.snapshot_index);
                        member["purged_index"] = json!(s.purged_index);
                        member["client_addr"] = json!(s.client_addr);
                    }
                    None => member["error"] = json!(m.error),
                }
                member
            })
            .collect();
        let voter_sets: Vec<Vec<u64>> = sets().collect();
        println!(
            "{}",
            json!({
                "node_id": status.node_id,
                "leader_id": status.leader_id,
                "members": members,
                "membership": {
                    "voter_sets": voter_sets,
                    "log_index": membership.log_index,
                    "committed": membership.committed,
                },
            })
        );
        return;
    }
    let leader = match status.leader_id {
        0 => "none".to_string(),
        id => id.to_string(),
    };
    println!("asked node {}; leader: {leader}", status.node_id);
    let state = match (membership.voter_sets.len(), membership.committed) {
        (1, true) => "committed",
        (_, true) => "joint, committed: finish with `set-voters` (new set) or roll back (old set)",
        (_, false) => "in progress: completes once a quorum of each set holds it",
    };
    println!(
        "voters {} (log index {}, {state})",
        voter_sets(sets()),
        membership.log_index
    );
    println!(
        "{:>4}  {:<8} {:<9} {:>5} {:>10} {:>10} {:>10} {:>8}  {:<21} CLIENT",
        "ID", "MEMBER", "ROLE", "TERM", "LAST LOG", "COMMITTED", "APPLIED", "LAG", "PEER"
    );
    for m in &status.members {
        let member = if m.voter { "voter" } else { "learner" };
        match &m.status {
            Some(s) => println!(
                "{:>4}  {:<8} {:<9} {:>5} {:>10} {:>10} {:>10} {:>8}  {:<21} {}",
                m.node_id,
                member,
                s.role,
                s.term,
                s.last_log_index,
                s.committed_index,
                s.applied_index,
                m.lag.map_or("-".to_string(), |l| l.to_string()),
                m.peer_addr,
                s.client_addr
            ),
            None => println!(
                "{:>4}  {:<8} unreachable: {}  (peer {})",
                m.node_id, member, m.error, m.peer_addr
            ),
        }
    }
}
